//! `evoattn data info` and `evoattn data fetch`.

use super::output::{self, num, Plain};
use anyhow::{bail, Result};
use clap::Subcommand;
use evoattn::data::{self, Corpus};
use serde_json::json;
use std::path::PathBuf;

/// `evoattn data …`.
#[derive(Subcommand)]
pub enum DataCmd {
    /// Token counts, vocabulary size and checksums of the data directory.
    Info {
        /// Data directory (default: EVOATTN_DATA, else the default data directory).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Cap the vocabulary as a preset would (vocab_size and unigram perplexity follow it).
        #[arg(long)]
        vocab_cap: Option<usize>,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Download the tokenized WikiText-2 release, verifying SHA-256.
    Fetch {
        /// Target directory (default: EVOATTN_DATA, else the default data directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Base URL serving train.txt/valid.txt/test.txt, tried before the built-in mirrors.
        #[arg(long)]
        mirror: Vec<String>,
        /// Only use the --mirror URLs.
        #[arg(long)]
        no_default_mirrors: bool,
    },
}

/// Runs `evoattn data …`.
pub fn run(c: &DataCmd) -> Result<()> {
    match c {
        DataCmd::Info {
            data: d,
            vocab_cap,
            json: j,
        } => {
            let dir = data::resolve_data_dir(d.as_deref());
            let corpus = Corpus::load(&dir, *vocab_cap)?;
            let (uv, ut) = (
                corpus.unigram_ppl(&corpus.valid),
                corpus.unigram_ppl(&corpus.test),
            );
            let v = json!({
                "vocab_size": corpus.vocab.len(),
                "tokens": {"train": corpus.train.len(), "valid": corpus.valid.len(), "test": corpus.test.len()},
                "sha256": {"train": corpus.sha256[0], "valid": corpus.sha256[1], "test": corpus.sha256[2]},
                "unigram_ppl": {"valid": num(uv), "test": num(ut)},
            });
            let mut text = format!(
                "data directory: {}\nvocabulary:     {}\nunigram ppl:    valid {uv:.1}, test {ut:.1} (add-one smoothed train unigram)\n",
                dir.display(),
                corpus.vocab.len()
            );
            for (i, s) in data::SPLITS.iter().enumerate() {
                let n = corpus.split(s).map(|x| x.len()).unwrap_or(0);
                let known = data::KNOWN_SHA256[i].1 == corpus.sha256[i];
                text += &format!(
                    "{s:<6} {n:>9} tokens  sha256 {} {}\n",
                    corpus.sha256[i],
                    if known {
                        "(standard release)"
                    } else {
                        "(NOT the standard release)"
                    }
                );
            }
            output::print(
                &Plain {
                    json: vec![v],
                    text,
                },
                *j,
            )
        }
        DataCmd::Fetch {
            dir,
            mirror,
            no_default_mirrors,
        } => {
            let dir = data::resolve_data_dir(dir.as_deref());
            let mut mirrors = mirror.clone();
            if !no_default_mirrors {
                mirrors.extend(data::fetch::MIRRORS.iter().map(|s| s.to_string()));
            }
            if mirrors.is_empty() {
                bail!("no mirror to fetch from: pass --mirror URL or drop --no-default-mirrors");
            }
            let d = data::fetch::fetch(&dir, &mirrors, true)?;
            eprintln!("WikiText-2 is in {} (checksums verified)", d.display());
            Ok(())
        }
    }
}
