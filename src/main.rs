//! The `evoattn` command line. Only argument parsing and printing live here.

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use evoattn::data::{self, Corpus};
use evoattn::gene::Gene;
use evoattn::model::Transformer;
use evoattn::stats::{self, compare, multitest, Alternative};
use evoattn::study::{self, plan::Planner, spec::Study, store::Store};
use evoattn::train::{self, Preset, Progress, RunOptions, TrainConfig};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "evoattn",
    version,
    about = "Is softmax attention optimal? Evolve, replicate and test attention mechanisms."
)]
struct Cli {
    /// Threads for CPU kernels (default: all cores; on the 2-core dev machine two threads
    /// beat one for a single run in every measured round).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the 720 genes of the attention gene space.
    Genes {
        /// Print only the number of genes.
        #[arg(long)]
        count: bool,
        /// One JSON object per gene.
        #[arg(long)]
        json: bool,
    },
    /// Inspect or download WikiText-2.
    #[command(subcommand)]
    Data(DataCmd),
    /// Train one model per seed of a gene and report validation and test perplexity.
    Train(TrainArgs),
    /// Measure training tokens/s (warm-up excluded).
    Bench(BenchArgs),
    /// Statistical tests on numbers given on the command line.
    #[command(subcommand)]
    Stats(StatsCmd),
    /// Run a study file: plan, train what is missing, store, summarise. Resumable.
    Run(RunArgs),
    /// Show a study's units: done, claimed by a running process, pending.
    Status(StatusArgs),
    /// Write a study's significance report (Markdown) and tests.parquet from its store.
    Report(ReportArgs),
    /// Show each preset's settings and a gene's parameter counts under it.
    Presets {
        #[arg(long, default_value = "dot+softmax+none+fixed")]
        gene: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DataCmd {
    /// Token counts, vocabulary size and checksums of the data directory.
    Info {
        #[arg(long)]
        data: Option<PathBuf>,
        /// Cap the vocabulary as a preset would (vocab_size and unigram perplexity follow it).
        #[arg(long)]
        vocab_cap: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Download the tokenized WikiText-2 release, verifying SHA-256.
    Fetch {
        /// Target directory (default: EVOATTN_DATA, else the default data directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Base URL serving train.txt/valid.txt/test.txt, tried before the built-in mirrors.
        #[arg(long)]
        mirror: Vec<String>,
        /// Only use the --mirror URLs.
        #[arg(long)]
        no_default_mirrors: bool,
    },
}

#[derive(Subcommand)]
enum StatsCmd {
    /// Compare two samples: t-tests, rank tests, effect sizes, interval of the difference.
    Compare {
        /// Comma-separated sample x, e.g. 99.8,99.5,100.2.
        #[arg(long, allow_hyphen_values = true)]
        x: String,
        #[arg(long, allow_hyphen_values = true)]
        y: String,
        /// x[i] and y[i] come from the same seed: add the paired t and Wilcoxon tests.
        #[arg(long)]
        paired: bool,
        /// two-sided, less (x smaller) or greater.
        #[arg(long, default_value = "two-sided")]
        alternative: String,
        #[arg(long, default_value_t = 0.05)]
        alpha: f64,
        /// Seed of the bootstrap interval and of ASO's bootstrap.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Bootstrap resamples of the BCa interval of the difference.
        #[arg(long, default_value_t = 10_000)]
        resamples: usize,
        /// Larger values are better (default: lower is better, as for perplexity).
        #[arg(long)]
        higher_is_better: bool,
        #[arg(long)]
        json: bool,
    },
    /// Adjust p-values for multiple comparisons.
    Adjust {
        #[arg(long)]
        p: String,
        /// holm, bonferroni or bh.
        #[arg(long, default_value = "holm")]
        method: String,
        #[arg(long, default_value_t = 0.05)]
        alpha: f64,
        #[arg(long)]
        json: bool,
    },
    /// Compare k groups: one-way ANOVA, Kruskal–Wallis and (with --blocked) Friedman.
    Kgroups {
        /// Groups separated by `;`, values by `,`, e.g. "1,2,3;4,5,6;7,8,9".
        #[arg(long, allow_hyphen_values = true)]
        groups: String,
        /// Group j's i-th value is seed i: add the Friedman test over seed blocks.
        #[arg(long)]
        blocked: bool,
        #[arg(long)]
        json: bool,
    },
    /// Two-way ANOVA with interaction (type II) over a runs table (Parquet or CSV).
    Anova {
        /// runs.parquet or a .csv file with a header.
        #[arg(long)]
        file: PathBuf,
        /// Response column (rows where it is null are dropped, e.g. diverged runs).
        #[arg(long, default_value = "val_ppl")]
        response: String,
        /// Two factor columns, comma-separated, e.g. normalization,gating.
        #[arg(long)]
        factors: String,
        #[arg(long)]
        json: bool,
    },
    /// Power of the two-sample t-test, or the n per group for a target power, or (without
    /// --effect) the minimum detectable effect at n and power.
    Power {
        /// Standardized effect (Cohen's d).
        #[arg(long, allow_hyphen_values = true)]
        effect: Option<f64>,
        /// Observations per group.
        #[arg(long)]
        n: Option<f64>,
        /// Target power.
        #[arg(long)]
        power: Option<f64>,
        #[arg(long, default_value_t = 0.05)]
        alpha: f64,
        #[arg(long)]
        json: bool,
    },
    /// n, mean, sd and the t interval of the mean.
    Describe {
        #[arg(long, allow_hyphen_values = true)]
        x: String,
        #[arg(long, default_value_t = 0.95)]
        level: f64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct Common {
    /// Preset: smoke, cpu or seed.
    #[arg(long, default_value = "cpu")]
    preset: String,
    /// Override a preset field, e.g. --set d_model=96 --set steps=800 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Data directory (default: EVOATTN_DATA, else the default data directory).
    #[arg(long)]
    data: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
struct TrainArgs {
    /// Gene, e.g. dot+sparsemax+output_gate+learned.
    #[arg(long)]
    gene: String,
    /// Comma-separated seeds; one replica per seed, trained together.
    #[arg(long, default_value = "1")]
    seeds: String,
    #[command(flatten)]
    common: Common,
    /// One JSON line per seed on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct RunArgs {
    /// Study file (TOML), e.g. studies/quickstart.toml.
    study: PathBuf,
    /// Store root; the study writes under STORE/<name>/.
    #[arg(long, default_value = "runs")]
    store: PathBuf,
    /// Concurrent runs in this process (default: one per core on CPU, 1 on CUDA).
    #[arg(long)]
    jobs: Option<usize>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Run only share i of n (0-based), e.g. --shard 0/2; shards split a study over processes.
    #[arg(long)]
    shard: Option<String>,
    /// Data directory (default: EVOATTN_DATA, else the default data directory, fetched if empty).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Log lines instead of progress bars.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct ReportArgs {
    /// A study file (its store under --store) or a study's store folder.
    target: PathBuf,
    /// Store root (with a study file).
    #[arg(long, default_value = "runs")]
    store: PathBuf,
    /// Where to write the report (default: report.md in the study's store folder).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Another search's store folder (e.g. a random search) to plot against this one at
    /// equal budget (best fitness so far against runs trained).
    #[arg(long, value_name = "STORE_DIR")]
    compare_search: Option<PathBuf>,
}

#[derive(Args)]
struct StatusArgs {
    /// Study file (TOML).
    study: PathBuf,
    /// Store root.
    #[arg(long, default_value = "runs")]
    store: PathBuf,
    /// Data directory (default: EVOATTN_DATA, else the default data directory).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchArgs {
    #[arg(long, default_value = "dot+softmax+none+fixed")]
    gene: String,
    /// Replicas trained together.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Timed steps (after 2 warm-up steps).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    #[command(flatten)]
    common: Common,
    #[arg(long)]
    json: bool,
}

fn parse_device(s: &str) -> Result<Device> {
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

fn device_name(d: &Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}

fn parse_seeds(s: &str) -> Result<Vec<u64>> {
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

impl Common {
    fn config(&self) -> Result<TrainConfig> {
        let mut cfg = self.preset.parse::<Preset>()?.config();
        for s in &self.set {
            cfg.set(s)?;
        }
        Ok(cfg)
    }
    fn corpus(&self, cfg: &TrainConfig) -> Result<Corpus> {
        let dir = data::data_dir_or_fetch(self.data.as_deref())?;
        Corpus::load(&dir, cfg.vocab_cap)
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into())
}

fn step_bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    pb
}

fn cmd_train(a: &TrainArgs) -> Result<()> {
    let gene: Gene = a.gene.parse()?;
    let seeds = parse_seeds(&a.seeds)?;
    let cfg = a.common.config()?;
    let device = parse_device(&a.common.device)?;
    let corpus = a.common.corpus(&cfg)?;
    let pb = step_bar(cfg.steps as u64, a.quiet);
    pb.set_prefix(gene.to_string());
    let mut cb = |p: Progress| {
        pb.set_position(p.step as u64);
        pb.set_message(format!("loss {:.3} {:.0} tok/s", p.loss, p.tokens_per_s));
    };
    let out = train::train(
        gene,
        &cfg,
        &corpus,
        &seeds,
        &device,
        RunOptions {
            on_step: Some(&mut cb),
            ..Default::default()
        },
    )?;
    pb.finish_and_clear();
    if a.json {
        for s in &out.seeds {
            println!(
                "{}",
                json!({
                    "gene": gene.to_string(), "seed": s.seed, "params_total": out.params_total,
                    "params_nonembed": out.params_nonembed, "steps": out.steps, "diverged_at": s.diverged_at,
                    "train_loss": s.train_loss, "val_ppl": s.val_ppl, "test_ppl": s.test_ppl,
                    "tokens_per_s": out.tokens_per_s, "wall_s": out.wall_s,
                })
            );
        }
    } else {
        println!(
            "{:<36} {:>6} {:>9} {:>9} {:>6} {:>9} {:>10} {:>9} {:>9}",
            "gene",
            "seed",
            "params",
            "nonembed",
            "steps",
            "diverged",
            "train_loss",
            "val_ppl",
            "test_ppl"
        );
        for s in &out.seeds {
            println!(
                "{:<36} {:>6} {:>9} {:>9} {:>6} {:>9} {:>10.4} {:>9} {:>9}",
                gene.to_string(),
                s.seed,
                out.params_total,
                out.params_nonembed,
                out.steps,
                s.diverged_at
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "-".into()),
                s.train_loss,
                fmt_opt(s.val_ppl),
                fmt_opt(s.test_ppl)
            );
        }
        println!(
            "{:.0} training tokens/s over {} replica(s); wall {:.1} s",
            out.tokens_per_s,
            seeds.len(),
            out.wall_s
        );
    }
    Ok(())
}

fn cmd_bench(a: &BenchArgs) -> Result<()> {
    let gene: Gene = a.gene.parse()?;
    if a.replicas == 0 || a.steps == 0 {
        bail!("--replicas and --steps must be at least 1");
    }
    let cfg = a.common.config()?;
    let device = parse_device(&a.common.device)?;
    let corpus = a.common.corpus(&cfg)?;
    let warm = 2usize;
    let seeds: Vec<u64> = (1..=a.replicas as u64).collect();
    let mut marks: Vec<Instant> = Vec::new();
    let mut cb = |p: Progress| {
        if p.step == warm || p.step == warm + a.steps {
            marks.push(Instant::now());
        }
    };
    let mut run_cfg = cfg.clone();
    run_cfg.steps = run_cfg.steps.max(warm + a.steps);
    train::train(
        gene,
        &run_cfg,
        &corpus,
        &seeds,
        &device,
        RunOptions {
            on_step: Some(&mut cb),
            max_steps: Some(warm + a.steps),
            skip_eval: true,
            poison: None,
            eval_test: false,
        },
    )?;
    let secs = marks[1].duration_since(marks[0]).as_secs_f64();
    let tps = (a.steps * a.replicas * cfg.batch_size * cfg.seq_len) as f64 / secs;
    if a.json {
        println!(
            "{}",
            json!({"preset": a.common.preset, "gene": gene.to_string(), "replicas": a.replicas, "steps": a.steps,
                   "tokens_per_s": tps, "device": device_name(&device),
                   "threads": candle_core::utils::get_num_threads()})
        );
    } else {
        println!(
            "{} on {} ({} preset, R={}, {} threads): {:.0} training tokens/s ({:.3} s/step)",
            gene,
            device_name(&device),
            a.common.preset,
            a.replicas,
            candle_core::utils::get_num_threads(),
            tps,
            secs / a.steps as f64
        );
    }
    Ok(())
}

fn cmd_genes(count: bool, json_out: bool) -> Result<()> {
    use std::io::Write;
    let all = Gene::all();
    let mut out = std::io::stdout().lock();
    if count {
        writeln!(out, "{}", all.len())?;
        return Ok(());
    }
    let cfg = Preset::Seed.config().model(33278);
    for g in &all {
        let (total, nonembed) = Transformer::param_counts(*g, &cfg);
        if json_out {
            writeln!(
                out,
                "{}",
                json!({"id": g.short_id(), "gene": g.to_string(), "similarity": g.similarity, "normalization": g.normalization,
                       "gating": g.gating, "temperature": g.temperature, "params_nonembed_seed": nonembed, "params_total_seed": total})
            )?;
        }
    }
    if !json_out {
        writeln!(
            out,
            "{:<5} {:<12} {:<14} {:<12} {:<13} {:>16}",
            "id", "similarity", "normalization", "gating", "temperature", "nonembed (seed)"
        )?;
        for g in &all {
            let (_, nonembed) = Transformer::param_counts(*g, &cfg);
            writeln!(
                out,
                "{:<5} {:<12} {:<14} {:<12} {:<13} {:>16}",
                g.short_id(),
                g.similarity.as_str(),
                g.normalization.as_str(),
                g.gating.as_str(),
                g.temperature.as_str(),
                nonembed
            )?;
        }
    }
    Ok(())
}

/// Vocabulary size of WikiText-2 under a preset's cap (the full vocabulary is 33,278 words).
fn preset_vocab(cfg: &TrainConfig) -> usize {
    const FULL: usize = 33_278;
    cfg.vocab_cap.map_or(FULL, |c| c.min(FULL))
}

fn cmd_presets(gene: &str, json_out: bool) -> Result<()> {
    let gene: Gene = gene.parse()?;
    for p in Preset::ALL {
        let cfg = p.config();
        let vocab = preset_vocab(&cfg);
        let (total, nonembed) = Transformer::param_counts(gene, &cfg.model(vocab));
        if json_out {
            println!(
                "{}",
                json!({"preset": p.to_string(), "gene": gene.to_string(), "vocab_size": vocab,
                       "params_total": total, "params_nonembed": nonembed, "config": cfg})
            );
        } else {
            println!(
                "{:<6} vocab {vocab:>6}  d {:>3}  layers {}  heads {}  seq {:>3}  batch {:>3}  steps {:>5}  lr {:.0e}  params {total} total / {nonembed} non-embedding ({gene})",
                p.to_string(), cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.seq_len, cfg.batch_size, cfg.steps, cfg.lr
            );
        }
    }
    Ok(())
}

fn parse_numbers(name: &str, s: &str) -> Result<Vec<f64>> {
    let v: Vec<f64> = s
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            t.trim()
                .parse::<f64>()
                .with_context(|| format!("--{name}: `{t}` is not a number"))
        })
        .collect::<Result<_>>()?;
    if v.is_empty() {
        bail!("--{name} is empty: give comma-separated numbers, e.g. --{name} 1.2,3.4");
    }
    Ok(v)
}

fn check_level(name: &str, v: f64) -> Result<()> {
    if !(v > 0.0 && v < 1.0) {
        bail!("--{name} must be between 0 and 1, got {v}");
    }
    Ok(())
}

fn cmd_stats(c: &StatsCmd) -> Result<()> {
    match c {
        StatsCmd::Compare {
            x,
            y,
            paired,
            alternative,
            alpha,
            seed,
            resamples,
            higher_is_better,
            json: j,
        } => {
            let (x, y) = (parse_numbers("x", x)?, parse_numbers("y", y)?);
            let alt: Alternative = alternative.parse()?;
            check_level("alpha", *alpha)?;
            if *resamples == 0 {
                bail!("--resamples must be at least 1 (default 10000)");
            }
            let r = compare::compare(
                &x,
                &y,
                *paired,
                alt,
                1.0 - alpha,
                *higher_is_better,
                compare::Resampling {
                    resamples: *resamples,
                    seed: *seed,
                },
            )?;
            if *j {
                println!("{}", r.to_json());
                return Ok(());
            }
            println!(
                "x: n={} mean={:.6}   y: n={} mean={:.6}   diff (x − y) = {:.6}",
                r.n_x, r.mean_x, r.n_y, r.mean_y, r.diff
            );
            println!(
                "{:.0}% CI of the difference (Welch): [{:.6}, {:.6}]",
                100.0 * r.ci_diff.level,
                r.ci_diff.low,
                r.ci_diff.high
            );
            println!(
                "{:.0}% CI of the difference (BCa bootstrap, {} resamples, seed {seed}): [{:.6}, {:.6}]",
                100.0 * r.bootstrap_ci_diff.level,
                r.bootstrap_ci_diff.resamples,
                r.bootstrap_ci_diff.low,
                r.bootstrap_ci_diff.high
            );
            println!(
                "ASO (x better than y): violation ratio {:.4}, epsilon_min {:.4} ({})",
                r.aso.violation_ratio,
                r.aso.epsilon_min,
                if r.aso.epsilon_min < 0.2 {
                    "x almost stochastically dominates y (< 0.2)"
                } else if r.aso.epsilon_min < 0.5 {
                    "x better under the lenient 0.5 threshold only"
                } else {
                    "no almost-stochastic dominance of x"
                }
            );
            println!(
                "{:<26} {:>12} {:>10} {:>12}  ({alternative})",
                "test", "statistic", "df", "p-value"
            );
            let row = |name: &str, s: f64, df: Option<f64>, p: f64| {
                println!(
                    "{name:<26} {s:>12.6} {:>10} {p:>12.4e}",
                    df.map(|d| format!("{d:.3}")).unwrap_or_else(|| "-".into())
                );
            };
            row("welch", r.welch.statistic, Some(r.welch.df), r.welch.pvalue);
            row(
                "student",
                r.student.statistic,
                Some(r.student.df),
                r.student.pvalue,
            );
            row(
                &format!("mann-whitney ({})", r.mann_whitney.method),
                r.mann_whitney.statistic,
                None,
                r.mann_whitney.pvalue,
            );
            if let Some(t) = &r.paired_t {
                row("paired t", t.statistic, Some(t.df), t.pvalue);
            }
            if let Some(w) = &r.wilcoxon {
                row(
                    &format!("wilcoxon ({})", w.method),
                    w.statistic,
                    None,
                    w.pvalue,
                );
            }
            let e = &r.effect;
            println!(
                "effect sizes: Cohen's d {:.4}, Hedges' g {:.4}, Cliff's delta {:.4}, A12 {:.4}, P(x better) {:.4}",
                e.cohens_d, e.hedges_g, e.cliffs_delta, e.a12, e.prob_improvement
            );
            let main_p = r.paired_t.as_ref().map_or(r.welch.pvalue, |t| t.pvalue);
            let test = if r.paired_t.is_some() {
                "paired t"
            } else {
                "Welch"
            };
            let better = if *higher_is_better {
                r.diff > 0.0
            } else {
                r.diff < 0.0
            };
            if main_p <= *alpha {
                println!(
                    "verdict: x is {} than y by {:.4} ({test} p = {main_p:.3e} ≤ α = {alpha}); x is {}",
                    if r.diff < 0.0 { "lower" } else { "higher" },
                    r.diff.abs(),
                    if better { "better" } else { "worse" }
                );
            } else {
                println!(
                    "verdict: no detectable difference at α = {alpha} ({test} p = {main_p:.3e})"
                );
            }
            Ok(())
        }
        StatsCmd::Adjust {
            p,
            method,
            alpha,
            json: j,
        } => {
            let p = parse_numbers("p", p)?;
            let m: multitest::Method = method.parse()?;
            check_level("alpha", *alpha)?;
            let adj = multitest::adjust(&p, m)?;
            let rej = multitest::reject(&adj, *alpha);
            if *j {
                let adjusted: Vec<serde_json::Value> =
                    adj.iter().map(|&v| compare::jnum(v)).collect();
                println!(
                    "{}",
                    json!({"method": method, "alpha": alpha, "adjusted": adjusted, "reject": rej})
                );
            } else {
                println!("{:>4} {:>12} {:>12} {:>7}", "#", "p", "adjusted", "reject");
                for (i, ((a, b), r)) in p.iter().zip(&adj).zip(&rej).enumerate() {
                    println!(
                        "{i:>4} {a:>12.4e} {b:>12.4e} {:>7}",
                        if *r { "yes" } else { "no" }
                    );
                }
                println!(
                    "{} of {} rejected at α = {alpha} ({method})",
                    rej.iter().filter(|r| **r).count(),
                    rej.len()
                );
            }
            Ok(())
        }
        StatsCmd::Kgroups {
            groups,
            blocked,
            json: j,
        } => {
            use evoattn::stats::kgroups;
            let gs: Vec<Vec<f64>> = groups
                .split(';')
                .enumerate()
                .map(|(i, g)| parse_numbers(&format!("groups (group {})", i + 1), g))
                .collect::<Result<_>>()?;
            if gs.len() < 2 {
                bail!("--groups needs at least 2 groups separated by `;`, e.g. \"1,2,3;4,5,6\"");
            }
            for (i, g) in gs.iter().enumerate() {
                stats::check_finite(&format!("group {}", i + 1), g)?;
            }
            let a = kgroups::anova_oneway(&gs);
            let k = kgroups::kruskal(&gs);
            let f = if *blocked {
                Some((kgroups::friedman(&gs)?, kgroups::conover_friedman(&gs)?))
            } else {
                None
            };
            let jn = compare::jnum;
            if *j {
                let mut v = json!({
                    "anova": {"statistic": jn(a.statistic), "pvalue": jn(a.pvalue), "df_between": jn(a.df_between), "df_within": jn(a.df_within)},
                    "kruskal": {"statistic": jn(k.statistic), "pvalue": jn(k.pvalue)},
                });
                if let Some((f, post)) = &f {
                    let ph: Vec<serde_json::Value> = post
                        .iter()
                        .map(|p| json!({"a": p.a, "b": p.b, "pvalue": jn(p.pvalue), "pvalue_unadjusted": jn(p.pvalue_unadjusted)}))
                        .collect();
                    v["friedman"] = json!({"statistic": jn(f.statistic), "pvalue": jn(f.pvalue), "posthoc": ph,
                                           "posthoc_method": "conover, holm-adjusted"});
                }
                println!("{v}");
            } else {
                println!(
                    "one-way ANOVA   F({}, {}) = {:.6}  p = {:.4e}",
                    a.df_between, a.df_within, a.statistic, a.pvalue
                );
                println!(
                    "Kruskal-Wallis  H = {:.6}  p = {:.4e}",
                    k.statistic, k.pvalue
                );
                if let Some((f, post)) = &f {
                    println!(
                        "Friedman        chi2({}) = {:.6}  p = {:.4e}",
                        f.df_between, f.statistic, f.pvalue
                    );
                    println!("Conover post-hoc (groups numbered from 0, Holm-adjusted p):");
                    for p in post {
                        println!(
                            "  {} vs {}  p = {:.4e}{}",
                            p.a,
                            p.b,
                            p.pvalue,
                            if p.pvalue <= 0.05 { "  differ" } else { "" }
                        );
                    }
                }
            }
            Ok(())
        }
        StatsCmd::Anova {
            file,
            response,
            factors,
            json: j,
        } => cmd_anova(file, response, factors, *j),
        StatsCmd::Power {
            effect,
            n,
            power,
            alpha,
            json: j,
        } => cmd_power(*effect, *n, *power, *alpha, *j),
        StatsCmd::Describe { x, level, json: j } => {
            let x = parse_numbers("x", x)?;
            check_level("level", *level)?;
            let d = stats::describe(&x, *level);
            if *j {
                println!("{}", compare::describe_json(&d));
            } else {
                println!(
                    "n {}  mean {:.6}  sd {:.6}  {:.0}% CI [{:.6}, {:.6}]",
                    d.n,
                    d.mean,
                    d.sd,
                    100.0 * level,
                    d.ci.low,
                    d.ci.high
                );
            }
            Ok(())
        }
    }
}

fn read_table(file: &std::path::Path) -> Result<polars::prelude::DataFrame> {
    use polars::prelude::*;
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "parquet" => study::store::read_parquet(file),
        "csv" => CsvReadOptions::default()
            .with_has_header(true)
            .try_into_reader_with_file_path(Some(file.to_path_buf()))
            .and_then(|r| r.finish())
            .map_err(|e| anyhow::anyhow!("cannot read {} as CSV: {e}", file.display())),
        _ => bail!(
            "{}: unknown table format; give a .parquet or .csv file",
            file.display()
        ),
    }
}

fn cmd_anova(file: &std::path::Path, response: &str, factors: &str, j: bool) -> Result<()> {
    use polars::prelude::*;
    let df = read_table(file)?;
    let names: Vec<&str> = factors
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if names.len() != 2 {
        bail!("--factors needs exactly two column names, e.g. --factors normalization,gating");
    }
    let col = |name: &str| {
        df.column(name).map_err(|_| {
            let cols: Vec<String> = df
                .get_column_names()
                .iter()
                .map(|c| c.to_string())
                .collect();
            anyhow::anyhow!(
                "{} has no column `{name}`; columns: {}",
                file.display(),
                cols.join(", ")
            )
        })
    };
    let y = col(response)?
        .cast(&DataType::Float64)
        .map_err(|e| anyhow::anyhow!("column `{response}` is not numeric: {e}"))?;
    let y: Vec<Option<f64>> = y.f64()?.iter().collect();
    let fa = col(names[0])?.cast(&DataType::String)?;
    let fb = col(names[1])?.cast(&DataType::String)?;
    let (fa, fb) = (fa.str()?, fb.str()?);
    let mut ys = Vec::new();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut dropped = 0;
    for (i, &yi) in y.iter().enumerate() {
        match (yi, fa.get(i), fb.get(i)) {
            (Some(v), Some(p), Some(q)) if v.is_finite() => {
                ys.push(v);
                a.push(p.to_string());
                b.push(q.to_string());
            }
            _ => dropped += 1,
        }
    }
    let terms = stats::anova2::anova_two_way(&ys, &a, &b, names[0], names[1])?;
    let jn = compare::jnum;
    if j {
        let t: Vec<serde_json::Value> = terms
            .iter()
            .map(|t| match (t.f, t.pvalue) {
                (Some(f), Some(p)) => json!({"term": t.term, "ss": jn(t.ss), "df": jn(t.df), "f": jn(f), "pvalue": jn(p)}),
                _ => json!({"term": t.term, "ss": jn(t.ss), "df": jn(t.df)}),
            })
            .collect();
        println!("{}", json!({"terms": t, "n": ys.len(), "dropped": dropped}));
        return Ok(());
    }
    println!(
        "two-way ANOVA (type II) of {response} on {} × {}: {} rows ({dropped} dropped: null or non-finite)",
        names[0],
        names[1],
        ys.len()
    );
    println!(
        "{:<32} {:>14} {:>6} {:>12} {:>12}",
        "term", "sum sq", "df", "F", "p-value"
    );
    for t in &terms {
        println!(
            "{:<32} {:>14.6} {:>6} {:>12} {:>12}",
            t.term,
            t.ss,
            t.df,
            t.f.map_or("".into(), |f| format!("{f:.4}")),
            t.pvalue.map_or("".into(), |p| format!("{p:.4e}"))
        );
    }
    Ok(())
}

fn cmd_power(
    effect: Option<f64>,
    n: Option<f64>,
    power: Option<f64>,
    alpha: f64,
    j: bool,
) -> Result<()> {
    use evoattn::stats::power;
    check_level("alpha", alpha)?;
    if let Some(p) = power {
        check_level("power", p)?;
    }
    if n.is_some_and(|n| n <= 1.0 || !n.is_finite()) {
        bail!("--n must be more than 1 observation per group");
    }
    let jn = compare::jnum;
    match (effect, n, power) {
        (Some(_), Some(_), Some(_)) => {
            bail!("give two of --effect, --n, --power; the third is computed")
        }
        (Some(d), n, p) if n.is_some() || p.is_some() => {
            let r = power::power_analysis(d, n, p, alpha).ok_or_else(|| {
                anyhow::anyhow!("no n up to 100,000 per group reaches power {} at effect {d}", p.unwrap_or(f64::NAN))
            })?;
            if j {
                let mut v = json!({"effect": jn(r.effect), "alpha": jn(r.alpha), "n": jn(r.n), "power": jn(r.power)});
                if let Some(c) = r.n_ceil {
                    v["n_ceil"] = json!(c);
                }
                println!("{v}");
            } else if let Some(c) = r.n_ceil {
                println!(
                    "n = {:.4} per group (use {c}) for power {} at d = {d}, alpha = {alpha} (two-sided t-test)",
                    r.n, r.power
                );
            } else {
                println!(
                    "power = {:.6} with n = {} per group at d = {d}, alpha = {alpha} (two-sided t-test)",
                    r.power, r.n
                );
            }
            Ok(())
        }
        (None, Some(n), Some(p)) => {
            let d = power::solve_effect(n, p, alpha, Alternative::TwoSided)
                .ok_or_else(|| anyhow::anyhow!("no effect up to 1000 reaches power {p} at n = {n}"))?;
            if j {
                println!("{}", json!({"effect": jn(d), "alpha": jn(alpha), "n": jn(n), "power": jn(p), "solved": "effect"}));
            } else {
                println!("minimum detectable effect d = {d:.6} with n = {n} per group at power {p}, alpha = {alpha}");
            }
            Ok(())
        }
        _ => bail!("give --effect with --n (power) or --power (n), or --n with --power (minimum detectable effect)"),
    }
}

fn cmd_data(c: &DataCmd) -> Result<()> {
    match c {
        DataCmd::Info {
            data: d,
            vocab_cap,
            json: j,
        } => {
            let dir = data::resolve_data_dir(d.as_deref());
            let corpus = Corpus::load(&dir, *vocab_cap)?;
            let (uv, ut) = (
                corpus.unigram_ppl(&corpus.valid),
                corpus.unigram_ppl(&corpus.test),
            );
            let v = json!({
                "vocab_size": corpus.vocab.len(),
                "tokens": {"train": corpus.train.len(), "valid": corpus.valid.len(), "test": corpus.test.len()},
                "sha256": {"train": corpus.sha256[0], "valid": corpus.sha256[1], "test": corpus.sha256[2]},
                "unigram_ppl": {"valid": uv, "test": ut},
            });
            if *j {
                println!("{v}");
            } else {
                println!("data directory: {}", dir.display());
                println!("vocabulary:     {}", corpus.vocab.len());
                println!(
                    "unigram ppl:    valid {uv:.1}, test {ut:.1} (add-one smoothed train unigram)"
                );
                for (i, s) in data::SPLITS.iter().enumerate() {
                    let n = corpus.split(s).map(|x| x.len()).unwrap_or(0);
                    let known = data::KNOWN_SHA256[i].1 == corpus.sha256[i];
                    println!(
                        "{s:<6} {n:>9} tokens  sha256 {} {}",
                        corpus.sha256[i],
                        if known {
                            "(standard release)"
                        } else {
                            "(NOT the standard release)"
                        }
                    );
                }
            }
            Ok(())
        }
        DataCmd::Fetch {
            dir,
            mirror,
            no_default_mirrors,
        } => {
            let dir = data::resolve_data_dir(dir.as_deref());
            let mut mirrors = mirror.clone();
            if !no_default_mirrors {
                mirrors.extend(data::fetch::MIRRORS.iter().map(|s| s.to_string()));
            }
            if mirrors.is_empty() {
                bail!("no mirror to fetch from: pass --mirror URL or drop --no-default-mirrors");
            }
            let d = data::fetch::fetch(&dir, &mirrors, true)?;
            eprintln!("WikiText-2 is in {} (checksums verified)", d.display());
            Ok(())
        }
    }
}

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
fn load_study(path: &std::path::Path) -> Result<Study> {
    Study::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn load_corpus_for(study: &Study, flag: Option<&std::path::Path>) -> Result<Corpus> {
    let dir = data::data_dir_or_fetch(flag)?;
    Corpus::load(&dir, study.config.vocab_cap)
}

fn cmd_run(a: &RunArgs, threads_per_job: usize, jobs: usize) -> Result<()> {
    let study = load_study(&a.study)?;
    let shard = parse_shard(a.shard.as_deref())?;
    let device = parse_device(&a.device)?;
    let external = study::resolve_external(&study, &a.store)?;
    let corpus = load_corpus_for(&study, a.data.as_deref())?;
    let planner = Planner::new(
        study.config.clone(),
        corpus.fingerprint(),
        study.max_replicas,
    );
    let store = Store::open(&a.store, &study.name)?;
    let meta = json!({
        "study": study.name, "kind": study.kind.as_str(), "study_file": a.study.display().to_string(),
        "study_sha256": study.file_sha256, "data_fingerprint": planner.data_fingerprint,
        "evoattn_version": env!("CARGO_PKG_VERSION"), "engine_version": evoattn::ENGINE_VERSION,
        "git_commit": study::exec::GIT_COMMIT,
    });
    let text = std::fs::read(&a.study)?;
    study::store::write_atomic(&store.dir.join("study.toml"), |f| {
        std::io::Write::write_all(f, &text).map_err(Into::into)
    })?;
    study::store::write_atomic(&store.dir.join("meta.json"), |f| {
        serde_json::to_writer_pretty(&mut *f, &meta).map_err(Into::into)
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
    let mut exec = study::exec::Executor {
        store,
        study: study.name.clone(),
        preset: study.preset.to_string(),
        planner,
        corpus: &corpus,
        opts: study::exec::ExecOptions {
            jobs,
            threads_per_job,
            device,
            device_name: dev_name,
            shard,
            quiet: a.quiet,
        },
        trained: 0,
        reused: 0,
        earlier: Default::default(),
    };
    let driven = study::drive(&study, external, &mut exec)?;
    let order = driven.unit_ids();
    let n = exec.store.consolidate(&order)?;
    if let Some(ev) = &driven.evolve {
        exec.store.write_generations(&ev.rows)?;
    }
    println!("{}", study::summary_table(&driven, &exec.store));
    eprintln!(
        "{} unit(s) trained now, {} reused from the store; {n} row(s) in {} ({:.0} s)",
        exec.trained,
        exec.reused,
        exec.store.dir.join("runs.parquet").display(),
        start.elapsed().as_secs_f64()
    );
    if driven.complete {
        let out = write_report(&exec.store.dir, None, None)?;
        eprintln!("report: {}", out.display());
    }
    if !driven.complete {
        eprintln!(
            "the study is not complete: other shards still have units to run; rerun `evoattn run {}` (any shard) after they finish to complete it",
            a.study.display()
        );
    }
    Ok(())
}

/// Writes the report of the study in `dir`; returns its path.
fn write_report(
    dir: &std::path::Path,
    out: Option<&std::path::Path>,
    compare: Option<&std::path::Path>,
) -> Result<PathBuf> {
    let runs = dir.join("runs.parquet");
    if !runs.exists() {
        bail!(
            "{} does not exist: run the study first (evoattn run STUDY.toml)",
            runs.display()
        );
    }
    let rows = study::store::runs_from_frame(&study::store::read_parquet(&runs)?)?;
    let meta: serde_json::Value = std::fs::read(dir.join("meta.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let prov = evoattn::report::Provenance {
        study: rows
            .first()
            .map(|r| r.study.clone())
            .unwrap_or_else(|| dir.display().to_string()),
        command: format!(
            "evoattn run {}",
            meta["study_file"].as_str().unwrap_or("STUDY.toml")
        ),
        study_sha256: meta["study_sha256"]
            .as_str()
            .unwrap_or("unknown")
            .to_string(),
    };
    let out = out.map_or_else(|| dir.join("report.md"), |p| p.to_path_buf());
    let other = match compare {
        None => None,
        Some(c) => {
            let p = c.join("runs.parquet");
            if !p.exists() {
                bail!(
                    "--compare-search {}: {} does not exist; pass a study's store folder (e.g. runs/NAME)",
                    c.display(),
                    p.display()
                );
            }
            let r = study::store::runs_from_frame(&study::store::read_parquet(&p)?)?;
            let name = r
                .first()
                .map_or_else(|| c.display().to_string(), |x| x.study.clone());
            Some((name, r))
        }
    };
    evoattn::report::write_with(
        &rows,
        &prov,
        &out,
        dir,
        other.as_ref().map(|(n, r)| (n.as_str(), r.as_slice())),
    )?;
    Ok(out)
}

fn cmd_report(a: &ReportArgs) -> Result<()> {
    let dir = if a.target.extension().is_some_and(|e| e == "toml") {
        let s = load_study(&a.target)?;
        a.store.join(s.name)
    } else {
        a.target.clone()
    };
    let out = write_report(&dir, a.out.as_deref(), a.compare_search.as_deref())?;
    eprintln!(
        "report: {} (and {})",
        out.display(),
        dir.join("tests.parquet").display()
    );
    Ok(())
}

fn cmd_status(a: &StatusArgs) -> Result<()> {
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
            let meta: serde_json::Value = serde_json::from_slice(
                &std::fs::read(store.dir.join("meta.json"))
                    .context("no data and no meta.json in the store: pass --data")?,
            )?;
            meta["data_fingerprint"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
    };
    let mut runner = study::StatusRunner {
        store,
        planner: Planner::new(study.config.clone(), fingerprint, study.max_replicas),
        counts: vec![],
        earlier: Default::default(),
    };
    let driven = study::drive(&study, external, &mut runner)?;
    let generations = driven.evolve.as_ref().map(|e| {
        e.rows
            .iter()
            .map(|r| r.generation)
            .max()
            .map_or(0, |g| g + 1)
    });
    if a.json {
        println!(
            "{}",
            json!({"study": study.name, "complete": driven.complete, "stages": runner.counts,
                   "generations_done": generations})
        );
        return Ok(());
    }
    println!("study {} ({})", study.name, study.kind.as_str());
    for c in &runner.counts {
        println!(
            "  {:<10} done {:>4}  claimed {:>4}  pending {:>4}",
            c.stage, c.done, c.claimed, c.pending
        );
    }
    if let (Some(g), Some(spec)) = (generations, &study.evolve) {
        println!("  generations finished: {g}/{}", spec.generations);
    }
    if study.replicate.is_some() && !runner.counts.iter().any(|c| c.stage == "replicate") {
        println!("  replicate  waits for the search to finish");
    }
    println!(
        "  {}",
        if driven.complete {
            "complete"
        } else {
            "not complete"
        }
    );
    Ok(())
}

fn main() {
    let cli = Cli::parse();
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
    // A study runs `jobs` runs at once with threads/jobs threads each.
    let (jobs, threads) = match &cli.cmd {
        Cmd::Run(a) => {
            let cuda = a.device != "cpu";
            let jobs = a
                .jobs
                .unwrap_or(if cuda { 1 } else { threads.max(1) })
                .max(1);
            (jobs, (threads / jobs).max(1))
        }
        _ => (1, threads),
    };
    evoattn::cpu::init_threads(threads.max(1));
    let r = match &cli.cmd {
        Cmd::Genes { count, json } => cmd_genes(*count, *json),
        Cmd::Data(c) => cmd_data(c),
        Cmd::Train(a) => cmd_train(a),
        Cmd::Bench(a) => cmd_bench(a),
        Cmd::Presets { gene, json } => cmd_presets(gene, *json),
        Cmd::Stats(c) => cmd_stats(c),
        Cmd::Run(a) => cmd_run(a, threads, jobs),
        Cmd::Status(a) => cmd_status(a),
        Cmd::Report(a) => cmd_report(a),
    };
    if let Err(e) = r {
        // A closed pipe (`evoattn genes | head`) is not an error.
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return;
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
