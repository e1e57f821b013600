//! Studies: a TOML file ([`spec`]) names a kind ([`kinds`], one module each) that expands
//! to units ([`plan`]) that are trained ([`exec`]) and kept in a resumable Parquet store
//! ([`store`]).
//!
//! A kind walks its stages through a [`Runner`]: the [`exec::Executor`] trains what is
//! missing; the [`status::StatusRunner`] only counts, so `evoattn status` follows exactly
//! the plan `run` would.

pub mod cost;
pub mod exec;
pub mod kinds;
pub mod landscape;
pub mod plan;
pub mod spec;
pub mod status;
pub mod store;

use crate::gene::Gene;
use crate::record::{RunRow, Stage};
use crate::search::{EvolveOutcome, Scores};
use anyhow::{bail, Result};
pub use kinds::replicate::{resolve_external, External};
pub use kinds::{Kind, KindSpec};
use plan::Planner;
pub use spec::{SpecError, Study};
use store::Store;

/// What a study kind asks of a runner.
pub trait Runner {
    /// Makes sure (run) or checks (status) that every request is finished; returns whether
    /// all are. `need_all`: the caller cannot go on without all of them (GA generations).
    fn ensure(&mut self, stage: Stage, requests: &[(Gene, u64)], need_all: bool) -> Result<bool>;
    /// The finished row of (gene, seed) under the planner's current configuration, as of
    /// the last `ensure`.
    fn finished(&self, gene: Gene, seed: u64) -> Option<&RunRow>;
    /// [`Runner::ensure`] for a GA hurdle: the requests' packs trained to step `at` only
    /// ([`plan::Pack::to_hurdle`]), as stage [`Stage::Hurdle`]; the GA needs all of them.
    fn ensure_hurdle(&mut self, requests: &[(Gene, u64)], at: usize) -> Result<bool>;
    /// The hurdle row of (gene, seed) at step `at`, as of the last `ensure_hurdle`.
    fn finished_hurdle(&self, gene: Gene, seed: u64, at: usize) -> Option<&RunRow>;
    /// The planner.
    fn planner(&self) -> &Planner;
    /// The planner, to switch configurations (tune trials, tuned replications).
    fn planner_mut(&mut self) -> &mut Planner;
}

/// A stage a study reached and what it asked for.
#[derive(Debug, Clone)]
pub struct Reached {
    /// Which stage.
    pub stage: Stage,
    /// (gene, seed) in order of first request.
    pub requests: Vec<(Gene, u64)>,
    /// The unit id of each request (configurations may differ between requests).
    pub ids: Vec<String>,
    /// The tune trial of each request (0 outside tune studies).
    pub trials: Vec<usize>,
    /// Every request is finished.
    pub complete: bool,
}

impl Reached {
    /// A stage of `requests` under the planner's current configuration.
    pub fn new(
        stage: Stage,
        requests: Vec<(Gene, u64)>,
        planner: &Planner,
        complete: bool,
    ) -> Reached {
        Reached {
            stage,
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

/// Where a study stands after [`drive`].
#[derive(Debug, Clone, Default)]
pub struct Driven {
    /// Stages reached, in order.
    pub stages: Vec<Reached>,
    /// The GA's generations (evolve studies).
    pub evolve: Option<EvolveOutcome>,
    /// The race's rounds (race studies).
    pub race: Option<crate::search::race::RaceOutcome>,
    /// Everything the study needs is finished.
    pub complete: bool,
}

impl Driven {
    /// Adds a stage; the study is complete only when every stage is.
    pub fn push(&mut self, stage: Reached) {
        self.complete &= stage.complete;
        self.stages.push(stage);
    }

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

/// The validation ppl of each finished request (`None`: diverged).
pub fn scores_of(runner: &dyn Runner, requests: &[(Gene, u64)]) -> Scores {
    requests
        .iter()
        .map(|&(g, s)| ((g, s), runner.finished(g, s).and_then(|r| r.val_ppl)))
        .collect()
}

/// Walks the study's stages through `runner`. `external` is what [`resolve_external`] gave.
pub fn drive(study: &Study, external: External, runner: &mut dyn Runner) -> Result<Driven> {
    study.kind.drive(study, external, runner)
}

/// Checks, before anything is written, every configuration the study will train against
/// the data (`seq_len` shorter than every split, …) and its memory estimate against what
/// `device` offers for `jobs` concurrent runs; `data_dir` is named in errors. Returns the
/// estimate of one run.
pub fn preflight(
    study: &Study,
    external: &External,
    corpus: &crate::data::Corpus,
    data_dir: &std::path::Path,
    jobs: usize,
    device: &candle_core::Device,
) -> Result<crate::train::memory::Estimate> {
    let data_error = |e: &crate::train::ConfigError| {
        anyhow::anyhow!("{} (data: {})", study.config_error(e), data_dir.display())
    };
    study
        .config
        .check()
        .map_err(|e| anyhow::anyhow!(study.config_error(&e)))?;
    study
        .config
        .check_data(corpus)
        .map_err(|e| data_error(&e))?;
    if let KindSpec::Tune(t) = &study.kind {
        let configs =
            crate::search::tune::trial_configs(&study.config, &t.ranges, t.trials, t.seed);
        for (i, c) in configs.iter().enumerate() {
            c.check()
                .and_then(|_| c.check_data(corpus))
                .map_err(|e| anyhow::anyhow!("{}: [tune] trial {i}: {e}", study.path.display()))?;
        }
    }
    if let Some(h) = &external.hparams {
        for (g, c) in h {
            c.check().and_then(|_| c.check_data(corpus)).map_err(|e| {
                anyhow::anyhow!(
                    "{}: the tuned configuration of `{g}` is not valid: {e}",
                    study.path.display()
                )
            })?;
        }
    }
    let seeds_per_gene = study
        .seeds
        .len()
        .max(study.kind.replication().map_or(0, |r| r.seeds.len()));
    let replicas = study.max_replicas.min(seeds_per_gene).max(1);
    crate::train::memory::check_fits(&study.config, corpus.vocab.len(), replicas, jobs, device)
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", study.path.display()))
}

/// Refuses to resume a search in a store planned under another gene-space version (its
/// draws would pick other genes).
pub fn check_space_version(study: &Study, store: &Store) -> Result<()> {
    let Some(meta) = store.meta() else {
        return Ok(());
    };
    if study.kind.draws_genes() && meta.gene_space_version != crate::gene::SPACE_VERSION {
        bail!(
            "study `{}` was planned with gene space version {} and this evoattn has version {}: its {} would now draw other genes. Run it under a new name (or in another --store) to start afresh, or use the evoattn that planned it",
            study.name,
            meta.gene_space_version,
            crate::gene::SPACE_VERSION,
            study.kind.as_str()
        );
    }
    Ok(())
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
            stage.stage,
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
        let shown = if matches!(stage.stage, Stage::Search | Stage::Tune) {
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

#[cfg(test)]
mod tests {
    use super::store::{Store, StoreMeta};
    use super::*;

    #[test]
    fn a_search_is_not_resumed_under_another_gene_space() {
        let dir = store::tests::tempdir();
        let store = Store::open(&dir, "s").unwrap();
        let parse = |t: &str| Study::parse(t, std::path::Path::new("s.toml")).unwrap();
        let ga = parse("name = \"s\"\nkind = \"evolve\"\n");
        let rep = parse("name = \"s\"\nkind = \"replicate\"\n[replicate]\ngenes = []\n");
        // No meta.json yet, or the same version: fine.
        assert!(check_space_version(&ga, &store).is_ok());
        let mut meta = StoreMeta {
            gene_space_version: crate::gene::SPACE_VERSION,
            ..Default::default()
        };
        store.write_meta(&meta).unwrap();
        assert!(check_space_version(&ga, &store).is_ok());
        meta.gene_space_version += 1;
        store.write_meta(&meta).unwrap();
        let e = check_space_version(&ga, &store).unwrap_err().to_string();
        assert!(
            e.contains("gene space version") && e.contains("new name"),
            "{e}"
        );
        // A replication names its genes: the space version does not change its plan.
        assert!(check_space_version(&rep, &store).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
