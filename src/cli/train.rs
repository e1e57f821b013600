//! `evoattn train`: one model per seed of a gene, trained together as replicas.

use super::output::{self, fmt_opt, num, opt, Render};
use super::{parse_device, parse_seeds, Common};
use anyhow::Result;
use clap::Args;
use evoattn::gene::Gene;
use evoattn::train::{self, Progress, RunOptions, RunOutput};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

/// `evoattn train`.
#[derive(Args)]
pub struct TrainArgs {
    /// Gene, e.g. dot+sparsemax+output_gate+learned.
    #[arg(long)]
    pub gene: String,
    /// Comma-separated seeds; one replica per seed, trained together.
    #[arg(long, default_value = "1")]
    pub seeds: String,
    /// Preset, overrides, data and device.
    #[command(flatten)]
    pub common: Common,
    /// One JSON line per seed on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// A progress bar of `total` steps (hidden with `quiet`).
pub fn step_bar(total: u64, quiet: bool) -> ProgressBar {
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

struct Trained {
    gene: Gene,
    out: RunOutput,
}

impl Render for Trained {
    fn json(&self) -> Vec<Value> {
        let o = &self.out;
        o.seeds
            .iter()
            .map(|s| {
                json!({
                    "gene": self.gene.to_string(), "seed": s.seed, "params_total": o.params_total,
                    "params_nonembed": o.params_nonembed, "steps": o.steps, "diverged_at": s.diverged_at,
                    "train_loss": num(s.train_loss), "val_ppl": opt(s.val_ppl), "test_ppl": opt(s.test_ppl),
                    "tokens_per_s": num(o.tokens_per_s), "wall_s": num(o.wall_s),
                })
            })
            .collect()
    }

    fn text(&self) -> String {
        let o = &self.out;
        let mut t = format!(
            "{:<36} {:>6} {:>9} {:>9} {:>6} {:>9} {:>10} {:>9} {:>9}\n",
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
        for s in &o.seeds {
            t += &format!(
                "{:<36} {:>6} {:>9} {:>9} {:>6} {:>9} {:>10.4} {:>9} {:>9}\n",
                self.gene.to_string(),
                s.seed,
                o.params_total,
                o.params_nonembed,
                o.steps,
                s.diverged_at
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "-".into()),
                s.train_loss,
                fmt_opt(s.val_ppl),
                fmt_opt(s.test_ppl)
            );
        }
        t + &format!(
            "{:.0} training tokens/s over {} replica(s); wall {:.1} s\n",
            o.tokens_per_s,
            o.seeds.len(),
            o.wall_s
        )
    }
}

/// Runs `evoattn train`.
pub fn run(a: &TrainArgs) -> Result<()> {
    let gene: Gene = a.gene.parse()?;
    let seeds = parse_seeds(&a.seeds)?;
    let cfg = a.common.config()?;
    let device = parse_device(&a.common.device)?;
    let corpus = a.common.corpus(&cfg)?;
    a.common.preflight(&cfg, &corpus, seeds.len(), &device)?;
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
    output::print(&Trained { gene, out }, a.json)
}
