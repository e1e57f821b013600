//! Statistics following scipy 1.17 / statsmodels 0.15 conventions
//! (`../shared/design/statistics.md`). Every directional quantity is **x minus y**.
//!
//! Descriptive statistics with t intervals; two-sample and paired tests (Welch, Student,
//! Mann–Whitney U, paired t, Wilcoxon signed-rank; [`ttest`], [`rank`]); the exact sign
//! test and the smallest p-values exact rank tests can reach ([`exact`]); k-sample tests
//! with the Conover post-hoc ([`kgroups`]); type II ANOVA of one to three crossed factors
//! with an optional additive block, and estimated-marginal-mean contrasts on the fit
//! ([`anova`]; the two-way special case [`anova2`]); repeated-measures ANOVA with the
//! Greenhouse–Geisser correction ([`anova_rm`]); margin tests — minimum-effect, TOST
//! equivalence — and the verdict they give ([`margin`]); multiple-comparison adjustments
//! ([`multitest`]); effect sizes ([`effect`]); seeded bootstrap intervals ([`resample`]);
//! Almost Stochastic Order ([`aso`]); power of the two-sample and paired t-tests and of TOST
//! ([`power`]); variance components, the gene × seed interaction sd and the winner's curse
//! ([`noise`]); the expected best of n trials, with failures and a bootstrap band
//! ([`expected`]); seed derivation ([`seed`]); the `stats compare` bundle ([`compare`]).
//! Degenerate input gives what scipy gives (NaN where it gives NaN), never a panic.

#![warn(missing_docs)]

pub mod anova;
pub mod anova2;
pub mod anova_rm;
pub mod aso;
pub mod compare;
pub mod correlation;
pub mod effect;
pub mod exact;
pub mod expected;
pub mod kgroups;
pub mod margin;
pub mod multitest;
pub mod noise;
pub mod power;
mod quad;
pub mod rank;
pub mod resample;
pub mod seed;
pub mod ttest;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};
use statrs::function::gamma::checked_gamma_ur;
use std::str::FromStr;

/// The alternative hypothesis, about x − y.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Alternative {
    /// x and y differ.
    TwoSided,
    /// x is smaller than y (for perplexity: x is better).
    Less,
    /// x is larger than y.
    Greater,
}

impl FromStr for Alternative {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "two-sided" => Ok(Alternative::TwoSided),
            "less" => Ok(Alternative::Less),
            "greater" => Ok(Alternative::Greater),
            o => anyhow::bail!("unknown alternative `{o}`; use two-sided, less or greater"),
        }
    }
}

/// Arithmetic mean (NaN for an empty sample).
pub fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        return f64::NAN;
    }
    x.iter().sum::<f64>() / x.len() as f64
}

/// Mean and sample sd (n − 1); NaN where undefined.
pub fn mean_sd(x: &[f64]) -> (f64, f64) {
    (mean(x), var(x).sqrt())
}

/// Sample variance with n − 1 in the denominator (NaN for n < 2).
pub fn var(x: &[f64]) -> f64 {
    let n = x.len();
    if n < 2 {
        return f64::NAN;
    }
    let m = mean(x);
    x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1) as f64
}

/// Above this many degrees of freedom statrs' incomplete beta (continued fraction) loses
/// digits for the t distribution, and its t quantile more: t_cdf integrates over the χ
/// mixing distribution instead and t_ppf refines by Newton steps on that cdf.
pub(crate) const T_LARGE_DF: f64 = 1e4;

/// P(T ≤ t) for Student's t with `df` degrees of freedom, accurate in the lower tail
/// (statrs' incomplete beta up to df = 10⁴, then E[Φ(t·S)] over S = √(χ²_df/df) by
/// quadrature, and the normal beyond df = 10²⁰).
pub fn t_cdf(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if df > power::NORMAL_DF {
        return norm_cdf(t);
    }
    if df > T_LARGE_DF {
        if t.is_infinite() {
            return if t > 0.0 { 1.0 } else { 0.0 };
        }
        return power::chi_mixture(t, df, 0.0, false);
    }
    match StudentsT::new(0.0, 1.0, df) {
        Ok(d) => d.cdf(t),
        _ => f64::NAN,
    }
}

/// P(T > t), accurate in the upper tail (never 1 − cdf).
pub fn t_sf(t: f64, df: f64) -> f64 {
    t_cdf(-t, df)
}

/// The `q` quantile of Student's t (statrs' up to df = 10⁴; beyond, the Cornish–Fisher
/// expansion around the normal quantile refined by Newton steps on [`t_cdf`]; the normal
/// quantile beyond df = 10²⁰).
pub fn t_ppf(q: f64, df: f64) -> f64 {
    if q.is_nan() || df.is_nan() || df <= 0.0 || !(0.0..=1.0).contains(&q) {
        return f64::NAN;
    }
    if df <= T_LARGE_DF {
        return match StudentsT::new(0.0, 1.0, df) {
            Ok(d) => d.inverse_cdf(q),
            _ => f64::NAN,
        };
    }
    if q == 0.0 {
        return f64::NEG_INFINITY;
    }
    if q == 1.0 {
        return f64::INFINITY;
    }
    if q > 0.5 {
        return -t_ppf(1.0 - q, df); // exact subtraction for q ≥ ½
    }
    let z = Normal::new(0.0, 1.0)
        .expect("standard normal")
        .inverse_cdf(q);
    if df > power::NORMAL_DF {
        return z;
    }
    let (z3, z5) = (z * z * z, z * z * z * z * z);
    let mut x = z + (z3 + z) / (4.0 * df) + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * df * df);
    for _ in 0..6 {
        // density of t (normal-based; only the convergence speed depends on it)
        let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
            * (1.0 + (x.powi(4) - 2.0 * x * x - 1.0) / (4.0 * df));
        let step = (t_cdf(x, df) - q) / pdf;
        if !step.is_finite() {
            break;
        }
        x -= step;
        if step.abs() <= 1e-15 * x.abs() {
            break;
        }
    }
    x
}

/// P(Z > z) for the standard normal, accurate in the upper tail: ½·Q(½, z²/2) with the
/// regularized upper incomplete gamma Q (relative error ≈ 1e-14; statrs' erfc-based normal
/// sf is off by up to ~1e-11), and for |z| > 37 (sf below 1e-300, where Q underflows, or 1)
/// statrs'.
pub fn norm_sf(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    if z == f64::INFINITY {
        return 0.0;
    }
    if z == f64::NEG_INFINITY {
        return 1.0;
    }
    if z.abs() > 37.0 {
        return Normal::new(0.0, 1.0).expect("standard normal").sf(z);
    }
    let x = 0.5 * z * z;
    let q = if x == 0.0 {
        0.5
    } else {
        0.5 * checked_gamma_ur(0.5, x).unwrap_or(f64::NAN)
    };
    if z >= 0.0 {
        q
    } else {
        1.0 - q
    }
}

/// P(Z ≤ z) for the standard normal.
pub fn norm_cdf(z: f64) -> f64 {
    norm_sf(-z)
}

/// The p-value of a statistic with a symmetric null distribution given its cdf and sf,
/// for an alternative (two-sided: twice the smaller tail, capped at 1).
pub(crate) fn pvalue(
    stat: f64,
    alt: Alternative,
    cdf: impl Fn(f64) -> f64,
    sf: impl Fn(f64) -> f64,
) -> f64 {
    if stat.is_nan() {
        return f64::NAN;
    }
    match alt {
        Alternative::Less => cdf(stat),
        Alternative::Greater => sf(stat),
        Alternative::TwoSided => (2.0 * sf(stat.abs())).min(1.0),
    }
}

/// Summary of one sample with a t-based confidence interval of its mean.
#[derive(Debug, Clone, Serialize)]
pub struct Describe {
    /// Observations.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Sample sd (n − 1).
    pub sd: f64,
    /// t interval of the mean.
    pub ci: Interval,
}

/// A confidence interval.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Interval {
    /// Confidence level, e.g. 0.95.
    pub level: f64,
    /// Lower end.
    pub low: f64,
    /// Upper end.
    pub high: f64,
}

/// n, mean, sd (n − 1) and the t interval mean ± t_{(1+level)/2, n−1}·sd/√n.
pub fn describe(x: &[f64], level: f64) -> Describe {
    let n = x.len();
    let m = mean(x);
    let sd = var(x).sqrt();
    let half = t_ppf(0.5 + level / 2.0, n as f64 - 1.0) * sd / (n as f64).sqrt();
    Describe {
        n,
        mean: m,
        sd,
        ci: Interval {
            level,
            low: m - half,
            high: m + half,
        },
    }
}

/// The equal-tailed interval of a standard deviation `sd` estimated on `df` degrees of
/// freedom: sd·√(df / χ²_{df, (1+level)/2}) to sd·√(df / χ²_{df, (1−level)/2}) (the
/// usual chi-square interval under normality). NaN ends for df ≤ 0 or a non-finite sd.
pub fn sd_interval(sd: f64, df: f64, level: f64) -> Interval {
    use statrs::distribution::ChiSquared;
    let nan = Interval {
        level,
        low: f64::NAN,
        high: f64::NAN,
    };
    if !(df > 0.0 && sd.is_finite() && level > 0.0 && level < 1.0) {
        return nan;
    }
    let Ok(c) = ChiSquared::new(df) else {
        return nan;
    };
    let q = |p: f64| c.inverse_cdf(p);
    Interval {
        level,
        low: sd * (df / q(0.5 + level / 2.0)).sqrt(),
        high: sd * (df / q(0.5 - level / 2.0)).sqrt(),
    }
}

/// d = x − y for a paired test; an error when the samples differ in length.
pub fn paired_differences(x: &[f64], y: &[f64]) -> anyhow::Result<Vec<f64>> {
    anyhow::ensure!(
        x.len() == y.len(),
        "a paired test needs samples of equal length ({} vs {})",
        x.len(),
        y.len()
    );
    Ok(x.iter().zip(y).map(|(a, b)| a - b).collect())
}

/// Checks that a sample holds only finite numbers; the error names the sample.
pub fn check_finite(name: &str, x: &[f64]) -> anyhow::Result<()> {
    if let Some(v) = x.iter().find(|v| !v.is_finite()) {
        anyhow::bail!(
            "{name} holds a non-finite value ({v}); remove it or record the run as diverged"
        );
    }
    Ok(())
}

#[cfg(test)]
mod sd_interval_tests {
    use super::sd_interval;

    /// scipy 1.17: sd·sqrt(df/chi2.ppf(0.975, df)), sd·sqrt(df/chi2.ppf(0.025, df)).
    #[test]
    fn matches_scipy_chi_square_quantiles() {
        for (sd, df, lo, hi) in [
            (4.21, 9.0, 2.8957862204132887, 7.685818868407406),
            (1.0, 3.0, 0.566489546602246, 3.728547275827744),
        ] {
            let i = sd_interval(sd, df, 0.95);
            assert!((i.low - lo).abs() < 1e-9 * lo, "{i:?}");
            assert!((i.high - hi).abs() < 1e-9 * hi, "{i:?}");
        }
        assert!(sd_interval(1.0, 0.0, 0.95).low.is_nan());
    }
}
