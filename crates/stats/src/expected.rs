//! Expected best validation score against the number of hyperparameter trials (Dodge et al.
//! 2019, "Show your work"): given N trials of a random search, the expected best of n of
//! them, drawn with replacement (Dodge et al.'s estimator, defined for every n) or without
//! replacement (exact for subsets of the trials actually run, n ≤ N). Lower is better here
//! (perplexity), so "best" is the minimum.
//!
//! Also: a seeded bootstrap percentile band for the with-replacement curve
//! ([`expected_best_band`]), and the estimator with failed trials made explicit
//! ([`expected_best_with_failures`]): the chance that all n drawn trials failed, and the
//! expected best of the successful ones given at least one succeeded.

use crate::seed::rng_for;
use rand::Rng;
use rayon::prelude::*;
use serde::Serialize;
use statrs::function::factorial::ln_binomial;

/// Sorted copy, ascending; NaN (a failed trial) sorts as +∞.
fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s: Vec<f64> = v
        .iter()
        .map(|&x| if x.is_nan() { f64::INFINITY } else { x })
        .collect();
    s.sort_by(f64::total_cmp);
    s
}

/// Σ p_i · x_(i), skipping zero-probability terms (so ∞ · 0 does not give NaN).
fn weighted(s: &[f64], p: impl Fn(usize) -> f64) -> f64 {
    let mut e = 0.0;
    for (i, &x) in s.iter().enumerate() {
        let w = p(i);
        if w > 0.0 {
            e += w * x;
        }
    }
    e
}

/// E[min of `n` draws with replacement from `v`]: with x₍₁₎ ≤ … ≤ x₍N₎,
/// P(min = x₍ᵢ₎) = ((N−i+1)/N)ⁿ − ((N−i)/N)ⁿ.
pub fn expected_best_with_replacement(v: &[f64], n: usize) -> f64 {
    let s = sorted(v);
    let big_n = s.len() as f64;
    if s.is_empty() || n == 0 {
        return f64::NAN;
    }
    weighted(&s, |i| {
        let i = i as f64 + 1.0;
        ((big_n - i + 1.0) / big_n).powi(n as i32) - ((big_n - i) / big_n).powi(n as i32)
    })
}

/// E[min of a uniformly random `n`-subset of `v`] (n ≤ N):
/// P(min = x₍ᵢ₎) = C(N−i, n−1) / C(N, n).
pub fn expected_best_without_replacement(v: &[f64], n: usize) -> f64 {
    let s = sorted(v);
    let big_n = s.len() as u64;
    if s.is_empty() || n == 0 || n as u64 > big_n {
        return f64::NAN;
    }
    let n = n as u64;
    let denom = ln_binomial(big_n, n);
    weighted(&s, |i| {
        let rest = big_n - (i as u64 + 1);
        if rest < n - 1 {
            0.0
        } else {
            (ln_binomial(rest, n - 1) - denom).exp()
        }
    })
}

/// Both curves for n = 1..=N.
pub fn expected_best_curves(v: &[f64]) -> Vec<(usize, f64, f64)> {
    (1..=v.len())
        .map(|n| {
            (
                n,
                expected_best_with_replacement(v, n),
                expected_best_without_replacement(v, n),
            )
        })
        .collect()
}

/// One point of the bootstrap band of the expected-best curve.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct BandPoint {
    /// Number of trials n.
    pub n: usize,
    /// The with-replacement expected best of the trials actually run.
    pub estimate: f64,
    /// Lower percentile of the resampled curves at n.
    pub low: f64,
    /// Upper percentile of the resampled curves at n.
    pub high: f64,
}

/// numpy's linear percentile of sorted data that may hold ±∞: interpolating towards an
/// infinite neighbour gives that infinity (the limit), between −∞ and +∞ NaN.
fn percentile_inf(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 || q.is_nan() {
        return f64::NAN;
    }
    let pos = (q / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let (a, b) = (sorted[lo], sorted[hi]);
    if lo == hi || a == b {
        a
    } else if a.is_infinite() && b.is_infinite() {
        f64::NAN
    } else if a.is_infinite() {
        a
    } else if b.is_infinite() {
        b
    } else {
        super::resample::percentile_sorted(sorted, q)
    }
}

/// With-replacement expected best at n = 1..=n_max of sorted values (one pass of weights).
fn curve_sorted(s: &[f64], n_max: usize) -> Vec<f64> {
    let big_n = s.len() as f64;
    (1..=n_max)
        .map(|n| {
            weighted(s, |i| {
                let i = i as f64 + 1.0;
                ((big_n - i + 1.0) / big_n).powi(n as i32) - ((big_n - i) / big_n).powi(n as i32)
            })
        })
        .collect()
}

/// A bootstrap percentile band for the with-replacement expected-best curve (Dodge et al.
/// 2019's figure): `resamples` resamples of the N trial scores with replacement — resample b
/// drawn from `crate::seed::rng_for(seed, "expected-best/b")`, so the band depends only on
/// the seed, not on threads — each giving its with-replacement expected best at n = 1..=
/// `n_max`; at each n the band is the ((1 − level)/2, (1 + level)/2) percentiles (numpy's
/// linear) of those values. A failed trial (non-finite score) counts as +∞, as in
/// [`expected_best_with_replacement`]. Empty when there are no trials, n_max = 0 or no
/// resamples.
pub fn expected_best_band(
    v: &[f64],
    n_max: usize,
    resamples: usize,
    level: f64,
    seed: u64,
) -> Vec<BandPoint> {
    if v.is_empty() || n_max == 0 || resamples == 0 {
        return Vec::new();
    }
    let s = sorted(v);
    let estimate = curve_sorted(&s, n_max);
    let curves: Vec<Vec<f64>> = (0..resamples)
        .into_par_iter()
        .map(|b| {
            let mut rng = rng_for(seed, &format!("expected-best/{b}"));
            let draw: Vec<f64> = (0..s.len())
                .map(|_| s[rng.random_range(0..s.len())])
                .collect();
            curve_sorted(&sorted(&draw), n_max)
        })
        .collect();
    let alpha = (1.0 - level) / 2.0;
    (0..n_max)
        .map(|k| {
            let mut at: Vec<f64> = curves.iter().map(|c| c[k]).collect();
            at.sort_by(f64::total_cmp);
            BandPoint {
                n: k + 1,
                estimate: estimate[k],
                low: percentile_inf(&at, 100.0 * alpha),
                high: percentile_inf(&at, 100.0 * (1.0 - alpha)),
            }
        })
        .collect()
}

/// How the n trials are drawn from the N that were run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// n i.i.d. draws from the N trials (Dodge et al.; any n).
    WithReplacement,
    /// A uniformly random n-subset of the N trials (n ≤ N).
    WithoutReplacement,
}

/// The expected best of n trials when some trials failed.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct BestWithFailures {
    /// Number of trials drawn.
    pub n: usize,
    /// P(every one of the n drawn trials failed).
    pub p_all_failed: f64,
    /// E[best of the successful drawn trials | at least one succeeded] (NaN when every
    /// trial failed).
    pub expected_best: f64,
}

/// The expected best of `n` trials drawn from `v`, where a non-finite score is a failed
/// trial that never beats a success. With x₍₁₎ ≤ … ≤ x₍S₎ the S successes and F = N − S
/// failures ranked after them, the best drawn success is x₍ᵢ₎ with probability
/// ((N−i+1)/N)ⁿ − ((N−i)/N)ⁿ (with replacement) or C(N−i, n−1)/C(N, n) (without); these sum
/// to 1 − P(all failed), P(all failed) = (F/N)ⁿ or C(F, n)/C(N, n). NaN fields for n = 0,
/// no trials, or n > N without replacement.
pub fn expected_best_with_failures(v: &[f64], n: usize, sampling: Sampling) -> BestWithFailures {
    let nan = BestWithFailures {
        n,
        p_all_failed: f64::NAN,
        expected_best: f64::NAN,
    };
    let big_n = v.len();
    if big_n == 0 || n == 0 || (sampling == Sampling::WithoutReplacement && n > big_n) {
        return nan;
    }
    let mut ok: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    ok.sort_by(f64::total_cmp);
    let f = big_n - ok.len();
    let (nf, ff) = (big_n as f64, f as f64);
    let (p_all, p_i): (f64, Box<dyn Fn(usize) -> f64>) = match sampling {
        Sampling::WithReplacement => {
            let p_all = if f == 0 {
                0.0
            } else {
                (ff / nf).powi(n as i32)
            };
            (
                p_all,
                Box::new(move |i: usize| {
                    let i = i as f64 + 1.0;
                    ((nf - i + 1.0) / nf).powi(n as i32) - ((nf - i) / nf).powi(n as i32)
                }),
            )
        }
        Sampling::WithoutReplacement => {
            let denom = ln_binomial(big_n as u64, n as u64);
            let p_all = if n > f {
                0.0
            } else {
                (ln_binomial(f as u64, n as u64) - denom).exp()
            };
            (
                p_all,
                Box::new(move |i: usize| {
                    let rest = (big_n - (i + 1)) as u64;
                    if rest < n as u64 - 1 {
                        0.0
                    } else {
                        (ln_binomial(rest, n as u64 - 1) - denom).exp()
                    }
                }),
            )
        }
    };
    let p_success: f64 = (0..ok.len()).map(&p_i).sum();
    let e = if ok.is_empty() || p_success <= 0.0 {
        f64::NAN
    } else {
        weighted(&ok, &p_i) / p_success
    };
    BestWithFailures {
        n,
        p_all_failed: p_all,
        expected_best: e,
    }
}

/// [`expected_best_with_failures`] for n = 1..=`n_max` (capped at N without replacement).
pub fn expected_best_with_failures_curve(
    v: &[f64],
    n_max: usize,
    sampling: Sampling,
) -> Vec<BestWithFailures> {
    let top = match sampling {
        Sampling::WithReplacement => n_max,
        Sampling::WithoutReplacement => n_max.min(v.len()),
    };
    (1..=top)
        .map(|n| expected_best_with_failures(v, n, sampling))
        .collect()
}

/// A bootstrap percentile band for the expected best given success
/// ([`expected_best_with_failures`], with replacement) at n = 1..=`n_max`: as
/// [`expected_best_band`] (resample b from `rng_for(seed, "expected-best/b")`), but a failed
/// trial (non-finite score) is a failure that never wins rather than +∞, so the band is of
/// E[best | at least one of n succeeded]. A resample in which every trial failed has no
/// such value and is left out at every n. `estimate` is the value on the trials actually
/// run. Without failures this equals [`expected_best_band`].
pub fn expected_best_band_with_failures(
    v: &[f64],
    n_max: usize,
    resamples: usize,
    level: f64,
    seed: u64,
) -> Vec<BandPoint> {
    if v.is_empty() || n_max == 0 || resamples == 0 {
        return Vec::new();
    }
    let curve = |x: &[f64]| -> Vec<f64> {
        expected_best_with_failures_curve(x, n_max, Sampling::WithReplacement)
            .iter()
            .map(|b| b.expected_best)
            .collect()
    };
    let estimate = curve(v);
    // Draws from the sorted trials, as expected_best_band does, so the bands agree.
    let s = sorted(v);
    let curves: Vec<Vec<f64>> = (0..resamples)
        .into_par_iter()
        .map(|b| {
            let mut rng = rng_for(seed, &format!("expected-best/{b}"));
            let draw: Vec<f64> = (0..s.len())
                .map(|_| s[rng.random_range(0..s.len())])
                .collect();
            curve(&draw)
        })
        .collect();
    let alpha = (1.0 - level) / 2.0;
    (0..n_max)
        .map(|k| {
            let mut at: Vec<f64> = curves
                .iter()
                .map(|c| c[k])
                .filter(|x| x.is_finite())
                .collect();
            at.sort_by(f64::total_cmp);
            let q = |p: f64| {
                if at.is_empty() {
                    f64::NAN
                } else {
                    super::resample::percentile_sorted(&at, p)
                }
            };
            BandPoint {
                n: k + 1,
                estimate: estimate[k],
                low: q(100.0 * alpha),
                high: q(100.0 * (1.0 - alpha)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failure_aware_band_matches_the_plain_band_without_failures() {
        let v = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.6];
        let plain = expected_best_band(&v, 7, 300, 0.9, 11);
        let fail = expected_best_band_with_failures(&v, 7, 300, 0.9, 11);
        for (a, b) in plain.iter().zip(&fail) {
            assert!((a.estimate - b.estimate).abs() < 1e-12);
            assert!((a.low - b.low).abs() < 1e-12 && (a.high - b.high).abs() < 1e-12);
        }
        // With failures the band stays finite and brackets the estimate given success.
        let w = [3.0, f64::INFINITY, 4.0, 1.5, f64::NAN, 9.0, 2.6];
        let band = expected_best_band_with_failures(&w, 7, 300, 0.9, 11);
        for b in &band {
            assert!(b.low.is_finite() && b.high.is_finite(), "{b:?}");
            assert!(
                b.low <= b.estimate + 1e-12 && b.estimate <= b.high + 1e-12,
                "{b:?}"
            );
        }
        assert!(expected_best_band(&w, 7, 300, 0.9, 11)[0]
            .high
            .is_infinite());
    }

    /// Brute force: every n-tuple (with replacement) or n-subset (without).
    fn brute(v: &[f64], n: usize, replace: bool) -> f64 {
        let big_n = v.len();
        let mut total = 0.0;
        let mut count = 0.0;
        let mut idx = vec![0usize; n];
        loop {
            let distinct = idx.windows(2).all(|w| w[0] < w[1]);
            if replace || distinct {
                total += idx.iter().map(|&i| v[i]).fold(f64::INFINITY, f64::min);
                count += 1.0;
            }
            // odometer
            let mut k = n;
            loop {
                if k == 0 {
                    return total / count;
                }
                k -= 1;
                idx[k] += 1;
                if idx[k] < big_n {
                    break;
                }
                idx[k] = 0;
            }
        }
    }

    #[test]
    fn matches_brute_force_enumeration() {
        let v = [103.2, 99.1, 101.7, 99.1, 140.0, 100.4];
        for n in 1..=4 {
            let a = expected_best_with_replacement(&v, n);
            let b = brute(&v, n, true);
            assert!((a - b).abs() < 1e-10, "with n={n}: {a} vs {b}");
        }
        for n in 1..=6 {
            let a = expected_best_without_replacement(&v, n);
            let b = brute(&v, n, false);
            assert!((a - b).abs() < 1e-10, "without n={n}: {a} vs {b}");
        }
        let m = v.iter().sum::<f64>() / 6.0;
        assert!((expected_best_with_replacement(&v, 1) - m).abs() < 1e-12);
        assert_eq!(expected_best_without_replacement(&v, 6), 99.1);
        assert!(expected_best_without_replacement(&v, 7).is_nan());
    }

    #[test]
    fn curves_decrease_and_failures_count_as_infinite() {
        let v = [5.0, 3.0, 4.0, 1.0, 2.0];
        let c = expected_best_curves(&v);
        for w in c.windows(2) {
            assert!(w[1].1 <= w[0].1 && w[1].2 <= w[0].2);
            assert!(
                w[1].2 <= w[1].1 + 1e-12,
                "without replacement is never worse"
            );
        }
        let f = [f64::NAN, 3.0, 1.0];
        assert_eq!(expected_best_with_replacement(&f, 2), f64::INFINITY);
        let e = expected_best_without_replacement(&f, 2);
        assert!((e - 5.0 / 3.0).abs() < 1e-12, "{e}");
    }

    /// Brute force with failures: over every n-tuple (with replacement) or n-subset
    /// (without), the share where all failed and the mean best among the others.
    fn brute_failures(v: &[f64], n: usize, replace: bool) -> (f64, f64) {
        let big_n = v.len();
        let (mut all_failed, mut count, mut total, mut succ) = (0.0, 0.0, 0.0, 0.0);
        let mut idx = vec![0usize; n];
        loop {
            if replace || idx.windows(2).all(|w| w[0] < w[1]) {
                count += 1.0;
                let best = idx
                    .iter()
                    .map(|&i| v[i])
                    .filter(|x| x.is_finite())
                    .fold(f64::INFINITY, f64::min);
                if best.is_finite() {
                    total += best;
                    succ += 1.0;
                } else {
                    all_failed += 1.0;
                }
            }
            let mut k = n;
            loop {
                if k == 0 {
                    return (
                        all_failed / count,
                        if succ > 0.0 { total / succ } else { f64::NAN },
                    );
                }
                k -= 1;
                idx[k] += 1;
                if idx[k] < big_n {
                    break;
                }
                idx[k] = 0;
            }
        }
    }

    #[test]
    fn failures_match_brute_force_enumeration() {
        let v = [103.2, f64::NAN, 99.1, 101.7, f64::INFINITY, 99.1, 100.4];
        for n in 1..=5 {
            let got = expected_best_with_failures(&v, n, Sampling::WithReplacement);
            let (pf, e) = brute_failures(&v, n, true);
            assert!(
                (got.p_all_failed - pf).abs() < 1e-12,
                "with n={n}: {got:?} vs {pf}"
            );
            assert!(
                (got.expected_best - e).abs() < 1e-10,
                "with n={n}: {got:?} vs {e}"
            );
        }
        for n in 1..=7 {
            let got = expected_best_with_failures(&v, n, Sampling::WithoutReplacement);
            let (pf, e) = brute_failures(&v, n, false);
            assert!(
                (got.p_all_failed - pf).abs() < 1e-12,
                "without n={n}: {got:?} vs {pf}"
            );
            assert!(
                (got.expected_best - e).abs() < 1e-10,
                "without n={n}: {got:?} vs {e}"
            );
        }
        // no failures: the plain estimators
        let clean = [3.0, 1.0, 2.0, 5.0];
        let w = expected_best_with_failures(&clean, 3, Sampling::WithReplacement);
        assert_eq!(w.p_all_failed, 0.0);
        assert!((w.expected_best - expected_best_with_replacement(&clean, 3)).abs() < 1e-12);
        let wo = expected_best_with_failures(&clean, 3, Sampling::WithoutReplacement);
        assert!((wo.expected_best - expected_best_without_replacement(&clean, 3)).abs() < 1e-12);
        // all failed; degenerate n
        let dead = [f64::NAN, f64::NAN];
        let d = expected_best_with_failures(&dead, 2, Sampling::WithReplacement);
        assert_eq!(d.p_all_failed, 1.0);
        assert!(d.expected_best.is_nan());
        assert!(
            expected_best_with_failures(&clean, 5, Sampling::WithoutReplacement)
                .p_all_failed
                .is_nan()
        );
        assert!(
            expected_best_with_failures(&clean, 0, Sampling::WithReplacement)
                .expected_best
                .is_nan()
        );
        assert_eq!(
            expected_best_with_failures_curve(&v, 20, Sampling::WithoutReplacement).len(),
            7
        );
    }

    #[test]
    fn band_is_seeded_brackets_the_estimate_and_narrows_with_level() {
        let v = [
            103.2, 99.1, 101.7, 99.5, 140.0, 100.4, 98.7, 102.2, 105.0, 99.9,
        ];
        let a = expected_best_band(&v, 8, 500, 0.9, 3);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let b = pool.install(|| expected_best_band(&v, 8, 500, 0.9, 3));
        assert_eq!(a, b, "deterministic in the seed, whatever the threads");
        assert_ne!(a, expected_best_band(&v, 8, 500, 0.9, 4));
        let narrow = expected_best_band(&v, 8, 500, 0.5, 3);
        for (p, q) in a.iter().zip(&narrow) {
            assert!(
                p.low <= p.high && p.low <= q.low && q.high <= p.high,
                "{p:?} {q:?}"
            );
            assert!((p.estimate - expected_best_with_replacement(&v, p.n)).abs() < 1e-12);
        }
        // the band is a range of the resampled curves: within the data's range
        let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
        assert!(a.iter().all(|p| p.low >= min && p.high <= 140.0));
        // the curve's band moves down with n (best of more trials)
        assert!(a[7].high < a[0].high && a[7].low <= a[0].low);
        assert!(expected_best_band(&[], 3, 10, 0.9, 1).is_empty());
        // failures count as +∞ without NaN
        let f = [1.0, f64::NAN, 2.0];
        let band = expected_best_band(&f, 2, 200, 0.9, 1);
        assert!(band[0].high == f64::INFINITY && !band[1].low.is_nan());
    }
}
