//! Runs that survive preemption (issue 12), with the real binary on small synthetic data:
//! SIGTERM in the middle of a pack checkpoints it and exits 75, and the rerun resumes at
//! the checkpoint's step with rows and curves bit-identical to an uninterrupted run; the
//! same after SIGKILL; another process with other `--jobs` and shards resumes it; a
//! corrupt checkpoint is detected, put aside and the pack restarts from scratch; a second
//! signal exits at once; `save_weights` keeps loadable safetensors of every unit.

use evoattn::record::{CurveRow, RunRow};
use evoattn::study::store::{curves_from_frame, read_parquet, runs_from_frame};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{assert_clean_exit, output_within, tiny_data};

const LIMIT: Duration = Duration::from_secs(300);
const STEPS: usize = 240;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_evoattn")
}

fn tmp(name: &str) -> PathBuf {
    common::temp_dir("ckpt", name)
}

/// Two packs (the baseline and one gene, seeds 1 and 2 as replicas of one run), with a
/// curve point every 40 steps and a checkpoint every 10.
fn study(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("ck.toml");
    std::fs::write(
        &p,
        format!(
            "name = \"ck\"\nkind = \"replicate\"\npreset = \"smoke\"\nseeds = [1, 2]\nmax_replicas = 2\ncheckpoint_every = 10\n{extra}[overrides]\nsteps = {STEPS}\neval_every = 40\nseq_len = 16\neval_max_tokens = 400\n[replicate]\ngenes = [\"dot+sparsemax+output_gate+learned\"]\n"
        ),
    )
    .unwrap();
    p
}

fn cmd(study: &Path, store: &Path, data: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args([
        "run",
        study.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ])
    .args(["--quiet", "--data", data.to_str().unwrap()])
    .args(extra)
    .env_remove("EVOATTN_FAIL_PACKS");
    c
}

fn run(study: &Path, store: &Path, data: &Path, extra: &[&str]) -> String {
    let out = output_within(&mut cmd(study, store, data, extra), LIMIT);
    assert_clean_exit(&out, &[0], "run")
}

fn checkpoints(store: &Path) -> Vec<PathBuf> {
    let dir = store.join("ck").join("checkpoints");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                // Not a temporary file being written.
                .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Starts a run (one job, so one pack at a time) and sends `signals` once its first
/// checkpoint exists; returns the process after it ends, with its stderr.
fn interrupted(study: &Path, store: &Path, data: &Path, signals: &[&str]) -> (i32, String) {
    let mut child: Child = cmd(study, store, data, &["--jobs", "1", "--threads", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).ok();
        s
    });
    let start = Instant::now();
    while checkpoints(store).is_empty() {
        assert!(start.elapsed() < LIMIT, "no checkpoint appeared");
        if let Some(s) = child.try_wait().unwrap() {
            panic!("the run ended ({s}) before its first checkpoint");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for s in signals {
        let ok = Command::new("kill")
            .args([&format!("-{s}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        std::thread::sleep(Duration::from_millis(2));
    }
    let status = child.wait().unwrap();
    let err = reader.join().unwrap();
    use std::os::unix::process::ExitStatusExt;
    (status.code().unwrap_or(-status.signal().unwrap_or(0)), err)
}

fn rows(store: &Path) -> Vec<RunRow> {
    let mut v = runs_from_frame(&read_parquet(&store.join("ck/runs.parquet")).unwrap()).unwrap();
    v.sort_by(|a, b| a.unit_id.cmp(&b.unit_id));
    v
}

fn curves(store: &Path) -> Vec<CurveRow> {
    let mut v =
        curves_from_frame(&read_parquet(&store.join("ck/curves.parquet")).unwrap()).unwrap();
    v.sort_by(|a, b| (&a.unit_id, a.step).cmp(&(&b.unit_id, b.step)));
    v
}

/// Everything of a row that training decides, bit for bit.
fn key(r: &RunRow) -> (String, u64, Option<u64>, u64, u64, u64) {
    (
        r.unit_id.clone(),
        r.seed,
        r.diverged_at,
        r.train_loss.to_bits(),
        r.val_ppl.unwrap_or(f64::NAN).to_bits(),
        r.test_ppl.unwrap_or(f64::NAN).to_bits(),
    )
}

fn curve_key(c: &CurveRow) -> (String, u64, u64, u64) {
    (
        c.unit_id.clone(),
        c.step,
        c.train_loss.to_bits(),
        c.val_ppl.unwrap_or(f64::NAN).to_bits(),
    )
}

fn assert_same(store: &Path, reference: &Path) {
    let (a, b) = (rows(store), rows(reference));
    assert_eq!(a.len(), 4);
    assert_eq!(
        a.iter().map(key).collect::<Vec<_>>(),
        b.iter().map(key).collect::<Vec<_>>()
    );
    let (ca, cb) = (curves(store), curves(reference));
    assert_eq!(ca.len(), 4 * (STEPS / 40));
    assert_eq!(
        ca.iter().map(curve_key).collect::<Vec<_>>(),
        cb.iter().map(curve_key).collect::<Vec<_>>()
    );
    assert!(
        checkpoints(store).is_empty(),
        "finished packs keep no checkpoint"
    );
}

/// The step a rerun said it resumed at.
fn resumed_at(err: &str) -> Vec<usize> {
    err.lines()
        .filter_map(|l| {
            let rest = l.split("resumed from its checkpoint at step ").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

#[test]
fn interrupted_runs_resume_bit_identically() {
    let dir = tmp("resume");
    let data = tiny_data(&dir, 6000);
    let st = study(&dir, "");
    let reference = dir.join("reference");
    run(&st, &reference, &data, &["--checkpoint-every", "0"]);
    assert!(checkpoints(&reference).is_empty());

    // SIGTERM: the pack in flight is checkpointed, its claim released, exit 75.
    let b = dir.join("term");
    let (code, err) = interrupted(&st, &b, &data, &["TERM"]);
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("interrupted by a signal at step"), "{err}");
    assert!(
        err.contains("run the same command again to resume"),
        "{err}"
    );
    assert_eq!(checkpoints(&b).len(), 1);
    let claims = std::fs::read_dir(b.join("ck/claims"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(claims, 0, "claims are released");
    // Resumed by a process with other --jobs and threads.
    let err = run(&st, &b, &data, &["--jobs", "2", "--threads", "1"]);
    let at = resumed_at(&err);
    assert_eq!(at.len(), 1, "{err}");
    assert!(at[0] > 0 && at[0] < STEPS, "resumed at {}", at[0]);
    assert_same(&b, &reference);

    // SIGKILL after a checkpoint: the dead holder's claim is taken over, the pack resumes
    // from its last periodic checkpoint, in two shards.
    let c = dir.join("kill");
    let (code, _) = interrupted(&st, &c, &data, &["KILL"]);
    assert_eq!(code, -9);
    let mut resumed = Vec::new();
    let mut log = String::new();
    for shard in ["0/2", "1/2"] {
        let err = run(&st, &c, &data, &["--shard", shard, "--jobs", "1"]);
        resumed.extend(resumed_at(&err));
        log.push_str(&err);
    }
    assert_eq!(resumed.len(), 1, "one pack resumes: {log}");
    assert!(resumed[0] > 0 && resumed[0] % 10 == 0, "at {}", resumed[0]);
    assert_same(&c, &reference);

    // A corrupt checkpoint: detected by its checksum, moved to rejected/, the pack starts
    // over and still gives the reference values.
    let d = dir.join("corrupt");
    let (code, err) = interrupted(&st, &d, &data, &["TERM"]);
    assert_eq!(code, 75, "{err}");
    let ck = checkpoints(&d).remove(0);
    let mut bytes = std::fs::read(&ck).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x40;
    std::fs::write(&ck, &bytes).unwrap();
    let err = run(&st, &d, &data, &[]);
    assert!(
        err.contains("is unusable") && err.contains("checksum"),
        "{err}"
    );
    assert!(err.contains("from scratch"), "{err}");
    assert!(resumed_at(&err).is_empty());
    let rejected: Vec<_> = std::fs::read_dir(d.join("ck/rejected"))
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert_eq!(rejected.len(), 1);
    assert_same(&d, &reference);

    // Truncated: the same.
    let e = dir.join("truncated");
    let (code, err) = interrupted(&st, &e, &data, &["TERM"]);
    assert_eq!(code, 75, "{err}");
    let ck = checkpoints(&e).remove(0);
    let bytes = std::fs::read(&ck).unwrap();
    std::fs::write(&ck, &bytes[..bytes.len() / 2]).unwrap();
    let err = run(&st, &e, &data, &[]);
    assert!(err.contains("is unusable"), "{err}");
    assert_same(&e, &reference);

    // Two signals: the second exits at once with 130.
    let f = dir.join("twice");
    let (code, _) = interrupted(&st, &f, &data, &["INT", "INT"]);
    assert!(code == 130 || code == 75, "exit {code}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn save_weights_keeps_each_units_weights() {
    let dir = tmp("weights");
    let data = tiny_data(&dir, 6000);
    let st = study(&dir, "save_weights = true\n");
    let store = dir.join("s");
    run(&st, &store, &data, &[]);
    let rows = rows(&store);
    assert_eq!(rows.len(), 4);
    for r in &rows {
        let p = store
            .join("ck/weights")
            .join(format!("{}.safetensors", r.unit_id));
        let buf = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let st = safetensors::SafeTensors::deserialize(&buf).unwrap();
        let names = st.names();
        assert!(names.contains(&"tok_emb"), "{names:?}");
        // One replica: the embedding is [vocab, d_model], no replica axis.
        let emb = st.tensor("tok_emb").unwrap();
        assert_eq!(emb.shape().len(), 2);
        assert_eq!(emb.shape()[1], r.config.d_model);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_checkpoint_settings_are_refused() {
    let dir = tmp("bad");
    let data = tiny_data(&dir, 6000);
    let p = dir.join("bad.toml");
    std::fs::write(
        &p,
        "name = \"bad\"\nkind = \"replicate\"\npreset = \"smoke\"\ncheckpoint_every = -3\n[replicate]\ngenes = [\"dot+sparsemax+output_gate+learned\"]\n",
    )
    .unwrap();
    let out = output_within(&mut cmd(&p, &dir.join("s"), &data, &["--check"]), LIMIT);
    let err = assert_clean_exit(&out, &[1], "bad checkpoint_every");
    assert!(
        err.contains("checkpoint_every") && err.contains("\"auto\""),
        "{err}"
    );
    let out = output_within(
        &mut cmd(
            &study(&dir, ""),
            &dir.join("s"),
            &data,
            &["--checkpoint-every", "sometimes"],
        ),
        LIMIT,
    );
    let err = assert_clean_exit(&out, &[2], "bad --checkpoint-every");
    assert!(err.contains("checkpoint"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
