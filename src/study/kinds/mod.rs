//! Study kinds, one module each: its TOML section, its validation and its stage planning.
//!
//! | kind | module | section | stages |
//! |---|---|---|---|
//! | `evolve` | [`evolve`] | `[evolve]` (+ `[replicate]`) | search, then replicate |
//! | `random_search` | [`random_search`] | `[random_search]` (+ `[replicate]`) | search, then replicate |
//! | `replicate` | [`replicate`] | `[replicate]` | replicate |
//! | `tune` | [`tune`] | `[tune]` | tune |
//! | `ablate` | [`ablate`] | `[ablate]` | ablate |
//! | `race` | [`race`] | `[race]` | race, then replicate (confirmation) |
//!
//! A kind plans through a [`Runner`]: it asks for (gene, seed) units with
//! [`Runner::ensure`] and reads finished results with [`Runner::finished`]; whether the
//! runner trains them ([`super::exec::Executor`]) or only counts them
//! ([`super::status::StatusRunner`]) is not its business.

pub mod ablate;
pub mod evolve;
pub mod race;
pub mod random_search;
pub mod replicate;
pub mod tune;

use super::spec::{Ctx, RawStudy, SpecError, Study};
use super::{Driven, Runner};
use anyhow::Result;
use serde::Deserialize;

/// What a study does, as written in `kind = "…"`.
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
    /// Racing over seeds, then a confirmation on fresh seeds.
    Race,
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
            Kind::Race => "race",
        }
    }

    /// The sections a study of this kind may have.
    pub fn sections(self) -> &'static [&'static str] {
        match self {
            Kind::Evolve => &["evolve", "replicate"],
            Kind::RandomSearch => &["random_search", "replicate"],
            Kind::Replicate => &["replicate"],
            Kind::Tune => &["tune"],
            Kind::Ablate => &["ablate"],
            Kind::Race => &["race"],
        }
    }

    /// The seed list when the file gives none.
    pub fn default_seeds(self) -> Vec<u64> {
        match self {
            Kind::Replicate => replicate::default_replicate_seeds(),
            Kind::Evolve | Kind::RandomSearch | Kind::Tune | Kind::Ablate | Kind::Race => vec![1],
        }
    }
}

/// A validated study kind with its section(s).
#[derive(Debug, Clone)]
pub enum KindSpec {
    /// `kind = "evolve"`.
    Evolve(evolve::Evolve),
    /// `kind = "random_search"`.
    RandomSearch(random_search::RandomSearch),
    /// `kind = "replicate"`.
    Replicate(replicate::Replicate),
    /// `kind = "tune"`.
    Tune(tune::Tune),
    /// `kind = "ablate"`.
    Ablate(ablate::Ablate),
    /// `kind = "race"`.
    Race(race::Race),
}

impl KindSpec {
    /// Which kind.
    pub fn kind(&self) -> Kind {
        match self {
            KindSpec::Evolve(_) => Kind::Evolve,
            KindSpec::RandomSearch(_) => Kind::RandomSearch,
            KindSpec::Replicate(_) => Kind::Replicate,
            KindSpec::Tune(_) => Kind::Tune,
            KindSpec::Ablate(_) => Kind::Ablate,
            KindSpec::Race(_) => Kind::Race,
        }
    }

    /// Its spelling.
    pub fn as_str(&self) -> &'static str {
        self.kind().as_str()
    }

    /// The replication stage, when the study has one.
    pub fn replication(&self) -> Option<&replicate::Replication> {
        match self {
            KindSpec::Evolve(e) => e.replicate.as_ref(),
            KindSpec::RandomSearch(r) => r.replicate.as_ref(),
            KindSpec::Replicate(r) => Some(&r.replication),
            KindSpec::Tune(_) | KindSpec::Ablate(_) | KindSpec::Race(_) => None,
        }
    }

    /// Whether its plan depends on draws over the gene space (a search), so that a store
    /// planned under another [`crate::gene::SPACE_VERSION`] cannot be resumed.
    pub fn draws_genes(&self) -> bool {
        match self {
            KindSpec::Evolve(_) | KindSpec::RandomSearch(_) => true,
            KindSpec::Replicate(_)
            | KindSpec::Tune(_)
            | KindSpec::Ablate(_)
            | KindSpec::Race(_) => false,
        }
    }

    /// Validates the kind's sections of `raw`.
    pub(crate) fn validate(raw: &RawStudy, ctx: &Ctx<'_>) -> Result<KindSpec, SpecError> {
        for (section, span) in raw.sections() {
            if ctx.kind.sections().contains(&section) {
                continue;
            }
            let message = match (section, ctx.kind) {
                ("replicate", Kind::Tune | Kind::Ablate) => format!(
                    "a {} study has no [replicate] stage; write a separate kind = \"replicate\" study (with `hparams = {{ from = \"{}\" }}` for tuned hyperparameters)",
                    ctx.kind.as_str(),
                    ctx.name
                ),
                _ => format!(
                    "section [{section}] does not apply to kind = \"{}\"; remove it or change `kind`",
                    ctx.kind.as_str()
                ),
            };
            return Err(ctx.err(Some(span), message));
        }
        Ok(match ctx.kind {
            Kind::Evolve => KindSpec::Evolve(evolve::validate(raw, ctx)?),
            Kind::RandomSearch => KindSpec::RandomSearch(random_search::validate(raw, ctx)?),
            Kind::Replicate => KindSpec::Replicate(replicate::validate_kind(raw, ctx)?),
            Kind::Tune => KindSpec::Tune(tune::validate(raw, ctx)?),
            Kind::Ablate => KindSpec::Ablate(ablate::validate(raw, ctx)?),
            Kind::Race => KindSpec::Race(race::validate(raw, ctx)?),
        })
    }

    /// Walks the study's stages through `runner`; `external` is what
    /// [`replicate::resolve_external`] gave.
    pub fn drive(
        &self,
        study: &Study,
        external: replicate::External,
        runner: &mut dyn Runner,
    ) -> Result<Driven> {
        let mut out = Driven {
            complete: true,
            ..Default::default()
        };
        match self {
            KindSpec::Evolve(e) => e.drive(study, external, runner, &mut out)?,
            KindSpec::RandomSearch(r) => r.drive(study, external, runner, &mut out)?,
            KindSpec::Replicate(r) => r.replication.drive(external, runner, &mut out)?,
            KindSpec::Tune(t) => t.drive(study, runner, &mut out)?,
            KindSpec::Ablate(a) => a.drive(study, runner, &mut out)?,
            KindSpec::Race(r) => r.drive(external, runner, &mut out)?,
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! An in-memory runner for the kinds' planning tests: every request finishes at once
    //! with a synthetic validation ppl, and every request is recorded.

    use super::super::plan::Planner;
    use super::super::Runner;
    use crate::gene::Gene;
    use crate::record::{RunRow, Stage};
    use crate::study::spec::Study;
    use crate::train::TrainConfig;
    use anyhow::Result;
    use std::collections::HashMap;
    use std::path::Path;

    /// Records requests per stage and "trains" them instantly.
    pub struct FakeRunner {
        /// Planner.
        pub planner: Planner,
        /// (stage, gene, seed, unit id) of every request, in order.
        pub log: Vec<(Stage, Gene, u64, String)>,
        rows: HashMap<String, RunRow>,
        /// The synthetic score of a unit.
        pub score: fn(Gene, u64, &TrainConfig) -> Option<f64>,
    }

    /// A smooth landscape: sparsemax and output gates help, lr near 2e-3 helps.
    pub fn landscape(g: Gene, seed: u64, c: &TrainConfig) -> Option<f64> {
        let mut v = 100.0 + (g.index() % 7) as f64 + seed as f64 * 0.01;
        if g.normalization == crate::gene::Normalization::Sparsemax {
            v -= 5.0;
        }
        if g.gating == crate::gene::Gating::OutputGate {
            v -= 3.0;
        }
        Some(v + (c.lr.ln() - 2e-3f64.ln()).abs())
    }

    impl FakeRunner {
        /// A runner for `study` on a fixed data fingerprint.
        pub fn new(study: &Study) -> FakeRunner {
            FakeRunner {
                planner: Planner::new(study.config.clone(), "fp".into(), study.max_replicas),
                log: vec![],
                rows: HashMap::new(),
                score: landscape,
            }
        }

        /// The row of a unit id.
        pub fn finished_row(&self, id: &str) -> Option<&RunRow> {
            self.rows.get(id)
        }

        /// The requests of `stage`, as (gene, seed).
        pub fn requests(&self, stage: Stage) -> Vec<(Gene, u64)> {
            self.log
                .iter()
                .filter(|l| l.0 == stage)
                .map(|l| (l.1, l.2))
                .collect()
        }
    }

    impl Runner for FakeRunner {
        fn ensure(&mut self, stage: Stage, requests: &[(Gene, u64)], _: bool) -> Result<bool> {
            for &(g, s) in requests {
                let u = self.planner.unit(g, s);
                let cfg = self.planner.config_for(g).clone();
                self.log.push((stage, g, s, u.id.clone()));
                let val = (self.score)(g, s, &cfg);
                let row = RunRow {
                    stage,
                    unit_id: u.id.clone(),
                    gene: g,
                    seed: s,
                    config: cfg,
                    val_ppl: val,
                    ..crate::study::store::schema::blank_run()
                };
                self.rows.entry(u.id).or_insert(row);
            }
            Ok(true)
        }
        fn finished(&self, gene: Gene, seed: u64) -> Option<&RunRow> {
            self.rows.get(&self.planner.unit(gene, seed).id)
        }
        fn ensure_hurdle(&mut self, requests: &[(Gene, u64)], at: usize) -> Result<bool> {
            for &(g, s) in requests {
                let u = self.planner.unit(g, s);
                let cfg = self.planner.config_for(g).clone();
                let id = crate::study::plan::hurdle_unit_id(&u.id, at);
                self.log.push((Stage::Hurdle, g, s, id.clone()));
                // At the hurdle: the final score plus a gene-dependent offset, so the
                // hurdle ranking is informative but not perfect.
                let val = (self.score)(g, s, &cfg).map(|v| v + 20.0 + (g.index() % 3) as f64);
                let row = RunRow {
                    stage: Stage::Hurdle,
                    unit_id: id.clone(),
                    gene: g,
                    seed: s,
                    config: cfg,
                    val_ppl: val,
                    stopped_at: Some(at as u64),
                    ..crate::study::store::schema::blank_run()
                };
                self.rows.entry(id).or_insert(row);
            }
            Ok(true)
        }
        fn finished_hurdle(&self, gene: Gene, seed: u64, at: usize) -> Option<&RunRow> {
            self.rows.get(&crate::study::plan::hurdle_unit_id(
                &self.planner.unit(gene, seed).id,
                at,
            ))
        }
        fn planner(&self) -> &Planner {
            &self.planner
        }
        fn planner_mut(&mut self) -> &mut Planner {
            &mut self.planner
        }
    }

    /// A study parsed from `text` (panics on an invalid file: tests only).
    pub fn study(text: &str) -> Study {
        Study::parse(text, Path::new("t.toml")).unwrap()
    }
}
