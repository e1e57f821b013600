//! Exact small-sample helpers: the sign test (scipy's `binomtest(k, n, 0.5, alternative)`)
//! and the smallest p-value an exact Wilcoxon signed-rank or Mann–Whitney test can reach
//! with the given sample sizes — with 5 seeds no exact rank test can reach p < 0.05
//! two-sided, whatever the data.

use super::{paired_differences, Alternative};
use serde::Serialize;
use statrs::function::factorial::ln_binomial;

/// ln P(X = k) for X ~ Binomial(n, ½).
fn ln_pmf(k: u64, n: u64) -> f64 {
    ln_binomial(n, k) - n as f64 * std::f64::consts::LN_2
}

/// P(X ≤ k) for X ~ Binomial(n, ½), summed downward from k by the pmf ratio i/(n − i + 1)
/// relative to P(X = k) (accurate in the lower tail).
fn cdf(k: u64, n: u64) -> f64 {
    if k >= n {
        return 1.0;
    }
    let mut term = 1.0;
    let mut sum = 1.0;
    let mut i = k;
    while i > 0 {
        term *= i as f64 / (n - i + 1) as f64;
        sum += term;
        if term < 1e-17 * sum {
            break;
        }
        i -= 1;
    }
    (ln_pmf(k, n).exp() * sum).min(1.0)
}

/// P(X ≥ k) = P(X ≤ n − k) by symmetry.
fn sf_ge(k: u64, n: u64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    cdf(n - k, n)
}

/// The exact sign test: the p-value of k successes in n trials under Binomial(n, ½) as
/// scipy's `binomtest(k, n, 0.5, alternative).pvalue`: `Less` P(X ≤ k), `Greater`
/// P(X ≥ k), two-sided the total probability of outcomes no more likely than k (relative
/// tolerance 1e-7, as scipy), capped at 1. NaN when n = 0 or k > n.
pub fn sign_test(k: u64, n: u64, alt: Alternative) -> f64 {
    if n == 0 || k > n {
        return f64::NAN;
    }
    match alt {
        Alternative::Less => cdf(k, n),
        Alternative::Greater => sf_ge(k, n),
        Alternative::TwoSided => {
            if 2 * k == n {
                return 1.0;
            }
            // Mirror into the lower half: the distribution is symmetric.
            let lowk = k.min(n - k);
            let d = ln_pmf(lowk, n) + (1.0 + 1e-7f64).ln();
            // Outcomes x ≥ n/2 with pmf(x) ≤ pmf(k)(1 + 1e-7) form [ix, n]; pmf decreases there.
            let (mut lo, mut hi) = (n.div_ceil(2), n);
            if ln_pmf(lo, n) <= d {
                hi = lo;
            } else {
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if ln_pmf(mid, n) <= d {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
            }
            (cdf(lowk, n) + sf_ge(hi, n)).min(1.0)
        }
    }
}

/// A sign test on paired samples.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct SignTest {
    /// Pairs with x > y.
    pub positive: u64,
    /// Pairs with x ≠ y (ties are dropped).
    pub n: u64,
    /// p-value of [`sign_test`] on (positive, n).
    pub pvalue: f64,
}

/// The sign test of d = x − y: k = #(d > 0) of the n non-zero differences; `Greater`
/// means x tends to be larger. Errors on samples of different lengths; NaN p-value when
/// every pair is tied (or a difference is NaN: those pairs are dropped as ties are).
pub fn sign_test_paired(x: &[f64], y: &[f64], alt: Alternative) -> anyhow::Result<SignTest> {
    let d = paired_differences(x, y)?;
    let positive = d.iter().filter(|&&v| v > 0.0).count() as u64;
    let n = d.iter().filter(|&&v| v.abs() > 0.0).count() as u64; // NaN drops out
    Ok(SignTest {
        positive,
        n,
        pvalue: sign_test(positive, n, alt),
    })
}

/// The smallest p-value of the exact Wilcoxon signed-rank test with `n` non-zero, untied
/// differences: 2⁻ⁿ one-sided (every difference of one sign), min(1, 2¹⁻ⁿ) two-sided. NaN
/// for n = 0.
pub fn wilcoxon_min_p(n: usize, alt: Alternative) -> f64 {
    if n == 0 {
        return f64::NAN;
    }
    let one = 0.5f64.powi(n.min(2000) as i32);
    match alt {
        Alternative::TwoSided => (2.0 * one).min(1.0),
        _ => one,
    }
}

/// The smallest p-value of the exact Mann–Whitney U test with samples of `n` and `m`
/// untied values: 1/C(n + m, n) one-sided (complete separation), min(1, 2/C(n + m, n))
/// two-sided. NaN when a sample is empty.
pub fn mann_whitney_min_p(n: usize, m: usize, alt: Alternative) -> f64 {
    if n == 0 || m == 0 {
        return f64::NAN;
    }
    // C(n + m, n) by the product formula (exact for small sizes), else through ln Γ.
    let k = n.min(m);
    let mut c = 1.0f64;
    for i in 1..=k {
        c *= (n + m - k + i) as f64 / i as f64;
    }
    let one = if c.is_finite() {
        1.0 / c
    } else {
        (-ln_binomial((n + m) as u64, k as u64)).exp()
    };
    match alt {
        Alternative::TwoSided => (2.0 * one).min(1.0),
        _ => one,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_test_small_cases_by_hand() {
        // n = 10: P(X ≤ 1) = 11/1024.
        assert!((sign_test(1, 10, Alternative::Less) - 11.0 / 1024.0).abs() < 1e-16);
        assert!((sign_test(9, 10, Alternative::Greater) - 11.0 / 1024.0).abs() < 1e-16);
        assert!((sign_test(1, 10, Alternative::TwoSided) - 22.0 / 1024.0).abs() < 1e-16);
        assert!((sign_test(9, 10, Alternative::TwoSided) - 22.0 / 1024.0).abs() < 1e-16);
        assert_eq!(sign_test(5, 10, Alternative::TwoSided), 1.0);
        // odd n, k next to the middle: every outcome is at most as likely → 1
        assert_eq!(sign_test(3, 7, Alternative::TwoSided), 1.0);
        assert_eq!(sign_test(0, 1, Alternative::TwoSided), 1.0);
        assert!(sign_test(3, 2, Alternative::Less).is_nan());
        assert!(sign_test(0, 0, Alternative::Less).is_nan());
        // tails sum to 1 + P(X = k)
        for k in 0..=20 {
            let s = sign_test(k, 20, Alternative::Less) + sign_test(k, 20, Alternative::Greater);
            assert!((s - 1.0 - ln_pmf(k, 20).exp()).abs() < 1e-14, "{k}");
        }
        let r = sign_test_paired(
            &[1.0, 2.0, 3.0, 4.0],
            &[0.0, 2.0, 2.0, 5.0],
            Alternative::Greater,
        )
        .unwrap();
        assert_eq!((r.positive, r.n), (2, 3));
        assert!((r.pvalue - 0.5).abs() < 1e-15);
    }

    #[test]
    fn minimum_p_values() {
        assert_eq!(wilcoxon_min_p(5, Alternative::TwoSided), 0.0625);
        assert_eq!(wilcoxon_min_p(5, Alternative::Less), 0.03125);
        assert_eq!(wilcoxon_min_p(1, Alternative::TwoSided), 1.0);
        assert!(wilcoxon_min_p(0, Alternative::TwoSided).is_nan());
        assert!((mann_whitney_min_p(3, 3, Alternative::TwoSided) - 0.1).abs() < 1e-16);
        assert!((mann_whitney_min_p(5, 5, Alternative::Greater) - 1.0 / 252.0).abs() < 1e-18);
        assert_eq!(mann_whitney_min_p(1, 1, Alternative::TwoSided), 1.0);
        assert!(mann_whitney_min_p(0, 3, Alternative::TwoSided).is_nan());
        let big = mann_whitney_min_p(600, 600, Alternative::Less);
        assert!((0.0..1e-300).contains(&big), "{big}");
        assert!(wilcoxon_min_p(5000, Alternative::Less) == 0.0);
    }
}
