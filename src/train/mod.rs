//! Training and evaluation of R replicas of one gene, one replica per seed.
//!
//! Everything that couples examples is per replica: the loss is a per-replica mean (the
//! graph's objective is the sum over replicas, so each replica's gradient is its own
//! loss's gradient), gradients are clipped to a global norm per replica, and a replica
//! whose loss or gradient norm turns non-finite is frozen and recorded as diverged at that
//! step while the others go on.
//!
//! Evaluation: perplexity = exp(mean NLL) over every token of a split, each predicted once,
//! in non-overlapping windows of `seq_len` tokens (the last window may be shorter; each
//! window starts with an empty context). See [`crate::data::batch::eval_windows`].

pub mod checkpoint;
pub mod config;
mod fused_adamw;
mod groups;
pub mod memory;
pub mod speed;
pub mod turns;

use crate::data::batch::{eval_windows, BatchStream};
use crate::data::Corpus;
use crate::gene::Gene;
use crate::model::Transformer;
use candle_core::{DType, Device, Tensor, Var};
pub use config::{
    ConfigError, ConfigField, FieldKind, FieldValue, Preset, SettingValue, TrainConfig,
};
pub use groups::auto_groups;
use serde::Serialize;
use std::time::Instant;

/// One point of a learning curve.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CurvePoint {
    /// Optimiser steps completed.
    pub step: usize,
    /// Mean training loss over the steps since the previous point.
    pub train_loss: f64,
    /// Validation perplexity at this step (None once the replica has diverged).
    pub val_ppl: Option<f64>,
}

/// The outcome of one replica (one seed).
#[derive(Debug, Clone, Serialize)]
pub struct SeedResult {
    /// The replica's seed.
    pub seed: u64,
    /// The step at which the loss or gradient turned non-finite, if it did.
    pub diverged_at: Option<usize>,
    /// Mean training loss over the last min(100, steps) completed steps.
    pub train_loss: f64,
    /// Validation perplexity at the end (None if diverged).
    pub val_ppl: Option<f64>,
    /// Test perplexity at the end (None if diverged or not requested).
    pub test_ppl: Option<f64>,
    /// Per-step training losses.
    #[serde(skip)]
    pub losses: Vec<f32>,
    /// Learning curve at `eval_every` steps and at the end.
    pub curve: Vec<CurvePoint>,
}

/// The outcome of one replica-batched run.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutput {
    /// The gene trained.
    pub gene: Gene,
    /// Trainable parameters of one replica.
    pub params_total: usize,
    /// Of them, outside the token and position embeddings.
    pub params_nonembed: usize,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Training tokens per second over all replicas (evaluation time excluded).
    pub tokens_per_s: f64,
    /// Wall time of the whole run, evaluation included.
    pub wall_s: f64,
    /// One result per replica, in seed order.
    pub seeds: Vec<SeedResult>,
    /// The step this run resumed at from a checkpoint (None: it started from scratch).
    pub resumed_from: Option<usize>,
    /// Checkpoints written (periodic ones; the run's own, deleted by the caller).
    pub checkpoints_written: usize,
    /// Seconds spent writing them.
    pub checkpoint_s: f64,
    /// Each replica's final weights, without the replica axis, when asked for.
    pub weights: Vec<Vec<checkpoint::Named>>,
    /// The step it stopped at ([`RunOptions::stop_at`]); then `steps` is that step.
    pub stopped_at: Option<usize>,
    /// The hardware its checkpoint was written on, when it resumed on other hardware.
    pub resumed_hardware: Option<String>,
    /// The concurrent groups its replicas trained in ([`RunOptions::replica_groups`]).
    pub replica_groups: usize,
}

/// What a progress callback is told after each step.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Steps done.
    pub step: usize,
    /// Steps in the run.
    pub steps: usize,
    /// Mean loss of this step over live replicas.
    pub loss: f64,
    /// Training tokens per second so far.
    pub tokens_per_s: f64,
}

/// Options of a run that do not change its result.
pub struct RunOptions<'a> {
    /// Measure test perplexity at the end.
    pub eval_test: bool,
    /// Called after every step.
    pub on_step: Option<&'a mut dyn FnMut(Progress)>,
    /// Stop after this many steps regardless of the schedule (benchmarks).
    pub max_steps: Option<usize>,
    /// Skip all evaluation (benchmarks).
    pub skip_eval: bool,
    /// Fault injection for tests: before step `.1`, write NaN into replica `.0`'s final
    /// LayerNorm gain, so that replica's loss turns non-finite.
    pub poison: Option<(usize, usize)>,
    /// Resume from and write mid-run checkpoints (and stop with a checkpoint on a signal:
    /// [`crate::interrupt`]). Without it, a signal stops the run without one.
    pub checkpoint: Option<checkpoint::Checkpointing>,
    /// Return each replica's final weights in [`RunOutput::weights`].
    pub keep_weights: bool,
    /// Stop after this step (a GA hurdle): validate there, write a checkpoint (with
    /// `checkpoint` set, whatever its interval) so that a later full run resumes from it,
    /// and return the results at that step. The checkpoint's curve leaves out this extra
    /// validation, so the full run stays bit-identical to one never stopped.
    pub stop_at: Option<usize>,
    /// Train the replicas in this many concurrent groups ([`auto_groups`] when None; 1
    /// batches them all). It must divide the number of seeds. The results do not depend
    /// on it.
    pub replica_groups: Option<usize>,
}

impl Default for RunOptions<'_> {
    fn default() -> Self {
        RunOptions {
            eval_test: true,
            on_step: None,
            max_steps: None,
            skip_eval: false,
            poison: None,
            checkpoint: None,
            keep_weights: false,
            stop_at: None,
            replica_groups: None,
        }
    }
}

/// AdamW over replica-batched parameters with per-replica update masks.
struct AdamW {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: i32,
    /// [`fused_adamw`] for contiguous f32 CPU parameters (bit-identical to the composite
    /// update, which other devices, `EVOATTN_REFERENCE_KERNELS=1` and a test use).
    fused: bool,
}

impl AdamW {
    fn new(model: &Transformer) -> candle_core::Result<Self> {
        let mut m = Vec::new();
        let mut v = Vec::new();
        for (_, var) in model.params.iter() {
            m.push(var.as_tensor().zeros_like()?);
            v.push(var.as_tensor().zeros_like()?);
        }
        let fused = !crate::model::kernels::reference_kernels();
        Ok(AdamW { m, v, t: 0, fused })
    }

    /// One step. `coef[r]` multiplies replica r's gradient (the clip factor, 0 when the
    /// replica is frozen); `live[r]` is 1 for replicas that may move.
    fn step(
        &mut self,
        model: &Transformer,
        grads: &candle_core::backprop::GradStore,
        coef: &[f32],
        live: &[f32],
        cfg: &TrainConfig,
        lr: f64,
    ) -> candle_core::Result<()> {
        self.t += 1;
        let bc1 = 1.0 - cfg.beta1.powi(self.t);
        let bc2 = 1.0 - cfg.beta2.powi(self.t);
        let reps = fused_adamw::Replicas { coef, live };
        let hyper = fused_adamw::Hyper {
            b1: cfg.beta1 as f32,
            one_minus_b1: (1.0 - cfg.beta1) as f32,
            b2: cfg.beta2 as f32,
            one_minus_b2: (1.0 - cfg.beta2) as f32,
            inv_bc1: (1.0 / bc1) as f32,
            inv_bc2: (1.0 / bc2) as f32,
            eps: cfg.eps as f32,
            weight_decay: None,
            lr: lr as f32,
        };
        // The composite update's per-replica tensors, made on first use.
        let mut masks: Option<(Tensor, Tensor)> = None;
        for (i, (spec, var)) in model.params.iter().enumerate() {
            let Some(g) = grads.get(var) else { continue };
            // Gradients that candle stores for variables still carry op history into the
            // forward graph; without detaching, m and v would chain every step's graph
            // together (a leak of ~40 MB per step on the cpu preset).
            let g = g.detach();
            let p = var.as_tensor();
            let decays = spec.decays() && cfg.weight_decay > 0.0;
            let cpu_f32 =
                |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous();
            if self.fused && cpu_f32(p) && cpu_f32(&self.m[i]) && cpu_f32(&self.v[i]) {
                let h = fused_adamw::Hyper {
                    weight_decay: decays.then_some(cfg.weight_decay as f32),
                    ..hyper
                };
                fused_adamw::step(p, &g, &self.m[i], &self.v[i], h, &reps)?;
                continue;
            }
            if masks.is_none() {
                let on = |x: &[f32]| Tensor::new(x, p.device())?.to_dtype(p.dtype());
                masks = Some((on(coef)?, on(live)?));
            }
            let (coef, live) = masks.as_ref().expect("set above");
            let g = &g;
            let shape = bshape(p);
            let live_b = live.reshape(shape.clone())?;
            // Select rather than multiply: a frozen replica's gradient may be NaN.
            let live_u8 = live_b.ne(0.0)?.broadcast_as(g.shape())?;
            let g = live_u8
                .where_cond(g, &g.zeros_like()?)?
                .broadcast_mul(&coef.reshape(shape)?)?;
            let m = ((&self.m[i] * cfg.beta1)? + (&g * (1.0 - cfg.beta1))?)?;
            let v = ((&self.v[i] * cfg.beta2)? + (g.sqr()? * (1.0 - cfg.beta2))?)?;
            let mut upd = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + cfg.eps)?)?;
            if decays {
                upd = (upd + (p * cfg.weight_decay)?)?;
            }
            let new = (p - (upd.broadcast_mul(&live_b)? * lr)?)?;
            var.set(&new)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }
}

/// `[R, 1, 1, …]` matching the rank of `t`.
fn bshape(t: &Tensor) -> Vec<usize> {
    let mut s = vec![1; t.rank()];
    s[0] = t.dim(0).unwrap_or(1);
    s
}

/// Per-replica global gradient norms `[R]` (f64 on the host).
fn grad_norms(
    model: &Transformer,
    grads: &candle_core::backprop::GradStore,
) -> candle_core::Result<Vec<f64>> {
    let r = model.replicas();
    let mut acc: Option<Tensor> = None;
    for (_, var) in model.params.iter() {
        if let Some(g) = grads.get(var) {
            let s = g.sqr()?.reshape((r, ()))?.sum(1)?.to_dtype(DType::F64)?;
            acc = Some(match acc {
                Some(a) => (a + s)?,
                None => s,
            });
        }
    }
    match acc {
        Some(a) => Ok(a.sqrt()?.to_vec1::<f64>()?),
        None => Ok(vec![0.0; r]),
    }
}

fn poison_replica(model: &Transformer, replica: usize) -> candle_core::Result<()> {
    let (_, var) = model
        .params
        .iter()
        .find(|(s, _)| s.name == "ln_f.g")
        .expect("ln_f.g exists");
    let t = var.as_tensor();
    let r = model.replicas();
    let add: Vec<f32> = (0..r)
        .map(|i| if i == replica { f32::NAN } else { 0.0 })
        .collect();
    let add = Tensor::from_vec(add, bshape(t), t.device())?.to_dtype(t.dtype())?;
    var.set(&t.broadcast_add(&add)?)
}

/// Token ids of R replicas' windows as `[R, B, T]` u32.
fn ids_tensor(
    rows: &[Vec<u32>],
    b: usize,
    t: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let r = rows.len();
    let flat: Vec<u32> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (r, b, t), device)
}

/// Perplexity of every replica on `tokens` (non-overlapping windows of seq_len).
pub fn evaluate(
    model: &Transformer,
    tokens: &[u32],
    batch_windows: usize,
) -> anyhow::Result<Vec<f64>> {
    let r = model.replicas();
    let dev = model.device().clone();
    let windows = eval_windows(tokens, model.cfg.seq_len);
    let mut nll = vec![0.0f64; r];
    let mut count = 0usize;
    // Group windows of equal length (all but possibly the last) into batches.
    let mut i = 0;
    while i < windows.len() {
        let len = windows[i].0.len();
        let mut j = i;
        while j < windows.len() && j - i < batch_windows && windows[j].0.len() == len {
            j += 1;
        }
        let b = j - i;
        let xs: Vec<u32> = windows[i..j]
            .iter()
            .flat_map(|w| w.0.iter().copied())
            .collect();
        let ys: Vec<u32> = windows[i..j]
            .iter()
            .flat_map(|w| w.1.iter().copied())
            .collect();
        let x = ids_tensor(&vec![xs; r], b, len, &dev)?;
        let y = ids_tensor(&vec![ys; r], b, len, &dev)?;
        let s = model
            .nll_sum(&x, &y)?
            .detach()
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        for (a, v) in nll.iter_mut().zip(s) {
            *a += v;
        }
        count += b * len;
        i = j;
    }
    Ok(nll.into_iter().map(|s| (s / count as f64).exp()).collect())
}

fn eval_slice<'a>(tokens: &'a [u32], cfg: &TrainConfig) -> &'a [u32] {
    match cfg.eval_max_tokens {
        Some(m) if m < tokens.len() => &tokens[..m],
        _ => tokens,
    }
}

/// Windows per evaluation batch.
pub const EVAL_BATCH: usize = 32;

/// Trains one replica per seed of `gene` under `cfg` on `corpus`.
pub fn train(
    gene: Gene,
    cfg: &TrainConfig,
    corpus: &Corpus,
    seeds: &[u64],
    device: &Device,
    mut opts: RunOptions<'_>,
) -> anyhow::Result<RunOutput> {
    cfg.check_trainable()?;
    cfg.check_data(corpus)?;
    anyhow::ensure!(!seeds.is_empty(), "at least one seed is needed");
    let start = Instant::now();
    let mcfg = cfg.model(corpus.vocab.len());
    let (params_total, params_nonembed) = Transformer::param_counts(gene, &mcfg);
    let r = seeds.len();
    let group_count = opts
        .replica_groups
        .unwrap_or_else(|| auto_groups(r, rayon::current_num_threads(), device));
    let mut groups = groups::Groups::new(gene, mcfg, seeds, device, group_count)?;
    let per = groups.per_group();
    let (b, t) = (cfg.batch_size, cfg.seq_len);
    let mut streams: Vec<BatchStream> = seeds
        .iter()
        .map(|&s| BatchStream::new(s, corpus.train.len(), b, t))
        .collect();
    let steps = opts.max_steps.unwrap_or(cfg.steps).min(cfg.steps);
    let mut live = vec![true; r];
    let mut diverged_at: Vec<Option<usize>> = vec![None; r];
    let mut losses: Vec<Vec<f32>> = vec![Vec::with_capacity(steps.min(1 << 16)); r];
    let mut curves: Vec<Vec<CurvePoint>> = vec![Vec::new(); r];
    let mut last_point = 0usize;
    let mut train_time = 0.0f64;
    let valid = eval_slice(&corpus.valid, cfg);
    let mut first = 0usize;
    let mut resumed_from = None;
    let ck = opts.checkpoint.take();
    // A hurdle run that finds a checkpoint past its hurdle (the full run's) trains from
    // scratch to the hurdle and leaves that checkpoint alone.
    let mut keep_later_checkpoint = false;
    let mut resumed_hardware: Option<String> = None;
    if let Some(ck) = &ck {
        match checkpoint::load(&ck.path).and_then(|found| match found {
            None => Ok(None),
            Some((state, _)) if opts.stop_at.is_some_and(|h| state.step > h) => {
                keep_later_checkpoint = true;
                Ok(None)
            }
            Some((state, tensors)) => {
                check_state(&state, &tensors, ck, gene, seeds, &groups, steps)?;
                Ok(Some((state, tensors)))
            }
        }) {
            Ok(None) => {}
            Ok(Some((state, tensors))) => {
                groups.restore(state.adam_t, &tensors, device)?;
                for (st, p) in streams.iter_mut().zip(&state.streams) {
                    st.set_position(p.parse::<u128>().expect("checked by check_state"));
                }
                if !state.hardware.is_empty() && state.hardware != ck.hardware {
                    eprintln!(
                        "warning: run {gene} seeds {seeds:?} resumes on {} a checkpoint written on {}: CPU results can depend on the CPU model, so this run may differ from one trained on a single machine (its hardware is recorded as both)",
                        ck.hardware, state.hardware
                    );
                    resumed_hardware = Some(state.hardware.clone());
                }
                live = state.live.clone();
                diverged_at = state.diverged_at.clone();
                for (i, l) in losses.iter_mut().enumerate() {
                    *l = tensors[&format!("losses/{i}")].1.clone();
                }
                curves = state
                    .curves
                    .iter()
                    .map(|c| c.iter().map(|p| p.to_curve()).collect())
                    .collect();
                last_point = state.last_point;
                train_time = state.train_time;
                first = state.step;
                resumed_from = Some(state.step);
            }
            Err(why) => {
                let to = checkpoint::reject(&ck.path, &ck.rejected_dir);
                eprintln!(
                    "warning: checkpoint {} is unusable: {why:#}; {}; training run {gene} seeds {seeds:?} from scratch",
                    ck.path.display(),
                    match to {
                        Ok(to) => format!("moved it to {}", to.display()),
                        Err(e) => format!("could not move it aside ({e})"),
                    }
                );
            }
        }
    }
    let resumed_train_time = train_time;
    let mut written = 0usize;
    let mut stopped_at: Option<usize> = None;
    let mut ck_time = 0.0f64;
    let mut last_ck_train = train_time;
    let mut last_write = 0.0f64;
    let save_now = |groups: &groups::Groups,
                    streams: &[BatchStream],
                    live: &[bool],
                    diverged_at: &[Option<usize>],
                    losses: &[Vec<f32>],
                    curves: &[Vec<CurvePoint>],
                    last_point: usize,
                    train_time: f64,
                    done: usize,
                    ck: &checkpoint::Checkpointing|
     -> anyhow::Result<f64> {
        let t0 = Instant::now();
        let state = checkpoint::State {
            key: ck.key.clone(),
            gene: gene.to_string(),
            seeds: seeds.to_vec(),
            step: done,
            adam_t: groups.adam_t(),
            streams: streams.iter().map(|s| s.position().to_string()).collect(),
            live: live.to_vec(),
            diverged_at: diverged_at.to_vec(),
            curves: curves
                .iter()
                .map(|c| c.iter().map(checkpoint::Point::from_curve).collect())
                .collect(),
            last_point,
            train_time,
            hardware: ck.hardware.clone(),
        };
        let tensors = groups.snapshot(losses)?;
        checkpoint::save(&ck.path, &state, &tensors)?;
        Ok(t0.elapsed().as_secs_f64())
    };

    // A hurdle run resumed exactly at its hurdle has nothing left to train.
    let end = if opts.stop_at == Some(first) && first > 0 {
        stopped_at = Some(first);
        first
    } else {
        steps
    };
    for step in first..end {
        let t0 = Instant::now();
        if let Some((pr, ps)) = opts.poison {
            if ps == step && pr < r {
                groups.poison(pr)?;
            }
        }
        let (xs, ys): (Vec<Vec<u32>>, Vec<Vec<u32>>) = streams
            .iter_mut()
            .map(|s| s.next_batch(&corpus.train))
            .unzip();
        let lr = cfg.lr_at(step);
        let states: Vec<_> = live
            .chunks_mut(per)
            .zip(diverged_at.chunks_mut(per))
            .zip(losses.chunks_mut(per))
            .zip(xs.chunks(per).zip(ys.chunks(per)))
            .collect();
        let lv: Vec<f32> = groups
            .run(states, |g, (((live, diverged_at), losses), (xs, ys))| {
                step_group(g, xs, ys, live, diverged_at, losses, cfg, step, lr, device)
            })
            .into_iter()
            .collect::<anyhow::Result<Vec<_>>>()?
            .concat();
        let dt = t0.elapsed().as_secs_f64();
        train_time += dt;
        let done = step + 1;
        if let Some(cb) = opts.on_step.as_mut() {
            let live_losses: Vec<f64> = (0..r).filter(|&i| live[i]).map(|i| lv[i] as f64).collect();
            let mean = if live_losses.is_empty() {
                f64::NAN
            } else {
                live_losses.iter().sum::<f64>() / live_losses.len() as f64
            };
            cb(Progress {
                step: done,
                steps,
                loss: mean,
                tokens_per_s: done as f64 * (r * b * t) as f64 / train_time,
            });
        }
        let at_eval = cfg.eval_every > 0 && done % cfg.eval_every == 0 && done < steps;
        if !opts.skip_eval && (at_eval || done == steps) {
            let ppl = groups.evaluate(valid, EVAL_BATCH)?;
            push_points(&mut curves, &losses, &live, last_point, done, &ppl);
            last_point = done;
        }
        if live.iter().all(|l| !l) {
            break;
        }
        if done < steps && opts.stop_at == Some(done) {
            if let Some(ck) = ck.as_ref().filter(|_| !keep_later_checkpoint) {
                save_now(
                    &groups,
                    &streams,
                    &live,
                    &diverged_at,
                    &losses,
                    &curves,
                    last_point,
                    train_time,
                    done,
                    ck,
                )?;
            }
            stopped_at = Some(done);
            break;
        }
        if done < steps {
            if crate::interrupt::requested() {
                if let Some(ck) = &ck {
                    if let Err(e) = save_now(
                        &groups,
                        &streams,
                        &live,
                        &diverged_at,
                        &losses,
                        &curves,
                        last_point,
                        train_time,
                        done,
                        ck,
                    ) {
                        eprintln!("warning: run {gene} seeds {seeds:?}: no checkpoint at step {done}: {e:#}; it resumes from its last one");
                    }
                }
                return Err(crate::interrupt::Interrupted { step: done }.into());
            }
            if let Some(ck) = &ck {
                let due = match ck.every {
                    checkpoint::Every::Off => false,
                    checkpoint::Every::Steps(n) => n > 0 && done % n == 0,
                    checkpoint::Every::Auto => {
                        train_time - last_ck_train >= 60.0f64.max(100.0 * last_write)
                    }
                };
                if due {
                    // A checkpoint that cannot be written costs resumability, not the run.
                    match save_now(&groups, &streams, &live, &diverged_at, &losses, &curves, last_point, train_time, done, ck) {
                        Ok(t) => {
                            last_write = t;
                            ck_time += t;
                            written += 1;
                        }
                        Err(e) => eprintln!(
                            "warning: run {gene} seeds {seeds:?}: checkpoint at step {done} not written: {e:#}"
                        ),
                    }
                    last_ck_train = train_time;
                }
            }
        }
    }

    if let Some(h) = stopped_at {
        // The hurdle's validation, unless this step's point is already on the curve; it is
        // not in the checkpoint, so the full run's curve is a never-stopped run's.
        let on_curve = curves.iter().any(|c| c.last().is_some_and(|p| p.step == h));
        if !opts.skip_eval && !on_curve {
            let ppl = groups.evaluate(valid, EVAL_BATCH)?;
            push_points(&mut curves, &losses, &live, last_point, h, &ppl);
        }
    }
    let test =
        if stopped_at.is_none() && opts.eval_test && !opts.skip_eval && live.iter().any(|&l| l) {
            Some(groups.evaluate(eval_slice(&corpus.test, cfg), EVAL_BATCH)?)
        } else {
            None
        };
    let results = (0..r)
        .map(|i| {
            let train_loss = mean(&losses[i][losses[i].len().saturating_sub(100)..]);
            SeedResult {
                seed: seeds[i],
                diverged_at: diverged_at[i],
                train_loss,
                val_ppl: if live[i] {
                    curves[i].last().and_then(|c| c.val_ppl)
                } else {
                    None
                },
                test_ppl: if live[i] {
                    test.as_ref().map(|t| t[i])
                } else {
                    None
                },
                losses: std::mem::take(&mut losses[i]),
                curve: std::mem::take(&mut curves[i]),
            }
        })
        .collect();
    let weights = if opts.keep_weights {
        (0..r)
            .map(|i| groups.replica_weights(i))
            .collect::<candle_core::Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    Ok(RunOutput {
        gene,
        params_total,
        params_nonembed,
        steps: stopped_at.unwrap_or(steps),
        tokens_per_s: (stopped_at.unwrap_or(steps) - first) as f64 * (r * b * t) as f64
            / (train_time - resumed_train_time).max(1e-9),
        wall_s: start.elapsed().as_secs_f64(),
        seeds: results,
        stopped_at,
        resumed_from,
        resumed_hardware,
        checkpoints_written: written,
        checkpoint_s: ck_time,
        weights,
        replica_groups: groups.count(),
    })
}

/// The mean of `v` in f64 (NaN when empty).
fn mean(v: &[f32]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
    }
}

/// A curve point at `step` for every replica: its mean training loss since `last_point`
/// and, while it is live, its validation ppl.
fn push_points(
    curves: &mut [Vec<CurvePoint>],
    losses: &[Vec<f32>],
    live: &[bool],
    last_point: usize,
    step: usize,
    ppl: &[f64],
) {
    for (i, c) in curves.iter_mut().enumerate() {
        c.push(CurvePoint {
            step,
            train_loss: mean(&losses[i][last_point.min(losses[i].len())..]),
            val_ppl: live[i].then_some(ppl[i]),
        });
    }
}

fn flat(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

/// Replica `i`'s parameters, without the replica axis.
fn replica_weights(model: &Transformer, i: usize) -> candle_core::Result<Vec<checkpoint::Named>> {
    model
        .params
        .iter()
        .map(|(spec, var)| {
            let t = var.as_tensor().get(i)?;
            Ok((spec.name.clone(), t.dims().to_vec(), flat(&t)?))
        })
        .collect()
}

/// Whether a loaded checkpoint is this run's: key, gene, seeds, step range and every
/// tensor's shape.
fn check_state(
    state: &checkpoint::State,
    tensors: &std::collections::HashMap<String, (Vec<usize>, Vec<f32>)>,
    ck: &checkpoint::Checkpointing,
    gene: Gene,
    seeds: &[u64],
    groups: &groups::Groups,
    steps: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        state.key == ck.key && state.gene == gene.to_string() && state.seeds == seeds,
        "it belongs to another run ({} seeds {:?}, key {})",
        state.gene,
        state.seeds,
        state.key
    );
    let r = seeds.len();
    anyhow::ensure!(
        state.step > 0 && state.step < steps,
        "its step {} is outside this run's 1..{steps}",
        state.step
    );
    anyhow::ensure!(
        state.streams.len() == r
            && state.live.len() == r
            && state.diverged_at.len() == r
            && state.curves.len() == r,
        "it holds state for a different number of replicas"
    );
    groups.check_shapes(tensors)?;
    for i in 0..r {
        anyhow::ensure!(
            tensors.contains_key(&format!("losses/{i}")),
            "tensor losses/{i} is missing"
        );
    }
    for p in &state.streams {
        p.parse::<u128>()
            .map_err(|e| anyhow::anyhow!("batch-stream position `{p}` does not parse: {e}"))?;
    }
    Ok(())
}

/// One optimiser step of one group of replicas on their batches `xs`, `ys` (one per
/// replica): a replica whose loss or gradient norm turns non-finite is frozen and recorded
/// as diverged at `step`; each live one's loss is appended to its `losses`. Returns the
/// group's per-replica losses.
#[allow(clippy::too_many_arguments)]
fn step_group(
    g: &mut groups::Group,
    xs: &[Vec<u32>],
    ys: &[Vec<u32>],
    live: &mut [bool],
    diverged_at: &mut [Option<usize>],
    losses: &mut [Vec<f32>],
    cfg: &TrainConfig,
    step: usize,
    lr: f64,
    device: &Device,
) -> anyhow::Result<Vec<f32>> {
    let (b, t) = (cfg.batch_size, cfg.seq_len);
    let x = ids_tensor(xs, b, t, device)?;
    let y = ids_tensor(ys, b, t, device)?;
    let (loss, deferred) = g.model.loss_deferred(&x, &y)?; // [R/G]
    let mut grads = loss.sum_all()?.backward()?;
    g.model.add_deferred_grad(&mut grads, deferred)?;
    let lv: Vec<f32> = loss.to_dtype(DType::F32)?.to_vec1()?;
    let norms = grad_norms(&g.model, &grads)?;
    let mut coef = vec![0f32; lv.len()];
    for i in 0..lv.len() {
        if live[i] && (!lv[i].is_finite() || !norms[i].is_finite()) {
            live[i] = false;
            diverged_at[i] = Some(step);
        }
        if live[i] {
            coef[i] = (cfg.grad_clip / (norms[i] + 1e-6)).min(1.0) as f32;
            losses[i].push(lv[i]);
        }
    }
    let live_f: Vec<f32> = live.iter().map(|&l| l as u8 as f32).collect();
    g.opt.step(&g.model, &grads, &coef, &live_f, cfg, lr)?;
    Ok(lv)
}

/// Gradient of every parameter after one forward/backward pass on a batch (for tests).
pub fn gradients(
    model: &Transformer,
    x: &Tensor,
    y: &Tensor,
) -> candle_core::Result<Vec<(String, Option<Tensor>)>> {
    let grads = model.loss(x, y)?.sum_all()?.backward()?;
    Ok(model
        .params
        .iter()
        .map(|(s, v): (_, &Var)| (s.name.clone(), grads.get(v).cloned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;

    /// Regression test: optimiser state must not carry op history (it chained every step's
    /// graph together and leaked ~40 MB per step).
    #[test]
    fn optimizer_state_is_detached() {
        let cfg = ModelConfig {
            vocab_size: 20,
            d_model: 8,
            n_layers: 1,
            n_heads: 2,
            seq_len: 4,
        };
        let model =
            Transformer::new(Gene::BASELINE, cfg, &[1, 2], DType::F32, &Device::Cpu).unwrap();
        let x = Tensor::from_vec(
            (0..16u32).map(|i| i % 20).collect::<Vec<_>>(),
            (2, 2, 4),
            &Device::Cpu,
        )
        .unwrap();
        let mut opt = AdamW::new(&model).unwrap();
        let tc = Preset::Smoke.config();
        for _ in 0..2 {
            let grads = model
                .loss(&x, &x)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            opt.step(&model, &grads, &[1.0; 2], &[1.0; 2], &tc, 1e-3)
                .unwrap();
        }
        for (m, v) in opt.m.iter().zip(&opt.v) {
            assert!(!m.track_op() && !v.track_op(), "optimizer state tracks ops");
        }
    }

    /// The fused CPU update gives the same bits as the composite one, for clipped, frozen
    /// (with a NaN gradient) and live replicas, decayed and undecayed parameters.
    #[test]
    fn fused_adamw_is_bit_identical_to_the_composite_update() {
        let cfg = ModelConfig {
            vocab_size: 40,
            d_model: 16,
            n_layers: 2,
            n_heads: 2,
            seq_len: 6,
        };
        let dev = Device::Cpu;
        let gene: Gene = "dot+alpha_entmax+highway+learned".parse().unwrap();
        let models: Vec<Transformer> = (0..2)
            .map(|_| Transformer::new(gene, cfg, &[1, 2, 3], DType::F32, &dev).unwrap())
            .collect();
        let x = Tensor::from_vec(
            (0..36u32).map(|i| (i * 7) % 40).collect::<Vec<_>>(),
            (3, 2, 6),
            &dev,
        )
        .unwrap();
        let mut tc = Preset::Smoke.config();
        tc.weight_decay = 0.1;
        let mut opts = [
            AdamW::new(&models[0]).unwrap(),
            AdamW::new(&models[1]).unwrap(),
        ];
        opts[0].fused = true;
        opts[1].fused = false;
        let bits = crate::model::kernels::bits;
        for step in 0..4 {
            let coef = [1.0f32, 0.37, 1.0];
            let live = [1.0f32, 1.0, if step >= 2 { 0.0 } else { 1.0 }];
            for (model, opt) in models.iter().zip(opts.iter_mut()) {
                if step == 2 {
                    poison_replica(model, 2).unwrap(); // replica 2's gradients become NaN
                }
                let grads = model
                    .loss(&x, &x)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                opt.step(model, &grads, &coef, &live, &tc, 3e-3).unwrap();
            }
            for (((_, a), (_, b)), i) in models[0]
                .params
                .iter()
                .zip(models[1].params.iter())
                .zip(0..)
            {
                assert_eq!(
                    bits(a.as_tensor()),
                    bits(b.as_tensor()),
                    "step {step}: parameter {i}"
                );
                assert_eq!(
                    bits(&opts[0].m[i]),
                    bits(&opts[1].m[i]),
                    "step {step}: m {i}"
                );
                assert_eq!(
                    bits(&opts[0].v[i]),
                    bits(&opts[1].v[i]),
                    "step {step}: v {i}"
                );
            }
        }
    }

    /// With every gradient scaled to 0 (coef 0) and lr 1, an AdamW step is pure decoupled
    /// decay: decayed parameters shrink by (1 − wd), the others do not move at all.
    #[test]
    fn decay_moves_only_decayed_parameters() {
        let cfg = ModelConfig {
            vocab_size: 20,
            d_model: 8,
            n_layers: 1,
            n_heads: 2,
            seq_len: 4,
        };
        let gene: Gene = "qk_rmsnorm+alpha_entmax+highway+learned_head"
            .parse()
            .unwrap();
        let model = Transformer::new(gene, cfg, &[3], DType::F32, &Device::Cpu).unwrap();
        let before: Vec<Vec<f32>> = model
            .params
            .iter()
            .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect();
        let x = Tensor::from_vec((0..8u32).collect::<Vec<_>>(), (1, 2, 4), &Device::Cpu).unwrap();
        let grads = model
            .loss(&x, &x)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let mut opt = AdamW::new(&model).unwrap();
        let tc = Preset::Smoke.config();
        opt.step(&model, &grads, &[0.0], &[1.0], &tc, 1.0).unwrap();
        let mut decayed = 0;
        for ((spec, var), b) in model.params.iter().zip(&before) {
            let after: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let factor = if spec.decays() {
                1.0 - tc.weight_decay as f32
            } else {
                1.0
            };
            for (a, b) in after.iter().zip(b) {
                assert!(
                    (a - b * factor).abs() <= 1e-6 * b.abs().max(1.0),
                    "{}: {b} -> {a}",
                    spec.name
                );
            }
            decayed += spec.decays() as usize;
        }
        assert!(decayed > 0 && decayed < model.params.iter().count());
    }

    /// `forward` (logits) and the fused `nll_sum` describe the same model.
    #[test]
    fn forward_logits_agree_with_fused_nll() {
        let cfg = ModelConfig {
            vocab_size: 30,
            d_model: 8,
            n_layers: 2,
            n_heads: 2,
            seq_len: 6,
        };
        let model = Transformer::new(
            Gene::PUBLISHED_WINNER,
            cfg,
            &[1, 2],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let ids = Tensor::from_vec(
            (0..24u32).map(|i| (i * 7) % 30).collect::<Vec<_>>(),
            (2, 2, 6),
            &Device::Cpu,
        )
        .unwrap();
        let tg = Tensor::from_vec(
            (0..24u32).map(|i| (i * 11) % 30).collect::<Vec<_>>(),
            (2, 2, 6),
            &Device::Cpu,
        )
        .unwrap();
        let fused: Vec<f32> = model.nll_sum(&ids, &tg).unwrap().to_vec1().unwrap();
        let logp =
            candle_nn::ops::log_softmax(&model.forward(&ids).unwrap(), candle_core::D::Minus1)
                .unwrap();
        let picked = logp.gather(&tg.reshape((2, 12, 1)).unwrap(), 2).unwrap();
        let composite: Vec<f32> = picked
            .sum((1, 2))
            .unwrap()
            .neg()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (a, b) in fused.iter().zip(&composite) {
            assert!((a - b).abs() < 1e-4 * b.abs(), "{a} vs {b}");
        }
    }
}
