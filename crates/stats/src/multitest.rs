//! Multiple-comparison adjustments, as statsmodels' `multipletests`: adjusted p-values in
//! input order, capped at 1; a hypothesis is rejected when its adjusted p ≤ α.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// An adjustment method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Holm's step-down family-wise correction (the default).
    Holm,
    /// Bonferroni's family-wise correction.
    Bonferroni,
    /// Benjamini–Hochberg false-discovery rate (`fdr_bh`).
    Bh,
}

impl FromStr for Method {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "holm" => Ok(Method::Holm),
            "bonferroni" => Ok(Method::Bonferroni),
            "bh" | "fdr_bh" => Ok(Method::Bh),
            o => anyhow::bail!("unknown adjustment `{o}`; use holm, bonferroni or bh"),
        }
    }
}

/// Adjusted p-values in input order. NaN p-values are an error (statsmodels rejects them too).
pub fn adjust(p: &[f64], method: Method) -> anyhow::Result<Vec<f64>> {
    if let Some(bad) = p.iter().find(|v| !(0.0..=1.0).contains(*v)) {
        anyhow::bail!("p-values must lie in [0, 1]; got {bad}");
    }
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut out = vec![0.0; m];
    match method {
        Method::Bonferroni => {
            for (o, &v) in out.iter_mut().zip(p) {
                *o = (v * m as f64).min(1.0);
            }
        }
        Method::Holm => {
            let mut running: f64 = 0.0;
            for (rank, &i) in order.iter().enumerate() {
                running = running.max(((m - rank) as f64 * p[i]).min(1.0));
                out[i] = running;
            }
        }
        Method::Bh => {
            let mut running: f64 = 1.0;
            for (rank, &i) in order.iter().enumerate().rev() {
                running = running.min(p[i] * m as f64 / (rank + 1) as f64);
                out[i] = running.min(1.0);
            }
        }
    }
    Ok(out)
}

/// Which hypotheses are rejected at level `alpha` (adjusted p ≤ α).
pub fn reject(adjusted: &[f64], alpha: f64) -> Vec<bool> {
    adjusted.iter().map(|&q| q <= alpha).collect()
}
