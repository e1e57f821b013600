//! Claims: how several processes share a study. `claims/<pack_id>.<k>` is created with
//! `O_EXCL`; the highest `k` is the live claim. A claim is stale when its process is gone
//! (same host) or its heartbeat (mtime) is older than [`STALE_AFTER`]; a stale claim is
//! superseded by creating `k + 1`, which only one process can do. A holder on this host
//! that is a zombie (exited, not yet reaped: state `Z` in `/proc/PID/stat`) is gone.

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

/// Who holds a pack's claim, seen from this process.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    /// The claim's contents.
    pub info: ClaimInfo,
    /// Time since its last heartbeat (the claim file's mtime).
    pub heartbeat_age: Duration,
}

impl Holder {
    /// When the claim goes stale unless the holder beats again (a holder on this host is
    /// also taken over as soon as its process is gone).
    pub fn takeover_in(&self) -> Duration {
        STALE_AFTER.saturating_sub(self.heartbeat_age)
    }

    /// `pid 123 on host h (claimed at T, last heartbeat 5 s ago)`.
    pub fn describe(&self) -> String {
        format!(
            "pid {} on host {} (claimed at {}, last heartbeat {} s ago)",
            self.info.pid,
            self.info.host,
            self.info.since,
            self.heartbeat_age.as_secs()
        )
    }
}

/// Claim state of a pack in the store (whether it is finished is
/// [`Store::pack_check`]'s business).
#[derive(Debug, Clone, PartialEq)]
pub enum PackState {
    /// A live claim by another process (or by this one).
    Claimed(ClaimInfo),
    /// No live claim.
    Pending,
}

/// This machine's host name.
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether process `pid` of this host is running: it exists and is not a zombie (dead,
/// not yet reaped by its parent) or dead (`Z`, `X` in `/proc/PID/stat`).
pub fn process_alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true; // cannot tell: rely on the heartbeat
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold any
        // character: it is the first field after the last ')'.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next()),
            Some("Z") | Some("X") | Some("x")
        ),
        Err(_) => Path::new(&format!("/proc/{pid}")).exists(),
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
        self.holder_of(path).map(|h| h.info)
    }

    /// The holder of the claim file at `path` with its heartbeat age, when it is live.
    fn holder_of(&self, path: &Path) -> Option<Holder> {
        let info: Option<ClaimInfo> = fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let age = fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        let info = match info {
            Some(i) if i.host == self.host && !process_alive(i.pid) => return None,
            Some(i) if i.host == self.host && i.pid == std::process::id() => i,
            _ if age > STALE_AFTER => return None,
            Some(i) => i,
            // Being written right now, or unreadable: live until the heartbeat says otherwise.
            None => ClaimInfo {
                host: "?".into(),
                pid: 0,
                since: "?".into(),
            },
        };
        Some(Holder {
            info,
            heartbeat_age: age,
        })
    }

    /// The live holder of `pack`'s claim, if any.
    pub fn holder(&self, pack: &str) -> Result<Option<Holder>> {
        Ok(self
            .claim_files(pack)?
            .last()
            .and_then(|(_, p)| self.holder_of(p)))
    }

    /// The claim state of `pack` now: claimed by a live claim, or pending.
    pub fn pack_state(&self, pack: &str) -> Result<PackState> {
        match self.claim_files(pack)?.last() {
            Some((_, p)) => Ok(self
                .live_holder(p)
                .map_or(PackState::Pending, PackState::Claimed)),
            None => Ok(PackState::Pending),
        }
    }

    /// Tries to claim `pack`; `None` when a live process holds it. Whether the pack is
    /// finished is for the caller to check, holding the claim.
    pub fn claim(&self, pack: &str) -> Result<Option<Claim>> {
        for _ in 0..8 {
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
                    if let Err(e) = f
                        .write_all(serde_json::to_string(&info)?.as_bytes())
                        .and_then(|_| f.sync_all())
                    {
                        let _ = fs::remove_file(&path);
                        return Err(store_error(&e, &path, "write the claim"));
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
