//! t-tests: Welch, Student (pooled) and paired, as scipy's `ttest_ind` / `ttest_rel`.

use super::{mean, paired_differences, pvalue, t_cdf, t_ppf, t_sf, var, Alternative, Interval};
use serde::Serialize;

/// A t statistic with its degrees of freedom and p-value.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct TTest {
    /// t.
    pub statistic: f64,
    /// Degrees of freedom.
    pub df: f64,
    /// p-value.
    pub pvalue: f64,
}

fn finish(t: f64, df: f64, alt: Alternative) -> TTest {
    TTest {
        statistic: t,
        df,
        pvalue: pvalue(t, alt, |s| t_cdf(s, df), |s| t_sf(s, df)),
    }
}

/// Welch's t-test of mean(x) − mean(y) with the Welch–Satterthwaite df. When both
/// variances are 0 the df is undefined and, as in scipy, reported as 1.
pub fn welch(x: &[f64], y: &[f64], alt: Alternative) -> TTest {
    let (nx, ny) = (x.len() as f64, y.len() as f64);
    let (vx, vy) = (var(x) / nx, var(y) / ny);
    let mut df = (vx + vy).powi(2) / (vx * vx / (nx - 1.0) + vy * vy / (ny - 1.0));
    if df.is_nan() && vx == 0.0 && vy == 0.0 {
        df = 1.0;
    }
    let t = (mean(x) - mean(y)) / (vx + vy).sqrt();
    finish(t, df, alt)
}

/// Student's t-test with the pooled variance, df = n_x + n_y − 2.
pub fn student(x: &[f64], y: &[f64], alt: Alternative) -> TTest {
    let (nx, ny) = (x.len() as f64, y.len() as f64);
    let df = nx + ny - 2.0;
    let pooled = ((nx - 1.0) * var(x) + (ny - 1.0) * var(y)) / df;
    let t = (mean(x) - mean(y)) / (pooled * (1.0 / nx + 1.0 / ny)).sqrt();
    finish(t, df, alt)
}

/// Paired t-test on d = x − y (same length), df = n − 1.
pub fn paired(x: &[f64], y: &[f64], alt: Alternative) -> anyhow::Result<TTest> {
    let d = paired_differences(x, y)?;
    let n = d.len() as f64;
    let t = mean(&d) / (var(&d) / n).sqrt();
    Ok(finish(t, n - 1.0, alt))
}

/// The t interval of mean(x) − mean(y) with Welch's df (scipy's
/// `ttest_ind(equal_var=False).confidence_interval`, two-sided).
pub fn welch_ci(x: &[f64], y: &[f64], level: f64) -> Interval {
    let w = welch(x, y, Alternative::TwoSided);
    let (nx, ny) = (x.len() as f64, y.len() as f64);
    let se = (var(x) / nx + var(y) / ny).sqrt();
    let diff = mean(x) - mean(y);
    let half = t_ppf(0.5 + level / 2.0, w.df) * se;
    Interval {
        level,
        low: diff - half,
        high: diff + half,
    }
}
