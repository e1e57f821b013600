//! The simulator shares the search code with real studies: driving the quickstart study's
//! GA with the scores its committed store holds reproduces its generations.parquet; and
//! `evoattn simulate` runs on the shipped study.

use evoattn::search::simulate::{ga_with, Stored};
use evoattn::study::store::{generations_from_frame, read_parquet, runs_from_frame};
use evoattn::study::{KindSpec, Study};
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn a_stored_evaluator_reproduces_the_quickstart_generations() {
    let dir = root().join("reports/quickstart");
    let study = Study::load(&root().join("studies/quickstart.toml")).unwrap();
    let KindSpec::Evolve(e) = &study.kind else {
        panic!("quickstart is an evolve study")
    };
    let rows = runs_from_frame(&read_parquet(&dir.join("runs.parquet")).unwrap()).unwrap();
    let search: Vec<_> = rows
        .into_iter()
        .filter(|r| r.stage == evoattn::record::Stage::Search)
        .collect();
    let mut ev = Stored::new(&search);
    let out = ga_with(&e.spec, &study.seeds, &mut ev, None).unwrap();
    let want =
        generations_from_frame(&read_parquet(&dir.join("generations.parquet")).unwrap()).unwrap();
    assert!(out.complete);
    assert_eq!(out.rows, want);
}

#[test]
fn simulate_runs_the_shipped_study_and_compares_strategies() {
    let bin = env!("CARGO_BIN_EXE_evoattn");
    let o = Command::new(bin)
        .current_dir(root())
        .args([
            "simulate",
            "studies/simulate-seed-ga.toml",
            "--compare",
            "--replicates",
            "200",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    for l in &lines {
        for k in [
            "strategy",
            "p_correct",
            "p_within_margin",
            "regret",
            "winners_curse",
            "runs",
        ] {
            assert!(l.get(k).is_some(), "{k} missing in {l}");
        }
        assert!(l.get("p_correct_se").is_some());
        let p = l["p_correct"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p));
        assert!(l["regret"].as_f64().unwrap() >= 0.0);
    }
    // Equal budgets: every strategy stays within the published GA's mean run budget.
    for l in &lines {
        let budget = l["budget"].as_f64().unwrap();
        assert!(l["runs"].as_f64().unwrap() <= budget, "{l}");
    }
    // A study without a landscape is a clear error.
    let o = Command::new(bin)
        .current_dir(root())
        .args(["simulate", "studies/quickstart.toml"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("seed_sd") && err.contains("--noise-from"),
        "{err}"
    );
}

#[test]
fn hurdle_sd_is_read_off_curves() {
    use evoattn::record::CurveRow;
    use evoattn::search::simulate::Landscape;
    // Rows shaped like a store's: a committed row, renamed.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let real = evoattn::study::store::runs_from_frame(
        &evoattn::study::store::read_parquet(&root.join("reports/quickstart/runs.parquet"))
            .unwrap(),
    )
    .unwrap();
    let mut rows = Vec::new();
    let mut curves = Vec::new();
    for (i, d) in [10.0, 12.0, 14.0, 11.0].iter().enumerate() {
        let mut r = real[0].clone();
        r.unit_id = format!("u{i}");
        r.config.steps = 100;
        r.val_ppl = Some(100.0);
        rows.push(r);
        for (step, v) in [(25u64, 100.0 + d), (100, 100.0)] {
            curves.push(CurveRow {
                unit_id: format!("u{i}"),
                step,
                train_loss: 1.0,
                val_ppl: Some(v),
            });
        }
    }
    let (sd, n) = Landscape::hurdle_sd_from_curves(&rows, &curves, 0.25).unwrap();
    assert_eq!(n, 4);
    // The sd (n − 1) of 10, 12, 14, 11.
    assert!((sd - 1.707_825_127_659_933).abs() < 1e-12, "{sd}");
    // No point near the hurdle: nothing to fit.
    assert!(Landscape::hurdle_sd_from_curves(&rows, &curves, 0.6).is_none());
}
