//! Rank tests: Mann–Whitney U and the Wilcoxon signed-rank test, with scipy 1.17's
//! `method='auto'` choices between exact, permutation and asymptotic p-values.

use super::{norm_cdf, norm_sf, paired_differences, pvalue, Alternative};
use serde::Serialize;

/// A rank statistic, its p-value and how the p-value was computed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RankTest {
    /// U or W.
    pub statistic: f64,
    /// p-value.
    pub pvalue: f64,
    /// `exact`, `permutation` or `asymptotic`.
    pub method: &'static str,
    /// W⁺, the rank sum of positive differences (Wilcoxon only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub w_plus: Option<f64>,
}

/// Average ranks (1-based) of `x` and the sizes of its tie groups (ties are exact equality).
pub fn rank_average(x: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut ties = Vec::new();
    let mut i = 0;
    while i < idx.len() {
        let mut j = i + 1;
        while j < idx.len() && x[idx[j]] == x[idx[i]] {
            j += 1;
        }
        let r = (i + 1 + j) as f64 / 2.0; // mean of ranks i+1..=j
        for &k in &idx[i..j] {
            ranks[k] = r;
        }
        ties.push(j - i);
        i = j;
    }
    (ranks, ties)
}

/// P(U ≥ k) under the null for sample sizes (m, n), no ties.
fn mwu_exact_sf(k: f64, m: usize, n: usize) -> f64 {
    let (m, n) = (m.min(n), m.max(n));
    // pmf of U for sizes (i, j), built up with p(i,j,u) = i/(i+j)·p(i−1,j,u−j) + j/(i+j)·p(i,j−1,u).
    let mut prev: Vec<Vec<f64>> = (0..=n).map(|_| vec![1.0]).collect(); // i = 0
    for i in 1..=m {
        let mut cur: Vec<Vec<f64>> = Vec::with_capacity(n + 1);
        cur.push(vec![1.0]); // j = 0
        for j in 1..=n {
            let len = i * j + 1;
            let mut p = vec![0.0; len];
            let (a, b) = (i as f64 / (i + j) as f64, j as f64 / (i + j) as f64);
            for (u, &v) in prev[j].iter().enumerate() {
                p[u + j] += a * v;
            }
            for (u, &v) in cur[j - 1].iter().enumerate() {
                p[u] += b * v;
            }
            cur.push(p);
        }
        prev = cur;
    }
    let pmf = &prev[n];
    let k = k.ceil().max(0.0) as usize;
    pmf.iter().skip(k).sum::<f64>().min(1.0)
}

/// Mann–Whitney U test. The statistic is U of x = #(x > y) + ½·#(x = y).
pub fn mann_whitney(x: &[f64], y: &[f64], alt: Alternative) -> RankTest {
    let (n1, n2) = (x.len(), y.len());
    if n1 == 0 || n2 == 0 {
        return RankTest {
            statistic: f64::NAN,
            pvalue: f64::NAN,
            method: "asymptotic",
            w_plus: None,
        };
    }
    let all: Vec<f64> = x.iter().chain(y).copied().collect();
    let (ranks, ties) = rank_average(&all);
    let r1: f64 = ranks[..n1].iter().sum();
    let u1 = r1 - (n1 * (n1 + 1)) as f64 / 2.0;
    let u2 = (n1 * n2) as f64 - u1;
    let has_ties = ties.iter().any(|&t| t > 1);
    // scipy: asymptotic when both samples exceed 8 or when there are ties.
    let exact = (n1 <= 8 || n2 <= 8) && !has_ties;
    let (u, f) = match alt {
        Alternative::Greater => (u1, 1.0),
        Alternative::Less => (u2, 1.0),
        Alternative::TwoSided => (u1.max(u2), 2.0),
    };
    let p = if exact {
        mwu_exact_sf(u, n1, n2)
    } else {
        let (a, b) = (n1 as f64, n2 as f64);
        let n = a + b;
        let tie_term: f64 = ties.iter().map(|&t| (t * t * t - t) as f64).sum();
        let s = (a * b / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)))).sqrt();
        norm_sf((u - a * b / 2.0 - 0.5) / s)
    };
    RankTest {
        statistic: u1,
        pvalue: (p * f).clamp(0.0, 1.0),
        method: if exact { "exact" } else { "asymptotic" },
        w_plus: None,
    }
}

/// Exact null pmf of W⁺ for n untied, non-zero differences: counts / 2ⁿ.
fn wilcoxon_pmf(n: usize) -> Vec<f64> {
    let max = n * (n + 1) / 2;
    let mut c = vec![0.0f64; max + 1];
    c[0] = 1.0;
    for k in 1..=n {
        for s in (k..=max).rev() {
            c[s] += c[s - k];
        }
    }
    let total = 2f64.powi(n as i32);
    c.into_iter().map(|v| v / total).collect()
}

/// Wilcoxon signed-rank test on d = x − y: zeros dropped (`zero_method='wilcox'`), average
/// ranks for exactly equal |d|, and scipy 1.17's `method='auto'`: asymptotic when n > 50;
/// otherwise exact without ties or zeros, the 2ⁿ sign-flip permutation distribution with
/// them when n ≤ 13, else asymptotic (no continuity correction). The two-sided statistic
/// is min(W⁺, W⁻); one-sided it is W⁺.
pub fn wilcoxon(x: &[f64], y: &[f64], alt: Alternative) -> anyhow::Result<RankTest> {
    let d = paired_differences(x, y)?;
    let n_total = d.len();
    if n_total == 0 {
        return Ok(RankTest {
            statistic: f64::NAN,
            pvalue: f64::NAN,
            method: "asymptotic",
            w_plus: None,
        });
    }
    let n_zero = d.iter().filter(|&&v| v == 0.0).count();
    let nz: Vec<f64> = d.iter().copied().filter(|&v| v != 0.0).collect();
    let count = nz.len();
    let abs: Vec<f64> = nz.iter().map(|v| v.abs()).collect();
    let (r, ties) = rank_average(&abs);
    // `+ 0.0` turns the −0.0 that an empty f64 sum starts from into 0.
    let r_plus: f64 = nz
        .iter()
        .zip(&r)
        .filter(|(v, _)| **v > 0.0)
        .map(|(_, r)| r)
        .sum::<f64>()
        + 0.0;
    let r_minus: f64 = nz
        .iter()
        .zip(&r)
        .filter(|(v, _)| **v < 0.0)
        .map(|(_, r)| r)
        .sum::<f64>()
        + 0.0;
    let has_ties = ties.iter().any(|&t| t > 1);
    let method = if n_total > 50 {
        "asymptotic"
    } else if !(has_ties || n_zero > 0) {
        "exact"
    } else if n_total <= 13 {
        "permutation"
    } else {
        "asymptotic"
    };
    let c = count as f64;
    let p = match method {
        "exact" => {
            let pmf = wilcoxon_pmf(count);
            let mn = c * (c + 1.0) / 4.0;
            let sum = |lo: i64, hi: i64| -> f64 {
                let (lo, hi) = (lo.max(0) as usize, hi.min(pmf.len() as i64 - 1));
                if hi < lo as i64 {
                    0.0
                } else {
                    pmf[lo..=hi as usize].iter().sum()
                }
            };
            let top = pmf.len() as i64 - 1;
            // scipy's WilcoxonDistribution: direct tail sums below the mean, complements above.
            let cdf = |k: i64| {
                if (k as f64) <= mn {
                    sum(0, k)
                } else {
                    1.0 - sum(k + 1, top)
                }
            };
            let sf = |k: i64| {
                if (k as f64) <= mn {
                    sum(k, top)
                } else {
                    1.0 - sum(0, k - 1)
                }
            };
            let (lo, hi) = (r_plus.ceil() as i64, r_plus.floor() as i64);
            match alt {
                Alternative::Less => cdf(lo),
                Alternative::Greater => sf(hi),
                Alternative::TwoSided => (2.0 * sf(hi).min(cdf(lo))).clamp(0.0, 1.0),
            }
        }
        "permutation" => {
            // All 2^count sign flips of the non-zero differences (zeros only duplicate them).
            let n_res = 1usize << count;
            let gamma = (f64::EPSILON * 100.0 * r_plus).abs();
            let (mut le, mut ge) = (0usize, 0usize);
            for mask in 0..n_res {
                let s: f64 = (0..count)
                    .filter(|&i| mask & (1 << i) != 0)
                    .map(|i| r[i])
                    .sum();
                if s <= r_plus + gamma {
                    le += 1;
                }
                if s >= r_plus - gamma {
                    ge += 1;
                }
            }
            let (pl, pg) = (le as f64 / n_res as f64, ge as f64 / n_res as f64);
            match alt {
                Alternative::Less => pl,
                Alternative::Greater => pg,
                Alternative::TwoSided => (2.0 * pl.min(pg)).min(1.0),
            }
        }
        _ => {
            let mn = c * (c + 1.0) * 0.25;
            let tie_correct: f64 = ties.iter().map(|&t| (t * t * t - t) as f64).sum();
            let se = ((c * (c + 1.0) * (2.0 * c + 1.0) - tie_correct / 2.0) / 24.0).sqrt();
            pvalue((r_plus - mn) / se, alt, norm_cdf, norm_sf)
        }
    };
    let statistic = if alt == Alternative::TwoSided {
        r_plus.min(r_minus)
    } else {
        r_plus
    };
    Ok(RankTest {
        statistic,
        pvalue: p,
        method,
        w_plus: Some(r_plus),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_ranks_and_ties() {
        let (r, t) = rank_average(&[3.0, 1.0, 3.0, 2.0]);
        assert_eq!(r, vec![3.5, 1.0, 3.5, 2.0]);
        assert_eq!(t, vec![1, 1, 2]);
    }

    #[test]
    fn exact_mwu_distribution_sums_to_one_and_is_symmetric() {
        for (m, n) in [(1, 1), (3, 5), (8, 8), (2, 30)] {
            assert!((mwu_exact_sf(0.0, m, n) - 1.0).abs() < 1e-12);
            let total = (m * n) as f64;
            for k in 0..=(m * n) {
                let upper = mwu_exact_sf(k as f64, m, n);
                let lower_mirror = mwu_exact_sf(total - k as f64, m, n);
                // P(U ≥ k) = P(U ≤ mn − k) = 1 − P(U ≥ mn − k + 1)
                let le = 1.0 - mwu_exact_sf(total - k as f64 + 1.0, m, n);
                assert!(
                    (upper - le).abs() < 1e-12,
                    "{m},{n},{k}: {upper} vs {le} ({lower_mirror})"
                );
            }
        }
    }

    #[test]
    fn wilcoxon_pmf_counts() {
        // n = 3: sums of subsets of {1,2,3}: 0,1,2,3,3,4,5,6
        let p = wilcoxon_pmf(3);
        let want = [1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0].map(|c| c / 8.0);
        assert_eq!(p, want.to_vec());
    }
}
