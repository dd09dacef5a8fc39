"""Reference values for the unit tests in sluice's src/experiments/stats.rs.

Run: python3 scripts/stats/scipy_values.py   (with scipy, numpy and mpmath; the literals were printed by scipy 1.17.1,
numpy 2.4.6, mpmath 1.4.1)

Prints Rust literals (17 significant digits). Every value is scipy's, except where scipy disagrees with mpmath
at 40 digits by more than 1e-13 relative (scipy's stdtr/stdtrit fail in a few far tails): those are printed
from mpmath and flagged in a comment.
"""
import warnings

import numpy as np
import mpmath as mp
from scipy import stats

mp.mp.dps = 40
# Case H is nearly constant within each arm; scipy warns about that, but its moments are still exact enough.
warnings.simplefilter('ignore', RuntimeWarning)


def lit(x):
    s = '%.17g' % x
    if s == 'inf':
        return 'f64::INFINITY'
    if not any(c in s for c in '.en'):
        s += '.0'
    return s


def t_sf_mp(t, nu):
    nu = mp.mpf(nu)
    t = mp.mpf(t)
    if t < 0:
        return 1 - t_sf_mp(-t, nu)
    x = nu / (nu + t * t)
    return mp.betainc(nu / 2, mp.mpf(1) / 2, 0, x, regularized=True) / 2


def t_isf_mp(p, nu, start):
    f = lambda u: mp.log(t_sf_mp(mp.e ** u, nu)) - mp.log(mp.mpf(p))
    u0 = mp.log(start)
    return mp.e ** mp.findroot(f, (u0, u0 + mp.mpf(10) ** -6), tol=mp.mpf(10) ** -35)


def arg(x):
    """An input, printed as the shortest literal that round-trips."""
    s = repr(float(x))
    return s.replace('e+', 'e')


def checked(value, truth, what):
    if abs(value - float(truth)) <= 1e-13 * abs(float(truth)) and np.isfinite(value):
        return lit(value), ''
    return lit(float(truth)), f'  // {what} gives {value!r}: wrong; mpmath'


print('// ---- student_t_sf: scipy.stats.t.sf(t, df)')
SF_CASES = {
    1.0: [1e-3, 0.5, 1.96, 5.0, 40.0, 1e10, 1e100],
    1.5: [1e-3, 0.5, 1.96, 5.0, 40.0, 1e10, 1e150],
    2.7: [1e-3, 0.5, 1.96, 5.0, 40.0, 1e10, 1e100],
    10.0: [1e-3, 0.5, 1.96, 5.0, 40.0, 1e10, 1e29],
    123.4: [1e-3, 0.5, 1.96, 5.0, 40.0, 300.0],
    1e4: [1e-3, 0.5, 1.96, 5.0, 20.0, 37.0],
    2e6: [1e-3, 0.5, 1.96, 5.0, 20.0, 37.0],
    1e9: [1e-3, 0.5, 1.96, 5.0, 20.0, 37.0],
}
for df, ts in SF_CASES.items():
    for t in ts + [-2.0]:
        v = float(stats.t.sf(t, df))
        s, note = checked(v, t_sf_mp(t, df), 'scipy')
        print(f'({arg(df)}, {arg(t)}, {s}),{note}')

print('// ---- student_t_isf: scipy.stats.t.isf(p, df)')
for df in SF_CASES:
    for p in [0.25, 0.025, 1e-5, 1e-20, 1e-100, 1e-300]:
        v = float(stats.t.isf(p, df))
        n = mp.mpf(df)
        c = mp.gamma((n + 1) / 2) / (mp.sqrt(n * mp.pi) * mp.gamma(n / 2))
        start = v if np.isfinite(v) and v > 0 else mp.e ** (mp.log(n) / 2 + (mp.log(c) - mp.log(n) / 2 - mp.log(p)) / n)
        s, note = checked(v, t_isf_mp(p, df, start), 'scipy')
        print(f'({arg(df)}, {arg(p)}, {s}),{note}')

print('// ---- chi2_sf: scipy.stats.chi2.sf(x, k)')
for k, xs in {1: [1e-3, 0.5, 3.84, 30.0, 1300.0], 2: [0.5, 5.99, 92.1, 1380.0], 3: [0.1, 7.81, 95.6, 1000.0],
              4: [9.49, 100.0], 5: [0.5, 11.07, 100.0, 1350.0], 10: [18.3, 9.0, 150.0], 100: [99.0, 124.3, 1300.0]}.items():
    for x in xs:
        v = float(stats.chi2.sf(x, k))
        s, note = checked(v, mp.gammainc(mp.mpf(k) / 2, mp.mpf(x) / 2, mp.inf, regularized=True), 'scipy')
        print(f'({arg(x)}, {k}, {s}),{note}')

print('// ---- normal_cdf: scipy.stats.norm.cdf(x)')
for x in [-37.0, -30.0, -20.0, -8.0, -1.5, -1e-3, 0.0, 0.5, 3.0, 8.2]:
    v = float(stats.norm.cdf(x))
    s, note = checked(v, mp.ncdf(x), 'scipy')
    print(f'({arg(x)}, {s}),{note}')

print('// ---- moments: numpy mean, var(ddof=1)')
VECTORS = {
    'A': ([12.1, 9.8, 11.4, 10.9, 13.2, 8.7, 10.1, 12.6], [10.2, 9.1, 10.8, 9.9, 11.0, 8.8, 9.5], 0.05),
    'B': ([0, 0, 0, 19.99, 0, 0, 49.5, 0, 0, 0, 5.25, 0], [0, 0, 12.0, 0, 0, 0, 0, 7.5, 0, 0], 0.05),
    'C': ([-1.2, -0.4, -2.2, -0.9, -1.7], [-2.5, -3.1, -1.9, -2.8, -2.2, -3.4], 0.1),
    'D': ([1.0, 4.0], [2.0, 2.5], 0.05),
    'E': ([3.0, 5.0, 4.0, 6.0], [2.0, 2.0, 2.0], 0.05),
    'H': ([10.02, 9.98, 10.01, 9.99, 10.03, 9.97, 10.0, 10.02, 9.98, 10.01, 9.99, 10.0],
          [9.0, 9.02, 8.98, 9.01, 8.99, 9.0, 9.03, 8.97, 9.0, 9.01, 8.99, 9.0], 0.05),
    # A million units per arm, 52 000 and 50 000 of them converting: df ≈ 2e6.
    # The treatment is constant at 0: the delta-method se of the lift is 0 and the chance is exactly 0.
    'F': ([0.0, 0.0, 0.0], [1.0, 2.0, 3.0], 0.05),
    # The control mean is 0: only the absolute difference and the p-value are defined.
    'Z': ([1.0, 2.0, 3.5], [-1.0, 0.0, 1.0], 0.05),
    'M': (np.r_[np.ones(52_000), np.zeros(948_000)], np.r_[np.ones(50_000), np.zeros(950_000)], 0.05),
}
for name, (t, c, _) in VECTORS.items():
    for arm, v in (('t', t), ('c', c)):
        v = np.asarray(v, dtype=float)
        print(f'{name}.{arm}: n={len(v)} mean={lit(np.mean(v))} var={lit(np.var(v, ddof=1))}')

print('// ---- compare: (name, t, c, alpha, absolute, CI, relative, CI, p, chance); moments by numpy mean and')
print('// var(ddof=1), q = scipy.stats.t.isf(alpha/2, df), p = scipy.stats.ttest_ind(t, c, equal_var=False).pvalue,')
print('// chance = scipy.stats.norm.cdf(relative/se_rel)')
for name, (t, c, alpha) in VECTORS.items():
    t = np.asarray(t, dtype=float)
    c = np.asarray(c, dtype=float)
    nt, nc = len(t), len(c)
    mt, mc = np.mean(t), np.mean(c)
    vt, vc = np.var(t, ddof=1), np.var(c, ddof=1)
    se2t, se2c = vt / nt, vc / nc
    df = (se2t + se2c) ** 2 / (se2t ** 2 / (nt - 1) + se2c ** 2 / (nc - 1))
    q = stats.t.isf(alpha / 2, df)
    se = np.sqrt(se2t + se2c)
    diff = mt - mc
    p = stats.ttest_ind(t, c, equal_var=False).pvalue
    absolute = f'({lit(diff)}, [{lit(diff - q * se)}, {lit(diff + q * se)}])'
    if mc != 0:
        rel = diff / abs(mc)
        se_rel = np.sqrt(vt / (nt * mc ** 2) + mt ** 2 * vc / (nc * mc ** 4))
        chance = stats.norm.cdf(rel / se_rel)
        relative = f'Some(({lit(rel)}, [{lit(rel - q * se_rel)}, {lit(rel + q * se_rel)}]))'
        chance = f'Some({lit(chance)})'
    else:
        relative, chance = 'None', 'None'
    if len(t) > 100:
        vectors = f'/* {nt} units, {int(t.sum())} ones */ &[], /* {nc} units, {int(c.sum())} ones */ &[]'
    else:
        vectors = f'&[{", ".join(arg(x) for x in t)}], &[{", ".join(arg(x) for x in c)}]'
    print(f'("{name}", {vectors}, {arg(alpha)}, {absolute}, {relative}, {lit(p)}, {chance}),  // df = {lit(df)}')

print('// ---- srm: scipy.stats.chisquare(units, f_exp=sum(units)*w/sum(w)).pvalue')
for units, w in [([5000, 5100], [1, 1]), ([500_000, 491_000], [1, 1]), ([1_000_000, 960_000], [1, 1]),
                 ([1000, 1040, 1950], [1, 1, 2]), ([3000, 3100, 2950, 3080, 2700], [1, 1, 1, 1, 1]),
                 ([2000, 3050, 4950], [0.2, 0.3, 0.5]), ([1, 0], [1, 1])]:
    u = np.asarray(units, dtype=float)
    w = np.asarray(w, dtype=float)
    r = stats.chisquare(u, f_exp=u.sum() * w / w.sum())
    k = len(units)
    s, note = checked(float(r.pvalue), mp.gammainc(mp.mpf(k - 1) / 2, mp.mpf(float(r.statistic)) / 2, mp.inf, regularized=True), 'scipy')
    print(f'(&{units}, &{[arg(x) for x in w]}, {s}),  // chi2 = {lit(r.statistic)}{note}'.replace("'", ''))
