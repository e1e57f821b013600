//! The `evoattn` command line: clap definitions here, one file per command family, and
//! [`output`] for printing. Commands parse and print; the work is in the library.

pub mod bench;
pub mod data;
pub mod genes;
pub mod output;
pub mod report;
pub mod run;
pub mod simulate;
pub mod slurm;
pub mod stats;
pub mod status;
pub mod train;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use evoattn::data::Corpus;
use evoattn::train::{Preset, TrainConfig};
use std::path::PathBuf;

/// The command line.
#[derive(Parser)]
#[command(
    name = "evoattn",
    version,
    about = "Is softmax attention optimal? Evolve, replicate and test attention mechanisms."
)]
pub struct Cli {
    /// Threads for CPU kernels (default: all cores; on the 2-core dev machine two threads
    /// beat one for a single run in every measured round).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// The command.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The commands.
#[derive(Subcommand)]
pub enum Cmd {
    /// List the genes of the attention gene space.
    Genes(genes::GenesArgs),
    /// Inspect or download WikiText-2.
    #[command(subcommand)]
    Data(data::DataCmd),
    /// Train one model per seed of a gene and report validation and test perplexity.
    Train(train::TrainArgs),
    /// Measure training tokens/s (warm-up excluded).
    Bench(bench::BenchArgs),
    /// Statistical tests on numbers given on the command line.
    #[command(subcommand)]
    Stats(stats::StatsCmd),
    /// Run a study file: plan, train what is missing, store, summarise. Resumable.
    Run(run::RunArgs),
    /// Show a study's units: done, claimed by a running process, pending.
    Status(status::StatusArgs),
    /// Write a study's significance report (Markdown) and tests.parquet from its store.
    Report(report::ReportArgs),
    /// Show each preset's settings and a gene's parameter counts under it.
    Presets(genes::PresetsArgs),
    /// Simulate a study's search on a fitness landscape: how often it picks the true best.
    Simulate(simulate::SimulateArgs),
    /// Run a study on a Slurm cluster: submit an array of tasks and a final job; status.
    #[command(subcommand)]
    Slurm(slurm::SlurmCmd),
}

/// Threads per run and concurrent runs: a study runs `jobs` runs at once with
/// threads/jobs threads each; other commands one run with every thread.
pub fn threads_and_jobs(cli: &Cli) -> (usize, usize) {
    let threads = match (
        cli.threads,
        std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse().ok()),
    ) {
        (Some(t), _) => t,
        (None, Some(t)) => t,
        (None, None) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    match &cli.cmd {
        Cmd::Run(a) => {
            let cuda = a.device != "cpu";
            let jobs = a
                .jobs
                .unwrap_or(if cuda { 1 } else { threads.max(1) })
                .max(1);
            ((threads / jobs).max(1), jobs)
        }
        _ => (threads.max(1), 1),
    }
}

/// Most `--threads` and `--jobs` accepted.
pub const MAX_THREADS: usize = 1024;

/// Runs the command.
pub fn dispatch(cli: &Cli) -> Result<()> {
    let jobs_flag = match &cli.cmd {
        Cmd::Run(a) => a.jobs,
        _ => None,
    };
    for (flag, v) in [("--threads", cli.threads), ("--jobs", jobs_flag)] {
        if let Some(v) = v {
            if !(1..=MAX_THREADS).contains(&v) {
                bail!("{flag} {v} is out of range: give between 1 and {MAX_THREADS}");
            }
        }
    }
    let (threads, jobs) = threads_and_jobs(cli);
    evoattn::cpu::init_threads(threads);
    match &cli.cmd {
        Cmd::Genes(a) => genes::genes(a),
        Cmd::Data(c) => data::run(c),
        Cmd::Train(a) => train::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Presets(a) => genes::presets(a),
        Cmd::Stats(c) => stats::run(c),
        Cmd::Run(a) => run::run(a, threads, jobs),
        Cmd::Status(a) => status::status(a),
        Cmd::Report(a) => report::run(a),
        Cmd::Simulate(a) => simulate::run(a),
        Cmd::Slurm(c) => slurm::run(c),
    }
}

/// Settings shared by `train` and `bench`.
#[derive(Args)]
pub struct Common {
    /// Preset: smoke, cpu or seed.
    #[arg(long, default_value = "cpu")]
    pub preset: String,
    /// Override a preset field, e.g. --set d_model=96 --set steps=800 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Data directory (default: EVOATTN_DATA, else the default data directory).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl Common {
    /// The preset with the `--set` overrides.
    pub fn config(&self) -> Result<TrainConfig> {
        let mut cfg = self.preset.parse::<Preset>()?.config();
        for s in &self.set {
            cfg.apply(s)
                .map_err(|e| anyhow::anyhow!("--set {s}: {e:#}"))?;
        }
        // One check once every --set is in: the error names the flag of the first setting
        // the rule involves.
        if let Err(e) = cfg.check() {
            let flag = e.keys().into_iter().find_map(|k| {
                self.set
                    .iter()
                    .find(|s| s.split_once('=').is_some_and(|(key, _)| key.trim() == k))
            });
            match flag {
                Some(f) if f.split_once('=').is_some_and(|(k, _)| k.trim() == e.key) => {
                    bail!("--set {f}: {e}")
                }
                Some(f) => bail!(
                    "--set {f}: {e} ({} is preset {}'s; --set it too)",
                    e.key,
                    self.preset
                ),
                None => bail!("preset {}: {e}", self.preset),
            }
        }
        Ok(cfg)
    }

    /// Checks `cfg` against the corpus loaded from `--data` and refuses a run of
    /// `replicas` replicas that cannot fit in the device's memory.
    pub fn preflight(
        &self,
        cfg: &TrainConfig,
        corpus: &Corpus,
        replicas: usize,
        device: &Device,
    ) -> Result<()> {
        let dir = evoattn::data::resolve_data_dir(self.data.as_deref());
        cfg.check_data(corpus).map_err(|e| {
            let origin = self
                .set
                .iter()
                .find(|s| {
                    s.split_once('=')
                        .is_some_and(|(key, _)| key.trim() == e.key)
                })
                .map_or_else(
                    || format!("preset {}", self.preset),
                    |s| format!("--set {s}"),
                );
            anyhow::anyhow!("{origin}: {e} (data: {})", dir.display())
        })?;
        evoattn::train::memory::check_fits(cfg, corpus.vocab.len(), replicas, 1, device)?;
        Ok(())
    }
    /// The corpus under the configuration's vocabulary cap (fetched if needed).
    pub fn corpus(&self, cfg: &TrainConfig) -> Result<Corpus> {
        let dir = evoattn::data::data_dir_or_fetch(self.data.as_deref())?;
        Corpus::load(&dir, cfg.vocab_cap)
    }
}

/// `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let n: usize = s
                .strip_prefix("cuda:")
                .unwrap_or("0")
                .parse()
                .context("device must be cpu, cuda or cuda:N")?;
            if !candle_core::utils::cuda_is_available() {
                bail!("device {s} asked for, but this binary was built without CUDA: rebuild with `cargo build --release --features cuda`");
            }
            Ok(Device::new_cuda(n)?)
        }
        other => bail!("unknown device `{other}`: use cpu, cuda or cuda:N"),
    }
}

/// The device's name in tables and the store.
pub fn device_name(d: &Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}

/// A comma-separated list of distinct seeds.
pub fn parse_seeds(s: &str) -> Result<Vec<u64>> {
    let seeds: Vec<u64> = s
        .split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| {
            x.trim()
                .parse::<u64>()
                .with_context(|| format!("seed `{x}` is not a non-negative integer"))
        })
        .collect::<Result<_>>()?;
    if seeds.is_empty() {
        bail!("--seeds is empty: give at least one seed, e.g. --seeds 1,2,3");
    }
    let mut sorted = seeds.clone();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != seeds.len() {
        bail!("--seeds lists a seed twice: {s}");
    }
    Ok(seeds)
}
