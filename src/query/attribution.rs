/*!
Attribution answers from the store: what `GET /api/anonymous/{id}`, `GET /api/user/{id}`,
`sluice anonymous ID` and `sluice user ID` return.

Nothing derived is stored: every answer is computed by [`crate::attribution`] from the raw
events the store holds, on each request. So late or out-of-order events, a changed classifier or
changed `[attribution]` settings show in the very next answer, exactly as a full recomputation
would give them, with no reprocessing step.

What one answer costs is bounded, because anyone who can post events can attach ids and events
to someone else's user: the identity search is one recursive query over the alias links plus
one query for the devices, both stopped at `attribution.max_cluster_ids`; the events are read
one row at a time, each read into the fields attribution reads ([`Event`]), and at most
`attribution.max_events` of them. An answer that hit a bound says so in `truncated`. Id lists
go to the database in chunks of [`IDS_PER_QUERY`], below both backends' limits on bound values.
*/

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use super::cells::text;
use super::{EventQuery, QueryError};
use crate::attribution::{self, AttributionSettings, Event, Links, Session, UserCluster};
use crate::record::schema::Value;
use crate::store::Store;
use crate::store::where_clause::WhereClause;

/// Most ids bound in one query: SQLite allows 32,766 values per statement, PostgreSQL 65,535.
pub const IDS_PER_QUERY: usize = 10_000;

/// Which bounds an answer hit; left out of the JSON when it hit none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Truncated {
    /// The user's cluster had more than `attribution.max_cluster_ids` ids; the rest are left out.
    pub ids: bool,
    /// There were more than `attribution.max_events` events; the latest are left out (of each
    /// group of [`IDS_PER_QUERY`] devices, for a cluster configured to hold more).
    pub events: bool,
}

impl Truncated {
    fn is_none(&self) -> bool {
        !self.ids && !self.events
    }
}

/// `GET /api/anonymous/{id}`: the device's sessions, oldest first.
#[derive(Debug, Serialize)]
pub struct AnonymousAnswer {
    /// One per visit.
    pub sessions: Vec<Session>,
    /// Present when the answer is incomplete because it hit a bound.
    #[serde(skip_serializing_if = "Truncated::is_none")]
    pub truncated: Truncated,
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
    /// Present when the answer is incomplete because it hit a bound.
    #[serde(skip_serializing_if = "Truncated::is_none")]
    pub truncated: Truncated,
}

/// The sessions of anonymousId `id`; an unknown id has none.
pub fn anonymous(store: &mut Store, id: &str, settings: &AttributionSettings) -> Result<AnonymousAnswer, QueryError> {
    let (events, truncated_events) = events(store, &[id.to_owned()], settings.max_events)?;
    Ok(AnonymousAnswer {
        sessions: attribution::sessions(&events, None, settings),
        truncated: Truncated { ids: false, events: truncated_events },
    })
}

/// The devices and sessions of userId `id`; an unknown id has none.
pub fn user(store: &mut Store, id: &str, settings: &AttributionSettings) -> Result<UserAnswer, QueryError> {
    let (cluster, truncated_ids) = cluster(store, id, settings.max_cluster_ids)?;
    // A user with no devices has no events to read: an empty list, never "no filter".
    let (events, truncated_events) = events(store, &cluster.anonymous_ids, settings.max_events)?;
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
        truncated: Truncated { ids: truncated_ids, events: truncated_events },
    })
}

/// The cluster of userId `id` (the rules are in [`crate::attribution::identity`]), with at most
/// `max_ids` ids, and whether it had more.
///
/// The user's own devices come first, then one recursive query follows the alias links from `id`
/// through userIds only and says of each id reached whether it is a userId, then one more (per
/// [`IDS_PER_QUERY`] userIds) finds the devices those userIds were seen on. So an alias chain of
/// any length costs three queries, not one per link; and since anyone who can post events can
/// alias ids onto a user, what such links bring in is what the bound cuts, never the devices the
/// user was seen on directly.
pub fn cluster(store: &mut Store, id: &str, max_ids: usize) -> Result<(UserCluster, bool), QueryError> {
    let limit = max_ids.max(1);
    let asked = [id.to_owned()];
    // One place is the user's own id.
    let own = store.devices_of(&asked, limit)?;
    let reached = store.alias_reach(id, limit + 1)?;
    let is_user = !own.is_empty() || reached.iter().any(|(reached, user)| reached == id && *user);
    if reached.len() <= 1 && !is_user {
        // Neither a userId nor linked by any alias: nobody.
        return Ok((UserCluster::default(), false));
    }
    let mut truncated = own.len() >= limit;
    let mut users = BTreeSet::from(asked);
    let mut anonymous: BTreeSet<String> = own.into_iter().take(limit - 1).collect();
    let room = |users: &BTreeSet<String>, anonymous: &BTreeSet<String>| limit - users.len() - anonymous.len();
    for (reached_id, user) in reached {
        // The id asked for is the user; the others are userIds or, if not, devices. An id asked
        // for that is not a userId (an aliased anonymousId) is both: its alias names it a device.
        let known = if reached_id == id {
            user || anonymous.contains(&reached_id)
        } else {
            users.contains(&reached_id) || anonymous.contains(&reached_id)
        };
        if known {
            continue;
        }
        if room(&users, &anonymous) == 0 {
            truncated = true;
        } else if user {
            users.insert(reached_id);
        } else {
            anonymous.insert(reached_id);
        }
    }
    let others: Vec<String> = users.iter().filter(|user| *user != id).cloned().collect();
    for chunk in others.chunks(IDS_PER_QUERY) {
        let left = room(&users, &anonymous);
        // Devices already known may come back too: ask for enough to see past them.
        let found = store.devices_of(chunk, left + anonymous.len() + 1)?;
        let new: Vec<String> = found.into_iter().filter(|device| !anonymous.contains(device)).collect();
        if new.len() > left {
            truncated = true;
        }
        anonymous.extend(new.into_iter().take(left));
        if truncated {
            break;
        }
    }
    Ok((
        UserCluster { user_ids: users.into_iter().collect(), anonymous_ids: anonymous.into_iter().collect() },
        truncated,
    ))
}

/// The events of the devices `anonymous_ids`, each read into what attribution reads, at most
/// `max_events` of them (oldest first within each chunk of devices), and whether there were more.
pub(crate) fn events(
    store: &mut Store,
    anonymous_ids: &[String],
    max_events: usize,
) -> Result<(Vec<Event>, bool), QueryError> {
    let max_events = max_events.max(1);
    let mut out = Vec::new();
    let mut truncated = false;
    for chunk in anonymous_ids.chunks(IDS_PER_QUERY) {
        let room = max_events - out.len();
        let q =
            EventQuery { anonymous_ids: Some(chunk.to_vec()), limit: Some(room as u64 + 1), ..EventQuery::default() };
        let mut read = 0;
        store.query_events(&q, &mut |e| {
            read += 1;
            if read > room {
                truncated = true;
                return Ok(());
            }
            // Every stored event passed `record::segment::accept`; one that does not parse means
            // a damaged store, and leaving it out beats refusing every answer for that user.
            match Event::from_json(e.raw) {
                Ok(event) => out.push(event),
                Err(err) => {
                    tracing::error!(message_id = e.message_id, error = %err, "a stored event is not valid JSON; left out")
                }
            }
            Ok(())
        })?;
        if truncated {
            break;
        }
    }
    Ok((out, truncated))
}

/// Every identity link in the store, as `/api/user` follows them (an experiment read-out's and an
/// attribution report's one pass over them); `None` when there are more than `max_links`.
pub(crate) fn links(store: &mut Store, max_links: usize) -> Result<Option<Links>, QueryError> {
    let mut links = Links::default();
    let mut read = 0usize;
    let none = WhereClause::default();
    store.rows::<2>(
        "SELECT DISTINCT user_id, anonymous_id FROM events WHERE user_id IS NOT NULL AND anonymous_id IS NOT NULL",
        &none,
        &mut |[user, anonymous]| {
            read += 1;
            if read <= max_links {
                links.add_device(text(user), text(anonymous));
            }
            Ok(())
        },
    )?;
    // A previousId is a userId (and the search goes on through it) when some event carried it
    // as its userId.
    store.rows::<3>(
        "SELECT previous_id, user_id, EXISTS (SELECT 1 FROM events u WHERE u.user_id = a.previous_id)
         FROM events a WHERE a.type = 'alias' AND a.previous_id IS NOT NULL AND a.user_id IS NOT NULL",
        &none,
        &mut |[previous, user, previous_is_user]| {
            read += 1;
            if read <= max_links {
                links.add_alias(text(previous), text(user));
                if matches!(previous_is_user, Value::Bool(true) | Value::Int(1)) {
                    links.add_user(text(previous));
                }
            }
            Ok(())
        },
    )?;
    Ok((read <= max_links).then_some(links))
}
