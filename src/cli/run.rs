//! `evoattn run`: a study file against its store (`evoattn status` is in `status.rs`).

use super::{device_name, parse_device};
use anyhow::{bail, Context, Result};
use clap::Args;
use evoattn::data::{self, Corpus};
use evoattn::study::cost::PackOrder;
use evoattn::study::exec::{ExecOptions, Executor};
use evoattn::study::plan::Planner;
use evoattn::study::store::{Store, StoreMeta};
use evoattn::study::{self, Study};
use evoattn::train::checkpoint::Every;
use evoattn::version;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `evoattn run`.
#[derive(Args)]
pub struct RunArgs {
    /// Study file (TOML), e.g. studies/quickstart.toml.
    pub study: PathBuf,
    /// Store root; the study writes under STORE/<name>/.
    #[arg(long, default_value = "runs")]
    pub store: PathBuf,
    /// Concurrent runs in this process (default: one per core on CPU, 1 on CUDA).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Run only share i of n (0-based), e.g. --shard 0/2; shards split a study over processes.
    #[arg(long)]
    pub shard: Option<String>,
    /// Data directory (default: EVOATTN_DATA, else the default data directory, fetched if empty).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Log lines instead of progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Check the study file, its settings against the data and the memory estimate, then
    /// exit without training or writing anything.
    #[arg(long)]
    pub check: bool,
    /// Mid-run checkpoints: every N steps, 0 (off) or auto (by time, ≤ 1 % of training);
    /// overrides the study's `checkpoint_every` (default auto). Results do not depend on it.
    #[arg(long, value_parser = parse_every)]
    pub checkpoint_every: Option<Every>,
    /// Do not write the report when the study is complete (the array tasks of `evoattn
    /// slurm submit`: its final job writes the report once).
    #[arg(long)]
    pub no_report: bool,
    /// Which packs of a stage start first: longest-first (estimated cost: this store's
    /// runs of the gene, else the committed `bench --sweep` table) or plan (the plan's
    /// order). Results do not depend on it.
    #[arg(long, default_value = "longest-first", value_parser = str::parse::<PackOrder>)]
    pub pack_order: PackOrder,
}

fn parse_every(s: &str) -> Result<Every, String> {
    Every::parse(s)
}

/// The error of a run that finished what it could while some packs failed (exit code 3).
#[derive(Debug)]
pub struct PacksFailed {
    /// Failed runs (packs).
    pub runs: usize,
    /// Their units.
    pub units: usize,
}

impl std::fmt::Display for PacksFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} run(s) ({} unit(s)) failed, listed above and in the store's failed/ folder; the study is incomplete and no report was written. Fix the cause and run the same command again: finished units are kept and the failed runs are retried",
            self.runs, self.units
        )
    }
}

impl std::error::Error for PacksFailed {}

/// `i/n` → (i, n); none → the whole study.
fn parse_shard(s: Option<&str>) -> Result<(usize, usize)> {
    let Some(s) = s else { return Ok((0, 1)) };
    let (i, n) = s
        .split_once('/')
        .context("--shard must look like i/n, e.g. 0/2")?;
    let (i, n): (usize, usize) = (
        i.trim().parse().context("--shard i/n: i is not a number")?,
        n.trim().parse().context("--shard i/n: n is not a number")?,
    );
    if n == 0 || i >= n {
        bail!("--shard {s}: need 0 <= i < n, e.g. 0/2 and 1/2");
    }
    Ok((i, n))
}

/// Study-file errors are one line; exit before anything is written.
pub fn load_study(path: &Path) -> Result<Study> {
    Study::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Runs `evoattn run`.
pub fn run(a: &RunArgs, threads_per_job: usize, jobs: usize) -> Result<()> {
    if evoattn::model::kernels::reference_kernels() {
        bail!(
            "EVOATTN_REFERENCE_KERNELS=1 is set: studies train with the fused kernels their unit ids name; unset it (it is for `evoattn train` and `bench` checks only)"
        );
    }
    let study = load_study(&a.study)?;
    let shard = parse_shard(a.shard.as_deref())?;
    let device = parse_device(&a.device)?;
    let external = study::resolve_external(&study, &a.store)?;
    let dir = data::data_dir_or_fetch(a.data.as_deref())?;
    let corpus = Corpus::load(&dir, study.config.vocab_cap)?;
    // Everything that can be checked before training is, before anything is written.
    let estimate = study::preflight(&study, &external, &corpus, &dir, jobs, &device)?;
    if a.check {
        println!(
            "study {} ({}, preset {}): valid; about {} of memory per run ({} replica(s)) × {jobs} job(s); data {} ({} words); nothing written",
            study.name,
            study.kind.as_str(),
            study.preset,
            evoattn::train::memory::human(estimate.total()),
            estimate.replicas,
            dir.display(),
            corpus.vocab.len()
        );
        return Ok(());
    }
    let planner = Planner::new(
        study.config.clone(),
        corpus.fingerprint(),
        study.max_replicas,
    );
    let text = std::fs::read(&a.study)
        .with_context(|| format!("cannot read the study file {}", a.study.display()))?;
    let store = Store::open(&a.store, &study.name)?;
    study::check_space_version(&study, &store)?;
    store.write_study_file(&text)?;
    store.write_meta(&StoreMeta {
        data_fingerprint: planner.data_fingerprint.clone(),
        engine_version: version::ENGINE_VERSION,
        evoattn_version: version::CRATE_VERSION.into(),
        gene_space_version: evoattn::gene::SPACE_VERSION,
        git_commit: version::GIT_COMMIT.into(),
        kind: study.kind.as_str().into(),
        study: study.name.clone(),
        study_file: a.study.display().to_string(),
        study_sha256: study.file_sha256.clone(),
    })?;
    let dev_name = device_name(&device);
    eprintln!(
        "study {} ({}, preset {}): store {}, {jobs} job(s) × {threads_per_job} thread(s) on {dev_name}{}",
        study.name,
        study.kind.as_str(),
        study.preset,
        store.dir.display(),
        if shard.1 > 1 { format!(", shard {}/{}", shard.0, shard.1) } else { String::new() }
    );
    let start = Instant::now();
    let hardware = match &device {
        candle_core::Device::Cpu => evoattn::cpu::hardware(),
        _ => evoattn::cpu::gpu_name(
            a.device
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        ),
    };
    // From here on a signal checkpoints the runs in flight and stops (exit 75).
    evoattn::interrupt::install().context("cannot install the SIGTERM/SIGINT handlers")?;
    let opts = ExecOptions {
        jobs,
        threads_per_job,
        device,
        device_name: dev_name,
        shard,
        quiet: a.quiet,
        checkpoint_every: a.checkpoint_every.unwrap_or(study.checkpoint_every),
        save_weights: study.save_weights,
        hardware,
        pack_order: a.pack_order,
    };
    let mut exec = Executor::new(&study, store, planner, &corpus, opts);
    let driven = study::drive(&study, external, &mut exec)?;
    let n = exec.store.consolidate(&driven.unit_ids())?;
    if let Some(ev) = &driven.evolve {
        exec.store.write_generations(&ev.rows)?;
    }
    if let Some(r) = &driven.race {
        exec.store.write_race(&r.rows)?;
    }
    println!("{}", study::summary_table(&driven, &exec.store));
    eprintln!(
        "{} unit(s) trained now, {} reused from the store; {n} row(s) in {} ({:.0} s)",
        exec.trained,
        exec.reused,
        exec.store.dir.join("runs.parquet").display(),
        start.elapsed().as_secs_f64()
    );
    // Failures of this plan's packs, by this process or another one, that are not finished.
    let planned: std::collections::HashSet<String> = driven.unit_ids().into_iter().collect();
    let failures: Vec<_> = exec
        .store
        .failures()
        .into_iter()
        .filter(|f| f.unit_ids.iter().any(|u| planned.contains(u)))
        .filter(|f| f.unit_ids.iter().any(|u| !exec.store.is_done(u)))
        .collect();
    if !failures.is_empty() {
        for f in &failures {
            eprintln!(
                "failed: {} run {} seeds {:?} (pid {} on {}, {}): {} — {}",
                f.stage,
                f.gene,
                f.seeds,
                f.pid,
                f.host,
                f.at,
                f.message,
                exec.store
                    .dir
                    .join("failed")
                    .join(format!("{}.json", f.pack_id))
                    .display()
            );
        }
        return Err(PacksFailed {
            runs: failures.len(),
            units: failures.iter().map(|f| f.unit_ids.len()).sum(),
        }
        .into());
    }
    if driven.complete && a.no_report {
        eprintln!("the study is complete; no report written (--no-report)");
    } else if driven.complete {
        let out = evoattn::report::write_for_store(&exec.store.dir, &Default::default())?;
        eprintln!("report: {}", out.display());
    } else {
        eprintln!(
            "the study is not complete: other shards still have units to run; rerun `evoattn run {}` (any shard) after they finish to complete it",
            a.study.display()
        );
    }
    Ok(())
}
