//! Downloading the tokenized WikiText-2 release.
//!
//! Each split is fetched from the first mirror that serves it, hashed while it streams,
//! checked against [`super::KNOWN_SHA256`], written to a temporary file, fsynced and renamed
//! into place, so a partial or corrupt download never appears under the final name.

use super::{KNOWN_SHA256, SPLITS};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Base URLs that serve `train.txt`, `valid.txt` and `test.txt` of the standard release
/// (byte-identical to pytorch/examples `word_language_model/data/wikitext-2`).
pub const MIRRORS: &[&str] = &[
    "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2",
    "https://raw.githubusercontent.com/pytorch/examples/77f55b912142e11fcfdf5b530231fb9c52f181e8/word_language_model/data/wikitext-2",
    "https://cdn.jsdelivr.net/gh/pytorch/examples@main/word_language_model/data/wikitext-2",
];

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Downloads the three splits into `dir` from `mirrors` (default: [`MIRRORS`]).
/// Files already present with the right checksum are kept. Returns the directory.
pub fn fetch(dir: &Path, mirrors: &[String], progress: bool) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into();
    for (split, want) in KNOWN_SHA256 {
        let target = dir.join(format!("{split}.txt"));
        if target.is_file() && sha256_file(&target)? == want {
            if progress {
                eprintln!("{split}.txt present, checksum ok");
            }
            continue;
        }
        let mut errors = Vec::new();
        let mut done = false;
        for base in mirrors {
            let url = format!("{}/{split}.txt", base.trim_end_matches('/'));
            match download_one(&agent, &url, &target, want, progress) {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(e) => errors.push(format!("{url}: {e:#}")),
            }
        }
        if !done {
            bail!(
                "could not download {split}.txt from any mirror:\n  {}\nDownload the tokenized WikiText-2 \
                 (train.txt, valid.txt, test.txt) by hand into {} and point --data or EVOATTN_DATA at it",
                errors.join("\n  "),
                dir.display()
            );
        }
    }
    debug_assert!(SPLITS
        .iter()
        .all(|s| dir.join(format!("{s}.txt")).is_file()));
    Ok(dir.to_path_buf())
}

fn download_one(
    agent: &ureq::Agent,
    url: &str,
    target: &Path,
    want: &str,
    progress: bool,
) -> Result<()> {
    let mut resp = agent.get(url).call().context("request failed")?;
    let len = resp.body().content_length();
    let pb = if progress {
        let pb = ProgressBar::new(len.unwrap_or(0));
        pb.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        pb.set_message(
            target
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string(),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let tmp = target.with_extension(format!("txt.part-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut file =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut reader = resp.body_mut().with_config().limit(64 << 20).reader();
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buf).context("reading the response")?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            file.write_all(&buf[..n])
                .with_context(|| format!("writing {}", tmp.display()))?;
            pb.inc(n as u64);
        }
        let got = hex::encode(h.finalize());
        if got != want {
            bail!("checksum mismatch: got {got}, expected {want}");
        }
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, target)
            .with_context(|| format!("renaming into {}", target.display()))?;
        Ok(())
    })();
    pb.finish_and_clear();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
