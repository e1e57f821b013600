//! Studies: a TOML file ([`spec`]) expands to units ([`plan`]) that are trained
//! ([`exec`]) and kept in a resumable Parquet store ([`store`]).
//!
//! A study has at most two stages: `search` (evolve or random_search) and `replicate`
//! (an explicit gene list or the top K of a search, on a common seed list). [`drive`] walks
//! them through a [`Runner`]: the [`exec::Executor`] trains what is missing; the
//! [`StatusRunner`] only counts, so `evoattn status` follows exactly the plan `run` would.

pub mod exec;
pub mod plan;
pub mod spec;
pub mod store;

use crate::gene::Gene;
use crate::search::{self, EvolveOutcome, Scores};
use anyhow::{bail, Result};
use plan::Planner;
use spec::{GeneSource, Kind, Study};
use std::collections::HashMap;
use std::path::Path;
use store::{PackState, RunRow, Store};

/// What the driver asks of a runner.
pub trait Runner {
    /// Makes sure (run) or checks (status) that every request is finished; returns whether
    /// all are. `need_all`: the caller cannot go on without all of them (GA generations).
    fn ensure(&mut self, stage: &str, requests: &[(Gene, u64)], need_all: bool) -> Result<bool>;
    /// The store, refreshed by `ensure`.
    fn store(&self) -> &Store;
    /// The planner.
    fn planner(&self) -> &Planner;
    /// The planner, to switch configurations (tune trials, tuned replications).
    fn planner_mut(&mut self) -> &mut Planner;
}

impl Runner for exec::Executor<'_> {
    fn ensure(&mut self, stage: &str, requests: &[(Gene, u64)], need_all: bool) -> Result<bool> {
        exec::Executor::ensure(self, stage, requests, need_all)
    }
    fn store(&self) -> &Store {
        &self.store
    }
    fn planner(&self) -> &Planner {
        &self.planner
    }
    fn planner_mut(&mut self) -> &mut Planner {
        &mut self.planner
    }
}

/// A stage and what it asked for.
#[derive(Debug, Clone)]
pub struct Stage {
    /// `search` or `replicate`.
    pub name: String,
    /// (gene, seed) in order of first request.
    pub requests: Vec<(Gene, u64)>,
    /// The unit id of each request (configurations may differ between requests).
    pub ids: Vec<String>,
    /// The tune trial of each request (0 outside tune studies).
    pub trials: Vec<usize>,
    /// Every request is finished.
    pub complete: bool,
}

/// Where a study stands after [`drive`].
#[derive(Debug, Clone, Default)]
pub struct Driven {
    /// Stages reached, in order.
    pub stages: Vec<Stage>,
    /// The GA's generations (evolve studies).
    pub evolve: Option<EvolveOutcome>,
    /// Everything the study needs is finished.
    pub complete: bool,
}

impl Stage {
    /// A stage of `requests` under the runner's current configuration.
    fn new(name: &str, requests: Vec<(Gene, u64)>, planner: &Planner, complete: bool) -> Stage {
        Stage {
            name: name.into(),
            ids: requests
                .iter()
                .map(|&(g, s)| planner.unit(g, s).id)
                .collect(),
            trials: vec![0; requests.len()],
            requests,
            complete,
        }
    }
}

impl Driven {
    /// Unit ids of every request, in order (search first), without repeats.
    pub fn unit_ids(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.stages
            .iter()
            .flat_map(|s| s.ids.iter())
            .filter(|id| seen.insert(id.to_string()))
            .cloned()
            .collect()
    }
}

/// The best `k` genes of `rows` by mean validation ppl (a gene with a diverged run ranks
/// last; ties by gene index).
pub fn top_genes<'r>(rows: impl IntoIterator<Item = &'r RunRow>, k: usize) -> Vec<Gene> {
    let mut by_gene: HashMap<Gene, Vec<Option<f64>>> = HashMap::new();
    for r in rows {
        by_gene.entry(r.gene).or_default().push(r.val_ppl);
    }
    let scored: Vec<(Gene, f64)> = by_gene
        .into_iter()
        .map(|(g, v)| (g, search::fitness(&v)))
        .collect();
    search::select_elites(&scored, k)
}

/// What a study takes from other studies' stores, resolved before anything is written.
#[derive(Debug, Clone, Default)]
pub struct External {
    /// `from = { study = OTHER, top = K }`: OTHER's top K genes.
    pub genes: Option<Vec<Gene>>,
    /// `hparams = { from = TUNE }`: each tuned gene's best configuration in TUNE.
    pub hparams: Option<std::collections::BTreeMap<Gene, crate::train::TrainConfig>>,
}

fn read_other(root: &Path, other: &str, at: &str, key: &str) -> Result<Vec<RunRow>> {
    let path = root.join(other).join("runs.parquet");
    if !path.exists() {
        bail!(
            "{at}: `{key}` names study `{other}`, but {} does not exist; run that study first (or pass the --store that holds it)",
            path.display()
        );
    }
    let rows = store::runs_from_frame(&store::read_parquet(&path)?)?;
    if rows.is_empty() {
        bail!(
            "{at}: study `{other}` has no finished runs in {}",
            path.display()
        );
    }
    Ok(rows)
}

/// Resolves `from = { study = OTHER, top = K }` and `hparams = { from = TUNE }` against
/// the other studies' `runs.parquet` under `root`.
pub fn resolve_external(study: &Study, root: &Path) -> Result<External> {
    let Some(rep) = &study.replicate else {
        return Ok(External::default());
    };
    let hparams = match &rep.hparams_from {
        None => None,
        Some((tune, at)) => {
            let rows = read_other(root, tune, at, "hparams.from")?;
            let best = search::tune::best_trials(&rows);
            if best.is_empty() {
                bail!("{at}: study `{tune}` has no tune runs (is it a kind = \"tune\" study?)");
            }
            let mut out = std::collections::BTreeMap::new();
            for (g, t) in best {
                if !t.fitness.is_finite() {
                    bail!("{at}: every trial of `{g}` in `{tune}` diverged on some seed; there is no tuned configuration to replicate");
                }
                let c = search::tune::apply_tuned(&study.config, &t.config).map_err(|d| {
                    anyhow::anyhow!("{at}: the tuned hyperparameters of `{tune}` do not transfer: {d}; use the same preset and overrides as the tune study")
                })?;
                out.insert(g, c);
            }
            Some(out)
        }
    };
    let genes = match &rep.genes {
        GeneSource::Top {
            study: other,
            top,
            at,
        } if *other != study.name => {
            let rows = read_other(root, other, at, "from")?;
            Some(top_genes(&rows, *top))
        }
        _ => None,
    };
    if let (Some(h), Some((tune, at))) = (&hparams, &rep.hparams_from) {
        let mut genes: Vec<Gene> = match (&genes, &rep.genes) {
            (Some(g), _) => g.clone(),
            (None, GeneSource::List(g)) => g.clone(),
            _ => vec![],
        };
        if rep.include_baseline {
            genes.push(Gene::BASELINE);
        }
        check_tuned(&genes, h, tune, at)?;
    }
    Ok(External { genes, hparams })
}

/// Every gene of a tuned replication must have a tuned configuration.
fn check_tuned(
    genes: &[Gene],
    tuned: &std::collections::BTreeMap<Gene, crate::train::TrainConfig>,
    tune: &str,
    at: &str,
) -> Result<()> {
    if let Some(g) = genes.iter().find(|g| !tuned.contains_key(g)) {
        bail!("{at}: gene `{g}` was not tuned in `{tune}`; add it to that study's [tune] genes or drop it here");
    }
    Ok(())
}

fn scores_of(store: &Store, planner: &Planner, requests: &[(Gene, u64)]) -> Scores {
    requests
        .iter()
        .map(|&(g, s)| {
            let v = store.run(&planner.unit(g, s).id).and_then(|r| r.val_ppl);
            ((g, s), v)
        })
        .collect()
}

/// Walks the study's stages through `runner`. `external` is what [`resolve_external`] gave.
pub fn drive(study: &Study, external: External, runner: &mut dyn Runner) -> Result<Driven> {
    let mut out = Driven {
        complete: true,
        ..Default::default()
    };
    let self_ranked = matches!(
        study.replicate.as_ref().map(|r| &r.genes),
        Some(GeneSource::Top { study: s, .. }) if *s == study.name
    );
    match study.kind {
        Kind::Evolve => {
            let spec = study.evolve.as_ref().expect("validated");
            let outcome = search::evolve(spec, &study.seeds, |_, missing| {
                if runner.ensure("search", missing, true)? {
                    Ok(Some(scores_of(runner.store(), runner.planner(), missing)))
                } else {
                    Ok(None)
                }
            })?;
            let complete = outcome.complete
                || (outcome.stopped_by_cap && outcome.pending_generation.is_none());
            out.stages.push(Stage::new(
                "search",
                outcome.requests.clone(),
                runner.planner(),
                complete,
            ));
            out.complete &= complete;
            out.evolve = Some(outcome);
        }
        Kind::RandomSearch => {
            let spec = study.random_search.as_ref().expect("validated");
            let requests: Vec<(Gene, u64)> = search::random_genes(spec)
                .into_iter()
                .flat_map(|g| study.seeds.iter().map(move |&s| (g, s)))
                .collect();
            let complete = runner.ensure("search", &requests, self_ranked)?;
            out.stages
                .push(Stage::new("search", requests, runner.planner(), complete));
            out.complete &= complete;
        }
        Kind::Tune => {
            let t = study.tune.as_ref().expect("validated");
            let configs = search::tune::trial_configs(&study.config, &t.ranges, t.trials, t.seed);
            let mut stage = Stage::new("tune", vec![], runner.planner(), true);
            for (i, cfg) in configs.into_iter().enumerate() {
                runner.planner_mut().config = cfg;
                let requests: Vec<(Gene, u64)> = t
                    .genes
                    .iter()
                    .flat_map(|&g| study.seeds.iter().map(move |&s| (g, s)))
                    .collect();
                stage.complete &= runner.ensure("tune", &requests, false)?;
                let part = Stage::new("tune", requests, runner.planner(), true);
                stage.ids.extend(part.ids);
                stage.trials.extend(vec![i; part.requests.len()]);
                stage.requests.extend(part.requests);
            }
            runner.planner_mut().config = study.config.clone();
            out.complete &= stage.complete;
            out.stages.push(stage);
        }
        Kind::Ablate => {
            let a = study.ablate.as_ref().expect("validated");
            let requests: Vec<(Gene, u64)> = a
                .genes()
                .into_iter()
                .flat_map(|g| study.seeds.iter().map(move |&s| (g, s)))
                .collect();
            let complete = runner.ensure("ablate", &requests, false)?;
            out.stages
                .push(Stage::new("ablate", requests, runner.planner(), complete));
            out.complete &= complete;
        }
        Kind::Replicate => {}
    }
    if let Some(rep) = &study.replicate {
        let mut genes: Vec<Gene> = match (&rep.genes, external.genes) {
            (GeneSource::List(g), _) => g.clone(),
            (GeneSource::Top { .. }, Some(g)) => g,
            (GeneSource::Top { top, .. }, None) => {
                if !out.complete {
                    return Ok(out);
                }
                let search = &out.stages[0];
                let rows: Vec<&RunRow> = search
                    .requests
                    .iter()
                    .filter_map(|&(g, s)| runner.store().run(&runner.planner().unit(g, s).id))
                    .collect();
                top_genes(rows, *top)
            }
        };
        if rep.include_baseline && !genes.contains(&Gene::BASELINE) {
            genes.insert(0, Gene::BASELINE);
        }
        let requests: Vec<(Gene, u64)> = genes
            .iter()
            .flat_map(|&g| rep.seeds.iter().map(move |&s| (g, s)))
            .collect();
        if let Some(h) = external.hparams {
            // Genes ranked by this study's own search are only known now.
            if let Some((tune, at)) = &rep.hparams_from {
                check_tuned(&genes, &h, tune, at)?;
            }
            runner.planner_mut().per_gene = h;
        }
        let complete = runner.ensure("replicate", &requests, false)?;
        out.stages.push(Stage::new(
            "replicate",
            requests,
            runner.planner(),
            complete,
        ));
        out.complete &= complete;
    }
    Ok(out)
}

/// Unit counts of one stage, for `evoattn status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StageCounts {
    /// Stage name.
    pub stage: String,
    /// Finished units.
    pub done: usize,
    /// Units in runs that a live process holds.
    pub claimed: usize,
    /// Units nobody holds yet.
    pub pending: usize,
}

/// A runner that trains nothing and counts unit states.
pub struct StatusRunner {
    /// The study's store (read only).
    pub store: Store,
    /// Planner.
    pub planner: Planner,
    /// Counts per stage (a GA's generations add up).
    pub counts: Vec<StageCounts>,
    /// Units requested by earlier stages (as in [`exec::Executor`]).
    pub earlier: std::collections::HashSet<String>,
}

impl Runner for StatusRunner {
    fn ensure(&mut self, stage: &str, requests: &[(Gene, u64)], _need_all: bool) -> Result<bool> {
        self.store.refresh()?;
        if self.counts.last().is_none_or(|c| c.stage != stage) {
            self.counts.push(StageCounts {
                stage: stage.into(),
                ..Default::default()
            });
        }
        let packs = self
            .planner
            .pack(requests, |u| self.earlier.contains(&u.id));
        for &(g, s) in requests {
            self.earlier.insert(self.planner.unit(g, s).id);
        }
        let c = self.counts.last_mut().expect("pushed");
        let mut all_done = true;
        for p in &packs {
            let n = p.units.len();
            if p.units.iter().all(|u| self.store.is_done(&u.id)) {
                c.done += n;
                continue;
            }
            all_done = false;
            match self.store.pack_state(&p.id)? {
                PackState::Claimed(_) => c.claimed += n,
                PackState::Done => c.done += n,
                PackState::Pending => c.pending += n,
            }
        }
        Ok(all_done)
    }
    fn store(&self) -> &Store {
        &self.store
    }
    fn planner(&self) -> &Planner {
        &self.planner
    }
    fn planner_mut(&mut self) -> &mut Planner {
        &mut self.planner
    }
}

/// The end-of-run summary: per stage, per gene (best mean validation ppl first).
pub fn summary_table(driven: &Driven, store: &Store) -> String {
    let mut s = String::new();
    for stage in &driven.stages {
        let mut genes: Vec<(Gene, usize)> = Vec::new();
        for (&(g, _), &t) in stage.requests.iter().zip(&stage.trials) {
            if !genes.contains(&(g, t)) {
                genes.push((g, t));
            }
        }
        let tuned = stage.trials.iter().any(|&t| t > 0);
        let mut lines = Vec::new();
        for (g, t) in genes {
            let rows: Vec<&RunRow> = stage
                .requests
                .iter()
                .zip(&stage.trials)
                .zip(&stage.ids)
                .filter(|((r, tr), _)| r.0 == g && **tr == t)
                .filter_map(|(_, id)| store.run(id))
                .collect();
            let label = if tuned {
                format!("{g} (trial {t})")
            } else {
                g.to_string()
            };
            let vals: Vec<f64> = rows.iter().filter_map(|r| r.val_ppl).collect();
            let tests: Vec<f64> = rows.iter().filter_map(|r| r.test_ppl).collect();
            let diverged = rows.iter().filter(|r| r.diverged_at.is_some()).count();
            let (m, sd) = crate::stats::mean_sd(&vals);
            let (tm, _) = crate::stats::mean_sd(&tests);
            lines.push((m, label, rows.len(), diverged, sd, tm));
        }
        lines.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        s.push_str(&format!(
            "\n{} ({} {}){}\n{:<44} {:>4} {:>5} {:>16} {:>9}\n",
            stage.name,
            lines.len(),
            if tuned {
                "gene × trial pairs"
            } else {
                "gene(s)"
            },
            if stage.complete {
                ""
            } else {
                " — incomplete"
            },
            "gene",
            "n",
            "div",
            "val ppl (± sd)",
            "test ppl"
        ));
        let shown = if stage.name == "search" || stage.name == "tune" {
            10
        } else {
            usize::MAX
        };
        for (m, g, n, d, sd, tm) in lines.iter().take(shown) {
            let val = if m.is_nan() {
                "-".to_string()
            } else if sd.is_nan() {
                format!("{m:.2}")
            } else {
                format!("{m:.2} ± {sd:.2}")
            };
            let test = if tm.is_nan() {
                "-".into()
            } else {
                format!("{tm:.2}")
            };
            s.push_str(&format!(
                "{:<44} {:>4} {:>5} {:>16} {:>9}\n",
                g, n, d, val, test
            ));
        }
        if lines.len() > shown {
            s.push_str(&format!(
                "… {} more genes in runs.parquet\n",
                lines.len() - shown
            ));
        }
    }
    s
}
