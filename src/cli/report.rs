//! `evoattn report`: a study's significance report from its store.

use super::run::load_study;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// `evoattn report`.
#[derive(Args)]
pub struct ReportArgs {
    /// A study file (its store under --store) or a study's store folder.
    pub target: PathBuf,
    /// Store root (with a study file).
    #[arg(long, default_value = "runs")]
    pub store: PathBuf,
    /// Where to write the report (default: report.md in the study's store folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Another search's store folder (e.g. a random search) to plot against this one at
    /// equal budget (best fitness so far against runs trained).
    #[arg(long, value_name = "STORE_DIR")]
    pub compare_search: Option<PathBuf>,
    /// Another study's store folder sharing genes and seeds with this one (e.g. an untuned
    /// replication): adds the seed-paired difference-in-differences of each gene's edge.
    #[arg(long, value_name = "STORE_DIR")]
    pub contrast: Option<PathBuf>,
    /// The margin δ in ppl (default: the study's `[analysis] margin`, else 1).
    #[arg(long)]
    pub margin: Option<f64>,
    /// The family-wise level (default: the study's `[analysis] alpha`, else 0.05).
    #[arg(long)]
    pub alpha: Option<f64>,
}

/// Runs `evoattn report`.
pub fn run(a: &ReportArgs) -> Result<()> {
    let dir = if a.target.extension().is_some_and(|e| e == "toml") {
        let s = load_study(&a.target)?;
        a.store.join(s.name)
    } else {
        a.target.clone()
    };
    let out = evoattn::report::write_for_store(
        &dir,
        &evoattn::report::Request {
            out: a.out.clone(),
            compare_search: a.compare_search.clone(),
            contrast: a.contrast.clone(),
            margin: a.margin,
            alpha: a.alpha,
        },
    )?;
    eprintln!(
        "report: {} (and {})",
        out.display(),
        dir.join("tests.parquet").display()
    );
    Ok(())
}
