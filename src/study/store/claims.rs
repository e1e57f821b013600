//! Claims: how several processes share a study. `claims/<pack_id>.<k>` is created with
//! `O_EXCL`; the highest `k` is the live claim. A claim is stale when its process is gone
//! (same host) or its heartbeat (mtime) is older than [`STALE_AFTER`]; a stale claim is
//! superseded by creating `k + 1`, which only one process can do.

use super::fsio::store_error;
use super::Store;
use crate::record::now_rfc3339;
use anyhow::Result;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A claim without a heartbeat for this long is stale (heartbeats come every 15 s).
pub const STALE_AFTER: Duration = Duration::from_secs(120);

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

impl Store {
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
}
