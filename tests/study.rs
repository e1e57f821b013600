//! Studies end to end with the real binary on real WikiText-2 (smoke preset): resume after
//! SIGKILL, two processes on one store, shards, GA determinism across --jobs, bad files.
//! Needs the data (EVOATTN_DATA or the default data directory); under CI its absence fails.

use evoattn::record::RunRow;
use evoattn::study::store::{read_parquet, runs_from_frame};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_evoattn")
}

fn data_available() -> bool {
    common::real_data().is_some()
}

fn tmp(name: &str) -> PathBuf {
    common::temp_dir("study", name)
}

fn write_study(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn run(study: &Path, store: &Path, extra: &[&str]) -> Output {
    let out = Command::new(bin())
        .arg("run")
        .arg(study)
        .arg("--store")
        .arg(store)
        .arg("--quiet")
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn rows(store: &Path, name: &str) -> Vec<RunRow> {
    runs_from_frame(&read_parquet(&store.join(name).join("runs.parquet")).unwrap()).unwrap()
}

fn trained_now(out: &Output) -> usize {
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("unit(s) trained now"))
        .unwrap_or_else(|| panic!("no summary line in: {err}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

/// Everything of a row that training decides (not timings, threads or timestamps).
fn result_key(r: &RunRow) -> (String, String, u64, Option<u64>, u64, u64, u64, u64) {
    (
        r.unit_id.clone(),
        r.gene.to_string(),
        r.seed,
        r.diverged_at,
        r.train_loss.to_bits(),
        r.val_ppl.unwrap_or(f64::NAN).to_bits(),
        r.test_ppl.unwrap_or(f64::NAN).to_bits(),
        r.params_total,
    )
}

const REPLICATE: &str = r#"
name = "rep"
kind = "replicate"
preset = "smoke"
seeds = [1, 2, 3]
max_replicas = 2
[overrides]
steps = 40
[replicate]
genes = ["dot+sparsemax+output_gate+learned", "cosine+softmax+none+learned"]
"#;

#[test]
fn sigkill_then_resume_finishes_every_unit_once_and_retrains_nothing() {
    if !data_available() {
        return;
    }
    let dir = tmp("kill");
    let study = write_study(&dir, "rep", &REPLICATE.replace("steps = 40", "steps = 120"));
    let store = dir.join("runs");
    let mut child = Command::new(bin())
        .arg("run")
        .arg(&study)
        .arg("--store")
        .arg(&store)
        .args(["--quiet", "--jobs", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once at least one pack is finished but before all 6 (3 genes × 2 packs) are.
    let packs = store.join("rep/packs");
    let deadline = Instant::now() + Duration::from_secs(300);
    let finished = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.to_string_lossy().ends_with(".runs.parquet"))
                    .collect()
            })
            .unwrap_or_default()
    };
    while finished(&packs).is_empty() {
        assert!(Instant::now() < deadline, "no pack finished in time");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = finished(&packs);
    assert!(
        before.len() < 6,
        "the run finished before it could be killed"
    );
    let before_rows: Vec<RunRow> = before
        .iter()
        .flat_map(|p| runs_from_frame(&read_parquet(p).unwrap()).unwrap())
        .collect();
    let out = run(&study, &store, &["--jobs", "1"]);
    let all = rows(&store, "rep");
    assert_eq!(all.len(), 9, "3 genes × 3 seeds");
    let mut ids: Vec<&str> = all.iter().map(|r| r.unit_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 9, "a unit appears twice");
    assert_eq!(
        trained_now(&out),
        9 - before_rows.len(),
        "finished units were retrained"
    );
    for b in &before_rows {
        let a = all.iter().find(|r| r.unit_id == b.unit_id).unwrap();
        assert_eq!(a, b, "a finished unit's row changed");
    }
    // A third run trains nothing.
    assert_eq!(trained_now(&run(&study, &store, &[])), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_processes_share_a_study_without_duplicates() {
    if !data_available() {
        return;
    }
    let dir = tmp("two");
    let study = write_study(
        &dir,
        "rep",
        &REPLICATE.replace("max_replicas = 2", "max_replicas = 1"),
    );
    let store = dir.join("runs");
    let spawn = || {
        Command::new(bin())
            .arg("run")
            .arg(&study)
            .arg("--store")
            .arg(&store)
            .args(["--quiet", "--jobs", "1", "--threads", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    let (ta, tb) = (trained_now(&a), trained_now(&b));
    assert_eq!(
        ta + tb,
        9,
        "units trained twice or not at all ({ta} + {tb})"
    );
    assert!(
        ta > 0 && tb > 0,
        "one process did all the work ({ta}, {tb})"
    );
    let all = rows(&store, "rep");
    let mut ids: Vec<&str> = all.iter().map(|r| r.unit_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((all.len(), ids.len()), (9, 9));
    assert!(
        std::fs::read_dir(store.join("rep/claims"))
            .unwrap()
            .next()
            .is_none(),
        "claims left behind"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_shards_give_the_rows_of_one_unsharded_run() {
    if !data_available() {
        return;
    }
    let dir = tmp("shard");
    let study = write_study(&dir, "rep", REPLICATE);
    let (sharded, whole) = (dir.join("a"), dir.join("b"));
    let s0 = run(&study, &sharded, &["--shard", "0/2", "--jobs", "1"]);
    assert!(String::from_utf8_lossy(&s0.stderr).contains("not complete"));
    let s1 = run(&study, &sharded, &["--shard", "1/2", "--jobs", "2"]);
    assert_eq!(trained_now(&s0) + trained_now(&s1), 9);
    run(&study, &whole, &["--jobs", "1"]);
    let (a, b) = (rows(&sharded, "rep"), rows(&whole, "rep"));
    assert_eq!(a.len(), 9);
    let ka: Vec<_> = a.iter().map(result_key).collect();
    let kb: Vec<_> = b.iter().map(result_key).collect();
    assert_eq!(ka, kb);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn evolve_is_deterministic_across_jobs() {
    if !data_available() {
        return;
    }
    let dir = tmp("ga");
    let study = write_study(
        &dir,
        "ga",
        r#"
name = "ga"
kind = "evolve"
preset = "smoke"
seeds = [1]
[overrides]
steps = 20
[evolve]
population = 4
elites = 2
generations = 3
seed = 7
reevaluate_elites = true
include_baseline = true
"#,
    );
    let (a, b) = (dir.join("a"), dir.join("b"));
    run(&study, &a, &["--jobs", "1"]);
    run(&study, &b, &["--jobs", "2"]);
    let ga = read_parquet(&a.join("ga/generations.parquet")).unwrap();
    let gb = read_parquet(&b.join("ga/generations.parquet")).unwrap();
    assert_eq!(ga.height(), 12);
    assert!(ga.equals_missing(&gb), "{ga}\n{gb}");
    // The bytes of the file are identical too (it holds no timestamps).
    assert_eq!(
        std::fs::read(a.join("ga/generations.parquet")).unwrap(),
        std::fs::read(b.join("ga/generations.parquet")).unwrap()
    );
    // The store is the cache: a rerun trains nothing. A finished study has its report.
    assert_eq!(trained_now(&run(&study, &a, &[])), 0);
    let report = std::fs::read_to_string(a.join("ga/report.md")).unwrap();
    assert!(report.starts_with("# Study `ga`") && report.contains("## Leaderboard"));
    assert!(a.join("ga/tests.parquet").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_study_files_get_one_line_errors_and_write_nothing() {
    let dir = tmp("bad");
    let cases = [
        ("unknown", "name = \"x\"\nkind = \"evolve\"\npopulaton = 3\n", ":3:1:", "unknown field"),
        ("type", "name = \"x\"\nkind = \"evolve\"\nseeds = [1, \"two\"]\n", ":3:", "invalid type"),
        (
            "gene",
            "name = \"x\"\nkind = \"replicate\"\n[replicate]\ngenes = [\"dot+softmax+none+hot\"]\n",
            ":4:",
            "hot",
        ),
        ("seeds", "name = \"x\"\nkind = \"replicate\"\nseeds = []\n[replicate]\ngenes = []\n", ":3:", "empty"),
        (
            "from",
            "name = \"x\"\nkind = \"replicate\"\n[replicate]\nfrom = { study = \"nosuch\", top = 2 }\n",
            ":4:",
            "nosuch",
        ),
    ];
    for (name, text, at, needle) in cases {
        let study = write_study(&dir, name, text);
        let store = dir.join(format!("store-{name}"));
        let out = Command::new(bin())
            .args(["run"])
            .arg(&study)
            .arg("--store")
            .arg(&store)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: accepted");
        assert_eq!(err.trim().lines().count(), 1, "{name}: not one line: {err}");
        assert!(err.contains(&format!("{name}.toml{at}")), "{name}: {err}");
        assert!(err.contains(needle), "{name}: {err}");
        assert!(!store.exists(), "{name}: wrote a store");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unwritable_store_is_a_clear_error() {
    let dir = tmp("ro");
    let study = write_study(&dir, "rep", REPLICATE);
    let file = dir.join("afile");
    std::fs::write(&file, b"x").unwrap();
    let out = Command::new(bin())
        .arg("run")
        .arg(&study)
        .arg("--store")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot create the folder") && err.contains("--store"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn status_counts_done_and_pending_units() {
    if !data_available() {
        return;
    }
    let dir = tmp("status");
    let study = write_study(&dir, "rep", REPLICATE);
    let store = dir.join("runs");
    run(&study, &store, &["--shard", "0/2"]);
    let out = Command::new(bin())
        .arg("status")
        .arg(&study)
        .arg("--store")
        .arg(&store)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let st = &v["stages"][0];
    assert_eq!(st["stage"], "replicate");
    let (done, pending) = (
        st["done"].as_u64().unwrap(),
        st["pending"].as_u64().unwrap(),
    );
    assert_eq!(done + pending, 9);
    assert!(done > 0 && pending > 0, "{v}");
    assert_eq!(v["complete"], false);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tune_then_replicate_with_each_genes_tuned_hyperparameters() {
    if !data_available() {
        return;
    }
    let dir = tmp("tune");
    let store = dir.join("store");
    let tune = write_study(
        &dir,
        "t",
        "name = \"t\"\nkind = \"tune\"\npreset = \"smoke\"\nseeds = [1, 2]\n[tune]\ngenes = [\"dot+softmax+none+fixed\", \"dot+sparsemax+output_gate+learned\"]\ntrials = 3\nlr = [1e-4, 1e-2]\nwarmup = [0, 10]\n",
    );
    let out = run(&tune, &store, &[]);
    assert_eq!(trained_now(&out), 12, "2 genes × 3 trials × 2 seeds");
    let t = rows(&store, "t");
    assert!(t.iter().all(|r| r.stage == evoattn::record::Stage::Tune));
    let best = evoattn::search::tune::best_trials(&t);
    assert_eq!(best.len(), 2);
    // Both genes saw the same three trial configurations.
    let trials = evoattn::search::tune::trials(&t);
    let lrs =
        |g: &Vec<evoattn::search::tune::Trial>| g.iter().map(|x| x.config.lr).collect::<Vec<_>>();
    let v: Vec<_> = trials.values().collect();
    assert_eq!(lrs(v[0]), lrs(v[1]));
    assert_eq!(v[0].len(), 3);
    assert!(store.join("t").join("report.tune.svg").exists());

    // A gene that was not tuned is refused before anything is written.
    let bad = write_study(
        &dir,
        "bad",
        "name = \"bad\"\nkind = \"replicate\"\npreset = \"smoke\"\nseeds = [7]\n[replicate]\ngenes = [\"cosine+softmax+none+fixed\"]\nhparams = { from = \"t\" }\n",
    );
    let o = Command::new(bin())
        .args([
            "run",
            bad.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
            "--quiet",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("was not tuned in `t`"),
        "{err}"
    );
    assert!(!store.join("bad").exists());
    // The same holds for genes ranked by the study's own search, found only after it ran.
    let own = write_study(
        &dir,
        "own",
        "name = \"own\"\nkind = \"evolve\"\npreset = \"smoke\"\n[evolve]\npopulation = 2\nelites = 1\ngenerations = 1\n[replicate]\nfrom = { study = \"own\", top = 1 }\nhparams = { from = \"t\" }\n",
    );
    let o = Command::new(bin())
        .args([
            "run",
            own.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
            "--quiet",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("was not tuned in `t`"),
        "{err}"
    );

    let rep = write_study(
        &dir,
        "r",
        "name = \"r\"\nkind = \"replicate\"\npreset = \"smoke\"\nseeds = [11, 12]\n[overrides]\neval_every = 10\n[replicate]\ngenes = [\"dot+sparsemax+output_gate+learned\"]\nhparams = { from = \"t\" }\n",
    );
    let out = run(&rep, &store, &[]);
    assert_eq!(trained_now(&out), 4);
    let r = rows(&store, "r");
    assert_eq!(r.len(), 4);
    for row in &r {
        let tuned = &best[&row.gene].config;
        assert_eq!(
            (row.config.lr, row.config.warmup, row.config.eval_every),
            (tuned.lr, tuned.warmup, 10),
            "{}",
            row.gene
        );
    }
    let md = std::fs::read_to_string(store.join("r").join("report.md")).unwrap();
    let differ = best[&evoattn::gene::Gene::BASELINE].config != best[&r[0].gene].config
        || best[&evoattn::gene::Gene::BASELINE].config != best[&r[r.len() - 1].gene].config;
    assert_eq!(md.contains("each its own tuned values"), differ, "{md}");
    assert!(
        md.contains(&format!("| {} |", best[&r[0].gene].config.lr)),
        "{md}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ablate_runs_the_full_factorial_seed_paired() {
    if !data_available() {
        return;
    }
    let dir = tmp("ablate");
    let store = dir.join("store");
    let s = write_study(
        &dir,
        "a",
        "name = \"a\"\nkind = \"ablate\"\npreset = \"smoke\"\nseeds = [1, 2]\n[ablate]\nbase = \"dot+softmax+none+learned\"\nnormalization = [\"softmax\", \"sparsemax\"]\ngating = [\"none\", \"output_gate\", \"highway\"]\n",
    );
    let out = run(&s, &store, &[]);
    assert_eq!(trained_now(&out), 12);
    let r = rows(&store, "a");
    let mut cells: Vec<(String, u64)> = r.iter().map(|x| (x.gene.to_string(), x.seed)).collect();
    cells.sort();
    cells.dedup();
    assert_eq!(cells.len(), 12, "6 cells × 2 seeds, each once");
    assert!(r
        .iter()
        .all(|x| x.gene.similarity.as_str() == "dot" && x.gene.temperature.as_str() == "learned"));
    let md = std::fs::read_to_string(store.join("a").join("report.md")).unwrap();
    assert!(md.contains("| normalization × gating |"), "{md}");
    assert_eq!(
        trained_now(&run(&s, &store, &[])),
        0,
        "a rerun trains nothing"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
