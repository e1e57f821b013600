//! Execution: trains the packs of a stage on a device with `jobs` concurrent runs, claims
//! them in the store so several processes can share a study, writes each finished pack
//! atomically, and waits for packs that other processes hold.

use super::plan::{in_shard, Pack, Planner};
use super::spec::Study;
use super::store::{Claim, PackState, Store};
use super::Runner;
use crate::data::Corpus;
use crate::gene::Gene;
use crate::record::{now_rfc3339, CurveRow, RunRow, Stage};
use crate::train::{self, Progress, RunOptions};
use crate::version::{CRATE_VERSION, ENGINE_VERSION, GIT_COMMIT};
use anyhow::{anyhow, Result};
use candle_core::Device;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::VecDeque;
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
}

struct Shared<'s> {
    queue: Mutex<VecDeque<(Pack, Option<Instant>)>>,
    store: &'s Mutex<&'s mut Store>,
    claims: Mutex<Vec<Claim>>,
    stop: AtomicBool,
    error: Mutex<Option<anyhow::Error>>,
    trained: Mutex<usize>,
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
        let store = &self.store;
        let total_units: usize = packs.iter().map(|p| p.units.len()).sum();
        let packs: Vec<(usize, Pack)> = packs
            .into_iter()
            .enumerate()
            .filter(|(_, p)| !p.units.iter().all(|u| store.is_done(&u.id)))
            .collect();
        let pending_units: usize = packs.iter().map(|(_, p)| p.units.len()).sum();
        self.reused += total_units - pending_units;
        let (mine, others): (Indexed, Indexed) = packs
            .into_iter()
            .partition(|(i, _)| in_shard(*i, self.opts.shard));
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

        let store_lock = Mutex::new(&mut self.store);
        let shared = Shared {
            queue: Mutex::new(mine.into_iter().map(|(_, p)| (p, None)).collect()),
            store: &store_lock,
            claims: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            error: Mutex::new(None),
            trained: Mutex::new(0),
        };
        let ctx = RowContext {
            study: &self.study,
            stage,
            preset: &self.preset,
            planner: &self.planner,
            opts: &self.opts,
        };
        let corpus = self.corpus;
        let hb_stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let hb = s.spawn(|| {
                let mut last = Instant::now();
                while !hb_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    if last.elapsed() >= Duration::from_secs(15) {
                        for c in shared.claims.lock().expect("claims").iter() {
                            Store::heartbeat(c);
                        }
                        last = Instant::now();
                    }
                }
            });
            let workers: Vec<_> = (0..self.opts.jobs.max(1))
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
                            shared.error.lock().expect("error").get_or_insert(e);
                        }
                        bar.finish_and_clear();
                    })
                })
                .collect();
            for w in workers {
                let _ = w.join();
            }
            hb_stop.store(true, Ordering::Relaxed);
            let _ = hb.join();
        });
        overall.finish_and_clear();
        self.trained += *shared.trained.lock().expect("trained");
        if let Some(e) = shared.error.into_inner().expect("error") {
            return Err(e);
        }
        // Other shards' packs: the GA waits for them, other stages leave them.
        self.store.refresh()?;
        let mut announced = false;
        loop {
            let waiting: Vec<&Pack> = others
                .iter()
                .map(|(_, p)| p)
                .filter(|p| p.units.iter().any(|u| !self.store.is_done(&u.id)))
                .collect();
            if waiting.is_empty() {
                return Ok(true);
            }
            if !need_all {
                return Ok(false);
            }
            if !announced {
                eprintln!(
                    "[{}] {stage}: waiting for {} run(s) of other shards (start them with --shard j/{})",
                    self.study,
                    waiting.len(),
                    self.opts.shard.1
                );
                announced = true;
            }
            std::thread::sleep(POLL);
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
}

fn next_pack(shared: &Shared<'_>) -> Option<(Pack, Option<Instant>)> {
    shared.queue.lock().expect("queue").pop_front()
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
        let Some((pack, not_before)) = next_pack(shared) else {
            return Ok(());
        };
        if let Some(t) = not_before {
            let now = Instant::now();
            if t > now {
                std::thread::sleep((t - now).min(POLL));
            }
        }
        let claim = {
            let store = shared.store.lock().expect("store");
            match store.claim(&pack.id)? {
                Some(c) => Some(c),
                None if store.pack_state(&pack.id)? == PackState::Done => None,
                None => {
                    // Held by a live process: look again later.
                    drop(store);
                    shared
                        .queue
                        .lock()
                        .expect("queue")
                        .push_back((pack, Some(Instant::now() + POLL)));
                    continue;
                }
            }
        };
        let Some(claim) = claim else {
            // Finished by another process.
            let mut s = shared.store.lock().expect("store");
            s.refresh()?;
            overall.inc(pack.units.len() as u64);
            continue;
        };
        shared.claims.lock().expect("claims").push(claim.clone());
        let result = pool.install(|| run_pack(&pack, ctx, corpus, bar));
        let outcome = result.and_then(|(runs, curves)| {
            let mut store = shared.store.lock().expect("store");
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
            store.clear_claims(&pack.id);
            Ok(runs)
        });
        shared
            .claims
            .lock()
            .expect("claims")
            .retain(|c| c.path != claim.path);
        match outcome {
            Ok(runs) => {
                let n = {
                    let mut d = shared.trained.lock().expect("trained");
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
                shared.store.lock().expect("store").release(claim);
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
            ..Default::default()
        },
    )?;
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
