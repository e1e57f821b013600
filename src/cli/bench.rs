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
    /// Timed steps (after 2 warm-up steps).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Preset, overrides, data and device.
    #[command(flatten)]
    pub common: Common,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
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
    let seeds: Vec<u64> = (1..=a.replicas as u64).collect();
    let mut marks: Vec<Instant> = Vec::new();
    let mut cb = |p: Progress| {
        if p.step == warm || p.step == warm.saturating_add(a.steps) {
            marks.push(Instant::now());
        }
    };
    let out = train::train(
        gene,
        &run_cfg,
        &corpus,
        &seeds,
        &device,
        RunOptions {
            on_step: Some(&mut cb),
            max_steps: Some(warm.saturating_add(a.steps)),
            skip_eval: true,
            eval_test: false,
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
            "every replica diverged before the {} timed steps ended ({}); nothing to time: lower lr (--set lr=...)",
            a.steps,
            at.join(", ")
        );
    };
    let secs = t1.duration_since(t0).as_secs_f64();
    let tps = a.steps as f64 * (a.replicas * cfg.batch_size * cfg.seq_len) as f64 / secs;
    let threads = candle_core::utils::get_num_threads();
    let text = format!(
        "{} on {} ({} preset, R={}, {} threads): {:.0} training tokens/s ({:.3} s/step)",
        gene,
        device_name(&device),
        a.common.preset,
        a.replicas,
        threads,
        tps,
        secs / a.steps as f64
    );
    let json = json!({"preset": a.common.preset, "gene": gene.to_string(), "replicas": a.replicas, "steps": a.steps,
                      "tokens_per_s": num(tps), "device": device_name(&device), "threads": threads});
    output::print(
        &Plain {
            json: vec![json],
            text,
        },
        a.json,
    )
}
