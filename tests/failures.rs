//! No failure is silent (issue 16), with the real binary on small synthetic data: a failed
//! pack fails the run (exit 3) and is retried; an incomplete or unreadable pack is put
//! aside and retrained to the reference values; bad settings are refused with the file,
//! line and key (or the flag) before anything is written, without a panic or an abort;
//! a live claim's holder is named while waiting, a zombie's claim is taken over at once,
//! stale temporary files are removed; I/O errors name the path and the fix.

use evoattn::record::RunRow;
use evoattn::study::store::{read_parquet, runs_frame, runs_from_frame, write_parquet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

mod common;
use common::{assert_clean_exit, output_within, tiny_data};

const LIMIT: Duration = Duration::from_secs(240);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_evoattn")
}

fn tmp(name: &str) -> PathBuf {
    common::temp_dir("fail", name)
}

fn write_study(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn evoattn(args: &[&str], data: &Path) -> Command {
    let mut c = Command::new(bin());
    c.args(args)
        .arg("--data")
        .arg(data)
        .env_remove("EVOATTN_FAIL_PACKS");
    c
}

fn run_study(study: &Path, store: &Path, data: &Path, env: Option<&str>) -> Output {
    let mut c = evoattn(
        &[
            "run",
            study.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
            "--quiet",
            "--jobs",
            "2",
            "--threads",
            "2",
        ],
        data,
    );
    if let Some(v) = env {
        c.env("EVOATTN_FAIL_PACKS", v);
    }
    output_within(&mut c, LIMIT)
}

fn rows(store: &Path, name: &str) -> Vec<RunRow> {
    runs_from_frame(&read_parquet(&store.join(name).join("runs.parquet")).unwrap()).unwrap()
}

fn trained_now(err: &str) -> usize {
    let line = err
        .lines()
        .find(|l| l.contains("unit(s) trained now"))
        .unwrap_or_else(|| panic!("no summary line in: {err}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Everything of a row that training decides.
fn result_key(r: &RunRow) -> (String, u64, Option<u64>, u64, u64, u64) {
    (
        r.unit_id.clone(),
        r.seed,
        r.diverged_at,
        r.train_loss.to_bits(),
        r.val_ppl.unwrap_or(f64::NAN).to_bits(),
        r.test_ppl.unwrap_or(f64::NAN).to_bits(),
    )
}

const GENE_A: &str = "dot+sparsemax+output_gate+learned";
const GENE_B: &str = "cosine+softmax+none+learned";

/// Three packs of two units: the baseline, A and B, seeds 1 and 2.
fn three_packs(name: &str) -> String {
    format!(
        "name = \"{name}\"\nkind = \"replicate\"\npreset = \"smoke\"\nseeds = [1, 2]\nmax_replicas = 2\n[overrides]\nsteps = 8\neval_every = 0\nseq_len = 16\neval_max_tokens = 400\n[replicate]\ngenes = [\"{GENE_A}\", \"{GENE_B}\"]\n"
    )
}

fn status_json(study: &Path, store: &Path, data: &Path) -> serde_json::Value {
    let out = output_within(
        &mut evoattn(
            &[
                "status",
                study.to_str().unwrap(),
                "--store",
                store.to_str().unwrap(),
                "--json",
            ],
            data,
        ),
        LIMIT,
    );
    assert_clean_exit(&out, &[0], "status");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_failed_pack_fails_the_run_leaves_a_record_and_is_retried() {
    let dir = tmp("failed");
    let data = tiny_data(&dir, 3000);
    let study = write_study(&dir, "f", &three_packs("f"));
    let store = dir.join("store");
    let out = run_study(
        &study,
        &store,
        &data,
        Some(&format!("panic:{GENE_A},error:{GENE_B}")),
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("failed (panic)") && err.contains("failed (error)"),
        "{err}"
    );
    assert!(err.contains("injected failure"), "{err}");
    assert!(err.contains("no report was written"), "{err}");
    // The baseline's pack finished; both failures are recorded with their message.
    assert_eq!(trained_now(&err), 2, "{err}");
    let sdir = store.join("f");
    let failed = files(&sdir.join("failed"), ".json");
    assert_eq!(failed.len(), 2, "{failed:?}");
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&failed[0]).unwrap()).unwrap();
    assert!(
        rec["message"]
            .as_str()
            .unwrap()
            .contains("injected failure"),
        "{rec}"
    );
    assert_eq!(rec["seeds"], serde_json::json!([1, 2]));
    assert!(
        files(&sdir.join("claims"), "").is_empty(),
        "claims left behind"
    );
    assert!(
        !sdir.join("report.md").exists(),
        "a report of an incomplete study"
    );
    assert_eq!(rows(&store, "f").len(), 2);
    let st = status_json(&study, &store, &data);
    assert_eq!(st["complete"], false);
    assert_eq!(st["stages"][0]["done"], 2, "{st}");
    assert_eq!(st["stages"][0]["failed"], 4, "{st}");
    // Fixed: the same command retries the failed packs only, and the study completes.
    let out = run_study(&study, &store, &data, None);
    let err = assert_clean_exit(&out, &[0], "retry");
    assert_eq!(trained_now(&err), 4, "{err}");
    assert!(files(&sdir.join("failed"), ".json").is_empty());
    assert!(sdir.join("report.md").exists());
    assert_eq!(rows(&store, "f").len(), 6);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn incomplete_or_unreadable_packs_are_put_aside_and_retrained_to_the_reference() {
    let dir = tmp("incomplete");
    let data = tiny_data(&dir, 3000);
    let study = write_study(&dir, "i", &three_packs("i"));
    let (reference, store) = (dir.join("ref"), dir.join("store"));
    assert_clean_exit(
        &run_study(&study, &reference, &data, None),
        &[0],
        "reference",
    );
    assert_clean_exit(&run_study(&study, &store, &data, None), &[0], "first");
    let want: Vec<_> = rows(&reference, "i").iter().map(result_key).collect();
    assert_eq!(want.len(), 6);
    let packs = store.join("i/packs");
    let runs = files(&packs, ".runs.parquet");
    assert_eq!(runs.len(), 3);
    let read = |p: &Path| runs_from_frame(&read_parquet(p).unwrap()).unwrap();
    // One unit of two; none; a column missing.
    let one = read(&runs[0]);
    write_parquet(&runs[0], &mut runs_frame(&one[..1]).unwrap()).unwrap();
    write_parquet(&runs[1], &mut runs_frame(&[]).unwrap()).unwrap();
    let mut df = read_parquet(&runs[2]).unwrap();
    let _ = df.drop_in_place("val_ppl").unwrap();
    write_parquet(&runs[2], &mut df).unwrap();
    // A stray file that belongs to no pack of the plan is ignored.
    std::fs::write(packs.join("0000000000000000.runs.parquet"), b"\x00garbage").unwrap();
    let st = status_json(&study, &store, &data);
    assert_eq!(
        (st["complete"].clone(), st["stages"][0]["done"].clone()),
        (false.into(), 0.into()),
        "{st}"
    );
    let out = run_study(&study, &store, &data, None);
    let err = assert_clean_exit(&out, &[0], "rerun");
    assert_eq!(err.matches("is not a finished pack").count(), 3, "{err}");
    assert!(err.contains("1 of the pack's 2 units"), "{err}");
    assert!(err.contains("0 of the pack's 2 units"), "{err}");
    assert!(err.contains("`val_ppl`"), "{err}");
    assert_eq!(trained_now(&err), 6, "{err}");
    assert_eq!(files(&store.join("i/rejected"), ".runs.parquet").len(), 3);
    let got: Vec<_> = rows(&store, "i").iter().map(result_key).collect();
    assert_eq!(got, want, "retrained rows differ from the reference");
    let out = run_study(&study, &store, &data, None);
    assert_eq!(trained_now(&assert_clean_exit(&out, &[0], "third")), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_settings_are_refused_with_file_line_and_key_and_nothing_is_written() {
    let dir = tmp("settings");
    let data = tiny_data(&dir, 3000);
    let base = "name = \"s\"\nkind = \"replicate\"\npreset = \"smoke\"\nseeds = [1]\n[replicate]\ngenes = []\n[overrides]\n";
    let tune = "name = \"s\"\nkind = \"tune\"\npreset = \"smoke\"\n[tune]\ngenes = [\"dot+softmax+none+fixed\"]\n";
    let cases: Vec<(String, usize, Vec<&str>)> = vec![
        (format!("{base}steps = 9223372036854775807\n"), 8, vec!["steps", "between 1 and"]),
        (format!("{base}vocab_cap = nan\n"), 8, vec!["vocab_cap", "finite"]),
        (format!("{base}lr = inf\n"), 8, vec!["lr", "finite"]),
        (format!("{base}lr = -1e-3\n"), 8, vec!["lr", "> 0"]),
        (format!("{base}eval_max_tokens = 0\n"), 8, vec!["eval_max_tokens", "window"]),
        (format!("{base}d_model = 0\n"), 8, vec!["d_model", "between 1 and"]),
        (format!("{base}n_heads = 3\n"), 8, vec!["multiple of n_heads"]),
        (format!("{base}steps = 50\nwarmup = 500\n"), 9, vec!["warmup", "at most steps"]),
        (format!("{base}beta2 = 1.0\n"), 8, vec!["beta2", "[0, 1)"]),
        (format!("{base}steps = \"ten\"\n"), 8, vec!["steps", "not a number"]),
        (format!("{tune}lr = [1e-4, 1e-3, 1e-2]\n"), 6, vec!["exactly two"]),
        (format!("{tune}lr = [1e-4, nan]\n"), 6, vec!["lr"]),
        (format!("{tune}lr = [1e-4, 1e-3]\ntrials = 1000000000\n"), 7, vec!["trials", "between 1 and"]),
        (
            "name = \"s\"\nkind = \"evolve\"\npreset = \"smoke\"\n[evolve]\ngenerations = 9223372036854775807\n".into(),
            5,
            vec!["generations", "between 1 and"],
        ),
        // Against the data: found after parsing, still before anything is written.
        (
            format!("{base}seq_len = 5000\neval_max_tokens = \"none\"\n"),
            8,
            vec!["seq_len", "train.txt holds", "tiny-data"],
        ),
        // Absurd sizes: refused with the memory they need instead of an abort.
        (format!("{base}d_model = 65536\nn_layers = 4096\n"), 0, vec!["needs at least", "GiB", "memory"]),
        (format!("{base}batch_size = 1048576\nseq_len = 1024\n"), 0, vec!["needs at least", "GiB"]),
    ];
    for (i, (text, line, needles)) in cases.iter().enumerate() {
        let name = format!("case{i}");
        let study = write_study(&dir, &name, text);
        let store = dir.join(format!("store{i}"));
        let out = output_within(
            &mut evoattn(
                &[
                    "run",
                    study.to_str().unwrap(),
                    "--store",
                    store.to_str().unwrap(),
                ],
                &data,
            ),
            LIMIT,
        );
        let err = assert_clean_exit(&out, &[1], &name);
        assert_eq!(err.trim().lines().count(), 1, "{name}: not one line: {err}");
        let at = if *line > 0 {
            format!("{name}.toml:{line}:")
        } else {
            format!("{name}.toml")
        };
        assert!(err.contains(&at), "{name}: no {at}: {err}");
        for n in needles {
            assert!(err.contains(n), "{name}: no `{n}`: {err}");
        }
        assert!(!store.exists(), "{name}: wrote a store");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn train_bench_and_stats_refuse_bad_input_without_panicking() {
    let dir = tmp("cli");
    let data = tiny_data(&dir, 3000);
    let five = dir.join("five");
    std::fs::create_dir_all(&five).unwrap();
    std::fs::write(five.join("train.txt"), "a b c d\n").unwrap();
    std::fs::write(five.join("valid.txt"), "a b c d\n").unwrap();
    std::fs::write(five.join("test.txt"), "a b c d\n").unwrap();
    let train = |sets: &[&str], d: &Path| {
        let mut args = vec![
            "train",
            "--preset",
            "smoke",
            "--gene",
            "dot+softmax+none+fixed",
            "--quiet",
        ];
        for s in sets {
            args.extend(["--set", s]);
        }
        output_within(&mut evoattn(&args, d), LIMIT)
    };
    let cases: Vec<(Output, Vec<&str>)> = vec![
        (
            train(&["seq_len=5000", "eval_max_tokens=none"], &data),
            vec!["--set seq_len=5000", "train.txt holds", "tiny-data"],
        ),
        (
            train(&[], &five),
            vec!["preset smoke", "seq_len", "holds 5"],
        ),
        (
            train(&["steps=9223372036854775807"], &data),
            vec!["--set steps=", "between 1 and"],
        ),
        (
            train(&["steps=-3"], &data),
            vec!["--set steps=-3", "negative"],
        ),
        (train(&["lr=nan"], &data), vec!["--set lr=nan", "finite"]),
        (
            train(&["vocab_cap=inf"], &data),
            vec!["--set vocab_cap=inf", "finite"],
        ),
        (
            train(&["warmup=100", "steps=10"], &data),
            vec!["--set warmup=100", "at most steps"],
        ),
        (
            train(&["d_model=65536", "n_layers=4096"], &data),
            vec!["needs at least", "GiB"],
        ),
        (
            train(&["batch_size=1048576", "seq_len=1024"], &data),
            vec!["needs at least", "GiB"],
        ),
        (
            output_within(
                &mut evoattn(
                    &[
                        "bench",
                        "--preset",
                        "smoke",
                        "--set",
                        "seq_len=5000",
                        "--set",
                        "eval_max_tokens=none",
                    ],
                    &data,
                ),
                LIMIT,
            ),
            vec!["--set seq_len=5000", "train.txt holds"],
        ),
        (
            output_within(
                &mut evoattn(
                    &[
                        "bench", "--preset", "smoke", "--set", "lr=1e30", "--steps", "3",
                    ],
                    &data,
                ),
                LIMIT,
            ),
            vec!["diverged"],
        ),
        (
            output_within(
                Command::new(bin()).args(["stats", "describe", "--x", "1,nan,3"]),
                LIMIT,
            ),
            vec!["non-finite"],
        ),
        (
            output_within(Command::new(bin()).args(["--threads", "0", "genes"]), LIMIT),
            vec!["--threads 0", "between 1 and"],
        ),
    ];
    for (i, (out, needles)) in cases.iter().enumerate() {
        let err = assert_clean_exit(out, &[1], &format!("case {i}"));
        for n in needles {
            assert!(err.contains(n), "case {i}: no `{n}`: {err}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_live_claim_is_named_while_waiting_and_taken_over_when_stale() {
    use evoattn::study::plan::Planner;
    use evoattn::study::store::{host_name, ClaimInfo};
    let dir = tmp("claim");
    let data = tiny_data(&dir, 3000);
    let text = format!(
        "name = \"c\"\nkind = \"replicate\"\npreset = \"smoke\"\nseeds = [1]\n[overrides]\nsteps = 6\nseq_len = 16\neval_max_tokens = 400\n[replicate]\ngenes = [\"{GENE_A}\"]\ninclude_baseline = false\n"
    );
    let study_path = write_study(&dir, "c", &text);
    let study = evoattn::study::Study::load(&study_path).unwrap();
    let corpus = evoattn::data::Corpus::load(&data, study.config.vocab_cap).unwrap();
    let planner = Planner::new(
        study.config.clone(),
        corpus.fingerprint(),
        study.max_replicas,
    );
    let pack = planner
        .pack(&[(GENE_A.parse().unwrap(), 1)], |_| false)
        .remove(0);
    // A claim by this (live) test process whose heartbeat is 112 s old: stale in 8 s.
    let claims = dir.join("store/c/claims");
    std::fs::create_dir_all(&claims).unwrap();
    let claim = claims.join(format!("{}.0", pack.id));
    let info = ClaimInfo {
        host: host_name(),
        pid: std::process::id(),
        since: "2024-01-01T00:00:00Z".into(),
    };
    std::fs::write(&claim, serde_json::to_string(&info).unwrap()).unwrap();
    std::fs::File::options()
        .append(true)
        .open(&claim)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(112))
        .unwrap();
    let out = run_study(&study_path, &dir.join("store"), &data, None);
    let err = assert_clean_exit(&out, &[0], "takeover");
    let pid = format!(
        "is held by pid {} on host {}",
        std::process::id(),
        host_name()
    );
    assert!(err.contains(&pid), "{err}");
    assert!(err.contains("taken over"), "{err}");
    assert!(
        ["in 8 s", "in 7 s", "in 6 s"]
            .iter()
            .any(|t| err.contains(t)),
        "{err}"
    );
    assert_eq!(trained_now(&err), 1, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stale_temporaries_are_removed_and_a_zombie_claim_holder_is_gone() {
    use evoattn::study::plan::Planner;
    use evoattn::study::store::{host_name, ClaimInfo};
    let dir = tmp("zombie");
    let data = tiny_data(&dir, 3000);
    let text = format!(
        "name = \"z\"\nkind = \"replicate\"\npreset = \"smoke\"\nseeds = [1]\n[overrides]\nsteps = 6\nseq_len = 16\neval_max_tokens = 400\n[replicate]\ngenes = [\"{GENE_A}\"]\ninclude_baseline = false\n"
    );
    let study_path = write_study(&dir, "z", &text);
    let study = evoattn::study::Study::load(&study_path).unwrap();
    let corpus = evoattn::data::Corpus::load(&data, study.config.vocab_cap).unwrap();
    let planner = Planner::new(
        study.config.clone(),
        corpus.fingerprint(),
        study.max_replicas,
    );
    let pack = planner
        .pack(&[(GENE_A.parse().unwrap(), 1)], |_| false)
        .remove(0);
    let sdir = dir.join("store/z");
    std::fs::create_dir_all(sdir.join("claims")).unwrap();
    std::fs::create_dir_all(sdir.join("packs")).unwrap();
    // Left by interrupted processes long ago.
    let old = std::time::SystemTime::now() - Duration::from_secs(600);
    let stale = [
        sdir.join(".tmp-runs.parquet-4242-17"),
        sdir.join("packs/.tmp-abc.runs.parquet-4242-18"),
        sdir.join(".probe-4242"),
    ];
    for p in &stale {
        std::fs::write(p, b"partial").unwrap();
        std::fs::File::options()
            .append(true)
            .open(p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    // A fresh claim by a process that has exited but is not reaped: a zombie.
    let mut child = Command::new("true").spawn().unwrap();
    let zombie = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !zombie(child.id()) {
        assert!(std::time::Instant::now() < deadline, "no zombie");
        std::thread::sleep(Duration::from_millis(10));
    }
    let info = ClaimInfo {
        host: host_name(),
        pid: child.id(),
        since: "2024-01-01T00:00:00Z".into(),
    };
    std::fs::write(
        sdir.join(format!("claims/{}.0", pack.id)),
        serde_json::to_string(&info).unwrap(),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = run_study(&study_path, &dir.join("store"), &data, None);
    let err = assert_clean_exit(&out, &[0], "zombie");
    child.wait().unwrap();
    assert!(!err.contains("is held by"), "waited for a zombie: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "waited for the claim to go stale"
    );
    assert_eq!(trained_now(&err), 1, "{err}");
    for p in &stale {
        assert!(!p.exists(), "{} kept", p.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn io_errors_name_the_path_and_the_fix() {
    let dir = tmp("io");
    let data = tiny_data(&dir, 3000);
    let study = write_study(&dir, "p", &three_packs("p"));
    // `packs` is a file.
    let store = dir.join("store");
    std::fs::create_dir_all(store.join("p")).unwrap();
    std::fs::write(store.join("p/packs"), b"x").unwrap();
    let out = run_study(&study, &store, &data, None);
    let err = assert_clean_exit(&out, &[1], "packs file");
    assert!(
        err.contains(&store.join("p/packs").display().to_string()),
        "{err}"
    );
    assert!(err.contains("move it away or pass --store"), "{err}");
    // `study.toml` cannot be replaced (a folder is in the way).
    let store = dir.join("store2");
    std::fs::create_dir_all(store.join("p/study.toml/x")).unwrap();
    let out = run_study(&study, &store, &data, None);
    let err = assert_clean_exit(&out, &[1], "study.toml folder");
    assert!(
        err.contains(&store.join("p/study.toml").display().to_string()),
        "{err}"
    );
    assert!(err.contains("move it away or pass --store"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_refuses_the_reference_kernels_switch_and_writes_nothing() {
    let dir = tmp("refkernels");
    let data = tiny_data(&dir, 3000);
    let study = write_study(&dir, "rk", &three_packs("rk"));
    let store = dir.join("store");
    let mut c = evoattn(
        &[
            "run",
            study.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
            "--quiet",
        ],
        &data,
    );
    c.env("EVOATTN_REFERENCE_KERNELS", "1");
    let out = output_within(&mut c, LIMIT);
    let err = assert_clean_exit(&out, &[1, 2], "run with EVOATTN_REFERENCE_KERNELS=1");
    assert!(
        err.contains("EVOATTN_REFERENCE_KERNELS") && err.contains("unset it"),
        "{err}"
    );
    assert!(!store.exists(), "a refused run wrote {}", store.display());
}
