/*!
Sessions: a device's visits, each attributed to the touchpoint that started it.

The result must be a pure function of the *set* of events, because events arrive late, twice and
out of order, and the store-backed caller recomputes from whatever it has. So [`sessions`] sorts
by (anonymousId, time, messageId), drops repeated messageIds (Segment retries), and only then
walks the events. Shuffling the input never changes the output (a property test checks it).

The rules, per anonymousId, in time order:
- Only *page-like* events (`page` events, or any event with `context.page`) can **start** a
  session; they are the touchpoints. Events without an `anonymousId` or a parseable time are
  ignored (a server-side event that only has a `userId` cannot be placed on a device).
- **Any** event (`track`, `identify`, …) keeps an open session alive: it moves `endedAt` and the
  inactivity clock. A non-page event that comes after the session has expired is not part of any
  session.
- A session **expires** when the gap since its last event is *at least* the timeout (30 min by
  default): after exactly 30:00.000 of inactivity, the next page starts a new session; after
  29:59.999 it does not. (GA4 also ends a session once 30 minutes have elapsed.)
- A page-like event also starts a new session, even within the timeout, when it is
  *attributable* and says something different: its referrer is external (not direct, not
  internal) and names another source than the session's (another engine, network, client,
  assistant, ad network or host); or it carries a campaign (any UTM tag or click id) that differs
  from the session's. Internal navigation and direct visits never split a session; a reload of
  the landing page (same referrer, same tags) does not either.
- `pageviews` counts `page` events, `events` every event in the session.

Each session carries the seed's contract fields, taken from its landing event, plus sluice's.
`userId` is stamped by the caller or from the events: see [`sessions`].
*/

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::AttributionSettings;
use super::channel::Channel;
use super::event::{Event, touchpoint};
use super::referrer::{Campaign, Referrer, Touchpoint};

/// One visit of one device, as served by `GET /api/anonymous/{id}` (camelCase JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// The device the visit was made on.
    pub anonymous_id: String,
    /// `<timestamp>-<messageId>` of the landing event, timestamp as the event gave it.
    pub event_id: String,
    /// The landing event's `messageId`.
    pub message_id: String,
    /// Where the visit came from.
    pub referrer: Referrer,
    /// The landing event's referrer as given, `null` when it had none.
    pub referrer_url: Option<String>,
    /// The landing event's time, as the event gave it.
    pub timestamp: String,
    /// The landing page URL as given.
    pub url: Option<String>,
    /// The known user, `null` until known.
    pub user_id: Option<String>,
    /// A stable id: 16 hex digits of a hash of `anonymousId` and `eventId`.
    pub session_id: String,
    /// The GA4-style channel group.
    pub channel: Channel,
    /// UTM tags and click id of the landing page (omitted when empty).
    #[serde(default, skip_serializing_if = "Campaign::is_empty")]
    pub campaign: Campaign,
    /// Number of `page` events in the session.
    pub pageviews: u32,
    /// Number of events of any type in the session.
    pub events: u32,
    /// The time of the session's last event, as that event gave it.
    pub ended_at: String,
}

impl Session {
    /// The landing time, parsed (`None` only for a hand-built session with a bad timestamp).
    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.timestamp).ok().map(|t| t.with_timezone(&Utc))
    }
}

/// An event ready to be walked: its device, time and id.
struct Row<'a> {
    anonymous_id: &'a str,
    time: DateTime<Utc>,
    raw_time: &'a str,
    message_id: &'a str,
    event: &'a Event,
}

/// The session being built.
struct Open<'a> {
    landing: &'a Row<'a>,
    touch: Touchpoint,
    last: DateTime<Utc>,
    last_raw: &'a str,
    user: Option<&'a str>,
    pageviews: u32,
    events: u32,
}

impl<'a> Open<'a> {
    fn start(row: &'a Row<'a>, touch: Touchpoint, user: Option<&'a str>) -> Self {
        let mut open =
            Open { landing: row, touch, last: row.time, last_raw: row.raw_time, user, pageviews: 0, events: 0 };
        open.absorb(row, user);
        open
    }

    fn absorb(&mut self, row: &'a Row<'a>, user: Option<&'a str>) {
        self.last = row.time;
        self.last_raw = row.raw_time;
        self.user = user;
        self.events += 1;
        if row.event.kind.as_deref() == Some("page") {
            self.pageviews += 1;
        }
    }

    /// Whether `touch` says something different enough to start a new session (module docs).
    fn split_by(&self, touch: &Touchpoint) -> bool {
        let new_source =
            touch.referrer.is_external() && source_key(&touch.referrer) != source_key(&self.touch.referrer);
        let tagged = !touch.campaign.is_empty();
        new_source || (tagged && touch.campaign != self.touch.campaign)
    }

    fn finish(self, stamp: Option<&str>) -> Session {
        let landing = self.landing;
        let event_id = format!("{}-{}", landing.raw_time, landing.message_id);
        let session_id = format!(
            "{:016x}",
            xxhash_rust::xxh3::xxh3_64(format!("{}\u{0}{event_id}", landing.anonymous_id).as_bytes())
        );
        Session {
            anonymous_id: landing.anonymous_id.to_owned(),
            event_id,
            message_id: landing.message_id.to_owned(),
            referrer: self.touch.referrer,
            referrer_url: self.touch.referrer_url,
            timestamp: landing.raw_time.to_owned(),
            url: self.touch.url,
            user_id: stamp.or(self.user).map(str::to_owned),
            session_id,
            channel: self.touch.channel,
            campaign: self.touch.campaign,
            pageviews: self.pageviews,
            events: self.events,
            ended_at: self.last_raw.to_owned(),
        }
    }
}

/// What identifies a source for "did the source change": type plus name, or host when unnamed.
fn source_key(referrer: &Referrer) -> (&'static str, Option<&str>) {
    (referrer.kind(), referrer.name().or(referrer.host()))
}

/// The sessions of every anonymousId present in `events` (normally the events of one
/// anonymousId), in any order, ordered by anonymousId then start time.
///
/// `user_id`: `Some(id)` stamps every session with that user (what `GET /api/user/{id}` wants,
/// after the identity graph has decided which devices are the user's). `None` stamps each session
/// with the last `userId` seen on that device at or before the session's last event, so sessions
/// before the first `identify` are `null` and, on a shared device, each session names whoever was
/// logged in (what `GET /api/anonymous/{id}` wants).
pub fn sessions(events: &[Event], user_id: Option<&str>, settings: &AttributionSettings) -> Vec<Session> {
    let mut rows: Vec<Row<'_>> = events
        .iter()
        .filter_map(|event| {
            let anonymous_id = event.anonymous_id.as_deref()?;
            let (raw_time, time) = event.timestamp.as_ref()?;
            let message_id = event.message_id.as_deref().unwrap_or("");
            Some(Row { anonymous_id, time: *time, raw_time, message_id, event })
        })
        .collect();
    rows.sort_by(|a, b| {
        a.anonymous_id
            .cmp(b.anonymous_id)
            .then(a.time.cmp(&b.time))
            .then(a.message_id.cmp(b.message_id))
            // Only full ties (a re-delivery that differs) reach this: keep the order total.
            .then_with(|| a.event.cmp(b.event))
    });
    let mut seen = HashSet::new();
    rows.retain(|row| row.message_id.is_empty() || seen.insert(row.message_id));

    let timeout = settings.session_timeout();
    let mut out = Vec::new();
    for device in rows.chunk_by(|a, b| a.anonymous_id == b.anonymous_id) {
        let mut open: Option<Open<'_>> = None;
        let mut known_user: Option<&str> = None;
        for row in device {
            known_user = row.event.user_id.as_deref().or(known_user);
            if let Some(o) = open.take_if(|o| row.time - o.last >= timeout) {
                out.push(o.finish(user_id));
            }
            if let Some(touch) = touchpoint(row.event, settings) {
                match &mut open {
                    Some(o) if !o.split_by(&touch) => o.absorb(row, known_user),
                    _ => {
                        if let Some(o) = open.take() {
                            out.push(o.finish(user_id));
                        }
                        open = Some(Open::start(row, touch, known_user));
                    }
                }
            } else if let Some(o) = &mut open {
                o.absorb(row, known_user);
            }
        }
        if let Some(o) = open {
            out.push(o.finish(user_id));
        }
    }
    out
}

/// The first session by start time: first-touch attribution.
pub fn first_touch(sessions: &[Session]) -> Option<&Session> {
    sessions.iter().min_by(|a, b| a.started_at().cmp(&b.started_at()).then(a.event_id.cmp(&b.event_id)))
}

/// The last session by start time: last-touch attribution.
pub fn last_touch(sessions: &[Session]) -> Option<&Session> {
    sessions.iter().max_by(|a, b| a.started_at().cmp(&b.started_at()).then(a.event_id.cmp(&b.event_id)))
}

/// The last session that came from somewhere (not direct, not internal): last-non-direct
/// attribution, as GA4 reports by default.
pub fn last_non_direct_touch(sessions: &[Session]) -> Option<&Session> {
    sessions
        .iter()
        .filter(|s| s.referrer.is_external())
        .max_by(|a, b| a.started_at().cmp(&b.started_at()).then(a.event_id.cmp(&b.event_id)))
}

#[cfg(test)]
mod tests {
    use chrono::{SecondsFormat, TimeDelta};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    const ANON: &str = "da8011b3-19bf-4d3d-b1b6-caa961cb5161";
    const SITE: &str = "https://www.prezly.com";

    fn at(ms: i64) -> String {
        let base = DateTime::parse_from_rfc3339("2020-04-25T08:00:00.000Z").unwrap().with_timezone(&Utc);
        (base + TimeDelta::milliseconds(ms)).to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    fn page(ms: i64, id: &str, path: &str, referrer: Option<&str>) -> Value {
        let mut page = json!({"url": format!("{SITE}{path}"), "path": path});
        if let Some(r) = referrer {
            page["referrer"] = json!(r);
        }
        json!({"type": "page", "messageId": id, "anonymousId": ANON, "timestamp": at(ms), "context": {"page": page}})
    }

    fn track(ms: i64, id: &str) -> Value {
        json!({"type": "track", "event": "Clicked", "messageId": id, "anonymousId": ANON, "timestamp": at(ms)})
    }

    const MIN: i64 = 60_000;
    const TIMEOUT: i64 = 30 * MIN;

    fn typed(events: &[Value]) -> Vec<Event> {
        events.iter().map(Event::from_value).collect()
    }

    fn run(events: &[Value]) -> Vec<Session> {
        sessions(&typed(events), None, &AttributionSettings::default())
    }

    fn starts(sessions: &[Session]) -> Vec<&str> {
        sessions.iter().map(|s| s.message_id.as_str()).collect()
    }

    #[test]
    fn a_session_serialises_with_the_seed_contract_fields_and_sluices_own() {
        let events = [json!({
            "type": "page", "messageId": "ajs-9662bd147ae61e72db92055f52810bd9", "anonymousId": ANON,
            "timestamp": "2020-03-25T08:35:18.281Z", "userId": null,
            "context": {"page": {"url": "https://www.prezly.com/academy/relationships/crisis-communication/the-best-managed-pr-crises-of-2018",
                                 "referrer": "https://www.google.co.in/"}}
        })];
        let got = serde_json::to_value(&run(&events)[0]).unwrap();
        let session_id = got["sessionId"].as_str().unwrap().to_owned();
        assert_eq!(session_id.len(), 16);
        assert_eq!(
            got,
            json!({
                "anonymousId": ANON,
                "eventId": "2020-03-25T08:35:18.281Z-ajs-9662bd147ae61e72db92055f52810bd9",
                "messageId": "ajs-9662bd147ae61e72db92055f52810bd9",
                "referrer": {"engine": "google", "host": "www.google.co.in", "type": "search"},
                "referrerUrl": "https://www.google.co.in/",
                "timestamp": "2020-03-25T08:35:18.281Z",
                "url": "https://www.prezly.com/academy/relationships/crisis-communication/the-best-managed-pr-crises-of-2018",
                "userId": null,
                "sessionId": session_id,
                "channel": "Organic Search",
                "pageviews": 1,
                "events": 1,
                "endedAt": "2020-03-25T08:35:18.281Z",
            })
        );
        let direct = serde_json::to_value(&run(&[page(0, "m1", "", None)])[0]).unwrap();
        assert_eq!(direct["referrer"], json!({"type": "direct"}));
        assert_eq!(direct["referrerUrl"], Value::Null);
        assert!(direct.get("campaign").is_none());
        let round_trip: Session = serde_json::from_value(got).unwrap();
        assert_eq!(round_trip, run(&events)[0]);
    }

    #[test]
    fn a_gap_just_under_the_timeout_keeps_the_session() {
        let s = run(&[page(0, "a", "/", Some("https://www.google.com/")), page(TIMEOUT - 1, "b", "/x", None)]);
        assert_eq!(starts(&s), ["a"]);
        assert_eq!(s[0].pageviews, 2);
        assert_eq!(s[0].ended_at, at(TIMEOUT - 1));
    }

    #[test]
    fn a_gap_of_exactly_the_timeout_starts_a_new_session() {
        let s = run(&[page(0, "a", "/", Some("https://www.google.com/")), page(TIMEOUT, "b", "/x", None)]);
        assert_eq!(starts(&s), ["a", "b"]);
        assert_eq!(s[1].referrer, Referrer::Direct);
    }

    #[test]
    fn a_gap_just_over_the_timeout_starts_a_new_session() {
        let s = run(&[page(0, "a", "/", None), page(TIMEOUT + 1, "b", "/x", Some("https://www.prezly.com/"))]);
        assert_eq!(starts(&s), ["a", "b"]);
        assert_eq!(s[1].referrer.kind(), "internal");
    }

    #[test]
    fn the_timeout_is_configurable() {
        let settings = AttributionSettings { session_timeout_ms: 5 * 60_000, ..AttributionSettings::default() };
        let s = sessions(&typed(&[page(0, "a", "/", None), page(5 * MIN, "b", "/", None)]), None, &settings);
        assert_eq!(starts(&s), ["a", "b"]);
    }

    #[test]
    fn any_event_keeps_a_session_alive_but_only_pages_start_one() {
        let s = run(&[
            track(0, "t0"),
            page(10 * MIN, "p1", "/", Some("https://www.google.com/")),
            track(35 * MIN, "t1"),
            page(60 * MIN, "p2", "/x", Some("https://www.prezly.com/")),
            track(200 * MIN, "t2"),
        ]);
        assert_eq!(starts(&s), ["p1"]);
        assert_eq!((s[0].pageviews, s[0].events), (2, 3));
        assert_eq!(s[0].ended_at, at(60 * MIN));
    }

    #[test]
    fn a_track_event_with_context_page_is_a_touch_but_not_a_pageview() {
        let mut t = track(0, "t0");
        t["context"] = json!({"page": {"url": format!("{SITE}/"), "referrer": "https://t.co/x"}});
        let s = run(&[t]);
        assert_eq!(s[0].referrer, Referrer::Social { network: Some("x".into()), host: Some("t.co".into()) });
        assert_eq!((s[0].pageviews, s[0].events), (0, 1));
    }

    #[test]
    fn internal_navigation_and_direct_pages_do_not_split_a_session() {
        let s = run(&[
            page(0, "a", "/?utm_source=news&utm_medium=email&utm_campaign=spring", Some("https://mail.google.com/")),
            page(MIN, "b", "/pricing", Some("https://www.prezly.com/?utm_source=news")),
            page(2 * MIN, "c", "/signup", None),
            page(
                3 * MIN,
                "d",
                "/?utm_source=news&utm_medium=email&utm_campaign=spring",
                Some("https://mail.google.com/"),
            ),
            page(4 * MIN, "e", "/thanks", Some("https://prezly.com/signup")),
        ]);
        assert_eq!(starts(&s), ["a"]);
        assert_eq!(s[0].pageviews, 5);
        assert_eq!(s[0].channel, Channel::Email);
        assert_eq!(s[0].campaign.name.as_deref(), Some("spring"));
    }

    #[test]
    fn a_new_campaign_starts_a_new_session() {
        let s = run(&[
            page(0, "a", "/?utm_source=news&utm_medium=email&utm_campaign=spring", None),
            page(MIN, "b", "/?utm_source=news&utm_medium=email&utm_campaign=summer", Some("https://www.prezly.com/")),
            page(2 * MIN, "c", "/?gclid=1", Some("https://www.google.com/")),
            page(3 * MIN, "d", "/?gclid=2", Some("https://www.google.com/")),
        ]);
        assert_eq!(starts(&s), ["a", "b", "c", "d"]);
        assert_eq!(s[2].channel, Channel::PaidSearch);
    }

    #[test]
    fn a_new_external_source_starts_a_new_session() {
        let s = run(&[
            page(0, "a", "/", None),
            page(MIN, "b", "/", Some("https://www.google.com/")),
            page(2 * MIN, "c", "/x", Some("https://www.google.de/")),
            page(3 * MIN, "d", "/", Some("https://www.linkedin.com/")),
            page(4 * MIN, "e", "/", Some("https://blog.one.example/")),
            page(5 * MIN, "f", "/", Some("https://blog.two.example/")),
            page(6 * MIN, "g", "/", Some("https://blog.two.example/other")),
        ]);
        assert_eq!(starts(&s), ["a", "b", "d", "e", "f"]);
        assert_eq!(s[0].channel, Channel::Direct);
        assert_eq!(s[4].pageviews, 2);
    }

    #[test]
    fn user_id_is_null_until_known_or_stamped_by_the_caller() {
        let mut later = page(40 * MIN, "b", "/", None);
        later["userId"] = json!("john@gmail.com");
        let events = [page(0, "a", "/", None), later, page(90 * MIN, "c", "/", None)];
        let s = run(&events);
        let users: Vec<_> = s.iter().map(|s| s.user_id.as_deref()).collect();
        assert_eq!(users, [None, Some("john@gmail.com"), Some("john@gmail.com")]);
        let stamped = sessions(&typed(&events), Some("j"), &AttributionSettings::default());
        assert!(stamped.iter().all(|s| s.user_id.as_deref() == Some("j")));
    }

    #[test]
    fn re_delivered_events_count_once() {
        let events = [page(0, "a", "/", None), page(MIN, "b", "/x", None)];
        let twice = [events[1].clone(), events[0].clone(), events[1].clone()];
        assert_eq!(run(&twice), run(&events));
        assert_eq!(run(&twice)[0].pageviews, 2);
    }

    #[test]
    fn events_without_an_anonymous_id_or_a_time_are_ignored() {
        let mut no_time = page(0, "a", "/", None);
        no_time["timestamp"] = json!("not a time");
        let no_anon = json!({"type": "page", "messageId": "b", "userId": "u", "timestamp": at(0)});
        assert!(run(&[no_time, no_anon]).is_empty());
        assert!(run(&[]).is_empty());
    }

    #[test]
    fn several_devices_are_sessionised_separately_in_id_order() {
        let mut other = page(0, "x", "/", Some("https://t.co/"));
        other["anonymousId"] = json!("aaa");
        let s = run(&[page(MIN, "a", "/", None), other]);
        let ids: Vec<_> = s.iter().map(|s| s.anonymous_id.as_str()).collect();
        assert_eq!(ids, ["aaa", ANON]);
    }

    #[test]
    fn first_last_and_last_non_direct_touch_pick_by_start_time() {
        let s = run(&[
            page(0, "a", "/", Some("https://www.google.com/")),
            page(60 * MIN, "b", "/", Some("https://t.co/x")),
            page(120 * MIN, "c", "/", None),
        ]);
        assert_eq!(first_touch(&s).map(|s| s.message_id.as_str()), Some("a"));
        assert_eq!(last_touch(&s).map(|s| s.message_id.as_str()), Some("c"));
        assert_eq!(last_non_direct_touch(&s).map(|s| s.message_id.as_str()), Some("b"));
        assert!(first_touch(&[]).is_none());
    }

    const REFERRERS: &[Option<&str>] = &[
        None,
        Some("https://www.google.com/"),
        Some("https://www.prezly.com/"),
        Some("https://t.co/x"),
        Some("https://mail.google.com/"),
    ];
    const PATHS: &[&str] = &["/", "/pricing", "/?utm_campaign=a&utm_source=x&utm_medium=cpc", "/?gclid=9"];

    fn event_strategy() -> impl Strategy<Value = Vec<Value>> {
        prop::collection::vec((0i64..240, 0i64..3, 0usize..3, 0usize..REFERRERS.len(), 0usize..PATHS.len()), 0..40)
            .prop_map(|specs| {
                specs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (minutes, ms, kind, referrer, path))| {
                        let time = minutes * MIN + ms;
                        let id = format!("m{i:02}");
                        let mut e = match kind {
                            0 | 1 => page(time, &id, PATHS[path], REFERRERS[referrer]),
                            _ => track(time, &id),
                        };
                        if i % 7 == 3 {
                            e["userId"] = json!(format!("user{}", i % 2));
                        }
                        e
                    })
                    .collect()
            })
    }

    proptest! {
        #[test]
        fn shuffled_input_gives_the_same_sessions(
            (events, shuffled) in event_strategy().prop_flat_map(|e| (Just(e.clone()), Just(e).prop_shuffle())),
        ) {
            let settings = AttributionSettings::default();
            prop_assert_eq!(sessions(&typed(&events), None, &settings), sessions(&typed(&shuffled), None, &settings));
        }
    }
}
