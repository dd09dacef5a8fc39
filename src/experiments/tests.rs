//! The exposure and join rules on hand-computed cases; the statistics are checked against scipy
//! in `stats` and, end to end through the store, in `tests/experiments.rs`.

use super::*;

fn design() -> Design {
    Design { control: None, weights: None, alpha: 0.05, window_ms: None, to: None }
}

fn metric(spec: &str) -> Metric {
    Metric::parse(spec).unwrap()
}

/// A read-out of `metrics` with one exposure row per `(key, first, treatment)`.
fn readout(metrics: &[&str], exposures: &[(&str, i64, &str)]) -> Readout {
    let mut r = Readout::new(metrics.iter().map(|m| metric(m)).collect(), None, 1_000);
    for (key, first, treatment) in exposures {
        r.add_exposure(key, Segment::None, *first, treatment, treatment).unwrap();
    }
    r
}

/// The per-unit values of metric 0 for treatment `t` in the whole read-out, sorted.
fn values(analysis: &Analysis, t: &str) -> (u64, f64) {
    let m = &analysis.top.metrics[0];
    let row = m.treatments.iter().find(|r| r.treatment == t).unwrap();
    (row.units, row.total.unwrap())
}

#[test]
fn metrics_parse_their_three_forms_and_name_what_is_wrong() {
    assert_eq!(metric("conversion:Signed Up").measure, Measure::Conversion);
    assert_eq!(metric("count:Checkout: Step 1").event, "Checkout: Step 1");
    let sum = metric("sum:Order Completed:revenue");
    assert_eq!((sum.event.as_str(), sum.measure), ("Order Completed", Measure::Sum(vec!["revenue".into()])));
    let nested = metric("sum:Cart: Paid:total.amount");
    assert_eq!(
        (nested.event.as_str(), nested.measure),
        ("Cart: Paid", Measure::Sum(vec!["total".into(), "amount".into()]))
    );
    // Black-box finding: `items.0.price` summed the first element on PostgreSQL and nothing on SQLite.
    for bad in [
        "revenue",
        "avg:Order",
        "conversion:",
        "sum:Order Completed",
        "sum::revenue",
        "sum:O:a..b",
        "sum:O:a\"b",
        "sum:O:items.0.price",
        "sum:O:items.-1",
    ] {
        let e = Metric::parse(bad).unwrap_err();
        assert!(e.contains("conversion:EVENT"), "{bad}: {e}");
    }
}

#[test]
fn a_unit_seen_with_two_treatments_counts_in_units_but_in_no_metric_and_not_in_the_srm() {
    let mut r = readout(&["conversion:Buy"], &[("a", 10, "on"), ("b", 10, "off"), ("c", 10, "off")]);
    r.add_exposure("m", Segment::None, 5, "off", "on").unwrap();
    r.join(&Links::default(), 100);
    for key in ["a", "m", "b"] {
        r.add_event(Some(key), None, 20, &[(0, None)], &design());
    }
    let analysis = r.finish(&design()).unwrap();
    assert_eq!(analysis.top.units, 4);
    assert_eq!(analysis.top.multiple_exposures, MultipleExposures { units: 1, share: 0.25, warning: true });
    assert_eq!(values(&analysis, "on"), (1, 1.0));
    assert_eq!(values(&analysis, "off"), (2, 1.0));
    // The SRM counts 1 and 2, not the multiple exposure: scipy.stats.chisquare([2, 1]).pvalue.
    let p = analysis.top.srm.p_value.unwrap();
    assert!((p - 0.563_702_861_650_773_5).abs() < 1e-12, "{p}");
}

#[test]
fn rows_of_one_key_in_several_segments_merge_into_one_unit_with_the_earliest_exposure() {
    let mut r = Readout::new(vec![metric("count:Buy")], Some(By::Label), 100);
    r.add_exposure("a", Segment::Text("rule 1".into()), 100, "on", "on").unwrap();
    r.add_exposure("a", Segment::Text("rule 2".into()), 50, "on", "on").unwrap();
    r.add_exposure("b", Segment::Text("rule 2".into()), 50, "off", "off").unwrap();
    r.add_exposure("c", Segment::Text("rule 1".into()), 50, "on", "on").unwrap();
    r.add_exposure("c", Segment::Text("rule 2".into()), 60, "off", "off").unwrap();
    r.join(&Links::default(), 100);
    // At 70: after a's exposure under rule 2 (50), before the one under rule 1 (100).
    r.add_event(Some("a"), None, 70, &[(0, None)], &design());
    let analysis = r.finish(&design()).unwrap();
    assert_eq!(analysis.top.units, 3);
    assert_eq!(analysis.top.multiple_exposures.units, 1, "c saw on under one rule and off under the other");
    assert_eq!(values(&analysis, "on"), (1, 1.0));
    let segments = &analysis.breakdown.as_ref().unwrap().segments;
    assert_eq!(
        segments.iter().map(|s| s.value.clone()).collect::<Vec<_>>(),
        [Segment::Text("rule 1".into()), Segment::Text("rule 2".into())]
    );
    let in_segment = |s: usize, t: &str| {
        let row = segments[s].analysis.metrics[0].treatments.iter().find(|r| r.treatment == t).unwrap();
        (row.units, row.total.unwrap())
    };
    assert_eq!((segments[0].analysis.units, segments[0].analysis.multiple_exposures.units), (2, 0));
    assert_eq!(in_segment(0, "on"), (2, 0.0), "under rule 1, a was exposed at 100: the event at 70 is before");
    assert_eq!(in_segment(1, "on"), (1, 1.0));
    assert_eq!(in_segment(1, "off"), (2, 0.0));
}

#[test]
fn an_event_before_the_first_exposure_does_not_count_and_the_window_edge_does() {
    let mut r = readout(&["count:Buy"], &[("a", 1_000, "on"), ("b", 1_000, "off")]);
    r.join(&Links::default(), 100);
    let window = Design { window_ms: Some(500), ..design() };
    for t in [999, 1_000, 1_500, 1_501] {
        r.add_event(Some("a"), None, t, &[(0, None)], &window);
    }
    let analysis = r.finish(&window).unwrap();
    assert_eq!(values(&analysis, "on"), (1, 2.0), "1000 and 1500 count: both ends are inclusive");
}

#[test]
fn without_a_window_events_count_until_to_exclusive() {
    let mut r = readout(&["count:Buy"], &[("a", 1_000, "on"), ("b", 1_000, "off")]);
    r.join(&Links::default(), 100);
    let until = Design { to: Some(2_000), ..design() };
    for t in [1_000, 1_999, 2_000] {
        r.add_event(Some("a"), None, t, &[(0, None)], &until);
    }
    assert_eq!(values(&r.finish(&until).unwrap(), "on"), (1, 2.0));
}

#[test]
fn an_anonymous_exposure_converts_through_its_identified_user_and_an_alias_chain() {
    let mut links = Links::default();
    links.add_device("alice", "anon-1");
    links.add_alias("alice", "alice@new");
    links.add_device("bob", "bob-phone");
    let mut r = readout(&["conversion:Buy"], &[("anon-1", 10, "on"), ("bob", 10, "off"), ("carol", 10, "off")]);
    r.join(&links, 100);
    // alice's purchase under her new userId, on no device: anon-1's person.
    r.add_event(Some("alice@new"), None, 20, &[(0, None)], &design());
    // bob's purchase on his phone, anonymous only.
    r.add_event(None, Some("bob-phone"), 20, &[(0, None)], &design());
    // An event carrying two ids of one person converts it once.
    r.add_event(Some("bob"), Some("bob-phone"), 21, &[(0, None)], &design());
    let analysis = r.finish(&design()).unwrap();
    assert_eq!(values(&analysis, "on"), (1, 1.0));
    assert_eq!(values(&analysis, "off"), (2, 1.0));
}

#[test]
fn sums_add_numbers_and_count_what_is_not_a_number() {
    let mut r = readout(&["sum:Order:revenue"], &[("a", 0, "on"), ("b", 0, "off")]);
    r.join(&Links::default(), 100);
    r.add_event(Some("a"), None, 1, &[(0, Some(10.5))], &design());
    r.add_event(Some("a"), None, 2, &[(0, None)], &design());
    r.add_event(Some("b"), None, 3, &[(0, Some(-2.0))], &design());
    // Not a unit's: neither added nor counted.
    r.add_event(Some("stranger"), None, 3, &[(0, None)], &design());
    let analysis = r.finish(&design()).unwrap();
    assert_eq!(values(&analysis, "on"), (1, 10.5));
    assert_eq!(values(&analysis, "off"), (1, -2.0));
    assert_eq!(analysis.top.metrics[0].non_numeric, Some(1));
}

#[test]
fn the_control_is_the_one_asked_for_else_control_else_off_else_the_most_units_first_by_name() {
    let control = |exposures: &[(&str, i64, &str)], asked: Option<&str>| {
        let mut r = readout(&[], exposures);
        r.join(&Links::default(), 10);
        r.finish(&Design { control: asked.map(str::to_owned), ..design() }).map(|a| a.control)
    };
    let three = [("a", 0, "off"), ("b", 0, "control"), ("c", 0, "v2"), ("d", 0, "v2")];
    assert_eq!(control(&three, None).unwrap(), "control");
    assert_eq!(control(&three[..1], None).unwrap(), "off");
    assert_eq!(control(&[("a", 0, "v2"), ("b", 0, "v1"), ("c", 0, "v2")], None).unwrap(), "v2");
    assert_eq!(control(&[("a", 0, "b"), ("b", 0, "a")], None).unwrap(), "a", "a tie goes to the first name");
    assert_eq!(control(&three, Some("v2")).unwrap(), "v2");
    let e = control(&three, Some("v3")).unwrap_err();
    assert_eq!(e.param(), "control");
    assert!(e.to_string().contains("control, off, v2"), "{e}");
}

#[test]
fn weights_must_be_one_per_treatment_and_are_reported_as_shares() {
    let mut r = readout(&[], &[("a", 0, "off"), ("b", 0, "on"), ("c", 0, "on")]);
    r.join(&Links::default(), 10);
    let e = r.finish(&Design { weights: Some(vec![1.0, 1.0, 1.0]), ..design() }).unwrap_err();
    assert_eq!(e.param(), "weights");
    let analysis = r.finish(&Design { weights: Some(vec![1.0, 3.0]), ..design() }).unwrap();
    assert_eq!(analysis.top.srm.weights, BTreeMap::from([("off".into(), 0.25), ("on".into(), 0.75)]));
}

#[test]
fn more_units_than_the_bound_are_refused() {
    let mut r = Readout::new(Vec::new(), None, 2);
    r.add_exposure("a", Segment::None, 0, "on", "on").unwrap();
    r.add_exposure("b", Segment::None, 0, "on", "on").unwrap();
    assert_eq!(r.add_exposure("c", Segment::None, 0, "on", "on"), Err(TooManyUnits { max: 2 }));
}

#[test]
fn the_read_out_serializes_in_the_documented_shape() {
    let mut r = readout(&["conversion:Buy"], &[("a", 0, "off"), ("b", 0, "off"), ("c", 0, "on"), ("d", 0, "on")]);
    r.join(&Links::default(), 10);
    r.add_event(Some("a"), None, 1, &[(0, None)], &design());
    r.add_event(Some("c"), None, 1, &[(0, None)], &design());
    r.add_event(Some("d"), None, 1, &[(0, None)], &design());
    let json = serde_json::to_value(r.finish(&design()).unwrap()).unwrap();
    assert_eq!(json["control"], "off");
    assert_eq!(json["units"], 4);
    assert_eq!(json["multipleExposures"], serde_json::json!({"units": 0, "share": 0.0, "warning": false}));
    assert_eq!(json["srm"]["pValue"], 1.0);
    let rows = &json["metrics"][0]["treatments"];
    assert_eq!(json["metrics"][0]["metric"], "conversion:Buy");
    assert_eq!(
        rows[0],
        serde_json::json!({"treatment": "off", "units": 2, "total": 1.0, "mean": 0.5, "variance": 0.5})
    );
    assert_eq!(rows[1]["treatment"], "on");
    assert_eq!(rows[1]["absolute"]["estimate"], 0.5);
    assert_eq!(rows[1]["relative"]["estimate"], 1.0);
    for field in ["pValue", "chanceToBeatControl"] {
        assert!(rows[1].get(field).is_some(), "{field} in {}", rows[1]);
    }
    assert!(json.get("breakdown").is_none());
}

#[test]
fn each_segment_counts_its_own_non_numeric_values_and_the_whole_read_out_its_own() {
    // Black-box finding: with a breakdown, every segment repeated one count over all groups.
    let mut r = Readout::new(vec![metric("sum:Order:revenue")], Some(By::Label), 100);
    r.add_exposure("a", Segment::Text("rule 1".into()), 0, "on", "on").unwrap();
    r.add_exposure("a", Segment::Text("rule 2".into()), 50, "on", "on").unwrap();
    r.add_exposure("b", Segment::Text("rule 2".into()), 0, "off", "off").unwrap();
    r.join(&Links::default(), 100);
    // a's event at 10 counts in the whole read-out and rule 1 (a exposed at 50 under rule 2).
    r.add_event(Some("a"), None, 10, &[(0, None)], &design());
    // b's counts in the whole read-out and rule 2.
    r.add_event(Some("b"), None, 10, &[(0, None)], &design());
    // a's event at 60 counts in all three, once in each.
    r.add_event(Some("a"), None, 60, &[(0, None)], &design());
    let analysis = r.finish(&design()).unwrap();
    assert_eq!(analysis.top.metrics[0].non_numeric, Some(3));
    let segments = &analysis.breakdown.unwrap().segments;
    assert_eq!(segments[0].analysis.metrics[0].non_numeric, Some(2), "rule 1");
    assert_eq!(segments[1].analysis.metrics[0].non_numeric, Some(2), "rule 2");
}

#[test]
fn a_sum_past_the_range_of_f64_is_null_with_a_reason_never_infinite() {
    // Black-box finding: CSV wrote `inf` and `NaN` where JSON had null.
    let mut r = readout(&["sum:Pay:revenue"], &[("a", 0, "off"), ("b", 0, "off"), ("c", 0, "on"), ("d", 0, "on")]);
    r.join(&Links::default(), 10);
    for _ in 0..3 {
        r.add_event(Some("a"), None, 1, &[(0, Some(1e308))], &design());
    }
    r.add_event(Some("c"), None, 1, &[(0, Some(1.0))], &design());
    let analysis = r.finish(&design()).unwrap();
    let rows = &analysis.top.metrics[0].treatments;
    assert_eq!((rows[0].total, rows[0].mean, rows[0].variance), (None, None, None));
    assert_eq!(rows[0].reason, Some(stats::NOT_FINITE), "the control says why its values are null");
    assert_eq!(rows[1].total, Some(1.0));
    assert_eq!(rows[1].reason, None, "a compared treatment's reason is its comparison's");
    let json = serde_json::to_string(&analysis).unwrap();
    assert!(!json.contains("NaN") && !json.contains("inf"), "{json}");
}
