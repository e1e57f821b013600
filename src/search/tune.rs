//! Hyperparameter random search (`kind = "tune"`): trial configurations drawn from declared
//! ranges, and the best trial of each gene read back from a store's rows.
//!
//! Every gene gets the *same* trial configurations (common random numbers), so genes differ
//! only in how well they use an identical budget.

use crate::gene::Gene;
use crate::record::{RunRow, Stage};
use crate::seed::rng_for;
use crate::train::TrainConfig;
use rand::Rng;
use std::collections::BTreeMap;

/// How a hyperparameter is drawn from its range `[low, high]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Log-uniform, rounded to 3 significant digits.
    Log,
    /// Uniform, rounded to 3 significant digits.
    Linear,
    /// Uniform over the integers low..=high.
    Integer,
    /// Log-uniform in 1 − x (so 0.9 … 0.999 spreads evenly over decades), 1 − x rounded to
    /// 3 significant digits.
    LogOneMinus,
}

/// One tunable hyperparameter: its setting, how it is drawn, what a valid range is, and how
/// reports label it.
pub struct Hparam {
    /// The training setting (`lr`, …), as in `[tune]` and `[overrides]`.
    pub key: &'static str,
    /// Column label in report tables.
    pub label: &'static str,
    /// Short label in one-line summaries.
    pub short: &'static str,
    /// How it is drawn.
    pub scale: Scale,
    /// Reads it from a configuration.
    pub get: fn(&TrainConfig) -> f64,
    /// Writes it into a configuration.
    pub set: fn(&mut TrainConfig, f64),
    /// Checks a range `[low, high]` against the configuration; the error says what is valid.
    pub check: fn(f64, f64, &TrainConfig) -> Result<(), String>,
}

/// The hyperparameters a tune study may search, in draw order. This one table drives the
/// `[tune]` keys, the trial draws ([`trial_configs`]), what a tuned replication takes from a
/// tune study ([`apply_tuned`]) and the hyperparameter columns of reports. Each trial draws
/// one uniform per entry, whatever the ranges, so a missing range does not shift the
/// others; a new entry (appended) changes the draws of every trial after the first.
pub const HPARAMS: [Hparam; 4] = [
    Hparam {
        key: "lr",
        label: "lr",
        short: "lr",
        scale: Scale::Log,
        get: |c| c.lr,
        set: |c, v| c.lr = v,
        check: |lo, hi, _| {
            (lo > 0.0 && lo <= hi && hi.is_finite())
                .then_some(())
                .ok_or_else(|| "lr = [low, high] needs 0 < low <= high".into())
        },
    },
    Hparam {
        key: "warmup",
        label: "warmup",
        short: "warmup",
        scale: Scale::Integer,
        get: |c| c.warmup as f64,
        set: |c, v| c.warmup = v as usize,
        check: |lo, hi, c| {
            (lo >= 0.0 && lo.fract() == 0.0 && hi.fract() == 0.0 && lo <= hi && hi < c.steps as f64)
                .then_some(())
                .ok_or_else(|| {
                    format!(
                        "warmup = [low, high] needs whole numbers low <= high < steps ({})",
                        c.steps
                    )
                })
        },
    },
    Hparam {
        key: "weight_decay",
        label: "weight decay",
        short: "wd",
        scale: Scale::Linear,
        get: |c| c.weight_decay,
        set: |c, v| c.weight_decay = v,
        check: |lo, hi, _| {
            (lo >= 0.0 && lo <= hi && hi.is_finite())
                .then_some(())
                .ok_or_else(|| "weight_decay = [low, high] needs 0 <= low <= high".into())
        },
    },
    Hparam {
        key: "beta2",
        label: "β₂",
        short: "β₂",
        scale: Scale::LogOneMinus,
        get: |c| c.beta2,
        set: |c, v| c.beta2 = v,
        check: |lo, hi, _| {
            ((0.0..1.0).contains(&lo) && (lo..1.0).contains(&hi))
                .then_some(())
                .ok_or_else(|| "beta2 = [low, high] needs 0 <= low <= high < 1".into())
        },
    },
];

/// The hyperparameter `key` of [`HPARAMS`].
pub fn hparam(key: &str) -> Option<&'static Hparam> {
    HPARAMS.iter().find(|h| h.key == key)
}

/// Search ranges (inclusive) by [`HPARAMS`] key; an absent range leaves the value of the
/// preset and overrides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ranges(pub BTreeMap<&'static str, [f64; 2]>);

impl Ranges {
    /// The range of `key`, if declared.
    pub fn get(&self, key: &str) -> Option<[f64; 2]> {
        self.0.get(key).copied()
    }

    /// Declares the range of a hyperparameter of [`HPARAMS`].
    pub fn with(mut self, h: &'static Hparam, range: [f64; 2]) -> Ranges {
        self.0.insert(h.key, range);
        self
    }
}

/// `c`'s tuned hyperparameters in one line, e.g. `lr 0.001 · warmup 100 · wd 0.1 · β₂ 0.95`.
pub fn summary(c: &TrainConfig) -> String {
    HPARAMS
        .iter()
        .map(|h| format!("{} {}", h.short, (h.get)(c)))
        .collect::<Vec<_>>()
        .join(" · ")
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
/// ChaCha8 keyed by `seed`. One uniform per [`HPARAMS`] entry is drawn per trial whatever
/// the ranges, so adding or removing a range does not shift the others' draws.
pub fn trial_configs(
    base: &TrainConfig,
    ranges: &Ranges,
    trials: usize,
    seed: u64,
) -> Vec<TrainConfig> {
    let mut rng = rng_for(seed, "tune");
    (0..trials)
        .map(|_| {
            let u: Vec<f64> = HPARAMS.iter().map(|_| rng.random()).collect();
            let mut c = base.clone();
            for (h, u) in HPARAMS.iter().zip(u) {
                let Some([lo, hi]) = ranges.get(h.key) else {
                    continue;
                };
                let v = match h.scale {
                    Scale::Log => round_sig(log_uniform(u, lo, hi), 3),
                    Scale::Linear => round_sig(lo + u * (hi - lo), 3),
                    Scale::Integer => {
                        let (lo, hi) = (lo as usize, hi as usize);
                        (lo + ((u * (hi - lo + 1) as f64) as usize).min(hi - lo)) as f64
                    }
                    Scale::LogOneMinus => 1.0 - round_sig(log_uniform(u, 1.0 - hi, 1.0 - lo), 3),
                };
                (h.set)(&mut c, v);
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
    for r in rows.iter().filter(|r| r.stage == Stage::Tune) {
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
    for h in &HPARAMS {
        (h.set)(&mut c, (h.get)(tuned));
    }
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
        let r = Ranges::default()
            .with(hparam("lr").unwrap(), [3e-4, 3e-3])
            .with(hparam("warmup").unwrap(), [0.0, 200.0])
            .with(hparam("weight_decay").unwrap(), [0.0, 0.2])
            .with(hparam("beta2").unwrap(), [0.9, 0.999]);
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
        let only_lr = Ranges::default().with(hparam("lr").unwrap(), r.get("lr").unwrap());
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
