/*!
Attribution answers from the store: what `GET /api/anonymous/{id}`, `GET /api/user/{id}`,
`sluice anonymous ID` and `sluice user ID` return.

Nothing derived is stored: every answer is computed by [`crate::attribution`] from the raw
events the store holds, on each request. So late or out-of-order events, a changed classifier or
changed `[attribution]` settings show in the very next answer, exactly as a full recomputation
would give them, with no reprocessing step; the price is a few indexed queries per request (one
for the events of the devices asked about, and one per round of the identity search).
*/

use serde::Serialize;
use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use super::{EventQuery, QueryError};
use crate::attribution::{self, AttributionSettings, Session};
use crate::store::Store;

/// `GET /api/anonymous/{id}`: the device's sessions, oldest first.
#[derive(Debug, Serialize)]
pub struct AnonymousAnswer {
    /// One per visit.
    pub sessions: Vec<Session>,
}

/// `GET /api/user/{id}`: the user's devices and each one's sessions (the seed's shape), plus the
/// first and last touch across all of them.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserAnswer {
    /// Every device linked to the user (or to a userId aliased to it), sorted.
    pub anonymous_ids: Vec<String>,
    /// The sessions of each device, in the order of `anonymousIds`.
    pub sessions: Vec<Vec<Session>>,
    /// The userIds that are this person: the one asked for and those aliased to it.
    pub user_ids: Vec<String>,
    /// The earliest session of any device.
    pub first_touch: Option<Session>,
    /// The latest session of any device.
    pub last_touch: Option<Session>,
}

/// The sessions of anonymousId `id`; an unknown id has none.
pub fn anonymous(store: &mut Store, id: &str, settings: &AttributionSettings) -> Result<AnonymousAnswer, QueryError> {
    let events = events(store, &EventQuery { anonymous_ids: vec![id.to_owned()], ..EventQuery::default() })?;
    Ok(AnonymousAnswer { sessions: attribution::sessions(&events, None, settings) })
}

/// The devices and sessions of userId `id`; an unknown id has none.
pub fn user(store: &mut Store, id: &str, settings: &AttributionSettings) -> Result<UserAnswer, QueryError> {
    let cluster = attribution::user_cluster_with(id, |ids| links(store, ids))?;
    // One query for every device; `sessions` keeps each device's sessions apart.
    let events = events(store, &EventQuery { anonymous_ids: cluster.anonymous_ids.clone(), ..EventQuery::default() })?;
    let all = attribution::sessions(&events, Some(id), settings);
    let (first_touch, last_touch) = (attribution::first_touch(&all).cloned(), attribution::last_touch(&all).cloned());
    let mut by_device: HashMap<String, Vec<Session>> = HashMap::new();
    for session in all {
        by_device.entry(session.anonymous_id.clone()).or_default().push(session);
    }
    let sessions = cluster.anonymous_ids.iter().map(|a| by_device.remove(a).unwrap_or_default()).collect();
    Ok(UserAnswer {
        first_touch,
        last_touch,
        anonymous_ids: cluster.anonymous_ids,
        user_ids: cluster.user_ids,
        sessions,
    })
}

/// The identity links of every event naming one of `ids` as its userId, anonymousId or previousId
/// (a superset of what the identity search asks for: userId or previousId). Only the id columns
/// are read, and each distinct link is returned once, as a minimal event: a user with a million
/// tracked events costs a scan of the index, not a million parsed events.
fn links(store: &mut Store, ids: &[String]) -> Result<Vec<Value>, QueryError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    store.query_events(&EventQuery { any_ids: ids.to_vec(), ..EventQuery::default() }, &mut |e| {
        let alias = e.event_type == "alias";
        let owned = |v: Option<&str>| v.map(str::to_owned);
        let link = (alias, owned(e.user_id), owned(e.anonymous_id), owned(if alias { e.previous_id } else { None }));
        if link.1.is_some() && seen.insert(link.clone()) {
            let (_, user_id, anonymous_id, previous_id) = link;
            out.push(json!({
                "type": e.event_type, "userId": user_id, "anonymousId": anonymous_id, "previousId": previous_id,
            }));
        }
        Ok(())
    })?;
    Ok(out)
}

/// The events `q` matches, parsed.
fn events(store: &mut Store, q: &EventQuery) -> Result<Vec<Value>, QueryError> {
    let mut out = Vec::new();
    store.query_events(q, &mut |e| {
        // Every stored event passed `record::segment::accept`; one that does not parse means a
        // damaged store, and leaving it out beats refusing every answer for that user.
        match serde_json::from_str(e.raw) {
            Ok(event) => out.push(event),
            Err(err) => {
                tracing::error!(message_id = e.message_id, error = %err, "a stored event is not valid JSON; left out")
            }
        }
        Ok(())
    })?;
    Ok(out)
}
