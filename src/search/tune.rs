//! Hyperparameter random search (`kind = "tune"`): trial configurations drawn from declared
//! ranges, and the best trial of each gene read back from a store's rows.
//!
//! Every gene gets the *same* trial configurations (common random numbers), so genes differ
//! only in how well they use an identical budget.

use crate::gene::Gene;
use crate::seed::rng_for;
use crate::study::store::RunRow;
use crate::train::TrainConfig;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The hyperparameters a tune study may search; a replication with tuned hyperparameters
/// takes exactly these from the tune study.
pub const TUNED_KEYS: [&str; 4] = ["lr", "warmup", "weight_decay", "beta2"];

/// Search ranges (inclusive); an absent range leaves the value of the preset and overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ranges {
    /// Peak learning rate, log-uniform.
    pub lr: Option<[f64; 2]>,
    /// Warm-up steps, uniform over the integers.
    pub warmup: Option<[usize; 2]>,
    /// Weight decay, uniform.
    pub weight_decay: Option<[f64; 2]>,
    /// Adam β₂, log-uniform in 1 − β₂ (so 0.9 … 0.999 is spread evenly over decades).
    pub beta2: Option<[f64; 2]>,
}

/// `x` rounded to `digits` significant digits (readable, stable configurations).
pub fn round_sig(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let d = digits - 1 - x.abs().log10().floor() as i32;
    if d >= 0 {
        let p = 10f64.powi(d);
        (x * p).round() / p
    } else {
        let p = 10f64.powi(-d);
        (x / p).round() * p
    }
}

fn log_uniform(u: f64, lo: f64, hi: f64) -> f64 {
    (lo.ln() + u * (hi.ln() - lo.ln())).exp()
}

/// The `trials` configurations of a tune study: `base` with the ranged values drawn from
/// ChaCha8 keyed by `seed`. Four uniforms are drawn per trial whatever the ranges, so adding
/// or removing a range does not shift the others' draws.
pub fn trial_configs(
    base: &TrainConfig,
    ranges: &Ranges,
    trials: usize,
    seed: u64,
) -> Vec<TrainConfig> {
    let mut rng = rng_for(seed, "tune");
    (0..trials)
        .map(|_| {
            let u: [f64; 4] = [rng.random(), rng.random(), rng.random(), rng.random()];
            let mut c = base.clone();
            if let Some([lo, hi]) = ranges.lr {
                c.lr = round_sig(log_uniform(u[0], lo, hi), 3);
            }
            if let Some([lo, hi]) = ranges.warmup {
                c.warmup = lo + ((u[1] * (hi - lo + 1) as f64) as usize).min(hi - lo);
            }
            if let Some([lo, hi]) = ranges.weight_decay {
                c.weight_decay = round_sig(lo + u[2] * (hi - lo), 3);
            }
            if let Some([lo, hi]) = ranges.beta2 {
                c.beta2 = 1.0 - round_sig(log_uniform(u[3], 1.0 - hi, 1.0 - lo), 3);
            }
            c
        })
        .collect()
}

/// One trial of one gene as found in a store.
#[derive(Debug, Clone)]
pub struct Trial {
    /// Position among the gene's trials (order of first appearance in the rows).
    pub index: usize,
    /// Its configuration.
    pub config: TrainConfig,
    /// Validation ppl per seed (`None`: diverged).
    pub vals: Vec<Option<f64>>,
    /// Mean validation ppl (+∞ when a seed diverged).
    pub fitness: f64,
}

/// The trials of every gene among `rows` (a tune study's rows), in order of appearance.
pub fn trials(rows: &[RunRow]) -> BTreeMap<Gene, Vec<Trial>> {
    let mut out: BTreeMap<Gene, Vec<Trial>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.stage == "tune") {
        let ts = out.entry(r.gene).or_default();
        match ts.iter_mut().find(|t| t.config == r.config) {
            Some(t) => t.vals.push(r.val_ppl),
            None => ts.push(Trial {
                index: ts.len(),
                config: r.config.clone(),
                vals: vec![r.val_ppl],
                fitness: 0.0,
            }),
        }
    }
    for t in out.values_mut().flatten() {
        t.fitness = super::fitness(&t.vals);
    }
    out
}

/// The best of a gene's trials (lowest mean validation ppl; ties: the earlier trial).
pub fn best_of(trials: &[Trial]) -> Option<&Trial> {
    trials
        .iter()
        .reduce(|a, b| if b.fitness < a.fitness { b } else { a })
}

/// Each gene's best trial.
pub fn best_trials(rows: &[RunRow]) -> BTreeMap<Gene, Trial> {
    trials(rows)
        .into_iter()
        .filter_map(|(g, ts)| best_of(&ts).map(|t| (g, t.clone())))
        .collect()
}

/// `base` with the tuned values of `tuned`. Errors when the two differ in anything else
/// but the evaluation cadence: tuned values only transfer to the configuration they were
/// tuned in.
pub fn apply_tuned(base: &TrainConfig, tuned: &TrainConfig) -> Result<TrainConfig, String> {
    let mut c = base.clone();
    c.lr = tuned.lr;
    c.warmup = tuned.warmup;
    c.weight_decay = tuned.weight_decay;
    c.beta2 = tuned.beta2;
    let mut a = serde_json::to_value(&c).expect("config serialises");
    let mut b = serde_json::to_value(tuned).expect("config serialises");
    for v in [&mut a, &mut b] {
        v.as_object_mut().expect("object").remove("eval_every");
    }
    if a != b {
        let (a, b) = (
            a.as_object().expect("object"),
            b.as_object().expect("object"),
        );
        let diff: Vec<String> = a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, v)| format!("{k} = {v} here but {} in the tune study", b[k]))
            .collect();
        return Err(diff.join(", "));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Preset;

    #[test]
    fn rounding() {
        assert_eq!(round_sig(0.000_347_21, 3), 0.000347);
        assert_eq!(round_sig(1234.0, 2), 1200.0);
        assert_eq!(round_sig(0.0, 3), 0.0);
        assert_eq!(format!("{}", round_sig(0.001_234_9, 3)), "0.00123");
    }

    #[test]
    fn trials_stay_in_range_and_are_deterministic() {
        let base = Preset::Cpu.config();
        let r = Ranges {
            lr: Some([3e-4, 3e-3]),
            warmup: Some([0, 200]),
            weight_decay: Some([0.0, 0.2]),
            beta2: Some([0.9, 0.999]),
        };
        let a = trial_configs(&base, &r, 200, 7);
        assert_eq!(a, trial_configs(&base, &r, 200, 7));
        assert_ne!(a, trial_configs(&base, &r, 200, 8));
        for c in &a {
            assert!((3e-4..=3e-3).contains(&c.lr), "{}", c.lr);
            assert!(c.warmup <= 200);
            assert!((0.0..=0.2).contains(&c.weight_decay));
            assert!((0.9..=0.999 + 1e-12).contains(&c.beta2), "{}", c.beta2);
            assert_eq!((c.steps, c.d_model), (base.steps, base.d_model));
        }
        // log-uniform: about half the draws below the geometric midpoint
        let below = a.iter().filter(|c| c.lr < (3e-4f64 * 3e-3).sqrt()).count();
        assert!((70..=130).contains(&below), "{below}");
        assert!(a.iter().any(|c| c.warmup == 0) || a.iter().any(|c| c.warmup < 5));
        // a missing range leaves the base value and does not shift the others
        let only_lr = Ranges {
            lr: r.lr,
            ..Default::default()
        };
        let b = trial_configs(&base, &only_lr, 200, 7);
        assert!(b
            .iter()
            .zip(&a)
            .all(|(x, y)| x.lr == y.lr && x.warmup == base.warmup));
    }

    #[test]
    fn tuned_values_transfer_only_to_the_same_configuration() {
        let base = Preset::Cpu.config();
        let mut tuned = base.clone();
        tuned.lr = 2e-3;
        tuned.beta2 = 0.99;
        tuned.eval_every = 0;
        let c = apply_tuned(&base, &tuned).unwrap();
        assert_eq!((c.lr, c.beta2, c.eval_every), (2e-3, 0.99, base.eval_every));
        tuned.steps = 300;
        let e = apply_tuned(&base, &tuned).unwrap_err();
        assert!(e.contains("steps = 1500 here but 300"), "{e}");
    }
}
