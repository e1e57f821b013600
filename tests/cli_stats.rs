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
