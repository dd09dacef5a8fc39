/*!
Experiment read-outs from the store: what `GET /api/experiments`, `GET /api/experiments/{split}`
and `sluice experiment SPLIT` answer. [`crate::experiments`] holds the definitions and the
statistics; this module reads what they need, each table in one pass:

1. the exposures, aggregated per unit by the database (`GROUP BY key`: first exposure, lowest and
   highest treatment, per segment for a breakdown);
2. the identity links (distinct userId/anonymousId pairs, and the `alias` links);
3. the `track` events of the metrics' names between the first exposure and the last one plus the
   window, with each summed property extracted by the database (the `events_track` index of
   migration 6 finds them).

Nothing is written, so a read-out never blocks ingest or the loader; on SQLite it reads in one
read transaction, so its three passes see the same data. It is bounded: at most
`experiments.max_units` units and `experiments.max_links` identity links, and the store's query
timeout.
*/

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::cells::{int, opt, rfc3339, text};
use super::filter::{ParamError, check_window, no_nul, once, time_param};
use crate::experiments::{
    self, Analysis, By, Design, DesignError, ExperimentSettings, Metric, Readout, Segment, TooManyUnits,
};
use crate::record::schema::Value;
use crate::store::where_clause::{SqlValue, WhereClause};
use crate::store::{ImpressionQuery, QueryError, Store, StoreError};

/// Most metrics one read-out computes.
pub const MAX_METRICS: usize = 20;

/// How a read-out is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadoutFormat {
    /// The JSON object.
    Json,
    /// One CSV row per segment, metric and treatment.
    Csv,
}

/// A read-out as asked for by the query string or the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadoutRequest {
    /// The environment (name or id) whose exposures count.
    pub environment: String,
    /// The metrics, in the order asked.
    pub metrics: Vec<Metric>,
    /// Exposures at or after (epoch ms).
    pub from: Option<i64>,
    /// Exposures before (epoch ms).
    pub to: Option<i64>,
    /// Only exposures of this `splitVersionNumber`.
    pub version: Option<i64>,
    /// The conversion window as written (`72h`).
    pub window: Option<String>,
    /// A breakdown.
    pub by: Option<By>,
    /// Control, weights, alpha, window.
    pub design: Design,
    /// The output format.
    pub format: ReadoutFormat,
}

const KNOWN: &str = "environment, metric, control, from, to, version, window, alpha, weights, by or format";

impl ReadoutRequest {
    /// Parses name/value pairs (`environment=Production&metric=conversion:Signed Up`); `metric`
    /// may repeat, the others may appear once; `environment` is required.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<ReadoutRequest, ParamError> {
        let bad = |param: &str, reason: String| ParamError { param: param.to_owned(), reason };
        let mut environment = None;
        let mut metrics = Vec::new();
        let (mut control, mut from, mut to, mut version, mut window, mut alpha, mut weights, mut by, mut format) =
            (None, None, None, None, None, None, None, None, None);
        for (name, value) in pairs {
            let name = name.as_str();
            no_nul(name, value)?;
            match name {
                "environment" if value.is_empty() => return Err(bad(name, "is empty; name an environment".into())),
                "environment" => once(&mut environment, name, || Ok(value.clone()))?,
                "metric" if metrics.len() == MAX_METRICS => {
                    return Err(bad(name, format!("is given more than {MAX_METRICS} times; ask for fewer metrics")));
                }
                "metric" => metrics.push(Metric::parse(value).map_err(|e| bad(name, e))?),
                "control" => once(&mut control, name, || Ok(value.clone()))?,
                "from" => once(&mut from, name, || time_param(name, value))?,
                "to" => once(&mut to, name, || time_param(name, value))?,
                "version" => once(&mut version, name, || {
                    value.parse::<i64>().map_err(|_| bad(name, format!("`{value}` is not a whole number")))
                })?,
                "window" => once(&mut window, name, || match crate::duration::parse(value) {
                    Ok(ms) if ms > 0 => Ok((value.clone(), ms)),
                    Ok(_) => Err(bad(name, "must be longer than 0".into())),
                    Err(e) => Err(bad(name, e)),
                })?,
                "alpha" => once(&mut alpha, name, || {
                    value
                        .parse::<f64>()
                        .ok()
                        .filter(|a| *a > 0.0 && *a < 1.0)
                        .ok_or_else(|| bad(name, format!("`{value}` is not a number between 0 and 1, e.g. 0.05")))
                })?,
                "weights" => once(&mut weights, name, || parse_weights(value).map_err(|e| bad(name, e)))?,
                "by" => once(&mut by, name, || match value.as_str() {
                    "label" => Ok(By::Label),
                    "version" => Ok(By::Version),
                    other => Err(bad(name, format!("`{other}` is not a breakdown; use label or version"))),
                })?,
                "format" => once(&mut format, name, || match value.as_str() {
                    "json" => Ok(ReadoutFormat::Json),
                    "csv" => Ok(ReadoutFormat::Csv),
                    other => Err(bad(name, format!("`{other}` is not a format; use json or csv"))),
                })?,
                _ => return Err(bad(name, format!("is not a known parameter; use {KNOWN}"))),
            }
        }
        let environment =
            environment.ok_or_else(|| bad("environment", "is required: name the environment (or its id)".into()))?;
        check_window(from, to)?;
        let (window, window_ms) = window.map_or((None, None), |(text, ms)| (Some(text), Some(ms)));
        Ok(ReadoutRequest {
            environment,
            metrics,
            from,
            to,
            version,
            window,
            by,
            design: Design { control, weights, alpha: alpha.unwrap_or(0.05), window_ms, to },
            format: format.unwrap_or(ReadoutFormat::Json),
        })
    }
}

/// Reads `50,50`: positive finite numbers, returned as fractions of the largest (so that their
/// sum cannot overflow). A weight below a billionth of the largest is refused: no sample-ratio
/// test of such a split means anything, and its expected count would underflow.
fn parse_weights(text: &str) -> Result<Vec<f64>, String> {
    let weights: Option<Vec<f64>> =
        text.split(',').map(|w| w.trim().parse::<f64>().ok().filter(|w| w.is_finite() && *w > 0.0)).collect();
    let weights = match weights {
        Some(w) if w.len() >= 2 => w,
        _ => {
            return Err(format!(
                "`{text}` is not a list of positive numbers, one per treatment in byte order, e.g. 50,50"
            ));
        }
    };
    let largest = weights.iter().copied().fold(0.0, f64::max);
    let shares: Vec<f64> = weights.iter().map(|w| w / largest).collect();
    if shares.iter().any(|s| *s < 1e-9) {
        return Err(format!("`{text}` gives a treatment less than a billionth of the largest weight"));
    }
    Ok(shares)
}

/// `GET /api/experiments/{split}`: the read-out.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadoutAnswer {
    /// The flag.
    pub split: String,
    /// The environment asked for.
    pub environment: String,
    /// The analysis.
    #[serde(flatten)]
    pub analysis: Analysis,
    /// The exposure window and the rest of what was asked, so the answer says what it is of.
    pub settings: ReadoutSettings,
}

/// What a read-out was computed with.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadoutSettings {
    /// Exposures from (RFC 3339), if bounded.
    pub from: Option<String>,
    /// Exposures before (RFC 3339), if bounded.
    pub to: Option<String>,
    /// Only this version's exposures.
    pub version: Option<i64>,
    /// The conversion window as asked.
    pub window: Option<String>,
    /// The significance level.
    pub alpha: f64,
}

/// Why a read-out was not given.
#[derive(Debug, thiserror::Error)]
pub enum ReadoutError {
    /// A parameter does not fit the data (control, weights): 400.
    #[error("parameter `{param}`: {0}", param = .0.param())]
    Design(#[from] DesignError),
    /// No exposure matched: 404.
    #[error(
        "no exposures of split `{split}` in environment `{environment}`{window}; check the names (GET /api/experiments?environment=… lists the splits seen)"
    )]
    NoExposures {
        /// The split.
        split: String,
        /// The environment.
        environment: String,
        /// The window, described.
        window: String,
    },
    /// Over `experiments.max_units`: 413.
    #[error(transparent)]
    TooManyUnits(#[from] TooManyUnits),
    /// Over `experiments.max_links`: 413.
    #[error(
        "the store holds more than {0} identity links; raise experiments.max_links (each link costs memory while the read-out runs)"
    )]
    TooManyLinks(usize),
    /// The store failed or timed out.
    #[error(transparent)]
    Query(#[from] QueryError),
}

impl From<StoreError> for ReadoutError {
    fn from(e: StoreError) -> Self {
        ReadoutError::Query(e.into())
    }
}

/// Computes the read-out of `split` asked for by `request`.
pub fn readout(
    store: &mut Store,
    split: &str,
    request: &ReadoutRequest,
    settings: &ExperimentSettings,
    max_cluster_ids: usize,
) -> Result<ReadoutAnswer, ReadoutError> {
    let analysis = store.in_one_snapshot(|store| {
        let started = Instant::now();
        let mut readout = Readout::new(request.metrics.clone(), request.by, settings.max_units);
        exposures(store, split, request, &mut readout)?;
        if readout.is_empty() {
            let window = match (request.from, request.to, request.version) {
                (None, None, None) => String::new(),
                _ => " in the window and version asked for".to_owned(),
            };
            return Err(ReadoutError::NoExposures {
                split: split.to_owned(),
                environment: request.environment.clone(),
                window,
            });
        }
        let exposed = started.elapsed();
        let (mut linked, mut joined) = (exposed, exposed);
        if !request.metrics.is_empty() {
            let links = super::attribution::links(store, settings.max_links)?
                .ok_or(ReadoutError::TooManyLinks(settings.max_links))?;
            linked = started.elapsed();
            readout.join(&links, max_cluster_ids);
            drop(links);
            joined = started.elapsed();
            events(store, &mut readout, &request.design)?;
        }
        let read = started.elapsed();
        let analysis = readout.finish(&request.design)?;
        // Where a slow read-out spends its time, for whoever tunes it.
        tracing::debug!(
            split,
            units = analysis.top.units,
            exposures_ms = exposed.as_millis() as u64,
            links_ms = (linked - exposed).as_millis() as u64,
            join_ms = (joined - linked).as_millis() as u64,
            events_ms = (read - joined).as_millis() as u64,
            statistics_ms = (started.elapsed() - read).as_millis() as u64,
            "experiment read-out"
        );
        Ok(analysis)
    })?;
    Ok(ReadoutAnswer {
        split: split.to_owned(),
        environment: request.environment.clone(),
        analysis,
        settings: ReadoutSettings {
            from: request.from.map(rfc3339),
            to: request.to.map(rfc3339),
            version: request.version,
            window: request.window.clone(),
            alpha: request.design.alpha,
        },
    })
}

/// The conditions on `impressions` for `environment` and, when given, `split`, the window and
/// the version.
fn exposure_clause<'q>(query: &'q ImpressionQuery, version: Option<i64>) -> WhereClause<'q> {
    let mut clause = WhereClause::for_impressions(query);
    if let Some(version) = version {
        let placeholder = clause.bind(SqlValue::Integer(version));
        clause.sql.push_str(&format!(" AND split_version_number = {placeholder}"));
    }
    clause
}

/// Pass 1: each unit's first exposure and treatments, per segment for a breakdown.
fn exposures(
    store: &mut Store,
    split: &str,
    request: &ReadoutRequest,
    readout: &mut Readout,
) -> Result<(), ReadoutError> {
    let query = ImpressionQuery {
        environments: Some(vec![request.environment.clone()]),
        splits: Some(vec![split.to_owned()]),
        from: request.from,
        to: request.to,
        ..ImpressionQuery::default()
    };
    let clause = exposure_clause(&query, request.version);
    let segment = match request.by {
        None => "NULL",
        Some(By::Label) => "label",
        Some(By::Version) => "split_version_number",
    };
    let group = if request.by.is_some() { format!(", {segment}") } else { String::new() };
    let sql = format!(
        "SELECT key, {segment}, MIN(time), MIN(treatment), MAX(treatment) FROM impressions{} GROUP BY key{group}",
        clause.sql
    );
    let mut too_many = None;
    store.rows::<5>(&sql, &clause, &mut |[key, segment, first, low, high]| {
        if too_many.is_some() {
            return Ok(());
        }
        let segment = match segment {
            Value::Text(s) => Segment::Text(s.to_owned()),
            Value::Int(n) => Segment::Number(n),
            _ => Segment::None,
        };
        if let Err(e) = readout.add_exposure(text(key), segment, int(first), text(low), text(high)) {
            too_many = Some(e);
        }
        Ok(())
    })?;
    too_many.map_or(Ok(()), |e| Err(e.into()))
}

/// Pass 3: the metrics' events, one query per event name, with every property its metrics sum.
fn events(store: &mut Store, readout: &mut Readout, design: &Design) -> Result<(), ReadoutError> {
    let Some((first, last)) = readout.exposure_span() else { return Ok(()) };
    let until = design.window_ms.map(|w| last.saturating_add(w));
    let mut names: Vec<String> = readout.metrics().iter().map(|m| m.event.clone()).collect();
    names.sort();
    names.dedup();
    let sqlite = matches!(store, Store::Sqlite(_));
    for name in names {
        // The metrics on this event, and for each `sum` the column its property is in.
        let metrics: Vec<(usize, Option<String>)> = readout
            .metrics()
            .iter()
            .enumerate()
            .filter(|(_, m)| m.event == name)
            .map(|(i, m)| match &m.measure {
                experiments::Measure::Sum(path) => (i, Some(json_path(path, sqlite))),
                _ => (i, None),
            })
            .collect();
        // One query per event name reads the conversions, the counts and the first `sum`'s
        // property; each further `sum` on the same event reads its own property.
        let counts: Vec<usize> = metrics.iter().filter(|(_, p)| p.is_none()).map(|(i, _)| *i).collect();
        let sums: Vec<(usize, &str)> = metrics.iter().filter_map(|(i, p)| p.as_deref().map(|p| (*i, p))).collect();
        let mut queries: Vec<TrackQuery<'_>> = vec![(&counts, sums.first().copied())];
        queries.extend(sums.iter().skip(1).map(|sum| (&[][..], Some(*sum))));
        for (counts, sum) in queries {
            let mut clause = WhereClause::default();
            let value = match sum {
                None => "NULL".to_owned(),
                Some((_, path)) => {
                    let placeholder = clause.bind(SqlValue::Text(path));
                    if sqlite {
                        format!("raw -> {placeholder}")
                    } else {
                        format!("raw #> CAST(CAST({placeholder} AS text) AS text[])")
                    }
                }
            };
            let conditions = track_conditions(&mut clause, &name, first, until, design.to);
            let sql = format!("SELECT user_id, anonymous_id, timestamp, {value} FROM events{conditions}");
            let mut values: Vec<(usize, Option<f64>)> = counts.iter().map(|m| (*m, None)).collect();
            store.rows::<4>(&sql, &clause, &mut |[user, anonymous, timestamp, value]| {
                if let Some((metric, _)) = sum {
                    let value = opt(value).and_then(|json| serde_json::from_str::<f64>(json).ok());
                    values.truncate(counts.len());
                    values.push((metric, value));
                }
                readout.add_event(opt(user), opt(anonymous), int(timestamp), &values, design);
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// One query over a metric event: the conversion and count metrics it serves, and the `sum`
/// metric (with its property's path) whose value it reads, if any.
type TrackQuery<'a> = (&'a [usize], Option<(usize, &'a str)>);

/// The conditions on `events` for the `track` events named `name` from `first` until `until`
/// (inclusive) or `to` (exclusive). Bound after whatever the SELECT list binds: SQLite numbers
/// `$N` by first appearance.
fn track_conditions<'q>(
    clause: &mut WhereClause<'q>,
    name: &'q str,
    first: i64,
    until: Option<i64>,
    to: Option<i64>,
) -> String {
    let event = clause.bind(SqlValue::Text(name));
    let from = clause.bind(SqlValue::Integer(first));
    let mut sql = format!(" WHERE type = 'track' AND event = {event} AND timestamp >= {from}");
    if let Some(until) = until {
        sql.push_str(&format!(" AND timestamp <= {}", clause.bind(SqlValue::Integer(until))));
    } else if let Some(to) = to {
        sql.push_str(&format!(" AND timestamp < {}", clause.bind(SqlValue::Integer(to))));
    }
    sql
}

/// The path of a property under `properties`, as SQLite's `->` (`$."properties"."a"`) or
/// PostgreSQL's `#>` (`{"properties","a"}`) takes it; [`Metric::parse`] refused the characters
/// that would need escaping.
pub(crate) fn json_path(path: &[String], sqlite: bool) -> String {
    let parts = std::iter::once("properties").chain(path.iter().map(String::as_str));
    if sqlite {
        parts.map(|p| format!(".\"{p}\"")).fold("$".to_owned(), |acc, p| acc + &p)
    } else {
        format!("{{{}}}", parts.map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(","))
    }
}

/// One flag of `GET /api/experiments`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentSummary {
    /// The flag.
    pub split: String,
    /// Every exposed unit, multiple exposures included.
    pub units: u64,
    /// Units per treatment (single exposures only), in byte order.
    pub treatments: BTreeMap<String, u64>,
    /// The earliest impression.
    pub first_exposure: String,
    /// The latest impression.
    pub last_exposure: String,
    /// The `splitVersionNumber`s seen (impressions without one are left out).
    pub versions: Vec<i64>,
    /// Units seen with more than one treatment.
    pub multiple_exposures: experiments::MultipleExposures,
    /// The sample-ratio test against an equal split.
    pub srm: experiments::Srm,
}

/// `GET /api/experiments?environment=…`: the flags seen in `environment` (name or id), by name.
pub fn list(store: &mut Store, environment: &str) -> Result<Vec<ExperimentSummary>, QueryError> {
    #[derive(Default)]
    struct Flag {
        units: u64,
        several: u64,
        treatments: BTreeMap<String, u64>,
        first: i64,
        last: i64,
        versions: Vec<i64>,
    }
    let query = ImpressionQuery { environments: Some(vec![environment.to_owned()]), ..ImpressionQuery::default() };
    let clause = exposure_clause(&query, None);
    let mut flags: BTreeMap<String, Flag> = BTreeMap::new();
    let sql = format!(
        "SELECT split, MIN(time), MAX(time), MIN(treatment), MAX(treatment) FROM impressions{} GROUP BY split, key",
        clause.sql
    );
    store.rows::<5>(&sql, &clause, &mut |[split, first, last, low, high]| {
        let flag = flags.entry(text(split).to_owned()).or_insert_with(|| Flag { first: i64::MAX, ..Flag::default() });
        flag.units += 1;
        flag.first = flag.first.min(int(first));
        flag.last = flag.last.max(int(last));
        let (low, high) = (text(low), text(high));
        if low == high {
            *flag.treatments.entry(low.to_owned()).or_default() += 1;
        } else {
            flag.several += 1;
            // Treatments seen only in multiple exposures are still listed, with 0 units.
            flag.treatments.entry(low.to_owned()).or_default();
            flag.treatments.entry(high.to_owned()).or_default();
        }
        Ok(())
    })?;
    let sql = format!(
        "SELECT DISTINCT split, split_version_number FROM impressions{} AND split_version_number IS NOT NULL",
        clause.sql
    );
    store.rows::<2>(&sql, &clause, &mut |[split, version]| {
        if let Some(flag) = flags.get_mut(text(split)) {
            flag.versions.push(int(version));
        }
        Ok(())
    })?;
    Ok(flags
        .into_iter()
        .map(|(split, mut flag)| {
            flag.versions.sort_unstable();
            let counts: Vec<u64> = flag.treatments.values().copied().collect();
            let weights = vec![1.0; counts.len()];
            let p_value = crate::experiments::stats::srm_p_value(&counts, &weights);
            let share = flag.several as f64 / flag.units as f64;
            ExperimentSummary {
                split,
                units: flag.units,
                first_exposure: rfc3339(flag.first),
                last_exposure: rfc3339(flag.last),
                versions: flag.versions,
                multiple_exposures: experiments::MultipleExposures {
                    units: flag.several,
                    share,
                    warning: share > experiments::MULTIPLE_EXPOSURE_WARNING,
                },
                srm: experiments::Srm {
                    p_value,
                    weights: flag.treatments.keys().map(|t| (t.clone(), 1.0 / counts.len() as f64)).collect(),
                    warning: p_value.is_some_and(|p| p < experiments::SRM_WARNING),
                    reason: p_value.is_none().then_some("fewer than 2 treatments"),
                },
                treatments: flag.treatments,
            }
        })
        .collect())
}

/// Writes `answer` as CSV: one row per group (`by` and `segment` empty for the whole read-out;
/// a segment without a label or version is `(none)`), metric and treatment, every statistic a
/// column; what JSON gives as null is an empty cell.
pub fn write_csv(answer: &ReadoutAnswer, out: &mut dyn std::io::Write) -> Result<(), QueryError> {
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record([
        "by",
        "segment",
        "metric",
        "treatment",
        "units",
        "total",
        "mean",
        "variance",
        "absolute",
        "absolute_ci_low",
        "absolute_ci_high",
        "relative",
        "relative_ci_low",
        "relative_ci_high",
        "p_value",
        "chance_to_beat_control",
        "reason",
    ])?;
    let number = |x: Option<f64>| x.filter(|x| x.is_finite()).map_or_else(String::new, |x| x.to_string());
    let mut groups = vec![("", String::new(), &answer.analysis.top)];
    if let Some(breakdown) = &answer.analysis.breakdown {
        for segment in &breakdown.segments {
            let value = match &segment.value {
                Segment::None => "(none)".to_owned(),
                Segment::Number(n) => n.to_string(),
                Segment::Text(s) => s.clone(),
            };
            groups.push((breakdown.by, value, &segment.analysis));
        }
    }
    for (by, segment, group) in groups {
        for metric in &group.metrics {
            for t in &metric.treatments {
                let c = t.comparison.as_ref();
                let abs = c.and_then(|c| c.absolute);
                let rel = c.and_then(|c| c.relative);
                let ci =
                    |e: Option<experiments::stats::Estimate>, i: usize| number(e.and_then(|e| e.ci).map(|ci| ci[i]));
                csv.write_record([
                    by.to_owned(),
                    super::format::defuse(&segment).into_owned(),
                    super::format::defuse(&metric.metric).into_owned(),
                    super::format::defuse(&t.treatment).into_owned(),
                    t.units.to_string(),
                    number(t.total),
                    number(t.mean),
                    number(t.variance),
                    number(abs.map(|e| e.estimate)),
                    ci(abs, 0),
                    ci(abs, 1),
                    number(rel.map(|e| e.estimate)),
                    ci(rel, 0),
                    ci(rel, 1),
                    number(c.and_then(|c| c.p_value)),
                    number(c.and_then(|c| c.chance_to_beat_control)),
                    c.and_then(|c| c.reason).or(t.reason).unwrap_or_default().to_owned(),
                ])?;
            }
        }
    }
    csv.flush().map_err(QueryError::Write)?;
    Ok(())
}
