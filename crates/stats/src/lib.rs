//! Statistics following scipy 1.17 / statsmodels 0.15 conventions
//! (`../shared/design/statistics.md`). Every directional quantity is **x minus y**.
//!
//! Descriptive statistics with t intervals; two-sample and paired tests (Welch, Student,
//! Mann–Whitney U, paired t, Wilcoxon signed-rank; [`ttest`], [`rank`]); k-sample tests
//! with the Conover post-hoc ([`kgroups`]); two-way ANOVA, type II ([`anova2`]);
//! multiple-comparison adjustments ([`multitest`]); effect sizes ([`effect`]); seeded
//! bootstrap intervals ([`resample`]); Almost Stochastic Order ([`aso`]); power of the
//! t-test ([`power`]); variance components and the winner's curse ([`noise`]).
//! Degenerate input gives what scipy gives (NaN where it gives NaN), never a panic.

pub mod anova2;
pub mod aso;
pub mod compare;
pub mod effect;
pub mod expected;
pub mod kgroups;
pub mod multitest;
pub mod noise;
pub mod power;
pub mod rank;
pub mod resample;
pub mod seed;
pub mod ttest;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};
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

/// P(T ≤ t) for Student's t with `df` degrees of freedom, accurate in the lower tail.
pub fn t_cdf(t: f64, df: f64) -> f64 {
    match StudentsT::new(0.0, 1.0, df) {
        Ok(d) if !t.is_nan() => d.cdf(t),
        _ => f64::NAN,
    }
}

/// P(T > t), accurate in the upper tail (never 1 − cdf).
pub fn t_sf(t: f64, df: f64) -> f64 {
    t_cdf(-t, df)
}

/// The `q` quantile of Student's t.
pub fn t_ppf(q: f64, df: f64) -> f64 {
    match StudentsT::new(0.0, 1.0, df) {
        Ok(d) if (0.0..=1.0).contains(&q) => d.inverse_cdf(q),
        _ => f64::NAN,
    }
}

/// P(Z > z) for the standard normal, accurate in the upper tail.
pub fn norm_sf(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    Normal::new(0.0, 1.0).expect("standard normal").sf(z)
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
    pub n: usize,
    pub mean: f64,
    pub sd: f64,
    pub ci: Interval,
}

/// A confidence interval.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Interval {
    pub level: f64,
    pub low: f64,
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
