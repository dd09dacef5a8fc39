/*!
Experiment read-outs: what each treatment of a Split flag did to what people did next, from the
impressions (who saw which treatment) and the Segment `track` events (what they did) the store
holds. Pure: the store-backed caller (`query::experiments`) feeds it rows; nothing here does I/O.

The definitions, which the README repeats for users:
- A **unit** is an impression `key`. Its **exposure** is its first impression of the split in the
  window (`from` inclusive, `to` exclusive, optionally one `splitVersionNumber`); its treatment is
  that impression's. A unit seen with two or more treatments is a **multiple exposure**: counted
  in `units`, left out of every metric and of the sample-ratio test.
- A unit's **events** are the `track` events whose `userId` or `anonymousId` is the same person
  as its key ([`Links::person_ids`], the identity graph of `/api/user`), with
  `firstExposure ≤ timestamp ≤ firstExposure + window` (no window: `timestamp < to`, or no
  bound). Segment events carry no environment, so they count wherever the unit was exposed.
- A unit's **value** for a metric: `conversion` 1 if it has an event of that name, else 0;
  `count` how many; `sum` the sum of a numeric property (missing or not a JSON number adds 0
  and is counted in `nonNumeric`).
- The statistics of each treatment against the control are in [`stats`].

A **breakdown** (`by=label` or `by=version`) repeats the analysis for the exposures of each
targeting rule or flag version on their own: a unit's exposure in a segment is its first
impression there, so a unit seen under two rules is in both segments.

Why the join is here and not in SQL: the identity rule (aliases followed only through userIds,
a shared device belonging to each of its users) is a graph search that neither backend does
in one pass, and exact variances need the per-unit values. So the store aggregates what it can
in one pass over each table (exposures per unit, the links, the metric events with their
property already extracted) and this module joins them in memory: O(units + links) memory, one
pass over the events.
*/

pub mod stats;

use std::collections::BTreeMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::attribution::Links;
use stats::{Comparison, Moments};

/// Maps keyed by unit keys and ids: a read-out hashes a million of them several times, and
/// foldhash, seeded per map, is several times faster than SipHash at it.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The share of multiple exposures above which a read-out warns.
pub const MULTIPLE_EXPOSURE_WARNING: f64 = 0.01;

/// The SRM p-value below which a read-out warns (GrowthBook's, Eppo's and Split's threshold).
pub const SRM_WARNING: f64 = 0.001;

/// The `[experiments]` configuration section: what one read-out may cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExperimentSettings {
    /// Most units (exposed keys, once more per breakdown segment they are in) one read-out holds.
    pub max_units: usize,
    /// Most identity links (userId/anonymousId pairs and aliases) one read-out reads.
    pub max_links: usize,
}

impl Default for ExperimentSettings {
    fn default() -> Self {
        // A read-out allocates about 360 bytes a unit (BENCHMARKS.md): some 1.8 GB at the bound.
        ExperimentSettings { max_units: 5_000_000, max_links: 10_000_000 }
    }
}

/// How a metric turns a unit's events into its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measure {
    /// 1 if the unit has one such event, else 0.
    Conversion,
    /// The number of such events.
    Count,
    /// The sum of this property of the events (a path under `properties`).
    Sum(Vec<String>),
}

/// One metric of a read-out, as asked for (`conversion:Signed Up`, `sum:Order Completed:revenue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    /// The metric as written.
    pub spec: String,
    /// The `track` event's name.
    pub event: String,
    /// What is measured.
    pub measure: Measure,
}

const METRIC_FORMS: &str = "use conversion:EVENT, count:EVENT or sum:EVENT:PROPERTY (e.g. sum:Order Completed:revenue)";

impl Metric {
    /// Reads `conversion:EVENT`, `count:EVENT` or `sum:EVENT:PATH` (the path under
    /// `properties`, dot-separated; the event name may hold colons, the path may not).
    pub fn parse(spec: &str) -> Result<Metric, String> {
        let bad = |why: &str| format!("`{spec}` {why}; {METRIC_FORMS}");
        let (kind, rest) = spec.split_once(':').ok_or_else(|| bad("is not a metric"))?;
        let (event, measure) = match kind {
            "conversion" => (rest, Measure::Conversion),
            "count" => (rest, Measure::Count),
            "sum" => {
                let (event, path) = rest.rsplit_once(':').ok_or_else(|| bad("names no property to sum"))?;
                let path: Vec<String> = path.split('.').map(str::to_owned).collect();
                // The path is bound into a JSON path on SQLite and a text[] on PostgreSQL: quotes,
                // backslashes and braces would need escaping in one or the other.
                if path.iter().any(|p| p.is_empty() || p.chars().any(|c| "\"\\{},".contains(c) || c.is_control())) {
                    return Err(bad("has a property path with an empty part or one of \" \\ { } ,"));
                }
                // PostgreSQL's paths read a number as an array index, SQLite's as a key: the two
                // stores would sum different values.
                if path.iter().any(|p| p.trim_start_matches('-').bytes().all(|b| b.is_ascii_digit())) {
                    return Err(bad("has a number in its property path; array elements cannot be summed"));
                }
                (event, Measure::Sum(path))
            }
            _ => return Err(bad(&format!("is of unknown kind `{kind}`"))),
        };
        if event.is_empty() {
            return Err(bad("names no event"));
        }
        Ok(Metric { spec: spec.to_owned(), event: event.to_owned(), measure })
    }
}

/// Which segments a breakdown splits the exposures into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// The targeting rule (`label`) of the impressions.
    Label,
    /// The flag version (`splitVersionNumber`) of the impressions.
    Version,
}

impl By {
    /// The parameter value naming it.
    pub fn name(self) -> &'static str {
        match self {
            By::Label => "label",
            By::Version => "version",
        }
    }
}

/// The choices of a read-out that are not filters of the data.
#[derive(Debug, Clone, PartialEq)]
pub struct Design {
    /// The control treatment; `None`: `control`, else `off`, else the one with most units.
    pub control: Option<String>,
    /// The expected traffic split, in the treatments' byte order; `None`: equal.
    pub weights: Option<Vec<f64>>,
    /// The significance level of the confidence intervals.
    pub alpha: f64,
    /// How long after its first exposure a unit's events count, in milliseconds.
    pub window_ms: Option<i64>,
    /// The end of the exposure window (exclusive): without `window_ms`, events count until it.
    pub to: Option<i64>,
}

/// A treatment or "several" for a unit exposed to more than one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Assigned {
    One(u32),
    Several,
}

/// One unit in one group (group 0: every exposure; the others: a breakdown's segments).
#[derive(Debug)]
struct Unit {
    key: Rc<str>,
    group: u32,
    first: i64,
    assigned: Assigned,
}

/// A breakdown segment's value: a label, a version number, or none (`null`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(untagged)]
pub enum Segment {
    /// Impressions without the field.
    None,
    /// A version number.
    Number(i64),
    /// A label.
    Text(String),
}

/// The exposures of a read-out as the store gives them, then the events joined to them.
#[derive(Debug)]
pub struct Readout {
    metrics: Vec<Metric>,
    treatments: Vec<String>,
    treatment_ids: HashMap<String, u32>,
    units: Vec<Unit>,
    /// Key → its unit in each group it is in.
    by_key: HashMap<Rc<str>, Vec<u32>>,
    segments: BTreeMap<Segment, u32>,
    breakdown: Option<By>,
    max_units: usize,
    /// Id → the units (with a single treatment) whose person it is but whose key it is not
    /// (those are in `by_key`); built by [`Readout::join`].
    by_linked_id: HashMap<Box<str>, Vec<u32>>,
    /// Per metric, per unit: the value so far.
    values: Vec<Vec<f64>>,
    /// Per metric, per group: events counted whose summed property was not a number.
    non_numeric: Vec<Vec<u64>>,
    truncated_people: u64,
}

/// More units than a read-out may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the read-out has more than {max} units; narrow it with from/to or version, or raise experiments.max_units")]
pub struct TooManyUnits {
    /// The bound.
    pub max: usize,
}

impl Readout {
    /// An empty read-out of `metrics`, split by `breakdown`, holding at most `max_units` units.
    pub fn new(metrics: Vec<Metric>, breakdown: Option<By>, max_units: usize) -> Readout {
        Readout {
            values: vec![Vec::new(); metrics.len()],
            non_numeric: vec![Vec::new(); metrics.len()],
            metrics,
            treatments: Vec::new(),
            treatment_ids: HashMap::default(),
            units: Vec::new(),
            by_key: HashMap::default(),
            segments: BTreeMap::new(),
            breakdown,
            max_units,
            by_linked_id: HashMap::default(),
            truncated_people: 0,
        }
    }

    /// The metrics, in the order asked.
    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    /// Adds the exposures of `key` in `segment` (ignored without a breakdown): the first at
    /// `first`, with treatments from `min_treatment` to `max_treatment` (equal: one treatment).
    /// Each (key, segment) comes once.
    pub fn add_exposure(
        &mut self,
        key: &str,
        segment: Segment,
        first: i64,
        min_treatment: &str,
        max_treatment: &str,
    ) -> Result<(), TooManyUnits> {
        let assigned = if min_treatment == max_treatment {
            Assigned::One(self.treatment_id(min_treatment))
        } else {
            Assigned::Several
        };
        if min_treatment != max_treatment {
            // Both still name treatments that were seen.
            self.treatment_id(min_treatment);
            self.treatment_id(max_treatment);
        }
        let entry = self.by_key.get(key);
        let (key, top) = match entry {
            Some(units) => (self.units[units[0] as usize].key.clone(), Some(units[0])),
            None => (Rc::from(key), None),
        };
        match top {
            Some(top) => {
                let unit = &mut self.units[top as usize];
                unit.first = unit.first.min(first);
                if unit.assigned != assigned {
                    unit.assigned = Assigned::Several;
                }
            }
            None => self.push_unit(key.clone(), 0, first, assigned)?,
        }
        if self.breakdown.is_some() {
            let next = self.segments.len() as u32 + 1;
            let group = *self.segments.entry(segment).or_insert(next);
            self.push_unit(key, group, first, assigned)?;
        }
        Ok(())
    }

    fn push_unit(&mut self, key: Rc<str>, group: u32, first: i64, assigned: Assigned) -> Result<(), TooManyUnits> {
        if self.units.len() >= self.max_units {
            return Err(TooManyUnits { max: self.max_units });
        }
        self.by_key.entry(key.clone()).or_default().push(self.units.len() as u32);
        self.units.push(Unit { key, group, first, assigned });
        Ok(())
    }

    fn treatment_id(&mut self, name: &str) -> u32 {
        if let Some(id) = self.treatment_ids.get(name) {
            return *id;
        }
        let id = self.treatments.len() as u32;
        self.treatments.push(name.to_owned());
        self.treatment_ids.insert(name.to_owned(), id);
        id
    }

    /// No unit at all.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// The earliest first exposure and the latest, of any unit: the events worth reading lie
    /// between the first and the last plus the window.
    pub fn exposure_span(&self) -> Option<(i64, i64)> {
        let first = self.units.iter().map(|u| u.first).min()?;
        let last = self.units.iter().map(|u| u.first).max()?;
        Some((first, last))
    }

    /// Joins units to ids: each unit with a single treatment is reachable from every id of its
    /// person (at most `max_ids` of them; a unit cut there is counted in `truncatedPeople`).
    /// A key no link names is its person's only id: `by_key` already finds its units, so only
    /// linked keys cost a search.
    pub fn join(&mut self, links: &Links, max_ids: usize) {
        let mut by_linked_id: HashMap<Box<str>, Vec<u32>> = HashMap::default();
        let mut truncated = 0;
        for (key, units) in &self.by_key {
            if !links.is_linked(key) {
                continue;
            }
            let units: Vec<u32> = units
                .iter()
                .copied()
                .filter(|u| matches!(self.units[*u as usize].assigned, Assigned::One(_)))
                .collect();
            if units.is_empty() {
                continue;
            }
            let (ids, cut) = links.person_ids(key, max_ids);
            truncated += u64::from(cut);
            for id in ids.into_iter().filter(|id| id.as_str() != &**key) {
                by_linked_id.entry(id.into_boxed_str()).or_default().extend(&units);
            }
        }
        self.by_linked_id = by_linked_id;
        self.truncated_people = truncated;
        for values in &mut self.values {
            *values = vec![0.0; self.units.len()];
        }
        for counts in &mut self.non_numeric {
            *counts = vec![0; self.segments.len() + 1];
        }
    }

    /// Adds one `track` event to the units it belongs to: those of its `user_id` or
    /// `anonymous_id` whose window holds `timestamp`, for each of `metrics` (a metric's index and,
    /// for a `sum`, the event's property: `None` when missing or not a number).
    pub fn add_event(
        &mut self,
        user_id: Option<&str>,
        anonymous_id: Option<&str>,
        timestamp: i64,
        metrics: &[(usize, Option<f64>)],
        design: &Design,
    ) {
        let mut units: Vec<u32> = Vec::new();
        for id in [user_id, anonymous_id].into_iter().flatten() {
            if let Some(keyed) = self.by_key.get(id) {
                let single = |u: &&u32| matches!(self.units[**u as usize].assigned, Assigned::One(_));
                units.extend(keyed.iter().filter(single));
            }
            if let Some(linked) = self.by_linked_id.get(id) {
                units.extend(linked);
            }
        }
        if units.is_empty() {
            return;
        }
        // An event carrying two ids of one person counts once for it.
        units.sort_unstable();
        units.dedup();
        // The groups the event counted in: a non-numeric value is counted once in each.
        let mut groups: Vec<u32> = Vec::new();
        for unit in units {
            let first = self.units[unit as usize].first;
            let within = timestamp >= first
                && match (design.window_ms, design.to) {
                    (Some(window), _) => timestamp <= first.saturating_add(window),
                    (None, Some(to)) => timestamp < to,
                    (None, None) => true,
                };
            if !within {
                continue;
            }
            groups.push(self.units[unit as usize].group);
            for (metric, value) in metrics {
                let slot = &mut self.values[*metric][unit as usize];
                match self.metrics[*metric].measure {
                    Measure::Conversion => *slot = 1.0,
                    Measure::Count => *slot += 1.0,
                    Measure::Sum(_) => *slot += value.unwrap_or(0.0),
                }
            }
        }
        groups.sort_unstable();
        groups.dedup();
        for (metric, value) in metrics {
            if value.is_none() && matches!(self.metrics[*metric].measure, Measure::Sum(_)) {
                for group in &groups {
                    self.non_numeric[*metric][*group as usize] += 1;
                }
            }
        }
    }

    /// The treatments seen, in byte order.
    pub fn treatments(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.treatments.iter().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Computes the read-out: per group, the units, the multiple exposures, the sample-ratio
    /// test and each metric's statistics against the control.
    pub fn finish(&self, design: &Design) -> Result<Analysis, DesignError> {
        let names = self.treatments();
        let order: Vec<u32> = names.iter().map(|n| self.treatment_ids[*n]).collect();
        let weights = match &design.weights {
            None => vec![1.0; names.len()],
            Some(w) if w.len() == names.len() => w.clone(),
            Some(w) => {
                return Err(DesignError::Weights(format!(
                    "{} weights given for {} treatments ({}); give one per treatment in this order",
                    w.len(),
                    names.len(),
                    names.join(", ")
                )));
            }
        };
        let groups = self.segments.len() + 1;
        // Per group, per treatment id: the units with that single treatment.
        let mut members: Vec<Vec<Vec<u32>>> = vec![vec![Vec::new(); self.treatments.len()]; groups];
        let mut all = vec![0u64; groups];
        let mut several = vec![0u64; groups];
        for (i, unit) in self.units.iter().enumerate() {
            let g = unit.group as usize;
            all[g] += 1;
            match unit.assigned {
                Assigned::One(t) => members[g][t as usize].push(i as u32),
                Assigned::Several => several[g] += 1,
            }
        }
        let control = self.control(design, &names, &members[0])?;
        let group = |g: usize| -> Group {
            self.group(g, design, &names, &order, &members[g], control, &weights, all[g], several[g])
        };
        let breakdown = self.breakdown.map(|by| Breakdown {
            by: by.name(),
            segments: self
                .segments
                .iter()
                .map(|(value, g)| SegmentAnalysis { value: value.clone(), analysis: group(*g as usize) })
                .collect(),
        });
        Ok(Analysis {
            control: self.treatments[control as usize].clone(),
            top: group(0),
            breakdown,
            truncated_people: self.truncated_people,
        })
    }

    /// The control: the one asked for, else `control`, else `off`, else the treatment with
    /// most units (ties: the first name in byte order).
    fn control(&self, design: &Design, names: &[&str], members: &[Vec<u32>]) -> Result<u32, DesignError> {
        if let Some(asked) = &design.control {
            return self.treatment_ids.get(asked).copied().ok_or_else(|| {
                DesignError::Control(format!(
                    "`{asked}` is not a treatment of this read-out; its treatments are {}",
                    names.join(", ")
                ))
            });
        }
        for default in ["control", "off"] {
            if let Some(id) = self.treatment_ids.get(default) {
                return Ok(*id);
            }
        }
        let mut best: Option<(u32, usize)> = None;
        for name in names {
            let id = self.treatment_ids[*name];
            let n = members[id as usize].len();
            if best.is_none_or(|(_, most)| n > most) {
                best = Some((id, n));
            }
        }
        best.map(|(id, _)| id).ok_or_else(|| DesignError::Control("the read-out has no treatments".into()))
    }

    #[allow(clippy::too_many_arguments)]
    fn group(
        &self,
        g: usize,
        design: &Design,
        names: &[&str],
        order: &[u32],
        members: &[Vec<u32>],
        control: u32,
        weights: &[f64],
        units: u64,
        several: u64,
    ) -> Group {
        // The SRM test's counts: single exposures per treatment, in the treatments' order.
        let counts: Vec<u64> = order.iter().map(|t| members[*t as usize].len() as u64).collect();
        let share = if units == 0 { 0.0 } else { several as f64 / units as f64 };
        let srm = stats::srm_p_value(&counts, weights);
        let total_weight: f64 = weights.iter().sum();
        let metrics = self
            .metrics
            .iter()
            .enumerate()
            .map(|(m, metric)| {
                let moments = |t: u32| -> (f64, Moments) {
                    let values: Vec<f64> = members[t as usize].iter().map(|u| self.values[m][*u as usize]).collect();
                    // From +0.0: `Sum` for floats starts at -0.0, which no treatment's total is.
                    (values.iter().fold(0.0, |sum, v| sum + v), Moments::of(&values))
                };
                let (_, control_moments) = moments(control);
                let treatments = order
                    .iter()
                    .zip(names)
                    .map(|(t, name)| {
                        let (total, moments) = moments(*t);
                        let finite = |x: f64| Some(x).filter(|x| x.is_finite());
                        let comparison =
                            (*t != control).then(|| stats::compare(&moments, &control_moments, design.alpha));
                        let (total, mean, variance) = (
                            finite(total),
                            finite(moments.mean).filter(|_| moments.n > 0),
                            finite(moments.variance).filter(|_| moments.n > 1),
                        );
                        // Sums past f64's range: null, never infinity or NaN (the comparison, if
                        // any, says so in its own reason).
                        let overflowed = total.is_none() || (moments.n > 1 && variance.is_none());
                        TreatmentResult {
                            treatment: (*name).to_owned(),
                            units: moments.n,
                            total,
                            mean,
                            variance,
                            reason: (overflowed && comparison.is_none()).then_some(stats::NOT_FINITE),
                            comparison,
                        }
                    })
                    .collect();
                MetricResult {
                    metric: metric.spec.clone(),
                    treatments,
                    non_numeric: matches!(metric.measure, Measure::Sum(_))
                        .then(|| self.non_numeric[m].get(g).copied().unwrap_or(0)),
                }
            })
            .collect();
        Group {
            units,
            multiple_exposures: MultipleExposures { units: several, share, warning: share > MULTIPLE_EXPOSURE_WARNING },
            srm: Srm {
                p_value: srm,
                weights: names.iter().zip(weights).map(|(n, w)| ((*n).to_owned(), w / total_weight)).collect(),
                warning: srm.is_some_and(|p| p < SRM_WARNING),
                reason: srm.is_none().then_some(if names.len() < 2 {
                    "fewer than 2 treatments"
                } else if counts.iter().all(|n| *n == 0) {
                    "no unit has a single treatment"
                } else {
                    "the test is not a finite number for these units and weights"
                }),
            },
            metrics,
        }
    }
}

/// A choice of the read-out that does not fit the data (a 400 naming the parameter).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DesignError {
    /// `control` names no treatment.
    #[error("{0}")]
    Control(String),
    /// `weights` does not give one weight per treatment.
    #[error("{0}")]
    Weights(String),
}

impl DesignError {
    /// The parameter at fault.
    pub fn param(&self) -> &'static str {
        match self {
            DesignError::Control(_) => "control",
            DesignError::Weights(_) => "weights",
        }
    }
}

/// What [`Readout::finish`] computes: the whole read-out and its breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// The control treatment.
    pub control: String,
    /// Every exposure.
    #[serde(flatten)]
    pub top: Group,
    /// Each segment on its own, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<Breakdown>,
    /// Units whose person had more ids than `attribution.max_cluster_ids` (the rest not joined).
    #[serde(skip_serializing_if = "is_zero")]
    pub truncated_people: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The analysis of one group of exposures.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// Every exposed unit, multiple exposures included.
    pub units: u64,
    /// Units seen with two or more treatments.
    pub multiple_exposures: MultipleExposures,
    /// The sample-ratio test.
    pub srm: Srm,
    /// One per metric, in the order asked.
    pub metrics: Vec<MetricResult>,
}

/// Units seen with more than one treatment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MultipleExposures {
    /// How many.
    pub units: u64,
    /// Their share of all units.
    pub share: f64,
    /// The share is over 1%.
    pub warning: bool,
}

/// The sample-ratio-mismatch test.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Srm {
    /// Pearson chi-square p-value; null with a reason when undefined.
    pub p_value: Option<f64>,
    /// The expected share of each treatment.
    pub weights: BTreeMap<String, f64>,
    /// p < 0.001.
    pub warning: bool,
    /// Why `pValue` is null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// One metric's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricResult {
    /// The metric as asked for.
    pub metric: String,
    /// One per treatment, in byte order of their names.
    pub treatments: Vec<TreatmentResult>,
    /// For a `sum`: events counted whose property was missing or not a number (each added 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub non_numeric: Option<u64>,
}

/// One treatment's values of a metric, and (but for the control) how they compare.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TreatmentResult {
    /// The treatment.
    pub treatment: String,
    /// Units with this treatment only.
    pub units: u64,
    /// The sum of their values; null past f64's range.
    pub total: Option<f64>,
    /// The mean value; null without units.
    pub mean: Option<f64>,
    /// The sample variance (n − 1); null with fewer than 2 units.
    pub variance: Option<f64>,
    /// Against the control; absent for the control itself.
    #[serde(flatten)]
    pub comparison: Option<Comparison>,
    /// For the control (whose row has no comparison and so no reason of its own): why `total`,
    /// `mean` or `variance` is null though it has units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// The segments of a breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breakdown {
    /// `label` or `version`.
    pub by: &'static str,
    /// One per value seen, nulls first.
    pub segments: Vec<SegmentAnalysis>,
}

/// One segment of a breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentAnalysis {
    /// The label or version.
    pub value: Segment,
    /// Its exposures' analysis.
    #[serde(flatten)]
    pub analysis: Group,
}

#[cfg(test)]
mod tests;
