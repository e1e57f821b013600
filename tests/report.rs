//! Reports on synthetic stores with planted effects.

use evoattn::gene::Gene;
use evoattn::report::{self, Verdict};
use evoattn::study::store::RunRow;
use evoattn::train::Preset;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

fn row(gene: Gene, seed: u64, val: Option<f64>) -> RunRow {
    RunRow {
        study: "synthetic".into(),
        stage: "replicate".into(),
        unit_id: format!("{}-{seed}", gene.short_id()),
        pack_id: "p".into(),
        gene,
        seed,
        preset: "cpu".into(),
        config: Preset::Cpu.config(),
        params_total: 1000,
        params_nonembed: 500,
        diverged_at: val.is_none().then_some(100),
        train_loss: 4.0,
        val_ppl: val,
        test_ppl: val.map(|v| v - 5.0),
        tokens_per_s: 1e4,
        wall_s: 60.0,
        device: "cpu".into(),
        threads: 1,
        replicas: 1,
        evoattn_version: "0.1.0".into(),
        engine_version: 1,
        git_commit: "test".into(),
        data_fingerprint: "fp".into(),
        started_at: "2026-11-29T00:00:00Z".into(),
        finished_at: "2026-11-29T00:01:00Z".into(),
    }
}

/// Baseline, a gene 3 ppl better, a gene with no effect and one with a diverged run; seed
/// sd 0.5, 10 shared seeds, plus a seed effect shared by all genes (common random numbers).
fn store() -> Vec<RunRow> {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let noise = Normal::new(0.0, 0.5).unwrap();
    let better: Gene = "dot+sparsemax+output_gate+learned".parse().unwrap();
    let same: Gene = "cosine+softmax+none+fixed".parse().unwrap();
    let shaky: Gene = "dot+entmax15+none+fixed".parse().unwrap();
    let mut rows = Vec::new();
    for seed in 1..=10u64 {
        let seed_effect = noise.sample(&mut rng);
        rows.push(row(
            Gene::BASELINE,
            seed,
            Some(100.0 + seed_effect + noise.sample(&mut rng)),
        ));
        rows.push(row(
            better,
            seed,
            Some(97.0 + seed_effect + noise.sample(&mut rng)),
        ));
        rows.push(row(
            same,
            seed,
            Some(100.0 + seed_effect + noise.sample(&mut rng)),
        ));
        let v = (seed != 4).then(|| 100.2 + seed_effect + noise.sample(&mut rng));
        rows.push(row(shaky, seed, v));
    }
    rows
}

#[test]
fn planted_effects_get_the_right_verdicts() {
    let rows = store();
    let a = report::analyse(&rows, report::Options::default());
    let find = |g: &str| {
        a.comparisons
            .iter()
            .find(|c| c.gene.to_string() == g)
            .unwrap_or_else(|| panic!("{g} not compared"))
    };
    let b = find("dot+sparsemax+output_gate+learned");
    assert_eq!(b.verdict, Verdict::Better, "{b:?}");
    assert!(b.paired && (b.diff + 3.0).abs() < 0.6, "{b:?}");
    assert!(b.ci.low < b.diff && b.diff < b.ci.high && b.ci.high < 0.0);
    let s = find("cosine+softmax+none+fixed");
    assert_eq!(s.verdict, Verdict::NoDifference, "{s:?}");
    assert!(s.seeds_for_80.is_some_and(|n| n > 10), "{s:?}");
    // The diverged run: counted, excluded from means (9 pairs), worst in the rank test.
    let d = find("dot+entmax15+none+fixed");
    assert_eq!(d.n, 9);
    let line = a.lines.iter().find(|l| l.gene == d.gene).unwrap();
    assert_eq!((line.n, line.diverged, line.val.n), (10, 1, 9));
    let md = report::markdown(&a, &rows, &report::Provenance::default());
    assert!(md.contains("is better than the baseline by"), "{md}");
    assert!(md.contains("no detectable difference"), "{md}");
    assert!(md.contains("1 run(s) diverged"), "{md}");
    // Four genes share the seeds: Friedman finds the better gene, and Conover separates
    // it from the baseline.
    let (f, post, genes) = a.friedman.as_ref().expect("friedman");
    assert!(f.pvalue < 0.01, "{f:?}");
    let ib = genes.iter().position(|g| *g == Gene::BASELINE).unwrap();
    let iw = genes.iter().position(|g| *g == b.gene).unwrap();
    let pair = post
        .iter()
        .find(|p| (p.a, p.b) == (ib.min(iw), ib.max(iw)))
        .unwrap();
    assert!(pair.pvalue < 0.05, "{pair:?}");
    assert!(md.contains("## All genes together"), "{md}");
}

#[test]
fn reports_are_byte_identical_when_rerun() {
    let rows = store();
    let dir = std::env::temp_dir().join(format!("evoattn-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prov = report::Provenance {
        study: "synthetic".into(),
        command: "evoattn report".into(),
        study_sha256: "0".into(),
    };
    report::write(&rows, &prov, &dir.join("a.md"), &dir).unwrap();
    let t1 = std::fs::read(dir.join("tests.parquet")).unwrap();
    report::write(&rows, &prov, &dir.join("b.md"), &dir).unwrap();
    assert_eq!(
        std::fs::read(dir.join("a.md")).unwrap(),
        std::fs::read(dir.join("b.md")).unwrap()
    );
    assert_eq!(t1, std::fs::read(dir.join("tests.parquet")).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}
