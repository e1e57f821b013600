//! Study files: TOML, parsed with serde, unknown keys rejected, every error one line that
//! names the file, the line and column, and the problem.
//!
//! This file parses what every study has (name, kind, preset, seeds, overrides,
//! max_replicas); each kind's own section is validated by its module in [`super::kinds`].

use super::kinds::{self, Kind, KindSpec};
use crate::search::{EvolveSpec, RandomSearchSpec};
use crate::train::{Preset, TrainConfig};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

fn default_preset() -> Preset {
    Preset::Cpu
}

/// `[simulate]`: the landscape `evoattn simulate` runs the study's search on (any kind
/// may have it). Effects are given per component level, e.g.
/// `[simulate.effects] gating = { highway = -2.8, output_gate = -1.0 }`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateSpec {
    /// Store folders to fit the landscape from (relative to the working directory, or to
    /// the study file's folder).
    pub from: Option<Vec<String>>,
    /// The grand mean (ppl).
    pub mean: Option<f64>,
    /// sd of the seed effect every gene shares.
    pub seed_sd: Option<f64>,
    /// sd of the gene × seed noise.
    pub interaction_sd: Option<f64>,
    /// For GA hurdles: sd of a run's hurdle score about its final one (default: fitted
    /// from the stores' curves, else 0).
    pub hurdle_sd: Option<f64>,
    /// Effect (ppl) per component per level.
    pub effects: Option<BTreeMap<String, BTreeMap<String, f64>>>,
    /// Simulated studies per strategy.
    pub replicates: Option<usize>,
    /// Seed of the simulation.
    pub seed: Option<u64>,
}

impl SimulateSpec {
    /// Checks the values; the error says what is allowed.
    pub fn check(&self) -> Result<(), String> {
        for (k, v) in [
            ("seed_sd", self.seed_sd),
            ("interaction_sd", self.interaction_sd),
            ("hurdle_sd", self.hurdle_sd),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(format!("{k} must be a finite number ≥ 0, got {v}"));
                }
            }
        }
        if let Some(m) = self.mean {
            if !m.is_finite() {
                return Err(format!("mean must be finite, got {m}"));
            }
        }
        if self
            .replicates
            .is_some_and(|r| !(2..=10_000_000).contains(&r))
        {
            return Err("replicates must be between 2 and 10,000,000".into());
        }
        for (comp, levels) in self.effects.iter().flatten() {
            let c: crate::gene::Component = comp.parse()?;
            for (level, e) in levels {
                if !c.values().contains(&level.as_str()) {
                    return Err(format!(
                        "effects: unknown {c} `{level}`; valid values: {}",
                        c.values().join(", ")
                    ));
                }
                if !e.is_finite() {
                    return Err(format!("effects: {c} {level} must be finite, got {e}"));
                }
            }
        }
        Ok(())
    }
}

/// `[analysis]`: how the study's report judges its comparisons (any kind may have it).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisSpec {
    /// The margin δ in ppl: differences smaller than δ do not matter in practice.
    pub margin: f64,
    /// The family-wise level of the tests (Holm).
    pub alpha: f64,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        AnalysisSpec {
            margin: 1.0,
            alpha: 0.05,
        }
    }
}

impl AnalysisSpec {
    /// Checks the values; the error says what is allowed.
    pub fn check(&self) -> Result<(), String> {
        if !(self.margin.is_finite() && self.margin > 0.0) {
            return Err(format!(
                "margin must be a positive number of ppl, got {}",
                self.margin
            ));
        }
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            return Err(format!(
                "alpha must be between 0 and 0.5, got {}",
                self.alpha
            ));
        }
        Ok(())
    }

    /// The `[analysis]` of study-file text, leniently: the rest of the file is not
    /// validated (a store's `study.toml` may come from an older evoattn). Absent: defaults.
    pub fn from_study_text(text: &str) -> Result<AnalysisSpec, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.message().to_string())?;
        match table.get("analysis") {
            None => Ok(AnalysisSpec::default()),
            Some(v) => {
                let a: AnalysisSpec = v
                    .clone()
                    .try_into()
                    .map_err(|e: toml::de::Error| format!("[analysis] {}", e.message()))?;
                a.check().map_err(|e| format!("[analysis] {e}"))?;
                Ok(a)
            }
        }
    }
}

/// A study file as written (sections unvalidated).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStudy {
    pub name: Spanned<String>,
    pub kind: Kind,
    #[serde(default = "default_preset")]
    pub preset: Preset,
    pub seeds: Option<Spanned<Vec<u64>>>,
    pub overrides: Option<Spanned<BTreeMap<String, toml::Value>>>,
    #[serde(default)]
    pub max_replicas: Option<Spanned<usize>>,
    #[serde(default)]
    pub checkpoint_every: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub save_weights: Option<bool>,
    #[serde(default)]
    pub description: Option<String>,
    pub analysis: Option<Spanned<AnalysisSpec>>,
    pub simulate: Option<Spanned<SimulateSpec>>,
    pub evolve: Option<Spanned<EvolveSpec>>,
    pub random_search: Option<Spanned<RandomSearchSpec>>,
    pub replicate: Option<Spanned<kinds::replicate::RawReplicate>>,
    pub tune: Option<Spanned<toml::Table>>,
    pub ablate: Option<Spanned<kinds::ablate::RawAblate>>,
    pub race: Option<Spanned<kinds::race::RawRace>>,
}

impl RawStudy {
    /// Each kind section present, with its name and span.
    pub fn sections(&self) -> Vec<(&'static str, Range<usize>)> {
        let mut v = Vec::new();
        if let Some(s) = &self.evolve {
            v.push(("evolve", s.span()));
        }
        if let Some(s) = &self.random_search {
            v.push(("random_search", s.span()));
        }
        if let Some(s) = &self.replicate {
            v.push(("replicate", s.span()));
        }
        if let Some(s) = &self.tune {
            v.push(("tune", s.span()));
        }
        if let Some(s) = &self.ablate {
            v.push(("ablate", s.span()));
        }
        if let Some(s) = &self.race {
            v.push(("race", s.span()));
        }
        v
    }
}

/// A validated study.
#[derive(Debug, Clone)]
pub struct Study {
    /// Store folder name.
    pub name: String,
    /// Preset the configuration starts from.
    pub preset: Preset,
    /// Training configuration after overrides.
    pub config: TrainConfig,
    /// Seeds per evaluation (searches, tune, ablate) or the seed list (replicate).
    pub seeds: Vec<u64>,
    /// Most seeds of one gene trained together as replicas of one batched run.
    pub max_replicas: usize,
    /// When packs write mid-run checkpoints (`checkpoint_every`: steps, 0 or "auto",
    /// default auto); results never depend on it.
    pub checkpoint_every: crate::train::checkpoint::Every,
    /// `save_weights = true`: keep each unit's final weights as safetensors.
    pub save_weights: bool,
    /// Free text.
    pub description: Option<String>,
    /// `[analysis]`: the margin and level of the report's verdicts.
    pub analysis: AnalysisSpec,
    /// `[simulate]`: the landscape of `evoattn simulate`.
    pub simulate: SimulateSpec,
    /// What it does, with its validated section(s).
    pub kind: KindSpec,
    /// The file it came from.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes.
    pub file_sha256: String,
    /// (line, column) of each `[overrides]` key, for errors found later (against the data).
    pub overrides_at: BTreeMap<String, (usize, usize)>,
}

/// A study-file error, printed as one line `FILE:LINE:COL: problem`.
#[derive(Debug, Clone)]
pub struct SpecError {
    /// File.
    pub path: PathBuf,
    /// 1-based line and column, when known.
    pub at: Option<(usize, usize)>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((l, c)) => write!(f, "{}:{l}:{c}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for SpecError {}

/// 1-based (line, column) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |p| offset - p - 1) + 1;
    (line, col)
}

/// Largest seed accepted (seeds are stored as signed 64-bit integers in Parquet).
pub const MAX_SEED: u64 = i64::MAX as u64;

/// What a kind's validation sees of the file.
pub(crate) struct Ctx<'a> {
    /// The file's text (for positions).
    pub text: &'a str,
    /// The file (for messages).
    pub path: &'a Path,
    /// Its kind.
    pub kind: Kind,
    /// The study's name.
    pub name: &'a str,
    /// The configuration after overrides.
    pub config: &'a TrainConfig,
    /// The top-level seed list (after its default).
    pub seeds: &'a [u64],
}

impl Ctx<'_> {
    /// An error at `span` (or at no position).
    pub fn err(&self, span: Option<Range<usize>>, message: String) -> SpecError {
        SpecError {
            path: self.path.to_path_buf(),
            at: span.map(|s| line_col(self.text, s.start)),
            message,
        }
    }

    /// `FILE:LINE:COL` of `span`, for errors found after validation.
    pub fn at(&self, span: Range<usize>) -> String {
        let (l, c) = line_col(self.text, span.start);
        format!("{}:{l}:{c}", self.path.display())
    }

    /// A validated seed list: non-empty, no repeats, each at most [`MAX_SEED`].
    pub fn seeds(&self, s: &Spanned<Vec<u64>>, what: &str) -> Result<Vec<u64>, SpecError> {
        check_seeds(s, what, &|span, m| self.err(span, m))
    }

    /// The byte span of `key` in table `[table]`, else `fallback`.
    pub fn key_span(&self, table: &str, key: &str, fallback: Range<usize>) -> Range<usize> {
        find_key(self.text, table, key).unwrap_or(fallback)
    }
}

type ErrFn<'a> = dyn Fn(Option<Range<usize>>, String) -> SpecError + 'a;

fn check_seeds(s: &Spanned<Vec<u64>>, what: &str, err: &ErrFn) -> Result<Vec<u64>, SpecError> {
    let v = s.get_ref().clone();
    if v.is_empty() {
        return Err(err(
            Some(s.span()),
            format!("{what} is empty; list at least one seed, e.g. [1, 2, 3]"),
        ));
    }
    if let Some(&big) = v.iter().find(|&&x| x > MAX_SEED) {
        return Err(err(
            Some(s.span()),
            format!("seed {big} is too large (at most {MAX_SEED})"),
        ));
    }
    let mut sorted = v.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(err(
            Some(s.span()),
            format!("seed {} is listed twice in {what}", w[0]),
        ));
    }
    Ok(v)
}

impl Study {
    /// Reads and validates a study file.
    pub fn load(path: &Path) -> Result<Study, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            path: path.to_path_buf(),
            at: None,
            message: format!("cannot read the study file: {e}"),
        })?;
        Study::parse(&text, path)
    }

    /// Parses and validates study text (`path` is only used in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Study, SpecError> {
        let err = |span: Option<Range<usize>>, message: String| SpecError {
            path: path.to_path_buf(),
            at: span.map(|s| line_col(text, s.start)),
            message,
        };
        let raw: RawStudy = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim().replace('\n', "; ");
            err(e.span(), msg)
        })?;

        let name = raw.name.get_ref().trim().to_string();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            || name.starts_with('.')
        {
            return Err(err(
                Some(raw.name.span()),
                format!("study name `{name}` must be a non-empty folder name of letters, digits, `-`, `_` or `.`"),
            ));
        }

        let mut config = raw.preset.config();
        let mut overrides_at = BTreeMap::new();
        if let Some(ov) = &raw.overrides {
            for (key, value) in ov.get_ref() {
                let at = find_key(text, "overrides", key).unwrap_or(ov.span());
                config
                    .set_setting(key, &crate::train::SettingValue::from_toml(value))
                    .map_err(|e| err(Some(at.clone()), format!("[overrides] {e:#}")))?;
                overrides_at.insert(key.clone(), line_col(text, at.start));
            }
        }
        // One check over the whole configuration, once every override is in: the error
        // points at the first overridden setting the rule involves.
        if let Err(e) = config.check() {
            let key = e.keys().into_iter().find(|k| overrides_at.contains_key(*k));
            return Err(match key {
                Some(k) => SpecError {
                    path: path.to_path_buf(),
                    at: overrides_at.get(k).copied(),
                    message: if k == e.key {
                        format!("[overrides] {e}")
                    } else {
                        format!(
                            "[overrides] {e} ({} is preset {}'s; override it too)",
                            e.key, raw.preset
                        )
                    },
                },
                None => err(
                    raw.overrides.as_ref().map(|o| o.span()),
                    format!("preset {}: {e}", raw.preset),
                ),
            });
        }

        let seeds = match &raw.seeds {
            Some(s) => check_seeds(s, "`seeds`", &err)?,
            None => raw.kind.default_seeds(),
        };

        let max_replicas = match &raw.max_replicas {
            Some(m) if *m.get_ref() == 0 => {
                return Err(err(
                    Some(m.span()),
                    "max_replicas must be at least 1".into(),
                ))
            }
            Some(m) => *m.get_ref(),
            None => 4,
        };

        use crate::train::checkpoint::Every;
        let checkpoint_every = match &raw.checkpoint_every {
            None => Every::Auto,
            Some(v) => {
                let bad = || {
                    err(
                        Some(v.span()),
                        format!(
                            "checkpoint_every = {}: use a number of steps (e.g. 500), 0 (no periodic checkpoints) or \"auto\"",
                            v.get_ref()
                        ),
                    )
                };
                match v.get_ref() {
                    toml::Value::Integer(n) if *n >= 0 => {
                        Every::parse(&n.to_string()).map_err(|_| bad())?
                    }
                    toml::Value::String(s) if s == "auto" => Every::Auto,
                    _ => return Err(bad()),
                }
            }
        };

        let analysis = match &raw.analysis {
            None => AnalysisSpec::default(),
            Some(a) => {
                a.get_ref()
                    .check()
                    .map_err(|m| err(Some(a.span()), format!("[analysis] {m}")))?;
                *a.get_ref()
            }
        };

        let simulate = match &raw.simulate {
            None => SimulateSpec::default(),
            Some(a) => {
                a.get_ref()
                    .check()
                    .map_err(|m| err(Some(a.span()), format!("[simulate] {m}")))?;
                a.get_ref().clone()
            }
        };

        let ctx = Ctx {
            text,
            path,
            kind: raw.kind,
            name: &name,
            config: &config,
            seeds: &seeds,
        };
        let kind = KindSpec::validate(&raw, &ctx)?;

        use sha2::Digest;
        Ok(Study {
            name,
            preset: raw.preset,
            config,
            seeds,
            max_replicas,
            checkpoint_every,
            save_weights: raw.save_weights.unwrap_or(false),
            description: raw.description,
            analysis,
            simulate,
            kind,
            path: path.to_path_buf(),
            file_sha256: hex::encode(sha2::Sha256::digest(text.as_bytes())),
            overrides_at,
        })
    }
}

impl Study {
    /// Where setting `key` comes from, for errors: `FILE:LINE:COL: [overrides] ` when the
    /// file overrides it, else `FILE: preset P: `.
    pub fn setting_origin(&self, key: &str) -> String {
        match self.overrides_at.get(key) {
            Some((l, c)) => format!("{}:{l}:{c}: [overrides] ", self.path.display()),
            None => format!("{}: preset {}: ", self.path.display(), self.preset),
        }
    }

    /// A configuration error found after parsing (against the data), placed at the first
    /// setting it involves that the file overrides.
    pub fn config_error(&self, e: &crate::train::ConfigError) -> String {
        let key = e
            .keys()
            .into_iter()
            .find(|k| self.overrides_at.contains_key(*k))
            .unwrap_or(e.key);
        format!("{}{e}", self.setting_origin(key))
    }
}

/// Byte span of `key` inside table `[table]`, for error positions.
fn find_key(text: &str, table: &str, key: &str) -> Option<Range<usize>> {
    let header = format!("[{table}]");
    let start = text.find(&header)?;
    let mut offset = start + header.len();
    for line in text[offset..].split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with('[') {
            break;
        }
        if let Some(rest) = t.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                let pos = offset + (line.len() - t.len());
                return Some(pos..pos + key.len());
            }
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gene::Component;
    use crate::study::kinds::replicate::{default_followup_seeds, GeneSource};

    fn parse(t: &str) -> Result<Study, SpecError> {
        Study::parse(t, Path::new("s.toml"))
    }

    #[test]
    fn minimal_evolve_gets_the_published_defaults() {
        let s = parse("name = \"a\"\nkind = \"evolve\"\n").unwrap();
        let KindSpec::Evolve(ev) = &s.kind else {
            panic!("not evolve")
        };
        let e = &ev.spec;
        assert_eq!((e.population, e.elites, e.generations), (12, 3, 10));
        assert_eq!(e.mutation_rate, 0.25);
        assert!(!e.include_baseline && !e.reevaluate_elites);
        assert_eq!(s.seeds, vec![1]);
        assert_eq!(s.config, Preset::Cpu.config());
    }

    #[test]
    fn overrides_apply_and_bad_ones_point_at_their_line() {
        // (The cpu preset warms up over 100 steps: fewer steps are refused.)
        let s = parse("name = \"a\"\nkind = \"evolve\"\n[overrides]\nsteps = 180\n").unwrap();
        assert_eq!(s.config.steps, 180);
        let e = parse("name = \"a\"\nkind = \"evolve\"\n[overrides]\nstepz = 80\n").unwrap_err();
        assert_eq!(e.at, Some((4, 1)), "{e}");
        assert!(e.to_string().contains("unknown setting `stepz`"), "{e}");
    }

    #[test]
    fn errors_are_one_line_with_position() {
        let cases = [
            ("name = \"a\"\nkind = \"evolve\"\nbogus = 1\n", 3, "unknown field"),
            ("name = \"a\"\nkind = \"evolve\"\nseeds = \"x\"\n", 3, "invalid type"),
            ("name = \"a\"\nkind = \"evolve\"\nseeds = []\n", 3, "empty"),
            (
                "name = \"a\"\nkind = \"replicate\"\n[replicate]\ngenes = [\"dot+softmax+none+fixed\", \"dot+nope+none+fixed\"]\n",
                4,
                "nope",
            ),
            ("name = \"a\"\nkind = \"tuning\"\n", 2, "unknown variant"),
            (
                "name = \"a\"\nkind = \"tune\"\n[tune]\ngenes = [\"dot+softmax+none+fixed\"]\nlr = [1e-2, 1e-3]\n",
                5,
                "low <= high",
            ),
            (
                "name = \"a\"\nkind = \"ablate\"\n[ablate]\nbase = \"dot+softmax+none+fixed\"\ngating = [\"none\", \"gated\"]\n",
                5,
                "gated",
            ),
            (
                "name = \"a\"\nkind = \"ablate\"\n[ablate]\nbase = \"dot+softmax+none+fixed\"\ngating = [\"none\"]\n",
                5,
                "two levels",
            ),
            (
                "name = \"a\"\nkind = \"replicate\"\n[replicate]\ngenes = []\nhparams = { from = \"a\" }\n",
                5,
                "tune",
            ),
        ];
        for (text, line, needle) in cases {
            let e = parse(text).unwrap_err();
            let s = e.to_string();
            assert!(!s.contains('\n'), "multi-line: {s}");
            assert_eq!(e.at.map(|a| a.0), Some(line), "{s}");
            assert!(s.contains(needle), "{s}");
            assert!(s.starts_with("s.toml:"), "{s}");
        }
    }

    #[test]
    fn replicate_defaults_and_sources() {
        let s = parse("name = \"r\"\nkind = \"replicate\"\n[replicate]\ngenes = [\"dot+sparsemax+output_gate+learned\"]\n").unwrap();
        let r = s.kind.replication().unwrap();
        assert_eq!(r.seeds, (1..=10).collect::<Vec<_>>());
        assert!(r.include_baseline);
        let s = parse(
            "name = \"q\"\nkind = \"evolve\"\n[replicate]\nfrom = { study = \"q\", top = 2 }\n",
        )
        .unwrap();
        let r = s.kind.replication().unwrap();
        assert_eq!(r.seeds, default_followup_seeds());
        assert!(matches!(r.genes, GeneSource::Top { top: 2, .. }));
    }

    #[test]
    fn tune_and_ablate_sections() {
        let s = parse("name = \"t\"\nkind = \"tune\"\nseeds = [1, 2]\n[tune]\ngenes = [\"dot+softmax+none+fixed\", \"dot+sparsemax+output_gate+learned\"]\ntrials = 5\nlr = [3e-4, 3e-3]\nbeta2 = [0.9, 0.999]\n").unwrap();
        let KindSpec::Tune(t) = &s.kind else {
            panic!("not tune")
        };
        assert_eq!((t.genes.len(), t.trials, t.seed), (2, 5, 0));
        assert_eq!(t.ranges.get("lr"), Some([3e-4, 3e-3]));
        assert_eq!(t.ranges.get("warmup"), None);
        let s = parse("name = \"a\"\nkind = \"ablate\"\n[ablate]\nbase = \"dot+softmax+none+learned\"\nnormalization = [\"softmax\", \"sparsemax\"]\ngating = [\"none\", \"output_gate\", \"highway\"]\n").unwrap();
        let KindSpec::Ablate(a) = &s.kind else {
            panic!("not ablate")
        };
        let genes: Vec<String> = a.genes().iter().map(|g| g.to_string()).collect();
        assert_eq!(genes.len(), 6);
        assert_eq!(genes[0], "dot+softmax+none+learned");
        assert_eq!(genes[1], "dot+softmax+output_gate+learned");
        assert_eq!(genes[5], "dot+sparsemax+highway+learned");
        assert_eq!(a.genes()[5].get(Component::Gating), "highway");
        let r = parse("name = \"r\"\nkind = \"replicate\"\n[replicate]\ngenes = [\"dot+sparsemax+output_gate+learned\"]\nhparams = { from = \"t\" }\n").unwrap();
        assert_eq!(
            r.kind
                .replication()
                .unwrap()
                .hparams_from
                .as_ref()
                .unwrap()
                .0,
            "t"
        );
        let e = parse("name = \"t\"\nkind = \"tune\"\n[tune]\ngenes = [\"dot+softmax+none+fixed\"]\nlr = [1e-3, 1e-2]\n[replicate]\ngenes = []\n").unwrap_err();
        assert!(
            e.to_string().contains("separate kind = \"replicate\""),
            "{e}"
        );
    }
}
