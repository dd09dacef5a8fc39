//! Multi-touch attribution models: how one conversion's credit is shared among the touches
//! (session starts) that preceded it, and a report that adds the credit up per group
//! (channel, source or campaign).
//!
//! The caller selects each conversion's touches (in time order, strictly before the conversion,
//! within the lookback window); this module only divides credit, so it is pure and has no I/O.
//! A conversion with no touches counts as one [`DIRECT`] touch at the conversion's time
//! ([`Conversion::effective_touches`]), so every conversion is credited to something.
//!
//! Rule-based models give each conversion a vector of shares, one per touch, summing to 1:
//! - [`Model::First`]: everything to the first touch; [`Model::Last`]: everything to the last;
//! - [`Model::LastNonDirect`]: everything to the last touch not in the `Direct` channel, or to the
//!   last touch when all are direct (GA4's "paid and organic last click");
//! - [`Model::Linear`]: equal shares;
//! - [`Model::TimeDecay`]: weights `2^(−Δt / half_life)`, `Δt` = conversion time − touch time,
//!   normalised to sum 1;
//! - [`Model::PositionBased`]: 40% first, 40% last, 20% shared equally by the middle touches; one
//!   touch gets 100%, two get 50% each.
//!
//! [`Model::DataDriven`] is a first-order Markov chain with removal effects. The states are
//! `start`, each group, and the absorbing `conversion` and `null`; every converting path is
//! `start → g1 → … → gk → conversion` and every non-converting one `start → g1 → … → gk → null`
//! (repeats are kept, so `g → g` counts). Transition probabilities are each transition's count over
//! all transitions out of its state. `P(conversion)` is the probability of being absorbed in
//! `conversion` from `start`; removing a state sends every transition into it to `null`, and its
//! removal effect is `RE(s) = 1 − P(conversion | s removed) / P(conversion)`. Each group gets
//! `RE/ΣRE` of the conversions and of their value; when `P(conversion)` or every `RE` is 0 the
//! report falls back to [`Model::Linear`].
//!
//! The absorption probabilities are solved exactly (Gaussian elimination with partial pivoting on
//! the transient states) rather than estimated by simulating journeys as ChannelAttribution does:
//! a simulation's answer moves from run to run, and a report that changes when nothing happened
//! is not one anybody can trust or test.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;

/// The group name that means a direct visit (no referrer, no campaign).
pub const DIRECT: &str = "Direct";

/// One touchpoint: a session start and the group (channel, source or campaign) it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Touch {
    /// The group value (channel, source, campaign or referrer type).
    pub group: String,
    /// When the session started, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// Whether the session is in the `Direct` channel, whatever the report groups by: what
    /// [`Model::LastNonDirect`] passes over.
    pub direct: bool,
    /// What orders touches that started in the same millisecond: the landing event's `eventId`,
    /// as `/api/user`'s `firstTouch` and `lastTouch` break that tie.
    pub tie: String,
}

/// One conversion and the touches that lead to it, already selected by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion {
    /// When it converted, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// What it was worth.
    pub value: f64,
    /// Its touches in time order, strictly before `time_ms`, within the lookback window.
    pub touches: Vec<Touch>,
}

impl Conversion {
    /// The touches credit is shared among: `touches`, or one `Direct` touch at the conversion's time if there are none.
    pub fn effective_touches(&self) -> Cow<'_, [Touch]> {
        if self.touches.is_empty() {
            Cow::Owned(vec![Touch {
                group: DIRECT.to_owned(),
                time_ms: self.time_ms,
                direct: true,
                tie: String::new(),
            }])
        } else {
            Cow::Borrowed(&self.touches)
        }
    }
}

/// An attribution model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Model {
    /// All credit to the first touch.
    First,
    /// All credit to the last touch.
    Last,
    /// All credit to the last touch that is not `Direct` (the last touch if all are).
    LastNonDirect,
    /// Equal credit to every touch.
    Linear,
    /// Credit halves for every `half_life_ms` a touch is older than the conversion.
    TimeDecay {
        /// How much older (in milliseconds) a touch must be to get half the weight.
        half_life_ms: f64,
    },
    /// 40% first, 40% last, 20% shared by the middle touches.
    PositionBased,
    /// Markov chain removal effects over all converting and non-converting paths.
    DataDriven,
}

/// One group's credit in a [`report`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The group value (channel, source or campaign).
    pub group: String,
    /// The (fractional) number of conversions credited to it.
    pub conversions: f64,
    /// The conversion value credited to it.
    pub value: f64,
    /// Its fraction (0–1) of all the conversions credited by the model.
    pub share: f64,
}

/// Each effective touch's share of one conversion (summing to 1), or `None` for [`Model::DataDriven`].
pub fn credits(model: &Model, conversion: &Conversion) -> Option<Vec<f64>> {
    let touches = conversion.effective_touches();
    let n = touches.len();
    // `effective_touches` is never empty, so `n - 1` cannot underflow below.
    let mut shares = vec![0.0; n];
    match *model {
        Model::First => shares[0] = 1.0,
        Model::Last => shares[n - 1] = 1.0,
        Model::LastNonDirect => {
            let i = touches.iter().rposition(|t| !t.direct).unwrap_or(n - 1);
            shares[i] = 1.0;
        }
        Model::Linear => shares.fill(1.0 / n as f64),
        Model::TimeDecay { half_life_ms } => {
            let ages: Vec<f64> = touches.iter().map(|t| (conversion.time_ms - t.time_ms) as f64).collect();
            // Measuring ages from the most recent touch leaves the shares unchanged (a common factor)
            // but keeps the largest weight at 1, so old touches cannot underflow the sum to 0.
            let youngest = ages.iter().copied().fold(f64::INFINITY, f64::min);
            let weights: Vec<f64> = if half_life_ms > 0.0 {
                ages.iter().map(|a| (-(a - youngest) / half_life_ms).exp2()).collect()
            } else {
                // A half-life of 0 (or less, or NaN) is the limit where only the most recent touch counts.
                ages.iter().map(|&a| if a == youngest { 1.0 } else { 0.0 }).collect()
            };
            let total: f64 = weights.iter().sum();
            for (s, w) in shares.iter_mut().zip(&weights) {
                *s = w / total;
            }
        }
        Model::PositionBased => match n {
            1 => shares[0] = 1.0,
            2 => shares.fill(0.5),
            _ => {
                shares.fill(0.2 / (n - 2) as f64);
                shares[0] = 0.4;
                shares[n - 1] = 0.4;
            }
        },
        Model::DataDriven => return None,
    }
    Some(shares)
}

/// Credit per group under `model`, sorted by conversions descending then group; `null_paths` only matter for DataDriven.
pub fn report(model: &Model, conversions: &[Conversion], null_paths: &[Vec<String>]) -> Vec<Row> {
    if *model == Model::DataDriven {
        return data_driven_report(conversions, null_paths).unwrap_or_else(|| report(&Model::Linear, conversions, &[]));
    }
    let mut credit: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    let touches: Vec<Cow<'_, [Touch]>> = conversions.iter().map(Conversion::effective_touches).collect();
    for (conversion, touches) in conversions.iter().zip(&touches) {
        let Some(shares) = credits(model, conversion) else { continue };
        for (touch, share) in touches.iter().zip(shares) {
            // Skipping zero shares keeps groups that never earned credit out of the rows.
            if share > 0.0 {
                let entry = credit.entry(touch.group.as_str()).or_default();
                entry.0 += share;
                entry.1 += share * conversion.value;
            }
        }
    }
    rows(credit.into_iter().map(|(group, (c, v))| (group.to_owned(), c, v)))
}

/// Rows from (group, conversions, value), zero credit dropped, shares filled in, sorted.
fn rows(credit: impl Iterator<Item = (String, f64, f64)>) -> Vec<Row> {
    let mut rows: Vec<Row> = credit
        .filter(|&(_, c, _)| c > 0.0)
        .map(|(group, conversions, value)| Row { group, conversions, value, share: 0.0 })
        .collect();
    let total: f64 = rows.iter().map(|r| r.conversions).sum();
    for row in &mut rows {
        row.share = row.conversions / total;
    }
    rows.sort_by(|a, b| b.conversions.total_cmp(&a.conversions).then_with(|| a.group.cmp(&b.group)));
    rows
}

/// The DataDriven rows, or `None` when the report must fall back to linear.
fn data_driven_report(conversions: &[Conversion], null_paths: &[Vec<String>]) -> Option<Vec<Row>> {
    let (p_conversion, removed) = removal_probabilities(conversions, null_paths)?;
    if p_conversion <= 0.0 {
        return None;
    }
    // Removing a state can only lower P(conversion); clamping drops rounding noise below 0.
    let effects: Vec<(String, f64)> =
        removed.into_iter().map(|(group, p)| (group, (1.0 - p / p_conversion).max(0.0))).collect();
    let total_effect: f64 = effects.iter().map(|(_, re)| re).sum();
    if total_effect <= 0.0 {
        return None;
    }
    let count = conversions.len() as f64;
    let value: f64 = conversions.iter().map(|c| c.value).sum();
    Some(rows(effects.into_iter().map(|(group, re)| {
        let fraction = re / total_effect;
        (group, count * fraction, value * fraction)
    })))
}

/// P(conversion) from `start`, and per group (in name order) P(conversion) with that group removed.
///
/// `None` if the linear system is singular, which paths that all end in an absorbing state cannot produce.
fn removal_probabilities(conversions: &[Conversion], null_paths: &[Vec<String>]) -> Option<(f64, Vec<(String, f64)>)> {
    let converting: Vec<Cow<'_, [Touch]>> = conversions.iter().map(Conversion::effective_touches).collect();
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for group in converting
        .iter()
        .flat_map(|t| t.iter().map(|t| t.group.as_str()))
        .chain(null_paths.iter().flatten().map(String::as_str))
    {
        index.insert(group, 0);
    }
    // Transient state 0 is `start`; groups follow in name order.
    for (i, slot) in index.values_mut().enumerate() {
        *slot = i + 1;
    }
    let n = index.len() + 1;
    let mut to_transient = vec![vec![0.0_f64; n]; n];
    let mut to_conversion = vec![0.0_f64; n];
    let mut out = vec![0.0_f64; n];
    let mut walk = |states: &mut dyn Iterator<Item = usize>, converts: bool| {
        let mut from = 0;
        for to in states {
            to_transient[from][to] += 1.0;
            out[from] += 1.0;
            from = to;
        }
        if converts {
            to_conversion[from] += 1.0;
        }
        out[from] += 1.0;
    };
    for touches in &converting {
        walk(&mut touches.iter().map(|t| index[t.group.as_str()]), true);
    }
    for path in null_paths {
        walk(&mut path.iter().map(|g| index[g.as_str()]), false);
    }

    // Absorption in `conversion`: x = Q x + r, i.e. (I − Q) x = r, over the transient states.
    let absorb = |removed: Option<usize>| -> Option<f64> {
        let mut a = vec![vec![0.0_f64; n]; n];
        let mut b = vec![0.0_f64; n];
        for i in 0..n {
            a[i][i] = 1.0;
            // A removed state converts with probability 0, which is the same as sending every
            // transition into it to `null`; a state nothing leaves (only `start`, with no paths) likewise.
            if Some(i) == removed || out[i] == 0.0 {
                continue;
            }
            for j in 0..n {
                a[i][j] -= to_transient[i][j] / out[i];
            }
            b[i] = to_conversion[i] / out[i];
        }
        solve(a, b).map(|x| x[0])
    };
    let p_conversion = absorb(None)?;
    let removed =
        index.iter().map(|(&group, &i)| Some((group.to_owned(), absorb(Some(i))?))).collect::<Option<Vec<_>>>()?;
    Some((p_conversion, removed))
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting; `None` if `a` is singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for k in 0..n {
        let pivot = (k..n).max_by(|&i, &j| a[i][k].abs().total_cmp(&a[j][k].abs()))?;
        if a[pivot][k] == 0.0 {
            return None;
        }
        a.swap(k, pivot);
        b.swap(k, pivot);
        let (top, rest) = a.split_at_mut(k + 1);
        let (b_top, b_rest) = b.split_at_mut(k + 1);
        let pivot_row = &top[k];
        for (row, bi) in rest.iter_mut().zip(b_rest) {
            let factor = row[k] / pivot_row[k];
            if factor != 0.0 {
                for (x, p) in row[k..].iter_mut().zip(&pivot_row[k..]) {
                    *x -= factor * p;
                }
                *bi -= factor * b_top[k];
            }
        }
    }
    let mut x = vec![0.0_f64; n];
    for k in (0..n).rev() {
        let tail: f64 = (k + 1..n).map(|j| a[k][j] * x[j]).sum();
        x[k] = (b[k] - tail) / a[k][k];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 86_400_000;
    const HOUR_MS: i64 = 3_600_000;
    const T: i64 = 1_700_000_000_000;

    fn touch(group: &str, time_ms: i64) -> Touch {
        Touch { group: group.to_owned(), time_ms, direct: group == DIRECT, tie: String::new() }
    }

    /// A conversion at `T` worth `value`, with touches one hour apart ending one hour before it.
    fn conversion(groups: &[&str], value: f64) -> Conversion {
        let n = groups.len() as i64;
        let touches = groups.iter().zip(0..).map(|(g, i)| touch(g, T - (n - i) * HOUR_MS)).collect();
        Conversion { time_ms: T, value, touches }
    }

    fn shares(model: Model, groups: &[&str]) -> Vec<f64> {
        credits(&model, &conversion(groups, 1.0)).expect("a rule-based model")
    }

    fn assert_close(actual: f64, expected: f64, relative: f64) {
        let scale = expected.abs().max(f64::MIN_POSITIVE);
        assert!((actual - expected).abs() / scale <= relative, "{actual} != {expected} (relative {relative})");
    }

    fn assert_all_close(actual: &[f64], expected: &[f64]) {
        assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() <= 1e-12, "{actual:?} vs {expected:?}");
        }
    }

    /// The test's deterministic path generator; scripts/stats/markov_values.py mirrors it exactly.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    const CHANNELS: [&str; 5] = ["Direct", "Email", "Organic Search", "Paid Search", "Social"];
    // Uneven channel frequencies, so no two channels are interchangeable.
    const PICK: [usize; 8] = [0, 1, 1, 2, 2, 2, 3, 4];

    /// `paths` journeys: about a third convert (touches an hour apart before `T`), the rest are null paths.
    fn generated(seed: u64, paths: usize) -> (Vec<Conversion>, Vec<Vec<String>>) {
        let mut rng = Lcg(seed);
        let (mut conversions, mut null_paths) = (Vec::new(), Vec::new());
        for _ in 0..paths {
            let converts = rng.next().is_multiple_of(3);
            let len = rng.next() % 5;
            let groups: Vec<String> = (0..len).map(|_| CHANNELS[PICK[(rng.next() % 8) as usize]].to_owned()).collect();
            if converts {
                let value = (rng.next() % 10_000) as f64 / 100.0;
                let n = groups.len() as i64;
                let touches = groups.into_iter().zip(0..).map(|(group, i)| touch(&group, T - (n - i) * HOUR_MS));
                conversions.push(Conversion { time_ms: T, value, touches: touches.collect() });
            } else {
                null_paths.push(groups);
            }
        }
        (conversions, null_paths)
    }

    fn path(groups: &[&str]) -> Vec<String> {
        groups.iter().map(|g| (*g).to_owned()).collect()
    }

    #[test]
    fn first_and_last_give_everything_to_one_end() {
        assert_eq!(shares(Model::First, &["A", "B", "C"]), [1.0, 0.0, 0.0]);
        assert_eq!(shares(Model::Last, &["A", "B", "C"]), [0.0, 0.0, 1.0]);
        assert_eq!(shares(Model::First, &["A"]), [1.0]);
        assert_eq!(shares(Model::Last, &["A"]), [1.0]);
    }

    #[test]
    fn last_non_direct_skips_trailing_direct_touches() {
        assert_eq!(shares(Model::LastNonDirect, &["A", "B", DIRECT, DIRECT]), [0.0, 1.0, 0.0, 0.0]);
        assert_eq!(shares(Model::LastNonDirect, &[DIRECT, "A", DIRECT]), [0.0, 1.0, 0.0]);
    }

    #[test]
    fn last_non_direct_with_only_direct_touches_credits_the_last() {
        assert_eq!(shares(Model::LastNonDirect, &[DIRECT, DIRECT, DIRECT]), [0.0, 0.0, 1.0]);
    }

    #[test]
    fn linear_shares_equally() {
        assert_all_close(&shares(Model::Linear, &["A", "B", "C", "D"]), &[0.25; 4]);
        assert_eq!(shares(Model::Linear, &["A"]), [1.0]);
    }

    #[test]
    fn time_decay_halves_the_weight_per_half_life() {
        // Touches 7 days and 0 days before the conversion, half-life 7 days: weights ½ and 1.
        let c = Conversion { time_ms: T, value: 1.0, touches: vec![touch("A", T - 7 * DAY_MS), touch("B", T)] };
        let model = Model::TimeDecay { half_life_ms: (7 * DAY_MS) as f64 };
        assert_all_close(&credits(&model, &c).expect("rule-based"), &[1.0 / 3.0, 2.0 / 3.0]);
        // 14, 7 and 0 days: weights ¼, ½, 1 → 1/7, 2/7, 4/7.
        let c = Conversion {
            time_ms: T,
            value: 1.0,
            touches: vec![touch("A", T - 14 * DAY_MS), touch("B", T - 7 * DAY_MS), touch("C", T)],
        };
        assert_all_close(&credits(&model, &c).expect("rule-based"), &[1.0 / 7.0, 2.0 / 7.0, 4.0 / 7.0]);
    }

    #[test]
    fn time_decay_keeps_very_old_touches_from_underflowing() {
        // 2^(−5000) underflows to 0 for both touches; relative to the newest touch the shares survive.
        let c = Conversion {
            time_ms: T,
            value: 1.0,
            touches: vec![touch("A", T - 5001 * DAY_MS), touch("B", T - 5000 * DAY_MS)],
        };
        let model = Model::TimeDecay { half_life_ms: DAY_MS as f64 };
        assert_all_close(&credits(&model, &c).expect("rule-based"), &[1.0 / 3.0, 2.0 / 3.0]);
    }

    #[test]
    fn time_decay_with_zero_half_life_credits_the_most_recent_touch() {
        let model = Model::TimeDecay { half_life_ms: 0.0 };
        assert_eq!(shares(model, &["A", "B", "C"]), [0.0, 0.0, 1.0]);
    }

    #[test]
    fn position_based_gives_40_40_20() {
        assert_all_close(&shares(Model::PositionBased, &["A", "B", "C"]), &[0.4, 0.2, 0.4]);
        assert_all_close(
            &shares(Model::PositionBased, &["A", "B", "C", "D", "E"]),
            &[0.4, 0.2 / 3.0, 0.2 / 3.0, 0.2 / 3.0, 0.4],
        );
    }

    #[test]
    fn position_based_with_one_or_two_touches() {
        assert_eq!(shares(Model::PositionBased, &["A"]), [1.0]);
        assert_eq!(shares(Model::PositionBased, &["A", "B"]), [0.5, 0.5]);
    }

    #[test]
    fn data_driven_has_no_per_conversion_credit() {
        assert_eq!(credits(&Model::DataDriven, &conversion(&["A"], 1.0)), None);
    }

    #[test]
    fn empty_path_is_one_direct_touch_at_the_conversion() {
        let c = Conversion { time_ms: T, value: 5.0, touches: Vec::new() };
        assert_eq!(c.effective_touches().as_ref(), [touch(DIRECT, T)]);
        for model in [Model::First, Model::Last, Model::LastNonDirect, Model::Linear, Model::PositionBased] {
            assert_eq!(credits(&model, &c), Some(vec![1.0]), "{model:?}");
        }
        assert_eq!(credits(&Model::TimeDecay { half_life_ms: 1.0 }, &c), Some(vec![1.0]));
        let rows = report(&Model::Last, &[c], &[]);
        assert_eq!(rows, [Row { group: DIRECT.to_owned(), conversions: 1.0, value: 5.0, share: 1.0 }]);
    }

    #[test]
    fn report_adds_shares_and_values_per_group() {
        let conversions = [conversion(&["A", "B"], 10.0), conversion(&["B", "C", "B"], 30.0)];
        let rows = report(&Model::Linear, &conversions, &[]);
        // A: ½ (value 5); B: ½ + ⅔ (5 + 20); C: ⅓ (10). Total credit 2.
        let expected = [("B", 7.0 / 6.0, 25.0), ("A", 0.5, 5.0), ("C", 1.0 / 3.0, 10.0)];
        assert_eq!(rows.len(), expected.len(), "{rows:?}");
        for (row, (group, c, v)) in rows.iter().zip(expected) {
            assert_eq!(row.group, group);
            assert_close(row.conversions, c, 1e-12);
            assert_close(row.value, v, 1e-12);
            assert_close(row.share, c / 2.0, 1e-12);
        }
    }

    #[test]
    fn report_omits_groups_without_credit_and_sorts_ties_by_name() {
        let conversions =
            [conversion(&["X", "B"], 1.0), conversion(&["Y", "A"], 2.0), conversion(&["Z", "C", "C"], 3.0)];
        let rows = report(&Model::Last, &conversions, &[]);
        let groups: Vec<&str> = rows.iter().map(|r| r.group.as_str()).collect();
        // C has 1 conversion like A and B, but sorts after them; X, Y and Z earned nothing.
        assert_eq!(groups, ["A", "B", "C"]);
        assert!(rows.iter().all(|r| r.conversions == 1.0 && (r.share - 1.0 / 3.0).abs() < 1e-15));
        assert_eq!(report(&Model::Last, &conversions[..0], &[]), []);
    }

    #[test]
    fn report_sorts_by_conversions_descending() {
        let conversions = [conversion(&["A"], 1.0), conversion(&["B"], 1.0), conversion(&["B"], 1.0)];
        let rows = report(&Model::First, &conversions, &[]);
        assert_eq!(
            rows.iter().map(|r| (r.group.as_str(), r.conversions)).collect::<Vec<_>>(),
            [("B", 2.0), ("A", 1.0)]
        );
    }

    // Paths A → B → conversion (value 10), B → conversion (value 20), and A → null.
    //
    // Transitions counted: start→A 2, start→B 1; A→B 1, A→null 1; B→conversion 2. So
    //   P(start→A) = 2/3, P(start→B) = 1/3, P(A→B) = ½, P(A→null) = ½, P(B→conversion) = 1.
    // Absorption in conversion: x_B = 1, x_A = ½·x_B = ½, x_start = ⅔·½ + ⅓·1 = ⅔.
    // Remove A (start→A goes to null): x_start = ⅓·1 = ⅓, RE(A) = 1 − (⅓)/(⅔) = ½.
    // Remove B (start→B and A→B go to null): x_start = 0, RE(B) = 1 − 0 = 1.
    // ΣRE = 3/2: A gets ⅓ and B ⅔ of the 2 conversions (⅔, 4/3) and of the value 30 (10, 20).
    #[test]
    fn data_driven_matches_the_hand_computed_example() {
        let conversions = [conversion(&["A", "B"], 10.0), conversion(&["B"], 20.0)];
        let null_paths = [path(&["A"])];
        let (p, removed) = removal_probabilities(&conversions, &null_paths).expect("solvable");
        assert_close(p, 2.0 / 3.0, 1e-12);
        assert_eq!(removed.len(), 2);
        assert_eq!(removed[0].0, "A");
        assert_close(removed[0].1, 1.0 / 3.0, 1e-12);
        assert_eq!(removed[1].0, "B");
        assert!(removed[1].1.abs() < 1e-12, "{removed:?}");

        let rows = report(&Model::DataDriven, &conversions, &null_paths);
        let expected = [("B", 4.0 / 3.0, 20.0, 2.0 / 3.0), ("A", 2.0 / 3.0, 10.0, 1.0 / 3.0)];
        assert_eq!(rows.len(), 2, "{rows:?}");
        for (row, (group, c, v, s)) in rows.iter().zip(expected) {
            assert_eq!(row.group, group);
            assert!((row.conversions - c).abs() < 1e-12, "{rows:?}");
            assert!((row.value - v).abs() < 1e-12, "{rows:?}");
            assert!((row.share - s).abs() < 1e-12, "{rows:?}");
        }
    }

    #[test]
    fn data_driven_counts_repeated_states_as_self_transitions() {
        // A → A → conversion and A → null: A→A 1, A→conversion 1, A→null 1, so from A:
        // x_A = ⅓·x_A + ⅓ → x_A = ½; start→A is certain, so P(conversion) = ½.
        let conversions = [conversion(&["A", "A"], 1.0)];
        let (p, removed) = removal_probabilities(&conversions, &[path(&["A"])]).expect("solvable");
        assert_close(p, 0.5, 1e-12);
        assert_eq!(removed, [("A".to_owned(), 0.0)]);
    }

    #[test]
    fn data_driven_empty_null_path_goes_straight_to_null() {
        // start → B → conversion and start → null: P(conversion) = ½; removing B leaves 0.
        let conversions = [conversion(&["B"], 4.0)];
        let (p, removed) = removal_probabilities(&conversions, &[Vec::new()]).expect("solvable");
        assert_close(p, 0.5, 1e-12);
        assert_eq!(removed, [("B".to_owned(), 0.0)]);
        let rows = report(&Model::DataDriven, &conversions, &[Vec::new()]);
        assert_eq!(rows, [Row { group: "B".to_owned(), conversions: 1.0, value: 4.0, share: 1.0 }]);
    }

    #[test]
    fn data_driven_treats_an_empty_converting_path_as_direct() {
        let conversions = [Conversion { time_ms: T, value: 3.0, touches: Vec::new() }];
        let rows = report(&Model::DataDriven, &conversions, &[path(&["A"])]);
        assert_eq!(rows, [Row { group: DIRECT.to_owned(), conversions: 1.0, value: 3.0, share: 1.0 }]);
    }

    #[test]
    fn data_driven_without_conversions_is_empty() {
        assert_eq!(report(&Model::DataDriven, &[], &[path(&["A", "B"])]), []);
    }

    #[test]
    fn data_driven_matches_numpy_on_generated_paths() {
        // Printed by scripts/stats/markov_values.py (numpy.linalg.solve on the full transition matrix)
        // for generated(2024, 200): 62 conversions, 138 null paths, total value 3405.05.
        const P_CONVERSION: f64 = 0.31;
        const REMOVED: [(&str, f64); 5] = [
            ("Direct", 0.1904518609032127),
            ("Email", 0.16988993732463967),
            ("Organic Search", 0.14941695918162673),
            ("Paid Search", 0.24651584690478798),
            ("Social", 0.24274997656596312),
        ];
        // (group, conversions, value), in group name order.
        const ROWS: [(&str, f64, f64); 5] = [
            ("Direct", 13.452477854351633, 738.8122535154844),
            ("Email", 15.766263946493808, 865.8857588872378),
            ("Organic Search", 18.070041212809343, 992.4095779302654),
            ("Paid Search", 7.143726117929669, 392.3345906105874),
            ("Social", 7.567490868415545, 415.60781905642506),
        ];
        let (conversions, null_paths) = generated(2024, 200);
        assert_eq!((conversions.len(), null_paths.len()), (62, 138));

        let (p, removed) = removal_probabilities(&conversions, &null_paths).expect("solvable");
        assert_close(p, P_CONVERSION, 1e-10);
        assert_eq!(removed.len(), REMOVED.len());
        for ((group, p), (expected_group, expected)) in removed.iter().zip(REMOVED) {
            assert_eq!(group, expected_group);
            assert_close(*p, expected, 1e-10);
        }

        let mut rows = report(&Model::DataDriven, &conversions, &null_paths);
        let total: f64 = rows.iter().map(|r| r.conversions).sum();
        assert_close(total, 62.0, 1e-12);
        rows.sort_by(|a, b| a.group.cmp(&b.group));
        assert_eq!(rows.len(), ROWS.len());
        for (row, (group, c, v)) in rows.iter().zip(ROWS) {
            assert_eq!(row.group, group);
            assert_close(row.conversions, c, 1e-10);
            assert_close(row.value, v, 1e-10);
            assert_close(row.share, c / 62.0, 1e-10);
        }
    }

    #[test]
    fn every_model_shares_sum_to_one() {
        let (conversions, _) = generated(7, 500);
        let models = [
            Model::First,
            Model::Last,
            Model::LastNonDirect,
            Model::Linear,
            Model::TimeDecay { half_life_ms: 2.5 * HOUR_MS as f64 },
            Model::TimeDecay { half_life_ms: 0.0 },
            Model::PositionBased,
        ];
        for model in &models {
            for c in &conversions {
                let shares = credits(model, c).expect("rule-based");
                assert_eq!(shares.len(), c.effective_touches().len());
                assert!(shares.iter().all(|s| (0.0..=1.0).contains(s)), "{model:?} {shares:?}");
                let sum: f64 = shares.iter().sum();
                assert!((sum - 1.0).abs() < 1e-12, "{model:?} {shares:?} sums to {sum}");
            }
        }
        // Report totals are the number of conversions for every model, DataDriven included.
        let (conversions, null_paths) = generated(11, 300);
        for model in models.iter().chain([&Model::DataDriven]) {
            let rows = report(model, &conversions, &null_paths);
            let total: f64 = rows.iter().map(|r| r.conversions).sum();
            assert_close(total, conversions.len() as f64, 1e-12);
            let share: f64 = rows.iter().map(|r| r.share).sum();
            assert_close(share, 1.0, 1e-12);
        }
    }
}
