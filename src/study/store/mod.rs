//! The store: one folder per study, finished packs as Parquet files written atomically,
//! claim files so that several processes can share a study, and the consolidated tables
//! `runs.parquet`, `curves.parquet` and `generations.parquet`.
//!
//! Layout of `<store>/<study>/`:
//! - `packs/<pack_id>.curves.parquet`, then `packs/<pack_id>.runs.parquet` (the commit
//!   marker: a pack is finished when its runs file exists). Each is written to a temporary
//!   file, fsynced and renamed ([`fsio`]), so a crash leaves either the whole file or none.
//! - `claims/<pack_id>.<k>` ([`claims`]). Rows can never be duplicated: a unit's row lives
//!   in the file named by its pack, and consolidation keeps one row per unit id.
//! - `runs.parquet`, `curves.parquet`, `generations.parquet`, `race.parquet` ([`schema`]):
//!   rebuilt from the packs under an exclusive lock on `.lock` (the last two by the study
//!   kinds that have them).
//! - `study.toml` (the file as run) and `meta.json` ([`meta`]).

pub mod claims;
pub mod fsio;
pub mod meta;
pub mod schema;

use crate::record::{CurveRow, GenerationRow, RunRow};
use anyhow::{bail, Result};
pub use claims::{host_name, Claim, ClaimInfo, PackState, STALE_AFTER};
use fsio::store_error;
pub use fsio::{read_parquet, write_atomic, write_parquet};
pub use meta::StoreMeta;
pub use schema::{
    curves_frame, curves_from_frame, generations_frame, generations_from_frame, race_frame,
    race_from_frame, runs_frame, runs_from_frame,
};
use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

/// A study's folder in the store.
#[derive(Debug)]
pub struct Store {
    /// `<store>/<study>`.
    pub dir: PathBuf,
    pub(crate) host: String,
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
