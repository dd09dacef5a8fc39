/*!
Attribution paths: which touches each conversion of one person had, and the person's touches
that did not lead to a conversion, as the [`models`](super::models) divide credit over them.

A touch is a session exactly as `GET /api/user/{id}` builds it ([`Session`]), its time the
session's start; the caller hands over the sessions of every device of the person's identity
cluster, merged. The rules (issue 15's definitions):
- a conversion's touches are the sessions that started strictly before it and at or after
  `conversion − lookback`, in time order; earlier conversions do not reset the path;
- a conversion with no such session has one direct touch at its own time;
- only conversions whose time is in `[from, to)` are reported; their touches may lie before `from`;
- the person's **null path** is their sessions that started in `[from − lookback, to)` at or after
  their last conversion before `to` (all of them for a person who never converted); a session at
  the very time of a conversion is not that conversion's touch, so it is the null path's;
- a touch is *direct* when its session is in the `Direct` channel (internal referrers included),
  whatever the report groups by.

Pure: no I/O, and the result does not depend on the order the sessions come in.
*/

use super::channel::Channel;
use super::models::{Conversion, Touch};
use super::referrer::Referrer;
use super::sessions::Session;

/// What a report's rows are: the `group=` of `GET /api/reports/attribution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// The session's GA4-style channel group.
    Channel,
    /// `utm_source`, else the referrer's engine, network, client or assistant, else its host, else `direct`.
    Source,
    /// `utm_campaign`, else `(none)`.
    Campaign,
    /// The referrer's type (`search`, `social`, `email`, …).
    Referrer,
}

impl GroupBy {
    /// Every grouping, in the order the documentation lists them.
    pub const ALL: [GroupBy; 4] = [GroupBy::Channel, GroupBy::Source, GroupBy::Campaign, GroupBy::Referrer];

    /// The grouping named `text` (`channel`, `source`, `campaign`, `referrer`).
    pub fn parse(text: &str) -> Option<GroupBy> {
        GroupBy::ALL.into_iter().find(|g| g.as_str() == text)
    }

    /// Its name, as `group=` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Channel => "channel",
            GroupBy::Source => "source",
            GroupBy::Campaign => "campaign",
            GroupBy::Referrer => "referrer",
        }
    }

    /// The row a session's credit goes to.
    pub fn of(self, session: &Session) -> String {
        match self {
            GroupBy::Channel => session.channel.as_str().to_owned(),
            GroupBy::Source => {
                if let Some(source) = &session.campaign.source {
                    source.clone()
                } else if session.channel == Channel::Direct || !session.referrer.is_external() {
                    // An internal referrer is the site itself: a direct visit, not a source.
                    self.direct().to_owned()
                } else {
                    session
                        .referrer
                        .name()
                        .or(session.referrer.host())
                        .map_or_else(|| self.direct().to_owned(), str::to_owned)
                }
            }
            GroupBy::Campaign => session.campaign.name.clone().unwrap_or_else(|| self.direct().to_owned()),
            GroupBy::Referrer => match session.referrer {
                // The Direct channel includes internal referrers: they group with direct visits.
                Referrer::Internal { .. } => self.direct().to_owned(),
                ref referrer => referrer.kind().to_owned(),
            },
        }
    }

    /// The row of a direct touch (and of a conversion that had no touch).
    pub fn direct(self) -> &'static str {
        match self {
            GroupBy::Channel => Channel::Direct.as_str(),
            GroupBy::Source | GroupBy::Referrer => "direct",
            GroupBy::Campaign => "(none)",
        }
    }
}

/// The time bounds of a report, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Conversions at or after this time are reported (`None`: from the first).
    pub from_ms: Option<i64>,
    /// Conversions before this time are reported (`None`: to the last).
    pub to_ms: Option<i64>,
    /// How far back from a conversion its touches may lie.
    pub lookback_ms: i64,
}

impl Window {
    fn reports(&self, time_ms: i64) -> bool {
        self.from_ms.is_none_or(|from| time_ms >= from) && self.to_ms.is_none_or(|to| time_ms < to)
    }
}

/// One conversion event of a person: when, and what it was worth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConversionEvent {
    /// The event's timestamp, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// Its value (0 when it had none).
    pub value: f64,
}

/// What one person contributes to a report.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PersonPaths {
    /// Each reported conversion with its touches, in time order.
    pub conversions: Vec<Conversion>,
    /// The groups of the touches that did not (yet) lead to a conversion; empty when there are none.
    pub null_path: Vec<String>,
}

/// A session as a touch of `group`; `None` for a session whose start does not parse (hand-built).
pub fn touch(session: &Session, group: GroupBy) -> Option<Touch> {
    let time_ms = session.started_at()?.timestamp_millis();
    Some(Touch {
        group: group.of(session),
        time_ms,
        direct: session.channel == Channel::Direct,
        tie: session.event_id.clone(),
    })
}

/// The paths of one person: `touches` of all their devices (any order), `conversions` all of theirs.
pub fn person_paths(
    mut touches: Vec<Touch>,
    conversions: &[ConversionEvent],
    group: GroupBy,
    window: &Window,
) -> PersonPaths {
    // Ordered fully, so that the result does not depend on the input's order.
    touches.sort_by(|a, b| (a.time_ms, &a.tie, &a.group, a.direct).cmp(&(b.time_ms, &b.tie, &b.group, b.direct)));
    let starts: Vec<i64> = touches.iter().map(|t| t.time_ms).collect();
    let between = |from: i64, to: i64| &touches[between(&starts, from, to)];

    let mut reported: Vec<ConversionEvent> =
        conversions.iter().copied().filter(|c| window.reports(c.time_ms)).collect();
    reported.sort_by(|a, b| a.time_ms.cmp(&b.time_ms).then(a.value.total_cmp(&b.value)));
    let conversions_out = reported
        .iter()
        .map(|c| {
            let mut path: Vec<Touch> = between(c.time_ms.saturating_sub(window.lookback_ms), c.time_ms).to_vec();
            if path.is_empty() {
                path.push(Touch {
                    group: group.direct().to_owned(),
                    time_ms: c.time_ms,
                    direct: true,
                    tie: String::new(),
                });
            }
            Conversion { time_ms: c.time_ms, value: c.value, touches: path }
        })
        .collect();

    let last_conversion = conversions.iter().map(|c| c.time_ms).filter(|&t| window.to_ms.is_none_or(|to| t < to)).max();
    let null_from = [window.from_ms.map(|from| from.saturating_sub(window.lookback_ms)), last_conversion]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(i64::MIN);
    let null_path =
        between(null_from, window.to_ms.unwrap_or(i64::MAX)).iter().map(|touch| touch.group.clone()).collect();
    PersonPaths { conversions: conversions_out, null_path }
}

/// The indexes of the touches that started in `[from, to)`, of touches whose starts are `starts`
/// (sorted): a conversion at `t` has those in `[t − lookback, t)`.
pub fn between(starts: &[i64], from: i64, to: i64) -> std::ops::Range<usize> {
    let first = starts.partition_point(|&t| t < from);
    first..starts.partition_point(|&t| t < to).max(first)
}

/// The largest value a conversion may have: beyond any real revenue, and small enough that
/// the sum of every conversion a report may read stays finite (anyone who can post events
/// could otherwise make a report's totals infinite).
pub const MAX_VALUE: f64 = 1e15;

/// A conversion's value from its value property: a JSON number, or a string holding one
/// (`"19.99"`), within ±[`MAX_VALUE`]; a missing property or `null` is 0. Anything else is 0
/// too, and `Err` says what it was, for the report's `warnings`.
pub fn conversion_value(property: Option<&serde_json::Value>) -> Result<f64, String> {
    let in_range = |v: f64, what: String| {
        if v.abs() <= MAX_VALUE { Ok(v) } else { Err(format!("{what}, beyond ±{MAX_VALUE:e}")) }
    };
    match property {
        None | Some(serde_json::Value::Null) => Ok(0.0),
        Some(serde_json::Value::Number(n)) => match n.as_f64().filter(|v| v.is_finite()) {
            Some(v) => in_range(v, format!("{n}")),
            None => Err(format!("{n}")),
        },
        Some(serde_json::Value::String(text)) => match text.trim().parse::<f64>().ok().filter(|v| v.is_finite()) {
            Some(v) => in_range(v, format!("the string {text:?}")),
            None => Err(format!("the string {text:?}")),
        },
        Some(other) => Err(match other {
            serde_json::Value::Bool(_) => "a boolean".to_owned(),
            serde_json::Value::Array(_) => "an array".to_owned(),
            _ => "an object".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::models::{self, Model, credits};
    use super::super::{AttributionSettings, Event, sessions};
    use super::*;
    use proptest::prelude::*;

    const HOUR_MS: i64 = 3_600_000;
    const DAY_MS: i64 = 24 * HOUR_MS;
    /// 2026-11-01T00:00:00Z.
    const T0: i64 = 1_761_955_200_000;

    fn rfc3339(ms: i64) -> String {
        chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    /// A page view of `device` at `ms` landing on `url` from `referrer`.
    fn page(device: &str, ms: i64, url: &str, referrer: &str) -> Event {
        let json = serde_json::json!({
            "type": "page", "messageId": format!("{device}-{ms}"), "anonymousId": device,
            "timestamp": rfc3339(ms), "context": {"page": {"url": url, "referrer": referrer}},
        });
        Event::from_json(&json.to_string()).unwrap()
    }

    /// Sessions of the page views `visits` (device, hours after T0, url, referrer), all devices merged.
    fn visits(visits: &[(&str, i64, &str, &str)]) -> Vec<Session> {
        let events: Vec<Event> = visits.iter().map(|(d, h, url, r)| page(d, T0 + h * HOUR_MS, url, r)).collect();
        sessions(&events, Some("u"), &AttributionSettings::default())
    }

    const GOOGLE: &str = "https://www.google.com/";
    const SHOP: &str = "https://shop.example/";
    const MAIL: &str = "https://shop.example/?utm_source=newsletter&utm_medium=email&utm_campaign=nov";
    const ADS: &str = "https://shop.example/?gclid=abc&utm_source=google&utm_medium=cpc&utm_campaign=brand";

    /// [`person_paths`] of sessions.
    fn paths_of(sessions: &[Session], conversions: &[ConversionEvent], group: GroupBy, window: &Window) -> PersonPaths {
        person_paths(sessions.iter().filter_map(|s| touch(s, group)).collect(), conversions, group, window)
    }

    fn window(lookback_days: i64) -> Window {
        Window { from_ms: None, to_ms: None, lookback_ms: lookback_days * DAY_MS }
    }

    fn at(hours: i64, value: f64) -> ConversionEvent {
        ConversionEvent { time_ms: T0 + hours * HOUR_MS, value }
    }

    fn groups(conversion: &Conversion) -> Vec<&str> {
        conversion.touches.iter().map(|t| t.group.as_str()).collect()
    }

    #[test]
    fn a_conversions_touches_are_the_sessions_before_it_within_the_lookback_in_time_order() {
        // Sessions 40 days, 10 days and 1 hour before the conversion at hour 1000, one at its very
        // time, and one after it: only the 10-day and 1-hour ones are its touches.
        let sessions = visits(&[
            ("d1", 1000 - 40 * 24, SHOP, GOOGLE),
            ("d1", 1000 - 10 * 24, MAIL, ""),
            ("d1", 999, SHOP, ""),
            ("d1", 1000, ADS, ""),
            ("d1", 1001, SHOP, GOOGLE),
        ]);
        let paths = paths_of(&sessions, &[at(1000, 5.0)], GroupBy::Channel, &window(30));
        assert_eq!(paths.conversions.len(), 1);
        assert_eq!(groups(&paths.conversions[0]), ["Email", "Direct"]);
        assert_eq!(paths.conversions[0].value, 5.0);
        // The null path: what came at or after the last conversion.
        assert_eq!(paths.null_path, ["Paid Search", "Organic Search"]);
    }

    #[test]
    fn a_conversion_without_touches_has_one_direct_touch_named_for_the_grouping() {
        for (group, name) in [
            (GroupBy::Channel, "Direct"),
            (GroupBy::Source, "direct"),
            (GroupBy::Campaign, "(none)"),
            (GroupBy::Referrer, "direct"),
        ] {
            let paths = paths_of(&[], &[at(5, 0.0)], group, &window(30));
            assert_eq!(
                paths.conversions[0].touches,
                [Touch { group: name.to_owned(), time_ms: T0 + 5 * HOUR_MS, direct: true, tie: String::new() }]
            );
            assert!(paths.null_path.is_empty());
        }
    }

    #[test]
    fn each_grouping_names_a_session_as_the_issue_defines_it() {
        let sessions = visits(&[
            ("d1", 0, MAIL, ""),
            ("d1", 10, SHOP, GOOGLE),
            ("d1", 20, SHOP, "https://news.example.org/a"),
            ("d1", 30, SHOP, ""),
            ("d1", 40, ADS, GOOGLE),
            ("d1", 50, SHOP, "https://www.facebook.com/"),
        ]);
        let path = |group| {
            let paths = paths_of(&sessions, &[at(60, 1.0)], group, &window(30));
            groups(&paths.conversions[0]).into_iter().map(str::to_owned).collect::<Vec<_>>()
        };
        assert_eq!(
            path(GroupBy::Channel),
            ["Email", "Organic Search", "Referral", "Direct", "Paid Search", "Organic Social"]
        );
        assert_eq!(path(GroupBy::Source), ["newsletter", "google", "news.example.org", "direct", "google", "facebook"]);
        assert_eq!(path(GroupBy::Campaign), ["nov", "(none)", "(none)", "(none)", "brand", "(none)"]);
        assert_eq!(path(GroupBy::Referrer), ["email", "search", "link", "direct", "ad", "social"]);
        let direct: Vec<bool> = paths_of(&sessions, &[at(60, 1.0)], GroupBy::Source, &window(30)).conversions[0]
            .touches
            .iter()
            .map(|t| t.direct)
            .collect();
        assert_eq!(direct, [false, false, false, true, false, false]);
    }

    #[test]
    fn several_conversions_of_one_person_share_touches_and_earlier_ones_do_not_reset_the_path() {
        let sessions = visits(&[("d1", 0, MAIL, ""), ("d1", 10, SHOP, GOOGLE), ("d1", 30, SHOP, "")]);
        let paths = paths_of(&sessions, &[at(20, 10.0), at(12, 3.0)], GroupBy::Channel, &window(30));
        let found: Vec<(i64, Vec<&str>)> = paths.conversions.iter().map(|c| (c.value as i64, groups(c))).collect();
        assert_eq!(found, [(3, vec!["Email", "Organic Search"]), (10, vec!["Email", "Organic Search"])]);
        assert_eq!(paths.null_path, ["Direct"]);
    }

    #[test]
    fn the_devices_of_one_person_make_one_path() {
        // An e-mail opened on the phone, then a search on the laptop, then the purchase.
        let sessions = visits(&[("phone", 0, MAIL, ""), ("laptop", 5, SHOP, GOOGLE), ("phone", 7, SHOP, "")]);
        let paths = paths_of(&sessions, &[at(8, 1.0)], GroupBy::Channel, &window(30));
        assert_eq!(groups(&paths.conversions[0]), ["Email", "Organic Search", "Direct"]);
        // And every model credits that merged path as a hand computation says.
        let c = &paths.conversions[0];
        assert_eq!(credits(&Model::First, c).unwrap(), [1.0, 0.0, 0.0]);
        assert_eq!(credits(&Model::Last, c).unwrap(), [0.0, 0.0, 1.0]);
        assert_eq!(credits(&Model::LastNonDirect, c).unwrap(), [0.0, 1.0, 0.0]);
        assert_eq!(credits(&Model::PositionBased, c).unwrap(), [0.4, 0.2, 0.4]);
        // Ages 8 h, 3 h, 1 h with a 2 h half-life: weights 2^-4, 2^-1.5, 2^-0.5.
        let w = [2f64.powf(-4.0), 2f64.powf(-1.5), 2f64.powf(-0.5)];
        let total: f64 = w.iter().sum();
        let decay = credits(&Model::TimeDecay { half_life_ms: 2.0 * HOUR_MS as f64 }, c).unwrap();
        for (got, want) in decay.iter().zip(w.iter().map(|w| w / total)) {
            assert!((got - want).abs() < 1e-12, "{decay:?}");
        }
    }

    #[test]
    fn from_and_to_select_conversions_and_bound_the_null_path() {
        let sessions = visits(&[
            ("d1", 0, MAIL, ""),
            ("d1", 100, SHOP, GOOGLE),
            ("d1", 200, ADS, ""),
            ("d1", 300, SHOP, "https://www.facebook.com/"),
        ]);
        let w = Window { from_ms: Some(T0 + 150 * HOUR_MS), to_ms: Some(T0 + 250 * HOUR_MS), lookback_ms: 5 * DAY_MS };
        // The conversion at 120 is before `from`, at 260 after `to`: only 210 is reported, and its
        // touch at 200 is in; the one at 100 (before `from`) is within the 120 h lookback too.
        let paths = paths_of(&sessions, &[at(120, 1.0), at(210, 2.0), at(260, 4.0)], GroupBy::Channel, &w);
        assert_eq!(paths.conversions.len(), 1);
        assert_eq!(groups(&paths.conversions[0]), ["Organic Search", "Paid Search"]);
        // Nothing after the last conversion before `to` (210) and before `to` itself.
        assert!(paths.null_path.is_empty(), "{:?}", paths.null_path);

        // A person who never converted: every session in [from − lookback, to) = [30, 250).
        let paths = paths_of(&sessions, &[], GroupBy::Channel, &w);
        assert_eq!(paths.null_path, ["Organic Search", "Paid Search"]);
        // The conversion at 260 (after `to`) does not count as "their last" either.
        let paths = paths_of(&sessions, &[at(260, 1.0)], GroupBy::Channel, &w);
        assert_eq!(paths.null_path, ["Organic Search", "Paid Search"]);
    }

    #[test]
    fn sessions_starting_in_the_same_millisecond_are_ordered_as_api_user_orders_its_touches() {
        // Two landings on one device at the same instant (the black-box tester's case): /api/user's
        // lastTouch breaks the tie by eventId, and so must every model's order.
        for (first, second) in [("q0_1", "q0_2"), ("q0_2", "q0_1")] {
            let event = |id: &str, referrer: &str| {
                let json = serde_json::json!({
                    "type": "page", "messageId": id, "anonymousId": "tq0", "timestamp": rfc3339(T0),
                    "context": {"page": {"url": SHOP, "referrer": referrer}},
                });
                Event::from_json(&json.to_string()).unwrap()
            };
            let events = [event(first, "https://www.facebook.com/"), event(second, "https://chatgpt.com/")];
            let sessions = sessions(&events, Some("u"), &AttributionSettings::default());
            assert_eq!(sessions.len(), 2);
            let last = crate::attribution::last_touch(&sessions).unwrap().channel.as_str();
            let first_touch = crate::attribution::first_touch(&sessions).unwrap().channel.as_str();
            let paths = paths_of(&sessions, &[at(1, 1.0)], GroupBy::Channel, &window(30));
            assert_eq!(groups(&paths.conversions[0]), [first_touch, last], "messageIds {first}, {second}");
        }
    }

    #[test]
    fn a_value_too_large_to_add_up_is_refused_like_a_non_number() {
        use serde_json::json;
        // Two of 1e308 would sum to infinity, which JSON cannot carry.
        assert_eq!(conversion_value(Some(&json!(1e308))), Err("1e+308, beyond ±1e15".to_owned()));
        assert_eq!(conversion_value(Some(&json!("-2e15"))), Err("the string \"-2e15\", beyond ±1e15".to_owned()));
        assert_eq!(conversion_value(Some(&json!(1e15))), Ok(1e15));
    }

    #[test]
    fn a_value_is_a_number_or_a_numeric_string_and_anything_else_is_zero_with_a_reason() {
        use serde_json::json;
        assert_eq!(conversion_value(None), Ok(0.0));
        assert_eq!(conversion_value(Some(&json!(null))), Ok(0.0));
        assert_eq!(conversion_value(Some(&json!(19.99))), Ok(19.99));
        assert_eq!(conversion_value(Some(&json!(0))), Ok(0.0));
        assert_eq!(conversion_value(Some(&json!(" 42.5 "))), Ok(42.5));
        assert_eq!(conversion_value(Some(&json!("-3"))), Ok(-3.0));
        assert_eq!(conversion_value(Some(&json!("12 EUR"))), Err("the string \"12 EUR\"".to_owned()));
        assert_eq!(conversion_value(Some(&json!("inf"))), Err("the string \"inf\"".to_owned()));
        assert_eq!(conversion_value(Some(&json!(true))), Err("a boolean".to_owned()));
        assert_eq!(conversion_value(Some(&json!([1]))), Err("an array".to_owned()));
        assert_eq!(conversion_value(Some(&json!({"amount": 1}))), Err("an object".to_owned()));
    }

    #[test]
    fn a_conversion_worth_zero_still_counts_one_conversion() {
        let sessions = visits(&[("d1", 0, MAIL, "")]);
        let paths = paths_of(&sessions, &[at(1, 0.0)], GroupBy::Channel, &window(30));
        let rows = models::report(&Model::Linear, &paths.conversions, &[]);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].group.as_str(), rows[0].conversions, rows[0].value), ("Email", 1.0, 0.0));
    }

    const URLS: [(&str, &str); 6] = [
        (SHOP, GOOGLE),
        (MAIL, ""),
        (ADS, ""),
        (SHOP, ""),
        (SHOP, "https://www.facebook.com/"),
        (SHOP, "https://x.example/"),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the sessions and conversions, every model hands out exactly one conversion of
        /// credit and exactly its value per conversion, and the order of the input changes nothing.
        #[test]
        fn every_model_credits_each_conversion_once_and_its_value_exactly(
            people in prop::collection::vec(
                (prop::collection::vec((0..3usize, 0..2_000i64, 0..URLS.len()), 0..12),
                 prop::collection::vec((0..2_000i64, 0..100_000u32), 0..4)),
                1..12),
            group in 0..4usize,
            lookback_days in 0..40i64,
        ) {
            let group = GroupBy::ALL[group];
            let (mut conversions, mut null_paths) = (Vec::new(), Vec::new());
            for (person, (touches, converted)) in people.iter().enumerate() {
                let devices = ["a", "b", "c"].map(|d| format!("{person}-{d}"));
                let list: Vec<(&str, i64, &str, &str)> =
                    touches.iter().map(|&(d, h, u)| (devices[d].as_str(), h, URLS[u].0, URLS[u].1)).collect();
                let sessions = visits(&list);
                let events: Vec<ConversionEvent> = converted.iter().map(|&(h, cents)| at(h, f64::from(cents) / 100.0)).collect();
                let paths = paths_of(&sessions, &events, group, &window(lookback_days));
                let mut reversed = sessions.clone();
                reversed.reverse();
                prop_assert_eq!(&paths_of(&reversed, &events, group, &window(lookback_days)), &paths);
                conversions.extend(paths.conversions);
                if !paths.null_path.is_empty() {
                    null_paths.push(paths.null_path);
                }
            }
            let count = conversions.len() as f64;
            let value: f64 = conversions.iter().map(|c| c.value).sum();
            for model in [Model::First, Model::Last, Model::LastNonDirect, Model::Linear,
                          Model::TimeDecay { half_life_ms: 7.0 * DAY_MS as f64 }, Model::PositionBased, Model::DataDriven] {
                let rows = models::report(&model, &conversions, &null_paths);
                let credited: f64 = rows.iter().map(|r| r.conversions).sum();
                let valued: f64 = rows.iter().map(|r| r.value).sum();
                prop_assert!((credited - count).abs() <= 1e-9 * count.max(1.0), "{model:?}: {credited} of {count}");
                prop_assert!((valued - value).abs() <= 1e-9 * value.max(1.0), "{model:?}: {valued} of {value}");
            }
        }
    }
}
