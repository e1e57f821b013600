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
    /// Whether it may be `none`.
    const NULLABLE: bool = false;
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
    const NULLABLE: bool = true;
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

            /// Whether field `name` may be `none` (false for unknown names).
            pub fn nullable(name: &str) -> bool {
                match name {
                    $(stringify!($f) => <$t as ConfigField>::NULLABLE,)*
                    _ => false,
                }
            }

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

/// Largest `d_model` accepted.
pub const MAX_D_MODEL: usize = 65_536;
/// Largest `n_layers` accepted.
pub const MAX_LAYERS: usize = 4_096;
/// Largest `seq_len` accepted.
pub const MAX_SEQ_LEN: usize = 1 << 20;
/// Largest `batch_size` accepted.
pub const MAX_BATCH: usize = 1 << 20;
/// Largest `steps` accepted.
pub const MAX_STEPS: usize = 1_000_000_000;

/// A setting that is out of range: the setting it is about, the other settings the rule
/// involves, and a message that says what is valid.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The setting the error is about.
    pub key: &'static str,
    /// Other settings the rule involves (e.g. `steps` for `warmup ≤ steps`).
    pub also: Vec<&'static str>,
    /// What is wrong and what is valid, starting with the setting's name.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn new(key: &'static str, also: &[&'static str], message: String) -> ConfigError {
        ConfigError {
            key,
            also: also.to_vec(),
            message,
        }
    }

    /// Every setting involved, the one the error is about first.
    pub fn keys(&self) -> Vec<&'static str> {
        std::iter::once(self.key)
            .chain(self.also.iter().copied())
            .collect()
    }
}

/// A value given for a setting, before it is checked against the setting's type: from a
/// `--set key=value` or from a study file's `[overrides]`.
#[derive(Debug, Clone, PartialEq)]
pub enum SettingValue {
    /// `none` (or `null`).
    None,
    /// A whole number (wide enough for any TOML integer and any `u64`).
    Int(i128),
    /// A real number (possibly NaN or infinite: refused when set).
    Real(f64),
    /// Anything else, as written (a string, a boolean, a list, a table).
    Other(String),
}

impl SettingValue {
    /// Parses the text of `--set key=value`: `none`/`null`, a whole number, a real number
    /// (`nan`, `inf` and out-of-range exponents parse, and are refused when set), else
    /// the text itself.
    pub fn parse(text: &str) -> SettingValue {
        let t = text.trim();
        if t.eq_ignore_ascii_case("none") || t.eq_ignore_ascii_case("null") {
            return SettingValue::None;
        }
        let digits = t.strip_prefix(['-', '+']).unwrap_or(t).replace('_', "");
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            let signed = if t.starts_with('-') {
                format!("-{digits}")
            } else {
                digits
            };
            return match signed.parse::<i128>() {
                Ok(v) => SettingValue::Int(v),
                Err(_) => SettingValue::Real(if t.starts_with('-') {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                }),
            };
        }
        match t.parse::<f64>() {
            Ok(v) => SettingValue::Real(v),
            Err(_) => SettingValue::Other(format!("`{t}`")),
        }
    }

    /// A value of a study file.
    pub fn from_toml(v: &toml::Value) -> SettingValue {
        match v {
            toml::Value::Integer(i) => SettingValue::Int(*i as i128),
            toml::Value::Float(x) => SettingValue::Real(*x),
            toml::Value::String(s)
                if s.eq_ignore_ascii_case("none") || s.eq_ignore_ascii_case("null") =>
            {
                SettingValue::None
            }
            toml::Value::String(s) => SettingValue::Other(format!("the string \"{s}\"")),
            toml::Value::Boolean(b) => SettingValue::Other(format!("the boolean {b}")),
            toml::Value::Array(_) => SettingValue::Other("a list".into()),
            toml::Value::Table(_) => SettingValue::Other("a table".into()),
            toml::Value::Datetime(d) => SettingValue::Other(format!("the date {d}")),
        }
    }

    /// A parsed JSON value.
    pub fn from_json(v: &serde_json::Value) -> SettingValue {
        match v {
            serde_json::Value::Null => SettingValue::None,
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => SettingValue::Int(i as i128),
                (_, Some(u), _) => SettingValue::Int(u as i128),
                (_, _, Some(x)) => SettingValue::Real(x),
                _ => SettingValue::Other(n.to_string()),
            },
            serde_json::Value::String(s) => SettingValue::parse(s),
            other => SettingValue::Other(other.to_string()),
        }
    }
}

impl fmt::Display for SettingValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingValue::None => f.write_str("none"),
            SettingValue::Int(i) => write!(f, "{i}"),
            SettingValue::Real(x) => write!(f, "{x}"),
            SettingValue::Other(s) => f.write_str(s),
        }
    }
}

/// `n` with thousands separators.
fn grouped(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
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
        self.check().map_err(Into::into)
    }

    /// Checks every setting and the rules between settings (`warmup ≤ steps`, `d_model` a
    /// multiple of `n_heads`, `eval_max_tokens` at least one window): finite numbers,
    /// sizes small enough that no size arithmetic can overflow. The first problem found
    /// is returned, naming the setting and its valid range. Every configuration a user
    /// gives (`--set`, `[overrides]`) goes through this.
    pub fn check(&self) -> std::result::Result<(), ConfigError> {
        self.check_trainable()?;
        if self.warmup > self.steps {
            return Err(ConfigError::new(
                "warmup",
                &["steps"],
                format!(
                    "warmup = {} must be at most steps = {} (0 ≤ warmup ≤ steps)",
                    self.warmup, self.steps
                ),
            ));
        }
        Ok(())
    }

    /// [`TrainConfig::check`] without the schedule rule `warmup ≤ steps`: what the trainer
    /// itself needs (a warm-up cut short by the last step is well defined; tests train
    /// single steps of longer schedules).
    pub fn check_trainable(&self) -> std::result::Result<(), ConfigError> {
        let e = |key, also: &[&'static str], m: String| Err(ConfigError::new(key, also, m));
        let count = |key: &'static str, v: usize, lo: usize, hi: usize, also: &[&'static str]| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                e(
                    key,
                    also,
                    format!(
                        "{key} = {v} is out of range: {key} must be between {} and {}",
                        grouped(lo),
                        grouped(hi)
                    ),
                )
            }
        };
        if let Some(c) = self.vocab_cap {
            if c < 2 {
                return e(
                    "vocab_cap",
                    &[],
                    format!("vocab_cap = {c} is out of range: vocab_cap must be at least 2, or none for the full vocabulary"),
                );
            }
        }
        count("d_model", self.d_model, 1, MAX_D_MODEL, &[])?;
        count("n_heads", self.n_heads, 1, self.d_model, &["d_model"])?;
        if !self.d_model.is_multiple_of(self.n_heads) {
            return e(
                "d_model",
                &["n_heads"],
                format!(
                    "d_model = {} must be a positive multiple of n_heads = {} (e.g. {})",
                    self.d_model,
                    self.n_heads,
                    (self.d_model / self.n_heads).max(1) * self.n_heads
                ),
            );
        }
        count("n_layers", self.n_layers, 1, MAX_LAYERS, &[])?;
        count("seq_len", self.seq_len, 2, MAX_SEQ_LEN, &[])?;
        count("batch_size", self.batch_size, 1, MAX_BATCH, &[])?;
        count("steps", self.steps, 1, MAX_STEPS, &[])?;
        let real = |key: &'static str, v: f64, ok: bool, range: &str| {
            if ok && v.is_finite() {
                Ok(())
            } else {
                e(
                    key,
                    &[],
                    format!("{key} = {v} is out of range: {key} must be {range}"),
                )
            }
        };
        real("lr", self.lr, self.lr > 0.0, "a finite number > 0")?;
        real(
            "min_lr_ratio",
            self.min_lr_ratio,
            (0.0..=1.0).contains(&self.min_lr_ratio),
            "in [0, 1]",
        )?;
        real(
            "weight_decay",
            self.weight_decay,
            self.weight_decay >= 0.0,
            "a finite number ≥ 0",
        )?;
        real(
            "beta1",
            self.beta1,
            (0.0..1.0).contains(&self.beta1),
            "in [0, 1)",
        )?;
        real(
            "beta2",
            self.beta2,
            (0.0..1.0).contains(&self.beta2),
            "in [0, 1)",
        )?;
        real("eps", self.eps, self.eps > 0.0, "a finite number > 0")?;
        real(
            "grad_clip",
            self.grad_clip,
            self.grad_clip > 0.0,
            "a finite number > 0",
        )?;
        if let Some(m) = self.eval_max_tokens {
            if m <= self.seq_len {
                return e(
                    "eval_max_tokens",
                    &["seq_len"],
                    format!(
                        "eval_max_tokens = {m} is too small: evaluation needs at least one window of seq_len + 1 = {} tokens (or none for the whole split)",
                        self.seq_len + 1
                    ),
                );
            }
        }
        Ok(())
    }

    /// Checks the configuration against the data it will train on: every split must hold
    /// more than one window (`seq_len + 1` tokens) and the vocabulary at least two words.
    pub fn check_data(&self, corpus: &crate::data::Corpus) -> std::result::Result<(), ConfigError> {
        let need = self.seq_len + 1;
        for (name, n) in [
            ("train", corpus.train.len()),
            ("valid", corpus.valid.len()),
            ("test", corpus.test.len()),
        ] {
            if n <= need {
                return Err(ConfigError::new(
                    "seq_len",
                    &[],
                    format!(
                        "seq_len = {} is too long for the data: every split must hold more than seq_len + 1 = {need} tokens, but {name}.txt holds {n}; lower seq_len or point --data at the full WikiText-2",
                        self.seq_len
                    ),
                ));
            }
        }
        if corpus.vocab.len() < 2 {
            return Err(ConfigError::new(
                "vocab_cap",
                &[],
                format!(
                    "the training split has a vocabulary of {} word(s); at least 2 are needed",
                    corpus.vocab.len()
                ),
            ));
        }
        Ok(())
    }

    /// Learning rate at optimiser step `step` (0-based): linear warm-up to `lr` over
    /// `warmup` steps, then cosine decay to `min_lr_ratio · lr` at the last step.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step as f64 + 1.0) / self.warmup as f64;
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

    /// Sets one field from `key=value` text (numbers, `none`) and checks the result.
    pub fn set(&mut self, assignment: &str) -> Result<()> {
        self.apply(assignment)?;
        self.validate()
    }

    /// Sets one field from `key=value` text without checking ranges (several assignments
    /// are applied, then [`TrainConfig::check`] runs once).
    pub fn apply(&mut self, assignment: &str) -> Result<()> {
        let (key, value) = assignment.split_once('=').ok_or_else(|| {
            anyhow!("override `{assignment}` must look like key=value, e.g. steps=800")
        })?;
        self.set_setting(key.trim(), &SettingValue::parse(value))
    }

    /// Sets one field from an already parsed value and checks the result.
    pub fn set_value(&mut self, key: &str, parsed: serde_json::Value) -> Result<()> {
        self.set_setting(key, &SettingValue::from_json(&parsed))?;
        self.validate()
    }

    /// Sets one field, checking only that the value fits the field's type (a whole number
    /// ≥ 0 for counts, a finite number for reals, `none` where allowed); ranges are
    /// [`TrainConfig::check`]'s.
    pub fn set_setting(&mut self, key: &str, value: &SettingValue) -> Result<()> {
        let Some(&(name, kind)) = Self::FIELDS.iter().find(|(n, _)| *n == key) else {
            let mut keys: Vec<&str> = Self::FIELDS.iter().map(|f| f.0).collect();
            keys.sort_unstable();
            bail!(
                "unknown setting `{key}`; valid settings: {}",
                keys.join(", ")
            );
        };
        let nullable = Self::nullable(name);
        let what = match kind {
            FieldKind::Count if nullable => "a whole number ≥ 0 or none",
            FieldKind::Count => "a whole number ≥ 0",
            FieldKind::Real => "a finite number",
        };
        let bad = |why: &str| anyhow!("{name} = {value}: {why}; {name} must be {what}");
        let v = match (kind, value) {
            (_, SettingValue::None) if nullable => match kind {
                FieldKind::Count => FieldValue::Count(None),
                FieldKind::Real => FieldValue::Real(None),
            },
            (_, SettingValue::None) => return Err(bad("none is not allowed here")),
            (FieldKind::Count, SettingValue::Int(i)) if *i < 0 => return Err(bad("negative")),
            (FieldKind::Count, SettingValue::Int(i)) => match usize::try_from(*i) {
                Ok(u) => FieldValue::Count(Some(u as u64)),
                Err(_) => return Err(bad("too large")),
            },
            (FieldKind::Count, SettingValue::Real(x)) if !x.is_finite() => {
                return Err(bad("not a finite number"))
            }
            (FieldKind::Count, SettingValue::Real(_)) => {
                return Err(bad("not a whole number (write 80, not 80.0)"))
            }
            (FieldKind::Real, SettingValue::Int(i)) => FieldValue::Real(Some(*i as f64)),
            (FieldKind::Real, SettingValue::Real(x)) if !x.is_finite() => {
                return Err(bad("not a finite number"))
            }
            (FieldKind::Real, SettingValue::Real(x)) => FieldValue::Real(Some(*x)),
            (_, SettingValue::Other(_)) => return Err(bad("not a number")),
        };
        self.set_field(name, v)
            .with_context(|| format!("bad value `{value}` for `{name}`"))
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
    fn every_setting_is_checked_once_with_its_range() {
        let refused = [
            ("steps=0", "steps", "between 1 and"),
            ("steps=9223372036854775807", "steps", "1,000,000,000"),
            ("d_model=0", "d_model", "between 1 and"),
            ("n_heads=0", "n_heads", "between 1 and"),
            ("n_layers=0", "n_layers", "between 1 and"),
            ("batch_size=0", "batch_size", "between 1 and"),
            ("seq_len=1", "seq_len", "between 2 and"),
            ("warmup=2000", "warmup", "at most steps"),
            ("eval_max_tokens=0", "eval_max_tokens", "window"),
            ("vocab_cap=1", "vocab_cap", "at least 2"),
            ("lr=0", "lr", "> 0"),
            ("eps=0", "eps", "> 0"),
            ("grad_clip=-1", "grad_clip", "> 0"),
            ("weight_decay=-0.1", "weight_decay", "≥ 0"),
            ("min_lr_ratio=2", "min_lr_ratio", "[0, 1]"),
            ("beta1=1", "beta1", "[0, 1)"),
        ];
        for (set, key, range) in refused {
            let mut c = Preset::Cpu.config();
            c.apply(set).unwrap();
            let e = c.check().unwrap_err();
            assert!(e.keys().contains(&key), "{set}: {e}");
            assert!(e.message.contains(range), "{set}: {e}");
        }
        // Type errors: NaN and infinities never become `none`, negative counts, reals for
        // counts, text.
        for set in [
            "vocab_cap=nan",
            "lr=nan",
            "lr=inf",
            "lr=-inf",
            "lr=1e400",
            "steps=-1",
            "steps=1e3",
            "steps=18446744073709551616",
            "lr=none",
            "steps=ten",
        ] {
            let mut c = Preset::Cpu.config();
            let e = c.apply(set).unwrap_err().to_string();
            let key = set.split('=').next().unwrap();
            assert!(e.starts_with(&format!("{key} = ")), "{set}: {e}");
            assert!(e.contains("must be"), "{set}: {e}");
        }
        // Settings are checked together: steps then warmup in either order.
        let mut c = Preset::Cpu.config();
        c.apply("warmup=10").unwrap();
        c.apply("steps=50").unwrap();
        c.check().unwrap();
        let mut c = Preset::Cpu.config();
        c.apply("steps=50").unwrap();
        assert!(c.check().is_err(), "warmup 100 > steps 50");
        // JSON and TOML values go the same way.
        let mut c = Preset::Cpu.config();
        assert!(c.set_value("vocab_cap", serde_json::json!(null)).is_ok());
        assert_eq!(c.vocab_cap, None);
        let nan = SettingValue::from_toml(&toml::Value::Float(f64::NAN));
        assert!(c.set_setting("vocab_cap", &nan).is_err());
    }

    #[test]
    fn the_data_must_hold_a_window_in_every_split() {
        let text = "a b c d e f g h\n".repeat(5); // 45 tokens
        let corpus =
            crate::data::Corpus::from_texts(&text, &text, "a b\n", None, Default::default())
                .unwrap();
        let mut c = Preset::Smoke.config();
        c.apply("seq_len=8").unwrap();
        let e = c.check_data(&corpus).unwrap_err();
        assert_eq!(e.key, "seq_len");
        assert!(e.message.contains("test.txt holds 3"), "{e}");
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
