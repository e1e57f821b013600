//! `evoattn bench`: training tokens/s of a gene, warm-up excluded.

use super::output::{self, num, Plain};
use super::{device_name, parse_device, Common};
use anyhow::{bail, Result};
use clap::Args;
use evoattn::gene::Gene;
use evoattn::train::speed;
use serde_json::json;

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
    /// Timed steps (after 2 warm-up steps; default 10). With --compare-replicas: steps
    /// per turn (default 1).
    #[arg(long)]
    pub steps: Option<usize>,
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
    /// With --sweep: passes over the table (the ratio is the median over passes; default
    /// 2). With --compare-replicas: rounds of turns (default 10).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// A paired comparison of replica counts, e.g. `1,2`: one run per count, all alive at
    /// once, training in turns of --steps steps (after 6 warm-up steps each), --passes
    /// turns each per round, the order reversing from turn to turn and rotating from round
    /// to round; each round's tokens/s per count, and its ratio to the first count's in the
    /// same round. --replica-groups applies to every count.
    #[arg(long, value_delimiter = ',', num_args = 1.., conflicts_with_all = ["sweep", "replicas"])]
    pub compare_replicas: Vec<usize>,
    /// With --compare-replicas: turns of each run per round (the summary plans how many a lead needs).
    #[arg(long, default_value_t = 8, requires = "compare_replicas")]
    pub passes: usize,
}

impl BenchArgs {
    /// --steps, or its default: 1 per turn with --compare-replicas, 10 otherwise.
    fn steps(&self) -> usize {
        let default = if self.compare_replicas.is_empty() {
            10
        } else {
            1
        };
        self.steps.unwrap_or(default)
    }
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
    let (rounds, steps) = (a.rounds.unwrap_or(2), a.steps());
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let genes = speed::sweep_genes();
    let base = Gene::BASELINE;
    let bar = indicatif::ProgressBar::new((rounds * (2 * genes.len() + 1)) as u64);
    if a.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut tps: Vec<Vec<f64>> = vec![Vec::new(); genes.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); genes.len()];
    for _ in 0..rounds {
        // Baseline, gene, baseline, gene, …: each gene between two baseline timings.
        let mut before = speed::measure(base, run_cfg, corpus, a.replicas, steps, None, device)?.0;
        bar.inc(1);
        for (i, &g) in genes.iter().enumerate() {
            let t = speed::measure(g, run_cfg, corpus, a.replicas, steps, None, device)?.0;
            let after = speed::measure(base, run_cfg, corpus, a.replicas, steps, None, device)?.0;
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
        a.common.preset, a.replicas, threads, steps, rounds
    );
    for (g, t, r) in &rows {
        text.push_str(&format!("| `{g}` | {t:.0} | {r:.2} |\n"));
    }
    let json = rows
        .iter()
        .map(|(g, t, r)| {
            json!({"preset": a.common.preset, "gene": g.to_string(), "replicas": a.replicas, "steps": steps,
                   "rounds": rounds, "tokens_per_s": num(*t), "ratio_to_baseline": num(*r),
                   "device": device_name(device), "threads": threads,
                   "hardware": evoattn::cpu::hardware()})
        })
        .collect();
    output::print(&Plain { json, text }, a.json)
}

/// `bench --compare-replicas`: [`speed::compare_replicas`], printed.
fn compare(
    a: &BenchArgs,
    gene: Gene,
    run_cfg: &evoattn::train::TrainConfig,
    corpus: &evoattn::data::Corpus,
    device: &candle_core::Device,
) -> Result<()> {
    let c = speed::compare_replicas(
        gene,
        run_cfg,
        corpus,
        device,
        speed::Design {
            counts: &a.compare_replicas,
            steps: a.steps(),
            passes: a.passes,
            rounds: a.rounds.unwrap_or(10),
            replica_groups: a.replica_groups,
        },
    )?;
    let text = format!(
        "{gene} on {} ({} preset, {} threads): {}",
        device_name(device),
        a.common.preset,
        rayon::current_num_threads(),
        c.markdown()
    );
    let hardware = match device {
        candle_core::Device::Cpu => evoattn::cpu::hardware(),
        _ => device_name(device),
    };
    let json = c
        .rows
        .iter()
        .map(|r| {
            let s = r.summary.as_ref();
            let plan = s.map_or((None, None), |s| c.planned_passes(s));
            json!({"preset": a.common.preset, "gene": gene.to_string(), "mode": "turns",
                   "compare_replicas": a.compare_replicas, "replicas": r.replicas,
                   "replica_groups": r.groups, "steps": c.steps, "passes": c.passes, "warmup_steps": c.warm,
                   "rounds": c.rounds, "tokens_per_s": num(r.tokens_per_s),
                   "round_tokens_per_s": r.round_tokens_per_s.iter().map(|&x| num(x)).collect::<Vec<_>>(),
                   "ratio_to_first": r.ratio_to_first.iter().map(|&x| num(x)).collect::<Vec<_>>(),
                   "rounds_ahead_of_first": s.map_or(0, |s| s.ahead),
                   "ratio_geomean": s.map(|s| num(s.geomean)),
                   "ratio_ci95": s.map(|s| [num(s.ci95.0), num(s.ci95.1)]),
                   "ratio_lowest": s.map(|s| num(s.lowest)), "sign_test_p": s.map(|s| num(s.sign_p)),
                   "ratio_sd_log": s.map(|s| num(s.sd_log)), "passes_for_every_round_95": plan.0, "passes_for_every_round_95_at_ci_low": plan.1,
                   "device": device_name(device), "threads": rayon::current_num_threads(), "hardware": hardware})
        })
        .collect();
    output::print(&Plain { json, text }, a.json)
}

/// Runs `evoattn bench`.
pub fn run(a: &BenchArgs) -> Result<()> {
    let gene: Gene = a.gene.parse()?;
    let steps = a.steps();
    if a.replicas == 0 || steps == 0 {
        bail!("--replicas and --steps must be at least 1");
    }
    let cfg = a.common.config()?;
    let device = parse_device(&a.common.device)?;
    let corpus = a.common.corpus(&cfg)?;
    let warm = speed::WARMUP_STEPS;
    let mut run_cfg = cfg.clone();
    run_cfg.steps = run_cfg.steps.max(warm.saturating_add(steps));
    run_cfg
        .check()
        .map_err(|e| anyhow::anyhow!("--steps {}: {e}", steps))?;
    if !a.compare_replicas.is_empty() {
        let all: usize = a.compare_replicas.iter().sum();
        a.common.preflight(&run_cfg, &corpus, all.max(1), &device)?;
        return compare(a, gene, &run_cfg, &corpus, &device);
    }
    a.common.preflight(&run_cfg, &corpus, a.replicas, &device)?;
    if a.sweep {
        return sweep(a, &run_cfg, &corpus, &device);
    }
    let threads = rayon::current_num_threads();
    // The FMA peak is measured before the model is built and after the timed steps, the higher
    // kept: a burst of another tenant's load during one measurement cannot then inflate
    // `fraction_of_peak` (seen on a shared VM: 232 and 242 GFLOP/s, 451-484 in runs beside them).
    let peak_before = on_cpu(&device, threads, evoattn::cpu::measured_peak_gflops);
    let (tps, groups) = speed::measure(
        gene,
        &run_cfg,
        &corpus,
        a.replicas,
        steps,
        a.replica_groups,
        &device,
    )?;
    let secs = steps as f64 * (a.replicas * cfg.batch_size * cfg.seq_len) as f64 / tps;
    let text = format!(
        "{} on {} ({} preset, R={} in {} group(s), {} threads): {:.0} training tokens/s ({:.3} s/step)",
        gene,
        device_name(&device),
        a.common.preset,
        a.replicas,
        groups,
        threads,
        tps,
        secs / steps as f64
    );
    let mcfg = cfg.model(corpus.vocab.len());
    let flops = evoattn::model::Transformer::flops_per_token(gene, &mcfg);
    let gflops = tps * flops / 1e9;
    let peak_after = on_cpu(&device, threads, evoattn::cpu::measured_peak_gflops);
    let peak = peak_before.into_iter().chain(peak_after).reduce(f64::max);
    let nominal = on_cpu(&device, threads, evoattn::cpu::peak_gflops);
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
    let json = json!({"preset": a.common.preset, "gene": gene.to_string(), "replicas": a.replicas, "replica_groups": groups, "steps": steps,
                      "tokens_per_s": num(tps), "device": device_name(&device), "threads": threads,
                      "hardware": match device { candle_core::Device::Cpu => evoattn::cpu::hardware(), _ => device_name(&device) },
                      "flops_per_token": num(flops), "gflops": num(gflops),
                      "peak_gflops": peak.map(num), "peak_gflops_before_after": [peak_before.map(num), peak_after.map(num)], "fraction_of_peak": peak.map(|p| num(gflops / p)),
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

/// `peak(threads)` (a measured or nominal FMA peak) on a CPU device, else `None`.
fn on_cpu(
    device: &candle_core::Device,
    threads: usize,
    peak: fn(usize) -> Option<f64>,
) -> Option<f64> {
    device.is_cpu().then(|| peak(threads)).flatten()
}
