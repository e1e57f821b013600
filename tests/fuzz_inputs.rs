//! A property test over bad input (issue 16): mutations of every shipped study file
//! (deleted keys, wrong types, 0, negative, NaN, inf, i64::MAX, huge sizes, unknown
//! names, truncations, binary garbage) and of `--set` values must each give a clean error
//! or a valid study that plans and passes its preflight — never a panic, an abort or a
//! hang. Thousands of cases run in-process through the library (parser, settings,
//! preflight, planning with a runner that trains nothing); a deterministic sample goes
//! through the real binary (`run --check`, `train --set`), each with a time limit.

use evoattn::data::Corpus;
use evoattn::gene::Gene;
use evoattn::record::{RunRow, Stage};
use evoattn::study::plan::Planner;
use evoattn::study::{External, Runner, Study};
use evoattn::train::{Preset, TrainConfig};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{assert_clean_exit, output_within, tiny_data};

/// Values put in place of a key's value.
const VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "nan",
    "inf",
    "-inf",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551616",
    "1e300",
    "-1e300",
    "1e-300",
    "0.5",
    "65536",
    "1048576",
    "\"x\"",
    "\"none\"",
    "true",
    "[]",
    "[1, 2, 3]",
    "[nan, 1]",
    "[1e-4, 1e-3, 1e-2]",
    "{}",
    "{ study = \"nosuch\", top = 0 }",
    "[\"dot+softmax+none+hot\"]",
    "\"dot+softmax+none+hot\"",
    "1979-05-27",
];

/// `--set` values (text, as on a command line).
const SET_VALUES: &[&str] = &[
    "0",
    "1",
    "2",
    "-1",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "infinity",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "1e300",
    "1e400",
    "-1e400",
    "1e-300",
    "0.5",
    "65536",
    "1048576",
    "abc",
    "",
    "none",
    "true",
    "[1,2]",
    "1_000",
    "+5",
    "0x10",
    "4096",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn shipped() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("studies");
    let mut v: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().to_string(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    assert!(
        v.len() >= 5,
        "shipped studies not found in {}",
        dir.display()
    );
    v
}

/// Mutations of one study file.
fn mutations(text: &str, rng: &mut Rng) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let join = |ls: &[String]| ls.join("\n") + "\n";
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let Some((key, _)) = t.split_once('=') else {
            continue;
        };
        if t.starts_with('#') || t.starts_with('[') {
            continue;
        }
        let key = key.trim();
        let mut ls: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        ls.remove(i);
        out.push(join(&ls));
        for v in VALUES {
            let mut ls: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            ls[i] = format!("{key} = {v}");
            out.push(join(&ls));
        }
        let mut ls: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        ls[i] = l.replacen(key, &format!("{key}_x"), 1);
        out.push(join(&ls));
        // Nearby values, mostly valid: the mutations must reach planning too.
        let value = t
            .split_once('=')
            .unwrap()
            .1
            .split('#')
            .next()
            .unwrap()
            .trim();
        if let Ok(x) = value.parse::<f64>() {
            let near = if value.contains(['.', 'e']) {
                vec![format!("{:e}", x * 2.0), format!("{:e}", x / 2.0)]
            } else {
                vec![
                    format!("{}", x as i64 + 1),
                    format!("{}", (x as i64 / 2).max(1)),
                    format!("{}", x as i64 * 2),
                ]
            };
            for v in near {
                let mut ls: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
                ls[i] = format!("{key} = {v}");
                out.push(join(&ls));
            }
        }
    }
    // Every setting, overridden with every value.
    for (field, _) in TrainConfig::FIELDS {
        for v in VALUES {
            let line = format!("{field} = {v}");
            out.push(match text.find("[overrides]\n") {
                Some(p) => {
                    let at = p + "[overrides]\n".len();
                    let rest = &text[at..];
                    // Drop an existing line of the same key (a duplicate key is a TOML error
                    // too, but a dull one).
                    let rest: String = rest
                        .lines()
                        .filter(|l| !l.trim_start().starts_with(&format!("{field} ")))
                        .map(|l| format!("{l}\n"))
                        .collect();
                    format!("{}{line}\n{rest}", &text[..at])
                }
                None => format!("{text}\n[overrides]\n{line}\n"),
            });
        }
    }
    for kind in [
        "evolve",
        "random_search",
        "replicate",
        "tune",
        "ablate",
        "nope",
    ] {
        out.push(text.replacen("kind = \"", &format!("kind = \"{kind}\" #"), 1));
    }
    for preset in ["smoke", "seed", "gpu"] {
        out.push(format!("preset = \"{preset}\"\n{text}"));
    }
    // Truncations at random characters, and garbage.
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for _ in 0..24 {
        let (at, _) = chars[rng.below(chars.len())];
        out.push(text[..at].to_string());
    }
    for _ in 0..6 {
        let n = rng.below(400);
        let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        out.push(String::from_utf8_lossy(&bytes).to_string());
        let at = chars[rng.below(chars.len())].0;
        out.push(format!(
            "{}{}{}",
            &text[..at],
            String::from_utf8_lossy(&bytes),
            &text[at..]
        ));
    }
    out
}

/// A runner that trains nothing: every unit "finishes" at once with a made-up score.
struct NoTraining {
    planner: Planner,
    rows: std::collections::HashMap<String, RunRow>,
}

impl Runner for NoTraining {
    fn ensure(&mut self, stage: Stage, requests: &[(Gene, u64)], _: bool) -> anyhow::Result<bool> {
        for &(g, s) in requests {
            let u = self.planner.unit(g, s);
            let cfg = self.planner.config_for(g).clone();
            let row = RunRow {
                study: "f".into(),
                stage,
                unit_id: u.id.clone(),
                pack_id: "p".into(),
                gene: g,
                seed: s,
                preset: "smoke".into(),
                config: cfg,
                params_total: 1,
                params_nonembed: 1,
                diverged_at: None,
                train_loss: 1.0,
                val_ppl: Some(100.0 + (g.index() % 17) as f64 + s as f64 * 1e-3),
                test_ppl: Some(100.0),
                tokens_per_s: 1.0,
                wall_s: 1.0,
                device: "cpu".into(),
                hardware: "test cpu".into(),
                stopped_at: None,
                threads: 1,
                replicas: 1,
                evoattn_version: String::new(),
                engine_version: 0,
                git_commit: String::new(),
                data_fingerprint: "fp".into(),
                started_at: String::new(),
                finished_at: String::new(),
            };
            self.rows.entry(u.id).or_insert(row);
        }
        Ok(true)
    }
    fn finished(&self, gene: Gene, seed: u64) -> Option<&RunRow> {
        self.rows.get(&self.planner.unit(gene, seed).id)
    }
    fn ensure_hurdle(&mut self, requests: &[(Gene, u64)], at: usize) -> anyhow::Result<bool> {
        // The hurdle's score: the final one (ensure's), stored under the hurdle's unit id.
        self.ensure(Stage::Hurdle, requests, true)?;
        for &(g, s) in requests {
            let id = self.planner.unit(g, s).id;
            let mut row = self.rows[&id].clone();
            row.unit_id = evoattn::study::plan::hurdle_unit_id(&id, at);
            row.stopped_at = Some(at as u64);
            self.rows.entry(row.unit_id.clone()).or_insert(row);
        }
        Ok(true)
    }
    fn finished_hurdle(&self, gene: Gene, seed: u64, at: usize) -> Option<&RunRow> {
        self.rows.get(&evoattn::study::plan::hurdle_unit_id(
            &self.planner.unit(gene, seed).id,
            at,
        ))
    }
    fn planner(&self) -> &Planner {
        &self.planner
    }
    fn planner_mut(&mut self) -> &mut Planner {
        &mut self.planner
    }
}

fn small_corpus() -> Corpus {
    let mut text = String::new();
    for i in 0..600 {
        text.push_str(&format!("w{} w{} w{} w{}\n", i % 37, i % 11, i % 5, i % 23));
    }
    Corpus::from_texts(&text, &text, &text, Some(512), Default::default()).unwrap()
}

/// How many cases parsed, passed the preflight, and were planned to the end.
static PARSED: AtomicUsize = AtomicUsize::new(0);
static PASSED: AtomicUsize = AtomicUsize::new(0);
static PLANNED: AtomicUsize = AtomicUsize::new(0);

/// One study text through everything `run` does before training: parse, preflight, plan.
fn exercise(text: &str, corpus: &Corpus) {
    let Ok(study) = Study::parse(text, Path::new("fuzz.toml")) else {
        return;
    };
    PARSED.fetch_add(1, Ordering::Relaxed);
    let external = External::default();
    if evoattn::study::preflight(
        &study,
        &external,
        corpus,
        Path::new("data"),
        2,
        &candle_core::Device::Cpu,
    )
    .is_err()
    {
        return;
    }
    PASSED.fetch_add(1, Ordering::Relaxed);
    let mut runner = NoTraining {
        planner: Planner::new(study.config.clone(), "fp".into(), study.max_replicas),
        rows: Default::default(),
    };
    // A replication of another study's genes needs that study's store: not here.
    if evoattn::study::drive(&study, external, &mut runner).is_ok() {
        PLANNED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `cases` on a thread; fails on a panic and when one case takes over `stall`.
fn watched<T: Send + Sync + std::fmt::Debug + 'static>(
    cases: Vec<T>,
    stall: Duration,
    f: impl Fn(&T) + Send + Sync + 'static,
) {
    let done = Arc::new(AtomicUsize::new(0));
    let n = cases.len();
    let cases = Arc::new(cases);
    let current = Arc::new(Mutex::new(String::new()));
    let (d, c, cs) = (done.clone(), current.clone(), cases.clone());
    let handle = std::thread::spawn(move || {
        let mut panics = Vec::new();
        for (i, case) in cs.iter().enumerate() {
            *c.lock().unwrap() = format!("{case:?}");
            if catch_unwind(AssertUnwindSafe(|| f(case))).is_err() {
                panics.push(format!("{case:?}"));
            }
            d.store(i + 1, Ordering::SeqCst);
        }
        panics
    });
    let (mut last, mut since) = (0, Instant::now());
    while !handle.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        let now = done.load(Ordering::SeqCst);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() > stall {
            panic!(
                "case {now} of {n} ran over {stall:?} (a hang?): {}",
                current.lock().unwrap()
            );
        }
    }
    let panics = handle.join().unwrap();
    assert!(
        panics.is_empty(),
        "{} case(s) panicked, e.g. {}",
        panics.len(),
        panics[0]
    );
}

#[test]
fn mutated_study_files_never_panic_or_hang() {
    // Quiet: caught panics would otherwise print (they fail the test anyway).
    let start = Instant::now();
    let corpus = Arc::new(small_corpus());
    let mut rng = Rng(16);
    let mut cases = Vec::new();
    for (_, text) in shipped() {
        cases.extend(mutations(&text, &mut rng));
    }
    let n = cases.len();
    assert!(n > 3000, "{n} cases");
    let c = corpus.clone();
    watched(cases, Duration::from_secs(10), move |t: &String| {
        exercise(t, &c)
    });
    let (parsed, passed, planned) = (
        PARSED.load(Ordering::Relaxed),
        PASSED.load(Ordering::Relaxed),
        PLANNED.load(Ordering::Relaxed),
    );
    eprintln!(
        "{n} mutated study files in {:.1} s: {parsed} parsed, {passed} passed the preflight, {planned} planned to the end",
        start.elapsed().as_secs_f64()
    );
    // The mutations reach every stage, not only the parser.
    assert!(
        parsed > 1000 && passed > 900 && planned > 800,
        "{parsed} {passed} {planned}"
    );
}

#[test]
fn set_values_never_panic() {
    let start = Instant::now();
    let corpus = Arc::new(small_corpus());
    let mut cases: Vec<(Preset, Vec<String>)> = Vec::new();
    let keys: Vec<&str> = TrainConfig::FIELDS
        .iter()
        .map(|f| f.0)
        .chain(["stepz", "", "lr lr"])
        .collect();
    for p in Preset::ALL {
        for k in &keys {
            for v in SET_VALUES {
                cases.push((p, vec![format!("{k}={v}")]));
            }
            cases.push((p, vec![k.to_string()]));
        }
    }
    let mut rng = Rng(7);
    for _ in 0..3000 {
        let p = Preset::ALL[rng.below(3)];
        let sets = (0..1 + rng.below(3))
            .map(|_| {
                format!(
                    "{}={}",
                    keys[rng.below(keys.len())],
                    SET_VALUES[rng.below(SET_VALUES.len())]
                )
            })
            .collect();
        cases.push((p, sets));
    }
    let n = cases.len();
    let c = corpus.clone();
    watched(cases, Duration::from_secs(10), move |(p, sets)| {
        let mut cfg = p.config();
        for s in sets {
            if cfg.apply(s).is_err() {
                return;
            }
        }
        if cfg.check().is_err() || cfg.check_data(&c).is_err() {
            return;
        }
        let _ = evoattn::train::memory::check_fits(
            &cfg,
            c.vocab.len(),
            4,
            2,
            &candle_core::Device::Cpu,
        );
        let _ = cfg.lr_at(cfg.steps - 1);
        let _ = evoattn::study::plan::unit_id(Gene::BASELINE, &cfg, "fp", 1);
    });
    eprintln!("{n} --set cases in {:.1} s", start.elapsed().as_secs_f64());
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "evoattn-fuzz-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_sample_through_the_binary_exits_cleanly_and_writes_nothing() {
    let bin = env!("CARGO_BIN_EXE_evoattn");
    let dir = tmp("bin");
    let data = tiny_data(&dir, 6000);
    let limit = Duration::from_secs(60);
    let mut rng = Rng(99);
    let mut files: Vec<Vec<u8>> = Vec::new();
    for (_, text) in shipped() {
        let m = mutations(&text, &mut rng);
        for _ in 0..3 {
            files.push(m[rng.below(m.len())].clone().into_bytes());
        }
        files.push(
            text.replace("steps = 300", "steps = 9223372036854775807")
                .into_bytes(),
        );
        files.push(text.into_bytes());
    }
    files.push((0..300).map(|_| rng.next() as u8).collect());
    files.push(vec![0xff, 0xfe, 0x00, b'=']);
    for (i, bytes) in files.iter().enumerate() {
        let study = dir.join(format!("m{i}.toml"));
        std::fs::write(&study, bytes).unwrap();
        let store = dir.join(format!("store{i}"));
        let out = output_within(
            Command::new(bin)
                .args(["run", "--check", "--quiet", "--store"])
                .arg(&store)
                .arg("--data")
                .arg(&data)
                .arg(&study),
            limit,
        );
        let err = assert_clean_exit(&out, &[0, 1], &format!("m{i}"));
        if out.status.code() == Some(1) {
            assert!(err.starts_with("error: "), "m{i}: {err}");
        }
        assert!(!store.exists(), "m{i}: --check wrote a store");
    }
    // --set values the library refuses are refused by `train` with the flag named.
    let mut n = 0;
    for (k, _) in TrainConfig::FIELDS {
        for v in SET_VALUES.iter().step_by(3) {
            let set = format!("{k}={v}");
            let mut cfg = Preset::Smoke.config();
            if cfg.apply(&set).is_ok() && cfg.check().is_ok() {
                continue; // valid: it would train
            }
            let out = output_within(
                Command::new(bin)
                    .args([
                        "train",
                        "--preset",
                        "smoke",
                        "--gene",
                        "dot+softmax+none+fixed",
                        "--quiet",
                    ])
                    .args(["--set", &set, "--data"])
                    .arg(&data),
                limit,
            );
            let err = assert_clean_exit(&out, &[1], &set);
            assert!(err.contains(&format!("--set {set}")), "{set}: {err}");
            n += 1;
        }
    }
    assert!(n > 20, "{n}");
    let _ = std::fs::remove_dir_all(&dir);
}
