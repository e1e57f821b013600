//! Expected best validation score against the number of hyperparameter trials (Dodge et al.
//! 2019, "Show your work"): given N trials of a random search, the expected best of n of
//! them, drawn with replacement (Dodge et al.'s estimator, defined for every n) or without
//! replacement (exact for subsets of the trials actually run, n ≤ N). Lower is better here
//! (perplexity), so "best" is the minimum.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
