//! How much memory a run needs, estimated before anything is allocated, and how much the
//! machine (or the GPU) has: configurations that cannot fit are refused with the numbers
//! instead of aborting in the allocator.
//!
//! The estimate is a lower bound of what training holds at its peak (f32 throughout):
//! - parameters, their gradients and AdamW's two moments: 4 × P per replica;
//! - activations kept for the backward pass, per replica and layer: about 20 values per
//!   token and model dimension (LayerNorms, Q/K/V, attention output, the 4× MLP) plus 4
//!   per token pair and head (scores, weights and their gradients);
//! - the output layer: the `[tokens, vocab]` logits once (the fused CPU kernel reuses one
//!   buffer) or three times (logits, log-softmax and gradient on other devices), for the
//!   larger of a training batch and an evaluation batch;
//! - the per-step training losses.
//!
//! Everything is computed in `f64`, so no size overflows. Jobs train concurrently and
//! each holds its own run, so the total is the estimate × jobs. Measured on the CPU
//! (`evoattn bench --replicas 4`, peak RSS less the 69 MB of a process with the data
//! loaded): smoke 20 MiB estimated / 41 MB used, cpu 0.2 GiB / 0.34 GB, seed 1.5 GiB /
//! 2.9 GB, so a configuration is refused only when it surely cannot fit.

use super::{TrainConfig, EVAL_BATCH};
use crate::gene::Gene;
use crate::model::Transformer;
use anyhow::{bail, Result};
use candle_core::Device;

/// Bytes per value (f32).
const F32: f64 = 4.0;

/// What one run needs, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Parameters of one replica (the largest gene of the space).
    pub params: f64,
    /// Parameters, gradients and optimizer state of every replica.
    pub weights: f64,
    /// Activations kept for the backward pass, every replica.
    pub activations: f64,
    /// Logits of the output layer (training or evaluation, whichever is larger).
    pub logits: f64,
    /// Training losses kept per step.
    pub losses: f64,
    /// Replicas trained together.
    pub replicas: usize,
}

impl Estimate {
    /// Bytes of one run.
    pub fn total(&self) -> f64 {
        self.weights + self.activations + self.logits + self.losses
    }
}

/// `bytes` as GiB (or MiB when small), for messages.
pub fn human(bytes: f64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    if !bytes.is_finite() {
        return "an unbounded amount".into();
    }
    if bytes >= 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 {
        format!("{:.3e} GiB", bytes / GIB)
    } else if bytes >= GIB / 10.0 {
        format!("{:.1} GiB", bytes / GIB)
    } else {
        format!("{:.0} MiB", (bytes / (1024.0 * 1024.0)).max(1.0))
    }
}

/// Parameters of one replica of the gene of the space with the most, in `f64`: counted on
/// one- and two-layer models and extrapolated to `n_layers`, so a huge `n_layers` costs
/// nothing to count. `cfg` must have passed [`TrainConfig::check`].
pub fn max_params(cfg: &TrainConfig, vocab: usize) -> f64 {
    type Key = (usize, usize, usize, usize, usize);
    static CACHE: std::sync::Mutex<Vec<(Key, f64)>> = std::sync::Mutex::new(Vec::new());
    let key = (cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.seq_len, vocab);
    let cached = CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v);
    if let Some(v) = cached {
        return v;
    }
    let v = count_max_params(cfg, vocab);
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if c.len() >= 64 {
        c.remove(0);
    }
    c.push((key, v));
    v
}

fn count_max_params(cfg: &TrainConfig, vocab: usize) -> f64 {
    let count = |layers: usize, gene: Gene| -> f64 {
        let mut m = cfg.model(vocab);
        m.n_layers = layers;
        Transformer::specs(gene, &m)
            .iter()
            .map(|s| s.shape.iter().map(|&d| d as f64).product::<f64>())
            .sum()
    };
    Gene::all()
        .into_iter()
        .map(|g| {
            let (one, two) = (count(1, g), count(2, g));
            one + (two - one) * (cfg.n_layers as f64 - 1.0)
        })
        .fold(0.0, f64::max)
}

/// The estimate of one run of `replicas` replicas of `cfg` on a vocabulary of `vocab`
/// words; `fused_head`: the output layer is the fused CPU kernel.
pub fn estimate(cfg: &TrainConfig, vocab: usize, replicas: usize, fused_head: bool) -> Estimate {
    let r = replicas.max(1) as f64;
    let (d, l, h) = (cfg.d_model as f64, cfg.n_layers as f64, cfg.n_heads as f64);
    let (b, t, v) = (cfg.batch_size as f64, cfg.seq_len as f64, vocab as f64);
    let params = max_params(cfg, vocab);
    let tokens = b * t;
    let eval_tokens = EVAL_BATCH as f64 * t;
    let per_layer = 20.0 * tokens * d + 4.0 * b * h * t * t;
    let logit_copies = if fused_head { 1.0 } else { 3.0 };
    Estimate {
        params,
        weights: 4.0 * params * r * F32,
        activations: (l * per_layer + 4.0 * tokens * d) * r * F32,
        logits: logit_copies * tokens.max(eval_tokens) * v * r * F32,
        losses: cfg.steps as f64 * r * F32,
        replicas: replicas.max(1),
    }
}

/// Memory the device offers: bytes and what they are (for messages). `None` when it cannot
/// be told (the check is then skipped).
pub fn available(device: &Device) -> Option<(f64, String)> {
    if let Ok(v) = std::env::var("EVOATTN_MEMORY_LIMIT") {
        if let Ok(b) = v.trim().parse::<f64>() {
            return Some((b, "EVOATTN_MEMORY_LIMIT".into()));
        }
    }
    match device {
        Device::Cpu => host_memory(),
        Device::Cuda(_) => gpu_memory(device),
        Device::Metal(_) => None,
    }
}

/// Total RAM, or the cgroup's limit when lower.
fn host_memory() -> Option<(f64, String)> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total_kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let mut best = (total_kb * 1024.0, "this machine's memory".to_string());
    for path in [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ] {
        if let Some(limit) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
        {
            if limit < best.0 {
                best = (limit, format!("this container's memory limit ({path})"));
            }
        }
    }
    Some(best)
}

/// The GPU's total memory, from `nvidia-smi` (candle has no query for it).
fn gpu_memory(device: &Device) -> Option<(f64, String)> {
    let index = match device.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => gpu_id,
        _ => return None,
    };
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=memory.total",
            "--format=csv,noheader,nounits",
            &format!("--id={index}"),
        ])
        .output()
        .ok()?;
    let mib: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some((mib * 1024.0 * 1024.0, format!("GPU {index}'s memory")))
}

/// Refuses a run of `jobs` concurrent jobs of `replicas` replicas each when its estimate
/// exceeds what `device` has; the error says how much it needs and what to lower.
pub fn check_fits(
    cfg: &TrainConfig,
    vocab: usize,
    replicas: usize,
    jobs: usize,
    device: &Device,
) -> Result<Estimate> {
    let est = estimate(cfg, vocab, replicas, device.is_cpu());
    let need = est.total() * jobs.max(1) as f64;
    if let Some((have, what)) = available(device) {
        if need > have {
            bail!(
                "this configuration needs at least {} of memory and {what} is {}: {} parameters per replica (parameters, gradients and optimizer state {}), activations {}, logits {} per run, × {} replica(s) per run{}; lower d_model, n_layers, batch_size or seq_len{}",
                human(need),
                human(have),
                human_count(est.params),
                human(est.weights),
                human(est.activations),
                human(est.logits),
                est.replicas,
                if jobs > 1 {
                    format!(" × {jobs} concurrent jobs")
                } else {
                    String::new()
                },
                if jobs > 1 || est.replicas > 1 {
                    " (or --jobs, max_replicas)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(est)
}

/// A count such as `1.2 M` or `3.4e15`.
fn human_count(n: f64) -> String {
    if n >= 1e15 {
        format!("{n:.2e}")
    } else if n >= 1e9 {
        format!("{:.1} G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} M", n / 1e6)
    } else {
        format!("{n:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Preset;

    #[test]
    fn param_count_extrapolates_exactly() {
        let cfg = Preset::Cpu.config();
        let exact = Gene::all()
            .into_iter()
            .map(|g| Transformer::param_counts(g, &cfg.model(4096)).0)
            .max()
            .unwrap();
        assert_eq!(max_params(&cfg, 4096), exact as f64);
    }

    #[test]
    fn absurd_sizes_are_refused_with_the_amount() {
        let mut cfg = Preset::Smoke.config();
        cfg.d_model = 65_536;
        cfg.n_layers = 4_096;
        cfg.check().unwrap();
        let e = check_fits(&cfg, 512, 1, 1, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs at least") && e.contains("GiB"), "{e}");
        // The presets fit a small machine.
        let est = estimate(&Preset::Cpu.config(), 4096, 4, true);
        assert!(est.total() < 2.0 * 1024.0 * 1024.0 * 1024.0, "{est:?}");
    }
}
