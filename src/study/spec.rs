//! Study files: TOML, parsed with serde, unknown keys rejected, every error one line that
//! names the file, the line and column, and the problem.

use crate::gene::Gene;
use crate::train::{Preset, TrainConfig};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// What a study does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The genetic algorithm of the seed study (optionally followed by a replication).
    Evolve,
    /// Uniform sampling without replacement: the control a search must beat.
    RandomSearch,
    /// An explicit gene list (or another study's top K) on a common seed list.
    Replicate,
    /// The same random search over training hyperparameters for each listed gene.
    Tune,
    /// A full factorial over chosen components of a base gene.
    Ablate,
}

impl Kind {
    /// The spelling used in study files.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Evolve => "evolve",
            Kind::RandomSearch => "random_search",
            Kind::Replicate => "replicate",
            Kind::Tune => "tune",
            Kind::Ablate => "ablate",
        }
    }
}

/// `[evolve]`: the published GA by default; the flaw-fixing options are off by default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvolveSpec {
    /// Individuals per generation.
    pub population: usize,
    /// The best `elites` distinct genes survive unchanged.
    pub elites: usize,
    /// Generations, the initial one included.
    pub generations: usize,
    /// Per-component probability that an offspring's value is replaced by another.
    pub mutation_rate: f64,
    /// Seed of the GA's own random choices (not of training).
    pub seed: u64,
    /// Put the baseline gene `dot+softmax+none+fixed` in the first population.
    pub include_baseline: bool,
    /// Re-evaluate every surviving elite with one fresh seed per generation.
    pub reevaluate_elites: bool,
    /// Fresh seeds for re-evaluation are `fresh_seed_base + generation`.
    pub fresh_seed_base: u64,
    /// Stop before a generation that would take the number of distinct genes above this.
    pub max_evaluations: Option<usize>,
}

impl Default for EvolveSpec {
    fn default() -> Self {
        EvolveSpec {
            population: 12,
            elites: 3,
            generations: 10,
            mutation_rate: 0.25,
            seed: 0,
            include_baseline: false,
            reevaluate_elites: false,
            fresh_seed_base: 1000,
            max_evaluations: None,
        }
    }
}

/// `[random_search]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RandomSearchSpec {
    /// Distinct genes drawn uniformly without replacement.
    pub evaluations: usize,
    /// Seed of the draw.
    pub seed: u64,
}

impl Default for RandomSearchSpec {
    fn default() -> Self {
        RandomSearchSpec {
            evaluations: 120,
            seed: 0,
        }
    }
}

/// `[tune]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTune {
    genes: Vec<Spanned<String>>,
    #[serde(default = "default_trials")]
    trials: usize,
    #[serde(default)]
    seed: u64,
    lr: Option<[f64; 2]>,
    warmup: Option<[usize; 2]>,
    weight_decay: Option<[f64; 2]>,
    beta2: Option<[f64; 2]>,
}

fn default_trials() -> usize {
    20
}

/// A validated `[tune]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tune {
    /// Genes, each tuned with the same trials.
    pub genes: Vec<Gene>,
    /// Trials per gene (each over every seed of `seeds`).
    pub trials: usize,
    /// Seed of the draw of the trial configurations.
    pub seed: u64,
    /// Ranges searched.
    pub ranges: crate::search::tune::Ranges,
}

/// `[ablate]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAblate {
    base: Spanned<String>,
    similarity: Option<Spanned<Vec<String>>>,
    normalization: Option<Spanned<Vec<String>>>,
    gating: Option<Spanned<Vec<String>>>,
    temperature: Option<Spanned<Vec<String>>>,
}

/// The four components in gene order.
pub const COMPONENTS: [&str; 4] = ["similarity", "normalization", "gating", "temperature"];

/// A validated `[ablate]`: a full factorial over `factors`, the rest fixed to `base`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ablation {
    /// The gene the other components come from.
    pub base: Gene,
    /// (component, levels) in gene order.
    pub factors: Vec<(String, Vec<String>)>,
}

/// `gene` with component `component` set to `value`.
pub fn with_component(gene: Gene, component: &str, value: &str) -> Result<Gene, String> {
    let pos = COMPONENTS
        .iter()
        .position(|c| *c == component)
        .ok_or_else(|| format!("unknown component `{component}`"))?;
    let text = gene.to_string();
    let mut parts: Vec<&str> = text.split('+').collect();
    parts[pos] = value;
    parts.join("+").parse::<Gene>().map_err(|e| e.to_string())
}

/// The value of `component` in `gene`.
pub fn component_of(gene: Gene, component: &str) -> String {
    let pos = COMPONENTS.iter().position(|c| *c == component).unwrap_or(0);
    gene.to_string()
        .split('+')
        .nth(pos)
        .unwrap_or("")
        .to_string()
}

impl Ablation {
    /// Every cell's gene, the first factor slowest.
    pub fn genes(&self) -> Vec<Gene> {
        let mut genes = vec![self.base];
        for (comp, levels) in &self.factors {
            genes = genes
                .iter()
                .flat_map(|g| {
                    levels
                        .iter()
                        .map(move |l| with_component(*g, comp, l).expect("validated"))
                })
                .collect();
        }
        genes
    }
}

/// `hparams = { from = "tune study" }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HparamsSpec {
    /// The tune study whose best trial per gene supplies lr, warmup, weight decay and β₂.
    pub from: String,
}

/// `from = { study = "…", top = K }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromSpec {
    /// Study whose store ranks the genes (this study's own name: its search stage).
    pub study: String,
    /// How many of its best genes (by mean validation ppl) to replicate.
    pub top: usize,
}

/// `[replicate]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicateSpec {
    /// Explicit genes.
    pub genes: Option<Vec<Spanned<String>>>,
    /// Or the top K of a study's store.
    pub from: Option<Spanned<FromSpec>>,
    /// Add the baseline gene `dot+softmax+none+fixed` (default true).
    #[serde(default = "yes")]
    pub include_baseline: bool,
    /// Seeds of the replication when it follows a search in the same file (default
    /// 101..=110, disjoint from the search's seeds so the winner's lucky run is not reused).
    pub seeds: Option<Spanned<Vec<u64>>>,
    /// Each gene's tuned hyperparameters from a tune study.
    pub hparams: Option<Spanned<HparamsSpec>>,
}

fn yes() -> bool {
    true
}

fn default_preset() -> Preset {
    Preset::Cpu
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStudy {
    name: Spanned<String>,
    kind: Kind,
    #[serde(default = "default_preset")]
    preset: Preset,
    seeds: Option<Spanned<Vec<u64>>>,
    overrides: Option<Spanned<BTreeMap<String, toml::Value>>>,
    #[serde(default)]
    max_replicas: Option<Spanned<usize>>,
    #[serde(default)]
    description: Option<String>,
    evolve: Option<Spanned<EvolveSpec>>,
    random_search: Option<Spanned<RandomSearchSpec>>,
    replicate: Option<Spanned<ReplicateSpec>>,
    tune: Option<Spanned<RawTune>>,
    ablate: Option<Spanned<RawAblate>>,
}

/// Where the genes of a replication come from, resolved against a store later.
#[derive(Debug, Clone, PartialEq)]
pub enum GeneSource {
    /// Listed in the file.
    List(Vec<Gene>),
    /// The top K genes of a study (by mean validation ppl over its runs).
    Top {
        /// The study's name (its folder in the store).
        study: String,
        /// K.
        top: usize,
        /// Where `from` was written, for errors found when resolving it.
        at: String,
    },
}

/// A replication stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Replication {
    /// Its genes.
    pub genes: GeneSource,
    /// Add the baseline.
    pub include_baseline: bool,
    /// The common seed list.
    pub seeds: Vec<u64>,
    /// `(tune study, where it was written)`: each gene trains with its tuned values.
    pub hparams_from: Option<(String, String)>,
}

/// A validated study.
#[derive(Debug, Clone)]
pub struct Study {
    /// Store folder name.
    pub name: String,
    /// What it does.
    pub kind: Kind,
    /// Preset the configuration starts from.
    pub preset: Preset,
    /// Training configuration after overrides.
    pub config: TrainConfig,
    /// Seeds per evaluation (searches) or the seed list (replicate).
    pub seeds: Vec<u64>,
    /// Most seeds of one gene trained together as replicas of one batched run.
    pub max_replicas: usize,
    /// Free text.
    pub description: Option<String>,
    /// `[evolve]` (kind = evolve).
    pub evolve: Option<EvolveSpec>,
    /// `[random_search]` (kind = random_search).
    pub random_search: Option<RandomSearchSpec>,
    /// The replication: the whole study (kind = replicate) or the stage after a search.
    pub replicate: Option<Replication>,
    /// `[tune]` (kind = tune).
    pub tune: Option<Tune>,
    /// `[ablate]` (kind = ablate).
    pub ablate: Option<Ablation>,
    /// The file it came from.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes.
    pub file_sha256: String,
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

/// Default seed list of a replicate study.
pub fn default_replicate_seeds() -> Vec<u64> {
    (1..=10).collect()
}

/// Default seed list of a replication that follows a search in the same file.
pub fn default_followup_seeds() -> Vec<u64> {
    (101..=110).collect()
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
        if let Some(ov) = &raw.overrides {
            for (key, value) in ov.get_ref() {
                let json = serde_json::to_value(value)
                    .map_err(|e| err(Some(ov.span()), format!("override `{key}`: {e}")))?;
                config.set_value(key, json).map_err(|e| {
                    let at = find_key(text, "overrides", key).or(Some(ov.span()));
                    err(at, format!("[overrides] {e:#}"))
                })?;
            }
        }

        let check_seeds = |s: &Spanned<Vec<u64>>, what: &str| -> Result<Vec<u64>, SpecError> {
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
        };

        let seeds = match &raw.seeds {
            Some(s) => check_seeds(s, "`seeds`")?,
            None if raw.kind == Kind::Replicate => default_replicate_seeds(),
            None => vec![1],
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

        let not_for = |span: Range<usize>, section: &str| {
            err(
                Some(span),
                format!(
                    "section [{section}] does not apply to kind = \"{}\"; remove it or change `kind`",
                    raw.kind.as_str()
                ),
            )
        };
        let evolve = match (&raw.evolve, raw.kind) {
            (Some(e), Kind::Evolve) => Some(e.get_ref().clone()),
            (None, Kind::Evolve) => Some(EvolveSpec::default()),
            (Some(e), _) => return Err(not_for(e.span(), "evolve")),
            (None, _) => None,
        };
        if let (Some(e), Some(raw_e)) = (&evolve, &raw.evolve) {
            let at = Some(raw_e.span());
            if e.population < 2 {
                return Err(err(at, "[evolve] population must be at least 2".into()));
            }
            if e.elites == 0 || e.elites >= e.population {
                return Err(err(
                    at,
                    format!(
                        "[evolve] elites must be between 1 and population − 1 = {}",
                        e.population - 1
                    ),
                ));
            }
            if e.generations == 0 {
                return Err(err(at, "[evolve] generations must be at least 1".into()));
            }
            if !(0.0..=1.0).contains(&e.mutation_rate) {
                return Err(err(at, "[evolve] mutation_rate must be in [0, 1]".into()));
            }
            if e.max_evaluations.is_some_and(|m| m < e.population) {
                return Err(err(
                    at,
                    "[evolve] max_evaluations must be at least the population".into(),
                ));
            }
            if e.population > crate::gene::GENE_COUNT {
                return Err(err(at, "[evolve] population exceeds the 720 genes".into()));
            }
        }
        let random_search = match (&raw.random_search, raw.kind) {
            (Some(r), Kind::RandomSearch) => {
                let v = r.get_ref().clone();
                if v.evaluations == 0 || v.evaluations > crate::gene::GENE_COUNT {
                    return Err(err(
                        Some(r.span()),
                        "[random_search] evaluations must be between 1 and 720".into(),
                    ));
                }
                Some(v)
            }
            (None, Kind::RandomSearch) => Some(RandomSearchSpec::default()),
            (Some(r), _) => return Err(not_for(r.span(), "random_search")),
            (None, _) => None,
        };

        let tune = match (&raw.tune, raw.kind) {
            (Some(t), Kind::Tune) => Some(validate_tune(t, &config, &err)?),
            (None, Kind::Tune) => {
                return Err(err(
                    None,
                    "kind = \"tune\" needs a [tune] section with `genes = [...]` and at least one range, e.g. lr = [3e-4, 3e-3]".into(),
                ))
            }
            (Some(t), _) => return Err(not_for(t.span(), "tune")),
            (None, _) => None,
        };
        let ablate = match (&raw.ablate, raw.kind) {
            (Some(a), Kind::Ablate) => Some(validate_ablate(a, &err)?),
            (None, Kind::Ablate) => {
                return Err(err(
                    None,
                    "kind = \"ablate\" needs an [ablate] section with `base = \"GENE\"` and level lists, e.g. gating = [\"none\", \"output_gate\"]".into(),
                ))
            }
            (Some(a), _) => return Err(not_for(a.span(), "ablate")),
            (None, _) => None,
        };
        if let (Some(r), Kind::Tune | Kind::Ablate) = (&raw.replicate, raw.kind) {
            return Err(err(
                Some(r.span()),
                format!(
                    "a {} study has no [replicate] stage; write a separate kind = \"replicate\" study (with `hparams = {{ from = \"{}\" }}` for tuned hyperparameters)",
                    raw.kind.as_str(),
                    name
                ),
            ));
        }

        let replicate = match &raw.replicate {
            None if raw.kind == Kind::Replicate => {
                return Err(err(
                    None,
                    "kind = \"replicate\" needs a [replicate] section with `genes = [...]` or `from = { study = \"...\", top = K }`".into(),
                ))
            }
            None => None,
            Some(r) => {
                let rs = r.get_ref();
                let genes = match (&rs.genes, &rs.from) {
                    (Some(_), Some(f)) => {
                        return Err(err(
                            Some(f.span()),
                            "[replicate] has both `genes` and `from`; keep one".into(),
                        ))
                    }
                    (None, None) => {
                        return Err(err(
                            Some(r.span()),
                            "[replicate] needs `genes = [...]` or `from = { study = \"...\", top = K }`".into(),
                        ))
                    }
                    (Some(list), None) => {
                        let mut genes = Vec::new();
                        for g in list {
                            let gene: Gene = g.get_ref().parse().map_err(|e| {
                                err(Some(g.span()), format!("[replicate] genes: {e}"))
                            })?;
                            if genes.contains(&gene) {
                                return Err(err(
                                    Some(g.span()),
                                    format!("[replicate] gene `{gene}` is listed twice"),
                                ));
                            }
                            genes.push(gene);
                        }
                        if genes.is_empty() && !rs.include_baseline {
                            return Err(err(
                                Some(r.span()),
                                "[replicate] genes is empty and include_baseline = false: nothing to run".into(),
                            ));
                        }
                        GeneSource::List(genes)
                    }
                    (None, Some(f)) => {
                        let fs = f.get_ref();
                        if fs.top == 0 {
                            return Err(err(
                                Some(f.span()),
                                "[replicate] from.top must be at least 1".into(),
                            ));
                        }
                        if raw.kind == Kind::Replicate && fs.study == name {
                            return Err(err(
                                Some(f.span()),
                                "a replicate study cannot take its genes from itself; name the search study".into(),
                            ));
                        }
                        let (l, c) = line_col(text, f.span().start);
                        GeneSource::Top {
                            study: fs.study.clone(),
                            top: fs.top,
                            at: format!("{}:{l}:{c}", path.display()),
                        }
                    }
                };
                let seeds = match (&rs.seeds, raw.kind) {
                    (Some(s), Kind::Replicate) => {
                        return Err(err(
                            Some(s.span()),
                            "in a replicate study the seed list is the top-level `seeds`; remove [replicate] seeds".into(),
                        ))
                    }
                    (Some(s), _) => check_seeds(s, "[replicate] seeds")?,
                    (None, Kind::Replicate) => seeds.clone(),
                    (None, _) => default_followup_seeds(),
                };
                let hparams_from = match &rs.hparams {
                    Some(h) if h.get_ref().from == name => {
                        return Err(err(
                            Some(h.span()),
                            "`hparams.from` must name a kind = \"tune\" study, not this one".into(),
                        ))
                    }
                    Some(h) => {
                        let (l, c) = line_col(text, h.span().start);
                        Some((h.get_ref().from.clone(), format!("{}:{l}:{c}", path.display())))
                    }
                    None => None,
                };
                Some(Replication {
                    genes,
                    include_baseline: rs.include_baseline,
                    seeds,
                    hparams_from,
                })
            }
        };

        use sha2::Digest;
        Ok(Study {
            name,
            kind: raw.kind,
            preset: raw.preset,
            config,
            seeds,
            max_replicas,
            description: raw.description,
            evolve,
            random_search,
            replicate,
            tune,
            ablate,
            path: path.to_path_buf(),
            file_sha256: hex::encode(sha2::Sha256::digest(text.as_bytes())),
        })
    }
}

type ErrFn<'a> = dyn Fn(Option<Range<usize>>, String) -> SpecError + 'a;

fn validate_tune(
    t: &Spanned<RawTune>,
    config: &TrainConfig,
    err: &ErrFn,
) -> Result<Tune, SpecError> {
    let at = Some(t.span());
    let raw = t.get_ref();
    let mut genes = Vec::new();
    for g in &raw.genes {
        let gene: Gene = g
            .get_ref()
            .parse()
            .map_err(|e| err(Some(g.span()), format!("[tune] genes: {e}")))?;
        if genes.contains(&gene) {
            return Err(err(
                Some(g.span()),
                format!("[tune] gene `{gene}` is listed twice"),
            ));
        }
        genes.push(gene);
    }
    if genes.is_empty() {
        return Err(err(
            at,
            "[tune] genes is empty; list the genes to tune, e.g. [\"dot+softmax+none+fixed\"]"
                .into(),
        ));
    }
    if raw.trials == 0 {
        return Err(err(at, "[tune] trials must be at least 1".into()));
    }
    let bad = |what: &str| Err(err(at.clone(), format!("[tune] {what}")));
    if let Some([lo, hi]) = raw.lr {
        if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
            return bad("lr = [low, high] needs 0 < low <= high");
        }
    }
    if let Some([lo, hi]) = raw.warmup {
        if lo > hi || hi >= config.steps {
            return bad(&format!(
                "warmup = [low, high] needs low <= high < steps ({})",
                config.steps
            ));
        }
    }
    if let Some([lo, hi]) = raw.weight_decay {
        if !(lo >= 0.0 && lo <= hi && hi.is_finite()) {
            return bad("weight_decay = [low, high] needs 0 <= low <= high");
        }
    }
    if let Some([lo, hi]) = raw.beta2 {
        if !(0.0..1.0).contains(&lo) || !(lo..1.0).contains(&hi) {
            return bad("beta2 = [low, high] needs 0 <= low <= high < 1");
        }
    }
    let ranges = crate::search::tune::Ranges {
        lr: raw.lr,
        warmup: raw.warmup,
        weight_decay: raw.weight_decay,
        beta2: raw.beta2,
    };
    if ranges == Default::default() {
        return bad(
            "declares no range: add at least one of lr, warmup, weight_decay, beta2 = [low, high]",
        );
    }
    Ok(Tune {
        genes,
        trials: raw.trials,
        seed: raw.seed,
        ranges,
    })
}

fn validate_ablate(a: &Spanned<RawAblate>, err: &ErrFn) -> Result<Ablation, SpecError> {
    let raw = a.get_ref();
    let base: Gene = raw
        .base
        .get_ref()
        .parse()
        .map_err(|e| err(Some(raw.base.span()), format!("[ablate] base: {e}")))?;
    let mut factors = Vec::new();
    for (comp, levels) in COMPONENTS.iter().zip([
        &raw.similarity,
        &raw.normalization,
        &raw.gating,
        &raw.temperature,
    ]) {
        let Some(levels) = levels else { continue };
        let v = levels.get_ref();
        if v.len() < 2 {
            return Err(err(
                Some(levels.span()),
                format!("[ablate] {comp} needs at least two levels (leave it out to keep the base gene's)"),
            ));
        }
        for (i, l) in v.iter().enumerate() {
            with_component(base, comp, l)
                .map_err(|e| err(Some(levels.span()), format!("[ablate] {comp}: {e}")))?;
            if v[..i].contains(l) {
                return Err(err(
                    Some(levels.span()),
                    format!("[ablate] {comp}: `{l}` is listed twice"),
                ));
            }
        }
        factors.push((comp.to_string(), v.clone()));
    }
    if factors.is_empty() {
        return Err(err(
            Some(a.span()),
            "[ablate] lists no factor: add level lists for one or more of similarity, normalization, gating, temperature".into(),
        ));
    }
    Ok(Ablation { base, factors })
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

    fn parse(t: &str) -> Result<Study, SpecError> {
        Study::parse(t, Path::new("s.toml"))
    }

    #[test]
    fn minimal_evolve_gets_the_published_defaults() {
        let s = parse("name = \"a\"\nkind = \"evolve\"\n").unwrap();
        let e = s.evolve.unwrap();
        assert_eq!((e.population, e.elites, e.generations), (12, 3, 10));
        assert_eq!(e.mutation_rate, 0.25);
        assert!(!e.include_baseline && !e.reevaluate_elites);
        assert_eq!(s.seeds, vec![1]);
        assert_eq!(s.config, Preset::Cpu.config());
    }

    #[test]
    fn overrides_apply_and_bad_ones_point_at_their_line() {
        let s = parse("name = \"a\"\nkind = \"evolve\"\n[overrides]\nsteps = 80\n").unwrap();
        assert_eq!(s.config.steps, 80);
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
                3,
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
        let r = s.replicate.unwrap();
        assert_eq!(r.seeds, (1..=10).collect::<Vec<_>>());
        assert!(r.include_baseline);
        let s = parse(
            "name = \"q\"\nkind = \"evolve\"\n[replicate]\nfrom = { study = \"q\", top = 2 }\n",
        )
        .unwrap();
        let r = s.replicate.unwrap();
        assert_eq!(r.seeds, default_followup_seeds());
        assert!(matches!(r.genes, GeneSource::Top { top: 2, .. }));
    }

    #[test]
    fn tune_and_ablate_sections() {
        let s = parse("name = \"t\"\nkind = \"tune\"\nseeds = [1, 2]\n[tune]\ngenes = [\"dot+softmax+none+fixed\", \"dot+sparsemax+output_gate+learned\"]\ntrials = 5\nlr = [3e-4, 3e-3]\nbeta2 = [0.9, 0.999]\n").unwrap();
        let t = s.tune.unwrap();
        assert_eq!((t.genes.len(), t.trials, t.seed), (2, 5, 0));
        assert_eq!(t.ranges.lr, Some([3e-4, 3e-3]));
        assert_eq!(t.ranges.warmup, None);
        let s = parse("name = \"a\"\nkind = \"ablate\"\n[ablate]\nbase = \"dot+softmax+none+learned\"\nnormalization = [\"softmax\", \"sparsemax\"]\ngating = [\"none\", \"output_gate\", \"highway\"]\n").unwrap();
        let a = s.ablate.unwrap();
        let genes: Vec<String> = a.genes().iter().map(|g| g.to_string()).collect();
        assert_eq!(genes.len(), 6);
        assert_eq!(genes[0], "dot+softmax+none+learned");
        assert_eq!(genes[1], "dot+softmax+output_gate+learned");
        assert_eq!(genes[5], "dot+sparsemax+highway+learned");
        assert_eq!(component_of(a.genes()[5], "gating"), "highway");
        let r = parse("name = \"r\"\nkind = \"replicate\"\n[replicate]\ngenes = [\"dot+sparsemax+output_gate+learned\"]\nhparams = { from = \"t\" }\n").unwrap();
        assert_eq!(r.replicate.unwrap().hparams_from.unwrap().0, "t");
        let e = parse("name = \"t\"\nkind = \"tune\"\n[tune]\ngenes = [\"dot+softmax+none+fixed\"]\nlr = [1e-3, 1e-2]\n[replicate]\ngenes = []\n").unwrap_err();
        assert!(
            e.to_string().contains("separate kind = \"replicate\""),
            "{e}"
        );
    }
}
