//! `evoattn bench`: training tokens/s of a gene, warm-up excluded.

use super::output::{self, num, Plain};
use super::{device_name, parse_device, Common};
use anyhow::{bail, Result};
use clap::Args;
use evoattn::gene::Gene;
use evoattn::train::{self, Progress, RunOptions};
use serde_json::json;
use std::time::Instant;

/// `evoattn bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Gene to train.
    #[arg(long, default_value = "dot+softmax+none+fixed")]
    pub gene: String,
    /// Replicas trained together.
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Train the replicas in this many concurrent groups, each on its share of the
    /// threads (default: the largest number that divides both --replicas and the threads,
    /// on a CPU; 1 batches them all). The results do not depend on it.
    #[arg(long)]
    pub replica_groups: Option<usize>,
    /// Timed steps (after 2 warm-up steps).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Preset, overrides, data and device.
    #[command(flatten)]
    pub common: Common,
    /// One JSON object on stdout (with --sweep: one per gene).
    #[arg(long)]
    pub json: bool,
    /// A cost table: every similarity × normalization pair (no gating, fixed temperature),
    /// then each gating and temperature on the baseline, each timed between two baseline
    /// timings and given relative to their mean (`--gene` is ignored).
    #[arg(long)]
    pub sweep: bool,
    /// With --sweep: passes over the table (the ratio is the median over passes).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
}

/// Training tokens/s of `gene` over `steps` steps after 2 warm-up steps.
fn measure(
    gene: Gene,
    run_cfg: &evoattn::train::TrainConfig,
    corpus: &evoattn::data::Corpus,
    replicas: usize,
    steps: usize,
    replica_groups: Option<usize>,
    device: &candle_core::Device,
) -> Result<(f64, usize)> {
    let warm = 2usize;
    let seeds: Vec<u64> = (1..=replicas as u64).collect();
    let mut marks: Vec<Instant> = Vec::new();
    let mut cb = |p: Progress| {
        if p.step == warm || p.step == warm.saturating_add(steps) {
            marks.push(Instant::now());
        }
    };
    let out = train::train(
        gene,
        run_cfg,
        corpus,
        &seeds,
        device,
        RunOptions {
            on_step: Some(&mut cb),
            max_steps: Some(warm.saturating_add(steps)),
            skip_eval: true,
            eval_test: false,
            replica_groups,
            ..Default::default()
        },
    )?;
    let [t0, t1] = marks[..] else {
        let at: Vec<String> = out
            .seeds
            .iter()
            .filter_map(|s| s.diverged_at.map(|d| format!("seed {}: step {d}", s.seed)))
            .collect();
        bail!(
            "{gene}: every replica diverged before the {steps} timed steps ended ({}); nothing to time: lower lr (--set lr=...)",
            at.join(", ")
        );
    };
    let secs = t1.duration_since(t0).as_secs_f64();
    Ok((
        steps as f64 * (replicas * run_cfg.batch_size * run_cfg.seq_len) as f64 / secs,
        out.replica_groups,
    ))
}

/// The genes of the cost table: similarity × normalization at the cheapest gating and
/// temperature, then each other gating and temperature on the baseline.
fn sweep_genes() -> Vec<Gene> {
    use evoattn::gene::Component;
    let base = Gene::BASELINE;
    let mut out = Vec::new();
    for s in Component::Similarity.values() {
        for n in Component::Normalization.values() {
            let g = base
                .with(Component::Similarity, s)
                .and_then(|g| g.with(Component::Normalization, n))
                .expect("values of the space");
            out.push(g);
        }
    }
    for c in [Component::Gating, Component::Temperature] {
        for v in c.values() {
            let g = base.with(c, v).expect("values of the space");
            if !out.contains(&g) {
                out.push(g);
            }
        }
    }
    out
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `bench --sweep`.
fn sweep(
    a: &BenchArgs,
    run_cfg: &evoattn::train::TrainConfig,
    corpus: &evoattn::data::Corpus,
    device: &candle_core::Device,
) -> Result<()> {
    if a.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let genes = sweep_genes();
    let base = Gene::BASELINE;
    let bar = indicatif::ProgressBar::new((a.rounds * (2 * genes.len() + 1)) as u64);
    if a.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut tps: Vec<Vec<f64>> = vec![Vec::new(); genes.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); genes.len()];
    for _ in 0..a.rounds {
        // Baseline, gene, baseline, gene, …: each gene between two baseline timings.
        let mut before = measure(base, run_cfg, corpus, a.replicas, a.steps, None, device)?.0;
        bar.inc(1);
        for (i, &g) in genes.iter().enumerate() {
            let t = measure(g, run_cfg, corpus, a.replicas, a.steps, None, device)?.0;
            let after = measure(base, run_cfg, corpus, a.replicas, a.steps, None, device)?.0;
            bar.inc(2);
            tps[i].push(t);
            ratios[i].push(t / ((before + after) / 2.0));
            before = after;
        }
    }
    bar.finish_and_clear();
    let threads = rayon::current_num_threads();
    let mut rows: Vec<(Gene, f64, f64)> = genes
        .iter()
        .enumerate()
        .map(|(i, &g)| (g, median(&mut tps[i]), median(&mut ratios[i])))
        .collect();
    rows.sort_by(|x, y| y.2.total_cmp(&x.2));
    let mut text = format!(
        "cost table: {} preset, R={}, {} threads, {} timed steps, median of {} alternating pass(es); ratio = tokens/s over the mean of the baseline timings around it\n\n| gene | tokens/s | vs baseline |\n|---|---:|---:|\n",
        a.common.preset, a.replicas, threads, a.steps, a.rounds
    );
    for (g, t, r) in &rows {
        text.push_str(&format!("| `{g}` | {t:.0} | {r:.2} |\n"));
    }
    let json = rows
        .iter()
        .map(|(g, t, r)| {
            json!({"preset": a.common.preset, "gene": g.to_string(), "replicas": a.replicas, "steps": a.steps,
                   "rounds": a.rounds, "tokens_per_s": num(*t), "ratio_to_baseline": num(*r),
                   "device": device_name(device), "threads": threads,
                   "hardware": evoattn::cpu::hardware()})
        })
        .collect();
    output::print(&Plain { json, text }, a.json)
}

/// Runs `evoattn bench`.
pub fn run(a: &BenchArgs) -> Result<()> {
    let gene: Gene = a.gene.parse()?;
    if a.replicas == 0 || a.steps == 0 {
        bail!("--replicas and --steps must be at least 1");
    }
    let cfg = a.common.config()?;
    let device = parse_device(&a.common.device)?;
    let corpus = a.common.corpus(&cfg)?;
    let warm = 2usize;
    let mut run_cfg = cfg.clone();
    run_cfg.steps = run_cfg.steps.max(warm.saturating_add(a.steps));
    run_cfg
        .check()
        .map_err(|e| anyhow::anyhow!("--steps {}: {e}", a.steps))?;
    a.common.preflight(&run_cfg, &corpus, a.replicas, &device)?;
    if a.sweep {
        return sweep(a, &run_cfg, &corpus, &device);
    }
    let (tps, groups) = measure(
        gene,
        &run_cfg,
        &corpus,
        a.replicas,
        a.steps,
        a.replica_groups,
        &device,
    )?;
    let secs = a.steps as f64 * (a.replicas * cfg.batch_size * cfg.seq_len) as f64 / tps;
    let threads = rayon::current_num_threads();
    let text = format!(
        "{} on {} ({} preset, R={} in {} group(s), {} threads): {:.0} training tokens/s ({:.3} s/step)",
        gene,
        device_name(&device),
        a.common.preset,
        a.replicas,
        groups,
        threads,
        tps,
        secs / a.steps as f64
    );
    let mcfg = cfg.model(corpus.vocab.len());
    let flops = evoattn::model::Transformer::flops_per_token(gene, &mcfg);
    let gflops = tps * flops / 1e9;
    let (peak, nominal) = match device {
        candle_core::Device::Cpu => (
            evoattn::cpu::measured_peak_gflops(threads),
            evoattn::cpu::peak_gflops(threads),
        ),
        _ => (None, None),
    };
    let text = match peak {
        Some(p) => format!(
            "{text}\n{:.1} MFLOP/token (matmuls, forward + backward): {gflops:.1} GFLOP/s = {:.2} of the {p:.0} GFLOP/s FMA peak measured on {threads} thread(s) ({} GEMM kernels){}",
            flops / 1e6,
            gflops / p,
            evoattn::cpu::gemm_isa(),
            match nominal {
                Some(n) => format!(
                    "; {:.2} of the nominal {n:.0} GFLOP/s ({} FLOP/cycle/core at the reported {:.0} MHz)",
                    gflops / n,
                    evoattn::cpu::flops_per_cycle(),
                    evoattn::cpu::cpu_mhz().unwrap_or(f64::NAN)
                ),
                None => String::new(),
            }
        ),
        None => match nominal {
            Some(n) => format!(
                "{text}\n{:.1} MFLOP/token (matmuls, forward + backward): {gflops:.1} GFLOP/s = {:.2} of the nominal {n:.0} GFLOP/s FMA peak ({} FLOP/cycle/core; not measured: no FMA probe for {} kernels)",
                flops / 1e6,
                gflops / n,
                evoattn::cpu::flops_per_cycle(),
                evoattn::cpu::gemm_isa()
            ),
            None => text,
        },
    };
    let json = json!({"preset": a.common.preset, "gene": gene.to_string(), "replicas": a.replicas, "replica_groups": groups, "steps": a.steps,
                      "tokens_per_s": num(tps), "device": device_name(&device), "threads": threads,
                      "hardware": match device { candle_core::Device::Cpu => evoattn::cpu::hardware(), _ => device_name(&device) },
                      "flops_per_token": num(flops), "gflops": num(gflops),
                      "peak_gflops": peak.map(num), "fraction_of_peak": peak.map(|p| num(gflops / p)),
                      "nominal_peak_gflops": nominal.map(num), "fraction_of_nominal_peak": nominal.map(|p| num(gflops / p)),
                      "vector_isa": evoattn::cpu::vector_isa(), "flops_per_cycle": evoattn::cpu::flops_per_cycle(),
                      "gemm_isa": evoattn::cpu::gemm_isa(), "cpu_mhz": evoattn::cpu::cpu_mhz()});
    output::print(
        &Plain {
            json: vec![json],
            text,
        },
        a.json,
    )
}
