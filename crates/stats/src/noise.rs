//! How much of the variation is the gene and how much the seed: the one-way random-effects
//! model (genes as groups, seeds as replicates) with its variance components and ICC(1);
//! the gene × seed interaction sd of a genes × seeds matrix (the noise that a paired,
//! seed-blocked comparison still sees); and the winner's curse — the expected best of N
//! single noisy runs.

use serde::Serialize;
use statrs::distribution::{Continuous, ContinuousCDF, Normal};

/// Variance components of a one-way random-effects model.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct VarianceShare {
    /// Groups (genes) with at least one value.
    pub groups: usize,
    /// Values.
    pub n: usize,
    /// Between-group mean square.
    pub ms_between: f64,
    /// Within-group mean square (the seed variance).
    pub ms_within: f64,
    /// Effective group size n₀ = (N − Σnᵢ²/N)/(k − 1).
    pub n0: f64,
    /// Between-gene variance component max(0, (MSB − MSW)/n₀).
    pub var_between: f64,
    /// Between-seed (within-gene) variance component, MSW.
    pub var_within: f64,
    /// ICC(1) = (MSB − MSW)/(MSB + (n₀ − 1)MSW) (can be negative).
    pub icc: f64,
    /// Share of the variance due to genes, var_between/(var_between + var_within).
    pub gene_share: f64,
}

/// Variance components from groups of values (ANOVA estimators; unbalanced allowed).
pub fn variance_share(groups: &[Vec<f64>]) -> VarianceShare {
    let gs: Vec<&Vec<f64>> = groups.iter().filter(|g| !g.is_empty()).collect();
    let k = gs.len();
    let n: usize = gs.iter().map(|g| g.len()).sum();
    let nan = VarianceShare {
        groups: k,
        n,
        ms_between: f64::NAN,
        ms_within: f64::NAN,
        n0: f64::NAN,
        var_between: f64::NAN,
        var_within: f64::NAN,
        icc: f64::NAN,
        gene_share: f64::NAN,
    };
    if k < 2 || n <= k {
        return nan;
    }
    let grand = gs.iter().flat_map(|g| g.iter()).sum::<f64>() / n as f64;
    let mut ssb = 0.0;
    let mut ssw = 0.0;
    for g in &gs {
        let m = g.iter().sum::<f64>() / g.len() as f64;
        ssb += g.len() as f64 * (m - grand).powi(2);
        ssw += g.iter().map(|v| (v - m).powi(2)).sum::<f64>();
    }
    let msb = ssb / (k - 1) as f64;
    let msw = ssw / (n - k) as f64;
    let sum_sq: f64 = gs.iter().map(|g| (g.len() * g.len()) as f64).sum();
    let n0 = (n as f64 - sum_sq / n as f64) / (k - 1) as f64;
    let vb = ((msb - msw) / n0).max(0.0);
    let denom = msb + (n0 - 1.0) * msw;
    VarianceShare {
        groups: k,
        n,
        ms_between: msb,
        ms_within: msw,
        n0,
        var_between: vb,
        var_within: msw,
        icc: if denom == 0.0 {
            f64::NAN
        } else {
            (msb - msw) / denom
        },
        gene_share: if vb + msw == 0.0 {
            f64::NAN
        } else {
            vb / (vb + msw)
        },
    }
}

/// The gene × seed interaction of a genes × seeds matrix without replication.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct InteractionSd {
    /// Residual mean square of the additive model y ~ gene + seed.
    pub ms_resid: f64,
    /// Its degrees of freedom, (genes − 1)(seeds − 1).
    pub df: f64,
    /// √ms_resid: the sd of a run around gene effect + seed effect.
    pub sd: f64,
}

/// The gene × seed interaction sd: √ of the residual mean square of the additive two-way
/// model without replication over `matrix[gene][seed]`,
/// Σ (y_gs − ȳ_g. − ȳ_.s + ȳ..)² / ((G − 1)(S − 1)) (statsmodels
/// `ols('y ~ C(gene) + C(seed)').fit().mse_resid`). NaN with fewer than two genes or
/// seeds; an error for ragged rows or non-finite values.
pub fn interaction_sd(matrix: &[Vec<f64>]) -> anyhow::Result<InteractionSd> {
    let g = matrix.len();
    let s = matrix.first().map_or(0, |r| r.len());
    anyhow::ensure!(
        matrix.iter().all(|r| r.len() == s),
        "every gene needs a value for every seed (ragged genes × seeds matrix)"
    );
    if let Some(v) = matrix.iter().flatten().find(|v| !v.is_finite()) {
        anyhow::bail!("the genes × seeds matrix holds a non-finite value ({v})");
    }
    if g < 2 || s < 2 {
        return Ok(InteractionSd {
            ms_resid: f64::NAN,
            df: f64::NAN,
            sd: f64::NAN,
        });
    }
    let grand = matrix.iter().flatten().sum::<f64>() / (g * s) as f64;
    let row: Vec<f64> = matrix
        .iter()
        .map(|r| r.iter().sum::<f64>() / s as f64)
        .collect();
    let col: Vec<f64> = (0..s)
        .map(|j| matrix.iter().map(|r| r[j]).sum::<f64>() / g as f64)
        .collect();
    let mut ss = 0.0;
    for (i, r) in matrix.iter().enumerate() {
        for (j, v) in r.iter().enumerate() {
            ss += ((v - row[i]) - (col[j] - grand)).powi(2);
        }
    }
    let df = ((g - 1) * (s - 1)) as f64;
    Ok(InteractionSd {
        ms_resid: ss / df,
        df,
        sd: (ss / df).sqrt(),
    })
}

/// E[max of N iid standard normals] = ∫ z N φ(z) Φ(z)^{N−1} dz (composite Simpson on
/// [−12, 12], 20,000 panels; exact 0 for N = 1).
pub fn expected_max_std_normal(n: usize) -> f64 {
    if n == 0 {
        return f64::NAN;
    }
    if n == 1 {
        return 0.0;
    }
    let norm = Normal::new(0.0, 1.0).expect("normal");
    let f = |z: f64| z * n as f64 * norm.pdf(z) * norm.cdf(z).powi(n as i32 - 1);
    let (a, b, m) = (-12.0f64, 12.0f64, 20_000usize);
    let h = (b - a) / m as f64;
    let mut s = f(a) + f(b);
    for i in 1..m {
        let z = a + i as f64 * h;
        s += if i % 2 == 1 { 4.0 } else { 2.0 } * f(z);
    }
    s * h / 3.0
}

/// The winner's curse: picking the best (lowest, for perplexity) of `n` single runs of
/// genes that are all equal, with seed sd `sd`, looks better than the truth by this much
/// in expectation (sd · E[max of n standard normals]).
pub fn winners_curse(n: usize, sd: f64) -> f64 {
    sd * expected_max_std_normal(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_maxima_known_values() {
        // E[max] of 2 and 3 standard normals: 1/√π and 3/(2√π).
        let sp = std::f64::consts::PI.sqrt();
        assert!((expected_max_std_normal(2) - 1.0 / sp).abs() < 1e-10);
        assert!((expected_max_std_normal(3) - 1.5 / sp).abs() < 1e-10);
        // "Best of ~100 single runs inflates the winner by about 2.5 σ".
        let e100 = expected_max_std_normal(100);
        assert!((e100 - 2.5076).abs() < 1e-3, "{e100}");
    }

    #[test]
    fn variance_share_separates_genes_from_seeds() {
        let same = vec![vec![1.0, 2.0, 3.0], vec![1.0, 2.0, 3.0]];
        assert_eq!(variance_share(&same).gene_share, 0.0);
        let apart = vec![vec![1.0, 1.1, 0.9], vec![5.0, 5.1, 4.9]];
        assert!(variance_share(&apart).gene_share > 0.99);
        assert!(variance_share(&[vec![1.0]]).icc.is_nan());
    }

    #[test]
    fn interaction_sd_removes_gene_and_seed_effects() {
        // Purely additive: gene + seed, no interaction → 0.
        let add: Vec<Vec<f64>> = (0..3)
            .map(|g| (0..4).map(|s| g as f64 * 2.0 + s as f64 * 10.0).collect())
            .collect();
        assert!(interaction_sd(&add).unwrap().sd < 1e-12);
        // y = [[e, −e], [−e, e]] has all row and column means 0: SS = 4e², df = 1, sd = 2e.
        let e = 0.3;
        let r = interaction_sd(&[vec![e, -e], vec![-e, e]]).unwrap();
        assert!((r.sd - 2.0 * e).abs() < 1e-15 && r.df == 1.0);
        assert!(interaction_sd(&[vec![1.0, 2.0]]).unwrap().sd.is_nan());
        assert!(interaction_sd(&[vec![1.0, 2.0], vec![1.0]]).is_err());
        assert!(interaction_sd(&[vec![1.0, f64::NAN], vec![1.0, 2.0]]).is_err());
        assert!(interaction_sd(&[]).unwrap().sd.is_nan());
    }
}
