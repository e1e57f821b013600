//! WikiText-2: locating, loading, tokenising and batching.
//!
//! The loader follows the standard word-level LM recipe (pytorch/examples `data.py`):
//! every line is split on whitespace and followed by one `<eos>` token; the vocabulary is
//! built from the training split (in order of first occurrence). An optional cap keeps the
//! `K` most frequent training words (ties broken by first occurrence) and maps the rest to
//! `<unk>`.

pub mod batch;
pub mod fetch;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The three split file names of the standard release.
pub const SPLITS: [&str; 3] = ["train", "valid", "test"];

/// The end-of-line token appended to every line.
pub const EOS: &str = "<eos>";
/// The out-of-vocabulary token.
pub const UNK: &str = "<unk>";

/// SHA-256 of the standard release files (`train.txt`, `valid.txt`, `test.txt`).
pub const KNOWN_SHA256: [(&str, &str); 3] = [
    (
        "train",
        "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
    ),
    (
        "valid",
        "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
    ),
    (
        "test",
        "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
    ),
];

/// Environment variable naming the data directory.
pub const DATA_ENV: &str = "EVOATTN_DATA";

/// The directory used when neither `--data` nor `EVOATTN_DATA` is given:
/// `$XDG_DATA_HOME/evoattn/wikitext-2`, else `~/.local/share/evoattn/wikitext-2`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(x).join("evoattn").join("wikitext-2");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local")
        .join("share")
        .join("evoattn")
        .join("wikitext-2")
}

/// Where the data is looked for: the `--data` flag, else `EVOATTN_DATA`, else the default.
pub fn resolve_data_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os(DATA_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => default_data_dir(),
    }
}

/// The data directory to use, fetching WikiText-2 into the default directory first when
/// neither `--data` nor `EVOATTN_DATA` names one and the default is empty. An explicitly
/// named directory is never downloaded into implicitly: a missing one is an error.
pub fn data_dir_or_fetch(flag: Option<&Path>) -> Result<PathBuf> {
    let explicit = flag.is_some() || std::env::var_os(DATA_ENV).is_some_and(|v| !v.is_empty());
    let dir = resolve_data_dir(flag);
    if !explicit && check_data_dir(&dir).is_err() {
        eprintln!(
            "WikiText-2 not found in {}; downloading it there once (`evoattn data fetch`)",
            dir.display()
        );
        let mirrors: Vec<String> = fetch::MIRRORS.iter().map(|s| s.to_string()).collect();
        fetch::fetch(&dir, &mirrors, true)?;
    }
    Ok(dir)
}

/// Checks that `dir` holds the three split files; the error says where it looked and how
/// to get the data.
pub fn check_data_dir(dir: &Path) -> Result<()> {
    let missing: Vec<String> = SPLITS
        .iter()
        .map(|s| format!("{s}.txt"))
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "WikiText-2 not found: {} lacks {}. Point --data or {DATA_ENV} at a directory holding \
             train.txt, valid.txt and test.txt (the tokenized WikiText-2 release), or download it \
             with `evoattn data fetch --dir {}`",
            dir.display(),
            missing.join(", "),
            dir.display()
        );
    }
    Ok(())
}

/// A word vocabulary.
#[derive(Debug, Clone)]
pub struct Vocab {
    words: Vec<String>,
    index: HashMap<String, u32>,
    unk: Option<u32>,
}

impl Vocab {
    /// Number of word types.
    pub fn len(&self) -> usize {
        self.words.len()
    }
    /// True when the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
    /// The id of a word, `<unk>` for unknown words (when the vocabulary has one).
    pub fn id(&self, w: &str) -> Option<u32> {
        self.index.get(w).copied().or(self.unk)
    }
    /// The word of an id.
    pub fn word(&self, id: u32) -> &str {
        &self.words[id as usize]
    }
}

/// The tokenised corpus: vocabulary plus the three splits as token ids.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// The vocabulary (from train, optionally capped).
    pub vocab: Vocab,
    /// Training split, as token ids.
    pub train: Vec<u32>,
    /// Validation split.
    pub valid: Vec<u32>,
    /// Test split.
    pub test: Vec<u32>,
    /// SHA-256 of each split file, in [`SPLITS`] order.
    pub sha256: [String; 3],
    /// The vocabulary cap applied, if any.
    pub vocab_cap: Option<usize>,
}

fn words_of(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .flat_map(|l| l.split_whitespace().chain(std::iter::once(EOS)))
}

fn read_split(dir: &Path, split: &str) -> Result<(String, String)> {
    let path = dir.join(format!("{split}.txt"));
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read {}; check the file, or point --data or {DATA_ENV} at another WikiText-2 directory",
            path.display()
        )
    })?;
    let sha = hex::encode(Sha256::digest(&bytes));
    let text = String::from_utf8(bytes).with_context(|| {
        format!(
            "{} is not UTF-8 text; is this the tokenized WikiText-2?",
            path.display()
        )
    })?;
    Ok((text, sha))
}

impl Corpus {
    /// Loads the three splits from `dir`, capping the vocabulary at `vocab_cap` words when given.
    pub fn load(dir: &Path, vocab_cap: Option<usize>) -> Result<Corpus> {
        check_data_dir(dir)?;
        let (train_t, s0) = read_split(dir, "train")?;
        let (valid_t, s1) = read_split(dir, "valid")?;
        let (test_t, s2) = read_split(dir, "test")?;
        Corpus::from_texts(&train_t, &valid_t, &test_t, vocab_cap, [s0, s1, s2])
    }

    /// Builds a corpus from in-memory split texts.
    pub fn from_texts(
        train: &str,
        valid: &str,
        test: &str,
        vocab_cap: Option<usize>,
        sha256: [String; 3],
    ) -> Result<Corpus> {
        // Full vocabulary in order of first occurrence, with counts.
        let mut order: Vec<&str> = Vec::new();
        let mut counts: HashMap<&str, (usize, usize)> = HashMap::new(); // word -> (first, count)
        for w in words_of(train) {
            let n = order.len();
            let e = counts.entry(w).or_insert_with(|| {
                order.push(w);
                (n, 0)
            });
            e.1 += 1;
        }
        let words: Vec<String> = match vocab_cap {
            Some(k) if k < order.len() => {
                if k < 2 {
                    bail!("vocab_cap must be at least 2 (it keeps <unk> and <eos>), got {k}");
                }
                let mut ranked: Vec<&str> = order.clone();
                ranked.sort_by_key(|w| {
                    let (first, count) = counts[w];
                    (std::cmp::Reverse(count), first)
                });
                let mut kept: Vec<&str> = ranked[..k].to_vec();
                for special in [UNK, EOS] {
                    if !kept.contains(&special) {
                        // Make room for the special token by dropping the rarest kept word.
                        let drop = kept
                            .iter()
                            .rposition(|w| *w != UNK && *w != EOS)
                            .expect("k >= 2");
                        kept.remove(drop);
                        kept.push(special);
                    }
                }
                // Keep first-occurrence order for readability of ids.
                kept.sort_by_key(|w| counts.get(w).map(|c| c.0).unwrap_or(usize::MAX));
                kept.into_iter().map(String::from).collect()
            }
            _ => order.iter().map(|s| s.to_string()).collect(),
        };
        let index: HashMap<String, u32> = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        let unk = index.get(UNK).copied();
        let vocab = Vocab { words, index, unk };
        let encode = |text: &str, name: &str| -> Result<Vec<u32>> {
            words_of(text)
                .map(|w| {
                    vocab.id(w).with_context(|| {
                        format!("{name} split has the word `{w}` that is not in the training vocabulary and there is no <unk> token")
                    })
                })
                .collect()
        };
        Ok(Corpus {
            train: encode(train, "train")?,
            valid: encode(valid, "valid")?,
            test: encode(test, "test")?,
            vocab,
            sha256,
            vocab_cap,
        })
    }

    /// A short fingerprint of the data and tokenisation, for content hashes of runs.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for s in &self.sha256 {
            h.update(s.as_bytes());
        }
        h.update(format!("cap={:?};vocab={}", self.vocab_cap, self.vocab.len()).as_bytes());
        hex::encode(&h.finalize()[..8])
    }

    /// The tokens of a split by name (`train`, `valid`, `test`).
    pub fn split(&self, name: &str) -> Option<&[u32]> {
        match name {
            "train" => Some(&self.train),
            "valid" => Some(&self.valid),
            "test" => Some(&self.test),
            _ => None,
        }
    }

    /// Perplexity of the unigram distribution estimated on train, measured on `split`
    /// (add-one smoothed so unseen ids have non-zero probability).
    pub fn unigram_ppl(&self, split: &[u32]) -> f64 {
        let v = self.vocab.len();
        let mut counts = vec![1.0f64; v];
        for &t in &self.train {
            counts[t as usize] += 1.0;
        }
        let total: f64 = counts.iter().sum();
        let nll: f64 = split
            .iter()
            .map(|&t| -(counts[t as usize] / total).ln())
            .sum::<f64>();
        (nll / split.len() as f64).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Corpus {
        let train = "a b c\n\nb c <unk> c\n";
        let valid = "c d a\n";
        let test = "b\n";
        Corpus::from_texts(train, valid, test, None, Default::default()).unwrap()
    }

    #[test]
    fn counts_and_eos_per_line() {
        let c = tiny();
        // train: 3 words + eos, 0 + eos, 4 + eos = 10
        assert_eq!(c.train.len(), 10);
        assert_eq!(c.valid.len(), 4);
        assert_eq!(c.test.len(), 2);
        // vocab in order of first occurrence: a b c <eos> <unk>
        assert_eq!(c.vocab.len(), 5);
        assert_eq!(c.vocab.word(0), "a");
        assert_eq!(c.vocab.word(3), EOS);
        // unknown word d -> <unk>
        assert_eq!(c.valid[1], c.vocab.id(UNK).unwrap());
    }

    #[test]
    fn vocab_cap_keeps_most_frequent_and_specials() {
        let train = "x x x y y z w\nx y\n";
        let c = Corpus::from_texts(train, "z\n", "w\n", Some(3), Default::default()).unwrap();
        // counts: x4 y3 eos2 z1 w1 ; top-3 = x y eos, but <unk> must be kept -> drop eos? no:
        // eos is special too, so the rarest non-special kept word (y) makes room for <unk>.
        assert_eq!(c.vocab.len(), 3);
        assert!(c.vocab.id("x").is_some());
        let unk = c.vocab.id(UNK).unwrap();
        assert_eq!(c.vocab.id("y"), Some(unk));
        assert_eq!(c.valid[0], unk);
        assert_ne!(c.vocab.id(EOS), Some(unk));
    }

    #[test]
    fn missing_dir_error_says_where_and_how() {
        let e = check_data_dir(Path::new("/nonexistent/wt2"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/wt2"), "{e}");
        assert!(e.contains("evoattn data fetch"), "{e}");
        assert!(e.contains(DATA_ENV), "{e}");
    }

    #[test]
    fn unigram_ppl_of_uniform_text() {
        let c = Corpus::from_texts("a b\n", "a b\n", "a b\n", None, Default::default()).unwrap();
        // counts with add-one: a 2, b 2, eos 2 -> uniform over 3 -> ppl 3
        assert!((c.unigram_ppl(&c.valid) - 3.0).abs() < 1e-12);
    }
}
