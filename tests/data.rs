//! Data tests against the real WikiText-2 (EVOATTN_DATA), and `data fetch` against a local
//! HTTP server on 127.0.0.1.

use evoattn::data::{self, fetch, Corpus};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

mod common;
use common::real_data;

#[test]
fn wikitext2_counts_match_the_published_statistics() {
    let Some(dir) = real_data() else { return };
    let c = Corpus::load(&dir, None).unwrap();
    assert_eq!(c.vocab.len(), 33_278);
    assert_eq!(c.train.len(), 2_088_628);
    assert_eq!(c.valid.len(), 217_646);
    assert_eq!(c.test.len(), 245_569);
    for (i, (name, sha)) in data::KNOWN_SHA256.iter().enumerate() {
        assert_eq!(&c.sha256[i], sha, "{name}.txt checksum");
    }
    // capped vocabulary for the cpu preset
    let capped = Corpus::load(&dir, Some(4096)).unwrap();
    assert_eq!(capped.vocab.len(), 4096);
    assert_eq!(capped.train.len(), 2_088_628);
    assert!(capped.vocab.id("<unk>").is_some() && capped.vocab.id("<eos>").is_some());
    assert_ne!(capped.fingerprint(), c.fingerprint());
}

/// Serves `files` (name → bytes) under `/wt2/` on 127.0.0.1; everything else is 404.
fn serve(files: Vec<(String, Vec<u8>)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let files = files.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let body = files
                    .iter()
                    .find(|(n, _)| format!("/wt2/{n}") == path)
                    .map(|(_, b)| b.clone());
                let _ = match body {
                    Some(b) => {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            b.len()
                        );
                        stream.write_all(&b)
                    }
                    None => write!(
                        stream,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    ),
                };
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn fetch_downloads_verifies_and_falls_back_between_mirrors() {
    let Some(src) = real_data() else { return };
    let files: Vec<(String, Vec<u8>)> = data::SPLITS
        .iter()
        .map(|s| {
            (
                format!("{s}.txt"),
                std::fs::read(src.join(format!("{s}.txt"))).unwrap(),
            )
        })
        .collect();
    let good = serve(files.clone());
    let empty = serve(Vec::new()); // every request 404s
    let dir = tempdir("fetch-ok");
    let mirrors = vec![format!("{empty}/wt2"), format!("{good}/wt2")];
    fetch::fetch(&dir, &mirrors, false).unwrap();
    for s in data::SPLITS {
        assert_eq!(
            std::fs::read(dir.join(format!("{s}.txt"))).unwrap(),
            std::fs::read(src.join(format!("{s}.txt"))).unwrap()
        );
    }
    // no temporary files left
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    // second fetch keeps the verified files (the server is not needed)
    fetch::fetch(&dir, &[format!("{empty}/wt2")], false).unwrap();
}

#[test]
fn fetch_rejects_corrupt_download_and_leaves_nothing_under_the_final_name() {
    let mut bad = b"not wikitext".to_vec();
    bad.extend_from_slice(&[b'x'; 100]);
    let files = vec![
        ("train.txt".to_string(), bad.clone()),
        ("valid.txt".to_string(), bad.clone()),
        ("test.txt".to_string(), bad),
    ];
    let url = serve(files);
    let dir = tempdir("fetch-bad");
    let err = fetch::fetch(&dir, &[format!("{url}/wt2")], false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(err.contains("train.txt"), "{err}");
    assert!(!dir.join("train.txt").exists());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "temporary file left behind"
    );
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("evoattn-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn evoattn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_evoattn"))
}

#[test]
fn cli_missing_data_error_names_the_place_and_the_fix() {
    let out = evoattn()
        .args([
            "train",
            "--preset",
            "smoke",
            "--gene",
            "dot+softmax+none+fixed",
            "--data",
            "/nonexistent/wt2",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/wt2") && err.contains("evoattn data fetch"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn cli_bad_gene_lists_valid_values() {
    let out = evoattn()
        .args([
            "train",
            "--preset",
            "smoke",
            "--gene",
            "dot+softmax+nope+fixed",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown gating `nope`") && err.contains("output_gate"),
        "{err}"
    );
}

#[test]
fn cli_genes_count_and_json() {
    let out = evoattn().args(["genes", "--count"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "720");
    let out = evoattn().args(["genes", "--json"]).output().unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 720);
    assert_eq!(lines[0]["gene"], "dot+softmax+none+fixed");
    assert_eq!(lines[0]["id"], "g000");
}

#[test]
fn cli_data_info_json() {
    let Some(dir) = real_data() else { return };
    let out = evoattn()
        .args(["data", "info", "--json", "--data"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["vocab_size"], 33278);
    assert_eq!(v["tokens"]["train"], 2088628);
    assert_eq!(v["tokens"]["valid"], 217646);
    assert_eq!(v["tokens"]["test"], 245569);
    assert_eq!(v["sha256"]["valid"], data::KNOWN_SHA256[1].1);
}

#[test]
fn cli_train_smoke_seed_two_matches_alone() {
    let Some(dir) = real_data() else { return };
    let run = |seeds: &str| -> Vec<serde_json::Value> {
        let out = evoattn()
            .args([
                "train",
                "--preset",
                "smoke",
                "--gene",
                "dot+sparsemax+output_gate+learned",
                "--json",
                "--quiet",
                "--seeds",
                seeds,
                "--data",
            ])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let both = run("1,2");
    let alone = run("2");
    assert_eq!(both.len(), 2);
    assert_eq!(both[1]["seed"], 2);
    for key in ["val_ppl", "test_ppl", "train_loss"] {
        let a = both[1][key].as_f64().unwrap();
        let b = alone[0][key].as_f64().unwrap();
        assert!(
            a.is_finite() && (a / b - 1.0).abs() < 1e-3,
            "{key}: {a} vs {b}"
        );
    }
    for k in [
        "gene",
        "seed",
        "params_total",
        "params_nonembed",
        "steps",
        "diverged_at",
        "train_loss",
        "val_ppl",
        "test_ppl",
        "tokens_per_s",
        "wall_s",
    ] {
        assert!(both[0].get(k).is_some(), "missing {k}");
    }
    assert!(both[0]["diverged_at"].is_null());
}
