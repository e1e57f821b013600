//! Seeded bootstrap confidence intervals (percentile and BCa), as scipy's
//! `stats.bootstrap` defines them, for a statistic of two samples: independent samples are
//! resampled separately, paired samples by pair. Resample b draws from ChaCha8 keyed by
//! (seed, b), so intervals do not depend on the number of threads; resamples run in
//! parallel with rayon.

use super::norm_cdf;
use crate::seed::derive_seed;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};

/// Default number of resamples.
pub const DEFAULT_RESAMPLES: usize = 10_000;

/// Interval method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Quantiles of the bootstrap distribution.
    Percentile,
    /// Bias-corrected and accelerated (Efron 1987; jackknife acceleration).
    Bca,
}

/// A bootstrap interval.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct BootstrapCi {
    /// Method.
    pub method: Method,
    /// Resamples.
    pub resamples: usize,
    /// Confidence level.
    pub level: f64,
    /// Lower end.
    pub low: f64,
    /// Upper end.
    pub high: f64,
}

/// How the two samples relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Design {
    /// Independent samples, resampled separately.
    Independent,
    /// x[i] and y[i] belong together (same seed); pairs are resampled.
    Paired,
}

/// A statistic of (x, y).
pub type Statistic<'a> = &'a (dyn Fn(&[f64], &[f64]) -> f64 + Sync);

/// The bootstrap distribution: `resamples` values of `stat` on resampled data.
pub fn replicates(
    x: &[f64],
    y: &[f64],
    design: Design,
    stat: Statistic<'_>,
    resamples: usize,
    seed: u64,
) -> Vec<f64> {
    (0..resamples)
        .into_par_iter()
        .map(|b| {
            let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, &format!("bootstrap/{b}")));
            match design {
                Design::Independent => {
                    let xs: Vec<f64> = (0..x.len())
                        .map(|_| x[rng.random_range(0..x.len())])
                        .collect();
                    let ys: Vec<f64> = (0..y.len())
                        .map(|_| y[rng.random_range(0..y.len())])
                        .collect();
                    stat(&xs, &ys)
                }
                Design::Paired => {
                    let idx: Vec<usize> =
                        (0..x.len()).map(|_| rng.random_range(0..x.len())).collect();
                    let xs: Vec<f64> = idx.iter().map(|&i| x[i]).collect();
                    let ys: Vec<f64> = idx.iter().map(|&i| y[i]).collect();
                    stat(&xs, &ys)
                }
            }
        })
        .collect()
}

/// numpy's default (`linear`) percentile of sorted data, q in [0, 100].
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 || q.is_nan() {
        return f64::NAN;
    }
    let pos = (q / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    if lo == hi {
        sorted[lo]
    } else {
        // numpy's _lerp: a + (b − a)·t, switched to b − (b − a)·(1 − t) for t ≥ ½.
        let (a, b) = (sorted[lo], sorted[hi]);
        let d = b - a;
        if frac >= 0.5 {
            b - d * (1.0 - frac)
        } else {
            a + d * frac
        }
    }
}

fn ndtri(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    Normal::new(0.0, 1.0).expect("normal").inverse_cdf(p)
}

/// BCa's adjusted percentile levels (α₁, α₂) as scipy's `_bca_interval`: z₀ from the share
/// of replicates below the estimate (ties count half), acceleration from the jackknife of
/// each sample in turn (independent) or of the pairs (paired).
pub fn bca_levels(
    x: &[f64],
    y: &[f64],
    design: Design,
    stat: Statistic<'_>,
    theta_b: &[f64],
    level: f64,
) -> (f64, f64) {
    let theta = stat(x, y);
    let b = theta_b.len() as f64;
    let below = theta_b.iter().filter(|&&t| t < theta).count() as f64;
    let at_or_below = theta_b.iter().filter(|&&t| t <= theta).count() as f64;
    let z0 = ndtri((below + at_or_below) / (2.0 * b));
    let drop = |v: &[f64], i: usize| -> Vec<f64> {
        v.iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, &a)| a)
            .collect()
    };
    let jack: Vec<Vec<f64>> = match design {
        Design::Independent => vec![
            (0..x.len()).map(|i| stat(&drop(x, i), y)).collect(),
            (0..y.len()).map(|i| stat(x, &drop(y, i))).collect(),
        ],
        Design::Paired => vec![(0..x.len())
            .map(|i| stat(&drop(x, i), &drop(y, i)))
            .collect()],
    };
    let (mut num, mut den) = (0.0, 0.0);
    for th in &jack {
        let n = th.len() as f64;
        let dot = th.iter().sum::<f64>() / n;
        let u: Vec<f64> = th.iter().map(|t| (n - 1.0) * (dot - t)).collect();
        num += u.iter().map(|v| v.powi(3)).sum::<f64>() / n.powi(3);
        den += u.iter().map(|v| v.powi(2)).sum::<f64>() / n.powi(2);
    }
    let a = num / 6.0 / den.powf(1.5);
    let alpha = (1.0 - level) / 2.0;
    let z_a = ndtri(alpha);
    let n1 = z0 + z_a;
    let a1 = norm_cdf(z0 + n1 / (1.0 - a * n1));
    let n2 = z0 - z_a;
    let a2 = norm_cdf(z0 + n2 / (1.0 - a * n2));
    (a1, a2)
}

/// What interval to compute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spec {
    /// Percentile or BCa.
    pub method: Method,
    /// Resamples (default [`DEFAULT_RESAMPLES`]).
    pub resamples: usize,
    /// Confidence level.
    pub level: f64,
    /// Seed.
    pub seed: u64,
}

/// A bootstrap confidence interval of `stat`.
pub fn bootstrap_ci(
    x: &[f64],
    y: &[f64],
    design: Design,
    stat: Statistic<'_>,
    spec: Spec,
) -> BootstrapCi {
    let Spec {
        method,
        resamples,
        level,
        seed,
    } = spec;
    let nan = BootstrapCi {
        method,
        resamples,
        level,
        low: f64::NAN,
        high: f64::NAN,
    };
    if x.is_empty()
        || y.is_empty()
        || resamples == 0
        || (design == Design::Paired && x.len() != y.len())
    {
        return nan;
    }
    let mut theta_b = replicates(x, y, design, stat, resamples, seed);
    if theta_b.iter().any(|v| v.is_nan()) {
        return nan;
    }
    theta_b.sort_by(|a, b| a.total_cmp(b));
    let alpha = (1.0 - level) / 2.0;
    let (l, h) = match method {
        Method::Percentile => (alpha, 1.0 - alpha),
        Method::Bca => bca_levels(x, y, design, stat, &theta_b, level),
    };
    BootstrapCi {
        method,
        resamples,
        level,
        low: percentile_sorted(&theta_b, l * 100.0),
        high: percentile_sorted(&theta_b, h * 100.0),
    }
}

/// Mean of x minus mean of y (for paired data, the mean of the differences).
pub fn mean_diff(x: &[f64], y: &[f64]) -> f64 {
    super::mean(x) - super::mean(y)
}

/// The probability-of-improvement statistic for a direction.
pub fn prob_improvement_stat(higher_is_better: bool) -> impl Fn(&[f64], &[f64]) -> f64 + Sync {
    move |x: &[f64], y: &[f64]| super::effect::prob_improvement(x, y, higher_is_better)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64) -> Spec {
        Spec {
            method: Method::Bca,
            resamples: 2000,
            level: 0.95,
            seed,
        }
    }

    #[test]
    fn deterministic_and_independent_of_threads() {
        let x = [1.0, 2.0, 3.5, 4.0, 2.2];
        let y = [2.0, 2.5, 3.0, 5.0, 4.4];
        let a = bootstrap_ci(&x, &y, Design::Independent, &mean_diff, spec(7));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let b = pool.install(|| bootstrap_ci(&x, &y, Design::Independent, &mean_diff, spec(7)));
        assert_eq!(a, b);
        assert!(a.low < a.high);
        let c = bootstrap_ci(&x, &y, Design::Independent, &mean_diff, spec(8));
        assert_ne!(a, c);
    }

    #[test]
    fn probability_of_improvement_interval() {
        // Lower is better: x beats y in 20 of 25 pairs, so P(improvement) = 0.8.
        let x = [1.0, 2.0, 3.0, 4.0, 10.0];
        let y = [5.0, 6.0, 7.0, 8.0, 9.0];
        let stat = prob_improvement_stat(false);
        assert!((stat(&x, &y) - 0.8).abs() < 1e-12);
        let ci = bootstrap_ci(
            &x,
            &y,
            Design::Independent,
            &stat,
            Spec {
                method: Method::Percentile,
                resamples: 2000,
                level: 0.9,
                seed: 1,
            },
        );
        assert!(
            0.0 <= ci.low && ci.low < 0.8 && 0.8 < ci.high && ci.high <= 1.0,
            "{ci:?}"
        );
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        let s = [1.0, 2.0, 4.0, 8.0];
        assert_eq!(percentile_sorted(&s, 50.0), 3.0);
        assert_eq!(percentile_sorted(&s, 0.0), 1.0);
        assert_eq!(percentile_sorted(&s, 100.0), 8.0);
        assert!((percentile_sorted(&s, 90.0) - 6.8).abs() < 1e-12);
    }
}
