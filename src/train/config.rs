//! Training configuration and the named presets (`smoke`, `cpu`, `seed`).

use crate::model::ModelConfig;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The kind of a configuration field, which decides its column type in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A count (an integer column).
    Count,
    /// A real number (a floating-point column).
    Real,
}

/// The value of one configuration field (`None`: a `none` setting such as `vocab_cap`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue {
    /// A count.
    Count(Option<u64>),
    /// A real number.
    Real(Option<f64>),
}

/// A type a configuration field may have.
pub trait ConfigField: Sized {
    /// Its kind.
    const KIND: FieldKind;
    /// Its value.
    fn value(&self) -> FieldValue;
    /// From a value of the same kind (`None` only where the type allows it).
    fn from_value(v: FieldValue) -> Option<Self>;
}

impl ConfigField for usize {
    const KIND: FieldKind = FieldKind::Count;
    fn value(&self) -> FieldValue {
        FieldValue::Count(Some(*self as u64))
    }
    fn from_value(v: FieldValue) -> Option<Self> {
        match v {
            FieldValue::Count(Some(x)) => usize::try_from(x).ok(),
            _ => None,
        }
    }
}

impl ConfigField for Option<usize> {
    const KIND: FieldKind = FieldKind::Count;
    fn value(&self) -> FieldValue {
        FieldValue::Count(self.map(|x| x as u64))
    }
    fn from_value(v: FieldValue) -> Option<Self> {
        match v {
            FieldValue::Count(x) => x.map(usize::try_from).transpose().ok(),
            _ => None,
        }
    }
}

impl ConfigField for f64 {
    const KIND: FieldKind = FieldKind::Real;
    fn value(&self) -> FieldValue {
        FieldValue::Real(Some(*self))
    }
    fn from_value(v: FieldValue) -> Option<Self> {
        match v {
            FieldValue::Real(x) => x,
            _ => None,
        }
    }
}

/// Declares [`TrainConfig`] and, from its fields' types, the table of its fields
/// ([`TrainConfig::FIELDS`]) and typed access by name: a new setting is one line.
macro_rules! train_config {
    ($(#[$m:meta])* pub struct TrainConfig { $($(#[$fm:meta])* pub $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        pub struct TrainConfig { $($(#[$fm])* pub $f: $t,)* }

        impl TrainConfig {
            /// Every field's name and kind, in declaration order.
            pub const FIELDS: &'static [(&'static str, FieldKind)] =
                &[$((stringify!($f), <$t as ConfigField>::KIND)),*];

            /// The value of field `name`.
            pub fn field(&self, name: &str) -> Option<FieldValue> {
                match name {
                    $(stringify!($f) => Some(ConfigField::value(&self.$f)),)*
                    _ => None,
                }
            }

            /// Sets field `name`; an error when the name is unknown or the value does not
            /// fit its type.
            pub fn set_field(&mut self, name: &str, v: FieldValue) -> Result<()> {
                match name {
                    $(stringify!($f) => {
                        self.$f = ConfigField::from_value(v)
                            .ok_or_else(|| anyhow!("bad value {v:?} for `{name}`"))?;
                        Ok(())
                    })*
                    _ => bail!("unknown setting `{name}`"),
                }
            }
        }
    };
}

train_config! {
/// Everything that, besides the gene, the data and the seed, decides a run's result.
/// Every field can be overridden by name (`--set d_model=96`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Keep the K most frequent training words (the rest become `<unk>`); `none` = full vocabulary.
    pub vocab_cap: Option<usize>,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Context length L of training windows and evaluation windows.
    pub seq_len: usize,
    /// Windows per training batch (per replica).
    pub batch_size: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps (from lr/warmup to lr).
    pub warmup: usize,
    /// The cosine decay ends at `min_lr_ratio · lr`.
    pub min_lr_ratio: f64,
    /// AdamW decoupled weight decay (weight matrices and embeddings only).
    pub weight_decay: f64,
    /// Adam β₁.
    pub beta1: f64,
    /// Adam β₂.
    pub beta2: f64,
    /// Adam ε.
    pub eps: f64,
    /// Per-replica global gradient-norm clip.
    pub grad_clip: f64,
    /// Validate every this many steps (0: only at the end).
    pub eval_every: usize,
    /// Evaluate on at most this many tokens of a split (`none`: the whole split). Only the
    /// smoke preset sets it; perplexities of real runs are always over the whole split.
    pub eval_max_tokens: Option<usize>,
}
}

impl TrainConfig {
    /// The model shape for a vocabulary of `vocab_size` words.
    pub fn model(&self, vocab_size: usize) -> ModelConfig {
        ModelConfig {
            vocab_size,
            d_model: self.d_model,
            n_layers: self.n_layers,
            n_heads: self.n_heads,
            seq_len: self.seq_len,
        }
    }

    /// Checks ranges; the error names the field and what is allowed.
    pub fn validate(&self) -> Result<()> {
        self.model(2).validate()?;
        if self.batch_size == 0 {
            bail!("batch_size must be at least 1");
        }
        if self.steps == 0 {
            bail!("steps must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("lr must be a positive number, got {}", self.lr);
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            bail!("min_lr_ratio must be in [0, 1], got {}", self.min_lr_ratio);
        }
        for (n, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                bail!("{n} must be in [0, 1), got {v}");
            }
        }
        if self.weight_decay < 0.0 || self.eps <= 0.0 || self.grad_clip <= 0.0 {
            bail!("weight_decay must be ≥ 0, eps and grad_clip > 0");
        }
        if let Some(c) = self.vocab_cap {
            if c < 2 {
                bail!("vocab_cap must be at least 2 (or none), got {c}");
            }
        }
        Ok(())
    }

    /// Learning rate at optimiser step `step` (0-based): linear warm-up to `lr` over
    /// `warmup` steps, then cosine decay to `min_lr_ratio · lr` at the last step.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let decay_steps = self
            .steps
            .saturating_sub(self.warmup)
            .saturating_sub(1)
            .max(1);
        let progress = ((step - self.warmup) as f64 / decay_steps as f64).min(1.0);
        let min = self.lr * self.min_lr_ratio;
        min + 0.5 * (self.lr - min) * (1.0 + (std::f64::consts::PI * progress).cos())
    }

    /// Sets one field from `key=value` text (numbers, `none`, `true`/`false`).
    pub fn set(&mut self, assignment: &str) -> Result<()> {
        let (key, value) = assignment.split_once('=').ok_or_else(|| {
            anyhow!("override `{assignment}` must look like key=value, e.g. steps=800")
        })?;
        let (key, value) = (key.trim(), value.trim());
        let parsed: serde_json::Value =
            if value.eq_ignore_ascii_case("none") || value.eq_ignore_ascii_case("null") {
                serde_json::Value::Null
            } else {
                serde_json::from_str(value)
                    .unwrap_or_else(|_| serde_json::Value::String(value.to_string()))
            };
        self.set_value(key, parsed)
    }

    /// Sets one field from an already parsed value (study files' `[overrides]`).
    pub fn set_value(&mut self, key: &str, parsed: serde_json::Value) -> Result<()> {
        let value = parsed.to_string();
        let mut obj = serde_json::to_value(&*self)?;
        let map = obj.as_object_mut().expect("struct serialises to an object");
        if !map.contains_key(key) {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            bail!(
                "unknown setting `{key}`; valid settings: {}",
                keys.iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        map.insert(key.to_string(), parsed);
        *self = serde_json::from_value(obj)
            .with_context(|| format!("bad value `{value}` for `{key}`"))?;
        self.validate()
    }
}

/// A named starting configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// Seconds on a CPU; for tests.
    Smoke,
    /// Research on a 2-core CPU: vocabulary capped at 4,096, d 64.
    Cpu,
    /// The published scale (full vocabulary, d 128, 5,000 steps); meant for GPUs.
    Seed,
}

impl Preset {
    /// All presets.
    pub const ALL: [Preset; 3] = [Preset::Smoke, Preset::Cpu, Preset::Seed];

    /// The preset's configuration.
    pub fn config(self) -> TrainConfig {
        let base = TrainConfig {
            vocab_cap: None,
            d_model: 128,
            n_layers: 2,
            n_heads: 4,
            seq_len: 64,
            batch_size: 32,
            steps: 5000,
            lr: 1e-3,
            warmup: 200,
            min_lr_ratio: 0.1,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            grad_clip: 1.0,
            eval_every: 500,
            eval_max_tokens: None,
        };
        match self {
            Preset::Seed => base,
            Preset::Cpu => TrainConfig {
                vocab_cap: Some(4096),
                d_model: 64,
                batch_size: 16,
                steps: 1500,
                warmup: 100,
                eval_every: 250,
                ..base
            },
            Preset::Smoke => TrainConfig {
                vocab_cap: Some(512),
                d_model: 32,
                seq_len: 32,
                batch_size: 8,
                steps: 30,
                lr: 3e-3,
                warmup: 5,
                eval_every: 15,
                eval_max_tokens: Some(4096),
                ..base
            },
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Preset::Smoke => "smoke",
            Preset::Cpu => "cpu",
            Preset::Seed => "seed",
        })
    }
}

impl FromStr for Preset {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "smoke" => Ok(Preset::Smoke),
            "cpu" => Ok(Preset::Cpu),
            "seed" => Ok(Preset::Seed),
            other => bail!("unknown preset `{other}`; valid presets: smoke, cpu, seed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_table_is_every_serialised_setting_with_its_value() {
        let c = Preset::Smoke.config();
        let json = serde_json::to_value(&c).unwrap();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        let mut names: Vec<&str> = TrainConfig::FIELDS.iter().map(|f| f.0).collect();
        names.sort_unstable();
        assert_eq!(keys, names);
        assert_eq!(c.field("lr"), Some(FieldValue::Real(Some(3e-3))));
        assert_eq!(c.field("vocab_cap"), Some(FieldValue::Count(Some(512))));
        let mut d = c.clone();
        d.set_field("steps", FieldValue::Count(Some(7))).unwrap();
        assert_eq!(d.steps, 7);
        assert!(d.set_field("steps", FieldValue::Count(None)).is_err());
        assert!(d.set_field("steps", FieldValue::Real(Some(7.0))).is_err());
        assert!(d.set_field("nope", FieldValue::Count(Some(1))).is_err());
    }

    #[test]
    fn presets_match_the_issue() {
        let s = Preset::Seed.config();
        assert_eq!(
            (
                s.vocab_cap,
                s.d_model,
                s.n_layers,
                s.n_heads,
                s.seq_len,
                s.batch_size,
                s.steps
            ),
            (None, 128, 2, 4, 64, 32, 5000)
        );
        assert_eq!((s.lr, s.warmup), (1e-3, 200));
        let c = Preset::Cpu.config();
        assert_eq!(
            (
                c.vocab_cap,
                c.d_model,
                c.n_layers,
                c.n_heads,
                c.seq_len,
                c.batch_size,
                c.steps
            ),
            (Some(4096), 64, 2, 4, 64, 16, 1500)
        );
        for p in Preset::ALL {
            p.config().validate().unwrap();
            assert_eq!(p.to_string().parse::<Preset>().unwrap(), p);
        }
    }

    #[test]
    fn overrides() {
        let mut c = Preset::Cpu.config();
        c.set("d_model=96").unwrap();
        c.set("steps = 800").unwrap();
        c.set("vocab_cap=none").unwrap();
        c.set("lr=3e-4").unwrap();
        assert_eq!(
            (c.d_model, c.steps, c.vocab_cap, c.lr),
            (96, 800, None, 3e-4)
        );
        let e = c.set("dmodel=3").unwrap_err().to_string();
        assert!(
            e.contains("unknown setting `dmodel`") && e.contains("d_model"),
            "{e}"
        );
        assert!(c.set("steps=abc").is_err());
        assert!(
            c.set("d_model=95").is_err(),
            "95 is not a multiple of 4 heads"
        );
        assert!(c.set("steps").is_err());
    }

    #[test]
    fn schedule_warmup_then_cosine_to_ten_percent() {
        let c = TrainConfig {
            steps: 1000,
            warmup: 100,
            lr: 1e-3,
            ..Preset::Seed.config()
        };
        assert!((c.lr_at(0) - 1e-5).abs() < 1e-15);
        assert!((c.lr_at(99) - 1e-3).abs() < 1e-15);
        assert!((c.lr_at(100) - 1e-3).abs() < 1e-15);
        assert!((c.lr_at(999) - 1e-4).abs() < 1e-12);
        let mid = c.lr_at(100 + 899 / 2);
        assert!((mid - 5.5e-4).abs() < 2e-6, "{mid}");
        for s in 100..999 {
            assert!(c.lr_at(s + 1) <= c.lr_at(s) + 1e-18);
        }
    }
}
