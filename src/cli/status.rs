//! `evoattn status`: a study's units in its store, done, claimed, pending or failed.

use super::output::{self, Plain};
use super::run::load_study;
use anyhow::{Context, Result};
use clap::Args;
use evoattn::data::{self, Corpus};
use evoattn::study::plan::Planner;
use evoattn::study::status::StatusRunner;
use evoattn::study::store::Store;
use evoattn::study::{self, KindSpec};
use serde_json::json;
use std::path::PathBuf;

/// `evoattn status`.
#[derive(Args)]
pub struct StatusArgs {
    /// Study file (TOML).
    pub study: PathBuf,
    /// Store root.
    #[arg(long, default_value = "runs")]
    pub store: PathBuf,
    /// Data directory (default: EVOATTN_DATA, else the default data directory).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `evoattn status`.
pub fn status(a: &StatusArgs) -> Result<()> {
    let study = load_study(&a.study)?;
    let store = Store::open_existing(&a.store, &study.name).map_err(|_| {
        anyhow::anyhow!(
            "study `{}` has not run yet: no store at {} (start it with `evoattn run {}`)",
            study.name,
            a.store.join(&study.name).display(),
            a.study.display()
        )
    })?;
    let external = study::resolve_external(&study, &a.store)?;
    let dir = data::resolve_data_dir(a.data.as_deref());
    let fingerprint = match Corpus::load(&dir, study.config.vocab_cap) {
        Ok(c) => c.fingerprint(),
        Err(_) => {
            store
                .meta()
                .context("no data and no meta.json in the store: pass --data")?
                .data_fingerprint
        }
    };
    let planner = Planner::new(study.config.clone(), fingerprint, study.max_replicas);
    let mut runner = StatusRunner::new(store, planner);
    let driven = study::drive(&study, external, &mut runner)?;
    let generations = driven.evolve.as_ref().map(|e| {
        e.rows
            .iter()
            .map(|r| r.generation)
            .max()
            .map_or(0, |g| g + 1)
    });
    let json = json!({"study": study.name, "complete": driven.complete, "stages": runner.counts,
                      "generations_done": generations});
    let mut text = format!("study {} ({})\n", study.name, study.kind.as_str());
    for c in &runner.counts {
        text += &format!(
            "  {:<10} done {:>4}  claimed {:>4}  pending {:>4}  failed {:>4}\n",
            c.stage.as_str(),
            c.done,
            c.claimed,
            c.pending,
            c.failed
        );
    }
    if let (Some(g), KindSpec::Evolve(e)) = (generations, &study.kind) {
        text += &format!("  generations finished: {g}/{}\n", e.spec.generations);
    }
    if study.kind.replication().is_some()
        && !runner
            .counts
            .iter()
            .any(|c| c.stage == evoattn::record::Stage::Replicate)
    {
        text += "  replicate  waits for the search to finish\n";
    }
    text += &format!(
        "  {}\n",
        if driven.complete {
            "complete"
        } else {
            "not complete"
        }
    );
    output::print(
        &Plain {
            json: vec![json],
            text,
        },
        a.json,
    )
}
