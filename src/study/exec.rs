//! Execution: trains the packs of a stage on a device with `jobs` concurrent runs, claims
//! them in the store so several processes can share a study, writes each finished pack
//! atomically, and waits for packs that other processes hold.
//!
//! A pack whose training fails (an error, or a panic caught at the pack) is recorded in
//! the store ([`super::store::Failure`], `failed/<pack>.json`), its claim is released and
//! the other packs go on; [`Executor::failed`] lists it and the stage is not complete.
//! Store errors (a full disk, say) stop the run. A runs file that is not a finished pack
//! ([`super::store::PackCheck::Bad`]) is moved to `rejected/` with a warning, holding the
//! pack's claim, and the pack is retrained.
//!
//! For tests, `EVOATTN_FAIL_PACKS=panic:GENE` (or `error:GENE`, comma-separated) makes
//! every pack of that gene fail at the start of its training.

use super::cost::{CostModel, PackOrder};
use super::plan::{in_shard, Pack, Planner};
use super::spec::Study;
use super::store::{Claim, Failure, PackCheck, Store};
use super::Runner;
use crate::data::Corpus;
use crate::gene::Gene;
use crate::record::{now_rfc3339, CurveRow, RunRow, Stage};
use crate::train::checkpoint::{self, Checkpointing};
use crate::train::{self, Progress, RunOptions};
use crate::version::{CRATE_VERSION, ENGINE_VERSION, GIT_COMMIT};
use anyhow::{anyhow, Result};
use candle_core::Device;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a study is executed; none of this changes a result.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Concurrent runs in this process.
    pub jobs: usize,
    /// Compute threads per run.
    pub threads_per_job: usize,
    /// Device.
    pub device: Device,
    /// Its name in the store (`cpu`, `cuda:0`).
    pub device_name: String,
    /// This process runs packs `index % n == i`.
    pub shard: (usize, usize),
    /// Log lines instead of progress bars.
    pub quiet: bool,
    /// When packs write mid-run checkpoints (under `checkpoints/`).
    pub checkpoint_every: crate::train::checkpoint::Every,
    /// Keep each unit's final weights as `weights/<unit>.safetensors`.
    pub save_weights: bool,
    /// The hardware a unit runs on, as recorded in `runs.parquet` (CPU model or GPU name).
    pub hardware: String,
    /// In which order a stage's packs start.
    pub pack_order: PackOrder,
}

/// Packs with their position in the stage's pack list (which decides the shard).
type Indexed = Vec<(usize, Pack)>;

/// How long to wait between looks at packs other processes hold.
const POLL: Duration = Duration::from_millis(1500);

/// Trains what a stage needs.
pub struct Executor<'a> {
    /// The study's store.
    pub store: Store,
    /// Study name (goes into every row).
    pub study: String,
    /// Preset name (goes into every row).
    pub preset: String,
    /// Planner (configuration, data fingerprint, replicas).
    pub planner: Planner,
    /// Data.
    pub corpus: &'a Corpus,
    /// Options.
    pub opts: ExecOptions,
    /// Units trained by this process.
    pub trained: usize,
    /// Units found already finished.
    pub reused: usize,
    /// Units requested by earlier stages (and generations) of this plan.
    pub earlier: std::collections::HashSet<String>,
    /// Packs whose training failed in this process (also recorded in the store).
    pub failed: Vec<Failure>,
}

struct Shared<'s> {
    queue: Mutex<VecDeque<(Pack, Option<Instant>)>>,
    store: &'s Mutex<&'s mut Store>,
    claims: Mutex<Vec<Claim>>,
    stop: AtomicBool,
    /// A signal stopped this stage (packs in flight checkpointed, claims released).
    interrupted: AtomicBool,
    error: Mutex<Option<anyhow::Error>>,
    trained: Mutex<usize>,
    failed: Mutex<Vec<Failure>>,
    /// When the holder of a pack was last reported, per pack.
    told: Mutex<HashMap<String, Instant>>,
}

impl<'a> Executor<'a> {
    /// An executor of `study` over `store`, planning with `planner`, training on `corpus`.
    pub fn new(
        study: &Study,
        store: Store,
        planner: Planner,
        corpus: &'a Corpus,
        opts: ExecOptions,
    ) -> Executor<'a> {
        Executor {
            store,
            study: study.name.clone(),
            preset: study.preset.to_string(),
            planner,
            corpus,
            opts,
            trained: 0,
            reused: 0,
            earlier: Default::default(),
            failed: Vec::new(),
        }
    }

    /// Makes sure every `(gene, seed)` of `requests` is finished in the store: trains this
    /// shard's unclaimed packs, waits for packs other processes hold (taking them over when
    /// their claims go stale). With `need_all`, also waits for other shards' packs (the GA
    /// needs a whole generation). Returns whether every request is finished.
    pub fn ensure(
        &mut self,
        stage: Stage,
        requests: &[(Gene, u64)],
        need_all: bool,
    ) -> Result<bool> {
        self.store.refresh()?;
        // Pack composition and shard assignment depend only on the plan (units of earlier
        // stages are left out), never on what the store holds, so every process and shard
        // forms the same packs whenever it starts.
        let packs = self
            .planner
            .pack(requests, |u| self.earlier.contains(&u.id));
        for &(g, s) in requests {
            self.earlier.insert(self.planner.unit(g, s).id);
        }
        self.ensure_packs(stage, packs, need_all)
    }

    /// [`Executor::ensure`] for a GA hurdle: trains the requests' packs to step `at` only
    /// (their own ids, `-h<at>`), keeping their checkpoints so that the full runs of the
    /// genes that pass resume there. The requests are not marked as requested (the full
    /// units form the same packs later).
    pub fn ensure_hurdle(&mut self, requests: &[(Gene, u64)], at: usize) -> Result<bool> {
        self.store.refresh()?;
        let packs: Vec<Pack> = self
            .planner
            .pack(requests, |u| self.earlier.contains(&u.id))
            .iter()
            .map(|p| p.to_hurdle(at))
            .collect();
        self.ensure_packs(Stage::Hurdle, packs, true)
    }

    fn ensure_packs(&mut self, stage: Stage, packs: Vec<Pack>, need_all: bool) -> Result<bool> {
        let store = &self.store;
        let total_units: usize = packs.iter().map(|p| p.units.len()).sum();
        let packs: Vec<(usize, Pack)> = packs
            .into_iter()
            .enumerate()
            .filter(|(_, p)| store.pack_check(p) != PackCheck::Finished)
            .collect();
        let pending_units: usize = packs.iter().map(|(_, p)| p.units.len()).sum();
        self.reused += total_units - pending_units;
        let (mut mine, others): (Indexed, Indexed) = packs
            .into_iter()
            .partition(|(i, _)| in_shard(*i, self.opts.shard));
        if self.opts.pack_order == PackOrder::LongestFirst {
            // Only the order changes (the shard of a pack is decided above, by plan index).
            let cfg = &self.planner.config;
            CostModel::new(store.all_runs()).longest_first(
                &mut mine,
                |(_, p)| p,
                cfg.steps,
                cfg.batch_size * cfg.seq_len,
            );
        }
        if mine.is_empty() && others.is_empty() {
            return Ok(true);
        }
        let my_units: usize = mine.iter().map(|(_, p)| p.units.len()).sum();
        let multi = MultiProgress::with_draw_target(
            if self.opts.quiet || !std::io::stderr().is_terminal() {
                ProgressDrawTarget::hidden()
            } else {
                ProgressDrawTarget::stderr()
            },
        );
        let overall = multi.add(ProgressBar::new(my_units as u64));
        overall.set_style(
            ProgressStyle::with_template(
                "{prefix:.bold} [{bar:30}] {pos}/{len} units  {elapsed} elapsed, eta {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        overall.set_prefix(format!("{}/{stage}", self.study));
        if self.opts.quiet || !std::io::stderr().is_terminal() {
            eprintln!(
                "[{}] {stage}: {my_units} unit(s) to train in {} run(s) ({} already finished{})",
                self.study,
                mine.len(),
                total_units - pending_units,
                if others.is_empty() {
                    String::new()
                } else {
                    format!(", {} run(s) belong to other shards", others.len())
                }
            );
        }

        let mine_runs = mine.len();
        let store_dir = self.store.dir.clone();
        let store_lock = Mutex::new(&mut self.store);
        let shared = Shared {
            queue: Mutex::new(mine.into_iter().map(|(_, p)| (p, None)).collect()),
            store: &store_lock,
            claims: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            interrupted: AtomicBool::new(false),
            error: Mutex::new(None),
            trained: Mutex::new(0),
            failed: Mutex::new(Vec::new()),
            told: Mutex::new(HashMap::new()),
        };
        let ctx = RowContext {
            study: &self.study,
            stage,
            preset: &self.preset,
            planner: &self.planner,
            opts: &self.opts,
            dir: store_dir,
        };
        let corpus = self.corpus;
        let hb_stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let hb = s.spawn(|| {
                let mut last = Instant::now();
                while !hb_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    if last.elapsed() >= Duration::from_secs(15) {
                        for c in lock(&shared.claims).iter() {
                            Store::heartbeat(c);
                        }
                        last = Instant::now();
                    }
                }
            });
            // No more workers than runs to train (results do not depend on it).
            let workers: Vec<_> = (0..self.opts.jobs.max(1).min(mine_runs.max(1)))
                .map(|w| {
                    let shared = &shared;
                    let ctx = &ctx;
                    let bar = multi.add(ProgressBar::new(ctx.planner.config.steps as u64));
                    bar.set_style(
                        ProgressStyle::with_template("  {prefix} [{bar:20}] {pos}/{len} {msg}")
                            .expect("template")
                            .progress_chars("=> "),
                    );
                    let overall = overall.clone();
                    s.spawn(move || {
                        if let Err(e) = worker(w, shared, ctx, corpus, &bar, &overall) {
                            shared.stop.store(true, Ordering::SeqCst);
                            lock(&shared.error).get_or_insert(e);
                        }
                        bar.finish_and_clear();
                    })
                })
                .collect();
            for w in workers {
                if let Err(p) = w.join() {
                    // A panic outside a pack's training (those are caught per pack).
                    shared.stop.store(true, Ordering::SeqCst);
                    lock(&shared.error).get_or_insert(anyhow!(
                        "internal error: a worker thread panicked: {}",
                        panic_message(p.as_ref())
                    ));
                }
            }
            hb_stop.store(true, Ordering::Relaxed);
            let _ = hb.join();
        });
        overall.finish_and_clear();
        // Claims a worker could not give back (it stopped on an error) are released here.
        {
            let store = lock(shared.store);
            for c in lock(&shared.claims).drain(..) {
                store.release(c);
            }
        }
        self.trained += *lock(&shared.trained);
        let interrupted = shared.interrupted.load(Ordering::SeqCst);
        let failed = std::mem::take(&mut *lock(&shared.failed));
        let any_failed = !failed.is_empty();
        self.failed.extend(failed);
        if let Some(e) = shared.error.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        if interrupted || crate::interrupt::requested() {
            return Err(crate::interrupt::Interrupted { step: 0 }.into());
        }
        if any_failed {
            // The stage cannot complete; the GA must not wait for other shards either.
            return Ok(false);
        }
        // Other shards' packs: the GA waits for them, other stages leave them.
        self.store.refresh()?;
        let mut announced = false;
        let mut last_told = Instant::now();
        loop {
            let waiting: Vec<&Pack> = others
                .iter()
                .map(|(_, p)| p)
                .filter(|p| self.store.pack_check(p) != PackCheck::Finished)
                .collect();
            if waiting.is_empty() {
                return Ok(true);
            }
            if !need_all {
                return Ok(false);
            }
            // A pack that failed elsewhere and that nobody holds will not finish by waiting.
            for p in &waiting {
                if let Some(f) = self.store.failure(&p.id) {
                    if self.store.holder(&p.id)?.is_none() {
                        eprintln!(
                            "[{}] {stage}: run {} seeds {:?} failed in pid {} on {} at {}: {}; not waiting for it",
                            self.study, p.gene, p.seeds(), f.pid, f.host, f.at, f.message
                        );
                        return Ok(false);
                    }
                }
            }
            if !announced || last_told.elapsed() >= Duration::from_secs(60) {
                let held: Vec<String> = waiting
                    .iter()
                    .take(3)
                    .filter_map(|p| {
                        let h = self.store.holder(&p.id).ok().flatten()?;
                        Some(format!(
                            "{} seeds {:?}: {}",
                            p.gene,
                            p.seeds(),
                            h.describe()
                        ))
                    })
                    .collect();
                eprintln!(
                    "[{}] {stage}: waiting for {} run(s) of other shards (start them with --shard j/{}){}",
                    self.study,
                    waiting.len(),
                    self.opts.shard.1,
                    if held.is_empty() {
                        String::new()
                    } else {
                        format!("; held: {}", held.join("; "))
                    }
                );
                announced = true;
                last_told = Instant::now();
            }
            std::thread::sleep(POLL);
            if crate::interrupt::requested() {
                return Err(crate::interrupt::Interrupted { step: 0 }.into());
            }
            self.store.refresh()?;
        }
    }
}

impl Runner for Executor<'_> {
    fn ensure(&mut self, stage: Stage, requests: &[(Gene, u64)], need_all: bool) -> Result<bool> {
        Executor::ensure(self, stage, requests, need_all)
    }
    fn finished(&self, gene: Gene, seed: u64) -> Option<&RunRow> {
        self.store.run(&self.planner.unit(gene, seed).id)
    }
    fn ensure_hurdle(&mut self, requests: &[(Gene, u64)], at: usize) -> Result<bool> {
        Executor::ensure_hurdle(self, requests, at)
    }
    fn finished_hurdle(&self, gene: Gene, seed: u64, at: usize) -> Option<&RunRow> {
        self.store.run(&super::plan::hurdle_unit_id(
            &self.planner.unit(gene, seed).id,
            at,
        ))
    }
    fn planner(&self) -> &Planner {
        &self.planner
    }
    fn planner_mut(&mut self) -> &mut Planner {
        &mut self.planner
    }
}

struct RowContext<'c> {
    study: &'c str,
    stage: Stage,
    preset: &'c str,
    planner: &'c Planner,
    opts: &'c ExecOptions,
    /// The study's store folder.
    dir: std::path::PathBuf,
}

impl RowContext<'_> {
    fn checkpoint_path(&self, pack: &Pack) -> std::path::PathBuf {
        self.dir
            .join("checkpoints")
            .join(format!("{}.safetensors", pack.base_id()))
    }
}

fn next_pack(shared: &Shared<'_>) -> Option<(Pack, Option<Instant>)> {
    lock(&shared.queue).pop_front()
}

/// Locks a mutex, also after a panic elsewhere poisoned it (what it guards stays
/// consistent: every critical section here either completes or changes nothing).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The message of a panic payload.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// What happened to a pack a worker picked.
enum Picked {
    /// Ours to train, under this claim.
    Claimed(Claim),
    /// Finished (by another process, or found so under the claim).
    Finished,
    /// Another live process holds it: look again later.
    Held,
}

/// Claims `pack` and checks, holding the claim, whether it still needs training; a runs
/// file that is not a finished pack is moved aside first.
fn pick(shared: &Shared<'_>, ctx: &RowContext<'_>, pack: &Pack) -> Result<Picked> {
    let mut store = lock(shared.store);
    store.refresh()?;
    if store.pack_check(pack) == PackCheck::Finished {
        return Ok(Picked::Finished);
    }
    let Some(claim) = store.claim(&pack.id)? else {
        let now = Instant::now();
        let mut told = lock(&shared.told);
        let due = told
            .get(&pack.id)
            .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(30));
        if due {
            if let Some(h) = store.holder(&pack.id)? {
                eprintln!(
                    "[{}] {}: run {} seeds {:?} is held by {}; waiting for it — it is taken over when that process exits or, if its heartbeat stops, in {} s at most",
                    ctx.study,
                    ctx.stage,
                    pack.gene,
                    pack.seeds(),
                    h.describe(),
                    h.takeover_in().as_secs()
                );
            }
            told.insert(pack.id.clone(), now);
        }
        return Ok(Picked::Held);
    };
    // Holding the claim: nobody else writes this pack now.
    let checked = store.refresh().map(|_| store.pack_check(pack));
    let checked = match checked {
        Ok(PackCheck::Bad(why)) => {
            let moved = store.reject(&pack.id);
            match moved {
                Ok(to) => {
                    eprintln!(
                        "warning: [{}] {}: {} is not a finished pack of run {} seeds {:?}: {why}; moved it to {} and retraining the pack",
                        ctx.study,
                        ctx.stage,
                        store.dir.join("packs").join(format!("{}.runs.parquet", pack.id)).display(),
                        pack.gene,
                        pack.seeds(),
                        to.display()
                    );
                    Ok(store.pack_check(pack))
                }
                Err(e) => Err(e),
            }
        }
        other => other,
    };
    match checked {
        Ok(PackCheck::Finished) => {
            store.release(claim);
            Ok(Picked::Finished)
        }
        Ok(_) => Ok(Picked::Claimed(claim)),
        Err(e) => {
            store.release(claim);
            Err(e)
        }
    }
}

/// Which packs to fail on purpose (tests): `EVOATTN_FAIL_PACKS=panic:GENE,error:GENE`.
fn injected_failure(gene: Gene) -> Option<&'static str> {
    let v = std::env::var("EVOATTN_FAIL_PACKS").ok()?;
    v.split(',').find_map(|item| {
        let (how, g) = item.trim().split_once(':')?;
        if g.trim() != gene.to_string() {
            return None;
        }
        match how.trim() {
            "panic" => Some("panic"),
            "error" => Some("error"),
            _ => None,
        }
    })
}

fn worker(
    index: usize,
    shared: &Shared<'_>,
    ctx: &RowContext<'_>,
    corpus: &Corpus,
    bar: &ProgressBar,
    overall: &ProgressBar,
) -> Result<()> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(ctx.opts.threads_per_job.max(1))
        .start_handler(|_| crate::cpu::flush_denormals())
        .thread_name(move |i| format!("evoattn-job{index}-{i}"))
        .build()
        .map_err(|e| anyhow!("cannot start compute threads: {e}"))?;
    crate::cpu::flush_denormals();
    while !shared.stop.load(Ordering::SeqCst) {
        if crate::interrupt::requested() {
            shared.interrupted.store(true, Ordering::SeqCst);
            return Ok(());
        }
        let Some((pack, not_before)) = next_pack(shared) else {
            return Ok(());
        };
        if let Some(t) = not_before {
            let now = Instant::now();
            if t > now {
                std::thread::sleep((t - now).min(POLL));
            }
        }
        let claim = match pick(shared, ctx, &pack)? {
            Picked::Claimed(c) => c,
            Picked::Finished => {
                overall.inc(pack.units.len() as u64);
                continue;
            }
            Picked::Held => {
                lock(&shared.queue).push_back((pack, Some(Instant::now() + POLL)));
                continue;
            }
        };
        lock(&shared.claims).push(claim.clone());
        // A failure of the training itself (an error, or a panic anywhere under it) is the
        // pack's: recorded, and the other packs go on.
        let trained = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| run_pack(&pack, ctx, corpus, bar))
        }));
        let trained = match trained {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) if e.downcast_ref::<crate::interrupt::Interrupted>().is_some() => {
                // Not a failure: the pack checkpointed (when it checkpoints) and stops.
                let store = lock(shared.store);
                lock(&shared.claims).retain(|c| c.path != claim.path);
                store.release(claim);
                shared.interrupted.store(true, Ordering::SeqCst);
                eprintln!(
                    "[{}] {}: run {} seeds {:?} {e}",
                    ctx.study,
                    ctx.stage,
                    pack.gene,
                    pack.seeds()
                );
                return Ok(());
            }
            Ok(Err(e)) => Err(("error", format!("{e:#}"))),
            Err(p) => Err(("panic", panic_message(p.as_ref()))),
        };
        let outcome = match trained {
            Err((kind, message)) => {
                let store = lock(shared.store);
                let failure = Failure {
                    pack_id: pack.id.clone(),
                    stage: ctx.stage.to_string(),
                    gene: pack.gene.to_string(),
                    seeds: pack.seeds(),
                    unit_ids: pack.units.iter().map(|u| u.id.clone()).collect(),
                    kind: kind.to_string(),
                    message: message.clone(),
                    host: store.host.clone(),
                    pid: std::process::id(),
                    at: now_rfc3339(),
                };
                eprintln!(
                    "error: [{}] {}: run {} seeds {:?} failed ({kind}): {message}",
                    ctx.study,
                    ctx.stage,
                    pack.gene,
                    pack.seeds()
                );
                if let Err(e) = store.record_failure(&failure) {
                    eprintln!("warning: could not record the failure: {e:#}");
                }
                lock(&shared.claims).retain(|c| c.path != claim.path);
                store.release(claim);
                lock(&shared.failed).push(failure);
                continue;
            }
            Ok((runs, curves)) => {
                let mut store = lock(shared.store);
                (|| -> Result<Vec<RunRow>> {
                    // Units of the pack that another run already finished keep their first row.
                    store.refresh()?;
                    let runs: Vec<RunRow> = runs
                        .into_iter()
                        .filter(|r| !store.is_done(&r.unit_id))
                        .collect();
                    let curves: Vec<CurveRow> = curves
                        .into_iter()
                        .filter(|c| runs.iter().any(|r| r.unit_id == c.unit_id))
                        .collect();
                    store.write_pack(&pack.id, &runs, &curves)?;
                    // The pack is finished: its checkpoint is not needed any more (a
                    // hurdle pack keeps it: the full run resumes from it).
                    if pack.stop_at.is_none() {
                        let _ = std::fs::remove_file(ctx.checkpoint_path(&pack));
                    }
                    store.clear_failure(&pack.id);
                    store.clear_claims(&pack.id);
                    Ok(runs)
                })()
            }
        };
        lock(&shared.claims).retain(|c| c.path != claim.path);
        match outcome {
            Ok(runs) => {
                let n = {
                    let mut d = lock(&shared.trained);
                    *d += runs.len();
                    *d
                };
                overall.inc(runs.len() as u64);
                if ctx.opts.quiet || !std::io::stderr().is_terminal() {
                    let vals: Vec<String> = runs
                        .iter()
                        .map(|r| {
                            format!(
                                "seed {}: {}",
                                r.seed,
                                r.val_ppl
                                    .map_or("diverged".to_string(), |v| format!("{v:.2}"))
                            )
                        })
                        .collect();
                    if let Some(r0) = runs.first() {
                        eprintln!(
                            "[{}] {} {n}/{} {} — val ppl {} ({:.0} s, {:.0} tok/s)",
                            ctx.study,
                            ctx.stage,
                            overall.length().unwrap_or(0),
                            pack.gene,
                            vals.join(", "),
                            r0.wall_s,
                            r0.tokens_per_s
                        );
                    }
                }
            }
            Err(e) => {
                lock(shared.store).release(claim);
                return Err(e);
            }
        }
    }
    Ok(())
}

fn run_pack(
    pack: &Pack,
    ctx: &RowContext<'_>,
    corpus: &Corpus,
    bar: &ProgressBar,
) -> Result<(Vec<RunRow>, Vec<CurveRow>)> {
    let seeds = pack.seeds();
    let started_at = now_rfc3339();
    bar.set_prefix(format!("{} seeds {:?}", pack.gene, seeds));
    bar.set_position(0);
    let config = ctx.planner.config_for(pack.gene);
    bar.set_length(config.steps as u64);
    match injected_failure(pack.gene) {
        Some("panic") => panic!(
            "injected failure of gene {} (EVOATTN_FAIL_PACKS)",
            pack.gene
        ),
        Some(_) => anyhow::bail!(
            "injected failure of gene {} (EVOATTN_FAIL_PACKS)",
            pack.gene
        ),
        None => {}
    }
    let mut cb = |p: Progress| {
        bar.set_position(p.step as u64);
        bar.set_message(format!("loss {:.3}  {:.0} tok/s", p.loss, p.tokens_per_s));
    };
    let out = train::train(
        pack.gene,
        config,
        corpus,
        &seeds,
        &ctx.opts.device,
        RunOptions {
            eval_test: true,
            on_step: Some(&mut cb),
            checkpoint: Some(Checkpointing {
                path: ctx.checkpoint_path(pack),
                rejected_dir: ctx.dir.join("rejected"),
                key: pack.base_id().to_string(),
                every: ctx.opts.checkpoint_every,
                hardware: ctx.opts.hardware.clone(),
            }),
            keep_weights: ctx.opts.save_weights && pack.stop_at.is_none(),
            stop_at: pack.stop_at,
            ..Default::default()
        },
    )?;
    if let Some(at) = out.resumed_from {
        eprintln!(
            "[{}] {}: run {} seeds {:?} resumed from its checkpoint at step {at} of {}",
            ctx.study, ctx.stage, pack.gene, seeds, out.steps
        );
    }
    if out.checkpoints_written > 0 && (ctx.opts.quiet || !std::io::stderr().is_terminal()) {
        let train_s = out.steps as f64 * (seeds.len() * config.batch_size * config.seq_len) as f64
            / out.tokens_per_s.max(1e-9);
        eprintln!(
            "[{}] {}: run {} seeds {:?}: {} checkpoint(s) written in {:.2} s ({:.2} % of {:.0} s of training)",
            ctx.study,
            ctx.stage,
            pack.gene,
            seeds,
            out.checkpoints_written,
            out.checkpoint_s,
            100.0 * out.checkpoint_s / train_s.max(1e-9),
            train_s
        );
    }
    if ctx.opts.save_weights {
        for (unit, w) in pack.units.iter().zip(&out.weights) {
            let path = ctx
                .dir
                .join("weights")
                .join(format!("{}.safetensors", unit.id));
            checkpoint::save_weights(&path, &pack.gene.to_string(), unit.seed, w)?;
        }
    }
    let finished_at = now_rfc3339();
    let mut runs = Vec::new();
    let mut curves = Vec::new();
    for (unit, s) in pack.units.iter().zip(&out.seeds) {
        debug_assert_eq!(unit.seed, s.seed);
        runs.push(RunRow {
            study: ctx.study.to_string(),
            stage: ctx.stage,
            unit_id: unit.id.clone(),
            pack_id: pack.id.clone(),
            gene: pack.gene,
            seed: s.seed,
            preset: ctx.preset.to_string(),
            config: config.clone(),
            params_total: out.params_total as u64,
            params_nonembed: out.params_nonembed as u64,
            diverged_at: s.diverged_at.map(|d| d as u64),
            train_loss: s.train_loss,
            val_ppl: s.val_ppl,
            test_ppl: s.test_ppl,
            tokens_per_s: out.tokens_per_s,
            wall_s: out.wall_s,
            device: ctx.opts.device_name.clone(),
            hardware: match &out.resumed_hardware {
                Some(before) => format!("{before} then {}", ctx.opts.hardware),
                None => ctx.opts.hardware.clone(),
            },
            stopped_at: out.stopped_at.map(|s| s as u64),
            threads: ctx.opts.threads_per_job as u64,
            replicas: seeds.len() as u64,
            evoattn_version: CRATE_VERSION.to_string(),
            engine_version: ENGINE_VERSION,
            git_commit: GIT_COMMIT.to_string(),
            data_fingerprint: ctx.planner.data_fingerprint.clone(),
            started_at: started_at.clone(),
            finished_at: finished_at.clone(),
        });
        for c in &s.curve {
            curves.push(CurveRow {
                unit_id: unit.id.clone(),
                step: c.step as u64,
                train_loss: c.train_loss,
                val_ppl: c.val_ppl,
            });
        }
    }
    Ok((runs, curves))
}
