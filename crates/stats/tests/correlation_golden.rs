//! Pearson and Spearman against scipy.stats (fixtures/gen_correlation_golden.py).

use evoattn_stats::correlation::{pearson, spearman};

#[test]
fn correlations_match_scipy() {
    let text = include_str!("fixtures/correlation_golden.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    let close = |a: f64, b: f64, what: &str| {
        assert!(
            (a - b).abs() <= 1e-10 + 1e-8 * b.abs(),
            "{what}: {a} vs scipy {b}"
        );
    };
    for c in cases {
        let f = |k: &str| -> Vec<f64> {
            c[k].as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        let (x, y) = (f("x"), f("y"));
        let s = spearman(&x, &y);
        let p = pearson(&x, &y);
        close(s.r, c["spearman_r"].as_f64().unwrap(), "spearman r");
        close(s.pvalue, c["spearman_p"].as_f64().unwrap(), "spearman p");
        close(p.r, c["pearson_r"].as_f64().unwrap(), "pearson r");
        close(p.pvalue, c["pearson_p"].as_f64().unwrap(), "pearson p");
    }
}
