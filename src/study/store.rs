//! The store: one folder per study, finished packs as Parquet files written atomically,
//! claim files so that several processes can share a study, and the consolidated tables
//! `runs.parquet`, `curves.parquet` and `generations.parquet`.
//!
//! Layout of `<store>/<study>/`:
//! - `packs/<pack_id>.curves.parquet`, then `packs/<pack_id>.runs.parquet` (the commit
//!   marker: a pack is finished when its runs file exists). Each is written to a temporary
//!   file, fsynced and renamed, so a crash leaves either the whole file or none.
//! - `claims/<pack_id>.<k>`: created with `O_EXCL`; the highest `k` is the live claim. A
//!   claim is stale when its process is gone (same host) or its heartbeat (mtime) is older
//!   than [`STALE_AFTER`]; a stale claim is superseded by creating `k + 1`, which only one
//!   process can do. Rows can never be duplicated: a unit's row lives in the file named by
//!   its pack, and consolidation keeps one row per unit id.
//! - `runs.parquet`, `curves.parquet`, `generations.parquet`: rebuilt from the packs under
//!   an exclusive lock on `.lock`.

use crate::gene::Gene;
use crate::train::TrainConfig;
use anyhow::{anyhow, bail, Context, Result};
use polars::prelude::*;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A claim without a heartbeat for this long is stale (heartbeats come every 15 s).
pub const STALE_AFTER: Duration = Duration::from_secs(120);

/// Hyperparameters stored as floating-point columns; every other one is an integer column.
const FLOAT_FIELDS: [&str; 7] = [
    "lr",
    "min_lr_ratio",
    "weight_decay",
    "beta1",
    "beta2",
    "eps",
    "grad_clip",
];

/// One row of `runs.parquet`: one unit.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// Study name.
    pub study: String,
    /// Stage that trained it: `search` or `replicate`.
    pub stage: String,
    /// Unit content hash.
    pub unit_id: String,
    /// The replica-batched run it was part of.
    pub pack_id: String,
    /// Gene.
    pub gene: Gene,
    /// Seed.
    pub seed: u64,
    /// Preset the configuration started from.
    pub preset: String,
    /// Training configuration (one column per field).
    pub config: TrainConfig,
    /// Trainable parameters.
    pub params_total: u64,
    /// Trainable parameters outside the (tied) embedding and positions.
    pub params_nonembed: u64,
    /// Step at which the run diverged (non-finite loss or gradient), if it did.
    pub diverged_at: Option<u64>,
    /// Mean training loss over the last 100 steps.
    pub train_loss: f64,
    /// Validation perplexity at the end (null when diverged).
    pub val_ppl: Option<f64>,
    /// Test perplexity at the end (null when diverged).
    pub test_ppl: Option<f64>,
    /// Training tokens per second of the whole pack (all replicas).
    pub tokens_per_s: f64,
    /// Wall seconds of the whole pack.
    pub wall_s: f64,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Compute threads of the run.
    pub threads: u64,
    /// Replicas in the pack.
    pub replicas: u64,
    /// Crate version.
    pub evoattn_version: String,
    /// [`crate::ENGINE_VERSION`].
    pub engine_version: u32,
    /// Commit the binary was built from (`-dirty` when the tree had changes).
    pub git_commit: String,
    /// Data fingerprint.
    pub data_fingerprint: String,
    /// UTC, RFC 3339.
    pub started_at: String,
    /// UTC, RFC 3339.
    pub finished_at: String,
}

/// One row of `curves.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct CurveRow {
    /// Unit.
    pub unit_id: String,
    /// Optimiser steps done.
    pub step: u64,
    /// Mean training loss since the previous point.
    pub train_loss: f64,
    /// Validation perplexity (null after divergence).
    pub val_ppl: Option<f64>,
}

/// One row of `generations.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRow {
    /// 0-based generation.
    pub generation: u64,
    /// Position in the population (elites first).
    pub slot: u64,
    /// Gene.
    pub gene: Gene,
    /// Parent genes joined by `;` (empty for initial individuals).
    pub parents: String,
    /// `initial`, `elite`, `crossover` or `mutation`.
    pub operator: String,
    /// Mean validation ppl over the gene's seeds so far (inf when any diverged).
    pub fitness: f64,
    /// Seeds in that mean.
    pub n_seeds: u64,
}

/// Current UTC time as RFC 3339 (seconds).
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn col<T, P: ?Sized>(name: &str, v: T) -> Column
where
    Series: NamedFrom<T, P>,
{
    Column::new(name.into(), v)
}

fn i64s(v: impl Iterator<Item = u64>) -> Vec<i64> {
    v.map(|x| x as i64).collect()
}

/// A float column of `rows`.
fn fcol<R>(name: &str, rows: &[R], f: impl Fn(&R) -> f64) -> Column {
    col(name, rows.iter().map(f).collect::<Vec<f64>>())
}

/// A nullable float column of `rows`.
fn ocol<R>(name: &str, rows: &[R], f: impl Fn(&R) -> Option<f64>) -> Column {
    col(name, rows.iter().map(f).collect::<Vec<Option<f64>>>())
}

/// The training settings, by preset name, in the order of their columns.
fn config_keys() -> Vec<String> {
    match serde_json::to_value(crate::train::Preset::Smoke.config()) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

fn config_columns(configs: &[&TrainConfig]) -> Result<Vec<Column>> {
    let objs: Vec<serde_json::Map<String, serde_json::Value>> = configs
        .iter()
        .map(|c| match serde_json::to_value(c) {
            Ok(serde_json::Value::Object(m)) => Ok(m),
            _ => Err(anyhow!("configuration does not serialise to an object")),
        })
        .collect::<Result<_>>()?;
    let keys = config_keys();
    let mut out = Vec::new();
    for k in keys {
        if FLOAT_FIELDS.contains(&k.as_str()) {
            let v: Vec<Option<f64>> = objs.iter().map(|o| o[&k].as_f64()).collect();
            out.push(col(&k, v));
        } else {
            let v: Vec<Option<i64>> = objs.iter().map(|o| o[&k].as_i64()).collect();
            out.push(col(&k, v));
        }
    }
    Ok(out)
}

/// The `runs.parquet` frame of `rows`.
pub fn runs_frame(rows: &[RunRow]) -> Result<DataFrame> {
    let s = |f: &dyn Fn(&RunRow) -> String| rows.iter().map(f).collect::<Vec<String>>();
    let mut cols = vec![
        col("study", s(&|r| r.study.clone())),
        col("stage", s(&|r| r.stage.clone())),
        col("unit_id", s(&|r| r.unit_id.clone())),
        col("pack_id", s(&|r| r.pack_id.clone())),
        col("gene", s(&|r| r.gene.to_string())),
        col("similarity", s(&|r| r.gene.similarity.to_string())),
        col("normalization", s(&|r| r.gene.normalization.to_string())),
        col("gating", s(&|r| r.gene.gating.to_string())),
        col("temperature", s(&|r| r.gene.temperature.to_string())),
        col("seed", i64s(rows.iter().map(|r| r.seed))),
        col("preset", s(&|r| r.preset.clone())),
    ];
    cols.extend(config_columns(
        &rows.iter().map(|r| &r.config).collect::<Vec<_>>(),
    )?);
    cols.extend([
        col("params_total", i64s(rows.iter().map(|r| r.params_total))),
        col(
            "params_nonembed",
            i64s(rows.iter().map(|r| r.params_nonembed)),
        ),
        col(
            "diverged_at",
            rows.iter()
                .map(|r| r.diverged_at.map(|d| d as i64))
                .collect::<Vec<Option<i64>>>(),
        ),
        fcol("train_loss", rows, |r| r.train_loss),
        ocol("val_ppl", rows, |r| r.val_ppl),
        ocol("test_ppl", rows, |r| r.test_ppl),
        fcol("tokens_per_s", rows, |r| r.tokens_per_s),
        fcol("wall_s", rows, |r| r.wall_s),
        col("device", s(&|r| r.device.clone())),
        col("threads", i64s(rows.iter().map(|r| r.threads))),
        col("replicas", i64s(rows.iter().map(|r| r.replicas))),
        col("evoattn_version", s(&|r| r.evoattn_version.clone())),
        col(
            "engine_version",
            i64s(rows.iter().map(|r| r.engine_version as u64)),
        ),
        col("git_commit", s(&|r| r.git_commit.clone())),
        col("data_fingerprint", s(&|r| r.data_fingerprint.clone())),
        col("started_at", s(&|r| r.started_at.clone())),
        col("finished_at", s(&|r| r.finished_at.clone())),
    ]);
    Ok(DataFrame::new_infer_height(cols)?)
}

/// The `curves.parquet` frame of `rows`.
pub fn curves_frame(rows: &[CurveRow]) -> Result<DataFrame> {
    Ok(DataFrame::new_infer_height(vec![
        col(
            "unit_id",
            rows.iter().map(|r| r.unit_id.clone()).collect::<Vec<_>>(),
        ),
        col("step", i64s(rows.iter().map(|r| r.step))),
        fcol("train_loss", rows, |r| r.train_loss),
        ocol("val_ppl", rows, |r| r.val_ppl),
    ])?)
}

/// The `generations.parquet` frame of `rows`.
pub fn generations_frame(rows: &[GenerationRow]) -> Result<DataFrame> {
    Ok(DataFrame::new_infer_height(vec![
        col("generation", i64s(rows.iter().map(|r| r.generation))),
        col("slot", i64s(rows.iter().map(|r| r.slot))),
        col(
            "gene",
            rows.iter().map(|r| r.gene.to_string()).collect::<Vec<_>>(),
        ),
        col(
            "parents",
            rows.iter().map(|r| r.parents.clone()).collect::<Vec<_>>(),
        ),
        col(
            "operator",
            rows.iter().map(|r| r.operator.clone()).collect::<Vec<_>>(),
        ),
        fcol("fitness", rows, |r| r.fitness),
        col("n_seeds", i64s(rows.iter().map(|r| r.n_seeds))),
    ])?)
}

fn strs(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    let c = df.column(name)?.str()?;
    Ok(c.iter().map(|v| v.unwrap_or("").to_string()).collect())
}

fn ints(df: &DataFrame, name: &str) -> Result<Vec<Option<i64>>> {
    Ok(df.column(name)?.i64()?.iter().collect())
}

fn floats(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>> {
    Ok(df.column(name)?.f64()?.iter().collect())
}

/// Reads runs rows back from a `runs.parquet`-shaped frame.
pub fn runs_from_frame(df: &DataFrame) -> Result<Vec<RunRow>> {
    let n = df.height();
    let keys = config_keys();
    let mut cfg_objs = vec![serde_json::Map::new(); n];
    for k in &keys {
        if FLOAT_FIELDS.contains(&k.as_str()) {
            for (o, v) in cfg_objs.iter_mut().zip(floats(df, k)?) {
                o.insert(k.clone(), serde_json::json!(v));
            }
        } else {
            for (o, v) in cfg_objs.iter_mut().zip(ints(df, k)?) {
                o.insert(k.clone(), serde_json::json!(v));
            }
        }
    }
    let (study, stage, unit, pack, gene) = (
        strs(df, "study")?,
        strs(df, "stage")?,
        strs(df, "unit_id")?,
        strs(df, "pack_id")?,
        strs(df, "gene")?,
    );
    let (seed, preset) = (ints(df, "seed")?, strs(df, "preset")?);
    let (pt, pn, div) = (
        ints(df, "params_total")?,
        ints(df, "params_nonembed")?,
        ints(df, "diverged_at")?,
    );
    let (tl, vp, tp, tps, ws) = (
        floats(df, "train_loss")?,
        floats(df, "val_ppl")?,
        floats(df, "test_ppl")?,
        floats(df, "tokens_per_s")?,
        floats(df, "wall_s")?,
    );
    let (dev, thr, rep) = (
        strs(df, "device")?,
        ints(df, "threads")?,
        ints(df, "replicas")?,
    );
    let (ver, ev, git, fp, sa, fa) = (
        strs(df, "evoattn_version")?,
        ints(df, "engine_version")?,
        strs(df, "git_commit")?,
        strs(df, "data_fingerprint")?,
        strs(df, "started_at")?,
        strs(df, "finished_at")?,
    );
    let mut out = Vec::with_capacity(n);
    for (i, obj) in cfg_objs.into_iter().enumerate() {
        out.push(RunRow {
            study: study[i].clone(),
            stage: stage[i].clone(),
            unit_id: unit[i].clone(),
            pack_id: pack[i].clone(),
            gene: gene[i]
                .parse()
                .map_err(|e| anyhow!("row {i}: bad gene: {e}"))?,
            seed: seed[i].unwrap_or(0) as u64,
            preset: preset[i].clone(),
            config: serde_json::from_value(serde_json::Value::Object(obj))
                .with_context(|| format!("row {i}: bad configuration columns"))?,
            params_total: pt[i].unwrap_or(0) as u64,
            params_nonembed: pn[i].unwrap_or(0) as u64,
            diverged_at: div[i].map(|d| d as u64),
            train_loss: tl[i].unwrap_or(f64::NAN),
            val_ppl: vp[i],
            test_ppl: tp[i],
            tokens_per_s: tps[i].unwrap_or(f64::NAN),
            wall_s: ws[i].unwrap_or(f64::NAN),
            device: dev[i].clone(),
            threads: thr[i].unwrap_or(0) as u64,
            replicas: rep[i].unwrap_or(0) as u64,
            evoattn_version: ver[i].clone(),
            engine_version: ev[i].unwrap_or(0) as u32,
            git_commit: git[i].clone(),
            data_fingerprint: fp[i].clone(),
            started_at: sa[i].clone(),
            finished_at: fa[i].clone(),
        });
    }
    Ok(out)
}

/// Reads curve rows back.
pub fn curves_from_frame(df: &DataFrame) -> Result<Vec<CurveRow>> {
    let (u, s, t, v) = (
        strs(df, "unit_id")?,
        ints(df, "step")?,
        floats(df, "train_loss")?,
        floats(df, "val_ppl")?,
    );
    Ok((0..df.height())
        .map(|i| CurveRow {
            unit_id: u[i].clone(),
            step: s[i].unwrap_or(0) as u64,
            train_loss: t[i].unwrap_or(f64::NAN),
            val_ppl: v[i],
        })
        .collect())
}

/// Reads generation rows back from a `generations.parquet`-shaped frame.
pub fn generations_from_frame(df: &DataFrame) -> Result<Vec<GenerationRow>> {
    let (g, sl, gene, p, o, f, n) = (
        ints(df, "generation")?,
        ints(df, "slot")?,
        strs(df, "gene")?,
        strs(df, "parents")?,
        strs(df, "operator")?,
        floats(df, "fitness")?,
        ints(df, "n_seeds")?,
    );
    (0..df.height())
        .map(|i| {
            Ok(GenerationRow {
                generation: g[i].unwrap_or(0) as u64,
                slot: sl[i].unwrap_or(0) as u64,
                gene: gene[i]
                    .parse()
                    .map_err(|e| anyhow::anyhow!("generations.parquet row {i}: {e}"))?,
                parents: p[i].clone(),
                operator: o[i].clone(),
                fitness: f[i].unwrap_or(f64::INFINITY),
                n_seeds: n[i].unwrap_or(0) as u64,
            })
        })
        .collect()
}

/// Reads a Parquet file into a frame.
pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    ParquetReader::new(f)
        .finish()
        .map_err(|e| anyhow!("cannot read {} as Parquet: {e}", path.display()))
}

/// Explains an I/O error on the store in terms of what to do.
fn store_error(e: &std::io::Error, path: &Path, doing: &str) -> anyhow::Error {
    let hint = match e.raw_os_error() {
        Some(28) => "the disk is full; free space and run again: finished units are kept",
        Some(13) | Some(1) | Some(30) => {
            "the store is not writable; fix its permissions or pass --store DIR"
        }
        Some(20) | Some(21) => "a file is in the way of the store's folders; pass --store DIR",
        _ => "finished units are kept; fix the cause and run again to resume",
    };
    anyhow!("cannot {doing} {}: {e} ({hint})", path.display())
}

/// Writes a file atomically: temporary file in the same folder, fsync, rename, fsync folder.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".tmp-{name}-{}-{nanos}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| store_error(&e, &tmp, "create"))?;
        write(&mut f)?;
        f.flush().map_err(|e| store_error(&e, &tmp, "write"))?;
        f.sync_all().map_err(|e| store_error(&e, &tmp, "sync"))?;
        drop(f);
        fs::rename(&tmp, path).map_err(|e| store_error(&e, path, "rename into"))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `df` as Parquet at `path`, atomically.
pub fn write_parquet(path: &Path, df: &mut DataFrame) -> Result<()> {
    write_atomic(path, |f| {
        ParquetWriter::new(f)
            .finish(df)
            .map_err(|e| match e {
                PolarsError::IO { error, .. } => store_error(&error, path, "write"),
                other => anyhow!("cannot write {}: {other}", path.display()),
            })
            .map(|_| ())
    })
}

/// Who holds a claim.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClaimInfo {
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// When it was claimed.
    pub since: String,
}

/// State of a pack in the store.
#[derive(Debug, Clone, PartialEq)]
pub enum PackState {
    /// Its runs file exists.
    Done,
    /// A live claim by another process.
    Claimed(ClaimInfo),
    /// Neither.
    Pending,
}

/// This machine's host name.
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

fn process_alive(pid: u32) -> bool {
    if Path::new("/proc/self").exists() {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true // cannot tell: rely on the heartbeat
    }
}

/// A claim this process holds; remove it with [`Store::release`].
#[derive(Debug, Clone)]
pub struct Claim {
    /// The claim file.
    pub path: PathBuf,
}

/// A study's folder in the store.
#[derive(Debug)]
pub struct Store {
    /// `<store>/<study>`.
    pub dir: PathBuf,
    host: String,
    seen_files: HashSet<String>,
    runs: HashMap<String, RunRow>,
}

impl Store {
    /// Opens (creating) the folder of study `name` under `root` and checks it is writable.
    pub fn open(root: &Path, name: &str) -> Result<Store> {
        let dir = root.join(name);
        for sub in ["packs", "claims"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| store_error(&e, &p, "create the folder"))?;
        }
        let probe = dir.join(format!(".probe-{}", std::process::id()));
        fs::write(&probe, b"ok").map_err(|e| store_error(&e, &dir, "write to the store"))?;
        let _ = fs::remove_file(&probe);
        Ok(Store {
            dir,
            host: host_name(),
            seen_files: HashSet::new(),
            runs: HashMap::new(),
        })
    }

    /// Opens an existing study folder for reading only.
    pub fn open_existing(root: &Path, name: &str) -> Result<Store> {
        let dir = root.join(name);
        if !dir.join("packs").is_dir() {
            bail!("no store for study `{name}` at {}", dir.display());
        }
        Ok(Store {
            dir,
            host: host_name(),
            seen_files: HashSet::new(),
            runs: HashMap::new(),
        })
    }

    fn runs_path(&self, pack: &str) -> PathBuf {
        self.dir.join("packs").join(format!("{pack}.runs.parquet"))
    }

    fn curves_path(&self, pack: &str) -> PathBuf {
        self.dir
            .join("packs")
            .join(format!("{pack}.curves.parquet"))
    }

    /// Reads pack files written since the last refresh (by this or any other process).
    pub fn refresh(&mut self) -> Result<()> {
        let packs = self.dir.join("packs");
        let mut names: Vec<String> = fs::read_dir(&packs)
            .map_err(|e| store_error(&e, &packs, "list"))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".runs.parquet") && !n.starts_with('.'))
            .filter(|n| !self.seen_files.contains(n))
            .collect();
        names.sort();
        for n in names {
            let df = read_parquet(&packs.join(&n))?;
            for row in runs_from_frame(&df)? {
                self.runs.entry(row.unit_id.clone()).or_insert(row);
            }
            self.seen_files.insert(n);
        }
        Ok(())
    }

    /// The finished row of a unit, if any (as of the last refresh).
    pub fn run(&self, unit_id: &str) -> Option<&RunRow> {
        self.runs.get(unit_id)
    }

    /// Whether a unit is finished (as of the last refresh).
    pub fn is_done(&self, unit_id: &str) -> bool {
        self.runs.contains_key(unit_id)
    }

    /// Every finished row.
    pub fn all_runs(&self) -> impl Iterator<Item = &RunRow> {
        self.runs.values()
    }

    /// Whether the runs file of `pack` exists on disk now.
    pub fn pack_done(&self, pack: &str) -> bool {
        self.runs_path(pack).exists()
    }

    /// Writes a finished pack: curves first, then runs (the commit marker).
    pub fn write_pack(&mut self, pack: &str, runs: &[RunRow], curves: &[CurveRow]) -> Result<()> {
        write_parquet(&self.curves_path(pack), &mut curves_frame(curves)?)?;
        write_parquet(&self.runs_path(pack), &mut runs_frame(runs)?)?;
        for r in runs {
            self.runs
                .entry(r.unit_id.clone())
                .or_insert_with(|| r.clone());
        }
        self.seen_files.insert(format!("{pack}.runs.parquet"));
        Ok(())
    }

    /// Curve rows of a finished pack.
    pub fn pack_curves(&self, pack: &str) -> Result<Vec<CurveRow>> {
        curves_from_frame(&read_parquet(&self.curves_path(pack))?)
    }

    fn claim_files(&self, pack: &str) -> Result<Vec<(u64, PathBuf)>> {
        let dir = self.dir.join("claims");
        let prefix = format!("{pack}.");
        let mut v: Vec<(u64, PathBuf)> = fs::read_dir(&dir)
            .map_err(|e| store_error(&e, &dir, "list"))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                let k: u64 = n.strip_prefix(&prefix)?.parse().ok()?;
                Some((k, e.path()))
            })
            .collect();
        v.sort();
        Ok(v)
    }

    /// The holder of the claim file at `path` when it is live; `None` when stale.
    fn live_holder(&self, path: &Path) -> Option<ClaimInfo> {
        let info: Option<ClaimInfo> = fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let age = fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        match info {
            Some(i) if i.host == self.host && !process_alive(i.pid) => None,
            Some(i) if i.host == self.host && i.pid == std::process::id() => Some(i),
            _ if age > STALE_AFTER => None,
            Some(i) => Some(i),
            // Being written right now, or unreadable: live until the heartbeat says otherwise.
            None => Some(ClaimInfo {
                host: "?".into(),
                pid: 0,
                since: "?".into(),
            }),
        }
    }

    /// The state of `pack` now: done, claimed by a live claim, or pending.
    pub fn pack_state(&self, pack: &str) -> Result<PackState> {
        if self.pack_done(pack) {
            return Ok(PackState::Done);
        }
        match self.claim_files(pack)?.last() {
            Some((_, p)) => Ok(self
                .live_holder(p)
                .map_or(PackState::Pending, PackState::Claimed)),
            None => Ok(PackState::Pending),
        }
    }

    /// Tries to claim `pack`; `None` when it is done or another live process holds it.
    pub fn claim(&self, pack: &str) -> Result<Option<Claim>> {
        for _ in 0..8 {
            if self.pack_done(pack) {
                return Ok(None);
            }
            let files = self.claim_files(pack)?;
            let next = match files.last() {
                None => 0,
                Some((k, p)) => {
                    if self.live_holder(p).is_some() {
                        return Ok(None);
                    }
                    k + 1
                }
            };
            let path = self.dir.join("claims").join(format!("{pack}.{next}"));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    let info = ClaimInfo {
                        host: self.host.clone(),
                        pid: std::process::id(),
                        since: now_rfc3339(),
                    };
                    f.write_all(serde_json::to_string(&info)?.as_bytes())
                        .and_then(|_| f.sync_all())
                        .map_err(|e| store_error(&e, &path, "write the claim"))?;
                    // Finished by someone between our check and the claim?
                    if self.pack_done(pack) {
                        let _ = fs::remove_file(&path);
                        return Ok(None);
                    }
                    return Ok(Some(Claim { path }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(store_error(&e, &path, "create the claim")),
            }
        }
        Ok(None)
    }

    /// Refreshes a claim's heartbeat.
    pub fn heartbeat(claim: &Claim) {
        if let Ok(f) = OpenOptions::new().append(true).open(&claim.path) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Gives a claim up.
    pub fn release(&self, claim: Claim) {
        let _ = fs::remove_file(&claim.path);
    }

    /// Removes every claim file of a finished pack.
    pub fn clear_claims(&self, pack: &str) {
        if let Ok(files) = self.claim_files(pack) {
            for (_, p) in files {
                let _ = fs::remove_file(p);
            }
        }
    }

    /// Rebuilds `runs.parquet` and `curves.parquet` from the packs, keeping the units of
    /// `order` (in that order) that are finished, under the study's lock.
    pub fn consolidate(&mut self, order: &[String]) -> Result<usize> {
        let lock_path = self.dir.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| store_error(&e, &lock_path, "open the lock"))?;
        lock.lock()
            .map_err(|e| store_error(&e, &lock_path, "lock"))?;
        self.refresh()?;
        let mut seen = HashSet::new();
        let rows: Vec<RunRow> = order
            .iter()
            .filter(|u| seen.insert(u.as_str()))
            .filter_map(|u| self.runs.get(u).cloned())
            .collect();
        let mut packs: Vec<&str> = Vec::new();
        for r in &rows {
            if !packs.contains(&r.pack_id.as_str()) {
                packs.push(&r.pack_id);
            }
        }
        let mut curves_by_unit: HashMap<String, Vec<CurveRow>> = HashMap::new();
        for p in packs {
            for c in self.pack_curves(p)? {
                curves_by_unit.entry(c.unit_id.clone()).or_default().push(c);
            }
        }
        let curves: Vec<CurveRow> = rows
            .iter()
            .flat_map(|r| curves_by_unit.remove(&r.unit_id).unwrap_or_default())
            .collect();
        write_parquet(&self.dir.join("runs.parquet"), &mut runs_frame(&rows)?)?;
        write_parquet(
            &self.dir.join("curves.parquet"),
            &mut curves_frame(&curves)?,
        )?;
        let _ = lock.unlock();
        Ok(rows.len())
    }

    /// Writes `generations.parquet`.
    pub fn write_generations(&self, rows: &[GenerationRow]) -> Result<()> {
        write_parquet(
            &self.dir.join("generations.parquet"),
            &mut generations_frame(rows)?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Preset;

    fn row(unit: &str, seed: u64, val: Option<f64>) -> RunRow {
        RunRow {
            study: "t".into(),
            stage: "search".into(),
            unit_id: unit.into(),
            pack_id: "p1".into(),
            gene: Gene::PUBLISHED_WINNER,
            seed,
            preset: "smoke".into(),
            config: Preset::Smoke.config(),
            params_total: 10,
            params_nonembed: 5,
            diverged_at: val.is_none().then_some(7),
            train_loss: 3.5,
            val_ppl: val,
            test_ppl: val.map(|v| v + 1.0),
            tokens_per_s: 100.0,
            wall_s: 2.0,
            device: "cpu".into(),
            threads: 1,
            replicas: 2,
            evoattn_version: "0.1.0".into(),
            engine_version: 1,
            git_commit: "abc".into(),
            data_fingerprint: "fp".into(),
            started_at: now_rfc3339(),
            finished_at: now_rfc3339(),
        }
    }

    #[test]
    fn runs_round_trip_through_parquet_with_nulls() {
        let dir = tempdir();
        let mut store = Store::open(&dir, "t").unwrap();
        let rows = vec![row("u1", 1, Some(90.5)), row("u2", 2, None)];
        let curves = vec![CurveRow {
            unit_id: "u1".into(),
            step: 15,
            train_loss: 4.0,
            val_ppl: None,
        }];
        store.write_pack("p1", &rows, &curves).unwrap();
        let mut fresh = Store::open(&dir, "t").unwrap();
        fresh.refresh().unwrap();
        assert_eq!(fresh.run("u1"), Some(&rows[0]));
        assert_eq!(fresh.run("u2"), Some(&rows[1]));
        assert_eq!(fresh.pack_curves("p1").unwrap(), curves);
        let n = fresh
            .consolidate(&["u2".into(), "u1".into(), "zz".into()])
            .unwrap();
        assert_eq!(n, 2);
        let back = runs_from_frame(&read_parquet(&dir.join("t/runs.parquet")).unwrap()).unwrap();
        assert_eq!(back, vec![rows[1].clone(), rows[0].clone()]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn claims_exclude_live_holders_and_recover_stale_ones() {
        let dir = tempdir();
        let store = Store::open(&dir, "t").unwrap();
        let c = store.claim("pk").unwrap().expect("first claim");
        // Our own live claim counts as held.
        assert!(store.claim("pk").unwrap().is_none());
        assert!(matches!(
            store.pack_state("pk").unwrap(),
            PackState::Claimed(_)
        ));
        // A claim by a dead process on this host is stale and superseded.
        let dead = ClaimInfo {
            host: host_name(),
            pid: 999_999_999,
            since: now_rfc3339(),
        };
        fs::write(
            store.dir.join("claims/pk.1"),
            serde_json::to_string(&dead).unwrap(),
        )
        .unwrap();
        assert_eq!(store.pack_state("pk").unwrap(), PackState::Pending);
        let c2 = store.claim("pk").unwrap().expect("stale claim recovered");
        assert!(c2.path.ends_with("pk.2"));
        store.release(c2);
        store.release(c);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20);
        assert!(
            t.starts_with("20") && t.ends_with('Z') && &t[10..11] == "T",
            "{t}"
        );
    }

    pub(crate) fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "evoattn-store-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }
}
