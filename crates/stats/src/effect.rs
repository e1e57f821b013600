//! Effect sizes of x relative to y (x minus y).

use super::{mean, var};
use serde::Serialize;
use statrs::function::gamma::ln_gamma;

/// Cohen's d with the pooled sd (n − 1 denominators).
pub fn cohens_d(x: &[f64], y: &[f64]) -> f64 {
    let (nx, ny) = (x.len() as f64, y.len() as f64);
    let pooled = (((nx - 1.0) * var(x) + (ny - 1.0) * var(y)) / (nx + ny - 2.0)).sqrt();
    (mean(x) - mean(y)) / pooled
}

/// Hedges' g: d · J with the exact correction J = Γ(ν/2) / (√(ν/2)·Γ((ν−1)/2)), ν = n_x + n_y − 2.
pub fn hedges_g(x: &[f64], y: &[f64]) -> f64 {
    let nu = (x.len() + y.len()) as f64 - 2.0;
    let j = (ln_gamma(nu / 2.0) - ln_gamma((nu - 1.0) / 2.0)).exp() / (nu / 2.0).sqrt();
    cohens_d(x, y) * j
}

/// (P(x > y), P(x = y), P(x < y)) over all pairs.
fn pair_probs(x: &[f64], y: &[f64]) -> (f64, f64, f64) {
    let (mut gt, mut eq, mut lt) = (0usize, 0usize, 0usize);
    for a in x {
        for b in y {
            if a > b {
                gt += 1;
            } else if a < b {
                lt += 1;
            } else {
                eq += 1;
            }
        }
    }
    let n = (x.len() * y.len()) as f64;
    (gt as f64 / n, eq as f64 / n, lt as f64 / n)
}

/// Cliff's delta, P(x > y) − P(x < y).
pub fn cliffs_delta(x: &[f64], y: &[f64]) -> f64 {
    let (gt, _, lt) = pair_probs(x, y);
    gt - lt
}

/// Vargha–Delaney A12 = P(x > y) + ½·P(x = y).
pub fn a12(x: &[f64], y: &[f64]) -> f64 {
    let (gt, eq, _) = pair_probs(x, y);
    gt + 0.5 * eq
}

/// Probability that a run of x is better than a run of y (ties count half):
/// P(x < y) + ½·P(x = y) when lower is better, A12 when higher is better.
pub fn prob_improvement(x: &[f64], y: &[f64], higher_is_better: bool) -> f64 {
    let (gt, eq, lt) = pair_probs(x, y);
    if higher_is_better {
        gt + 0.5 * eq
    } else {
        lt + 0.5 * eq
    }
}

/// All effect sizes of x relative to y.
#[derive(Debug, Clone, Serialize)]
pub struct Effects {
    /// Cohen's d (pooled sd).
    pub cohens_d: f64,
    /// Hedges' g (exact J).
    pub hedges_g: f64,
    /// Cliff's delta, P(x > y) − P(x < y).
    pub cliffs_delta: f64,
    /// Vargha–Delaney A12, P(x > y) + ½ P(x = y).
    pub a12: f64,
    /// P(x better than y) in the chosen direction.
    pub prob_improvement: f64,
}

/// Computes [`Effects`].
pub fn effects(x: &[f64], y: &[f64], higher_is_better: bool) -> Effects {
    Effects {
        cohens_d: cohens_d(x, y),
        hedges_g: hedges_g(x, y),
        cliffs_delta: cliffs_delta(x, y),
        a12: a12(x, y),
        prob_improvement: prob_improvement(x, y, higher_is_better),
    }
}
