//! Correlation: Pearson's r and Spearman's ρ with scipy's two-sided p-values
//! (`scipy.stats.pearsonr`'s exact beta distribution, i.e. the t test with n − 2 df, and
//! `scipy.stats.spearmanr`'s t approximation on the ranks).

use super::rank::rank_average;
use super::t_sf;
use serde::Serialize;

/// A correlation and its two-sided p-value.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Correlation {
    /// r or ρ.
    pub r: f64,
    /// Two-sided p-value of r = 0 (NaN with fewer than 3 pairs).
    pub pvalue: f64,
    /// Pairs.
    pub n: usize,
}

/// Pearson's r of paired samples; NaN when either is constant or there are < 2 pairs.
pub fn pearson(x: &[f64], y: &[f64]) -> Correlation {
    let n = x.len().min(y.len());
    if n < 2 {
        return Correlation {
            r: f64::NAN,
            pvalue: f64::NAN,
            n,
        };
    }
    let (x, y) = (&x[..n], &y[..n]);
    // As scipy: deviations scaled to unit length, then their dot product, clipped.
    let mx = x.iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let dx: Vec<f64> = x.iter().map(|v| v - mx).collect();
    let dy: Vec<f64> = y.iter().map(|v| v - my).collect();
    let nx = dx.iter().map(|v| v * v).sum::<f64>().sqrt();
    let ny = dy.iter().map(|v| v * v).sum::<f64>().sqrt();
    let r = if nx == 0.0 || ny == 0.0 {
        f64::NAN
    } else {
        dx.iter()
            .zip(&dy)
            .map(|(a, b)| (a / nx) * (b / ny))
            .sum::<f64>()
            .clamp(-1.0, 1.0)
    };
    Correlation {
        r,
        pvalue: t_pvalue(r, n),
        n,
    }
}

/// Spearman's ρ (Pearson's r of average ranks) of paired samples.
pub fn spearman(x: &[f64], y: &[f64]) -> Correlation {
    let n = x.len().min(y.len());
    if n < 2 {
        return Correlation {
            r: f64::NAN,
            pvalue: f64::NAN,
            n,
        };
    }
    let (rx, _) = rank_average(&x[..n]);
    let (ry, _) = rank_average(&y[..n]);
    // As scipy (numpy's corrcoef of the ranks): the covariance divided by each sd in turn.
    let m = (n as f64 + 1.0) / 2.0;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (a, b) = (rx[i] - m, ry[i] - m);
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    let d = (n - 1) as f64;
    let r = if sxx == 0.0 || syy == 0.0 {
        f64::NAN
    } else {
        (sxy / d / (sxx / d).sqrt() / (syy / d).sqrt()).clamp(-1.0, 1.0)
    };
    Correlation {
        r,
        pvalue: t_pvalue(r, n),
        n,
    }
}

/// Two-sided p-value of r with n pairs from t = r √((n − 2)/(1 − r²)), n − 2 df.
fn t_pvalue(r: f64, n: usize) -> f64 {
    if n < 3 || r.is_nan() {
        return f64::NAN;
    }
    if r.abs() >= 1.0 {
        return 0.0;
    }
    let df = (n - 2) as f64;
    let t = r * (df / (1.0 - r * r)).sqrt();
    (2.0 * t_sf(t.abs(), df)).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_reversed_rankings() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [10.0, 20.0, 25.0, 40.0, 100.0];
        assert!((spearman(&x, &y).r - 1.0).abs() < 1e-12);
        assert!(spearman(&x, &y).pvalue < 1e-6);
        let z: Vec<f64> = y.iter().rev().copied().collect();
        assert!((spearman(&x, &z).r + 1.0).abs() < 1e-12);
        assert!(spearman(&x[..2], &y[..2]).pvalue.is_nan());
        assert!(pearson(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).r.is_nan());
    }
}
