//! Experiment read-outs end to end, on both backends: impressions posted to the Split webhook and
//! events to Segment's `/v1/batch`, then `GET /api/experiments/{split}` checked against scipy
//! (on per-unit values this test derives from its own generated plan, not from sluice) and
//! against hand-computed cases of every exposure rule; the list endpoint, CSV and the CLI.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Backend, InProcess};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};

const SPLIT: &str = "checkout_v2";
/// 2026-11-01T00:00:00Z.
const T0: i64 = 1_793_491_200_000;
const HOUR: i64 = 3_600_000;

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn impression(key: &str, treatment: &str, time: i64) -> Value {
    common::impression(key, SPLIT, "Production", treatment, "default rule", time)
}

fn track(event: &str, user: Option<&str>, anonymous: Option<&str>, time: i64, id: &str, properties: Value) -> Value {
    let mut e = json!({"type": "track", "event": event, "messageId": id, "timestamp": rfc3339(time),
                       "properties": properties});
    if let Some(user) = user {
        e["userId"] = json!(user);
    }
    if let Some(anonymous) = anonymous {
        e["anonymousId"] = json!(anonymous);
    }
    e
}

fn identify(user: &str, anonymous: &str, time: i64, id: &str) -> Value {
    json!({"type": "identify", "userId": user, "anonymousId": anonymous, "messageId": id, "timestamp": rfc3339(time)})
}

fn alias(previous: &str, user: &str, time: i64, id: &str) -> Value {
    json!({"type": "alias", "previousId": previous, "userId": user, "messageId": id, "timestamp": rfc3339(time)})
}

async fn post(s: &InProcess, impressions: Vec<Value>, events: Vec<Value>) {
    for chunk in impressions.chunks(5_000) {
        let (status, body) = s.post_gzip(&Value::Array(chunk.to_vec())).await;
        assert_eq!(status, 200, "{body}");
    }
    for chunk in events.chunks(2_000) {
        let (status, body) = s.post("/v1/batch", json!({"batch": chunk}).to_string().into_bytes(), &[]).await;
        assert_eq!(status, 200, "{body}");
    }
    s.wait_loaded().await;
}

async fn get_json(s: &InProcess, path: &str) -> (u16, Value) {
    let (status, body) = s.get(path).await;
    let parsed = serde_json::from_str(&body).ok();
    (status, parsed.unwrap_or(Value::String(body)))
}

/// What the generated experiment should give: per metric, per treatment, each unit's value.
#[derive(Default)]
struct Expected {
    values: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    units: BTreeMap<String, u64>,
    multiple: u64,
    non_numeric: u64,
}

/// 2,400 units with a known effect: `on` converts at 13%, `off` at 10%; one unit in five is keyed
/// by an anonymousId and buys under its userId after an identify, one in five more buys on a
/// device it identified on, anonymously; 1% see both treatments; events before the exposure
/// or after the 72 h window, and revenue that is not a number, are mixed in.
fn generate() -> (Vec<Value>, Vec<Value>, Expected) {
    let mut rng = StdRng::seed_from_u64(14);
    let (mut impressions, mut events, mut expected) = (Vec::new(), Vec::new(), Expected::default());
    let metrics = ["conversion:Order Completed", "count:Order Completed", "sum:Order Completed:revenue"];
    for i in 0..2_400 {
        let first = T0 + i * 1_000;
        let treatment = if rng.random_bool(0.5) { "on" } else { "off" };
        let (key, user, device) = match i % 5 {
            0 => (format!("anon-{i}"), format!("user-{i}"), format!("anon-{i}")),
            _ => (format!("user-{i}"), format!("user-{i}"), format!("device-{i}")),
        };
        impressions.push(impression(&key, treatment, first));
        // A later impression of the same treatment changes nothing.
        if rng.random_bool(0.3) {
            impressions.push(impression(&key, treatment, first + 5 * HOUR));
        }
        if i % 100 == 7 {
            let other = if treatment == "on" { "off" } else { "on" };
            impressions.push(impression(&key, other, first + HOUR));
            expected.multiple += 1;
            // Its purchases count nowhere.
            events.push(track(
                "Order Completed",
                Some(&user),
                None,
                first + 2 * HOUR,
                &format!("m-{i}"),
                json!({"revenue": 5}),
            ));
            continue;
        }
        *expected.units.entry(treatment.to_owned()).or_default() += 1;
        events.push(identify(&user, &device, first - HOUR, &format!("id-{i}")));
        // Before the exposure: never counted.
        if rng.random_bool(0.2) {
            events.push(track(
                "Order Completed",
                Some(&user),
                None,
                first - 1,
                &format!("early-{i}"),
                json!({"revenue": 100}),
            ));
        }
        let converts = rng.random_bool(if treatment == "on" { 0.13 } else { 0.10 });
        let (mut count, mut revenue) = (0.0, 0.0);
        if converts {
            for k in 0..rng.random_range(1..=3) {
                let at = first + (k + 1) * 10 * HOUR;
                let id = format!("buy-{i}-{k}");
                let cents: i64 = rng.random_range(100..50_000);
                let amount = cents as f64 / 100.0;
                let (props, added) = if rng.random_bool(0.05) {
                    expected.non_numeric += 1;
                    (json!({"revenue": format!("{amount}")}), 0.0)
                } else {
                    (json!({"revenue": amount}), amount)
                };
                // Every second unit buys anonymously on its device, the others as themselves.
                let event = if i % 2 == 0 {
                    track("Order Completed", None, Some(&device), at, &id, props)
                } else {
                    track("Order Completed", Some(&user), None, at, &id, props)
                };
                events.push(event);
                count += 1.0;
                revenue += added;
            }
        }
        // After the 72 h window: never counted.
        if rng.random_bool(0.1) {
            events.push(track(
                "Order Completed",
                Some(&user),
                None,
                first + 73 * HOUR,
                &format!("late-{i}"),
                json!({"revenue": 7}),
            ));
        }
        for (metric, value) in metrics.iter().zip([f64::from(u8::from(converts)), count, revenue]) {
            expected
                .values
                .entry((*metric).to_owned())
                .or_default()
                .entry(treatment.to_owned())
                .or_default()
                .push(value);
        }
    }
    (impressions, events, expected)
}

/// scipy's statistics of `expected` (the script is the independent implementation).
fn scipy(python: &Path, expected: &Expected, weights: &[f64], alpha: f64) -> Value {
    let input = json!({"values": expected.values, "units": expected.units, "weights": weights, "alpha": alpha});
    let script = r#"
import json, sys
import numpy as np
from scipy import stats
d = json.load(sys.stdin)
out = {"metrics": {}}
for metric, arms in d["values"].items():
    c = np.array(arms["off"]); t = np.array(arms["on"])
    nt, nc = len(t), len(c)
    mt, mc = t.mean(), c.mean(); vt, vc = t.var(ddof=1), c.var(ddof=1)
    se2 = vt / nt + vc / nc
    df = se2 ** 2 / ((vt / nt) ** 2 / (nt - 1) + (vc / nc) ** 2 / (nc - 1))
    q = stats.t.isf(d["alpha"] / 2, df)
    rel = (mt - mc) / abs(mc)
    se_rel = np.sqrt(vt / (nt * mc ** 2) + mt ** 2 * vc / (nc * mc ** 4))
    out["metrics"][metric] = {
        "off": {"units": nc, "total": c.sum(), "mean": mc, "variance": vc},
        "on": {"units": nt, "total": t.sum(), "mean": mt, "variance": vt,
               "absolute": [mt - mc, mt - mc - q * np.sqrt(se2), mt - mc + q * np.sqrt(se2)],
               "relative": [rel, rel - q * se_rel, rel + q * se_rel],
               "pValue": stats.ttest_ind(t, c, equal_var=False).pvalue,
               "chanceToBeatControl": stats.norm.cdf(rel / se_rel)}}
units = [d["units"]["off"], d["units"]["on"]]
w = np.array(d["weights"], dtype=float)
out["srm"] = stats.chisquare(units, f_exp=sum(units) * w / w.sum()).pvalue
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "scipy failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `a` and `b` agree to 1e-9 relative.
fn close(what: &str, a: &Value, b: &Value) {
    let (a, b) = (a.as_f64().unwrap_or_else(|| panic!("{what}: {a}")), b.as_f64().unwrap());
    let scale = a.abs().max(b.abs());
    assert!((a - b).abs() <= 1e-9 * scale, "{what}: sluice {a:e}, scipy {b:e}");
}

async fn every_statistic_matches_scipy_on_generated_data_with_a_known_effect(b: Backend) {
    let Some(python) = common::test_python("the scipy comparison of experiment read-outs") else { return };
    let Some(s) = InProcess::start_on(b, |_| {}).await else { return };
    let (impressions, events, expected) = generate();
    post(&s, impressions, events).await;
    for (weights, alpha) in [(None, 0.05), (Some([40.0, 60.0]), 0.1)] {
        let mut path = format!(
            "/api/experiments/{SPLIT}?environment=Production&window=72h&metric=conversion:Order%20Completed\
             &metric=count:Order%20Completed&metric=sum:Order%20Completed:revenue&alpha={alpha}"
        );
        if let Some([a, b]) = weights {
            path.push_str(&format!("&weights={a},{b}"));
        }
        let (status, answer) = get_json(&s, &path).await;
        assert_eq!(status, 200, "{answer}");
        let want = scipy(&python, &expected, &weights.unwrap_or([1.0, 1.0]), alpha);
        assert_eq!(answer["control"], "off");
        assert_eq!(answer["units"], 2_400);
        assert_eq!(answer["multipleExposures"]["units"], expected.multiple);
        close("srm", &answer["srm"]["pValue"], &want["srm"]);
        for metric in &answer["metrics"].as_array().unwrap()[..] {
            let name = metric["metric"].as_str().unwrap();
            for row in metric["treatments"].as_array().unwrap() {
                let t = row["treatment"].as_str().unwrap();
                let w = &want["metrics"][name][t];
                assert_eq!(row["units"], w["units"], "{name} {t}");
                for field in ["total", "mean", "variance", "pValue", "chanceToBeatControl"] {
                    if w.get(field).is_some() {
                        close(&format!("{name} {t} {field}"), &row[field], &w[field]);
                    }
                }
                for field in ["absolute", "relative"] {
                    if let Some(w) = w.get(field) {
                        close(&format!("{name} {t} {field}"), &row[field]["estimate"], &w[0]);
                        close(&format!("{name} {t} {field} low"), &row[field]["ci"][0], &w[1]);
                        close(&format!("{name} {t} {field} high"), &row[field]["ci"][1], &w[2]);
                    }
                }
            }
            if name.starts_with("sum:") {
                assert_eq!(metric["nonNumeric"], expected.non_numeric);
            }
        }
    }
    let _kept_until_stopped = s.stop().await;
}

/// The hand-computed cases: each unit's value for `conversion:Buy`, `count:Buy` and
/// `sum:Buy:amount` is written beside it.
fn rule_cases() -> (Vec<Value>, Vec<Value>) {
    let mut impressions = vec![
        // a: exposed at T0 to on; buys at T0 + 1 h (counted) and T0 - 1 ms (before: not).
        impression("a", "on", T0),
        // b: off; its only purchase is before its exposure: 0.
        impression("b", "off", T0 + HOUR),
        // c: on and later off: a multiple exposure, in no metric.
        impression("c", "on", T0),
        impression("c", "off", T0 + HOUR),
        // anon-d: off, anonymous; identified later as user-d, who buys with a userId only.
        impression("anon-d", "off", T0),
        // anon-e: on; aliased to user-e, renamed to user-e2, who buys: the alias chain.
        impression("anon-e", "on", T0),
        // f: off, version 2 only; buys exactly at the end of a 24 h window (counted) and 1 ms after.
        impression("f", "off", T0),
        // g: on, in Staging only: not in a Production read-out.
        common::impression("g", SPLIT, "Staging", "on", "default rule", T0),
    ];
    impressions[7]["splitVersionNumber"] = json!(2);
    for (i, imp) in impressions.iter_mut().enumerate() {
        if i != 7 {
            imp["splitVersionNumber"] = json!(if imp["key"] == "f" { 2 } else { 1 });
        }
    }
    impressions[0]["label"] = json!("whitelisted");
    let events = vec![
        track("Buy", Some("a"), None, T0 + HOUR, "a1", json!({"amount": 10})),
        track("Buy", Some("a"), None, T0 - 1, "a0", json!({"amount": 1000})),
        track("Buy", Some("b"), None, T0, "b0", json!({"amount": 1000})),
        track("Buy", Some("c"), None, T0 + 2 * HOUR, "c1", json!({"amount": 1000})),
        identify("user-d", "anon-d", T0 + HOUR, "d-id"),
        track("Buy", Some("user-d"), None, T0 + 2 * HOUR, "d1", json!({"amount": 4.5})),
        track("Buy", Some("user-d"), None, T0 + 3 * HOUR, "d2", json!({"amount": "lots"})),
        alias("anon-e", "user-e", T0 + HOUR, "e-alias-1"),
        identify("user-e", "anon-e", T0 + HOUR, "e-id"),
        alias("user-e", "user-e2", T0 + 2 * HOUR, "e-alias-2"),
        track("Buy", Some("user-e2"), None, T0 + 3 * HOUR, "e1", json!({"amount": 20})),
        track("Buy", Some("f"), None, T0 + 24 * HOUR, "f1", json!({"amount": 3})),
        track("Buy", Some("f"), None, T0 + 24 * HOUR + 1, "f2", json!({"amount": 3})),
        track("Buy", Some("g"), None, T0 + HOUR, "g1", json!({"amount": 1000})),
    ];
    (impressions, events)
}

/// Treatment → (units, total) of metric `m` in `group`.
fn totals(group: &Value, m: usize) -> BTreeMap<String, (u64, f64)> {
    group["metrics"][m]["treatments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let total = r["total"].as_f64().unwrap_or_else(|| panic!("{r}"));
            // Black-box finding: an empty treatment's total was -0.
            assert!(total.is_sign_positive(), "a total of no units is 0, not -0: {r}");
            (r["treatment"].as_str().unwrap().to_owned(), (r["units"].as_u64().unwrap(), total))
        })
        .collect()
}

fn pairs(list: &[(&str, (u64, f64))]) -> BTreeMap<String, (u64, f64)> {
    list.iter().map(|(t, v)| ((*t).to_owned(), *v)).collect()
}

async fn each_exposure_and_join_rule_gives_the_hand_computed_values(b: Backend) {
    let Some(s) = InProcess::start_on(b, |_| {}).await else { return };
    let (impressions, events) = rule_cases();
    post(&s, impressions, events).await;
    let base = format!(
        "/api/experiments/{SPLIT}?environment=Production&metric=conversion:Buy&metric=count:Buy&metric=sum:Buy:amount"
    );
    let (status, all) = get_json(&s, &format!("{base}&window=24h")).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["units"], 6, "a b c anon-d anon-e f: g is in Staging");
    assert_eq!(all["multipleExposures"]["units"], 1);
    assert_eq!(all["multipleExposures"]["warning"], true, "1 in 6 is over 1%");
    // a 1, anon-e 1 (through the alias chain); b 0 (bought before), anon-d 1 (through identify), f 1.
    assert_eq!(totals(&all, 0), pairs(&[("off", (3, 2.0)), ("on", (2, 2.0))]));
    // f's second purchase is 1 ms past the window; anon-d bought twice.
    assert_eq!(totals(&all, 1), pairs(&[("off", (3, 3.0)), ("on", (2, 2.0))]));
    // a 10 + anon-e 20; anon-d 4.5 + "lots" (not a number: 0) + f 3.
    assert_eq!(totals(&all, 2), pairs(&[("off", (3, 7.5)), ("on", (2, 30.0))]));
    assert_eq!(all["metrics"][2]["nonNumeric"], 1);

    // Without a window and with `to`, events count until `to`.
    let (_, until) = get_json(&s, &format!("{base}&to={}", T0 + 24 * HOUR + 2)).await;
    assert_eq!(totals(&until, 1), pairs(&[("off", (3, 4.0)), ("on", (2, 2.0))]));
    // `from` is inclusive and `to` exclusive, on exposures: b (T0 + 1 h) and c's second are out.
    let (_, window) = get_json(&s, &format!("{base}&from={T0}&to={}", T0 + HOUR)).await;
    assert_eq!(window["units"], 5);
    assert_eq!(window["multipleExposures"]["units"], 0, "c saw only `on` before T0 + 1 h");

    let (_, v2) = get_json(&s, &format!("{base}&version=2&window=24h")).await;
    assert_eq!(v2["units"], 1);
    assert_eq!(totals(&v2, 1), pairs(&[("off", (1, 1.0))]));

    let (_, by_label) = get_json(&s, &format!("{base}&by=label&window=24h")).await;
    let segments = &by_label["breakdown"]["segments"];
    assert_eq!(by_label["breakdown"]["by"], "label");
    assert_eq!(segments[0]["value"], "default rule");
    assert_eq!(segments[1]["value"], "whitelisted");
    assert_eq!(totals(&segments[1], 0), pairs(&[("off", (0, 0.0)), ("on", (1, 1.0))]));
    assert_eq!(segments[0]["units"], 5);
    let (_, by_version) = get_json(&s, &format!("{base}&by=version&window=24h")).await;
    let values: Vec<&Value> =
        by_version["breakdown"]["segments"].as_array().unwrap().iter().map(|s| &s["value"]).collect();
    assert_eq!(values, [&json!(1), &json!(2)]);

    let (status, csv) = s.get(&format!("{base}&window=24h&format=csv")).await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("by,segment,metric,treatment,units,total,mean,variance,absolute"), "{csv}");
    assert_eq!(lines.len(), 1 + 3 * 2, "{csv}");
    assert!(lines[1].starts_with(",,conversion:Buy,off,3,2,"), "{csv}");
    let (_, csv) = s.get(&format!("{base}&window=24h&format=csv&by=version")).await;
    assert!(csv.lines().any(|l| l.starts_with("version,2,conversion:Buy,off,1,1,")), "{csv}");

    let (status, list) = get_json(&s, "/api/experiments?environment=Production").await;
    assert_eq!(status, 200, "{list}");
    let flag = &list["experiments"][0];
    assert_eq!(flag["split"], SPLIT);
    assert_eq!(flag["units"], 6);
    assert_eq!(flag["treatments"], json!({"off": 3, "on": 2}));
    assert_eq!(flag["versions"], json!([1, 2]));
    assert_eq!(flag["firstExposure"], rfc3339(T0));
    assert_eq!(flag["lastExposure"], rfc3339(T0 + HOUR));
    assert_eq!(flag["multipleExposures"]["units"], 1);
    let (_, staging) = get_json(&s, "/api/experiments?environment=id-Staging").await;
    assert_eq!(staging["experiments"][0]["units"], 1, "an environment id works as its name does: {staging}");

    let (dir, schema) = s.stop().await;
    let (code, out, err) = common::sluice_on_store(
        dir.path(),
        schema.as_ref(),
        &[
            "experiment",
            SPLIT,
            "--environment",
            "Production",
            "--metric",
            "conversion:Buy",
            "--window",
            "24h",
            "--format",
            "table",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!(
            "{SPLIT} in Production (control: off)\nunits 6, multiple exposures 1 (16.67%) WARNING"
        )),
        "{out}"
    );
    let row = out.lines().find(|l| l.starts_with("on ")).unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("1.0000") && row.contains("+50.00%"), "on: mean 1, +50% over off's 2/3: {out}");
    let (code, out, err) = common::sluice_on_store(
        dir.path(),
        schema.as_ref(),
        &["experiment", SPLIT, "--environment", "Production", "--metric", "count:Buy", "--format", "json"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["units"], 6);
    let (code, _, err) = common::sluice_on_store(
        dir.path(),
        schema.as_ref(),
        &["experiment", SPLIT, "--environment", "Production", "--metric", "avg:Buy"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("--metric") && err.contains("conversion:EVENT"), "{err}");
    let (code, out, err) =
        common::sluice_on_store(dir.path(), schema.as_ref(), &["experiments", "--environment", "Production"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["experiments"][0]["units"], 6);
}

async fn bad_parameters_are_400_naming_them_and_an_unknown_split_is_404(b: Backend) {
    let Some(s) = InProcess::start_on(b, |_| {}).await else { return };
    post(&s, vec![impression("a", "on", T0), impression("b", "off", T0)], vec![]).await;
    let base = format!("/api/experiments/{SPLIT}?environment=Production");
    for (query, field) in [
        (format!("/api/experiments/{SPLIT}?metric=conversion:Buy"), "environment"),
        (format!("{base}&metric=revenue"), "metric"),
        (format!("{base}&window=3 days"), "window"),
        (format!("{base}&alpha=5"), "alpha"),
        (format!("{base}&weights=50,-50"), "weights"),
        (format!("{base}&weights=1,1,1"), "weights"),
        (format!("{base}&control=treatment"), "control"),
        (format!("{base}&by=country"), "by"),
        (format!("{base}&version=latest"), "version"),
        (format!("{base}&from=2026-11-02&to=2026-11-01"), "to"),
        (format!("{base}&colour=red"), "colour"),
        ("/api/experiments".to_owned(), "environment"),
        // Black-box finding: PostgreSQL refuses a NUL byte in text, and the read-out answered 500.
        (format!("/api/experiments/{SPLIT}?environment=Production%00&metric=conversion:x"), "environment"),
        (format!("{base}&metric=conversion:%00"), "metric"),
        (format!("{base}&control=o%00n"), "control"),
        ("/api/experiments/a%00b?environment=Production".to_owned(), "split"),
        ("/api/experiments?environment=%00".to_owned(), "environment"),
        // Not UTF-8 once decoded: refused, not matched as U+FFFD.
        ("/api/experiments?environment=%FF".to_owned(), "environment"),
        // Weights so unequal that no test of them means anything.
        (format!("{base}&weights=1e-320,1"), "weights"),
    ] {
        let (status, answer) = get_json(&s, &query).await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(answer["field"], field, "{query}: {answer}");
    }
    // Black-box finding: weights whose sum overflows gave shares of 0 and no SRM test.
    let (status, answer) = get_json(&s, &format!("{base}&weights=1e308,1e308")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["srm"]["weights"], json!({"off": 0.5, "on": 0.5}), "{answer}");
    assert_eq!(answer["srm"]["pValue"], 1.0, "{answer}");
    let (status, answer) = get_json(&s, "/api/experiments/no_such_flag?environment=Production").await;
    assert_eq!(status, 404, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("no_such_flag"), "{answer}");
    let (status, answer) = get_json(&s, &format!("{base}&version=7")).await;
    assert_eq!(status, 404, "{answer}");
    let _kept = s.stop().await;
}

async fn a_read_out_over_its_unit_bound_is_413(b: Backend) {
    let Some(s) = InProcess::start_on(b, |c| c.experiments.max_units = 2).await else { return };
    post(&s, vec![impression("a", "on", T0), impression("b", "off", T0), impression("c", "off", T0)], vec![]).await;
    let (status, answer) = get_json(&s, &format!("/api/experiments/{SPLIT}?environment=Production")).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("experiments.max_units"), "{answer}");
    let _kept = s.stop().await;
}

/// A client that hangs up does not end its read-out (the blocking query runs on), so it must not
/// free the read-out's place: otherwise hanging up in a loop runs any number at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_keeps_its_read_out_counted_until_it_ends() {
    let s = InProcess::start().await;
    let impressions: Vec<Value> =
        (0..150_000).map(|i| impression(&format!("u{i}"), if i % 2 == 0 { "on" } else { "off" }, T0 + i)).collect();
    post(&s, impressions, vec![]).await;
    // Two store connections open already, so the read-out below is under way when its client goes.
    let (warm_1, warm_2) = tokio::join!(
        s.get("/api/experiments?environment=Production"),
        s.get("/api/experiments?environment=Production")
    );
    assert_eq!((warm_1.0, warm_2.0), (200, 200));
    let path = format!("/api/experiments/{SPLIT}?environment=Production&metric=conversion:Buy");
    let started = std::time::Instant::now();
    let hung_up = s.client.get(s.url(&path)).timeout(std::time::Duration::from_millis(100)).send().await;
    assert!(hung_up.is_err(), "the read-out answered within 100 ms: too small to hold its place");
    let (b, c) = tokio::join!(s.get(&path), s.get(&path));
    let statuses = [b.0, c.0];
    assert!(
        statuses.contains(&503) || started.elapsed() > std::time::Duration::from_secs(30),
        "two read-outs ran beside the one whose client hung up: {statuses:?}"
    );
    let _kept = s.stop().await;
}

common::on_both_backends!(
    every_statistic_matches_scipy_on_generated_data_with_a_known_effect,
    each_exposure_and_join_rule_gives_the_hand_computed_values,
    bad_parameters_are_400_naming_them_and_an_unknown_split_is_404,
    a_read_out_over_its_unit_bound_is_413,
);
