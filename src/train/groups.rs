//! The replicas of one run, split into groups that train side by side, each on its own
//! threads.
//!
//! A run's R replicas are batched along a leading replica axis. On a CPU, batching alone
//! does not make R replicas cheaper than R runs: every op's work grows linearly in R, and
//! one replica already keeps the threads busy (its output layer's embedding gradient runs
//! beside candle's backward, [`crate::model::lm_head::DeferredEmbGrad`]). What replicas
//! can buy is independence: a replica trained on one thread has no thread waiting on
//! another, and no op whose parallel split leaves part of a core idle. So when a CPU run
//! has R ≥ 2 replicas and T ≥ 2 threads, [`auto_groups`] splits the replicas into G
//! equal groups (G divides R and T), and each group trains its R/G replicas as one
//! batched model on T/G threads of its own pool, the groups' steps running concurrently.
//! Measured 2026-12-03, AMD EPYC (Zen 5) VM, 2 threads, 8 alternating rounds of
//! `evoattn bench --preset seed --steps 8`: R = 1 mean 9,292 tokens/s, R = 2 in two
//! groups 10,281 (ahead in 7 of 8 rounds), R = 2 batched 9,293; at the `cpu` preset
//! (4 rounds) R = 1 31,058, R = 2 in two groups 60,548, batched 34,173 (the speed journal,
//! `benches/results/README.md`).
//! Since a single group got a pool of its own (below), R = 2's lead over R = 1 at the `seed`
//! preset on that machine is 1–4 % (pooled 1.026 [1.012, 1.040], ahead in 39 of 50 paired
//! rounds, 2026-12-04; with the output layer's fused row pass 1.027 [1.022, 1.033], ahead
//! in 76 of 80, against 1.035 [1.026, 1.045], 72 of 80, for the build before it in the
//! same alternation; in a later session, with each of `1,2` and `2,1` three times, 1.018
//! [1.012, 1.024], ahead in 48 of 60; the speed journal). On an AMD EPYC Zen 4 VM
//! (2026-12-07) it is 1.026 [1.015, 1.038], ahead in 33 of 40 rounds of 8 turns, and
//! 1.029 ([1.014, 1.045] over three invocations), ahead in 30 of 30, in rounds of 128
//! turns (`--passes 128`); the per-step barrier between two groups cost 1.4 % there in an
//! instrumented run.
//!
//! The results are the same bits either way: a replica's arithmetic depends neither on
//! the other replicas in its tensors nor on the thread count (every kernel fixes its
//! reduction order), and each group's pool flushes denormals like the global one.
//! `grouped_replicas_give_the_same_bits` (tests/engine.rs) checks it, checkpoints
//! included: a checkpoint holds every replica's tensors with the replica axis whole,
//! whatever the grouping that wrote it, so a run resumes under any grouping.

use super::{checkpoint, flat, poison_replica, AdamW};
use crate::gene::Gene;
use crate::model::{ModelConfig, Transformer};
use anyhow::{anyhow, ensure, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;

/// The number of groups a run of `replicas` replicas on `threads` threads trains in
/// when not told: on a CPU, the largest G ≤ min(R, T) that divides both R and T (so every
/// group gets the same replicas and threads); elsewhere 1 (a GPU runs the batch as one).
pub fn auto_groups(replicas: usize, threads: usize, device: &Device) -> usize {
    if !device.is_cpu() {
        return 1;
    }
    (1..=replicas.min(threads))
        .rev()
        .find(|&g| replicas.is_multiple_of(g) && threads.is_multiple_of(g))
        .unwrap_or(1)
}

/// One group: a batched model of some consecutive replicas and its optimiser state.
pub(super) struct Group {
    pub model: Transformer,
    pub opt: AdamW,
}

/// A run's replicas as [`Group`]s of equal size, in seed order.
pub(super) struct Groups {
    groups: Vec<Group>,
    /// One pool per group when there are several, or for a single CPU group created outside
    /// any pool (none: the caller's threads and pool).
    pools: Vec<rayon::ThreadPool>,
}

impl Groups {
    /// `count` groups of the replicas `seeds` (one per seed). `count` must divide the
    /// number of seeds; the groups share the current rayon pool's threads equally.
    pub fn new(
        gene: Gene,
        mcfg: ModelConfig,
        seeds: &[u64],
        device: &Device,
        count: usize,
    ) -> Result<Self> {
        let r = seeds.len();
        ensure!(
            count == 1 || device.is_cpu(),
            "{count} replica groups on {device:?}: only CPU runs train in groups (a GPU runs the replicas as one batch); use 1"
        );
        ensure!(
            count >= 1 && count <= r && r.is_multiple_of(count),
            "{count} replica groups for {r} replicas: the number of groups must divide the number of replicas (1 trains them as one batch)"
        );
        let per = r / count;
        let groups = seeds
            .chunks(per)
            .map(|s| {
                let model = Transformer::new(gene, mcfg, s, DType::F32, device)?;
                let opt = AdamW::new(&model)?;
                Ok(Group { model, opt })
            })
            .collect::<Result<Vec<_>>>()?;
        // One group called from outside any pool (a plain `train` or `bench`) also gets a
        // pool of its own, of the global pool's size, so that its steps run on a worker: the
        // ops' parallel pieces and the output layer's ∂E helpers are then taken up by a
        // sibling worker instead of being injected from outside and waited for (seed R = 1
        // +4 to +5 % on an Intel VM, same bits; speed journal). A run inside a pool (an executor
        // job's) already runs on a worker and keeps it. Several plain threads training at
        // once then oversubscribe the cores, as several-group runs already did; the CLI
        // trains one such run at a time.
        let own_pool = count == 1 && device.is_cpu() && rayon::current_thread_index().is_none();
        let pools = if count > 1 || own_pool {
            let threads = (rayon::current_num_threads() / count).max(1);
            (0..count)
                .map(|g| {
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .start_handler(|_| crate::cpu::flush_denormals())
                        .thread_name(move |i| format!("evoattn-replicas{g}-{i}"))
                        .build()
                        .map_err(|e| anyhow!("cannot start the threads of replica group {g}: {e}"))
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        Ok(Groups { groups, pools })
    }

    /// Number of groups.
    pub fn count(&self) -> usize {
        self.groups.len()
    }

    /// Replicas per group.
    pub fn per_group(&self) -> usize {
        self.groups[0].model.replicas()
    }

    /// AdamW's step counter (the same in every group).
    pub fn adam_t(&self) -> i32 {
        self.groups[0].opt.t
    }

    /// `f` on every group with its own `state`, the groups concurrently on their pools,
    /// results in group order. A panic in a group is resumed on the calling thread.
    pub fn run<S: Send, T: Send>(
        &mut self,
        states: Vec<S>,
        f: impl Fn(&mut Group, S) -> T + Sync,
    ) -> Vec<T> {
        debug_assert_eq!(states.len(), self.groups.len());
        if self.pools.is_empty() {
            return self
                .groups
                .iter_mut()
                .zip(states)
                .map(|(g, s)| f(g, s))
                .collect();
        }
        let f = &f;
        std::thread::scope(|scope| {
            // Groups 1.. on scoped threads, group 0 from this thread (so that a single group
            // on its own pool needs no extra thread at all).
            let mut each = self.groups.iter_mut().zip(states).zip(&self.pools);
            let ((g0, s0), pool0) = each.next().expect("at least one group");
            let handles: Vec<_> = each
                .map(|((g, s), pool)| scope.spawn(move || pool.install(|| f(g, s))))
                .collect();
            let first = pool0.install(|| f(g0, s0));
            std::iter::once(first)
                .chain(
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))),
                )
                .collect()
        })
    }

    /// Perplexity of every replica on `tokens` ([`super::evaluate`] per group).
    pub fn evaluate(&mut self, tokens: &[u32], batch_windows: usize) -> Result<Vec<f64>> {
        let states = vec![(); self.count()];
        let per_group = self.run(states, |g, ()| {
            super::evaluate(&g.model, tokens, batch_windows)
        });
        Ok(per_group.into_iter().collect::<Result<Vec<_>>>()?.concat())
    }

    /// Fault injection: NaN into replica `i`'s final LayerNorm gain.
    pub fn poison(&self, i: usize) -> candle_core::Result<()> {
        let per = self.per_group();
        poison_replica(&self.groups[i / per].model, i % per)
    }

    /// Replica `i`'s parameters, without the replica axis.
    pub fn replica_weights(&self, i: usize) -> candle_core::Result<Vec<checkpoint::Named>> {
        let per = self.per_group();
        super::replica_weights(&self.groups[i / per].model, i % per)
    }

    /// Shape of parameter `k` with the replica axis over every group.
    fn full_dims(&self, k: usize) -> Vec<usize> {
        let (_, var) = self.groups[0]
            .model
            .params
            .iter()
            .nth(k)
            .expect("every group has the same parameters");
        let mut d = var.as_tensor().dims().to_vec();
        d[0] *= self.groups.len();
        d
    }

    /// Every tensor of a checkpoint: parameters, AdamW moments (replica axis whole, in
    /// seed order) and per-replica losses.
    pub fn snapshot(&self, losses: &[Vec<f32>]) -> candle_core::Result<Vec<checkpoint::Named>> {
        let mut out = Vec::new();
        let first = &self.groups[0].model;
        for (k, (spec, _)) in first.params.iter().enumerate() {
            let dims = self.full_dims(k);
            let (mut p, mut m, mut v) = (Vec::new(), Vec::new(), Vec::new());
            for g in &self.groups {
                let (_, var) = g.model.params.iter().nth(k).expect("same parameters");
                p.extend(flat(var.as_tensor())?);
                m.extend(flat(&g.opt.m[k])?);
                v.extend(flat(&g.opt.v[k])?);
            }
            out.push((format!("param/{}", spec.name), dims.clone(), p));
            out.push((format!("adam_m/{}", spec.name), dims.clone(), m));
            out.push((format!("adam_v/{}", spec.name), dims, v));
        }
        for (i, l) in losses.iter().enumerate() {
            out.push((format!("losses/{i}"), vec![l.len()], l.clone()));
        }
        Ok(out)
    }

    /// Whether every parameter and moment tensor of a checkpoint is there with this
    /// run's shape.
    pub fn check_shapes(&self, tensors: &HashMap<String, (Vec<usize>, Vec<f32>)>) -> Result<()> {
        let first = &self.groups[0].model;
        for (k, (spec, _)) in first.params.iter().enumerate() {
            let dims = self.full_dims(k);
            for prefix in ["param", "adam_m", "adam_v"] {
                let name = format!("{prefix}/{}", spec.name);
                let (shape, _) = tensors
                    .get(&name)
                    .ok_or_else(|| anyhow!("tensor {name} is missing"))?;
                ensure!(
                    *shape == dims,
                    "tensor {name} has shape {shape:?}, the model {dims:?}"
                );
            }
        }
        Ok(())
    }

    /// Puts a checkpoint's parameters and AdamW state (checked by [`Self::check_shapes`])
    /// into the groups' fresh models.
    pub fn restore(
        &mut self,
        adam_t: i32,
        tensors: &HashMap<String, (Vec<usize>, Vec<f32>)>,
        device: &Device,
    ) -> Result<()> {
        for (gi, g) in self.groups.iter_mut().enumerate() {
            for (k, (spec, var)) in g.model.params.iter().enumerate() {
                let dtype = var.as_tensor().dtype();
                let dims = var.as_tensor().dims().to_vec();
                let n: usize = dims.iter().product();
                let get = |prefix: &str| -> Result<Tensor> {
                    let (_, v) = &tensors[&format!("{prefix}/{}", spec.name)];
                    let part = v[gi * n..(gi + 1) * n].to_vec();
                    Ok(Tensor::from_vec(part, dims.as_slice(), device)?.to_dtype(dtype)?)
                };
                var.set(&get("param")?)?;
                g.opt.m[k] = get("adam_m")?;
                g.opt.v[k] = get("adam_v")?;
            }
            g.opt.t = adam_t;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_config() -> ModelConfig {
        ModelConfig {
            vocab_size: 11,
            d_model: 8,
            n_layers: 1,
            n_heads: 2,
            seq_len: 4,
        }
    }

    /// Each group computes on a pool of its share of the threads, with denormals flushed
    /// like every other compute thread, and the groups run at the same time.
    #[test]
    fn groups_run_on_their_own_flushing_threads() {
        let mcfg = tiny_config();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        let (groups, seen) = pool.install(|| {
            let mut groups =
                Groups::new(Gene::BASELINE, mcfg, &[1, 2, 3, 4], &Device::Cpu, 2).unwrap();
            let meet = std::sync::Barrier::new(2);
            let seen = groups.run(vec![0usize, 1], |g, i| {
                // Both groups must be inside `run` at once for either to pass the barrier.
                meet.wait();
                (
                    i,
                    g.model.replicas(),
                    rayon::current_num_threads(),
                    crate::cpu::denormals_flushed(),
                    std::thread::current().name().map(str::to_owned),
                )
            });
            (groups, seen)
        });
        assert_eq!(groups.count(), 2);
        for (g, (i, reps, threads, flushed, name)) in seen.into_iter().enumerate() {
            assert_eq!((i, reps, threads), (g, 2, 2));
            assert_ne!(flushed, Some(false), "group {g} computes without FTZ/DAZ");
            assert!(
                name.is_some_and(|n| n.starts_with(&format!("evoattn-replicas{g}-"))),
                "group {g} runs off its pool"
            );
        }
        assert!(groups.poison(3).is_ok());
        let err = Groups::new(Gene::BASELINE, mcfg, &[1, 2, 3], &Device::Cpu, 2)
            .err()
            .unwrap();
        assert!(err.to_string().contains("must divide"), "{err}");
    }

    /// One group created outside any pool runs its work on a flushing worker of a pool of
    /// its own with the global pool's thread count; created inside a pool (an executor
    /// job's), it runs on the caller's worker and pool.
    #[test]
    fn a_single_group_runs_on_a_pool_worker() {
        let mcfg = tiny_config();
        let probe = |g: &mut Group, i: usize| {
            (
                i,
                g.model.replicas(),
                rayon::current_thread_index().is_some(),
                rayon::current_num_threads(),
                crate::cpu::denormals_flushed(),
                std::thread::current().name().map(str::to_owned),
            )
        };
        // outside any pool (a test thread is not a rayon worker)
        assert!(rayon::current_thread_index().is_none());
        let mut groups = Groups::new(Gene::BASELINE, mcfg, &[1, 2], &Device::Cpu, 1).unwrap();
        let seen = groups.run(vec![7usize], probe);
        let (i, reps, on_worker, threads, flushed, name) = seen.into_iter().next().unwrap();
        assert_eq!((i, reps), (7, 2));
        assert!(on_worker, "a single group must run on a pool worker");
        assert_eq!(threads, rayon::current_num_threads());
        assert_ne!(flushed, Some(false), "the group computes without FTZ/DAZ");
        assert!(
            name.as_deref()
                .is_some_and(|n| n.starts_with("evoattn-replicas0-")),
            "runs off its own pool: {name:?}"
        );
        // inside a pool: the caller's worker, no pool of its own
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .thread_name(|i| format!("caller-{i}"))
            .build()
            .unwrap();
        let seen = pool.install(|| {
            let mut groups = Groups::new(Gene::BASELINE, mcfg, &[1], &Device::Cpu, 1).unwrap();
            assert!(groups.pools.is_empty());
            groups.run(vec![0usize], probe)
        });
        let (_, reps, on_worker, threads, _, name) = seen.into_iter().next().unwrap();
        assert_eq!((reps, on_worker, threads), (1, true, 3));
        assert!(
            name.as_deref().is_some_and(|n| n.starts_with("caller-")),
            "{name:?}"
        );
    }

    #[test]
    fn groups_divide_replicas_and_threads() {
        let cpu = Device::Cpu;
        assert_eq!(auto_groups(1, 2, &cpu), 1);
        assert_eq!(auto_groups(2, 2, &cpu), 2);
        assert_eq!(auto_groups(4, 2, &cpu), 2);
        assert_eq!(auto_groups(3, 2, &cpu), 1);
        assert_eq!(auto_groups(2, 1, &cpu), 1);
        assert_eq!(auto_groups(6, 4, &cpu), 2);
        assert_eq!(auto_groups(8, 16, &cpu), 8);
        assert_eq!(auto_groups(5, 5, &cpu), 5);
    }
}
