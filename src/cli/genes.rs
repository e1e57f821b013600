//! `evoattn genes` and `evoattn presets`: the gene space and the presets.

use super::output::{self, Render};
use anyhow::Result;
use clap::Args;
use evoattn::gene::Gene;
use evoattn::model::Transformer;
use evoattn::train::{Preset, TrainConfig};
use serde_json::{json, Value};

/// `evoattn genes`.
#[derive(Args)]
pub struct GenesArgs {
    /// Print only the number of genes.
    #[arg(long)]
    pub count: bool,
    /// One JSON object per gene.
    #[arg(long)]
    pub json: bool,
}

/// `evoattn presets`.
#[derive(Args)]
pub struct PresetsArgs {
    /// The gene whose parameter counts are shown.
    #[arg(long, default_value = "dot+softmax+none+fixed")]
    pub gene: String,
    /// One JSON object per preset.
    #[arg(long)]
    pub json: bool,
}

/// Full WikiText-2 vocabulary.
const FULL_VOCAB: usize = 33_278;

/// Vocabulary size of WikiText-2 under a preset's cap.
fn preset_vocab(cfg: &TrainConfig) -> usize {
    cfg.vocab_cap.map_or(FULL_VOCAB, |c| c.min(FULL_VOCAB))
}

struct Genes(Vec<Gene>);

impl Render for Genes {
    fn json(&self) -> Vec<Value> {
        let cfg = Preset::Seed.config().model(FULL_VOCAB);
        self.0
            .iter()
            .map(|g| {
                let (total, nonembed) = Transformer::param_counts(*g, &cfg);
                json!({"id": g.short_id(), "gene": g.to_string(), "similarity": g.similarity, "normalization": g.normalization,
                       "gating": g.gating, "temperature": g.temperature, "params_nonembed_seed": nonembed, "params_total_seed": total})
            })
            .collect()
    }
    fn text(&self) -> String {
        let cfg = Preset::Seed.config().model(FULL_VOCAB);
        let mut t = format!(
            "{:<5} {:<12} {:<14} {:<12} {:<13} {:>16}\n",
            "id", "similarity", "normalization", "gating", "temperature", "nonembed (seed)"
        );
        for g in &self.0 {
            let (_, nonembed) = Transformer::param_counts(*g, &cfg);
            t += &format!(
                "{:<5} {:<12} {:<14} {:<12} {:<13} {:>16}\n",
                g.short_id(),
                g.similarity.as_str(),
                g.normalization.as_str(),
                g.gating.as_str(),
                g.temperature.as_str(),
                nonembed
            );
        }
        t
    }
}

/// Runs `evoattn genes`.
pub fn genes(a: &GenesArgs) -> Result<()> {
    let all = Gene::all();
    if a.count {
        return output::print(
            &output::Plain {
                json: vec![json!({"count": all.len()})],
                text: format!("{}\n", all.len()),
            },
            false,
        );
    }
    output::print(&Genes(all), a.json)
}

struct Presets(Gene);

impl Render for Presets {
    fn json(&self) -> Vec<Value> {
        let gene = self.0;
        Preset::ALL
            .iter()
            .map(|p| {
                let cfg = p.config();
                let vocab = preset_vocab(&cfg);
                let (total, nonembed) = Transformer::param_counts(gene, &cfg.model(vocab));
                json!({"preset": p.to_string(), "gene": gene.to_string(), "vocab_size": vocab,
                       "params_total": total, "params_nonembed": nonembed, "config": cfg})
            })
            .collect()
    }
    fn text(&self) -> String {
        let gene = self.0;
        let mut t = String::new();
        for p in Preset::ALL {
            let cfg = p.config();
            let vocab = preset_vocab(&cfg);
            let (total, nonembed) = Transformer::param_counts(gene, &cfg.model(vocab));
            t += &format!(
                "{:<6} vocab {vocab:>6}  d {:>3}  layers {}  heads {}  seq {:>3}  batch {:>3}  steps {:>5}  lr {:.0e}  params {total} total / {nonembed} non-embedding ({gene})\n",
                p.to_string(), cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.seq_len, cfg.batch_size, cfg.steps, cfg.lr
            );
        }
        t
    }
}

/// Runs `evoattn presets`.
pub fn presets(a: &PresetsArgs) -> Result<()> {
    let gene: Gene = a.gene.parse()?;
    output::print(&Presets(gene), a.json)
}
