//! Reports on synthetic stores with planted effects.

use evoattn::gene::Gene;
use evoattn::record::{RunRow, Stage};
use evoattn::report::{self, Verdict};
use evoattn::train::Preset;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

fn row(gene: Gene, seed: u64, val: Option<f64>) -> RunRow {
    RunRow {
        study: "synthetic".into(),
        stage: Stage::Replicate,
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
        hardware: "test cpu".into(),
        stopped_at: None,
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
    assert_eq!(b.verdict, Verdict::BetterByMargin, "{b:?}");
    assert!(b.paired && (b.diff + 3.0).abs() < 0.6, "{b:?}");
    // The verdict's interval is the 90 % one of the one-sided test, entirely below −δ.
    assert!(
        (b.ci.level - 0.9).abs() < 1e-12 && b.ci.high < -1.0,
        "{b:?}"
    );
    // 10 runs per arm: the BCa interval is shown beside the t interval.
    assert!(b.bca.is_some());
    let s = find("cosine+softmax+none+fixed");
    assert!(
        matches!(s.verdict, Verdict::Equivalent | Verdict::Inconclusive),
        "{s:?}"
    );
    assert!(s.mde_80 > 0.0 && s.mde_80 < 3.0, "{s:?}");
    // The diverged run: counted, excluded from means (9 pairs), worst in the rank test.
    let d = find("dot+entmax15+none+fixed");
    assert_eq!(d.n, 9);
    let line = a.lines.iter().find(|l| l.gene == d.gene).unwrap();
    assert_eq!((line.n, line.diverged, line.val.n), (10, 1, 9));
    let md = report::markdown(
        &a,
        &rows,
        &report::Provenance::default(),
        &Default::default(),
    );
    assert!(
        md.contains("is **better than the baseline by at least 1 ppl**"),
        "{md}"
    );
    // the interval of the improvement is stated as positive numbers, low to high
    let ci = format!("(90 % t CI {:.2} to {:.2};", -b.ci.high, -b.ci.low);
    assert!(md.contains(&ci) && -b.ci.high > 0.0, "{ci} in {md}");
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

/// The baseline and one gene on `seeds` shared seeds: the gene is `effect` ppl off the
/// baseline, with a shared seed effect (sd 2) and gene × seed noise of sd `noise`.
fn pair_store(effect: f64, noise: f64, seeds: u64, rng_seed: u64) -> Vec<RunRow> {
    let mut rng = ChaCha8Rng::seed_from_u64(rng_seed);
    let n = Normal::new(0.0, 1.0).unwrap();
    let gene: Gene = "dot+sparsemax+output_gate+learned".parse().unwrap();
    let mut rows = Vec::new();
    for seed in 1..=seeds {
        let shared = 2.0 * n.sample(&mut rng);
        rows.push(row(
            Gene::BASELINE,
            seed,
            Some(100.0 + shared + noise * n.sample(&mut rng)),
        ));
        rows.push(row(
            gene,
            seed,
            Some(100.0 + effect + shared + noise * n.sample(&mut rng)),
        ));
    }
    rows
}

fn only_verdict(rows: &[RunRow]) -> report::Comparison {
    let a = report::analyse(rows, report::Options::default());
    assert_eq!(a.comparisons.len(), 1);
    a.comparisons[0].clone()
}

#[test]
fn margin_verdicts_on_planted_differences() {
    // No difference, small noise, 30 seeds: equivalent within ±1 ppl.
    let c = only_verdict(&pair_store(0.0, 0.3, 30, 1));
    assert_eq!(c.verdict, Verdict::Equivalent, "{c:?}");
    assert!(c.ci.low > -1.0 && c.ci.high < 1.0);
    // A precise −0.5 ppl: better, and by less than the margin.
    let c = only_verdict(&pair_store(-0.5, 0.2, 30, 2));
    assert_eq!(c.verdict, Verdict::BetterWithinMargin, "{c:?}");
    // −3 ppl: better by at least the margin.
    let c = only_verdict(&pair_store(-3.0, 0.5, 10, 3));
    assert_eq!(c.verdict, Verdict::BetterByMargin, "{c:?}");
    // +3 ppl: the mirror.
    let c = only_verdict(&pair_store(3.0, 0.5, 10, 4));
    assert_eq!(c.verdict, Verdict::WorseByMargin, "{c:?}");
}

#[test]
fn two_runs_per_arm_are_inconclusive_without_bootstrap_or_aso() {
    let rows = pair_store(-1.0, 1.0, 2, 5);
    let c = only_verdict(&rows);
    assert_eq!(c.verdict, Verdict::Inconclusive, "{c:?}");
    assert!(c.bca.is_none(), "no BCa from 2 runs");
    assert!(
        matches!(c.aso, report::AsoResult::Undefined(_)),
        "{:?}",
        c.aso
    );
    // The exact Wilcoxon test with 2 pairs cannot go below p = 0.5.
    assert_eq!(c.rank_min_p, 0.5);
    let a = report::analyse(&rows, report::Options::default());
    let md = report::markdown(
        &a,
        &rows,
        &report::Provenance::default(),
        &Default::default(),
    );
    assert!(
        md.contains("**inconclusive**") && md.contains("would have been detected with 80 % power"),
        "{md}"
    );
    assert!(md.contains("cannot go below p = 0.5"), "{md}");
    assert!(md.contains("ASO is undefined"), "{md}");
}

#[test]
fn tune_studies_get_no_verdicts() {
    let mut rows = pair_store(-3.0, 0.5, 10, 6);
    for r in &mut rows {
        r.stage = Stage::Tune;
    }
    let a = report::analyse(&rows, report::Options::default());
    assert!(!a.verdicts && a.comparisons.is_empty());
    let md = report::markdown(
        &a,
        &rows,
        &report::Provenance::default(),
        &Default::default(),
    );
    assert!(md.contains("No verdicts"), "{md}");
}

fn tmp(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("evoattn-report-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes the report twice (into two folders) and checks: identical bytes (report, every
/// SVG, tests.parquet), every SVG parses as XML, and the report links exactly the SVGs
/// written. Returns the report text.
fn write_twice(rows: &[RunRow], tag: &str) -> String {
    let (d1, d2) = (tmp(&format!("{tag}1")), tmp(&format!("{tag}2")));
    let prov = report::Provenance {
        study: "synthetic".into(),
        command: "evoattn report".into(),
        study_sha256: "0".into(),
    };
    report::write(rows, &prov, &d1.join("report.md"), &d1).unwrap();
    report::write(rows, &prov, &d2.join("report.md"), &d2).unwrap();
    let md = std::fs::read_to_string(d1.join("report.md")).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&d1)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert!(names.iter().any(|n| n.ends_with(".svg")), "{names:?}");
    for n in &names {
        let (a, b) = (
            std::fs::read(d1.join(n)).unwrap(),
            std::fs::read(d2.join(n)).unwrap(),
        );
        assert_eq!(a, b, "{n} differs between two runs");
        if n.ends_with(".svg") {
            let text = String::from_utf8(a).unwrap();
            let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{n}: {e}"));
            assert_eq!(doc.root_element().tag_name().name(), "svg");
            assert!(
                md.contains(&format!("]({n})")),
                "{n} is not linked from the report"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&d1);
    let _ = std::fs::remove_dir_all(&d2);
    md
}

#[test]
fn reports_are_byte_identical_when_rerun() {
    let md = write_twice(&store(), "replicate");
    assert!(
        md.contains("![Validation ppl per seed](report.seeds.svg)"),
        "{md}"
    );
}

/// A 4 × 3 ablation (normalization × gating), 4 seeds per cell: gating has a planted
/// 3-ppl effect (output_gate better than none and highway), normalization none, no
/// interaction; one diverged run.
fn ablation_store() -> Vec<RunRow> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let noise = Normal::new(0.0, 0.5).unwrap();
    let mut rows = Vec::new();
    for seed in 1..=4u64 {
        let seed_effect = noise.sample(&mut rng);
        for norm in ["softmax", "sparsemax", "entmax15", "sigmoid"] {
            for gate in ["none", "output_gate", "highway"] {
                let gene: Gene = format!("dot+{norm}+{gate}+learned").parse().unwrap();
                let effect = if gate == "output_gate" { -3.0 } else { 0.0 };
                let v = 100.0 + effect + seed_effect + noise.sample(&mut rng);
                let diverged = seed == 2 && norm == "sigmoid" && gate == "highway";
                let mut r = row(gene, seed, (!diverged).then_some(v));
                r.stage = Stage::Ablate;
                rows.push(r);
            }
        }
    }
    rows
}

#[test]
fn ablation_finds_the_planted_factor() {
    let rows = ablation_store();
    let a = report::analyse(&rows, report::Options::default());
    let ab = a.ablation.as_ref().expect("ablation analysed");
    let names: Vec<&str> = ab.factors.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["normalization", "gating"]);
    assert_eq!(ab.factors[1].levels, ["none", "output_gate", "highway"]);
    let blocked = ab.blocked.as_ref().unwrap();
    let p = |t: &str| blocked.terms.iter().find(|x| x.term == t).unwrap().pvalue;
    assert!(p("gating") < 1e-6, "{blocked:?}");
    assert!(p("normalization") > 0.05, "{blocked:?}");
    assert!(p("normalization:gating") > 0.05, "{blocked:?}");
    assert_eq!(ab.diverged, 1);
    assert_eq!(
        blocked.residual.df,
        47.0 - 12.0 - 3.0,
        "47 finished runs, 12 cells, 4 seeds"
    );
    // The repeated-measures ANOVA drops the seed with the diverged cell.
    let (rm, n) = ab.rm.as_ref().unwrap();
    assert_eq!(*n, 3);
    assert!(
        rm.iter().any(|t| t.term == "gating" && t.pvalue < 0.01),
        "{rm:?}"
    );
    let gating = &ab.factors[1];
    assert!(gating.rank.as_ref().unwrap().pvalue < 0.05);
    // none vs output_gate and output_gate vs highway differ; none vs highway does not
    let differ: Vec<(usize, usize)> = gating
        .pairs
        .iter()
        .filter(|p| p.pvalue_holm <= 0.05)
        .map(|p| (p.a, p.b))
        .collect();
    assert_eq!(differ, [(0, 1), (1, 2)], "{:?}", gating.pairs);
    // The same pairs on gating's own error (seed × gating), over the 3 complete seeds.
    let split: Vec<(usize, usize)> = gating
        .pairs
        .iter()
        .filter(|p| p.split.unwrap().3 <= 0.05)
        .map(|p| (p.a, p.b))
        .collect();
    assert_eq!(split, [(0, 1), (1, 2)], "{:?}", gating.pairs);
    assert_eq!(
        gating.pairs[0].split.unwrap().1,
        2.0 * 2.0,
        "(3 − 1)(3 − 1) df"
    );
    let og = &gating.marginal[1];
    assert!((og.mean - 97.0).abs() < 0.6 && og.ci.low < og.mean && og.mean < og.ci.high);
    let md = write_twice(&rows, "ablate");
    assert!(
        md.contains("## Ablation") && md.contains("| normalization × gating |"),
        "{md}"
    );
    assert!(md.contains("Lowest gating mean: `output_gate`"), "{md}");
    assert!(md.contains("1 run(s) diverged"), "{md}");
    assert!(md.contains("report.ablation.svg"), "{md}");
}

/// A 4 × 3 ablation on 8 shared seeds with a large seed effect (sd 3) and a planted
/// interaction (sd 0.5 over cells) but no main effects, small noise (sd 0.2).
#[test]
fn the_seed_block_reveals_an_interaction_the_unblocked_fit_misses() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let n = Normal::new(0.0, 1.0).unwrap();
    let norms = ["softmax", "sparsemax", "entmax15", "sigmoid"];
    let gates = ["none", "output_gate", "highway"];
    // Interaction: a cell effect with zero row and column means.
    let raw: Vec<Vec<f64>> = (0..4)
        .map(|_| (0..3).map(|_| 0.5 * n.sample(&mut rng)).collect())
        .collect();
    let rm: Vec<f64> = raw.iter().map(|r| r.iter().sum::<f64>() / 3.0).collect();
    let cm: Vec<f64> = (0..3)
        .map(|j| raw.iter().map(|r| r[j]).sum::<f64>() / 4.0)
        .collect();
    let gm = rm.iter().sum::<f64>() / 4.0;
    let mut rows = Vec::new();
    for seed in 1..=8u64 {
        let s = 3.0 * n.sample(&mut rng);
        for (i, norm) in norms.iter().enumerate() {
            for (j, gate) in gates.iter().enumerate() {
                let inter = raw[i][j] - rm[i] - cm[j] + gm;
                let gene: Gene = format!("dot+{norm}+{gate}+learned").parse().unwrap();
                let v = 100.0 + s + inter + 0.2 * n.sample(&mut rng);
                let mut r = row(gene, seed, Some(v));
                r.stage = Stage::Ablate;
                rows.push(r);
            }
        }
    }
    let a = report::analyse(&rows, report::Options::default());
    let ab = a.ablation.as_ref().unwrap();
    let p = |t: &evoattn::stats::anova::Table| {
        t.terms
            .iter()
            .find(|x| x.term == "normalization:gating")
            .unwrap()
            .pvalue
    };
    let (blocked, unblocked) = (ab.blocked.as_ref().unwrap(), ab.unblocked.as_ref().unwrap());
    assert!(p(blocked) < 0.01, "blocked: {blocked:?}");
    assert!(p(unblocked) > 0.3, "unblocked: {unblocked:?}");
    let (rm, _) = ab.rm.as_ref().unwrap();
    let t = rm
        .iter()
        .find(|t| t.term == "normalization:gating")
        .unwrap();
    assert!(
        t.pvalue < 0.01 && t.pvalue_gg < 0.05 && t.eps_gg <= 1.0,
        "{t:?}"
    );
}

/// Two genes × 5 trials × 2 seeds: the trial with lr 2e-3 is best for the baseline, the
/// one with lr 1e-3 for the other gene.
#[test]
fn tune_reports_best_trials_and_expected_best_curves() {
    let other: Gene = "dot+sparsemax+output_gate+learned".parse().unwrap();
    let lrs = [5e-4, 1e-3, 2e-3, 4e-3, 8e-3];
    let mut rows = Vec::new();
    for (t, &lr) in lrs.iter().enumerate() {
        for seed in 1..=2u64 {
            for g in [Gene::BASELINE, other] {
                let best = if g == Gene::BASELINE { 2 } else { 1 };
                let v = 100.0 + 2.0 * (t as f64 - best as f64).abs() + seed as f64 * 0.1;
                let mut r = row(g, seed, Some(v));
                r.stage = Stage::Tune;
                r.config.lr = lr;
                r.unit_id = format!("{}-{t}-{seed}", g.short_id());
                rows.push(r);
            }
        }
    }
    let a = report::analyse(&rows, report::Options::default());
    let t = a.tune.as_ref().expect("tune analysed");
    assert_eq!(t.seeds_per_trial, 2);
    for g in &t.genes {
        assert_eq!(g.trials.len(), 5);
        let want = if g.gene == Gene::BASELINE { 2e-3 } else { 1e-3 };
        assert_eq!(g.trials[g.best].config.lr, want);
        assert!(
            (g.curve[4].without - 100.15).abs() < 1e-9,
            "all 5 of 5 trials: the best"
        );
        assert!(g.curve[0].with > g.curve[1].with && g.curve[1].with > g.curve[4].with);
        assert!(g.curve.iter().all(|c| c.p_all_failed == 0.0));
        assert_eq!(g.band.len(), 5);
        assert!(g
            .band
            .iter()
            .all(|b| b.low <= b.estimate && b.estimate <= b.high));
    }
    // The leaderboard is each gene's best trial, and the report says it is optimistic.
    assert!(a
        .lines
        .iter()
        .all(|l| l.n == 2 && (l.val.mean - 100.15).abs() < 1e-9));
    assert!(a.scope.contains("optimistic"), "{}", a.scope);
    let md = write_twice(&rows, "tune");
    assert!(
        md.contains("## Tuning") && md.contains("report.tune.svg"),
        "{md}"
    );
    assert!(md.contains("lr 0.002 · warmup"), "{md}");
    // Same trial configurations: the other gene against the baseline, configuration by
    // configuration: better in the 2 trials nearer its own optimum, worse in 3.
    let v = &t.versus[0];
    assert_eq!((v.configs, v.better, v.worse), (5, 2, 3));
    assert!(md.contains("better in") && md.contains("of 5"), "{md}");
    assert!(!a.verdicts && a.comparisons.is_empty());
}

#[test]
fn best_so_far_tracks_the_running_minimum_of_gene_means() {
    let g = |s: &str| s.parse::<Gene>().unwrap();
    let mut rows = vec![
        row(g("dot+softmax+none+fixed"), 1, Some(110.0)),
        row(g("dot+sparsemax+none+fixed"), 1, Some(105.0)),
        row(g("dot+entmax15+none+fixed"), 1, None),
        row(g("dot+sparsemax+none+fixed"), 2, Some(111.0)),
        row(g("cosine+softmax+none+fixed"), 1, Some(101.0)),
    ];
    for r in &mut rows {
        r.stage = Stage::Search;
    }
    let b = report::best_so_far(&rows);
    let ys: Vec<f64> = b.iter().map(|p| p.1).collect();
    // a second seed moves the sparsemax gene's mean from 105 to 108: the best so far rises
    assert_eq!(ys, [110.0, 105.0, 105.0, 108.0, 101.0]);
    assert_eq!(
        b.iter().map(|p| p.0).collect::<Vec<_>>(),
        [1.0, 2.0, 3.0, 4.0, 5.0]
    );
}

#[test]
fn a_report_of_a_store_with_failed_packs_says_so_first_and_out_needs_its_folder() {
    let d = tmp("failed");
    std::fs::create_dir_all(d.join("failed")).unwrap();
    std::fs::write(
        d.join("failed/p1.json"),
        r#"{"pack_id":"p1","stage":"replicate","gene":"dot+softmax+none+fixed","seeds":[3],"unit_ids":["u"],"kind":"panic","message":"boom","host":"h","pid":1,"at":"2026-12-01T00:00:00Z"}"#,
    )
    .unwrap();
    let prov = report::Provenance::default();
    report::write(&store(), &prov, &d.join("report.md"), &d).unwrap();
    let md = std::fs::read_to_string(d.join("report.md")).unwrap();
    assert!(
        md.starts_with("**Incomplete:** 1 pack(s) failed"),
        "{}",
        &md[..200]
    );
    assert!(md.contains("boom"));
    let e = report::write(&store(), &prov, &d.join("no/such/dir/r.md"), &d)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("does not exist") && e.contains("no/such/dir"),
        "{e}"
    );
    assert!(!d.join("no").exists());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn seed_pairs_on_different_hardware_are_flagged() {
    let md_of = |rows: &[RunRow]| {
        let a = report::analyse(rows, report::Options::default());
        report::markdown(
            &a,
            rows,
            &report::Provenance::default(),
            &Default::default(),
        )
    };
    let mut rows = pair_store(-2.0, 0.5, 6, 11);
    assert!(!md_of(&rows).contains("Mixed hardware"));
    // Two of the gene's runs on another CPU, one pair with no hardware recorded.
    for r in rows.iter_mut().filter(|r| r.gene != Gene::BASELINE) {
        match r.seed {
            1 | 2 => r.hardware = "other cpu".into(),
            3 => r.hardware = String::new(),
            _ => {}
        }
    }
    let md = md_of(&rows);
    assert!(
        md.contains(
            "2 of its 6 seed pairs ran on different hardware (1 with hardware not recorded)"
        ),
        "{md}"
    );
}
