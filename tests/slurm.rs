//! `evoattn slurm` (issue 12): the scripts and their signal handling without Slurm, and,
//! on a real one-node Slurm (`.ci/slurm.sh start`, then `EVOATTN_SLURM_TESTS=1`), a
//! replicate study over a 4-task array, an evolve study over an 8-task array on one slot,
//! and a cancelled submission resubmitted, each against a single-process run of the same
//! study. Tiny synthetic data and the smoke preset: the whole file takes about 25 s on 2 cores.
//! Without `EVOATTN_SLURM_TESTS=1` they are skipped with a notice on stderr.

use evoattn::record::RunRow;
use evoattn::slurm::{Resources, TaskSpec};
use evoattn::study::store::{read_parquet, runs_from_frame};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

mod common;
use common::{assert_clean_exit, output_within, tiny_data};

const LIMIT: Duration = Duration::from_secs(240);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_evoattn")
}

fn tmp(name: &str) -> PathBuf {
    common::temp_dir("slurm", name)
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const GENE_A: &str = "dot+sparsemax+output_gate+learned";
const GENE_B: &str = "cosine+softmax+none+learned";

/// 3 genes (A, B and the baseline) × 4 seeds, one seed a run: 12 runs.
fn replicate_study(name: &str, steps: usize) -> String {
    format!(
        "name = \"{name}\"\nkind = \"replicate\"\npreset = \"smoke\"\nseeds = [1, 2, 3, 4]\nmax_replicas = 1\n[overrides]\nsteps = {steps}\neval_every = 0\nseq_len = 16\neval_max_tokens = 400\n[replicate]\ngenes = [\"{GENE_A}\", \"{GENE_B}\"]\n"
    )
}

const EVOLVE_STUDY: &str = r#"
name = "ga"
kind = "evolve"
preset = "smoke"
seeds = [1]
[overrides]
steps = 8
eval_every = 0
seq_len = 16
eval_max_tokens = 400
[evolve]
population = 4
elites = 2
generations = 3
seed = 7
include_baseline = true
"#;

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

fn rows(store: &Path, name: &str) -> Vec<RunRow> {
    runs_from_frame(&read_parquet(&store.join(name).join("runs.parquet")).unwrap()).unwrap()
}

fn sorted_keys(store: &Path, name: &str) -> Vec<(String, u64, Option<u64>, u64, u64, u64)> {
    let mut v: Vec<_> = rows(store, name).iter().map(result_key).collect();
    v.sort();
    v
}

/// `evoattn run` in one process (the reference).
fn run_here(study: &Path, store: &Path, data: &Path) {
    let out = output_within(
        Command::new(bin())
            .args([
                "run",
                s(study),
                "--store",
                s(store),
                "--data",
                s(data),
                "--quiet",
            ])
            .args(["--threads", "2"]),
        LIMIT,
    );
    assert_clean_exit(&out, &[0], "reference run");
}

// ---------------------------------------------------------------- without Slurm

fn tiny_study(dir: &Path) -> (PathBuf, PathBuf) {
    let data = tiny_data(dir, 3000);
    let study = write(&dir.join("rep.toml"), &replicate_study("rep", 8));
    (study, data)
}

#[test]
fn dry_run_prints_scripts_with_requeue_signal_and_the_command_and_writes_nothing() {
    let dir = tmp("dry");
    let (study, data) = tiny_study(&dir);
    let store = dir.join("store");
    let out = output_within(
        Command::new(bin())
            .args([
                "slurm",
                "submit",
                s(&study),
                "--store",
                s(&store),
                "--data",
                s(&data),
            ])
            .args([
                "--array",
                "3",
                "--cpus-per-task",
                "2",
                "--time",
                "30",
                "--dry-run",
            ])
            .args([
                "--partition",
                "gpu-a",
                "--extra",
                "--constraint=x --exclusive",
            ])
            .env("PATH", ""),
        LIMIT,
    );
    assert_clean_exit(&out, &[0], "dry run");
    let text = String::from_utf8(out.stdout).unwrap();
    let (study_abs, store_abs, data_abs) = (
        std::fs::canonicalize(&study).unwrap(),
        std::path::absolute(&store).unwrap(),
        std::fs::canonicalize(&data).unwrap(),
    );
    let task = format!(
        "{} --threads 2 run {} --store {} --data {} --device cpu --quiet --no-report",
        bin(),
        study_abs.display(),
        store_abs.display(),
        data_abs.display()
    );
    for want in [
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@120",
        "#SBATCH --array=0-2",
        "#SBATCH --open-mode=append",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --time=30",
        "#SBATCH --partition=gpu-a",
        "#SBATCH --constraint=x",
        "#SBATCH --exclusive",
        &format!(
            "#SBATCH --output={}/rep/slurm/task-%A_%a.log",
            store_abs.display()
        ),
        &format!(
            "#SBATCH --output={}/rep/slurm/final-%j.log",
            store_abs.display()
        ),
        &format!("cmd=({task})"),
        "scontrol requeue",
    ] {
        assert!(text.contains(want), "no `{want}` in:\n{text}");
    }
    // The final job runs the same command without --no-report.
    let final_cmd = task.trim_end_matches(" --no-report");
    assert!(text.contains(&format!("cmd=({final_cmd})\n")), "{text}");
    assert!(!store.exists(), "--dry-run created the store");
    // Both scripts are valid bash.
    let json = output_within(
        Command::new(bin())
            .args([
                "slurm",
                "submit",
                s(&study),
                "--store",
                s(&store),
                "--data",
                s(&data),
            ])
            .args(["--dry-run", "--json", "--gpus-per-task", "0"]),
        LIMIT,
    );
    assert_clean_exit(&json, &[0], "dry run --json");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["tasks"], 4);
    for key in ["array_script", "final_script"] {
        let p = write(&dir.join(format!("{key}.sh")), v[key].as_str().unwrap());
        let out = Command::new("bash").arg("-n").arg(&p).output().unwrap();
        assert!(
            out.status.success(),
            "{key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(v["commands"]["task"]
        .as_str()
        .unwrap()
        .ends_with("--no-report"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn submit_without_sbatch_and_bad_flags_are_one_line_errors() {
    let dir = tmp("nosbatch");
    let (study, data) = tiny_study(&dir);
    let store = dir.join("store");
    let base = [
        "slurm",
        "submit",
        s(&study),
        "--store",
        s(&store),
        "--data",
        s(&data),
    ];
    let cases: &[(&[&str], &str)] = &[
        (&[], "sbatch not found on PATH"),
        (
            &["--dry-run", "--gpus-per-task", "2"],
            "one GPU per process",
        ),
        (
            &["--dry-run", "--time", "1h"],
            "--time `1h` is not a Slurm time",
        ),
        (&["--dry-run", "--array", "0"], "--array 0"),
        (
            &["--dry-run", "--extra", "--array=0-3"],
            "set --array themselves",
        ),
        (&["--dry-run", "--partition", "a b"], "--partition `a b`"),
    ];
    for (extra, want) in cases {
        let out = output_within(
            Command::new(bin()).args(base).args(*extra).env("PATH", ""),
            LIMIT,
        );
        let err = assert_clean_exit(&out, &[1], want);
        assert_eq!(err.trim().lines().count(), 1, "{extra:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(want),
            "{extra:?}: {err}"
        );
    }
    let out = output_within(Command::new(bin()).args(base).env("PATH", ""), LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--dry-run"), "{err}");
    assert!(!store.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The script's signal handling, run by plain bash with a stand-in for evoattn that counts
/// the SIGTERMs it gets and a stand-in for scontrol that records its arguments.
#[test]
fn the_script_passes_one_sigterm_on_and_requeues_only_before_the_time_limit() {
    use std::os::unix::process::CommandExt;
    let dir = tmp("signals");
    let fakebin = dir.join("bin");
    std::fs::create_dir_all(&fakebin).unwrap();
    // With FAKE_DIE set it has no handler and dies of SIGTERM at once.
    let fake = write(
        &dir.join("fake-evoattn"),
        &format!(
            "#!/bin/bash\nif [ -n \"$FAKE_DIE\" ]; then echo \"$@\" > {d}/args; exec sleep 30; fi\nn=0\ntrap 'n=$((n+1)); echo $n > {d}/terms' TERM\necho \"$@\" > {d}/args\nfor i in $(seq 1 60); do\n  sleep 0.05\n  if [ $n -ge 1 ]; then sleep 0.5; exit 75; fi\ndone\nexit 0\n",
            d = dir.display()
        ),
    );
    write(
        &fakebin.join("scontrol"),
        &format!("#!/bin/bash\necho \"$@\" >> {}/scontrol\n", dir.display()),
    );
    for f in [fake.clone(), fakebin.join("scontrol")] {
        Command::new("chmod").arg("+x").arg(&f).status().unwrap();
    }
    let spec = TaskSpec {
        name: "t".into(),
        kind: "replicate".into(),
        exe: fake,
        study: dir.join("t.toml"),
        store: dir.join("store"),
        data: dir.join("data"),
        dir: dir.clone(),
        tasks: 2,
        resources: Resources::default(),
    };
    let script = write(&dir.join("array.sbatch"), &spec.array_script());
    let start_with = |group: bool, die: bool| {
        for f in ["terms", "args", "scontrol"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        let mut c = Command::new("bash");
        c.arg(&script)
            .env("FAKE_DIE", if die { "1" } else { "" })
            .env(
                "PATH",
                format!("{}:{}", fakebin.display(), std::env::var("PATH").unwrap()),
            )
            .env("SLURM_JOB_ID", "80")
            .env("SLURM_ARRAY_JOB_ID", "77")
            .env("SLURM_ARRAY_TASK_ID", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if group {
            c.process_group(0);
        }
        let child = c.spawn().unwrap();
        let t = Instant::now();
        while !dir.join("args").exists() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the stand-in never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    };
    let start = |group: bool| start_with(group, false);
    let signal = |sig: &str, target: String| {
        let st = Command::new("kill")
            .args([sig, "--", &target])
            .status()
            .unwrap();
        assert!(st.success());
    };
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let once = "evoattn must get exactly one SIGTERM";
    // The time-limit warning: USR1 to the batch shell only (--signal=B:USR1@…).
    let mut child = start(false);
    signal("-USR1", child.id().to_string());
    let st = child.wait().unwrap();
    assert_eq!(read("terms").trim(), "1", "{once}");
    assert_eq!(read("scontrol").trim(), "requeue 77_3");
    assert_eq!(st.code(), Some(0), "a requeued task ends with 0");
    let args = read("args");
    assert!(args.trim().ends_with("--quiet --no-report"), "{args}");
    // USR1 to every process of the job: evoattn ignores it and gets one SIGTERM, from the
    // shell.
    let mut child = start(true);
    signal("-USR1", format!("-{}", child.id()));
    let st = child.wait().unwrap();
    assert_eq!(read("terms").trim(), "1", "{once}");
    assert_eq!(read("scontrol").trim(), "requeue 77_3");
    assert_eq!(st.code(), Some(0));
    // evoattn dying of the SIGTERM at once: the shell's wait, cut short by the trap (138),
    // is not taken for evoattn's status (143), and the task requeues. A race: tried a few
    // times.
    for _ in 0..8 {
        let mut child = start_with(false, true);
        signal("-USR1", child.id().to_string());
        let st = child.wait().unwrap();
        assert_eq!(
            read("scontrol").trim(),
            "requeue 77_3",
            "no requeue after death by SIGTERM"
        );
        assert_eq!(st.code(), Some(0));
    }
    // scancel: SIGTERM to every process of the job; no requeue, evoattn's code comes out.
    let mut child = start(true);
    signal("-TERM", format!("-{}", child.id()));
    let st = child.wait().unwrap();
    assert_eq!(read("terms").trim(), "1", "{once}");
    assert_eq!(read("scontrol"), "", "a cancelled task must not requeue");
    assert_eq!(st.code(), Some(75));
    // Not stopped: the task ends with evoattn's code and does not requeue.
    let mut child = start(false);
    let st = child.wait().unwrap();
    assert_eq!((st.code(), read("scontrol").as_str()), (Some(0), ""));
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- on a real Slurm

static SLURM: Mutex<()> = Mutex::new(());

/// Whether the Slurm tests run; prints a notice (past the test harness's capture) when not.
fn slurm_enabled(test: &str) -> bool {
    if std::env::var("EVOATTN_SLURM_TESTS").is_ok_and(|v| v == "1") {
        return true;
    }
    let _ = writeln!(
        std::io::stderr(),
        "skipping {test}: set EVOATTN_SLURM_TESTS=1 with a Slurm cluster up (`bash .ci/slurm.sh start; eval \"$(bash .ci/slurm.sh env)\"`) to run the Slurm tests"
    );
    false
}

fn slurm_lock() -> std::sync::MutexGuard<'static, ()> {
    SLURM.lock().unwrap_or_else(|e| e.into_inner())
}

/// The data and the single-process reference store of the replicate study, made once.
fn reference() -> &'static (PathBuf, PathBuf, PathBuf) {
    static R: OnceLock<(PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    R.get_or_init(|| {
        let dir = tmp("ref");
        let data = tiny_data(&dir, 3000);
        let study = write(
            &dir.join("rep.toml"),
            &replicate_study("rep", REPLICATE_STEPS),
        );
        let store = dir.join("ref-store");
        run_here(&study, &store, &data);
        (dir, data, store)
    })
}

const REPLICATE_STEPS: usize = 40;

struct Submitted {
    array: String,
    final_job: String,
}

fn submit(study: &Path, store: &Path, data: &Path, extra: &[&str]) -> Submitted {
    let out = output_within(
        Command::new(bin())
            .args([
                "slurm",
                "submit",
                s(study),
                "--store",
                s(store),
                "--data",
                s(data),
                "--json",
            ])
            .args(extra),
        LIMIT,
    );
    assert_clean_exit(&out, &[0], "slurm submit");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Submitted {
        array: v["jobs"]["array"].as_str().unwrap().to_string(),
        final_job: v["jobs"]["final"].as_str().unwrap().to_string(),
    }
}

/// `squeue -h -j IDS` lines (`id|state`); empty once the jobs have left the queue.
fn squeue(ids: &str) -> Vec<String> {
    let out = Command::new("squeue")
        .args(["-h", "-r", "-j", ids, "-o", "%i|%T"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

fn logs(store: &Path, name: &str) -> String {
    let dir = store.join(name).join("slurm");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v.iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| {
            format!(
                "--- {}\n{}",
                p.display(),
                std::fs::read_to_string(p).unwrap_or_default()
            )
        })
        .collect()
}

/// Polls until `sub`'s jobs have left the queue; returns the most array tasks seen running
/// at once.
fn wait_done(sub: &Submitted, store: &Path, name: &str) -> usize {
    let ids = format!("{},{}", sub.array, sub.final_job);
    let t = Instant::now();
    let mut most = 0;
    loop {
        let q = squeue(&ids);
        if q.is_empty() {
            return most;
        }
        let running = q
            .iter()
            .filter(|l| l.starts_with(&format!("{}_", sub.array)) && l.ends_with("|RUNNING"))
            .count();
        most = most.max(running);
        if t.elapsed() > LIMIT {
            let _ = Command::new("scancel")
                .args([&sub.array, &sub.final_job])
                .status();
            panic!(
                "jobs {ids} still queued after {LIMIT:?}: {q:?}\n{}",
                logs(store, name)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `evoattn slurm status --json`: the jobs line and the store line.
fn slurm_status(study: &Path, store: &Path, data: &Path) -> (serde_json::Value, serde_json::Value) {
    let out = output_within(
        Command::new(bin()).args([
            "slurm",
            "status",
            s(study),
            "--store",
            s(store),
            "--data",
            s(data),
            "--json",
        ]),
        LIMIT,
    );
    assert_clean_exit(&out, &[0], "slurm status");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines().map(|l| serde_json::from_str(l).unwrap());
    (lines.next().unwrap(), lines.next().expect("no store line"))
}

/// Every job of the last submission completed with exit 0, as status reports it.
fn assert_all_completed(study: &Path, store: &Path, data: &Path, name: &str, tasks: usize) {
    let (jobs, units) = slurm_status(study, store, data);
    let sub = jobs["submissions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let states: Vec<(String, String, String)> = sub["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["id"].as_str().unwrap().to_string(),
                j["state"].as_str().unwrap().to_string(),
                j["exit_code"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(states.len(), tasks + 1, "{states:?}");
    for (id, state, code) in &states {
        assert!(
            state == "COMPLETED" && code == "0:0",
            "job {id}: {state} {code}: {states:?}\n{}",
            logs(store, name)
        );
    }
    assert_eq!(units["complete"], true, "{units}");
}

/// The report is written by the final job, and by no task.
fn assert_report_once(store: &Path, name: &str) {
    assert!(
        store.join(name).join("report.md").is_file(),
        "{}",
        logs(store, name)
    );
    let all = logs(store, name);
    for part in all.split("--- ").filter(|p| p.contains("/task-")) {
        assert!(
            !part.contains("\nreport: "),
            "a task wrote the report: {part}"
        );
    }
    let finals: Vec<&str> = all
        .split("--- ")
        .filter(|p| p.contains("/final-"))
        .collect();
    assert!(
        finals.iter().any(|p| p.contains("\nreport: ")),
        "the final job did not write the report: {all}"
    );
}

#[test]
fn slurm_a_replicate_study_over_a_4_task_array_equals_one_process() {
    if !slurm_enabled("slurm_a_replicate_study_over_a_4_task_array_equals_one_process") {
        return;
    }
    let _g = slurm_lock();
    let (_, data, reference) = reference();
    let dir = tmp("rep");
    let study = write(
        &dir.join("rep.toml"),
        &replicate_study("rep", REPLICATE_STEPS),
    );
    let store = dir.join("store");
    let t = Instant::now();
    let sub = submit(&study, &store, data, &["--array", "4"]);
    let most = wait_done(&sub, &store, "rep");
    eprintln!(
        "4-task array: {:.1} s, at most {most} task(s) at once",
        t.elapsed().as_secs_f64()
    );
    assert_all_completed(&study, &store, data, "rep", 4);
    let (got, want) = (sorted_keys(&store, "rep"), sorted_keys(reference, "rep"));
    assert_eq!(want.len(), 12);
    assert_eq!(got, want, "{}", logs(&store, "rep"));
    assert_report_once(&store, "rep");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn slurm_an_evolve_study_over_8_tasks_on_one_slot_finishes_and_equals_one_process() {
    if !slurm_enabled(
        "slurm_an_evolve_study_over_8_tasks_on_one_slot_finishes_and_equals_one_process",
    ) {
        return;
    }
    let _g = slurm_lock();
    let dir = tmp("ga");
    let data = tiny_data(&dir, 3000);
    let study = write(&dir.join("ga.toml"), EVOLVE_STUDY);
    let (store, reference) = (dir.join("store"), dir.join("ref"));
    run_here(&study, &reference, &data);
    // One slot: each task asks for every CPU of the (single) node, so the cluster runs one
    // task at a time, whatever the array's size (checked below from squeue).
    let cpus = String::from_utf8(
        Command::new("sinfo")
            .args(["-h", "-o", "%c"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .trim_end_matches('+')
    .to_string();
    let t = Instant::now();
    let sub = submit(
        &study,
        &store,
        &data,
        &["--array", "8", "--cpus-per-task", &cpus],
    );
    let most = wait_done(&sub, &store, "ga");
    eprintln!(
        "8-task evolve array on one slot: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        most, 1,
        "the cluster ran {most} tasks at once: not one slot"
    );
    assert_all_completed(&study, &store, &data, "ga", 8);
    let (ga, gr) = (
        read_parquet(&store.join("ga/generations.parquet")).unwrap(),
        read_parquet(&reference.join("ga/generations.parquet")).unwrap(),
    );
    assert_eq!(ga.height(), 12);
    assert!(ga.equals_missing(&gr), "{ga}\n{gr}");
    assert_eq!(sorted_keys(&store, "ga"), sorted_keys(&reference, "ga"));
    assert_report_once(&store, "ga");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn slurm_a_cancelled_submission_resubmitted_loses_and_duplicates_nothing() {
    if !slurm_enabled("slurm_a_cancelled_submission_resubmitted_loses_and_duplicates_nothing") {
        return;
    }
    let _g = slurm_lock();
    let (_, data, reference) = reference();
    let dir = tmp("cancel");
    let study = write(
        &dir.join("rep.toml"),
        &replicate_study("rep", REPLICATE_STEPS),
    );
    let store = dir.join("store");
    let packs = store.join("rep").join("packs");
    let finished = || {
        std::fs::read_dir(&packs)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".runs.parquet"))
                    .count()
            })
            .unwrap_or(0)
    };
    let sub = submit(&study, &store, data, &["--array", "2"]);
    // Cancel every job of the submission while tasks are running with runs in flight.
    let t = Instant::now();
    while finished() < 2 {
        assert!(
            t.elapsed() < LIMIT,
            "no run finished: {}",
            logs(&store, "rep")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let running = squeue(&sub.array)
        .iter()
        .filter(|l| l.ends_with("|RUNNING"))
        .count();
    assert!(
        running >= 1,
        "no task running at the cancel: {}",
        logs(&store, "rep")
    );
    let st = Command::new("scancel")
        .args([&sub.array, &sub.final_job])
        .status()
        .unwrap();
    assert!(st.success());
    wait_done(&sub, &store, "rep");
    let left = finished();
    eprintln!("cancelled with {left} of 12 runs finished, {running} task(s) running");
    assert!(
        left < 12,
        "the study finished before the cancel ({left} runs): make it longer"
    );
    assert!(!store.join("rep/report.md").exists());
    // Resubmitted: the rest is trained, nothing twice.
    let sub = submit(&study, &store, data, &["--array", "2"]);
    wait_done(&sub, &store, "rep");
    assert_all_completed(&study, &store, data, "rep", 2);
    let got = sorted_keys(&store, "rep");
    let ids: std::collections::HashSet<&String> = got.iter().map(|k| &k.0).collect();
    assert_eq!(ids.len(), got.len(), "a unit appears twice");
    assert_eq!(
        got,
        sorted_keys(reference, "rep"),
        "{}",
        logs(&store, "rep")
    );
    assert_eq!(finished(), 12, "one runs file per planned run");
    assert_report_once(&store, "rep");
    let _ = std::fs::remove_dir_all(&dir);
}
