//! The store: one folder per study, finished packs as Parquet files written atomically,
//! claim files so that several processes can share a study, and the consolidated tables
//! `runs.parquet`, `curves.parquet` and `generations.parquet`.
//!
//! Layout of `<store>/<study>/`:
//! - `packs/<pack_id>.curves.parquet`, then `packs/<pack_id>.runs.parquet` (the commit
//!   marker). Each is written to a temporary file, fsynced and renamed ([`fsio`]), so a
//!   crash leaves either the whole file or none. A pack is finished only when every unit
//!   the plan puts in it has a row and its runs file (if any) is readable with the
//!   expected columns, holds only the pack's own units, each once ([`Store::pack_check`]);
//!   any other runs file of a planned pack is moved to `rejected/` and the pack retrained.
//! - `claims/<pack_id>.<k>` ([`claims`]). Rows can never be duplicated: a unit's row lives
//!   in the file named by its pack, and consolidation keeps one row per unit id.
//! - `failed/<pack_id>.json` ([`Failure`]): a pack whose training failed (error or panic)
//!   in the last attempt, with the message; removed when the pack finishes.
//! - `rejected/`: runs and curves files put aside because they were not a finished pack.
//! - `runs.parquet`, `curves.parquet`, `generations.parquet`, `race.parquet` ([`schema`]):
//!   rebuilt from the packs under an exclusive lock on `.lock` (the last two by the study
//!   kinds that have them).
//! - `study.toml` (the file as run) and `meta.json` ([`meta`]).
//!
//! Opening a store for writing removes temporary (`.tmp-…`) and probe (`.probe-…`) files
//! that interrupted processes left behind (older than [`STALE_AFTER`]).

pub mod claims;
pub mod fsio;
pub mod meta;
pub mod schema;

use super::plan::Pack;
use crate::record::{CurveRow, GenerationRow, RunRow};
use anyhow::{bail, Result};
pub use claims::{host_name, Claim, ClaimInfo, Holder, PackState, STALE_AFTER};
pub use fsio::store_error;
pub use fsio::{read_parquet, write_atomic, write_parquet};
pub use meta::StoreMeta;
pub use schema::{
    curves_frame, curves_from_frame, generations_frame, generations_from_frame, race_frame,
    race_from_frame, runs_frame, runs_from_frame,
};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What a runs file on disk looked like when it was last read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    ino: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        ino,
    })
}

/// A runs file as read: its rows, or why they cannot be trusted.
#[derive(Debug, Clone)]
struct PackFile {
    stamp: Option<Stamp>,
    rows: std::result::Result<Vec<RunRow>, String>,
}

/// Whether a planned pack is finished ([`Store::pack_check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackCheck {
    /// Every unit has a row and the pack's runs file, if any, is sound.
    Finished,
    /// Units are missing and the pack has no runs file.
    Missing,
    /// The pack's runs file is not a finished pack (why): put it aside and retrain.
    Bad(String),
}

/// A pack whose training failed, as `failed/<pack_id>.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The pack.
    pub pack_id: String,
    /// Its stage.
    pub stage: String,
    /// Its gene.
    pub gene: String,
    /// Its seeds.
    pub seeds: Vec<u64>,
    /// Its unit ids.
    pub unit_ids: Vec<String>,
    /// `error` or `panic`.
    pub kind: String,
    /// What went wrong.
    pub message: String,
    /// Host of the process that tried.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it failed.
    pub at: String,
}

/// A study's folder in the store.
#[derive(Debug)]
pub struct Store {
    /// `<store>/<study>`.
    pub dir: PathBuf,
    pub(crate) host: String,
    /// Runs files by name, in the order first seen.
    files: Vec<(String, PackFile)>,
    runs: HashMap<String, RunRow>,
}

impl Store {
    fn at(dir: PathBuf) -> Store {
        Store {
            dir,
            host: host_name(),
            files: Vec::new(),
            runs: HashMap::new(),
        }
    }

    /// Opens (creating) the folder of study `name` under `root`, checks it is writable and
    /// removes stale temporary and probe files.
    pub fn open(root: &Path, name: &str) -> Result<Store> {
        let dir = root.join(name);
        for sub in ["packs", "claims"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| store_error(&e, &p, "create the folder"))?;
            if !p.is_dir() {
                bail!(
                    "cannot use the store {}: {} is not a folder; move it away or pass --store DIR",
                    dir.display(),
                    p.display()
                );
            }
        }
        let probe = dir.join(format!(".probe-{}", std::process::id()));
        fs::write(&probe, b"ok").map_err(|e| store_error(&e, &probe, "write to the store"))?;
        let _ = fs::remove_file(&probe);
        let store = Store::at(dir);
        store.clean_stale_temporaries();
        Ok(store)
    }

    /// Opens an existing study folder for reading only.
    pub fn open_existing(root: &Path, name: &str) -> Result<Store> {
        let dir = root.join(name);
        if !dir.join("packs").is_dir() {
            bail!("no store for study `{name}` at {}", dir.display());
        }
        Ok(Store::at(dir))
    }

    /// Removes `.tmp-…` and `.probe-…` files older than [`STALE_AFTER`] from the study's
    /// folders (a live writer finishes its file within seconds); returns how many.
    pub fn clean_stale_temporaries(&self) -> usize {
        let mut n = 0;
        for d in [
            self.dir.clone(),
            self.dir.join("packs"),
            self.dir.join("claims"),
            self.dir.join("failed"),
            self.dir.join("checkpoints"),
            self.dir.join("weights"),
        ] {
            let Ok(entries) = fs::read_dir(&d) else {
                continue;
            };
            for e in entries.filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().to_string();
                if !(name.starts_with(".tmp-") || name.starts_with(".probe-")) {
                    continue;
                }
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| SystemTime::now().duration_since(m).ok())
                    .is_some_and(|age| age > STALE_AFTER);
                if old
                    && e.file_type().is_ok_and(|t| t.is_file())
                    && fs::remove_file(e.path()).is_ok()
                {
                    n += 1;
                }
            }
        }
        n
    }

    fn runs_path(&self, pack: &str) -> PathBuf {
        self.dir.join("packs").join(format!("{pack}.runs.parquet"))
    }

    fn curves_path(&self, pack: &str) -> PathBuf {
        self.dir
            .join("packs")
            .join(format!("{pack}.curves.parquet"))
    }

    /// Reads a runs file and checks what can be checked without the plan: the columns
    /// and their types, every row naming this pack, no unit twice, a readable curves file.
    fn read_pack_file(&self, pack: &str, path: &Path) -> std::result::Result<Vec<RunRow>, String> {
        let rows = read_parquet(path)
            .and_then(|df| runs_from_frame(&df))
            .map_err(|e| format!("{e:#}"))?;
        if let Some(r) = rows.iter().find(|r| r.pack_id != pack) {
            return Err(format!(
                "its row of unit {} names pack {}, not this one",
                r.unit_id, r.pack_id
            ));
        }
        let mut seen = HashSet::new();
        if let Some(r) = rows.iter().find(|r| !seen.insert(r.unit_id.as_str())) {
            return Err(format!("unit {} has two rows", r.unit_id));
        }
        self.pack_curves(pack)
            .map_err(|e| format!("its curves file: {e:#}"))?;
        Ok(rows)
    }

    /// Reads runs files written or changed since the last refresh (by this or any other
    /// process) and forgets files that are gone. Unreadable files are remembered as such;
    /// their rows never count.
    pub fn refresh(&mut self) -> Result<()> {
        let packs = self.dir.join("packs");
        let mut names: Vec<String> = fs::read_dir(&packs)
            .map_err(|e| store_error(&e, &packs, "list"))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".runs.parquet") && !n.starts_with('.'))
            .collect();
        names.sort();
        let mut changed = false;
        let present: HashSet<&String> = names.iter().collect();
        let before = self.files.len();
        self.files.retain(|(n, _)| present.contains(n));
        changed |= self.files.len() != before;
        for n in &names {
            let path = packs.join(n);
            let st = stamp(&path);
            let known = self.files.iter().position(|(m, _)| m == n);
            if let Some(i) = known {
                if self.files[i].1.stamp == st && st.is_some() {
                    continue;
                }
            }
            let pack = n.trim_end_matches(".runs.parquet");
            let file = PackFile {
                stamp: st,
                rows: self.read_pack_file(pack, &path),
            };
            match known {
                Some(i) => self.files[i].1 = file,
                None => self.files.push((n.clone(), file)),
            }
            changed = true;
        }
        if changed {
            self.rebuild();
        }
        Ok(())
    }

    /// The finished rows: the first row of each unit over the sound files, in the order
    /// the files were first seen.
    fn rebuild(&mut self) {
        self.runs.clear();
        for (_, f) in &self.files {
            if let Ok(rows) = &f.rows {
                for r in rows {
                    self.runs
                        .entry(r.unit_id.clone())
                        .or_insert_with(|| r.clone());
                }
            }
        }
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

    /// Whether the runs file of `pack` exists on disk now (finished or not: see
    /// [`Store::pack_check`]).
    pub fn pack_done(&self, pack: &str) -> bool {
        self.runs_path(pack).exists()
    }

    /// Whether planned pack `pack` is finished (as of the last refresh): every unit has a
    /// row, and the pack's own runs file, if there is one, is readable, holds only units of
    /// the pack and is not missing any of them.
    pub fn pack_check(&self, pack: &Pack) -> PackCheck {
        let name = format!("{}.runs.parquet", pack.id);
        let file = self.files.iter().find(|(n, _)| *n == name).map(|(_, f)| f);
        let all_done = pack.units.iter().all(|u| self.is_done(&u.id));
        match file.map(|f| &f.rows) {
            None if all_done => PackCheck::Finished,
            None => PackCheck::Missing,
            Some(Err(e)) => PackCheck::Bad(e.clone()),
            Some(Ok(rows)) => {
                let planned: HashSet<&str> = pack.units.iter().map(|u| u.id.as_str()).collect();
                if let Some(r) = rows.iter().find(|r| !planned.contains(r.unit_id.as_str())) {
                    return PackCheck::Bad(format!(
                        "it holds unit {} (seed {}), which the plan does not put in this pack",
                        r.unit_id, r.seed
                    ));
                }
                if all_done {
                    return PackCheck::Finished;
                }
                let missing: Vec<u64> = pack
                    .units
                    .iter()
                    .filter(|u| !self.is_done(&u.id))
                    .map(|u| u.seed)
                    .collect();
                PackCheck::Bad(format!(
                    "it holds {} of the pack's {} units (seeds {:?} are missing)",
                    rows.len(),
                    pack.units.len(),
                    missing
                ))
            }
        }
    }

    /// Moves the runs and curves files of `pack` to `rejected/` (named with the time) and
    /// forgets their rows; returns where the runs file went.
    pub fn reject(&mut self, pack: &str) -> Result<PathBuf> {
        let dir = self.dir.join("rejected");
        fs::create_dir_all(&dir).map_err(|e| store_error(&e, &dir, "create the folder"))?;
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let mut runs_to = dir.clone();
        for (from, kind) in [
            (self.curves_path(pack), "curves"),
            (self.runs_path(pack), "runs"),
        ] {
            let to = dir.join(format!("{pack}.{t}.{kind}.parquet"));
            if from.exists() {
                fs::rename(&from, &to).map_err(|e| store_error(&e, &from, "move aside"))?;
            }
            if kind == "runs" {
                runs_to = to;
            }
        }
        let name = format!("{pack}.runs.parquet");
        self.files.retain(|(n, _)| *n != name);
        self.rebuild();
        Ok(runs_to)
    }

    /// Writes a finished pack: curves first, then runs (the commit marker).
    pub fn write_pack(&mut self, pack: &str, runs: &[RunRow], curves: &[CurveRow]) -> Result<()> {
        write_parquet(&self.curves_path(pack), &mut curves_frame(curves)?)?;
        let path = self.runs_path(pack);
        write_parquet(&path, &mut runs_frame(runs)?)?;
        let name = format!("{pack}.runs.parquet");
        let file = PackFile {
            stamp: stamp(&path),
            rows: Ok(runs.to_vec()),
        };
        match self.files.iter().position(|(n, _)| *n == name) {
            Some(i) => self.files[i].1 = file,
            None => self.files.push((name, file)),
        }
        self.rebuild();
        Ok(())
    }

    /// Curve rows of a finished pack.
    pub fn pack_curves(&self, pack: &str) -> Result<Vec<CurveRow>> {
        curves_from_frame(&read_parquet(&self.curves_path(pack))?)
    }

    fn failure_path(&self, pack: &str) -> PathBuf {
        self.dir.join("failed").join(format!("{pack}.json"))
    }

    /// Records that `failure.pack_id` failed (replacing an earlier record).
    pub fn record_failure(&self, failure: &Failure) -> Result<()> {
        let dir = self.dir.join("failed");
        fs::create_dir_all(&dir).map_err(|e| store_error(&e, &dir, "create the folder"))?;
        let path = self.failure_path(&failure.pack_id);
        let text = serde_json::to_vec_pretty(failure)?;
        write_atomic(&path, |f| {
            std::io::Write::write_all(f, &text).map_err(|e| store_error(&e, &path, "write"))
        })
    }

    /// Removes the failure record of `pack`, if any.
    pub fn clear_failure(&self, pack: &str) {
        let _ = fs::remove_file(self.failure_path(pack));
    }

    /// The failure record of `pack`, if any.
    pub fn failure(&self, pack: &str) -> Option<Failure> {
        let bytes = fs::read(self.failure_path(pack)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every failure record of the study, by pack id.
    pub fn failures(&self) -> Vec<Failure> {
        read_failures(&self.dir)
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

    /// Writes `race.parquet`.
    pub fn write_race(&self, rows: &[crate::record::RaceRow]) -> Result<()> {
        write_parquet(&self.dir.join("race.parquet"), &mut race_frame(rows)?)
    }

    /// Writes `generations.parquet`.
    pub fn write_generations(&self, rows: &[GenerationRow]) -> Result<()> {
        write_parquet(
            &self.dir.join("generations.parquet"),
            &mut generations_frame(rows)?,
        )
    }
}

/// The failure records under a study's store folder `dir` (`failed/*.json`), by pack id;
/// unreadable records are skipped. For reports: a study with failures is incomplete.
pub fn read_failures(dir: &Path) -> Vec<Failure> {
    let Ok(entries) = fs::read_dir(dir.join("failed")) else {
        return vec![];
    };
    let mut v: Vec<Failure> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    v.sort_by(|a: &Failure, b| a.pack_id.cmp(&b.pack_id));
    v
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gene::Gene;
    use crate::record::{now_rfc3339, Stage};
    use crate::train::Preset;
    use std::time::SystemTime;

    fn row(unit: &str, seed: u64, val: Option<f64>) -> RunRow {
        RunRow {
            study: "t".into(),
            stage: Stage::Search,
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
            hardware: "test cpu".into(),
            stopped_at: None,
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
    fn a_zombie_holder_counts_as_dead() {
        let dir = tempdir();
        let store = Store::open(&dir, "t").unwrap();
        // A child that has exited but is not reaped yet is a zombie.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while claims::process_alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "child never became a zombie"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok(),
            "already reaped"
        );
        let info = ClaimInfo {
            host: host_name(),
            pid,
            since: now_rfc3339(),
        };
        fs::write(
            store.dir.join("claims/pk.0"),
            serde_json::to_string(&info).unwrap(),
        )
        .unwrap();
        assert_eq!(store.pack_state("pk").unwrap(), PackState::Pending);
        assert!(store.holder("pk").unwrap().is_none());
        child.wait().unwrap();
        assert!(claims::process_alive(std::process::id()));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn stale_temporary_and_probe_files_are_removed_on_open() {
        let dir = tempdir();
        let store = Store::open(&dir, "t").unwrap();
        let old = SystemTime::now() - STALE_AFTER - std::time::Duration::from_secs(5);
        let paths = [
            store.dir.join(".tmp-runs.parquet-123-456"),
            store.dir.join("packs/.tmp-ab.runs.parquet-1-2"),
            store.dir.join(".probe-77"),
        ];
        for p in &paths {
            fs::write(p, b"x").unwrap();
            fs::File::options()
                .append(true)
                .open(p)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        // A fresh one may belong to a live writer: kept.
        let fresh = store.dir.join("packs/.tmp-cd.runs.parquet-1-3");
        fs::write(&fresh, b"x").unwrap();
        let _ = Store::open(&dir, "t").unwrap();
        for p in &paths {
            assert!(!p.exists(), "{} kept", p.display());
        }
        assert!(fresh.exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_pack_is_finished_only_when_its_file_holds_exactly_its_units() {
        use crate::study::plan::Planner;
        let dir = tempdir();
        let mut store = Store::open(&dir, "t").unwrap();
        let planner = Planner::new(Preset::Smoke.config(), "fp".into(), 2);
        let pack = planner
            .pack(&[(Gene::BASELINE, 1), (Gene::BASELINE, 2)], |_| false)
            .remove(0);
        let mk = |u: &crate::study::plan::Unit| RunRow {
            unit_id: u.id.clone(),
            pack_id: pack.id.clone(),
            seed: u.seed,
            ..row("x", u.seed, Some(50.0))
        };
        assert_eq!(store.pack_check(&pack), PackCheck::Missing);
        store
            .write_pack(&pack.id, &[mk(&pack.units[0])], &[])
            .unwrap();
        let mut fresh = Store::open(&dir, "t").unwrap();
        fresh.refresh().unwrap();
        assert!(
            matches!(fresh.pack_check(&pack), PackCheck::Bad(m) if m.contains("1 of the pack's 2"))
        );
        // Another process rewrites the file with both units: the change is seen.
        std::thread::sleep(std::time::Duration::from_millis(20));
        store
            .write_pack(&pack.id, &[mk(&pack.units[0]), mk(&pack.units[1])], &[])
            .unwrap();
        fresh.refresh().unwrap();
        assert_eq!(fresh.pack_check(&pack), PackCheck::Finished);
        // A file that is not Parquet, or misses a column, is bad and its rows never count.
        fs::write(
            store.dir.join(format!("packs/{}.runs.parquet", pack.id)),
            b"junk",
        )
        .unwrap();
        fresh.refresh().unwrap();
        assert!(matches!(fresh.pack_check(&pack), PackCheck::Bad(m) if m.contains("Parquet")));
        assert!(!fresh.is_done(&pack.units[0].id));
        let to = fresh.reject(&pack.id).unwrap();
        assert!(to.exists() && to.starts_with(store.dir.join("rejected")));
        assert_eq!(fresh.pack_check(&pack), PackCheck::Missing);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn failures_are_recorded_and_cleared() {
        let dir = tempdir();
        let store = Store::open(&dir, "t").unwrap();
        let f = Failure {
            pack_id: "pk".into(),
            stage: "search".into(),
            gene: Gene::BASELINE.to_string(),
            seeds: vec![1],
            unit_ids: vec!["u".into()],
            kind: "panic".into(),
            message: "boom".into(),
            host: host_name(),
            pid: 1,
            at: now_rfc3339(),
        };
        store.record_failure(&f).unwrap();
        assert_eq!(store.failure("pk"), Some(f.clone()));
        assert_eq!(read_failures(&store.dir), vec![f]);
        store.clear_failure("pk");
        assert!(store.failures().is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn io_errors_name_the_path_and_the_fix() {
        let p = Path::new("/some/store/study.toml");
        for (code, needle) in [
            (28, "disk is full"),
            (17, "in the way"),
            (13, "not writable"),
        ] {
            let e = store_error(&std::io::Error::from_raw_os_error(code), p, "write");
            let s = e.to_string();
            assert!(
                s.contains("/some/store/study.toml") && s.contains(needle),
                "{s}"
            );
        }
        // An error inside an atomic write names the file.
        let dir = tempdir();
        let target = dir.join("meta.json");
        let e = write_atomic(&target, |_| {
            Err(std::io::Error::from_raw_os_error(28).into())
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("meta.json") && e.contains("disk is full"), "{e}");
        assert!(
            fs::read_dir(&dir).unwrap().next().is_none(),
            "temporary file left"
        );
        let _ = fs::remove_dir_all(&dir);
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
