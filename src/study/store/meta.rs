//! `meta.json` and `study.toml`: what a store was made from, typed.

use super::fsio::{store_error, write_atomic};
use super::Store;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The contents of `meta.json`, written by every `evoattn run` (fields alphabetical, as the
/// file shows them). Fields missing from an older file read as their defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreMeta {
    /// [`crate::data::Corpus::fingerprint`] of the data the study ran on.
    pub data_fingerprint: String,
    /// [`crate::version::ENGINE_VERSION`] of the last run.
    pub engine_version: u32,
    /// Crate version of the last run.
    pub evoattn_version: String,
    /// [`crate::gene::SPACE_VERSION`] the study was planned with (1 when absent: stores
    /// written before the space had a version).
    pub gene_space_version: u32,
    /// Commit of the binary of the last run.
    pub git_commit: String,
    /// Study kind (`evolve`, …).
    pub kind: String,
    /// Study name.
    pub study: String,
    /// The study file as given on the command line.
    pub study_file: String,
    /// SHA-256 of the study file's bytes.
    pub study_sha256: String,
}

impl StoreMeta {
    /// Reads `dir/meta.json`; `None` when it is absent or unreadable (reports then say
    /// "unknown" where they would quote it).
    pub fn read(dir: &Path) -> Option<StoreMeta> {
        let bytes = std::fs::read(dir.join("meta.json")).ok()?;
        let mut m: StoreMeta = serde_json::from_slice(&bytes).ok()?;
        if m.gene_space_version == 0 {
            m.gene_space_version = 1;
        }
        Some(m)
    }
}

impl Store {
    /// This study's `meta.json`, if it has one.
    pub fn meta(&self) -> Option<StoreMeta> {
        StoreMeta::read(&self.dir)
    }

    /// Writes `meta.json` atomically.
    pub fn write_meta(&self, meta: &StoreMeta) -> Result<()> {
        let path = self.dir.join("meta.json");
        let text = serde_json::to_vec_pretty(meta)?;
        write_atomic(&path, |f| {
            std::io::Write::write_all(f, &text).map_err(|e| store_error(&e, &path, "write"))
        })
    }

    /// Keeps a copy of the study file as run (`study.toml`), atomically.
    pub fn write_study_file(&self, text: &[u8]) -> Result<()> {
        let path = self.dir.join("study.toml");
        write_atomic(&path, |f| {
            std::io::Write::write_all(f, text).map_err(|e| store_error(&e, &path, "write"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_meta_files_read_with_defaults() {
        let dir = super::super::tests::tempdir();
        std::fs::write(
            dir.join("meta.json"),
            r#"{"study": "q", "study_sha256": "ab", "engine_version": 1}"#,
        )
        .unwrap();
        let m = StoreMeta::read(&dir).unwrap();
        assert_eq!((m.study.as_str(), m.engine_version), ("q", 1));
        assert_eq!(m.gene_space_version, 1);
        assert!(StoreMeta::read(&dir.join("nowhere")).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
