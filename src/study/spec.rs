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
}

impl Kind {
    /// The spelling used in study files.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Evolve => "evolve",
            Kind::RandomSearch => "random_search",
            Kind::Replicate => "replicate",
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
                Some(Replication {
                    genes,
                    include_baseline: rs.include_baseline,
                    seeds,
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
            path: path.to_path_buf(),
            file_sha256: hex::encode(sha2::Sha256::digest(text.as_bytes())),
        })
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
            ("name = \"a\"\nkind = \"tune\"\n", 2, "unknown variant"),
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
}
