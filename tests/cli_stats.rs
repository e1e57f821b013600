//! The `evoattn stats` commands as scripts use them.

use serde_json::Value;
use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_evoattn"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn json(args: &[&str]) -> Value {
    let (ok, out, err) = run(args);
    assert!(ok, "{err}");
    serde_json::from_str(out.trim()).unwrap()
}

#[test]
fn compare_json_has_the_documented_fields() {
    let v = json(&[
        "stats",
        "compare",
        "--x",
        "99.8,99.5,100.2",
        "--y",
        "100.2,102.3,101.7",
        "--paired",
        "--alternative",
        "less",
        "--json",
    ]);
    for k in [
        "n_x",
        "n_y",
        "mean_x",
        "mean_y",
        "diff",
        "welch",
        "student",
        "mann_whitney",
        "paired_t",
        "wilcoxon",
        "effect",
        "ci_diff",
    ] {
        assert!(v.get(k).is_some(), "missing {k}: {v}");
    }
    assert_eq!(v["n_x"], 3);
    assert!((v["diff"].as_f64().unwrap() + 1.566_666_666_666_7).abs() < 1e-9);
    assert_eq!(v["wilcoxon"]["w_plus"], 0.0);
    assert_eq!(v["wilcoxon"]["method"], "exact");
    // one-sided "less": x is lower, so the Welch p is below the two-sided one
    let two = json(&[
        "stats",
        "compare",
        "--x",
        "99.8,99.5,100.2",
        "--y",
        "100.2,102.3,101.7",
        "--json",
    ]);
    assert!(v["welch"]["pvalue"].as_f64().unwrap() < two["welch"]["pvalue"].as_f64().unwrap());
    assert!(two.get("paired_t").is_none());
}

#[test]
fn non_finite_numbers_are_strings() {
    let v = json(&["stats", "describe", "--x", "5", "--json"]);
    assert_eq!(v["sd"], "NaN");
    assert_eq!(v["ci"]["low"], "NaN");
    let v = json(&["stats", "compare", "--x", "1,1,1", "--y", "1,1,1", "--json"]);
    assert_eq!(v["welch"]["statistic"], "NaN");
}

#[test]
fn adjust_json_and_verdict_words() {
    let v = json(&[
        "stats",
        "adjust",
        "--p",
        "0.01,0.02,0.2",
        "--method",
        "holm",
        "--json",
    ]);
    assert_eq!(v["adjusted"], serde_json::json!([0.03, 0.04, 0.2]));
    assert_eq!(v["reject"], serde_json::json!([true, true, false]));
    let (ok, out, _) = run(&[
        "stats",
        "compare",
        "--x",
        "1,2,3,4,5,6",
        "--y",
        "11,12,13,14,15,16",
    ]);
    assert!(
        ok && out.contains("verdict: x is lower than y") && out.contains("better"),
        "{out}"
    );
    let (ok, out, _) = run(&["stats", "compare", "--x", "1,2,3", "--y", "2,1,3"]);
    assert!(ok && out.contains("no detectable difference"), "{out}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let (ok, _, err) = run(&["stats", "compare", "--x", "1,abc", "--y", "2,3"]);
    assert!(!ok && err.contains("`abc` is not a number"), "{err}");
    let (ok, _, err) = run(&["stats", "adjust", "--p", "0.5,1.5"]);
    assert!(!ok && err.contains("[0, 1]"), "{err}");
    let (ok, _, err) = run(&["stats", "compare", "--x", "1,2", "--y", "1,2,3", "--paired"]);
    assert!(!ok && err.contains("equal length"), "{err}");
    let (ok, _, err) = run(&[
        "stats",
        "compare",
        "--x",
        "1,2",
        "--y",
        "1,2",
        "--alternative",
        "smaller",
    ]);
    assert!(!ok && err.contains("two-sided, less or greater"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn kgroups_json() {
    let v = json(&[
        "stats",
        "kgroups",
        "--groups",
        "1,2,3;4,5,6;7,8,9",
        "--blocked",
        "--json",
    ]);
    assert_eq!(v["anova"]["statistic"], 27.0);
    assert_eq!(v["anova"]["df_between"], 2.0);
    assert!((v["kruskal"]["statistic"].as_f64().unwrap() - 7.2).abs() < 1e-12);
    assert_eq!(v["friedman"]["statistic"], 6.0);
    let v = json(&["stats", "kgroups", "--groups", "1,2,3;4,5,6", "--json"]);
    assert!(v.get("friedman").is_none());
    let (ok, _, err) = run(&["stats", "kgroups", "--groups", "1,2,3"]);
    assert!(!ok && err.contains("at least 2 groups"), "{err}");
}

#[test]
fn compare_reports_seeded_bootstrap_and_aso() {
    let args = |seed: &str| {
        json(&[
            "stats",
            "compare",
            "--x",
            "98.1,98.4,97.9,98.8,98.0",
            "--y",
            "100.2,99.9,100.8,100.1,99.7",
            "--paired",
            "--seed",
            seed,
            "--resamples",
            "3000",
            "--json",
        ])
    };
    let (a, b, c) = (args("1"), args("1"), args("2"));
    let bs = &a["bootstrap_ci_diff"];
    assert_eq!(bs["method"], "bca");
    assert_eq!(bs["resamples"], 3000);
    assert_eq!(
        a["bootstrap_ci_diff"], b["bootstrap_ci_diff"],
        "same seed, different interval"
    );
    assert_ne!(
        a["bootstrap_ci_diff"], c["bootstrap_ci_diff"],
        "the seed is ignored"
    );
    let (lo, hi) = (bs["low"].as_f64().unwrap(), bs["high"].as_f64().unwrap());
    assert!(lo < a["diff"].as_f64().unwrap() && a["diff"].as_f64().unwrap() < hi && hi < 0.0);
    // x (lower ppl) dominates y: ε_W2 = 0 and ε_min small.
    assert_eq!(a["aso"]["violation_ratio"].as_f64().unwrap(), 0.0);
    assert!(a["aso"]["epsilon_min"].as_f64().unwrap() < 0.2);
}

#[test]
fn power_solves_n_and_effect() {
    let v = json(&[
        "stats", "power", "--effect", "0.8", "--power", "0.8", "--json",
    ]);
    let n = v["n"].as_f64().unwrap();
    assert!((n - 25.5246).abs() < 1e-3, "{v}");
    assert_eq!(v["n_ceil"], 26);
    let v = json(&["stats", "power", "--effect", "0.8", "--n", "26", "--json"]);
    assert!(v["power"].as_f64().unwrap() > 0.8 && v.get("n_ceil").is_none());
    let v = json(&["stats", "power", "--n", "26", "--power", "0.8", "--json"]);
    assert!((v["effect"].as_f64().unwrap() - 0.7923).abs() < 1e-3);
    let (ok, _, err) = run(&["stats", "power", "--effect", "0", "--power", "0.8"]);
    assert!(!ok && err.contains("no n"), "{err}");
}

#[test]
fn kgroups_blocked_has_conover_posthoc() {
    let v = json(&[
        "stats",
        "kgroups",
        "--groups",
        "1,2,3,4,5;2,3,4,5,6;9,9,8,9,9",
        "--blocked",
        "--json",
    ]);
    let ph = v["friedman"]["posthoc"].as_array().unwrap();
    assert_eq!(ph.len(), 3);
    assert_eq!(
        (ph[0]["a"].as_u64(), ph[0]["b"].as_u64()),
        (Some(0), Some(1))
    );
    // Group 2 is always ranked last: it differs from group 0.
    assert!(ph[1]["pvalue"].as_f64().unwrap() < 0.05, "{v}");
}

#[test]
fn anova_reads_csv_and_names_missing_columns() {
    let dir = std::env::temp_dir().join(format!("evoattn-anova-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("runs.csv");
    let mut text = String::from("normalization,gating,val_ppl\n");
    for (i, n) in ["softmax", "sparsemax"].iter().enumerate() {
        for (j, g) in ["none", "output_gate"].iter().enumerate() {
            for s in 0..3 {
                let y = 100.0 - 2.0 * i as f64 + j as f64 + 0.1 * s as f64;
                text.push_str(&format!("{n},{g},{y}\n"));
            }
        }
    }
    text.push_str("softmax,none,\n"); // a diverged run: null response
    std::fs::write(&path, text).unwrap();
    let p = path.to_str().unwrap();
    let v = json(&[
        "stats",
        "anova",
        "--file",
        p,
        "--response",
        "val_ppl",
        "--factors",
        "normalization,gating",
        "--json",
    ]);
    let terms = v["terms"].as_array().unwrap();
    let names: Vec<&str> = terms.iter().map(|t| t["term"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "normalization",
            "gating",
            "normalization:gating",
            "residual"
        ]
    );
    assert!(
        (terms[0]["ss"].as_f64().unwrap() - 12.0).abs() < 1e-9,
        "{v}"
    );
    assert_eq!(v["dropped"], 1);
    assert!(terms[3].get("pvalue").is_none());
    let (ok, _, err) = run(&[
        "stats",
        "anova",
        "--file",
        p,
        "--factors",
        "normalization,temperature",
    ]);
    assert!(!ok && err.contains("no column `temperature`"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Golden values from statsmodels 0.15 (`TTestPower().solve_power(0.8, power=0.8)` =
/// 14.30276455812943; `TTestPower().solve_power(0.5, nobs=20, alternative='larger')` =
/// 0.6951493382443411; `ttost_paired(x, y, -1.5, 1.5)[0]` = 0.0006447369126158683).
#[test]
fn paired_power_and_margin_tests_match_statsmodels() {
    let v = json(&[
        "stats", "power", "--effect", "0.8", "--power", "0.8", "--paired", "--json",
    ]);
    assert!(
        (v["n"].as_f64().unwrap() - 14.30276455812943).abs() < 1e-5,
        "{v}"
    );
    assert_eq!(
        (v["n_ceil"].as_u64(), v["design"].as_str()),
        (Some(15), Some("paired"))
    );
    let v = json(&[
        "stats",
        "power",
        "--effect",
        "0.5",
        "--n",
        "20",
        "--paired",
        "--alternative",
        "larger",
        "--json",
    ]);
    assert!(
        (v["power"].as_f64().unwrap() - 0.6951493382443411).abs() < 1e-9,
        "{v}"
    );
    let (ok, _, err) = run(&[
        "stats",
        "power",
        "--effect",
        "0.5",
        "--n",
        "20",
        "--alternative",
        "up",
    ]);
    assert!(!ok && err.contains("larger"), "{err}");
    let v = json(&[
        "stats",
        "compare",
        "--x",
        "99.1,98.7,99.4,98.9,99.3,99.0",
        "--y",
        "100.0,99.9,100.3,99.6,100.1,100.2",
        "--paired",
        "--margin",
        "1.5",
        "--json",
    ]);
    let tost = v["tost"].as_f64().unwrap();
    assert!((tost - 0.0006447369126158683).abs() < 1e-12, "{v}");
    assert!(v["min_effect_better"].as_f64().unwrap() > 0.5);
    assert!(v["min_effect_worse"].as_f64().unwrap() > 0.5);
    // Significantly better, and equivalent within ±1.5: better by less than the margin.
    assert_eq!(v["verdict"], "better_within_margin", "{v}");
    assert_eq!(v["verdict_ci"]["level"].as_f64(), Some(0.9));
}

#[test]
fn anova_with_a_seed_block_adds_the_block_and_repeated_measures() {
    let dir = std::env::temp_dir().join(format!("evoattn-anova-block-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("runs.csv");
    let mut text = String::from("gating,seed,val_ppl\n");
    for s in 0..5 {
        for (j, g) in ["none", "output_gate", "highway"].iter().enumerate() {
            let y = 100.0 + 3.0 * s as f64 - j as f64 + 0.1 * ((s * 7 + j * 3) % 5) as f64;
            text.push_str(&format!("{g},{s},{y}\n"));
        }
    }
    std::fs::write(&path, text).unwrap();
    let p = path.to_str().unwrap();
    let v = json(&[
        "stats",
        "anova",
        "--file",
        p,
        "--factors",
        "gating",
        "--block",
        "seed",
        "--json",
    ]);
    let names: Vec<&str> = v["terms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["term"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["seed", "gating", "residual"], "{v}");
    let rm = v["repeated_measures"].as_array().unwrap();
    assert_eq!(rm[0]["term"], "gating");
    // One factor in a complete design: the RM F equals the blocked F.
    let blocked_f = v["terms"][1]["f"].as_f64().unwrap();
    assert!(
        (rm[0]["f"].as_f64().unwrap() - blocked_f).abs() < 1e-9 * blocked_f,
        "{v}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
