//! Mid-run checkpoints of a replica-batched run, in safetensors.
//!
//! A checkpoint holds everything [`super::train`] needs to go on exactly where it stopped:
//! every parameter, both AdamW moments (tensors `param/NAME`, `adam_m/NAME`, `adam_v/NAME`,
//! each `[R, …]` with the replica axis first, f32), the per-step training losses of each
//! replica (`losses/I`), and in the safetensors metadata the step, AdamW's step count,
//! each replica's batch-stream position (the ChaCha word position), which replicas are
//! live, where they diverged, the curve so far, the hardware it was written on and a
//! SHA-256 over that state and every tensor's name, shape and bytes. A resumed run is
//! bit-identical to an uninterrupted one because nothing else carries state between steps
//! (there is no dropout; the learning rate is a function of the step; evaluation is
//! stateless).
//!
//! Writes are atomic (a temporary file in the same folder, synced, then renamed). A file
//! that does not parse, whose checksum or shapes do not match, or that belongs to another
//! run (its key) is rejected: [`load`] says why and the caller starts from scratch.
//!
//! The files load in Python with `safetensors.numpy.load_file(path)` (or `torch`).

use super::CurvePoint;
use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The format tag in every checkpoint's metadata.
pub const FORMAT: &str = "evoattn-checkpoint-1";

/// When a run writes checkpoints (study key `checkpoint_every`, `run --checkpoint-every`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Every {
    /// Never periodically (a signal still writes one).
    Off,
    /// After every N-th step.
    Steps(usize),
    /// By time, so that writing costs at most 1 % of training: the first once 60 s of
    /// training have passed, then whenever the training time since the last one exceeds
    /// both 60 s and 100 × the last write's time. Runs under a minute never write one.
    Auto,
}

impl Every {
    /// Parses `auto`, `0` (off) or a positive step count.
    pub fn parse(s: &str) -> Result<Every, String> {
        match s.trim() {
            "auto" => Ok(Every::Auto),
            "0" | "off" => Ok(Every::Off),
            n => n
                .parse::<usize>()
                .map(Every::Steps)
                .map_err(|_| format!("`{s}` is not a checkpoint interval: use a number of steps, 0 (off) or \"auto\"")),
        }
    }
}

impl std::fmt::Display for Every {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Every::Off => write!(f, "0"),
            Every::Steps(n) => write!(f, "{n}"),
            Every::Auto => write!(f, "auto"),
        }
    }
}

/// Where and how one run checkpoints.
#[derive(Debug, Clone)]
pub struct Checkpointing {
    /// The checkpoint file (`…/checkpoints/<pack>.safetensors`).
    pub path: PathBuf,
    /// Where a rejected checkpoint is moved (it is never deleted unread).
    pub rejected_dir: PathBuf,
    /// What the checkpoint must belong to (the pack id: a hash of its units' contents).
    pub key: String,
    /// When to write.
    pub every: Every,
    /// The hardware this run trains on (recorded in the checkpoint; a resume on other
    /// hardware is reported).
    pub hardware: String,
}

/// One curve point as stored (NaN and None both as null).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Point {
    /// Steps done.
    pub step: usize,
    /// Mean training loss since the previous point.
    pub train_loss: Option<f64>,
    /// Validation perplexity.
    pub val_ppl: Option<f64>,
}

impl Point {
    /// From a curve point.
    pub fn from_curve(c: &CurvePoint) -> Point {
        Point {
            step: c.step,
            train_loss: c.train_loss.is_finite().then_some(c.train_loss),
            val_ppl: c.val_ppl,
        }
    }
    /// Back to a curve point.
    pub fn to_curve(&self) -> CurvePoint {
        CurvePoint {
            step: self.step,
            train_loss: self.train_loss.unwrap_or(f64::NAN),
            val_ppl: self.val_ppl,
        }
    }
}

/// The state of a run that is not a tensor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// What the checkpoint belongs to ([`Checkpointing::key`]).
    pub key: String,
    /// The gene, as text.
    pub gene: String,
    /// The replicas' seeds.
    pub seeds: Vec<u64>,
    /// Steps completed.
    pub step: usize,
    /// AdamW's step count.
    pub adam_t: i32,
    /// Each replica's batch-stream position (ChaCha word position, decimal).
    pub streams: Vec<String>,
    /// Which replicas still train.
    pub live: Vec<bool>,
    /// Where each replica diverged.
    pub diverged_at: Vec<Option<usize>>,
    /// Each replica's curve so far.
    pub curves: Vec<Vec<Point>>,
    /// Step of the last curve point.
    pub last_point: usize,
    /// Training seconds so far (for tokens/s only).
    pub train_time: f64,
    /// The hardware it was written on (empty when unknown).
    #[serde(default)]
    pub hardware: String,
}

/// A named f32 tensor: name, shape, values.
pub type Named = (String, Vec<usize>, Vec<f32>);

/// A checkpoint's tensors by name: shape and values.
pub type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// SHA-256 over the state's JSON and every tensor's name, shape and bytes.
fn digest(state: &str, tensors: &[(String, Vec<usize>, Vec<u8>)]) -> String {
    let mut h = Sha256::new();
    h.update((state.len() as u64).to_le_bytes());
    h.update(state.as_bytes());
    for (name, shape, bytes) in tensors {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((shape.len() as u64).to_le_bytes());
        for &d in shape {
            h.update((d as u64).to_le_bytes());
        }
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    hex::encode(h.finalize())
}

/// Writes a checkpoint atomically; returns its size in bytes.
pub fn save(path: &Path, state: &State, tensors: &[Named]) -> Result<u64> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("checkpoint path {} has no folder", path.display()))?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the checkpoint folder {}", dir.display()))?;
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            let mut b = Vec::with_capacity(v.len() * 4);
            for x in v {
                b.extend_from_slice(&x.to_le_bytes());
            }
            (n.clone(), s.clone(), b)
        })
        .collect();
    let mut bytes = bytes;
    bytes.sort_by(|a, b| a.0.cmp(&b.0));
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), FORMAT.to_string());
    let state_json = serde_json::to_string(state)?;
    meta.insert("sha256".to_string(), digest(&state_json, &bytes));
    meta.insert("state".to_string(), state_json);
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()
        .map_err(|e| anyhow!("cannot lay out the checkpoint: {e}"))?;
    let buf = safetensors::serialize(views, Some(meta))
        .map_err(|e| anyhow!("cannot serialise the checkpoint: {e}"))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".tmp-{}-{name}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "cannot write the checkpoint {}: {e} (is the disk full or the store read-only?)",
            path.display()
        );
    }
    Ok(buf.len() as u64)
}

/// Reads a checkpoint: `Ok(None)` when there is none, `Err` (with the reason) when the
/// file is there but unusable: unreadable, truncated, not a checkpoint, or its checksum
/// does not match.
pub fn load(path: &Path) -> Result<Option<(State, Tensors)>> {
    let buf = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => bail!("cannot read it: {e}"),
    };
    let st = SafeTensors::deserialize(&buf)
        .map_err(|e| anyhow!("not a readable safetensors file ({e}); truncated?"))?;
    let (_, header) = SafeTensors::read_metadata(&buf)
        .map_err(|e| anyhow!("not a readable safetensors file ({e})"))?;
    let meta = header
        .metadata()
        .clone()
        .ok_or_else(|| anyhow!("no metadata: not an evoattn checkpoint"))?;
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        bail!(
            "format {:?}, expected {FORMAT}",
            meta.get("format").map(String::as_str).unwrap_or("none")
        );
    }
    let state_json = meta
        .get("state")
        .ok_or_else(|| anyhow!("no state in its metadata"))?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    // The digest is over the order the writer used: sorted by name (safetensors keeps
    // data in the order given, the writer gives it sorted).
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let want = meta
        .get("sha256")
        .ok_or_else(|| anyhow!("no checksum in its metadata"))?;
    let got = digest(state_json, &tensors);
    if &got != want {
        bail!("checksum mismatch (stored {want}, computed {got}): the file is corrupt");
    }
    let state: State =
        serde_json::from_str(state_json).map_err(|e| anyhow!("its state does not parse: {e}"))?;
    let mut out = HashMap::new();
    for (n, s, b) in tensors {
        if b.len() % 4 != 0 {
            bail!("tensor {n} is not f32");
        }
        let v: Vec<f32> = b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(n, (s, v));
    }
    Ok(Some((state, out)))
}

/// Moves a rejected checkpoint into `dir`, keeping it for inspection; returns where.
pub fn reject(path: &Path, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "checkpoint".into());
    let to = dir.join(format!(
        "{name}.{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    ));
    std::fs::rename(path, &to)?;
    Ok(to)
}

/// Writes each replica's final weights (no replica axis) to `path`, one file per replica,
/// loadable with the safetensors Python package.
pub fn save_weights(path: &Path, gene: &str, seed: u64, tensors: &[Named]) -> Result<u64> {
    let state = State {
        key: format!("weights {gene} seed {seed}"),
        gene: gene.to_string(),
        seeds: vec![seed],
        step: 0,
        adam_t: 0,
        streams: vec![],
        live: vec![],
        diverged_at: vec![],
        curves: vec![],
        last_point: 0,
        train_time: 0.0,
        hardware: String::new(),
    };
    save(path, &state, tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (State, Vec<Named>) {
        let state = State {
            key: "k".into(),
            gene: "dot+softmax+none+fixed".into(),
            seeds: vec![1, 2],
            step: 7,
            adam_t: 7,
            streams: vec!["123".into(), "456".into()],
            live: vec![true, false],
            diverged_at: vec![None, Some(3)],
            curves: vec![
                vec![Point {
                    step: 5,
                    train_loss: Some(1.5),
                    val_ppl: Some(9.0),
                }],
                vec![],
            ],
            last_point: 5,
            train_time: 1.0,
            hardware: "test cpu".into(),
        };
        let t = vec![
            (
                "a".to_string(),
                vec![2, 3],
                vec![0.5f32, -1.0, 2.0, 3.0, f32::MIN_POSITIVE, 1e-40],
            ),
            ("b".to_string(), vec![1], vec![7.0f32]),
        ];
        (state, t)
    }

    #[test]
    fn round_trip_is_exact() {
        let dir = std::env::temp_dir().join(format!("evoattn-ck-{}", std::process::id()));
        let p = dir.join("x.safetensors");
        let (state, t) = sample();
        save(&p, &state, &t).unwrap();
        let (s2, t2) = load(&p).unwrap().unwrap();
        assert_eq!(s2, state);
        for (n, s, v) in &t {
            let (s2, v2) = &t2[n];
            assert_eq!(s2, s);
            let a: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
            let b: Vec<u32> = v2.iter().map(|x| x.to_bits()).collect();
            assert_eq!(a, b);
        }
        assert!(load(&dir.join("missing.safetensors")).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corruption_and_truncation_are_detected() {
        let dir = std::env::temp_dir().join(format!("evoattn-ck2-{}", std::process::id()));
        let p = dir.join("x.safetensors");
        let (state, t) = sample();
        save(&p, &state, &t).unwrap();
        let good = std::fs::read(&p).unwrap();
        // Flip one bit of the last tensor byte.
        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 1] ^= 0x01;
        std::fs::write(&p, &bad).unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
        // Truncated.
        std::fs::write(&p, &good[..good.len() - 3]).unwrap();
        assert!(load(&p).is_err());
        std::fs::write(&p, &good[..5]).unwrap();
        assert!(load(&p).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_parses() {
        assert_eq!(Every::parse("auto"), Ok(Every::Auto));
        assert_eq!(Every::parse("0"), Ok(Every::Off));
        assert_eq!(Every::parse("25"), Ok(Every::Steps(25)));
        assert!(Every::parse("-1").is_err());
    }
}
