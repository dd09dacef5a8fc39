/*!
Time partitions: which folder a record's event time goes to.
*/

use std::fmt::Write as _;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Utc};

use super::LakeError;

/// Firehose's default prefix: `YYYY/MM/DD/HH`.
const FIREHOSE: &str = "%Y/%m/%d/%H";
/// Hive-style partitions that query engines turn into `dt` and `hour` columns.
const HIVE: &str = "dt=%Y-%m-%d/hour=%H";

/// A parsed partition template.
#[derive(Debug, Clone)]
pub struct Layout {
    items: Vec<Item<'static>>,
}

impl Layout {
    /// Parses `firehose`, `hive` or a strftime template such as `year=%Y/month=%m`.
    pub fn parse(spec: &str) -> Result<Layout, LakeError> {
        let template = match spec {
            "firehose" => FIREHOSE,
            "hive" => HIVE,
            custom => custom,
        };
        let bad = |reason: &str| {
            Err(LakeError::Config(format!(
                "lake.layout `{spec}` {reason}; use `firehose`, `hive` or a strftime template such as `%Y/%m/%d/%H`"
            )))
        };
        if template.trim_matches('/').is_empty() {
            return bad("is empty");
        }
        if template.split('/').any(|part| part == "." || part == "..") {
            return bad("must not contain `.` or `..` folders");
        }
        let Ok(items) = StrftimeItems::new(template).parse_to_owned() else {
            return bad("is not a valid strftime template");
        };
        Ok(Layout { items })
    }

    /// The span, in seconds from the epoch, within which every time renders the same partition:
    /// a day, an hour, a minute or a second, by the template's finest field; `None` when it
    /// renders fractions of a second (or a field this cannot tell). Lets the lake writer render
    /// a partition once per span instead of once per record.
    pub fn period_secs(&self) -> Option<i64> {
        use chrono::format::{Fixed, Numeric};
        let mut period = 86_400;
        for item in &self.items {
            let finest = match item {
                Item::Literal(_) | Item::OwnedLiteral(_) | Item::Space(_) | Item::OwnedSpace(_) => continue,
                Item::Numeric(numeric, _) => match numeric {
                    Numeric::Second | Numeric::Timestamp => 1,
                    Numeric::Minute => 60,
                    Numeric::Hour | Numeric::Hour12 => 3_600,
                    Numeric::Year
                    | Numeric::YearDiv100
                    | Numeric::YearMod100
                    | Numeric::IsoYear
                    | Numeric::IsoYearDiv100
                    | Numeric::IsoYearMod100
                    | Numeric::Quarter
                    | Numeric::Month
                    | Numeric::Day
                    | Numeric::WeekFromSun
                    | Numeric::WeekFromMon
                    | Numeric::IsoWeek
                    | Numeric::NumDaysFromSun
                    | Numeric::WeekdayFromMon
                    | Numeric::Ordinal => 86_400,
                    _ => return None,
                },
                Item::Fixed(fixed) => match fixed {
                    Fixed::LowerAmPm | Fixed::UpperAmPm => 3_600,
                    Fixed::ShortMonthName
                    | Fixed::LongMonthName
                    | Fixed::ShortWeekdayName
                    | Fixed::LongWeekdayName
                    | Fixed::TimezoneName
                    | Fixed::TimezoneOffset
                    | Fixed::TimezoneOffsetColon
                    | Fixed::TimezoneOffsetDoubleColon
                    | Fixed::TimezoneOffsetTripleColon
                    | Fixed::TimezoneOffsetColonZ
                    | Fixed::TimezoneOffsetZ => 86_400,
                    _ => return None,
                },
                Item::Error => return None,
            };
            period = period.min(finest);
        }
        Some(period)
    }

    /// The partition of an event at `time`, without leading or trailing `/`.
    pub fn render(&self, time: DateTime<Utc>) -> String {
        let mut out = String::with_capacity(32);
        // Only fails for specifiers that need a time zone name or an offset we do not have,
        // which a UTC DateTime always has.
        let _ = write!(out, "{}", time.format_with_items(self.items.iter()));
        out.trim_matches('/').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    #[test]
    fn firehose_and_hive_render_the_utc_hour_of_the_event() {
        // 2019-11-01T18:15:14.350Z
        let t = at(1_572_632_114_350);
        assert_eq!(Layout::parse("firehose").unwrap().render(t), "2019/11/01/18");
        assert_eq!(Layout::parse("hive").unwrap().render(t), "dt=2019-11-01/hour=18");
        assert_eq!(Layout::parse("/y=%Y/m=%m/").unwrap().render(t), "y=2019/m=11");
    }

    #[test]
    fn the_period_is_the_finest_field_and_every_time_in_one_renders_alike() {
        let t = at(1_572_632_114_350);
        for (spec, period) in [
            ("firehose", Some(3_600)),
            ("hive", Some(3_600)),
            ("%Y/%m/%d", Some(86_400)),
            ("%Y/%b/%a", Some(86_400)),
            ("%Y/%H%M", Some(60)),
            ("%s", Some(1)),
            ("%Y/%I%p", Some(3_600)),
            ("%Y/%.3f", None),
            ("%+", None),
        ] {
            let layout = Layout::parse(spec).unwrap();
            assert_eq!(layout.period_secs(), period, "{spec}");
            if let Some(period) = period {
                let start = t.timestamp().div_euclid(period) * period * 1000;
                let rendered = layout.render(at(start));
                assert_eq!(layout.render(at(start + period * 1000 - 1)), rendered, "{spec}: the span's last ms");
                assert_ne!(layout.render(at(start + period * 1000)), rendered, "{spec}: the next span");
            }
        }
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        for (spec, reason) in [("", "empty"), ("%Y/../x", "`..`"), ("%Y/%Q", "not a valid strftime")] {
            let err = Layout::parse(spec).unwrap_err().to_string();
            assert!(err.contains(reason) && err.contains("lake.layout"), "{spec}: {err}");
        }
    }
}
