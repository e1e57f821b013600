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
}

/// Runs `evoattn report`.
pub fn run(a: &ReportArgs) -> Result<()> {
    let dir = if a.target.extension().is_some_and(|e| e == "toml") {
        let s = load_study(&a.target)?;
        a.store.join(s.name)
    } else {
        a.target.clone()
    };
    let out =
        evoattn::report::write_for_store(&dir, a.out.as_deref(), a.compare_search.as_deref())?;
    eprintln!(
        "report: {} (and {})",
        out.display(),
        dir.join("tests.parquet").display()
    );
    Ok(())
}
