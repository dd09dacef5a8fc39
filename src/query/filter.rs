/*!
[`ImpressionQuery`] and its one parser, shared by the HTTP query string and the CLI flags.
*/

use chrono::{DateTime, NaiveDate};

use super::OutputFormat;
pub use crate::store::{AnyOf, ImpressionQuery};

/// A query parameter that was not understood, with what would have been accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter `{param}`: {reason}")]
pub struct ParamError {
    /// The parameter's name as given.
    pub param: String,
    /// What is wrong and what is accepted.
    pub reason: String,
}

const KNOWN: &str = "environment, split, key, treatment, label, from, to, format, columns or limit";

impl ImpressionQuery {
    /// Parses name/value pairs (`split=a&split=b&from=2026-11-01&format=ndjson`) into a query and
    /// the output format. List parameters may repeat; the others may appear once.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<(ImpressionQuery, OutputFormat), ParamError> {
        let mut q = ImpressionQuery::default();
        let mut format: Option<&str> = None;
        let mut columns: Option<&str> = None;
        for (name, value) in pairs {
            match name.as_str() {
                "environment" => push(&mut q.environments, name, value)?,
                "split" => push(&mut q.splits, name, value)?,
                "key" => push(&mut q.keys, name, value)?,
                "treatment" => push(&mut q.treatments, name, value)?,
                "label" => push(&mut q.labels, name, value)?,
                "from" => once(&mut q.from, name, || time_param(name, value))?,
                "to" => once(&mut q.to, name, || time_param(name, value))?,
                "format" => once(&mut format, name, || Ok(value.as_str()))?,
                "columns" => once(&mut columns, name, || Ok(value.as_str()))?,
                "limit" => once(&mut q.limit, name, || limit_param(name, value))?,
                _ => {
                    return Err(ParamError {
                        param: name.clone(),
                        reason: format!("is not a known parameter; use {KNOWN}"),
                    });
                }
            }
        }
        check_window(q.from, q.to)?;
        let all_columns = match columns.unwrap_or("report") {
            "report" => false,
            "all" => true,
            other => {
                return Err(ParamError {
                    param: "columns".into(),
                    reason: format!("`{other}` is not a column set; use report or all"),
                });
            }
        };
        let format = match format.unwrap_or("csv") {
            "csv" => OutputFormat::Csv { all_columns },
            // `columns` chooses among CSV layouts; the JSON formats always carry every field.
            "ndjson" => OutputFormat::Ndjson,
            "json" => OutputFormat::Json,
            other => {
                return Err(ParamError {
                    param: "format".into(),
                    reason: format!("`{other}` is not a format; use csv, ndjson or json"),
                });
            }
        };
        Ok((q, format))
    }
}

/// A `limit`: a positive integer.
pub(super) fn limit_param(name: &str, value: &str) -> Result<u64, ParamError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ParamError { param: name.to_owned(), reason: format!("`{value}` is not a positive integer") })
}

/// Refuses a `to` that is not later than `from` (an empty window is always a mistake).
pub(super) fn check_window(from: Option<i64>, to: Option<i64>) -> Result<(), ParamError> {
    match (from, to) {
        (Some(from), Some(to)) if from >= to => Err(ParamError {
            param: "to".into(),
            reason: format!("must be later than `from` ({to} <= {from}); `from` is inclusive, `to` exclusive"),
        }),
        _ => Ok(()),
    }
}

/// Refuses a value holding a NUL byte: no name holds one, and PostgreSQL cannot even compare
/// text with it (the query would fail as a server error).
pub(crate) fn no_nul(name: &str, value: &str) -> Result<(), ParamError> {
    if value.contains('\0') {
        return Err(ParamError { param: name.to_owned(), reason: "contains a NUL byte, which no name holds".into() });
    }
    Ok(())
}

/// Adds one value of a list parameter (the first one turns the filter on).
pub(super) fn push(list: &mut AnyOf, name: &str, value: &str) -> Result<(), ParamError> {
    if value.is_empty() {
        return Err(ParamError { param: name.to_owned(), reason: "must not be empty".into() });
    }
    no_nul(name, value)?;
    list.get_or_insert_default().push(value.to_owned());
    Ok(())
}

/// Sets a single-valued parameter, refusing a second occurrence rather than silently keeping one.
pub(super) fn once<T>(
    slot: &mut Option<T>,
    name: &str,
    parse: impl FnOnce() -> Result<T, ParamError>,
) -> Result<(), ParamError> {
    if slot.is_some() {
        return Err(ParamError {
            param: name.to_owned(),
            reason: "is given more than once; it takes one value".into(),
        });
    }
    *slot = Some(parse()?);
    Ok(())
}

pub(super) fn time_param(name: &str, value: &str) -> Result<i64, ParamError> {
    parse_time(value).ok_or_else(|| ParamError {
        param: name.to_owned(),
        reason: format!("`{value}` is not epoch milliseconds, an RFC 3339 time or a YYYY-MM-DD date"),
    })
}

/// Epoch milliseconds from digits, an RFC 3339 time, or a `YYYY-MM-DD` date (midnight UTC).
fn parse_time(value: &str) -> Option<i64> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok();
    }
    // chrono's `%Y` also takes signs and longer years; the documented shape is exactly YYYY-MM-DD.
    let is_date = value.len() == 10
        && value.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    if is_date {
        let date = NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?;
        return Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis());
    }
    DateTime::parse_from_rfc3339(value).ok().map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn parse(v: &[(&str, &str)]) -> Result<(ImpressionQuery, OutputFormat), ParamError> {
        ImpressionQuery::from_pairs(&pairs(v))
    }

    fn error(v: &[(&str, &str)]) -> ParamError {
        parse(v).unwrap_err()
    }

    #[test]
    fn no_parameters_mean_everything_as_the_csv_report() {
        let (q, f) = parse(&[]).unwrap();
        assert_eq!(q, ImpressionQuery::default());
        assert_eq!(f, OutputFormat::Csv { all_columns: false });
    }

    #[test]
    fn lists_repeat_and_everything_parses() {
        let (q, f) = parse(&[
            ("split", "a"),
            ("split", "b"),
            ("environment", "Production"),
            ("key", "k"),
            ("treatment", "on"),
            ("label", "default rule"),
            ("from", "2026-11-01"),
            ("to", "2026-11-08T00:00:00+01:00"),
            ("limit", "10"),
            ("format", "ndjson"),
        ])
        .unwrap();
        assert_eq!(
            q,
            ImpressionQuery {
                environments: Some(vec!["Production".into()]),
                splits: Some(vec!["a".into(), "b".into()]),
                keys: Some(vec!["k".into()]),
                treatments: Some(vec!["on".into()]),
                labels: Some(vec!["default rule".into()]),
                from: Some(1_793_491_200_000),
                to: Some(1_794_092_400_000),
                limit: Some(10),
            }
        );
        assert_eq!(f, OutputFormat::Ndjson);
    }

    #[test]
    fn times_accept_epoch_millis_rfc3339_and_dates() {
        assert_eq!(parse_time("1572632114350"), Some(1_572_632_114_350));
        assert_eq!(parse_time("2026-11-01T10:00:00Z"), Some(1_793_527_200_000));
        assert_eq!(parse_time("2026-11-01T11:00:00+01:00"), Some(1_793_527_200_000));
        assert_eq!(parse_time("2026-11-01T10:00:00.250Z"), Some(1_793_527_200_250));
        assert_eq!(parse_time("2026-11-01"), Some(1_793_491_200_000));
        for bad in ["", "yesterday", "-5", "2026-13-01", "2026-11-1", "+2026-11-01", "2026-11-01T10:00", "1e3"] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn csv_columns_and_formats() {
        assert_eq!(parse(&[("columns", "all")]).unwrap().1, OutputFormat::Csv { all_columns: true });
        assert_eq!(
            parse(&[("format", "csv"), ("columns", "report")]).unwrap().1,
            OutputFormat::Csv { all_columns: false }
        );
        assert_eq!(parse(&[("format", "json"), ("columns", "all")]).unwrap().1, OutputFormat::Json);
    }

    #[test]
    fn a_bad_time_names_the_parameter_and_what_is_accepted() {
        let e = error(&[("from", "yesterday")]);
        assert_eq!(e.param, "from");
        assert_eq!(
            e.to_string(),
            "parameter `from`: `yesterday` is not epoch milliseconds, an RFC 3339 time or a YYYY-MM-DD date"
        );
    }

    #[test]
    fn an_unknown_parameter_is_named() {
        let e = error(&[("spilt", "a")]);
        assert_eq!(e.param, "spilt");
        assert!(e.to_string().starts_with("parameter `spilt`: is not a known parameter; use environment"), "{e}");
    }

    #[test]
    fn from_must_be_before_to() {
        let e = error(&[("from", "2026-11-02"), ("to", "2026-11-01")]);
        assert_eq!(e.param, "to");
        assert!(e.reason.contains("later than `from`"), "{e}");
        assert_eq!(error(&[("from", "5"), ("to", "5")]).param, "to");
        assert!(parse(&[("from", "5"), ("to", "6")]).is_ok());
    }

    #[test]
    fn limit_must_be_a_positive_integer() {
        for bad in ["0", "-1", "ten", "1.5", ""] {
            let e = error(&[("limit", bad)]);
            assert_eq!(e.param, "limit");
            assert!(e.reason.contains("is not a positive integer"), "{e}");
        }
    }

    #[test]
    fn bad_format_and_columns_say_what_is_accepted() {
        let e = error(&[("format", "xml")]);
        assert_eq!(e.to_string(), "parameter `format`: `xml` is not a format; use csv, ndjson or json");
        let e = error(&[("columns", "some")]);
        assert_eq!(e.to_string(), "parameter `columns`: `some` is not a column set; use report or all");
    }

    #[test]
    fn single_valued_parameters_may_not_repeat() {
        for (name, value) in [("from", "5"), ("to", "5"), ("format", "csv"), ("columns", "all"), ("limit", "1")] {
            let e = error(&[(name, value), (name, value)]);
            assert_eq!(e.param, name);
            assert!(e.reason.contains("more than once"), "{e}");
        }
    }

    #[test]
    fn empty_list_values_are_rejected() {
        let e = error(&[("split", "")]);
        assert_eq!(e.to_string(), "parameter `split`: must not be empty");
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn from_pairs_never_panics(
                v in proptest::collection::vec(
                    (prop_oneof![
                        Just("from".to_string()), Just("to".to_string()), Just("limit".to_string()),
                        Just("format".to_string()), Just("columns".to_string()), Just("split".to_string()),
                        ".{0,12}",
                    ], ".{0,40}"),
                    0..6,
                )
            ) {
                let _ = ImpressionQuery::from_pairs(&v);
            }

            #[test]
            fn parse_time_never_panics(s in ".{0,40}") {
                let _ = parse_time(&s);
            }

            #[test]
            fn parse_time_never_panics_on_date_shaped_text(s in "[0-9+-]{4}-[0-9a-z]{2}-[0-9+ ]{2}(T[0-9:.Z+-]{0,20})?") {
                let _ = parse_time(&s);
            }

            #[test]
            fn epoch_millis_round_trip(ms in 0i64..i64::MAX) {
                prop_assert_eq!(parse_time(&ms.to_string()), Some(ms));
            }
        }
    }
}
