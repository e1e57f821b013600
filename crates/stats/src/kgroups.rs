//! k-sample tests: one-way ANOVA, Kruskal–Wallis and Friedman, as scipy's `f_oneway`,
//! `kruskal` and `friedmanchisquare` (tie-corrected; all-tied input gives NaN).

use super::mean;
use super::rank::rank_average;
use serde::Serialize;
use statrs::distribution::{ChiSquared, ContinuousCDF};
use statrs::function::beta::beta_reg;

/// A k-sample statistic with its p-value and degrees of freedom.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct KTest {
    /// F, H or χ².
    pub statistic: f64,
    /// p-value.
    pub pvalue: f64,
    /// Between-groups (numerator) df.
    pub df_between: f64,
    /// Within-groups (denominator) df (NaN for rank tests).
    pub df_within: f64,
}

/// P(F > f) for F(d1, d2), computed as I_{d2/(d2 + d1 f)}(d2/2, d1/2) (accurate in the tail).
pub fn f_sf(f: f64, d1: f64, d2: f64) -> f64 {
    if f.is_nan() || d1.is_nan() || d2.is_nan() || d1 <= 0.0 || d2 <= 0.0 {
        return f64::NAN;
    }
    if f <= 0.0 {
        return 1.0;
    }
    if f.is_infinite() {
        return 0.0;
    }
    beta_reg(d2 / 2.0, d1 / 2.0, d2 / (d2 + d1 * f))
}

/// P(X > x) for χ² with `k` degrees of freedom.
pub fn chi2_sf(x: f64, k: f64) -> f64 {
    match ChiSquared::new(k) {
        Ok(d) if !x.is_nan() => d.sf(x),
        _ => f64::NAN,
    }
}

/// One-way ANOVA F test.
pub fn anova_oneway(groups: &[Vec<f64>]) -> KTest {
    let k = groups.len() as f64;
    let all: Vec<f64> = groups.iter().flatten().copied().collect();
    let n = all.len() as f64;
    let grand = mean(&all);
    let ssb: f64 = groups
        .iter()
        .map(|g| g.len() as f64 * (mean(g) - grand).powi(2))
        .sum();
    let ssw: f64 = groups
        .iter()
        .map(|g| {
            let m = mean(g);
            g.iter().map(|v| (v - m).powi(2)).sum::<f64>()
        })
        .sum();
    let (dfb, dfw) = (k - 1.0, n - k);
    let f = (ssb / dfb) / (ssw / dfw);
    KTest {
        statistic: f,
        pvalue: f_sf(f, dfb, dfw),
        df_between: dfb,
        df_within: dfw,
    }
}

/// Kruskal–Wallis H test, tie-corrected.
pub fn kruskal(groups: &[Vec<f64>]) -> KTest {
    let all: Vec<f64> = groups.iter().flatten().copied().collect();
    let n = all.len() as f64;
    let (ranks, ties) = rank_average(&all);
    let mut h = 0.0;
    let mut start = 0;
    for g in groups {
        let r: f64 = ranks[start..start + g.len()].iter().sum();
        h += r * r / g.len() as f64;
        start += g.len();
    }
    h = 12.0 / (n * (n + 1.0)) * h - 3.0 * (n + 1.0);
    let t: f64 = ties.iter().map(|&t| (t * t * t - t) as f64).sum();
    h /= 1.0 - t / (n * n * n - n);
    let df = groups.len() as f64 - 1.0;
    KTest {
        statistic: h,
        pvalue: chi2_sf(h, df),
        df_between: df,
        df_within: f64::NAN,
    }
}

/// Friedman test over blocks: group j's i-th value belongs to block (seed) i. All groups
/// must have the same length.
pub fn friedman(groups: &[Vec<f64>]) -> anyhow::Result<KTest> {
    let k = groups.len();
    anyhow::ensure!(k >= 3, "the Friedman test needs at least 3 groups, got {k}");
    let n = groups[0].len();
    anyhow::ensure!(
        groups.iter().all(|g| g.len() == n),
        "the Friedman test needs groups of equal length (one value per seed)"
    );
    let mut rank_sums = vec![0.0; k];
    let mut ties = 0.0;
    for i in 0..n {
        let row: Vec<f64> = groups.iter().map(|g| g[i]).collect();
        let (r, t) = rank_average(&row);
        for (s, v) in rank_sums.iter_mut().zip(r) {
            *s += v;
        }
        ties += t.iter().map(|&t| (t * (t * t - 1)) as f64).sum::<f64>();
    }
    let (kf, nf) = (k as f64, n as f64);
    let c = 1.0 - ties / (kf * (kf * kf - 1.0) * nf);
    let ssbn: f64 = rank_sums.iter().map(|s| s * s).sum();
    let stat = (12.0 / (kf * nf * (kf + 1.0)) * ssbn - 3.0 * nf * (kf + 1.0)) / c;
    Ok(KTest {
        statistic: stat,
        pvalue: chi2_sf(stat, kf - 1.0),
        df_between: kf - 1.0,
        df_within: f64::NAN,
    })
}

/// One pair of a post-hoc comparison.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct PairP {
    /// Index of the first group.
    pub a: usize,
    /// Index of the second group.
    pub b: usize,
    /// Holm-adjusted p-value over all pairs.
    pub pvalue: f64,
    /// Unadjusted p-value.
    pub pvalue_unadjusted: f64,
}

/// Conover's all-pairs post-hoc test after Friedman (as scikit-posthocs'
/// `posthoc_conover_friedman`): within-block average ranks, rank sums Rⱼ,
/// t = |Rᵢ − Rⱼ| / √(A·B) on (n−1)(k−1) degrees of freedom, two-sided; p-values Holm-adjusted
/// over the k(k−1)/2 pairs (`p_adjust='holm'`). Pairs in order (0,1), (0,2), …
/// As in scikit-posthocs, when every block ranks the groups identically B = 0 and every
/// p-value is 0 (the statistic degenerates); callers should say so rather than print it.
pub fn conover_friedman(groups: &[Vec<f64>]) -> anyhow::Result<Vec<PairP>> {
    let k = groups.len();
    anyhow::ensure!(k >= 2, "a post-hoc test needs at least 2 groups");
    let n = groups[0].len();
    anyhow::ensure!(
        n >= 2 && groups.iter().all(|g| g.len() == n),
        "the post-hoc test needs groups of equal length (one value per seed), at least 2"
    );
    let mut r = vec![0.0; k];
    let mut a1 = 0.0;
    for i in 0..n {
        let row: Vec<f64> = groups.iter().map(|g| g[i]).collect();
        let (ranks, _) = rank_average(&row);
        for (s, v) in r.iter_mut().zip(&ranks) {
            *s += v;
            a1 += v * v;
        }
    }
    let (kf, nf) = (k as f64, n as f64);
    let s2 = 1.0 / (kf - 1.0) * (a1 - kf * nf * (kf + 1.0).powi(2) / 4.0);
    let t2 = 1.0 / s2
        * r.iter()
            .map(|ri| (ri - nf * (kf + 1.0) / 2.0).powi(2))
            .sum::<f64>();
    let df = nf * kf - kf - nf + 1.0;
    let a = s2 * (2.0 * nf * (kf - 1.0)) / df;
    let b = 1.0 - t2 / (nf * (kf - 1.0));
    let mut pairs = Vec::new();
    for i in 0..k {
        for j in i + 1..k {
            let t = (r[i] - r[j]).abs() / a.sqrt() / b.sqrt();
            let p = if t.is_nan() {
                f64::NAN
            } else {
                2.0 * super::t_sf(t, df)
            };
            pairs.push((i, j, p));
        }
    }
    let raw: Vec<f64> = pairs.iter().map(|p| p.2).collect();
    let adj = if raw.iter().any(|p| p.is_nan()) {
        vec![f64::NAN; raw.len()]
    } else {
        super::multitest::adjust(&raw, super::multitest::Method::Holm)?
    };
    Ok(pairs
        .into_iter()
        .zip(adj)
        .map(|((a, b, p), q)| PairP {
            a,
            b,
            pvalue: q,
            pvalue_unadjusted: p,
        })
        .collect())
}
