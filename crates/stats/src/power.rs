//! Power of t-tests: the two-sample test as statsmodels' `TTestIndPower` (equal group
//! sizes by default) and the one-sample / paired test on the differences as `TTestPower`
//! (standardized effect d_z = mean / sd of the differences), for the alternatives
//! two-sided, larger (`Greater`) and smaller (`Less`): power for (n, d, α), the n for a
//! target power (real root and its ceiling), and the minimum detectable effect at a given
//! n. Every solver terminates for every input: it brackets, caps n at [`MAX_N`] and returns
//! `None` when there is no root.
//!
//! Also the exact power of TOST equivalence tests ([`tost_power`], [`tost_solve_n`]) for
//! the paired and the equal-n pooled two-sample design, by integrating over the sampling
//! distribution of the sample sd.
//!
//! Needs the noncentral t, which statrs lacks; it is written here: the Poisson-weighted
//! incomplete-beta series, and where that is slow or loses digits (|nc| > 40, df > 10⁴, a
//! tail below 1e-3 that it would get as a complement) a quadrature over the χ mixing
//! distribution of the sample sd, which keeps relative accuracy deep into the tails.

use super::quad::integrate_pieces;
use super::resample::Design;
use super::{norm_cdf, norm_sf, t_ppf, Alternative};
use serde::Serialize;
use statrs::function::beta::beta_reg;
use statrs::function::gamma::ln_gamma;

/// P(T ≤ t) for the noncentral t with `df` degrees of freedom and noncentrality `nc`.
///
/// For t ≥ 0: Φ(−δ) + ½ Σⱼ [Pⱼ I_x(j+½, ν/2) + Qⱼ I_x(j+1, ν/2)], x = t²/(t²+ν),
/// Pⱼ = e^{−δ²/2}(δ²/2)ʲ/j!, Qⱼ = δ e^{−δ²/2}(δ²/2)ʲ/(√2 Γ(j+3/2)) (Lenth 1989), summed
/// outward from the Poisson mode until the weights vanish; t < 0 by F(t; ν, δ) = 1 − F(−t; ν, −δ).
/// Where the series is slow or inexact — |δ| > 40 (thousands of terms), ν > 10⁴ (statrs'
/// incomplete beta loses digits), or a tail below 1e-3 that it would get as a complement
/// 1 − F — it is E[Φ(t·S − δ)] over S = √(χ²_ν/ν) by adaptive quadrature; beyond ν = 10²⁰
/// the normal limit Φ(t − δ). δ = ±∞ gives the limits 0 and 1.
pub fn nct_cdf(t: f64, df: f64, nc: f64) -> f64 {
    nct_tail(t, df, nc, false)
}

/// P(T > t) for the noncentral t (as [`nct_cdf`], never 1 − cdf in a small tail).
pub fn nct_sf(t: f64, df: f64, nc: f64) -> f64 {
    nct_tail(t, df, nc, true)
}

fn nct_tail(t: f64, df: f64, nc: f64, upper: bool) -> f64 {
    if t.is_nan() || df.is_nan() || nc.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if t.is_infinite() {
        return if (t > 0.0) == upper { 0.0 } else { 1.0 };
    }
    if nc.is_infinite() {
        return if (nc > 0.0) == upper { 1.0 } else { 0.0 };
    }
    if df > NORMAL_DF {
        return if upper {
            norm_sf(t - nc)
        } else {
            norm_cdf(t - nc)
        };
    }
    if nc.abs() > NC_SERIES_MAX || df > crate::T_LARGE_DF {
        return chi_mixture(t, df, nc, upper);
    }
    // The series gives F(|t|; ν, ±δ) directly; the other tail is its complement.
    let (direct, f) = if t < 0.0 {
        (upper, nct_cdf_nonneg(-t, df, -nc))
    } else {
        (!upper, nct_cdf_nonneg(t, df, nc))
    };
    if direct {
        return f;
    }
    let p = 1.0 - f;
    if p < TAIL_BY_QUADRATURE && df >= 1.0 {
        chi_mixture(t, df, nc, upper)
    } else {
        p
    }
}

/// Largest |noncentrality| summed by the series.
const NC_SERIES_MAX: f64 = 40.0;

/// Beyond this many degrees of freedom S = √(χ²_ν/ν) is 1 to double precision: t is normal.
pub(crate) const NORMAL_DF: f64 = 1e20;

/// The density of S = √(χ²_ν/ν), the sample sd over σ with ν degrees of freedom:
/// g(s) = 2 (ν/2)^{ν/2} / Γ(ν/2) · s^{ν−1} e^{−ν s²/2}, evaluated as
/// ln g = C + ν·(ln(1+u) − u − u²/2) − ln s with u = s − 1 and
/// C = ln 2 + (ν/2) ln(ν/2) − ln Γ(ν/2) − ν/2 (Stirling's series for large ν), so that
/// nothing of size ν cancels.
pub(crate) struct SdDensity {
    nu: f64,
    ln_const: f64,
}

impl SdDensity {
    pub(crate) fn new(nu: f64) -> Self {
        let x = 0.5 * nu;
        let ln_const = if x > 50.0 {
            // ln Γ(x) = (x − ½) ln x − x + ½ ln 2π + 1/(12x) − 1/(360x³) + 1/(1260x⁵) − …
            let x2 = x * x;
            let corr = 1.0 / (12.0 * x) - 1.0 / (360.0 * x * x2) + 1.0 / (1260.0 * x * x2 * x2)
                - 1.0 / (1680.0 * x * x2 * x2 * x2);
            std::f64::consts::LN_2 + 0.5 * (x / (2.0 * std::f64::consts::PI)).ln() - corr
        } else {
            std::f64::consts::LN_2 + x * x.ln() - ln_gamma(x) - x
        };
        SdDensity { nu, ln_const }
    }

    /// ln g(s) (−∞ for s ≤ 0).
    pub(crate) fn ln(&self, s: f64) -> f64 {
        self.ln_u(s - 1.0)
    }

    /// ln g(1 + u), exact in u (−∞ for u ≤ −1).
    pub(crate) fn ln_u(&self, u: f64) -> f64 {
        if u <= -1.0 {
            return f64::NEG_INFINITY;
        }
        self.ln_const + self.nu * ln1p_minus_quadratic(u) - u.ln_1p()
    }

    /// Points that split [0, ∞) where g has its mass (steps of sd/2 around 1).
    fn breaks(&self) -> Vec<f64> {
        let sd = (0.5 / self.nu).sqrt();
        (-24..=24).map(|j| 1.0 + j as f64 * 0.5 * sd).collect()
    }

    /// The range outside which g is negligible (below e⁻⁷⁰⁰ of its peak, roughly).
    fn range(&self) -> (f64, f64) {
        let sd = (0.5 / self.nu).sqrt();
        (
            (1.0 - 40.0 * sd).max(0.0),
            1.0 + 40.0 * sd + 40.0 / self.nu.min(1.0),
        )
    }
}

/// ln(1 + u) − u − u²/2, to full relative precision near u = 0 (series for |u| < 0.1:
/// −u² + u³/3 − u⁴/4 + …).
fn ln1p_minus_quadratic(u: f64) -> f64 {
    if u.abs() >= 0.1 {
        return u.ln_1p() - u - 0.5 * u * u;
    }
    let mut sum = -u * u;
    let mut pow = -u * u; // (−1)^{k+1} u^k for k = 2
    for k in 3..40 {
        pow *= -u;
        let term = pow / k as f64;
        sum += term;
        if term.abs() <= 1e-17 * sum.abs() {
            break;
        }
    }
    sum
}

/// ln Φ(z), also far in the lower tail (asymptotic series below −30).
fn ln_norm_cdf(z: f64) -> f64 {
    if z > -30.0 {
        norm_cdf(z).ln()
    } else {
        let z2 = z * z;
        -0.5 * z2 - (-z).ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
            + (1.0 - 1.0 / z2 + 3.0 / (z2 * z2) - 15.0 / (z2 * z2 * z2)).ln()
    }
}

/// The maximum of a function that is unimodal on [lo, hi] (golden-section search).
fn argmax(lo: f64, hi: f64, h: impl Fn(f64) -> f64) -> f64 {
    let g = 0.5 * (5f64.sqrt() - 1.0);
    let (mut a, mut b) = (lo, hi);
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut hc, mut hd) = (h(c), h(d));
    for _ in 0..200 {
        if b - a <= 1e-12 * (1.0 + a.abs()) {
            break;
        }
        if hc > hd {
            b = d;
            d = c;
            hd = hc;
            c = b - g * (b - a);
            hc = h(c);
        } else {
            a = c;
            c = d;
            hc = hd;
            d = a + g * (b - a);
            hd = h(d);
        }
    }
    0.5 * (a + b)
}

/// P(T ≤ t) (or P(T > t) when `upper`) of the noncentral t as E[Φ(±(t·S − δ))] over
/// S = √(χ²_ν/ν): adaptive Gauss–Kronrod quadrature of a positive integrand, split densely
/// around the peak of its logarithm (which is concave for ν ≥ 1) and around the mass of S,
/// to a relative accuracy of about 1e-12 — so tails far below 1e-100 keep their digits.
pub(crate) fn chi_mixture(t: f64, df: f64, nc: f64, upper: bool) -> f64 {
    let g = SdDensity::new(df);
    // In u = s − 1, so that nodes keep full precision when S is concentrated near 1.
    let ln_f = |u: f64| {
        let z = t + t * u - nc;
        ln_norm_cdf(if upper { -z } else { z }) + g.ln_u(u)
    };
    let (lo, hi) = g.range();
    let (lo, hi) = (lo - 1.0, hi - 1.0);
    let peak = argmax(lo, hi, ln_f);
    let top = ln_f(peak);
    if top == f64::NEG_INFINITY || top.is_nan() {
        return 0.0;
    }
    let s_peak = (1.0 + peak).max(1e-150);
    let width = 1.0 / (t * t + df + (df - 1.0).max(0.0) / (s_peak * s_peak)).sqrt();
    // ln f is concave: ±40 widths around its peak hold the mass (the width is at most the
    // sd of S, so this also covers S's own spread).
    let mut breaks: Vec<f64> = (-20..=20).map(|j| peak + j as f64 * width).collect();
    breaks.extend([-40.0, -30.0, -25.0, 25.0, 30.0, 40.0].map(|j| peak + j * width));
    // (tighter would chase rounding noise: the integrand carries a relative ~1e-15)
    let tol = (1e-13 * top.exp() * width).max(1e-320);
    integrate_pieces(|u| ln_f(u).exp(), lo, hi, &breaks, tol).clamp(0.0, 1.0)
}

/// Below this the complement 1 − F computed from the series (absolute error ≈ 1e-14) loses
/// relative accuracy; such tails are integrated instead.
const TAIL_BY_QUADRATURE: f64 = 1e-3;

fn nct_cdf_nonneg(t: f64, df: f64, nc: f64) -> f64 {
    let base = norm_cdf(-nc);
    if t == 0.0 {
        return base;
    }
    let x = t * t / (t * t + df);
    let b = df / 2.0;
    if nc == 0.0 {
        return base + 0.5 * beta_reg(0.5, b, x);
    }
    let lam = nc * nc / 2.0;
    let ln_lam = lam.ln();
    // j·ln λ with 0·ln 0 = 0 (λ underflows to 0 for tiny noncentralities).
    let jl = |j: f64| if j == 0.0 { 0.0 } else { j * ln_lam };
    let term = |j: f64| -> f64 {
        let lp = -lam + jl(j) - ln_gamma(j + 1.0);
        let lq = -lam + jl(j) - ln_gamma(j + 1.5);
        let p = lp.exp();
        let q = nc / std::f64::consts::SQRT_2 * lq.exp();
        p * beta_reg(j + 0.5, b, x) + q * beta_reg(j + 1.0, b, x)
    };
    let weight = |j: f64| -> f64 {
        let lp = -lam + jl(j) - ln_gamma(j + 1.0);
        let lq = -lam + jl(j) - ln_gamma(j + 1.5);
        lp.exp() + (nc.abs() / std::f64::consts::SQRT_2) * lq.exp()
    };
    let mode = lam.floor();
    let mut sum = 0.0;
    // Forward from the mode.
    let mut j = mode;
    loop {
        sum += term(j);
        j += 1.0;
        if weight(j) < 1e-18 * sum.abs().max(1e-300) || j > mode + 1e5 {
            break;
        }
    }
    // Backward from the mode.
    let mut j = mode - 1.0;
    while j >= 0.0 {
        sum += term(j);
        if weight(j) < 1e-18 * sum.abs().max(1e-300) || j < mode - 1e5 {
            break;
        }
        j -= 1.0;
    }
    (base + 0.5 * sum).clamp(0.0, 1.0)
}

/// statsmodels' alternative names: `larger` = greater, `smaller` = less.
fn tails(alt: Alternative, alpha: f64) -> (bool, bool, f64) {
    match alt {
        Alternative::TwoSided => (true, true, alpha / 2.0),
        Alternative::Greater => (true, false, alpha),
        Alternative::Less => (false, true, alpha),
    }
}

/// statsmodels' `ttest_power`: power of a t-test whose statistic is noncentral t with
/// noncentrality `effect·√nobs` on `df` degrees of freedom.
fn t_power(effect: f64, nobs: f64, df: f64, alpha: f64, alt: Alternative) -> f64 {
    if df.is_nan() || df <= 0.0 || alpha.is_nan() || alpha <= 0.0 || alpha >= 1.0 || effect.is_nan()
    {
        return f64::NAN;
    }
    let nc = if effect == 0.0 {
        0.0
    } else {
        effect * nobs.sqrt()
    };
    let (upper, lower, a) = tails(alt, alpha);
    let crit = t_ppf(a, df);
    if crit.is_nan() {
        return f64::NAN;
    }
    let mut p = 0.0;
    if upper {
        p += nct_sf(-crit, df, nc);
    }
    if lower {
        p += nct_cdf(crit, df, nc);
    }
    p
}

/// Power of the two-sample t-test with `n1` per group (the other has `ratio · n1`) for
/// standardized effect `effect` at level `alpha` (`TTestIndPower().power`). Two-sided power
/// counts both tails.
pub fn ttest_ind_power(effect: f64, n1: f64, alpha: f64, ratio: f64, alt: Alternative) -> f64 {
    let n2 = n1 * ratio;
    let nobs = 1.0 / (1.0 / n1 + 1.0 / n2);
    t_power(effect, nobs, n1 + n2 - 2.0, alpha, alt)
}

/// Power of the one-sample t-test, i.e. of the paired t-test on the differences, with `n`
/// pairs for the standardized effect d_z = mean / sd of the differences at level `alpha`
/// (`TTestPower().power`, df = n − 1). Two-sided power counts both tails.
pub fn ttest_paired_power(effect: f64, n: f64, alpha: f64, alt: Alternative) -> f64 {
    t_power(effect, n, n - 1.0, alpha, alt)
}

/// Root of a function increasing on [lo, hi] (bisection to the last bit).
fn bisect(mut lo: f64, mut hi: f64, f: impl Fn(f64) -> f64) -> f64 {
    for _ in 0..300 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if f(mid) < 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Result of a power calculation (`stats power`).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Power {
    /// Standardized effect (Cohen's d).
    pub effect: f64,
    /// Significance level.
    pub alpha: f64,
    /// Observations per group (real-valued when solved).
    pub n: f64,
    /// Power.
    pub power: f64,
    /// ⌈n⌉ when n was solved for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_ceil: Option<u64>,
}

/// Largest n per group a solve looks at.
pub const MAX_N: f64 = 1e5;

/// Whether a solve can have a root: a non-zero finite-or-infinite effect pointing the way of
/// a one-sided alternative, and a target power strictly between α and 1.
fn solvable(effect: f64, power: f64, alpha: f64, alt: Alternative) -> bool {
    let sign_ok = match alt {
        Alternative::TwoSided => effect != 0.0,
        Alternative::Greater => effect > 0.0,
        Alternative::Less => effect < 0.0,
    };
    sign_ok && !effect.is_nan() && power > alpha && power < 1.0 && alpha > 0.0 && alpha < 1.0
}

/// The n reaching `power` for a power function of n increasing from n = 1 (df = 0).
fn solve_n_with(power: f64, pw: impl Fn(f64) -> f64) -> Option<f64> {
    let f = |n: f64| pw(n) - power;
    let lo = 1.0 + 1e-9;
    if f(lo) >= 0.0 {
        return Some(lo);
    }
    // Doubling keeps the noncentrality near where the power crosses the target (the
    // series is slow for huge noncentralities).
    let hi = bracket(2.0, MAX_N, &f)?;
    Some(bisect((hi / 2.0).max(lo), hi, f))
}

/// The n per group reaching `power` (`TTestIndPower().solve_power(nobs1=None)`), as the real
/// root; `None` when no n up to [`MAX_N`] reaches it (e.g. effect 0, an effect of the wrong
/// sign for a one-sided alternative, or a target power not between α and 1).
pub fn solve_n(effect: f64, power: f64, alpha: f64, alt: Alternative) -> Option<f64> {
    if !solvable(effect, power, alpha, alt) {
        return None; // power is at most alpha whatever n
    }
    solve_n_with(power, |n| ttest_ind_power(effect, n, alpha, 1.0, alt))
}

/// The number of pairs reaching `power` in the paired t-test for effect d_z
/// (`TTestPower().solve_power(nobs=None)`), as the real root; `None` as for [`solve_n`].
pub fn solve_n_paired(effect: f64, power: f64, alpha: f64, alt: Alternative) -> Option<f64> {
    if !solvable(effect, power, alpha, alt) {
        return None;
    }
    solve_n_with(power, |n| ttest_paired_power(effect, n, alpha, alt))
}

/// The first of start, 2·start, 4·start, … (up to `max`) where `f` is positive.
fn bracket(start: f64, max: f64, f: &impl Fn(f64) -> f64) -> Option<f64> {
    let mut x = start;
    while x <= max {
        if f(x) > 0.0 {
            return Some(x);
        }
        x *= 2.0;
    }
    None
}

/// The effect reaching `power` for a power function of the effect (signed as the
/// alternative: negative for `Less`).
fn solve_effect_with(
    power: f64,
    alpha: f64,
    alt: Alternative,
    pw: impl Fn(f64) -> f64,
) -> Option<f64> {
    if !(power > alpha && power < 1.0) {
        return None;
    }
    let sign = if alt == Alternative::Less { -1.0 } else { 1.0 };
    let f = |d: f64| pw(sign * d) - power;
    let hi = bracket(1e-6, 1e3, &f)?;
    Some(sign * bisect(hi / 2.0, hi, f))
}

/// The smallest positive effect detectable with `power` at `n` per group (minimum
/// detectable effect; `solve_power(effect_size=None)`); negative for the alternative
/// `Less`, as statsmodels gives it. `None` when none up to 1000 is (n too small), or when
/// the target power is not between α and 1.
pub fn solve_effect(n: f64, power: f64, alpha: f64, alt: Alternative) -> Option<f64> {
    solve_effect_with(power, alpha, alt, |d| {
        ttest_ind_power(d, n, alpha, 1.0, alt)
    })
}

/// The minimum detectable effect d_z of the paired t-test with `n` pairs
/// (`TTestPower().solve_power(effect_size=None)`); signed and `None` as for [`solve_effect`].
pub fn solve_effect_paired(n: f64, power: f64, alpha: f64, alt: Alternative) -> Option<f64> {
    solve_effect_with(power, alpha, alt, |d| ttest_paired_power(d, n, alpha, alt))
}

/// Power for (effect, n) or the n for (effect, power), as `stats power` prints it.
pub fn power_analysis(
    effect: f64,
    n: Option<f64>,
    power: Option<f64>,
    alpha: f64,
) -> Option<Power> {
    let alt = Alternative::TwoSided;
    match (n, power) {
        (Some(n), _) => Some(Power {
            effect,
            alpha,
            n,
            power: ttest_ind_power(effect, n, alpha, 1.0, alt),
            n_ceil: None,
        }),
        (None, Some(p)) => {
            let n = solve_n(effect, p, alpha, alt)?;
            Some(Power {
                effect,
                alpha,
                n,
                power: p,
                n_ceil: Some(n.ceil() as u64),
            })
        }
        (None, None) => None,
    }
}

/// Φ(a) − Φ(b) for a ≥ b, from whichever tails keep it accurate.
fn norm_diff(a: f64, b: f64) -> f64 {
    if b >= 0.0 {
        norm_sf(b) - norm_sf(a)
    } else if a <= 0.0 {
        norm_cdf(a) - norm_cdf(b)
    } else {
        1.0 - norm_sf(a) - norm_cdf(b)
    }
}

/// Degrees of freedom and standard-error factor c (se = σ·c) of a TOST design with `n`
/// pairs (paired) or `n` per group (independent, pooled).
fn tost_design(design: Design, n: f64) -> (f64, f64) {
    match design {
        Design::Paired => (n - 1.0, 1.0 / n.sqrt()),
        Design::Independent => (2.0 * n - 2.0, (2.0 / n).sqrt()),
    }
}

/// Exact power of TOST at level `alpha` to show equivalence within ±δ, for `margin` = δ/σ,
/// `n` pairs (`Design::Paired`: the one-sample test on the differences, df n − 1) or `n`
/// per group (`Design::Independent`: the pooled equal-n test, df 2n − 2, se σ√(2/n)), when
/// the true difference is `true_diff` (in σ units; 0 for identical means).
///
/// TOST rejects both one-sided nulls when −δ + t_c·s·c < d̄ < δ − t_c·s·c (t_c the upper α
/// quantile of t_df); d̄ ~ N(θ, σ²c²) is independent of s, so the power is
/// E_s[max(0, Φ((δ − t_c s c − θ)/(σc)) − Φ((−δ + t_c s c − θ)/(σc)))] with df·s²/σ² ~ χ²_df,
/// integrated over s by adaptive Gauss–Kronrod quadrature (absolute error ≈ 1e-13).
/// NaN for n < 2, a margin that is not positive and finite, α outside (0, ½) or a
/// non-finite true difference.
pub fn tost_power(design: Design, margin: f64, n: u64, alpha: f64, true_diff: f64) -> f64 {
    if n < 2
        || margin.is_nan()
        || margin <= 0.0
        || margin.is_infinite()
        || alpha.is_nan()
        || alpha <= 0.0
        || alpha >= 0.5
        || !true_diff.is_finite()
    {
        return f64::NAN;
    }
    let (nu, c) = tost_design(design, n as f64);
    let tc = -t_ppf(alpha, nu);
    if tc.is_nan() || tc <= 0.0 {
        return f64::NAN;
    }
    // Beyond s = δ/(t_c c) the interval d̄ ± t_c s c cannot fit inside ±δ.
    let upper = margin / (tc * c);
    let g = SdDensity::new(nu);
    let f = |s: f64| {
        let a = (margin - tc * c * s - true_diff) / c;
        let b = (-margin + tc * c * s - true_diff) / c;
        if a <= b {
            return 0.0;
        }
        let p = norm_diff(a, b);
        if p <= 0.0 {
            0.0
        } else {
            p * g.ln(s).exp()
        }
    };
    integrate_pieces(f, 0.0, upper, &g.breaks(), 1e-14).clamp(0.0, 1.0)
}

/// The smallest n (pairs, or per group) at which [`tost_power`] reaches `power`, searching
/// n = 2, 4, 8, … up to [`MAX_N`] and then bisecting (TOST power grows with n when
/// |true_diff| < margin). `None` when |true_diff| ≥ margin (the power never exceeds α), the
/// target is not in (0, 1), the inputs are invalid, or no n up to [`MAX_N`] reaches it.
pub fn tost_solve_n(
    design: Design,
    margin: f64,
    power: f64,
    alpha: f64,
    true_diff: f64,
) -> Option<u64> {
    if !(power > 0.0 && power < 1.0 && true_diff.abs() < margin) {
        return None;
    }
    let reaches = |n: u64| tost_power(design, margin, n, alpha, true_diff) >= power;
    if tost_power(design, margin, 2, alpha, true_diff).is_nan() {
        return None;
    }
    if reaches(2) {
        return Some(2);
    }
    let (mut lo, mut hi) = (2u64, 4u64);
    while !reaches(hi) {
        if hi as f64 >= MAX_N {
            return None;
        }
        lo = hi;
        hi = (hi * 2).min(MAX_N as u64);
    }
    // reaches(hi), not reaches(lo)
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if reaches(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn central_case_is_students_t() {
        for &t in &[-2.5, -0.3, 0.0, 0.7, 3.1] {
            let want = super::super::t_cdf(t, 7.0);
            let got = nct_cdf(t, 7.0, 0.0);
            assert!((got - want).abs() < 1e-13, "{t}: {got:e} vs {want:e}");
        }
    }

    #[test]
    fn power_rises_with_n_and_solving_inverts_it() {
        let p10 = ttest_ind_power(0.8, 10.0, 0.05, 1.0, Alternative::TwoSided);
        let p30 = ttest_ind_power(0.8, 30.0, 0.05, 1.0, Alternative::TwoSided);
        assert!(p10 < p30 && p30 < 1.0);
        let n = solve_n(0.8, 0.8, 0.05, Alternative::TwoSided).unwrap();
        let back = ttest_ind_power(0.8, n, 0.05, 1.0, Alternative::TwoSided);
        assert!((back - 0.8).abs() < 1e-10);
        let d = solve_effect(n, 0.8, 0.05, Alternative::TwoSided).unwrap();
        assert!((d - 0.8).abs() < 1e-8);
        assert!(solve_n(0.0, 0.8, 0.05, Alternative::TwoSided).is_none());
    }

    #[test]
    fn series_and_quadrature_agree_where_they_meet() {
        // Either side of |nc| = 40, and a tail either side of 1e-3.
        for &(t, df, nc) in &[
            (39.0f64, 30.0, 39.9),
            (41.0, 12.0, 39.99),
            (2.0, 5.0, 4.0),
            (-1.0, 8.0, 1.5),
        ] {
            let series = nct_cdf_nonneg(t.abs(), df, if t < 0.0 { -nc } else { nc });
            let series = if t < 0.0 { 1.0 - series } else { series };
            for upper in [false, true] {
                let q = chi_mixture(t, df, nc, upper);
                let s = if upper { 1.0 - series } else { series };
                assert!(
                    (q - s).abs() < 1e-12,
                    "t={t} df={df} nc={nc} upper={upper}: {q} vs {s}"
                );
            }
        }
        assert!((nct_cdf(40.0, 20.0, 40.000001) - nct_cdf(40.0, 20.0, 39.999999)).abs() < 1e-6);
        assert_eq!(nct_cdf(1.0, 5.0, f64::INFINITY), 0.0);
        assert_eq!(nct_sf(1.0, 5.0, f64::NEG_INFINITY), 0.0);
        assert!(nct_cdf(1.0, 5.0, f64::NAN).is_nan());
        // a tiny noncentrality is the central t, not NaN (0·ln 0)
        assert!((nct_cdf(1.3, 7.0, 1e-300) - nct_cdf(1.3, 7.0, 0.0)).abs() < 1e-15);
    }

    #[test]
    fn paired_power_is_the_one_sample_t_and_alternatives_mirror() {
        // With d_z, the paired test is the one-sample test with df n − 1.
        let p = ttest_paired_power(0.7, 12.0, 0.05, Alternative::Greater);
        let q = ttest_paired_power(-0.7, 12.0, 0.05, Alternative::Less);
        assert!((p - q).abs() < 1e-14 && p > 0.5 && p < 1.0);
        let two = ttest_paired_power(0.7, 12.0, 0.05, Alternative::TwoSided);
        let wrong = ttest_paired_power(0.7, 12.0, 0.025, Alternative::Less);
        let right = ttest_paired_power(0.7, 12.0, 0.025, Alternative::Greater);
        assert!((two - wrong - right).abs() < 1e-14);
        assert!((ttest_paired_power(0.0, 12.0, 0.05, Alternative::TwoSided) - 0.05).abs() < 1e-12);
        // one-sided solves with the wrong sign, or targets not above α, have no root
        assert!(solve_n_paired(0.5, 0.8, 0.05, Alternative::Less).is_none());
        assert!(solve_n(-0.5, 0.8, 0.05, Alternative::Greater).is_none());
        assert!(solve_n_paired(0.5, 0.04, 0.05, Alternative::TwoSided).is_none());
        assert!(solve_effect_paired(10.0, 0.05, 0.05, Alternative::TwoSided).is_none());
        let n = solve_n_paired(0.5, 0.8, 0.05, Alternative::TwoSided).unwrap();
        let d = solve_effect_paired(n, 0.8, 0.05, Alternative::TwoSided).unwrap();
        assert!((d - 0.5).abs() < 1e-8, "{d}");
    }

    #[test]
    fn every_solver_terminates_on_extreme_input() {
        let alts = [
            Alternative::TwoSided,
            Alternative::Greater,
            Alternative::Less,
        ];
        for &e in &[
            1e300,
            -1e300,
            1e-300,
            -1e-300,
            f64::INFINITY,
            f64::NAN,
            0.0,
            1e-8,
        ] {
            for &alt in &alts {
                for &(p, a) in &[
                    (0.8, 0.05),
                    (0.999999, 1e-10),
                    (0.5, 0.3),
                    (1.0, 0.05),
                    (f64::NAN, 0.05),
                ] {
                    let n = solve_n(e, p, a, alt);
                    let m = solve_n_paired(e, p, a, alt);
                    for r in [n, m].into_iter().flatten() {
                        assert!((1.0..=MAX_N).contains(&r), "{e} {alt:?} {p} {a}: {r}");
                    }
                    let _ = ttest_ind_power(e, 10.0, a, 1.0, alt);
                    let pw = ttest_paired_power(e, 10.0, a, alt);
                    assert!(pw.is_nan() || (0.0..=1.0 + 1e-12).contains(&pw), "{pw}");
                }
            }
        }
        for &n in &[1.0, 1.0 + 1e-12, 2.0, 1e300, f64::INFINITY, f64::NAN, 0.5] {
            for &alt in &alts {
                let _ = solve_effect(n, 0.8, 0.05, alt);
                let _ = solve_effect_paired(n, 0.8, 0.05, alt);
            }
        }
        // effect 1e300 reaches any power at once; 1e-300 never does
        assert!(solve_n_paired(1e300, 0.8, 0.05, Alternative::TwoSided).unwrap() < 3.0);
        assert!(solve_n_paired(1e-300, 0.8, 0.05, Alternative::TwoSided).is_none());
        for &m in &[1e-300, 1e-8, 1.0, 1e300, f64::INFINITY] {
            for &th in &[0.0, 0.5, 1e300] {
                for design in [Design::Paired, Design::Independent] {
                    let p = tost_power(design, m, 10, 0.05, th);
                    assert!(p.is_nan() || (0.0..=1.0).contains(&p));
                    let _ = tost_solve_n(design, m, 0.8, 0.05, th);
                }
            }
        }
    }

    #[test]
    fn tost_power_behaves() {
        for design in [Design::Paired, Design::Independent] {
            // at the margin the size is at most α (exactly α in the limit n → ∞)
            let at = tost_power(design, 0.5, 200, 0.05, 0.5);
            assert!(at <= 0.05 + 1e-12 && at > 0.045, "{at}");
            // symmetric in the true difference, rising with n and with the margin
            let a = tost_power(design, 1.0, 15, 0.05, 0.3);
            let b = tost_power(design, 1.0, 15, 0.05, -0.3);
            assert!((a - b).abs() < 1e-13);
            assert!(tost_power(design, 1.0, 30, 0.05, 0.3) > a);
            assert!(tost_power(design, 1.2, 15, 0.05, 0.3) > a);
            assert!(tost_power(design, 1.0, 15, 0.05, 0.0) > a);
            // solved n is the first to reach the target
            let n = tost_solve_n(design, 0.8, 0.9, 0.05, 0.1).unwrap();
            assert!(tost_power(design, 0.8, n, 0.05, 0.1) >= 0.9);
            assert!(tost_power(design, 0.8, n - 1, 0.05, 0.1) < 0.9);
            assert!(tost_solve_n(design, 0.8, 0.9, 0.05, 0.8).is_none());
            assert!(tost_power(design, 1.0, 1, 0.05, 0.0).is_nan());
            assert!(tost_power(design, -1.0, 10, 0.05, 0.0).is_nan());
            assert!(tost_power(design, 1.0, 10, 0.6, 0.0).is_nan());
        }
        // the paired design with n pairs beats the independent one with n per group
        assert!(
            tost_power(Design::Paired, 1.0, 10, 0.05, 0.0)
                > tost_power(Design::Independent, 1.0, 10, 0.05, 0.0)
        );
    }
}
