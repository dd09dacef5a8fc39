/*!
Attribution reports from the store: `GET /api/reports/attribution` and `sluice report attribution`.

Which channels, sources, campaigns or referrer types earn the conversions, by each model of
[`crate::attribution::models`], over the paths [`crate::attribution::paths`] defines.

One report reads the store in three passes, all in one snapshot, none per person:
1. the conversions: the `track` events of the conversion names in `[from, to)` (index
   `events_track`), each with its value property extracted in SQL;
2. the identity links, once ([`super::attribution::links`], as an experiment read-out reads them);
3. every event of every device before `to`, in (anonymousId, timestamp) order (index
   `events_anonymous_id`): each device's events become its sessions exactly as `/api/user`
   builds them ([`crate::attribution::sessions`]) and are kept only as touches (time, group,
   direct), so memory holds one device's events at a time and every session's touch.

Then each conversion's person (the identity cluster of its userId, else of its anonymousId) gets
the touches of all its devices. Nothing derived is stored, so a changed classifier, a late event
or new `[attribution]` settings show in the next report with no rebuild; the cost is reading the
events once per report (BENCHMARKS.md).

People who did not convert contribute null paths: their devices are grouped by identity (a device
and the ids `Links::person_ids` reaches from it, taking devices in name order, each into one path);
a device of a person who converted belongs to that person's null path.

Bounds: `attribution.max_report_events` events and links (413 past them), the store's query
timeout (503), and the experiments' limit of read-outs at once per server.
*/

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::QueryError;
use super::cells::{int, opt, rfc3339, text};
use super::filter::{ParamError, check_window, no_nul, once, time_param};
use crate::attribution::models::{self, Model, Row};
use crate::attribution::paths::{self, ConversionEvent, GroupBy, PersonPaths, Window};
use crate::attribution::{self, AttributionSettings, Event};
use crate::store::Store;
use crate::store::where_clause::{SqlValue, WhereClause};

/// Most conversion names one request may give.
pub const MAX_CONVERSIONS: usize = 50;

/// The models by the names `model=` takes.
pub const MODELS: [&str; 7] =
    ["first", "last", "last_non_direct", "linear", "time_decay", "position_based", "data_driven"];

/// How a report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// The JSON object.
    Json,
    /// `model,group,conversions,value,share` rows.
    Csv,
}

/// A report as asked for by the query string or the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRequest {
    /// The models, by name, in the order asked (default `last_non_direct`).
    pub models: Vec<&'static str>,
    /// The conversion events (empty: the configured ones).
    pub conversions: Vec<String>,
    /// Conversions at or after (epoch ms).
    pub from: Option<i64>,
    /// Conversions before (epoch ms).
    pub to: Option<i64>,
    /// What the rows are.
    pub group: GroupBy,
    /// The lookback as written, when given.
    pub lookback: Option<String>,
    /// time_decay's half-life as written, when given.
    pub half_life: Option<String>,
    /// The output format.
    pub format: ReportFormat,
}

const KNOWN: &str = "model, conversion, from, to, group, lookback, half_life or format";

/// True for a property name the value can be read from in SQL without escaping.
pub fn is_property_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
}

impl ReportRequest {
    /// Parses name/value pairs (`model=linear&model=data_driven&conversion=Order Completed`);
    /// `model` and `conversion` may repeat, the others may appear once.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<ReportRequest, ParamError> {
        let bad = |param: &str, reason: String| ParamError { param: param.to_owned(), reason };
        let (mut models, mut conversions) = (Vec::new(), Vec::new());
        let (mut from, mut to, mut group, mut lookback, mut half_life, mut format) =
            (None, None, None, None, None, None);
        let duration = |name: &str, value: &str| match crate::duration::parse(value) {
            Ok(ms) if ms > 0 => Ok(value.to_owned()),
            Ok(_) => Err(bad(name, "must be longer than 0".into())),
            Err(e) => Err(bad(name, e)),
        };
        for (name, value) in pairs {
            let name = name.as_str();
            no_nul(name, value)?;
            match name {
                "model" => {
                    let model = MODELS
                        .into_iter()
                        .find(|m| m == value)
                        .ok_or_else(|| bad(name, format!("`{value}` is not a model; use {}", MODELS.join(", "))))?;
                    if models.contains(&model) {
                        return Err(bad(name, format!("`{value}` is given twice")));
                    }
                    models.push(model);
                }
                "conversion" if value.is_empty() => return Err(bad(name, "is empty; name a track event".into())),
                "conversion" if conversions.len() == MAX_CONVERSIONS => {
                    return Err(bad(name, format!("is given more than {MAX_CONVERSIONS} times")));
                }
                "conversion" => conversions.push(value.clone()),
                "from" => once(&mut from, name, || time_param(name, value))?,
                "to" => once(&mut to, name, || time_param(name, value))?,
                "group" => once(&mut group, name, || {
                    GroupBy::parse(value).ok_or_else(|| {
                        bad(name, format!("`{value}` is not a grouping; use channel, source, campaign or referrer"))
                    })
                })?,
                "lookback" => once(&mut lookback, name, || duration(name, value))?,
                "half_life" => once(&mut half_life, name, || duration(name, value))?,
                "format" => once(&mut format, name, || match value.as_str() {
                    "json" => Ok(ReportFormat::Json),
                    "csv" => Ok(ReportFormat::Csv),
                    other => Err(bad(name, format!("`{other}` is not a format; use json or csv"))),
                })?,
                _ => return Err(bad(name, format!("is not a known parameter; use {KNOWN}"))),
            }
        }
        check_window(from, to)?;
        if models.is_empty() {
            models.push("last_non_direct");
        }
        Ok(ReportRequest {
            models,
            conversions,
            from,
            to,
            group: group.unwrap_or(GroupBy::Channel),
            lookback,
            half_life,
            format: format.unwrap_or(ReportFormat::Json),
        })
    }
}

/// Why a report was not made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Neither the request nor the configuration names a conversion: 400.
    #[error(
        "no conversion events are named: give conversion=EVENT (repeatable) or list them in [attribution] conversions"
    )]
    NoConversions,
    /// Over `attribution.max_report_events`: 413.
    #[error(
        "the report would read more than {0} events, conversions or identity links; narrow it with `to`, or raise attribution.max_report_events (a report holds every person's touches in memory)"
    )]
    TooLarge(usize),
    /// The configured lookback or half-life does not parse (the configuration check refuses it first).
    #[error("attribution.{0}: {1}")]
    Setting(&'static str, String),
    /// The store failed or timed out.
    #[error(transparent)]
    Query(#[from] QueryError),
}

impl From<crate::store::StoreError> for ReportError {
    fn from(e: crate::store::StoreError) -> Self {
        ReportError::Query(e.into())
    }
}

/// One model's rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelReport {
    /// The model's name.
    pub model: &'static str,
    /// Credit per group, sorted by conversions.
    pub rows: Vec<Row>,
}

/// What a report echoes of how it was computed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportSettings {
    /// The grouping.
    pub group: &'static str,
    /// The conversion events counted.
    pub conversions: Vec<String>,
    /// The property the values were read from.
    pub value_property: String,
    /// `from` as RFC 3339, when given.
    pub from: Option<String>,
    /// `to` as RFC 3339, when given.
    pub to: Option<String>,
    /// The lookback.
    pub lookback: String,
    /// time_decay's half-life.
    pub half_life: String,
}

impl ReportSettings {
    fn new(
        request: &ReportRequest,
        settings: &AttributionSettings,
        names: &[String],
        lookback: String,
        half_life: String,
    ) -> ReportSettings {
        ReportSettings {
            group: request.group.as_str(),
            conversions: names.to_vec(),
            value_property: settings.value_property.clone(),
            from: request.from.map(rfc3339),
            to: request.to.map(rfc3339),
            lookback,
            half_life,
        }
    }
}

/// `GET /api/reports/attribution`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportAnswer {
    /// One per model asked for, in the order asked.
    pub reports: Vec<ModelReport>,
    /// How many conversions there were.
    pub conversions: u64,
    /// Their total value.
    pub value: f64,
    /// Values that were not numbers (counted as 0), and the like.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// How it was computed.
    pub settings: ReportSettings,
}

/// A conversion as read: whose, when, worth what.
struct Converted {
    user: Option<String>,
    anonymous: Option<String>,
    event: ConversionEvent,
}

/// Computes the report asked for by `request`.
pub fn report(
    store: &mut Store,
    request: &ReportRequest,
    settings: &AttributionSettings,
) -> Result<ReportAnswer, ReportError> {
    let Resolved { names, lookback, lookback_ms, half_life, half_life_ms } = resolve(request, settings)?;
    let window = Window { from_ms: request.from, to_ms: request.to, lookback_ms };
    let group = request.group;

    let (conversions, null_paths, warnings) = store.in_one_snapshot(|store| {
        let mut warnings = Vec::new();
        let max = settings.max_report_events;
        let started = std::time::Instant::now();
        let converted = conversions(store, names, &settings.value_property, request, max, &mut warnings)?;
        let converted_at = started.elapsed();
        let links = super::attribution::links(store, max)?.ok_or(ReportError::TooLarge(max))?;
        let linked_at = started.elapsed();
        let touches = touches(store, request.to, group, settings)?;
        let touched_at = started.elapsed();
        let (conversions, null_paths) =
            assemble(&converted, &links, &touches, group, &window, settings.max_cluster_ids);
        let assembled_at = started.elapsed();
        // Where a slow report spends its time, for whoever tunes it.
        tracing::debug!(
            conversions_ms = converted_at.as_millis() as u64,
            links_ms = (linked_at - converted_at).as_millis() as u64,
            touches_ms = (touched_at - linked_at).as_millis() as u64,
            assemble_ms = (assembled_at - touched_at).as_millis() as u64,
            "attribution report passes"
        );
        Ok::<_, ReportError>((conversions, null_paths, warnings))
    })?;

    let started = std::time::Instant::now();
    let reports = request
        .models
        .iter()
        .map(|&name| {
            let model = model(name, half_life_ms as f64);
            ModelReport { model: name, rows: models::report(&model, &conversions, &null_paths) }
        })
        .collect();
    tracing::debug!(models_ms = started.elapsed().as_millis() as u64, "attribution report models");
    Ok(ReportAnswer {
        reports,
        conversions: conversions.len() as u64,
        value: conversions.iter().map(|c| c.value).sum::<f64>() + 0.0,
        warnings,
        settings: ReportSettings::new(request, settings, names, lookback, half_life),
    })
}

/// What a request leaves to the configuration, resolved.
struct Resolved<'a> {
    names: &'a Vec<String>,
    lookback: String,
    lookback_ms: i64,
    half_life: String,
    half_life_ms: i64,
}

/// The conversion names (never none) and durations of `request`, else of `settings`.
fn resolve<'a>(request: &'a ReportRequest, settings: &'a AttributionSettings) -> Result<Resolved<'a>, ReportError> {
    let names = if request.conversions.is_empty() { &settings.conversions } else { &request.conversions };
    if names.is_empty() {
        return Err(ReportError::NoConversions);
    }
    let duration = |name: &'static str, given: &Option<String>, configured: &String| {
        let text = given.as_ref().unwrap_or(configured);
        crate::duration::parse(text).map(|ms| (text.clone(), ms)).map_err(|e| ReportError::Setting(name, e))
    };
    let (lookback, lookback_ms) = duration("lookback", &request.lookback, &settings.lookback)?;
    let (half_life, half_life_ms) = duration("half_life", &request.half_life, &settings.half_life)?;
    Ok(Resolved { names, lookback, lookback_ms, half_life, half_life_ms })
}

/// The model named `name` (one of [`MODELS`]).
fn model(name: &str, half_life_ms: f64) -> Model {
    match name {
        "first" => Model::First,
        "last" => Model::Last,
        "last_non_direct" => Model::LastNonDirect,
        "linear" => Model::Linear,
        "time_decay" => Model::TimeDecay { half_life_ms },
        "position_based" => Model::PositionBased,
        _ => Model::DataDriven,
    }
}

/// Pass 1: the conversion events in `[from, to)`, with their values; a value that is not a
/// number counts as 0 and is summed up in `warnings`.
fn conversions(
    store: &mut Store,
    names: &[String],
    value_property: &str,
    request: &ReportRequest,
    max: usize,
    warnings: &mut Vec<String>,
) -> Result<Vec<Converted>, ReportError> {
    let sqlite = matches!(store, Store::Sqlite(_));
    let path = super::experiments::json_path(&[value_property.to_owned()], sqlite);
    let mut out = Vec::new();
    let (mut not_numbers, mut example) = (0u64, None);
    let unique: BTreeSet<&String> = names.iter().collect();
    for name in unique {
        let mut clause = WhereClause::default();
        let placeholder = clause.bind(SqlValue::Text(&path));
        // The value as JSON text: a number, a string, or anything else to be refused.
        let value = if sqlite {
            format!("raw -> {placeholder}")
        } else {
            format!("CAST(raw #> CAST(CAST({placeholder} AS text) AS text[]) AS text)")
        };
        let event = clause.bind(SqlValue::Text(name));
        let mut sql = format!(
            "SELECT user_id, anonymous_id, timestamp, {value} FROM events WHERE type = 'track' AND event = {event}"
        );
        if let Some(from) = request.from {
            sql.push_str(&format!(" AND timestamp >= {}", clause.bind(SqlValue::Integer(from))));
        }
        if let Some(to) = request.to {
            sql.push_str(&format!(" AND timestamp < {}", clause.bind(SqlValue::Integer(to))));
        }
        // One more than may still be read tells that there are too many, without reading them all.
        sql.push_str(&format!(" LIMIT {}", (max - out.len()).saturating_add(1)));
        store.rows::<4>(&sql, &clause, &mut |[user, anonymous, timestamp, value]| {
            let json = opt(value).map(|text| serde_json::from_str::<serde_json::Value>(text).unwrap_or_default());
            let value = paths::conversion_value(json.as_ref()).unwrap_or_else(|what| {
                not_numbers += 1;
                example.get_or_insert(what);
                0.0
            });
            let (user, anonymous) = (opt(user).map(str::to_owned), opt(anonymous).map(str::to_owned));
            // A conversion with neither id belongs to nobody; it still counts against the bound.
            out.push(Converted { user, anonymous, event: ConversionEvent { time_ms: int(timestamp), value } });
            Ok(())
        })?;
        if out.len() > max {
            return Err(ReportError::TooLarge(max));
        }
    }
    out.retain(|c| c.user.is_some() || c.anonymous.is_some());
    if let Some(example) = example {
        warnings.push(format!(
            "{not_numbers} conversion(s) had a `{value_property}` that is not a number (e.g. {example}); each counts as a conversion worth 0"
        ));
    }
    Ok(out)
}

/// Pass 3: every device's sessions before `to`, kept as touches of `group`.
fn touches(
    store: &mut Store,
    to: Option<i64>,
    group: GroupBy,
    settings: &AttributionSettings,
) -> Result<HashMap<String, Vec<models::Touch>>, ReportError> {
    let mut clause = WhereClause::default();
    let mut sql = "SELECT anonymous_id, raw FROM events WHERE anonymous_id IS NOT NULL".to_owned();
    if let Some(to) = to {
        // Later events cannot change a session that started before `to`.
        sql.push_str(&format!(" AND timestamp < {}", clause.bind(SqlValue::Integer(to))));
    }
    let max = settings.max_report_events;
    // One more than allowed tells that there are more, without reading them all.
    sql.push_str(&format!(" ORDER BY anonymous_id, timestamp LIMIT {}", max.saturating_add(1)));
    let mut out: HashMap<String, Vec<models::Touch>> = HashMap::new();
    let (mut device, mut events) = (String::new(), Vec::<Event>::new());
    let mut flush = |device: &str, events: &mut Vec<Event>| {
        let touches: Vec<models::Touch> =
            attribution::sessions(events, None, settings).iter().filter_map(|s| paths::touch(s, group)).collect();
        if !touches.is_empty() {
            out.insert(device.to_owned(), touches);
        }
        events.clear();
    };
    let mut read = 0usize;
    store.rows::<2>(&sql, &clause, &mut |[anonymous, raw]| {
        read += 1;
        if read > max {
            return Ok(());
        }
        let anonymous = text(anonymous);
        if anonymous != device {
            flush(&device, &mut events);
            device = anonymous.to_owned();
        }
        // Every stored event passed `record::segment::accept`; one that does not parse means a
        // damaged store, and leaving it out beats refusing every report.
        match Event::from_json(text(raw)) {
            Ok(event) => events.push(event),
            Err(e) => tracing::error!(error = %e, "a stored event is not valid JSON; left out of the report"),
        }
        Ok(())
    })?;
    if read > max {
        return Err(ReportError::TooLarge(max));
    }
    flush(&device, &mut events);
    Ok(out)
}

/// Each conversion's path through its person's devices, and the null paths of every person.
fn assemble(
    converted: &[Converted],
    links: &attribution::Links,
    touches: &HashMap<String, Vec<models::Touch>>,
    group: GroupBy,
    window: &Window,
    max_cluster_ids: usize,
) -> (Vec<models::Conversion>, Vec<Vec<String>>) {
    let mut people: BTreeMap<BTreeSet<String>, Vec<ConversionEvent>> = BTreeMap::new();
    for c in converted {
        let id = c.user.as_deref().or(c.anonymous.as_deref()).unwrap_or_default();
        let (ids, _) = links.person_ids(id, max_cluster_ids);
        people.entry(ids).or_default().push(c.event);
    }
    let of = |ids: &mut dyn Iterator<Item = &String>| -> Vec<models::Touch> {
        ids.filter_map(|id| touches.get(id)).flatten().cloned().collect()
    };
    let (mut conversions, mut null_paths) = (Vec::new(), Vec::new());
    let mut claimed: HashSet<String> = HashSet::new();
    let mut take = |paths: PersonPaths| {
        conversions.extend(paths.conversions);
        if !paths.null_path.is_empty() {
            null_paths.push(paths.null_path);
        }
    };
    for (ids, events) in &people {
        claimed.extend(ids.iter().cloned());
        take(paths::person_paths(of(&mut ids.iter()), events, group, window));
    }
    let mut devices: Vec<&String> = touches.keys().filter(|d| !claimed.contains(*d)).collect();
    devices.sort();
    for device in devices {
        if claimed.contains(device) {
            continue;
        }
        let (ids, _) = links.person_ids(device, max_cluster_ids);
        let mine: Vec<String> = ids.into_iter().filter(|id| !claimed.contains(id)).collect();
        take(paths::person_paths(of(&mut mine.iter()), &[], group, window));
        claimed.extend(mine);
    }
    (conversions, null_paths)
}

/// Writes `answer` as CSV: `model,group,conversions,value,share`, one row per model and group.
pub fn write_csv(answer: &ReportAnswer, out: &mut dyn std::io::Write) -> Result<(), QueryError> {
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record(["model", "group", "conversions", "value", "share"])?;
    for report in &answer.reports {
        for row in &report.rows {
            csv.write_record([
                report.model,
                &row.group,
                &row.conversions.to_string(),
                &row.value.to_string(),
                &row.share.to_string(),
            ])?;
        }
    }
    csv.flush()?;
    Ok(())
}

/// One touch of a conversion in `GET /api/user/{id}/conversions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreditedTouch {
    /// The session, as `/api/user` shows it; `null` for the direct touch of a conversion that had none.
    pub session: Option<attribution::Session>,
    /// Its row in a report grouped as asked.
    pub group: String,
    /// Whether it is in the `Direct` channel.
    pub direct: bool,
    /// Its share of the conversion under each model asked for.
    pub credit: BTreeMap<&'static str, f64>,
}

/// One conversion of the user with its touches.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserConversion {
    /// The `track` event's name.
    pub event: String,
    /// Its `messageId`.
    pub message_id: String,
    /// When it converted (RFC 3339).
    pub timestamp: String,
    /// What it was worth.
    pub value: f64,
    /// Its touches, oldest first.
    pub touches: Vec<CreditedTouch>,
}

/// `GET /api/user/{id}/conversions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserConversions {
    /// The user asked for.
    pub user_id: String,
    /// The user's conversions in `[from, to)`, oldest first.
    pub conversions: Vec<UserConversion>,
    /// Values that were not numbers (counted as 0).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Present when the user's cluster or events were cut at `attribution.max_cluster_ids` or `max_events`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<super::attribution::Truncated>,
    /// How it was computed.
    pub settings: ReportSettings,
}

/// The conversions of userId `id` (its identity cluster: `/api/user`'s) with each touch's credit
/// under the rule-based models asked for (`data_driven` has no per-conversion credit).
pub fn user_conversions(
    store: &mut Store,
    id: &str,
    request: &ReportRequest,
    settings: &AttributionSettings,
) -> Result<UserConversions, ReportError> {
    let Resolved { names, lookback, lookback_ms, half_life, half_life_ms } = resolve(request, settings)?;
    let group = request.group;

    let (cluster, truncated_ids) = super::attribution::cluster(store, id, settings.max_cluster_ids)?;
    let (events, truncated_events) = super::attribution::events(store, &cluster.anonymous_ids, settings.max_events)?;
    let mut sessions: Vec<(i64, attribution::Session)> = attribution::sessions(&events, Some(id), settings)
        .into_iter()
        .filter_map(|s| Some((s.started_at()?.timestamp_millis(), s)))
        .collect();
    // Ties as /api/user's firstTouch and lastTouch (and the reports) break them: by eventId.
    sessions.sort_by(|a, b| (a.0, &a.1.event_id).cmp(&(b.0, &b.1.event_id)));
    let starts: Vec<i64> = sessions.iter().map(|s| s.0).collect();

    // The conversions: the cluster's userIds', and those its devices made before anyone logged in.
    let mut found: Vec<(String, String, i64, serde_json::Value)> = Vec::new();
    let mut read = |q: &super::EventQuery, anonymous_only: bool| {
        store.query_events(q, &mut |e| {
            if anonymous_only && e.user_id.is_some() {
                return Ok(());
            }
            let raw: serde_json::Value = serde_json::from_str(e.raw).unwrap_or_default();
            let name = raw["event"].as_str().unwrap_or_default().to_owned();
            found.push((name, e.message_id.to_owned(), e.timestamp, raw));
            Ok(())
        })
    };
    let base = super::EventQuery {
        types: Some(vec!["track".to_owned()]),
        events: Some(names.clone()),
        from: request.from,
        to: request.to,
        limit: Some(settings.max_events as u64),
        ..super::EventQuery::default()
    };
    read(&super::EventQuery { user_ids: Some(cluster.user_ids.clone()), ..base.clone() }, false)?;
    read(&super::EventQuery { anonymous_ids: Some(cluster.anonymous_ids.clone()), ..base }, true)?;
    found.sort_by(|a, b| (a.2, &a.1).cmp(&(b.2, &b.1)));
    found.dedup_by(|a, b| a.1 == b.1);

    let models: Vec<(&'static str, Model)> =
        request.models.iter().map(|&m| (m, model(m, half_life_ms as f64))).collect();
    let (mut not_numbers, mut example) = (0u64, None);
    let conversions = found
        .into_iter()
        .map(|(event, message_id, time_ms, raw)| {
            let value =
                paths::conversion_value(raw["properties"].get(&settings.value_property)).unwrap_or_else(|what| {
                    not_numbers += 1;
                    example.get_or_insert(what);
                    0.0
                });
            let chosen = &sessions[paths::between(&starts, time_ms.saturating_sub(lookback_ms), time_ms)];
            let mut touches: Vec<(Option<attribution::Session>, models::Touch)> =
                chosen.iter().filter_map(|(_, s)| paths::touch(s, group).map(|t| (Some(s.clone()), t))).collect();
            if touches.is_empty() {
                let direct =
                    models::Touch { group: group.direct().to_owned(), time_ms, direct: true, tie: String::new() };
                touches.push((None, direct));
            }
            let conversion =
                models::Conversion { time_ms, value, touches: touches.iter().map(|(_, t)| t.clone()).collect() };
            let shares: Vec<(&'static str, Vec<f64>)> = models
                .iter()
                .filter_map(|(name, m)| models::credits(m, &conversion).map(|shares| (*name, shares)))
                .collect();
            let touches = touches
                .into_iter()
                .enumerate()
                .map(|(i, (session, touch))| CreditedTouch {
                    session,
                    group: touch.group,
                    direct: touch.direct,
                    credit: shares.iter().map(|(name, s)| (*name, s[i])).collect(),
                })
                .collect();
            UserConversion { event, message_id, timestamp: rfc3339(time_ms), value, touches }
        })
        .collect();
    let mut warnings = Vec::new();
    if let Some(example) = example {
        warnings.push(format!(
            "{not_numbers} conversion(s) had a `{}` that is not a number (e.g. {example}); each counts as worth 0",
            settings.value_property
        ));
    }
    let truncated = super::attribution::Truncated { ids: truncated_ids, events: truncated_events };
    Ok(UserConversions {
        user_id: id.to_owned(),
        conversions,
        warnings,
        truncated: (truncated.ids || truncated.events).then_some(truncated),
        settings: ReportSettings::new(request, settings, names, lookback, half_life),
    })
}
