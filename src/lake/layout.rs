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
    fn bad_templates_are_refused_with_the_reason() {
        for (spec, reason) in [("", "empty"), ("%Y/../x", "`..`"), ("%Y/%Q", "not a valid strftime")] {
            let err = Layout::parse(spec).unwrap_err().to_string();
            assert!(err.contains(reason) && err.contains("lake.layout"), "{spec}: {err}");
        }
    }
}
