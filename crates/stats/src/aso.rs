//! Almost Stochastic Order (del Barrio et al. 2018; Dror et al. 2019), with the
//! conventions of deep-significance's `aso`: scores are higher-is-better, the claim is
//! "A is better than B", the violation ratio is
//! ε_W2 = ∫ max(F_B⁻¹ − F_A⁻¹, 0)² dt / ∫ (F_B⁻¹ − F_A⁻¹)² dt with the empirical quantile
//! function F⁻¹(t) = x₍⌈nt⌉₎, and
//! ε_min = clamp(ε_W2 + z_{1−α} σ̂ / √(nm/(n+m)), 0, 1), σ̂ = sd(√(N/2)(ε*_b − ε_W2)) over
//! bootstrap ratios ε*_b of N draws from each quantile function.
//!
//! Unlike deep-significance (a grid of step 0.005), ε_W2 is integrated exactly over the
//! union of the breakpoints i/n and j/m. Where the two quantile functions coincide (W2 = 0)
//! deep-significance returns 0 ("A better"); this returns NaN — identical samples are not
//! evidence that A is better.

use crate::seed::derive_seed;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};

/// Result of an ASO test.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Aso {
    /// ε_W2 of the claim "A is better than B" (0: A dominates; 1: B dominates).
    pub violation_ratio: f64,
    /// Upper confidence bound of ε_W2; A is better when below 0.5 (stricter: 0.2).
    pub epsilon_min: f64,
    /// σ̂, the bootstrap spread of the scaled ratio (0: every resample gave the same ratio,
    /// so ε_min carries no uncertainty and should not be reported; NaN when ε_W2 is).
    pub spread: f64,
}

/// ε_W2 of sorted samples given as distinct values with multiplicities.
fn ratio_counts(a: &[f64], ca: &[u64], b: &[f64], cb: &[u64]) -> f64 {
    let (na, nb): (u64, u64) = (ca.iter().sum(), cb.iter().sum());
    if na == 0 || nb == 0 {
        return f64::NAN;
    }
    let (mut ia, mut ib) = (0usize, 0usize);
    // Cumulative counts at the ends of the current steps.
    let (mut ea, mut eb) = (ca[0], cb[0]);
    let mut prev = 0.0f64;
    let (mut total, mut viol) = (0.0f64, 0.0f64);
    loop {
        // Next breakpoint: min(ea/na, eb/nb), compared exactly in integers.
        let lhs = ea as u128 * nb as u128;
        let rhs = eb as u128 * na as u128;
        let next = if lhs <= rhs {
            ea as f64 / na as f64
        } else {
            eb as f64 / nb as f64
        };
        let d = b[ib] - a[ia];
        let w = next - prev;
        total += d * d * w;
        if d > 0.0 {
            viol += d * d * w;
        }
        prev = next;
        if lhs <= rhs {
            ia += 1;
        }
        if rhs <= lhs {
            ib += 1;
        }
        if ia >= a.len() || ib >= b.len() {
            break;
        }
        if lhs <= rhs {
            ea += ca[ia];
        }
        if rhs <= lhs {
            eb += cb[ib];
        }
    }
    if total == 0.0 {
        f64::NAN
    } else {
        viol / total
    }
}

fn sorted(x: &[f64]) -> Vec<f64> {
    let mut v = x.to_vec();
    v.sort_by(|p, q| p.total_cmp(q));
    v
}

/// The exact violation ratio ε_W2 for "A is better than B" (higher is better).
pub fn violation_ratio(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return f64::NAN;
    }
    let (sa, sb) = (sorted(a), sorted(b));
    ratio_counts(&sa, &vec![1; sa.len()], &sb, &vec![1; sb.len()])
}

/// ASO with `num_samples` draws per bootstrap iteration and `iterations` iterations at
/// level `alpha` (deep-significance: 1000, 1000, 0.05), seeded.
pub fn aso(
    a: &[f64],
    b: &[f64],
    alpha: f64,
    num_samples: usize,
    iterations: usize,
    seed: u64,
) -> Aso {
    let eps = violation_ratio(a, b);
    if eps.is_nan() || num_samples == 0 || iterations == 0 {
        return Aso {
            violation_ratio: eps,
            epsilon_min: f64::NAN,
            spread: f64::NAN,
        };
    }
    let (sa, sb) = (sorted(a), sorted(b));
    let samples: Vec<f64> = (0..iterations)
        .into_par_iter()
        .map(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, &format!("aso/{i}")));
            let mut ca = vec![0u64; sa.len()];
            let mut cb = vec![0u64; sb.len()];
            for _ in 0..num_samples {
                ca[rng.random_range(0..sa.len())] += 1;
            }
            for _ in 0..num_samples {
                cb[rng.random_range(0..sb.len())] += 1;
            }
            // Drop values drawn zero times (they have no width in the quantile function).
            let keep = |s: &[f64], c: &[u64]| -> (Vec<f64>, Vec<u64>) {
                s.iter()
                    .zip(c)
                    .filter(|(_, &k)| k > 0)
                    .map(|(&v, &k)| (v, k))
                    .unzip()
            };
            let (va, wa) = keep(&sa, &ca);
            let (vb, wb) = keep(&sb, &cb);
            ratio_counts(&va, &wa, &vb, &wb)
        })
        .collect();
    let finite: Vec<f64> = samples.into_iter().filter(|v| v.is_finite()).collect();
    let const1 = ((a.len() * b.len()) as f64 / (a.len() + b.len()) as f64).sqrt();
    let const2 = (num_samples as f64 / 2.0).sqrt();
    let scaled: Vec<f64> = finite.iter().map(|s| const2 * (s - eps)).collect();
    let m = scaled.iter().sum::<f64>() / scaled.len().max(1) as f64;
    let sigma =
        (scaled.iter().map(|v| (v - m).powi(2)).sum::<f64>() / scaled.len().max(1) as f64).sqrt();
    let z = Normal::new(0.0, 1.0)
        .expect("normal")
        .inverse_cdf(1.0 - alpha);
    Aso {
        violation_ratio: eps,
        epsilon_min: (eps + sigma * z / const1).clamp(0.0, 1.0),
        spread: sigma,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dominance_gives_zero_and_one() {
        let a = [5.0, 6.0, 7.0];
        let b = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(violation_ratio(&a, &b), 0.0);
        assert_eq!(violation_ratio(&b, &a), 1.0);
        let r = aso(&a, &b, 0.05, 1000, 200, 1);
        assert!(r.epsilon_min < 0.2, "{r:?}");
    }

    #[test]
    fn symmetry_and_identical_samples() {
        let a = [1.0, 4.0, 2.5, 3.0, 7.0];
        let b = [2.0, 3.5, 3.0, 1.0];
        let s = violation_ratio(&a, &b) + violation_ratio(&b, &a);
        assert!((s - 1.0).abs() < 1e-12);
        assert!(violation_ratio(&a, &a).is_nan());
    }

    #[test]
    fn exact_integral_agrees_with_a_fine_grid() {
        let a = [0.3, 1.7, 2.2, 0.9, 1.1, 3.0, 2.8];
        let b = [1.0, 2.0, 0.5, 2.9, 1.4];
        let q = |s: &[f64], p: f64| {
            let v = sorted(s);
            let i = (v.len() as f64 * p).ceil() as usize;
            v[i.clamp(1, v.len()) - 1]
        };
        let (mut t, mut w) = (0.0, 0.0);
        let n = 200_000;
        for k in 0..n {
            let p = (k as f64 + 0.5) / n as f64;
            let d = q(&b, p) - q(&a, p);
            t += d * d;
            if d > 0.0 {
                w += d * d;
            }
        }
        assert!((violation_ratio(&a, &b) - w / t).abs() < 1e-4);
    }
}
