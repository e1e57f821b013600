//! `evoattn bench --sweep` (issue 14, item 1): the cost table covers every similarity ×
//! normalization pair and each gating and temperature on the baseline, each relative to
//! baseline timings of the same run; `bench --compare-replicas` (item 3) times replica
//! counts in paired rounds. Only their shape is tested here; speed is shown by the
//! committed tables (benches/results/), never by a timed test.

use evoattn::gene::{Component, Gene};
use std::process::Command;
use std::time::Duration;

mod common;
use common::{assert_clean_exit, output_within, tiny_data};

#[test]
fn the_sweep_covers_the_space_relative_to_the_baseline() {
    let dir = common::temp_dir("bench", "sweep");
    let data = tiny_data(&dir, 6000);
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_evoattn"))
            .args([
                "bench", "--sweep", "--preset", "smoke", "--steps", "1", "--rounds", "1",
            ])
            .args(["--set", "seq_len=16", "--json", "--threads", "1", "--data"])
            .arg(&data),
        Duration::from_secs(600),
    );
    let err = assert_clean_exit(&out, &[0], "bench --sweep");
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e} ({err})")))
        .collect();
    let n = |c: Component| c.values().len();
    let want = n(Component::Similarity) * n(Component::Normalization)
        + (n(Component::Gating) - 1)
        + (n(Component::Temperature) - 1);
    assert_eq!(rows.len(), want);
    let genes: std::collections::BTreeSet<String> = rows
        .iter()
        .map(|r| r["gene"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(genes.len(), want, "every gene once");
    assert!(genes.contains(&Gene::BASELINE.to_string()));
    for r in &rows {
        let ratio = r["ratio_to_baseline"].as_f64().unwrap();
        let tps = r["tokens_per_s"].as_f64().unwrap();
        assert!(ratio.is_finite() && ratio > 0.0 && tps > 0.0, "{r}");
        let g: Gene = r["gene"].as_str().unwrap().parse().unwrap();
        // Similarity × normalization rows use the cheapest gating and temperature.
        assert!(
            (g.get(Component::Gating) == "none" && g.get(Component::Temperature) == "fixed")
                || (g.get(Component::Similarity) == "dot"
                    && g.get(Component::Normalization) == "softmax"),
            "{g}"
        );
    }
    // Sorted fastest first by ratio.
    let ratios: Vec<f64> = rows
        .iter()
        .map(|r| r["ratio_to_baseline"].as_f64().unwrap())
        .collect();
    assert!(ratios.windows(2).all(|w| w[0] >= w[1]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn replica_counts_compare_in_paired_rounds() {
    let dir = common::temp_dir("bench", "turns");
    let data = tiny_data(&dir, 6000);
    let bench = |extra: &[&str]| {
        output_within(
            Command::new(env!("CARGO_BIN_EXE_evoattn"))
                .args([
                    "bench",
                    "--preset",
                    "smoke",
                    "--steps",
                    "1",
                    "--threads",
                    "2",
                ])
                .args(["--set", "seq_len=16", "--json", "--data"])
                .arg(&data)
                .args(extra),
            Duration::from_secs(600),
        )
    };
    let out = bench(&[
        "--rounds",
        "3",
        "--passes",
        "2",
        "--compare-replicas",
        "1,2",
    ]);
    let err = assert_clean_exit(&out, &[0], "bench --compare-replicas");
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e} ({err})")))
        .collect();
    assert_eq!(rows.len(), 2, "one object per replica count");
    let arr = |r: &serde_json::Value, k: &str| -> Vec<f64> {
        r[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let (first, second) = (&rows[0], &rows[1]);
    assert_eq!(first["replicas"], 1);
    assert_eq!(second["replicas"], 2);
    assert_eq!(second["passes"], 2);
    // Two threads: R = 2 trains as two one-thread groups, R = 1 as one.
    assert_eq!(first["replica_groups"], 1);
    assert_eq!(second["replica_groups"], 2);
    let (a, b) = (
        arr(first, "round_tokens_per_s"),
        arr(second, "round_tokens_per_s"),
    );
    assert_eq!((a.len(), b.len()), (3, 3));
    assert!(a.iter().chain(&b).all(|&x| x.is_finite() && x > 0.0));
    assert!(arr(first, "ratio_to_first").iter().all(|&x| x == 1.0));
    let ratios = arr(second, "ratio_to_first");
    for k in 0..3 {
        assert!(
            (ratios[k] - b[k] / a[k]).abs() < 1e-12 * ratios[k],
            "round {k}"
        );
    }
    let ahead = ratios.iter().filter(|&&x| x > 1.0).count() as u64;
    assert_eq!(second["rounds_ahead_of_first"], ahead);
    let g = second["ratio_geomean"].as_f64().unwrap();
    let geo = (ratios.iter().map(|x| x.ln()).sum::<f64>() / 3.0).exp();
    assert!((g - geo).abs() < 1e-12 * geo);
    let ci = arr(second, "ratio_ci95");
    assert!(ci[0] <= g && g <= ci[1], "{ci:?} around {g}");
    let p = second["sign_test_p"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));
    // A comparison needs two counts, and is not a sweep.
    let one = bench(&["--compare-replicas", "2"]);
    let msg = assert_clean_exit(&one, &[1], "bench --compare-replicas 2");
    assert!(msg.contains("two or more replica counts"), "{msg}");
    // No turns, or turns outside a comparison, are refused.
    let none = bench(&["--compare-replicas", "1,2", "--passes", "0"]);
    let msg = assert_clean_exit(&none, &[1], "bench --passes 0");
    assert!(msg.contains("--passes"), "{msg}");
    let lone = bench(&["--passes", "2"]);
    let msg = assert_clean_exit(&lone, &[2], "bench --passes without --compare-replicas");
    assert!(msg.contains("--compare-replicas"), "{msg}");
    // A grouping that does not divide every count is refused before anything trains.
    let bad = bench(&["--compare-replicas", "1,2", "--replica-groups", "2"]);
    let msg = assert_clean_exit(
        &bad,
        &[1],
        "bench --compare-replicas 1,2 --replica-groups 2",
    );
    assert!(msg.contains("does not divide 1"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `bench --json` (item 4): the FMA peak is measured before training and after the timed
/// steps and the higher one kept, so `fraction_of_peak` is `gflops` over the larger of the two.
#[test]
fn the_peak_is_the_higher_of_two_measurements() {
    let dir = common::temp_dir("bench", "peak");
    let data = tiny_data(&dir, 6000);
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_evoattn"))
            .args(["bench", "--preset", "smoke", "--steps", "1", "--json"])
            .args(["--set", "seq_len=16", "--threads", "1", "--data"])
            .arg(&data),
        Duration::from_secs(600),
    );
    let err = assert_clean_exit(&out, &[0], "bench");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let pair = r["peak_gflops_before_after"]
        .as_array()
        .unwrap_or_else(|| panic!("no peak_gflops_before_after in {r} ({err})"));
    assert_eq!(pair.len(), 2, "{r}");
    let measured: Vec<f64> = pair.iter().filter_map(|p| p.as_f64()).collect();
    if evoattn::cpu::measured_peak_gflops(1).is_some() {
        assert_eq!(measured.len(), 2, "both measurements: {r}");
        let peak = r["peak_gflops"].as_f64().unwrap();
        assert_eq!(peak, measured[0].max(measured[1]), "{r}");
        let gflops = r["gflops"].as_f64().unwrap();
        let fraction = r["fraction_of_peak"].as_f64().unwrap();
        assert!(
            (fraction - gflops / peak).abs() <= 1e-12 * fraction.abs(),
            "{r}"
        );
    } else {
        assert!(measured.is_empty() && r["peak_gflops"].is_null(), "{r}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
