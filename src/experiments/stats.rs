//! Statistics of an A/B experiment read-out: pure functions over per-treatment moments.
//!
//! A treatment is compared with the control by Welch's unequal-variance t procedure, the one
//! `scipy.stats.ttest_ind(t, c, equal_var=False)` runs, because arms of an experiment rarely share a
//! variance and are rarely of equal size:
//!
//! - `absolute = mean_t − mean_c`, interval `absolute ± q·√(v_t/n_t + v_c/n_c)`;
//! - `relative = (mean_t − mean_c)/|mean_c|`, interval `relative ± q·se_rel` with the delta-method
//!   `se_rel² = v_t/(n_t·mean_c²) + mean_t²·v_c/(n_c·mean_c⁴)`;
//! - `q` is the upper `alpha/2` quantile of Student's t at the Welch–Satterthwaite degrees of freedom
//!   `df = (v_t/n_t + v_c/n_c)² / ((v_t/n_t)²/(n_t − 1) + (v_c/n_c)²/(n_c − 1))`;
//! - the p-value is `2·sf(|absolute|/√(v_t/n_t + v_c/n_c), df)`;
//! - the chance to beat the control is `Φ(relative/se_rel)`, the normal approximation of the lift.
//!
//! The sample-ratio-mismatch check is Pearson's chi-square of the units per treatment against the planned
//! split, with `k − 1` degrees of freedom, as `scipy.stats.chisquare`.
//!
//! Every probability is computed from a survival function, never as `1 − cdf`, so that a p-value of 1e-30
//! keeps its relative precision instead of rounding to 0. The Student-t tail is the regularized incomplete
//! beta `sf(t, ν) = ½·I_x(ν/2, ½)` with `x = ν/(ν + t²)`. statrs's incomplete beta cannot be used for it: it
//! stops its continued fraction after 140 terms, which does not converge once `ν/2` is in the thousands,
//! and it takes `ln Γ(a + b) − ln Γ(a) − ln Γ(b)`, which cancels to about 1e-6 relative when `a` is 1e9.
//! Since `b = ½` here, this module evaluates `I_x(a, ½)` the way Didonato & Morris's TOMS 708 (the algorithm
//! behind R's `pt` and SciPy's `betainc`) does for these parameters: the power series in `x` when `x ≤ 0.71`,
//! the series of the complement in `1 − x` near `t = 0`, and otherwise the asymptotic expansion for large
//! `a` (BGRAT: an erfc term plus corrections in powers of 1/a, exact in the limit, so it keeps full precision
//! for any `ν` up to 1e9 and beyond), reached for small `a` by adding the first 20 terms of the recurrence
//! `I_x(a, b) = I_x(a + 1, b) + x^a·(1 − x)^b/(a·B(a, b))`. All of these need only `Γ(a + ½)/Γ(a)`, taken from
//! the difference of Stirling series so that it too stays exact for huge `a`. The quantile solves
//! `sf(t) = p` by Newton's method on `ln sf` against `ln t`, which is nearly linear in both tails, kept inside
//! a bracket. The chi-square tail for integer degrees of freedom is a finite Poisson sum (plus an erfc term
//! for odd degrees), exact term by term (statrs's `gamma_ur` is as good for a few degrees of freedom but is
//! off by 2e-12 at 1e4 and 1e-11 at 1e5). statrs's `erfc` (0.19.1) is off by up to 1e-10, its interval
//! constants being rounded to 10 digits, so erfc is computed here as well: a positive power series below
//! 0.75, Laplace's continued fraction above, with `e^(−x²)` taken from an exactly split `x²`. Against mpmath
//! at 40 digits the Student-t tail and quantile, the chi-square tail and Φ are within 3e-13 relative down to
//! 1e-300.
//!
//! A statistic that is undefined is `None`, with the first applicable reason in [`Comparison::reason`],
//! never NaN or infinity.

use serde::Serialize;
use statrs::function::erf::erfc_inv;
use std::f64::consts::{FRAC_1_SQRT_2, PI, SQRT_2};

/// One treatment's per-unit values, summarised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    /// Number of units.
    pub n: u64,
    /// Mean value per unit (0 when `n` is 0).
    pub mean: f64,
    /// Sample variance (n − 1); 0 when n < 2.
    pub variance: f64,
}

impl Moments {
    /// Exact two-pass moments of `values` (mean, then the sum of squared deviations), as numpy/scipy compute them.
    pub fn of(values: &[f64]) -> Moments {
        Moments::with_zeros(values, 0)
    }

    /// Moments of `nonzero` values plus `zeros` further units whose value is 0, as [`Moments::of`] on all of them.
    pub fn with_zeros(nonzero: &[f64], zeros: u64) -> Moments {
        let n = nonzero.len() as u64 + zeros;
        if n == 0 {
            return Moments { n, mean: 0.0, variance: 0.0 };
        }
        // Compensated sums make the result independent of how many zeros were folded in, and closer to the
        // exact value than numpy's pairwise sum, which it then matches to rounding.
        let mean = compensated_sum(nonzero.iter().copied()) / n as f64;
        let variance = if n < 2 {
            0.0
        } else {
            let squares = nonzero.iter().map(|x| (x - mean) * (x - mean));
            compensated_sum(squares.chain([zeros as f64 * mean * mean])) / (n - 1) as f64
        };
        Moments { n, mean, variance }
    }
}

/// Neumaier's compensated sum.
fn compensated_sum(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut compensation) = (0.0_f64, 0.0_f64);
    for value in values {
        let next = sum + value;
        compensation += if sum.abs() >= value.abs() { (sum - next) + value } else { (value - next) + sum };
        sum = next;
    }
    sum + compensation
}

/// An estimate with its confidence interval (`ci` null when undefined, see `reason` on Comparison).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// The point estimate.
    pub estimate: f64,
    /// The two-sided `1 − alpha` confidence interval, lower bound first.
    pub ci: Option<[f64; 2]>,
}

/// A treatment against the control.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    /// Difference of the means, treatment minus control.
    pub absolute: Option<Estimate>,
    /// Difference of the means as a fraction of the control mean's magnitude.
    pub relative: Option<Estimate>,
    /// Two-sided p-value of Welch's t-test.
    pub p_value: Option<f64>,
    /// Probability that the treatment mean exceeds the control's, by the normal approximation of the lift.
    pub chance_to_beat_control: Option<f64>,
    /// Why some statistic above is null; absent when all are defined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// Reason given when either arm has fewer than 2 units.
pub const FEWER_THAN_TWO_UNITS: &str = "a treatment has fewer than 2 units";
/// Reason given when the control mean is exactly 0.
pub const CONTROL_MEAN_ZERO: &str = "the control mean is 0";
/// Reason given when neither arm varies.
pub const ZERO_VARIANCE: &str = "both treatments have zero variance";
/// Reason given when an input or a result is NaN or overflows.
pub const NOT_FINITE: &str = "a statistic is not a finite number";

/// Compares a treatment with the control at significance `alpha` (0 < alpha < 1).
///
/// With fewer than 2 units in an arm there is no variance, so only the raw difference of the means is given
/// (when both arms have a unit at all): it is what was observed, while a ratio or interval would only
/// suggest a precision that is not there.
pub fn compare(treatment: &Moments, control: &Moments, alpha: f64) -> Comparison {
    let (t, c) = (treatment, control);
    let difference = t.mean - c.mean;
    let mut finite = Finite::default();
    if t.n < 2 || c.n < 2 {
        let absolute = if t.n > 0 && c.n > 0 { finite.estimate(difference, None) } else { None };
        return finite.comparison(absolute, None, None, None, Some(FEWER_THAN_TWO_UNITS));
    }
    // Squared standard errors of each arm's mean.
    let (se2_t, se2_c) = (t.variance / t.n as f64, c.variance / c.n as f64);
    let se2 = se2_t + se2_c;
    let control_mean_zero = c.mean == 0.0;
    let relative = (!control_mean_zero).then(|| difference / c.mean.abs());
    if se2 == 0.0 {
        let reason = if control_mean_zero { CONTROL_MEAN_ZERO } else { ZERO_VARIANCE };
        let absolute = finite.estimate(difference, None);
        let relative = relative.and_then(|r| finite.estimate(r, None));
        return finite.comparison(absolute, relative, None, None, Some(reason));
    }
    // Dividing by the total before squaring keeps df finite when the variances are near the ends of the f64
    // range; it is the same quantity as scipy's up to rounding.
    let (w_t, w_c) = (se2_t / se2, se2_c / se2);
    let df = 1.0 / (w_t * w_t / (t.n - 1) as f64 + w_c * w_c / (c.n - 1) as f64);
    let q = student_t_isf(0.5 * alpha, df);
    let se = se2.sqrt();
    let absolute = finite.estimate(difference, Some([difference - q * se, difference + q * se]));
    let p_value = finite.keep(2.0 * student_t_sf((difference / se).abs(), df));
    let (relative, chance) = match relative {
        Some(r) => {
            // The delta-method variance written around mean_t/mean_c, so that mean_c⁴ cannot overflow.
            let ratio = t.mean / c.mean;
            let se_rel = (se2_t + ratio * ratio * se2_c).sqrt() / c.mean.abs();
            // se_rel is 0 only when the treatment is constant at 0; the lift is then certain and Φ(±∞) is exact.
            let chance = finite.keep(normal_cdf(r / se_rel));
            (finite.estimate(r, Some([r - q * se_rel, r + q * se_rel])), chance)
        }
        None => (None, None),
    };
    let reason = control_mean_zero.then_some(CONTROL_MEAN_ZERO);
    finite.comparison(absolute, relative, p_value, chance, reason)
}

/// Drops non-finite values, remembering that it did so that the comparison can say why.
#[derive(Default)]
struct Finite {
    dropped: bool,
}

impl Finite {
    fn keep(&mut self, value: f64) -> Option<f64> {
        self.dropped |= !value.is_finite();
        value.is_finite().then_some(value)
    }

    fn estimate(&mut self, estimate: f64, ci: Option<[f64; 2]>) -> Option<Estimate> {
        let estimate = self.keep(estimate)?;
        let ci = ci.and_then(|[low, high]| Some([self.keep(low)?, self.keep(high)?]));
        Some(Estimate { estimate, ci })
    }

    fn comparison(
        self,
        absolute: Option<Estimate>,
        relative: Option<Estimate>,
        p_value: Option<f64>,
        chance_to_beat_control: Option<f64>,
        reason: Option<&'static str>,
    ) -> Comparison {
        let reason = reason.or(self.dropped.then_some(NOT_FINITE));
        Comparison { absolute, relative, p_value, chance_to_beat_control, reason }
    }
}

/// Sample-ratio-mismatch p-value: Pearson chi-square of `units` per treatment against the expected split
/// `weights`, as `scipy.stats.chisquare(units, f_exp=sum(units)*w/sum(w)).pvalue`.
///
/// None when there are fewer than 2 treatments or no units at all, and (rather than panic) when the lengths
/// differ or a weight is not a positive finite number.
pub fn srm_p_value(units: &[u64], weights: &[f64]) -> Option<f64> {
    let k = units.len();
    if k < 2 || weights.len() != k || !weights.iter().all(|w| w.is_finite() && *w > 0.0) {
        return None;
    }
    let total: f64 = units.iter().map(|&u| u as f64).sum();
    if total == 0.0 {
        return None;
    }
    let weight_total: f64 = weights.iter().sum();
    let statistic: f64 = units
        .iter()
        .zip(weights)
        .map(|(&observed, &weight)| {
            let expected = total * weight / weight_total;
            (observed as f64 - expected).powi(2) / expected
        })
        .sum();
    Some(chi2_sf(statistic, k as u64 - 1)).filter(|p| p.is_finite())
}

/// Standard normal cdf Φ(x), accurate in relative terms far into both tails.
pub(crate) fn normal_cdf(x: f64) -> f64 {
    let u = -x * FRAC_1_SQRT_2;
    if u < CONTINUED_FRACTION_FROM {
        return 0.5 * erfc(u);
    }
    // In the lower tail take e^(−x²/2) from x itself: e^(−u²) would carry the rounding of x/√2, an error of
    // u² ulps (700 at Φ = 1e-300).
    0.5 * exp_minus_square(x, 0.5) * erfcx(u)
}

/// Where [`erfcx`] switches from the power series to the continued fraction, which converges in 350 steps there.
const CONTINUED_FRACTION_FROM: f64 = 0.75;

/// The complementary error function.
///
/// statrs's `erfc` (0.19) carries constants rounded to 10 digits and is off by up to 1e-10 relative.
fn erfc(x: f64) -> f64 {
    if x < 0.0 {
        2.0 - erfc(-x)
    } else if x < CONTINUED_FRACTION_FROM {
        1.0 - erf_series(x)
    } else {
        exp_minus_square(x, 1.0) * erfcx(x)
    }
}

/// The scaled complementary error function `e^(x²)·erfc(x)` for x ≥ 0, which does not underflow.
fn erfcx(x: f64) -> f64 {
    if x < CONTINUED_FRACTION_FROM {
        return (x * x).exp() * (1.0 - erf_series(x));
    }
    if x > 1e8 {
        // The continued fraction's first term; the next is below 1e-16 relative (and this handles infinity).
        return 1.0 / (x * PI.sqrt());
    }
    // Laplace's continued fraction √π·e^(x²)·erfc(x) = 1/(x + (1/2)/(x + (2/2)/(x + (3/2)/(x + …)))), by
    // Lentz's method; every partial denominator is positive, so no step can divide by zero.
    let (mut f, mut c, mut d) = (x, x, 0.0);
    for n in 1..1000 {
        let a = 0.5 * f64::from(n);
        d = 1.0 / (x + a * d);
        c = x + a / c;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() <= f64::EPSILON {
            break;
        }
    }
    1.0 / (f * PI.sqrt())
}

/// erf(x) for 0 ≤ x < 0.75 by the series `2x/√π·e^(−x²)·Σ (2x²)^n/(1·3·…·(2n + 1))`, whose terms are positive.
fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let (mut sum, mut term) = (1.0, 1.0);
    for n in 1..100 {
        term *= 2.0 * x2 / f64::from(2 * n + 1);
        sum += term;
        if term <= f64::EPSILON * 0.25 * sum {
            break;
        }
    }
    2.0 * x / PI.sqrt() * (-x2).exp() * sum
}

/// `e^(−c·x²)` for `c` a power of two, with x² carried in two parts so that its rounding does not become an
/// error of x²·ε in the result.
fn exp_minus_square(x: f64, c: f64) -> f64 {
    let square = x * x;
    if square == f64::INFINITY {
        // The split below would be ∞ − ∞; the true value is 0 however x overflowed.
        return 0.0;
    }
    let rounding = x.mul_add(x, -square);
    (-c * square).exp() * (-c * rounding).exp()
}

/// Chi-square survival function with `k` degrees of freedom.
///
/// For integer `k` the tail is a finite Poisson sum, `e^(−h)·Σ_{j<k/2} h^j/j!` with `h = x/2`, and for odd
/// `k` an `erfc(√h)` term plus the same sum over half-integer powers: every term is positive, so the sum is
/// exact to rounding in either tail. Its terms are formed in log space from the largest one so that `e^(−h)`
/// cannot underflow while the sum is still representable.
pub(crate) fn chi2_sf(x: f64, k: u64) -> f64 {
    if x.is_nan() || k == 0 {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 1.0;
    }
    let h = 0.5 * x;
    // Exponents j + offset of the Poisson terms: 0, 1, … for even k; ½, 3/2, … for odd k.
    // erfc(√h) as e^(−h)·erfcx(√h) takes the exponential from h itself rather than from a rounded √h.
    let (offset, terms, base) =
        if k.is_multiple_of(2) { (0.0, k / 2, 0.0) } else { (0.5, (k - 1) / 2, (-h).exp() * erfcx(h.sqrt())) };
    if terms == 0 {
        return base;
    }
    // The term h^e·e^(−h)/Γ(e + 1) peaks at e ≈ h; start there and walk down and up by the ratio of neighbours.
    let last = terms - 1;
    let peak = (h - offset).clamp(0.0, last as f64).floor() as u64;
    let ln_peak = ln_poisson_term(peak as f64 + offset, h);
    let mut sum = 1.0;
    let mut term = 1.0;
    for j in (0..peak).rev() {
        term *= (j as f64 + offset + 1.0) / h;
        sum += term;
        if term < f64::EPSILON * 1e-3 * sum {
            break;
        }
    }
    term = 1.0;
    for j in peak + 1..=last {
        term *= h / (j as f64 + offset);
        sum += term;
        if term < f64::EPSILON * 1e-3 * sum {
            break;
        }
    }
    base + (ln_peak + sum.ln()).exp()
}

/// `ln(h^e·e^(−h)/Γ(e + 1))` for e a non-negative integer or half-integer.
fn ln_poisson_term(e: f64, h: f64) -> f64 {
    if e < 10.0 {
        // Γ(e + 1) = e·(e − 1)·…, ending at Γ(1) = 1 or Γ(3/2) = √π/2; exact to a few ulps this low.
        let (mut gamma, mut factor) = if e.fract() == 0.0 { (1.0, e) } else { (0.5 * PI.sqrt(), e) };
        while factor >= 1.0 {
            gamma *= factor;
            factor -= 1.0;
        }
        return e * h.ln() - h - gamma.ln();
    }
    // With Stirling for ln Γ(e + 1) this is −e·(δ − ln(1 + δ)) − ½·ln(2πe) − S(e) with δ = (h − e)/e: near the
    // peak, where the term matters, no part is large, whereas e·ln h − h − ln Γ(e + 1) subtracts numbers of
    // size e·ln e and would leave an error of e·ln e·ε.
    let delta = (h - e) / e;
    -e * (delta - delta.ln_1p()) - 0.5 * (2.0 * PI * e).ln() - stirling_tail(e)
}

/// Student's t survival function P(T > t) at `df` > 0 degrees of freedom (fractional and huge alike).
pub(crate) fn student_t_sf(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if t < 0.0 {
        // P(T > t) ≥ ½ here, so the subtraction loses nothing.
        return 1.0 - student_t_sf(-t, df);
    }
    if t == 0.0 {
        return 0.5;
    }
    if t == f64::INFINITY {
        return 0.0;
    }
    let a = 0.5 * df;
    let (x, y, ln_x) = beta_argument(t, df);
    let i_x = if y >= 0.29 {
        beta_series(a, x, ln_x)
    } else if a <= 1.0 || (y < 0.1 && y * a <= 0.49) {
        // Near t = 0 the complement I_y(½, a) is the small quantity, and sf is near ½.
        1.0 - beta_complement_series(a, y)
    } else if a > 15.0 {
        beta_asymptotic(a, ln_x)
    } else {
        // Below a = 15 the expansion is not yet exact, so step a up by 20 with the recurrence.
        beta_shift_up(a, x, y, ln_x, 20) + beta_asymptotic(a + 20.0, ln_x)
    };
    0.5 * i_x
}

/// The upper `p` quantile of Student's t at `df` degrees of freedom: the t with `student_t_sf(t, df) = p`.
pub(crate) fn student_t_isf(p: f64, df: f64) -> f64 {
    if p.is_nan() || df.is_nan() || df <= 0.0 || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p > 0.5 {
        // Exact: 1 − p is representable for p ≥ ½.
        return -student_t_isf(1.0 - p, df);
    }
    if p == 0.5 {
        return 0.0;
    }
    if p == 0.0 {
        return f64::INFINITY;
    }
    let a = 0.5 * df;
    let ln_p = p.ln();
    let ln_r = ln_gamma_ratio_half(a);
    // sf(t) < ∫_t^∞ c·(s²/ν)^(−(ν+1)/2) ds since 1 + s²/ν > s²/ν; solving that power law for p gives an
    // upper bound on the quantile, and its tail is the true one for small ν.
    let ln_c = ln_r - 0.5 * (2.0 * PI).ln();
    let mut high = (0.5 * df.ln() + (ln_c - 0.5 * df.ln() - ln_p) / df).exp();
    let mut low = 0.0;
    // Cornish–Fisher expansion around the normal quantile (Abramowitz & Stegun 26.7.5), good for large ν; it
    // is only a starting point, so statrs's erfc_inv serves for the normal quantile.
    let z = SQRT_2 * erfc_inv(2.0 * p);
    let z2 = z * z;
    let guess = z
        + z * (z2 + 1.0) / (4.0 * df)
        + z * ((5.0 * z2 + 16.0) * z2 + 3.0) / (96.0 * df * df)
        + z * (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) / (384.0 * df * df * df);
    let mut t = if guess > 0.0 && guess < high { guess } else { high };
    for _ in 0..200 {
        let sf = student_t_sf(t, df);
        if sf > p {
            low = t;
        } else {
            high = t;
        }
        let next = if sf > 0.0 {
            // Newton on g(u) = ln sf(e^u) − ln p, whose slope is −t·pdf(t)/sf(t).
            let ln_slope = t.ln() + ln_r - 0.5 * (2.0 * PI).ln() + (a + 0.5) * beta_argument(t, df).2 - sf.ln();
            t * ((sf.ln() - ln_p) / ln_slope.exp()).exp()
        } else {
            f64::NAN
        };
        let next = if next > low && next < high {
            next
        } else if low > 0.0 && high / low > 4.0 {
            low.sqrt() * high.sqrt()
        } else {
            0.5 * (low + high)
        };
        if (next - t).abs() <= 2.0 * f64::EPSILON * next || high - low <= 2.0 * f64::EPSILON * high {
            return next;
        }
        t = next;
    }
    t
}

/// `x = ν/(ν + t²)`, `y = 1 − x` and `ln x`, each without cancellation or overflow.
fn beta_argument(t: f64, df: f64) -> (f64, f64, f64) {
    let s = t * t / df;
    if s.is_finite() {
        (1.0 / (1.0 + s), s / (1.0 + s), -s.ln_1p())
    } else {
        // t² overflowed; 1/s is then below 1e-308 and ln(1 + s) = ln s exactly.
        (0.0, 1.0, df.ln() - 2.0 * t.ln())
    }
}

/// `I_x(a, ½)` by its power series in `x`, `x^a/(a·B(a, ½))·(1 + a·Σ_{j≥1} (½)_j/j!·x^j/(a + j))`; for x ≤ 0.71.
fn beta_series(a: f64, x: f64, ln_x: f64) -> f64 {
    let mut sum = 1.0;
    let mut coefficient = 1.0;
    for j in 1..2000 {
        let j = f64::from(j);
        coefficient *= (j - 0.5) / j * x;
        let term = a * coefficient / (a + j);
        sum += term;
        if term <= f64::EPSILON * 0.25 * sum {
            break;
        }
    }
    // a·B(a, ½) = √(π·a)/R(a).
    (a * ln_x + ln_gamma_ratio_half(a) - 0.5 * (PI * a).ln()).exp() * sum
}

/// `I_y(½, a)` by its power series in `y`; used where it is small (y < 0.29 and either a ≤ 1 or y·a ≤ 0.49).
fn beta_complement_series(a: f64, y: f64) -> f64 {
    let mut sum = 1.0;
    let mut coefficient = 1.0;
    for j in 1..2000 {
        let j = f64::from(j);
        coefficient *= (j - a) / j * y;
        let term = 0.5 * coefficient / (0.5 + j);
        sum += term;
        if term.abs() <= f64::EPSILON * 0.25 * sum.abs() {
            break;
        }
    }
    // y^½/(½·B(½, a)) = 2·R(a)·√(a·y/π).
    2.0 * ln_gamma_ratio_half(a).exp() * (a * y / PI).sqrt() * sum
}

/// `I_x(a, ½) − I_x(a + n, ½)`: the first `n` terms `x^(a+i)·y^½/((a + i)·B(a + i, ½))`, all positive.
fn beta_shift_up(a: f64, x: f64, y: f64, ln_x: f64, n: u32) -> f64 {
    let mut term = (a * ln_x + ln_gamma_ratio_half(a)).exp() * (y / (PI * a)).sqrt();
    let mut sum = 0.0;
    for i in 0..n {
        let i = f64::from(i);
        sum += term;
        term *= x * (a + 0.5 + i) / (a + 1.0 + i);
    }
    sum
}

/// `I_x(a, ½)` for a > 15 by Didonato & Morris's expansion (TOMS 708, BGRAT) with `b = ½`.
///
/// With `T = a − ¼` and `z = −T·ln x`, `I_x = r·G·Σ d_n·J_n` where `r = e^(−z)·√z/Γ(½)`,
/// `G = Γ(a + ½)/(Γ(a)·√T)`, `J_0 = Q(½, z)/r = erfc(√z)/r`, and the `J_n` and `d_n` follow by recurrence;
/// the terms fall like (ln x/2T)^(2n), so a handful suffice.
fn beta_asymptotic(a: f64, ln_x: f64) -> f64 {
    const B: f64 = 0.5;
    const TERMS: usize = 30;
    let nu = a + 0.5 * (B - 1.0);
    let z = -nu * ln_x;
    // J_0 = erfc(√z)·e^z·√(π/z), scaled so that it cannot underflow.
    let mut j = erfcx(z.sqrt()) * (PI / z).sqrt();
    let v = 0.25 / (nu * nu);
    let t2 = 0.25 * ln_x * ln_x;
    let mut sum = j;
    let (mut t, mut cn, mut n2) = (1.0, 1.0, 0.0);
    let mut c = [0.0; TERMS];
    let mut d = [0.0; TERMS];
    for n in 1..=TERMS {
        let bp2n = B + n2;
        j = (bp2n * (bp2n + 1.0) * j + (z + bp2n + 1.0) * t) * v;
        n2 += 2.0;
        t *= t2;
        cn /= n2 * (n2 + 1.0);
        c[n - 1] = cn;
        let mut s = 0.0;
        let mut coefficient = B - n as f64;
        for i in 1..n {
            s += coefficient * c[i - 1] * d[n - 1 - i];
            coefficient += B;
        }
        d[n - 1] = (B - 1.0) * cn + s / n as f64;
        let dj = d[n - 1] * j;
        sum += dj;
        if dj.abs() <= f64::EPSILON * sum {
            break;
        }
    }
    let ln_g = ln_gamma_ratio_half(a) - 0.5 * (nu / a).ln();
    // Multiplying e^(−z) in last means it underflows only when the result does.
    ln_g.exp() * (z / PI).sqrt() * sum * (-z).exp()
}

/// `ln(Γ(a + ½)/(Γ(a)·√a))` for a > 0, to an absolute error near 1e-16 however large `a` is.
///
/// Subtracting two `ln Γ` of size `a·ln a` would leave an error of `a·ln a·ε`; the difference of the
/// Stirling expansions is instead `a·ln(1 + 1/(2a)) − ½ + S(a + ½) − S(a)`, every part of it small.
fn ln_gamma_ratio_half(a: f64) -> f64 {
    // Below 10 the Stirling tail is not yet exact; Γ(a + ½)/Γ(a) = Γ(a + 1 + ½)/Γ(a + 1)·a/(a + ½) moves a up.
    let mut shifted = a;
    let mut factor = 1.0;
    while shifted < 10.0 {
        factor *= shifted / (shifted + 0.5);
        shifted += 1.0;
    }
    let stirling = shifted * (0.5 / shifted).ln_1p() - 0.5 + stirling_tail(shifted + 0.5) - stirling_tail(shifted);
    stirling + (factor * (shifted / a).sqrt()).ln()
}

/// `ln Γ(z) − ((z − ½)·ln z − z + ½·ln 2π)`, the Stirling series; exact to rounding for z ≥ 10.
fn stirling_tail(z: f64) -> f64 {
    // B_2k/(2k·(2k − 1)) for k = 1..8; the ninth term is below 2e-18 at z = 10.
    const COEFFICIENTS: [f64; 8] = [
        1.0 / 12.0,
        -1.0 / 360.0,
        1.0 / 1260.0,
        -1.0 / 1680.0,
        1.0 / 1188.0,
        -691.0 / 360_360.0,
        1.0 / 156.0,
        -3617.0 / 122_400.0,
    ];
    let w = 1.0 / (z * z);
    COEFFICIENTS.iter().rev().fold(0.0, |acc, c| acc * w + c) / z
}

#[cfg(test)]
// The expected values are pasted as scipy_values.py printed them, with 17 significant digits.
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;

    /// Asserts that `got` is within `tolerance` of `want`, relatively (exactly for 0).
    fn assert_close(got: f64, want: f64, tolerance: f64, what: &str) {
        let error = if got == want { 0.0 } else { ((got - want) / want).abs() };
        assert!(error <= tolerance, "{what}: got {got:e}, want {want:e}, relative error {error:e}");
    }

    // All expected values come from scripts/stats/scipy_values.py (scipy 1.17.1, numpy 2.4.6): scipy's,
    // except the few marked "mpmath", where scipy is wrong by more than 1e-13 and mpmath at 40 digits is used.

    #[test]
    fn student_t_sf_matches_scipy_for_small_fractional_and_huge_df_into_the_far_tail() {
        // (df, t, scipy.stats.t.sf(t, df))
        const CASES: &[(f64, f64, f64)] = &[
            (1.0, 0.001, 0.49968169021990794),
            (1.0, 0.5, 0.35241638234956674),
            (1.0, 1.96, 0.15017144588801656),
            (1.0, 5.0, 0.062832958189001198),
            (1.0, 40.0, 0.007956089912025812),
            (1.0, 10000000000.0, 3.1830988618379071e-11),
            (1.0, 1e100, 3.183098861837907e-101),
            (1.0, -2.0, 0.85241638234956674),
            (1.5, 0.001, 0.4996592651133599),
            (1.5, 0.5, 0.34028355533497001),
            (1.5, 1.96, 0.11482994867335709),
            (1.5, 5.0, 0.032687883810578106),
            (1.5, 40.0, 0.0014898121954656225),
            (1.5, 10000000000.0, 3.7708524320162472e-16),
            (1.5, 1e150, 3.7708524320162471e-226),
            (1.5, -2.0, 0.88790583482197438),
            (2.7, 0.001, 0.49963566225602729),
            (2.7, 0.5, 0.32747353099788068),
            (2.7, 1.96, 0.077484974187934985),
            (2.7, 5.0, 0.009850419463231919),
            (2.7, 40.0, 3.9978199450961087e-05),
            (2.7, 10000000000.0, 8.4754636094960903e-28),
            (2.7, 1e100, 8.475463609495779e-271),
            (2.7, -2.0, 0.92528828096474902),
            (10.0, 0.001, 0.4996108916873705),
            (10.0, 0.5, 0.31394680287148652),
            (10.0, 1.96, 0.039218120123849856),
            (10.0, 5.0, 0.00026866680137822634),
            (10.0, 40.0, 1.1404288715428768e-12),
            (10.0, 10000000000.0, 1.2304687500000003e-96),
            (10.0, 1e29, 1.2304687500000018e-286),
            (10.0, -2.0, 0.96330598261462985),
            (123.4, 0.001, 0.49960186518941135),
            (123.4, 0.5, 0.30898276395433266),
            (123.4, 1.96, 0.026124813564117638),
            (123.4, 5.0, 9.5962623147442576e-07),
            (123.4, 40.0, 8.3054406749997716e-73),
            (123.4, 300.0, 7.504691757641416e-179),
            (123.4, -2.0, 0.97615195927580489),
            (10000.0, 0.001, 0.49960106775952628),
            (10000.0, 0.5, 0.30854303966161684),
            (10000.0, 1.96, 0.025011760115916513),
            (10000.0, 5.0, 2.9151633068313295e-07),
            (10000.0, 20.0, 1.3823262932703351e-87),
            (10000.0, 37.0, 2.8113156176397984e-281),
            (10000.0, -2.0, 0.97723636966928229),
            (2000000.0, 0.001, 0.49960105783595676),
            (2000000.0, 0.5, 0.30853756623108841),
            (2000000.0, 1.96, 0.024997964470414382),
            (2000000.0, 5.0, 2.8667573189157285e-07),
            (2000000.0, 20.0, 2.8095240915334074e-89),
            (2000000.0, 37.0, 7.2387432317375054e-300), // scipy gives 7.238743231738503e-300: wrong; mpmath
            (2000000.0, -2.0, 0.97724980056309663),
            (1000000000.0, 0.001, 0.49960105778618868),
            (1000000000.0, 0.5, 0.30853753878099716),
            (1000000000.0, 1.96, 0.024997895286864812),
            (1000000000.0, 5.0, 2.8665162019758096e-07),
            (1000000000.0, 20.0, 2.7537348158163547e-89),
            (1000000000.0, 37.0, 5.7282584287779823e-300),
            (1000000000.0, -2.0, 0.97724986791684343),
        ];
        for &(df, t, want) in CASES {
            assert_close(student_t_sf(t, df), want, 1e-12, &format!("sf({t}, df = {df})"));
        }
    }

    #[test]
    fn student_t_sf_edges() {
        assert_eq!(student_t_sf(0.0, 7.5), 0.5);
        assert_eq!(student_t_sf(f64::INFINITY, 7.5), 0.0);
        assert_eq!(student_t_sf(f64::NEG_INFINITY, 7.5), 1.0);
        assert!(student_t_sf(f64::NAN, 7.5).is_nan());
    }

    #[test]
    fn student_t_isf_matches_scipy_where_scipy_is_right_and_mpmath_where_it_is_not() {
        // (df, p, scipy.stats.t.isf(p, df))
        const CASES: &[(f64, f64, f64)] = &[
            (1.0, 0.25, 1.0000000000000002),
            (1.0, 0.025, 12.706204736174705),
            (1.0, 1e-05, 31830.988607907089),
            (1.0, 1e-20, 3.1830988618379071e+19),
            (1.0, 1e-100, 3.1830988618379069e+99),
            (1.0, 1e-300, 3.183098861837907e+299),
            (1.5, 0.25, 0.87259466254157159),
            (1.5, 0.025, 6.0166631044279333),
            (1.5, 1e-05, 1124.5001233812077),
            (1.5, 1e-20, 11245005997832.137),
            (1.5, 1e-100, 2.4226631011346154e+66),
            (1.5, 1e-300, 5.2194694273446364e+199), // scipy gives 8.210571999400338e+153: wrong; mpmath
            (2.7, 0.25, 0.77598628374526757),
            (2.7, 0.025, 3.3921483831737524),
            (2.7, 1e-05, 66.856324219641138),
            (2.7, 1e-20, 24032629.034870137),
            (2.7, 1e-100, 1.024308820254215e+37),
            (2.7, 1e-300, 1.2148005685032819e+111), // scipy gives -inf: wrong; mpmath
            (10.0, 0.25, 0.69981206131243168),
            (10.0, 0.025, 2.2281388519862753),
            (10.0, 1e-05, 7.5269540193396507),
            (10.0, 1e-20, 256.43469931852616),
            (10.0, 1e-100, 25645257189.481979),
            (10.0, 1e-300, 2.564525718948198e+30), // scipy gives -inf: wrong; mpmath
            (123.4, 0.25, 0.6764830948904601),
            (123.4, 0.025, 1.9793749463174202),
            (123.4, 1e-05, 4.4365259918703988),
            (123.4, 1e-20, 11.161182455661509),
            (123.4, 1e-100, 68.992515681008697),
            (123.4, 1e-300, 2917.815328684957),
            (10000.0, 0.25, 0.67451428448359274),
            (10000.0, 0.025, 1.9602012398906263),
            (10000.0, 1e-05, 4.2669376657666609),
            (10000.0, 1e-20, 9.282474153254304),
            (10000.0, 1e-100, 21.516974193914983),
            (10000.0, 1e-300, 38.356384321004235),
            (2000000.0, 0.25, 0.67448987286356443),
            (2000000.0, 0.025, 1.959965170676375),
            (2000000.0, 1e-05, 4.2649010239746037),
            (2000000.0, 1e-20, 9.2624405766241811),
            (2000000.0, 1e-100, 21.27465971608871),
            (2000000.0, 1e-300, 37.053457674989701),
            (1000000000.0, 0.25, 0.67448975044141635),
            (1000000000.0, 0.025, 1.9599639869123253),
            (1000000000.0, 1e-05, 4.264890814382885),
            (1000000000.0, 1e-20, 9.2623402907702204),
            (1000000000.0, 1e-100, 21.273455973161528),
            (1000000000.0, 1e-300, 37.047109020294087),
        ];
        for &(df, p, want) in CASES {
            assert_close(student_t_isf(p, df), want, 1e-12, &format!("isf({p}, df = {df})"));
            // The lower quantile is the mirror image (1 − p rounds, so mirror that rounded value exactly).
            assert_eq!(student_t_isf(1.0 - p, df), -student_t_isf(1.0 - (1.0 - p), df));
        }
        assert_eq!(student_t_isf(0.5, 3.0), 0.0);
        assert_eq!(student_t_isf(0.0, 3.0), f64::INFINITY);
        assert!(student_t_isf(1.5, 3.0).is_nan());
    }

    #[test]
    fn chi2_sf_matches_scipy_including_srm_p_values_near_1e_minus_20() {
        // (x, k, scipy.stats.chi2.sf(x, k))
        const CASES: &[(f64, u64, f64)] = &[
            (0.001, 1, 0.97477287936996038),
            (0.5, 1, 0.47950012218695337),
            (3.84, 1, 0.050043521248705189),
            (30.0, 1, 4.3204630578274955e-08),
            (1300.0, 1, 1.1303728441493301e-284),
            (0.5, 2, 0.77880078307140488),
            (5.99, 2, 0.050036627086586287),
            (92.1, 2, 1.0017033088663186e-20),
            (1380.0, 2, 2.1717382813899402e-300),
            (0.1, 3, 0.99183742373187644),
            (7.81, 3, 0.050106056350005888),
            (95.6, 3, 1.3720387618266732e-20),
            (1000.0, 3, 1.7994208765314067e-216),
            (9.49, 4, 0.049953131223294894),
            (100.0, 4, 9.8366242246159881e-21),
            (0.5, 5, 0.9921232932326296),
            (11.07, 5, 0.050009618622405425),
            (100.0, 5, 5.2851483609432189e-20),
            (1350.0, 5, 9.3866130638002225e-290),
            (18.3, 10, 0.050109061411462506),
            (9.0, 10, 0.53210357637471506),
            (150.0, 10, 3.7274850550625047e-27),
            (99.0, 100, 0.50947219879837413),
            (124.3, 100, 0.050266398300158416),
            (1300.0, 100, 6.1832464091283303e-208),
        ];
        for &(x, k, want) in CASES {
            assert_close(chi2_sf(x, k), want, 1e-12, &format!("chi2_sf({x}, k = {k})"));
        }
        assert_eq!(chi2_sf(0.0, 3), 1.0);
    }

    #[test]
    fn normal_cdf_matches_scipy_far_into_both_tails() {
        // (x, scipy.stats.norm.cdf(x))
        const CASES: &[(f64, f64)] = &[
            (-37.0, 5.7255712225245771e-300), // scipy gives 5.7255712225239266e-300: wrong; mpmath
            (-30.0, 4.906713927147908e-198),
            (-20.0, 2.7536241186061556e-89),
            (-8.0, 6.2209605742717405e-16),
            (-1.5, 0.066807201268858071),
            (-0.001, 0.49960105778608893),
            (0.0, 0.5),
            (0.5, 0.69146246127401312),
            (3.0, 0.9986501019683699),
            (8.2, 0.99999999999999989),
        ];
        for &(x, want) in CASES {
            assert_close(normal_cdf(x), want, 1e-13, &format!("normal_cdf({x})"));
        }
        assert_eq!(normal_cdf(f64::NEG_INFINITY), 0.0);
        assert_eq!(normal_cdf(f64::INFINITY), 1.0);
    }

    #[test]
    fn moments_match_numpy_mean_and_sample_variance() {
        // (values, n, numpy.mean(values), numpy.var(values, ddof=1))
        const CASES: &[(&[f64], u64, f64, f64)] = &[
            (&[12.1, 9.8, 11.4, 10.9, 13.2, 8.7, 10.1, 12.6], 8, 11.1, 2.3199999999999998),
            (
                &[0.0, 0.0, 0.0, 19.99, 0.0, 0.0, 49.5, 0.0, 0.0, 0.0, 5.25, 0.0],
                12,
                6.2283333333333326,
                219.26426969696971,
            ),
            (&[-2.5, -3.1, -1.9, -2.8, -2.2, -3.4], 6, -2.6499999999999999, 0.31499999999999995),
            (
                &[10.02, 9.98, 10.01, 9.99, 10.03, 9.97, 10.0, 10.02, 9.98, 10.01, 9.99, 10.0],
                12,
                10.0,
                0.00034545454545453075,
            ),
        ];
        for &(values, n, mean, variance) in CASES {
            let moments = Moments::of(values);
            assert_eq!(moments.n, n);
            assert_close(moments.mean, mean, 1e-15, "mean");
            assert_close(moments.variance, variance, 1e-13, "variance");
        }
        assert_eq!(Moments::of(&[]), Moments { n: 0, mean: 0.0, variance: 0.0 });
        assert_eq!(Moments::of(&[4.5]), Moments { n: 1, mean: 4.5, variance: 0.0 });
    }

    #[test]
    fn moments_with_zeros_equal_moments_of_the_full_vector() {
        let nonzero: Vec<f64> = (1..=2000).map(|i| (f64::from(i) * 0.37).sin().abs() * 100.0 + 0.01).collect();
        for zeros in [0_usize, 1, 7, 1_000, 1_000_000] {
            // Spread the zeros through the vector, as they would be in the raw data.
            let mut full = Vec::with_capacity(zeros + nonzero.len());
            for (i, &value) in nonzero.iter().enumerate() {
                full.resize(full.len() + (i + 1) * zeros / nonzero.len() - i * zeros / nonzero.len(), 0.0);
                full.push(value);
            }
            assert_eq!(full.len(), zeros + nonzero.len());
            let expected = Moments::of(&full);
            let got = Moments::with_zeros(&nonzero, zeros as u64);
            assert_eq!(got.n, expected.n);
            assert_close(got.mean, expected.mean, 1e-15, &format!("mean with {zeros} zeros"));
            assert_close(got.variance, expected.variance, 1e-15, &format!("variance with {zeros} zeros"));
        }
        assert_eq!(Moments::with_zeros(&[], 3), Moments { n: 3, mean: 0.0, variance: 0.0 });
    }

    type Interval = (f64, [f64; 2]);

    /// Asserts every statistic of `got` against scipy's.
    fn assert_comparison(
        got: &Comparison,
        absolute: Interval,
        relative: Option<Interval>,
        p: f64,
        chance: Option<f64>,
    ) {
        let check = |got: Option<Estimate>, want: Interval, what: &str| {
            let got = got.unwrap_or_else(|| panic!("{what} missing"));
            let ci = got.ci.unwrap_or_else(|| panic!("{what} CI missing"));
            assert_close(got.estimate, want.0, 1e-12, what);
            assert_close(ci[0], want.1[0], 1e-12, &format!("{what} CI low"));
            assert_close(ci[1], want.1[1], 1e-12, &format!("{what} CI high"));
        };
        check(got.absolute, absolute, "absolute");
        match relative {
            Some(relative) => check(got.relative, relative, "relative"),
            None => assert_eq!(got.relative, None),
        }
        assert_close(got.p_value.expect("p-value"), p, 1e-12, "p-value");
        match chance {
            Some(chance) => assert_close(got.chance_to_beat_control.expect("chance"), chance, 1e-12, "chance"),
            None => assert_eq!(got.chance_to_beat_control, None),
        }
    }

    #[test]
    fn compare_matches_scipy_welch_on_small_samples() {
        // (case, treatment, control, alpha, absolute and CI, relative and CI, p-value, chance to beat control):
        // m, v = numpy.mean(x), numpy.var(x, ddof=1); q = scipy.stats.t.isf(alpha/2, df) at the Welch df;
        // CI = estimate ± q·se; p = scipy.stats.ttest_ind(t, c, equal_var=False).pvalue;
        // chance = scipy.stats.norm.cdf(relative/se_rel).
        #[allow(clippy::type_complexity)]
        const CASES: &[(&str, &[f64], &[f64], f64, Interval, Option<Interval>, f64, Option<f64>)] = &[
            (
                "A",
                &[12.1, 9.8, 11.4, 10.9, 13.2, 8.7, 10.1, 12.6],
                &[10.2, 9.1, 10.8, 9.9, 11.0, 8.8, 9.5],
                0.05,
                (1.1999999999999993, [-0.170244790833604, 2.5702447908336028]),
                Some((0.12121212121212113, [-0.021623169610810511, 0.26404741203505278])),
                0.080152527385258243,
                Some(0.96901774303933719),
            ), // df = 11.06015530036022
            (
                "B",
                &[0.0, 0.0, 0.0, 19.99, 0.0, 0.0, 49.5, 0.0, 0.0, 0.0, 5.25, 0.0],
                &[0.0, 0.0, 12.0, 0.0, 0.0, 0.0, 0.0, 7.5, 0.0, 0.0],
                0.05,
                (4.2783333333333324, [-5.3920284095831743, 13.948695076249839]),
                Some((2.1940170940170938, [-4.5076937470729543, 8.895727935107141])),
                0.35689704617646123,
                Some(0.76009285857226794),
            ), // df = 13.121239862662936
            (
                "C",
                &[-1.2, -0.4, -2.2, -0.9, -1.7],
                &[-2.5, -3.1, -1.9, -2.8, -2.2, -3.4],
                0.1,
                (1.3699999999999999, [0.64622734625124933, 2.0937726537487507]),
                Some((0.51698113207547169, [0.28338960624317178, 0.75057265790777161])),
                0.0081444343257400954,
                Some(0.99998243059601544),
            ), // df = 7.6874687814323925
            (
                "D",
                &[1.0, 4.0],
                &[2.0, 2.5],
                0.05,
                (0.25, [-16.828728478604685, 17.328728478604685]),
                Some((0.1111111111111111, [-7.5034576551575896, 7.725679877379811])),
                0.8951757330575778,
                Some(0.56508732557771069),
            ), // df = 1.0555127216653817
            (
                "E",
                &[3.0, 5.0, 4.0, 6.0],
                &[2.0, 2.0, 2.0],
                0.05,
                (2.5, [0.44573974323947851, 4.5542602567605215]),
                Some((1.25, [0.22286987161973926, 2.2771301283802607])),
                0.030466291662170977,
                Some(0.99994624441163527),
            ), // df = 3.0
            (
                "H",
                &[10.02, 9.98, 10.01, 9.99, 10.03, 9.97, 10.0, 10.02, 9.98, 10.01, 9.99, 10.0],
                &[9.0, 9.02, 8.98, 9.01, 8.99, 9.0, 9.03, 8.97, 9.0, 9.01, 8.99, 9.0],
                0.05,
                (1.0, [0.98510301774201314, 1.0148969822579867]),
                Some((0.1111111111111111, [0.1093723529830615, 0.11284986923916071])),
                1.5819101810728213e-33,
                Some(1.0),
            ), // df = 21.699658703071673
            (
                "F",
                &[0.0, 0.0, 0.0],
                &[1.0, 2.0, 3.0],
                0.05,
                (-2.0, [-4.4841377117503303, 0.48413771175033071]),
                Some((-1.0, [-1.0, -1.0])),
                0.074179900227448539,
                Some(0.0),
            ), // df = 2.0
            (
                "Z",
                &[1.0, 2.0, 3.5],
                &[-1.0, 0.0, 1.0],
                0.05,
                (2.1666666666666665, [-0.46241073907043306, 4.7957440724037657]),
                None,
                0.08316573966740283,
                None,
            ), // df = 3.8059405940594067
        ];
        for &(case, treatment, control, alpha, absolute, relative, p, chance) in CASES {
            let got = compare(&Moments::of(treatment), &Moments::of(control), alpha);
            let reason = if relative.is_none() { Some(CONTROL_MEAN_ZERO) } else { None };
            assert_eq!(got.reason, reason, "case {case}");
            assert_comparison(&got, absolute, relative, p, chance);
        }
    }

    #[test]
    fn compare_matches_scipy_welch_with_a_million_units_per_arm() {
        // 52 000 of 1 000 000 treatment units and 50 000 of 1 000 000 control units converted (value 1), so
        // df ≈ 2e6; scipy ran on the full vectors (df = 1999309.6997680725).
        let treatment = Moments::with_zeros(&vec![1.0; 52_000], 948_000);
        let control = Moments::with_zeros(&vec![1.0; 50_000], 950_000);
        let got = compare(&treatment, &control, 0.05);
        assert_eq!(got.reason, None);
        assert_comparison(
            &got,
            (0.0019999999999999948, [0.0013902142424902101, 0.0026097857575097796]),
            Some((0.039999999999999897, [0.027562505117697006, 0.052437494882302788])),
            1.2900574758066901e-10,
            Some(0.99999999985441457),
        );
    }

    #[test]
    fn fewer_than_two_units_leaves_only_the_absolute_estimate() {
        let got = compare(&Moments::of(&[3.0]), &Moments::of(&[1.0, 2.0]), 0.05);
        let expected = Comparison {
            absolute: Some(Estimate { estimate: 1.5, ci: None }),
            relative: None,
            p_value: None,
            chance_to_beat_control: None,
            reason: Some(FEWER_THAN_TWO_UNITS),
        };
        assert_eq!(got, expected);
        // The control mean is also 0 here, but the first reason in order wins.
        let got = compare(&Moments::of(&[1.0, 2.0]), &Moments::of(&[0.0]), 0.05);
        assert_eq!(got.reason, Some(FEWER_THAN_TWO_UNITS));
        assert_eq!(got.absolute, Some(Estimate { estimate: 1.5, ci: None }));
    }

    #[test]
    fn an_empty_arm_leaves_every_statistic_null() {
        let got = compare(&Moments::of(&[]), &Moments::of(&[1.0, 2.0]), 0.05);
        let expected = Comparison {
            absolute: None,
            relative: None,
            p_value: None,
            chance_to_beat_control: None,
            reason: Some(FEWER_THAN_TWO_UNITS),
        };
        assert_eq!(got, expected);
    }

    #[test]
    fn zero_variance_in_both_arms_keeps_only_the_estimates() {
        let got = compare(&Moments::of(&[2.0, 2.0, 2.0]), &Moments::of(&[-4.0, -4.0]), 0.05);
        let expected = Comparison {
            absolute: Some(Estimate { estimate: 6.0, ci: None }),
            relative: Some(Estimate { estimate: 1.5, ci: None }),
            p_value: None,
            chance_to_beat_control: None,
            reason: Some(ZERO_VARIANCE),
        };
        assert_eq!(got, expected);
        // With the control mean 0 as well, that reason comes first.
        let got = compare(&Moments::of(&[2.0, 2.0, 2.0]), &Moments::of(&[0.0, 0.0]), 0.05);
        assert_eq!(got.reason, Some(CONTROL_MEAN_ZERO));
        assert_eq!(got.absolute, Some(Estimate { estimate: 2.0, ci: None }));
        assert_eq!((got.relative, got.p_value), (None, None));
    }

    #[test]
    fn non_finite_input_gives_nulls_and_a_reason_never_nan() {
        let broken = Moments { n: 10, mean: f64::NAN, variance: 1.0 };
        let got = compare(&broken, &Moments::of(&[1.0, 2.0, 3.0]), 0.05);
        assert_eq!(got.reason, Some(NOT_FINITE));
        assert_eq!((got.absolute, got.relative, got.p_value, got.chance_to_beat_control), (None, None, None, None));
        let huge = Moments { n: 10, mean: 1e300, variance: 1e300 };
        let got = compare(&huge, &Moments { n: 10, mean: 1e-300, variance: 1.0 }, 0.05);
        assert_eq!(got.reason, Some(NOT_FINITE));
        assert!(got.relative.is_none_or(|r| r.estimate.is_finite() && r.ci.is_none()));
    }

    #[test]
    fn comparison_serializes_camel_case_with_null_statistics_and_no_absent_reason() {
        let defined = compare(&Moments::of(&[1.0, 2.0, 4.0]), &Moments::of(&[1.0, 3.0]), 0.05);
        let json = serde_json::to_string(&defined).expect("serializes");
        let at = |key: &str| json.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("{key} missing: {json}"));
        assert!(at("absolute") < at("relative") && at("relative") < at("pValue"), "{json}");
        assert!(at("pValue") < at("chanceToBeatControl"), "{json}");
        assert!(json.contains(r#""ci":["#), "{json}");
        assert!(!json.contains("reason"), "{json}");
        let undefined = compare(&Moments::of(&[1.0]), &Moments::of(&[1.0, 3.0]), 0.05);
        assert_eq!(
            serde_json::to_string(&undefined).expect("serializes"),
            r#"{"absolute":{"estimate":-1.0,"ci":null},"relative":null,"pValue":null,"chanceToBeatControl":null,"#
                .to_owned()
                + r#""reason":"a treatment has fewer than 2 units"}"#
        );
    }

    #[test]
    fn srm_p_value_matches_scipy_chisquare() {
        // (units, weights, scipy.stats.chisquare(units, f_exp=sum(units)*w/sum(w)).pvalue)
        const CASES: &[(&[u64], &[f64], f64)] = &[
            (&[5000, 5100], &[1.0, 1.0], 0.31971817681286752), // chi2 = 0.99009900990099009
            (&[500000, 491000], &[1.0, 1.0], 1.5556430692162329e-19), // chi2 = 81.735620585267412
            (&[1000000, 960000], &[1.0, 1.0], 1.5220323265910667e-179), // chi2 = 816.32653061224494
            (&[1000, 1040, 1950], &[1.0, 1.0, 2.0], 0.24267307781126699), // chi2 = 2.8320802005012533
            // chi2 = 34.767363452461225
            (&[3000, 3100, 2950, 3080, 2700], &[1.0, 1.0, 1.0, 1.0, 1.0], 5.1855573731806707e-07),
            (&[2000, 3050, 4950], &[0.2, 0.3, 0.5], 0.51341711903259213), // chi2 = 1.3333333333333335
            (&[1, 0], &[1.0, 1.0], 0.31731050786291115),                  // chi2 = 1.0
        ];
        for &(units, weights, want) in CASES {
            let got = srm_p_value(units, weights).expect("defined");
            assert_close(got, want, 1e-12, &format!("srm {units:?} against {weights:?}"));
        }
        assert_eq!(srm_p_value(&[100, 100], &[1.0, 1.0]), Some(1.0));
    }

    #[test]
    fn srm_p_value_is_none_without_two_treatments_units_or_valid_weights() {
        assert_eq!(srm_p_value(&[100], &[1.0]), None);
        assert_eq!(srm_p_value(&[], &[]), None);
        assert_eq!(srm_p_value(&[0, 0, 0], &[1.0, 1.0, 1.0]), None);
        assert_eq!(srm_p_value(&[10, 20], &[1.0]), None);
        assert_eq!(srm_p_value(&[10, 20], &[1.0, 0.0]), None);
        assert_eq!(srm_p_value(&[10, 20], &[1.0, f64::NAN]), None);
    }
}
