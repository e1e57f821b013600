//! Power of the two-sample t-test, as statsmodels' `TTestIndPower` (equal group sizes by
//! default): power for (n, d, α), the n per group for a target power (real root and its
//! ceiling), and the minimum detectable effect at a given n. Needs the noncentral t, which
//! statrs lacks; it is written here (Poisson-weighted incomplete-beta series).

use super::{norm_cdf, t_ppf, Alternative};
use serde::Serialize;
use statrs::function::beta::beta_reg;
use statrs::function::gamma::ln_gamma;

/// P(T ≤ t) for the noncentral t with `df` degrees of freedom and noncentrality `nc`.
///
/// For t ≥ 0: Φ(−δ) + ½ Σⱼ [Pⱼ I_x(j+½, ν/2) + Qⱼ I_x(j+1, ν/2)], x = t²/(t²+ν),
/// Pⱼ = e^{−δ²/2}(δ²/2)ʲ/j!, Qⱼ = δ e^{−δ²/2}(δ²/2)ʲ/(√2 Γ(j+3/2)) (Lenth 1989), summed
/// outward from the Poisson mode until the weights vanish; t < 0 by F(t; ν, δ) = 1 − F(−t; ν, −δ).
pub fn nct_cdf(t: f64, df: f64, nc: f64) -> f64 {
    if t.is_nan() || df.is_nan() || nc.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if t == f64::INFINITY {
        return 1.0;
    }
    if t == f64::NEG_INFINITY {
        return 0.0;
    }
    if t < 0.0 {
        return 1.0 - nct_cdf_nonneg(-t, df, -nc);
    }
    nct_cdf_nonneg(t, df, nc)
}

/// P(T > t) for the noncentral t.
pub fn nct_sf(t: f64, df: f64, nc: f64) -> f64 {
    if t.is_nan() || df.is_nan() || nc.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if t < 0.0 {
        return nct_cdf_nonneg(-t, df, -nc);
    }
    1.0 - nct_cdf_nonneg(t, df, nc)
}

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
    let term = |j: f64| -> f64 {
        let lp = -lam + j * ln_lam - ln_gamma(j + 1.0);
        let lq = -lam + j * ln_lam - ln_gamma(j + 1.5);
        let p = lp.exp();
        let q = nc / std::f64::consts::SQRT_2 * lq.exp();
        p * beta_reg(j + 0.5, b, x) + q * beta_reg(j + 1.0, b, x)
    };
    let weight = |j: f64| -> f64 {
        let lp = -lam + j * ln_lam - ln_gamma(j + 1.0);
        let lq = -lam + j * ln_lam - ln_gamma(j + 1.5);
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
        if weight(j) < 1e-18 * sum.abs().max(1e-300) {
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

/// Power of the two-sample t-test with `n1` per group (the other has `ratio · n1`) for
/// standardized effect `effect` at level `alpha` (`TTestIndPower().power`). Two-sided power
/// counts both tails.
pub fn ttest_ind_power(effect: f64, n1: f64, alpha: f64, ratio: f64, alt: Alternative) -> f64 {
    let n2 = n1 * ratio;
    let df = n1 + n2 - 2.0;
    if df <= 0.0 || !(0.0..1.0).contains(&alpha) || alpha == 0.0 {
        return f64::NAN;
    }
    let nobs = 1.0 / (1.0 / n1 + 1.0 / n2);
    let nc = effect * nobs.sqrt();
    let (upper, lower, a) = tails(alt, alpha);
    let mut p = 0.0;
    if upper {
        p += nct_sf(-t_ppf(a, df), df, nc);
    }
    if lower {
        p += nct_cdf(t_ppf(a, df), df, nc);
    }
    p
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

/// The n per group reaching `power` (`TTestIndPower().solve_power(nobs1=None)`), as the real
/// root; `None` when no n up to [`MAX_N`] reaches it (e.g. effect 0).
pub fn solve_n(effect: f64, power: f64, alpha: f64, alt: Alternative) -> Option<f64> {
    if effect == 0.0 || effect.is_nan() {
        return None; // power is alpha whatever n
    }
    let f = |n: f64| ttest_ind_power(effect, n, alpha, 1.0, alt) - power;
    let lo = 1.0 + 1e-9;
    if f(lo) >= 0.0 {
        return Some(lo);
    }
    // Doubling keeps the noncentrality near where the power crosses the target (the
    // series is slow for huge noncentralities).
    let hi = bracket(2.0, MAX_N, &f)?;
    Some(bisect((hi / 2.0).max(lo), hi, f))
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

/// The smallest positive effect detectable with `power` at `n` per group (minimum
/// detectable effect; `solve_power(effect_size=None)`).
pub fn solve_effect(n: f64, power: f64, alpha: f64, alt: Alternative) -> Option<f64> {
    let sign = if alt == Alternative::Less { -1.0 } else { 1.0 };
    let f = |d: f64| ttest_ind_power(sign * d, n, alpha, 1.0, alt) - power;
    let hi = bracket(1e-6, 1e3, &f)?;
    Some(sign * bisect(hi / 2.0, hi, f))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn central_case_is_students_t() {
        for &t in &[-2.5, -0.3, 0.0, 0.7, 3.1] {
            let want = super::super::t_cdf(t, 7.0);
            assert!((nct_cdf(t, 7.0, 0.0) - want).abs() < 1e-13, "{t}");
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
}
