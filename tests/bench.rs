//! `evoattn bench --sweep` (issue 14, item 1): the cost table covers every similarity ×
//! normalization pair and each gating and temperature on the baseline, each relative to
//! baseline timings of the same run. Only its shape is tested here; speed is shown by the
//! committed table (benches/results/), never by a timed test.

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
