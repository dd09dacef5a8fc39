/*!
Marketing attribution from Segment events: where each visit came from, how visits group into
sessions, and which devices belong to which user.

This module is pure: functions over slices of [`Event`]s (the fields of a Segment event it
reads, typed) and an [`AttributionSettings`], no I/O. The store-backed caller loads the events touching an id
and serves the results (`GET /api/anonymous/{id}`, `GET /api/user/{id}` in the seed's shapes):

```text
GET /api/anonymous/{id}  →  {"sessions": sessions(events_of(id), None, settings)}
GET /api/user/{id}       →  let c = the cluster of id (query::attribution searches the store);
                            {"anonymousIds": c.anonymous_ids,
                             "sessions": [sessions(events_of(a), Some(id), settings) for a in c.anonymous_ids]}
```

Everything is recomputed from the events, so the answer never depends on the order they arrived
in. The pieces:
- [`referrer`]: one visit → a [`Touchpoint`] (referrer type, campaign, channel);
- [`channel`]: GA4-style channel groups;
- [`sessions`](mod@sessions): a device's events → [`Session`]s;
- [`identity`]: `identify`/`alias` links → a user's [`UserCluster`];
- [`knowledge`]: the site tables everything above consults.

Fields read from an event: `type`, `messageId`, `anonymousId`, `userId`, `previousId`,
`timestamp` (RFC 3339; `originalTimestamp`/`receivedAt` as fallbacks), `context.page.url` or
`properties.url`, `context.page.referrer` / `properties.referrer` / `context.referrer` (string
or `{url|link}`), and `context.campaign` as a fallback for UTM tags.
*/

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

pub mod channel;
mod event;
pub mod identity;
mod knowledge;
pub mod models;
pub mod paths;
pub mod referrer;
pub mod sessions;

#[cfg(test)]
mod cases;

pub use channel::Channel;
pub use event::{Event, touchpoint};
pub use identity::{Links, UserCluster, user_cluster};
pub use referrer::{Campaign, ClickIdValue, Referrer, Touchpoint, classify};
pub use sessions::{Session, first_touch, last_non_direct_touch, last_touch, sessions};

/// The `[attribution]` configuration section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttributionSettings {
    /// The site's own domains (subdomains included): referrers from them are `internal`.
    pub own_domains: Vec<String>,
    /// Other domains whose referrals are not a new source (payment providers, SSO): also `internal`.
    pub referral_exclusions: Vec<String>,
    /// Inactivity after which the next page starts a new session, in milliseconds.
    pub session_timeout_ms: u64,
    /// Most ids (userIds and anonymousIds together) one user's answer gathers; anyone who can
    /// post events can link ids to a user, so a larger cluster is cut here and marked truncated.
    pub max_cluster_ids: usize,
    /// Most events one answer reads; beyond them the answer is marked truncated.
    pub max_events: usize,
    /// The `track` events that are conversions in an attribution report (`conversion=` on a
    /// request replaces them).
    pub conversions: Vec<String>,
    /// The property under `properties` that holds a conversion's value.
    pub value_property: String,
    /// How long before a conversion its touches may lie (`30d`).
    pub lookback: String,
    /// The half-life of the `time_decay` model (`7d`).
    pub half_life: String,
    /// Most events and identity links one attribution report reads (413 beyond): a report
    /// holds every person's touches in memory while it runs.
    pub max_report_events: usize,
}

impl Default for AttributionSettings {
    fn default() -> Self {
        // GA4's and Universal Analytics' default.
        AttributionSettings {
            own_domains: Vec::new(),
            referral_exclusions: Vec::new(),
            session_timeout_ms: 30 * 60 * 1000,
            max_cluster_ids: 1_000,
            max_events: 20_000,
            conversions: Vec::new(),
            value_property: "revenue".to_owned(),
            lookback: "30d".to_owned(),
            half_life: "7d".to_owned(),
            max_report_events: 10_000_000,
        }
    }
}

impl AttributionSettings {
    /// The session timeout as a duration (saturating on absurd values).
    pub fn session_timeout(&self) -> TimeDelta {
        i64::try_from(self.session_timeout_ms).ok().and_then(TimeDelta::try_milliseconds).unwrap_or(TimeDelta::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_to_a_thirty_minute_timeout_and_reject_unknown_keys() {
        let s: AttributionSettings = serde_json::from_str(r#"{"own_domains": ["example.com"]}"#).unwrap();
        assert_eq!(s.session_timeout(), TimeDelta::minutes(30));
        assert_eq!(s.own_domains, vec!["example.com".to_owned()]);
        assert!(serde_json::from_str::<AttributionSettings>(r#"{"timeout": 1}"#).is_err());
        assert_eq!(AttributionSettings { session_timeout_ms: u64::MAX, ..s }.session_timeout(), TimeDelta::MAX);
    }
}
