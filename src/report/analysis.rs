//! The analysis of a study's runs: the leaderboard, each gene against the baseline, the
//! k-gene Friedman test, the noise, and the kind's own section (tune, ablation).

use super::{ablation, tune};
use crate::gene::Gene;
use crate::record::{RunRow, Stage};
use crate::stats::{self, aso, effect, power, rank, resample, ttest, Alternative};
use std::collections::BTreeMap;

/// Choices of the analysis.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Smallest difference (ppl) that counts as better or worse.
    pub threshold: f64,
    /// Family-wise level (Holm).
    pub alpha: f64,
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Seed of the bootstrap and ASO.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            threshold: 1.0,
            alpha: 0.05,
            resamples: resample::DEFAULT_RESAMPLES,
            seed: 0,
        }
    }
}

/// One gene's line of the leaderboard (validation ppl over its finished runs).
#[derive(Debug, Clone)]
pub struct Line {
    /// Gene.
    pub gene: Gene,
    /// Runs.
    pub n: usize,
    /// Diverged runs (excluded from means).
    pub diverged: usize,
    /// Mean, sd and 95 % t interval of validation ppl over finished runs.
    pub val: stats::Describe,
    /// Mean test ppl over finished runs.
    pub test_mean: f64,
    /// Non-embedding parameters.
    pub params_nonembed: u64,
    /// Mean training tokens/s of its packs.
    pub tokens_per_s: f64,
}

/// What a comparison concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Significantly lower ppl (after Holm) by at least the threshold.
    Better,
    /// Significantly higher ppl by at least the threshold.
    Worse,
    /// Neither.
    NoDifference,
}

impl Verdict {
    /// Words for tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::NoDifference => "no detectable difference",
        }
    }
}

/// A gene against the baseline (differences are gene − baseline; lower is better).
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Gene.
    pub gene: Gene,
    /// Runs of the gene and of the baseline that finished.
    pub n: usize,
    /// Baseline runs that finished.
    pub n_baseline: usize,
    /// Whether the runs share seeds (then tests are paired, over shared finished seeds).
    pub paired: bool,
    /// Mean difference of validation ppl.
    pub diff: f64,
    /// BCa bootstrap interval of the difference.
    pub ci: resample::BootstrapCi,
    /// `paired t` or `welch`.
    pub test: &'static str,
    /// Its two-sided p-value.
    pub pvalue: f64,
    /// Holm-adjusted over all genes compared.
    pub pvalue_holm: f64,
    /// Wilcoxon (paired) or Mann–Whitney two-sided p-value; diverged runs count as worse
    /// than every finished run.
    pub pvalue_rank: f64,
    /// Hedges' g.
    pub hedges_g: f64,
    /// A12 = P(gene ppl > baseline ppl) + ½ P(=): below ½ favours the gene.
    pub a12: f64,
    /// ASO ε_min for "gene is better than the baseline".
    pub aso_epsilon_min: f64,
    /// Verdict.
    pub verdict: Verdict,
    /// Seeds per arm for 80 % power at the observed standardized effect (inconclusive only).
    pub seeds_for_80: Option<u64>,
}

/// Everything a report says.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Which rows were analysed (`replicate` stage, or all).
    pub scope: String,
    /// Leaderboard, best mean validation ppl first.
    pub lines: Vec<Line>,
    /// Comparisons with the baseline (empty when it is absent).
    pub comparisons: Vec<Comparison>,
    /// Genes vs seeds.
    pub noise: stats::noise::VarianceShare,
    /// Pooled within-gene (seed) sd of validation ppl.
    pub seed_sd: f64,
    /// Distinct genes the search evaluated, and the winner's curse at `seed_sd`.
    pub search: Option<(usize, f64)>,
    /// Friedman over genes × shared seeds (diverged runs rank worst) with Conover's
    /// post-hoc, when at least 3 genes share one seed list.
    pub friedman: Option<(stats::kgroups::KTest, Vec<stats::kgroups::PairP>, Vec<Gene>)>,
    /// Tuning (tune studies).
    pub tune: Option<tune::TuneAnalysis>,
    /// Ablation (ablate studies).
    pub ablation: Option<ablation::AblationAnalysis>,
    /// Unit ids of the analysed runs.
    pub unit_ids: std::collections::BTreeSet<String>,
    /// The configuration of each analysed gene (its first run's).
    pub per_gene_config: Vec<(Gene, crate::train::TrainConfig)>,
    /// Options used.
    pub options: Options,
}

fn finished(rows: &[&RunRow]) -> Vec<f64> {
    rows.iter().filter_map(|r| r.val_ppl).collect()
}

/// Analyses the runs of a study.
pub fn analyse(rows: &[RunRow], opts: Options) -> Analysis {
    let replicate: Vec<&RunRow> = rows
        .iter()
        .filter(|r| r.stage == Stage::Replicate)
        .collect();
    let tuning = tune::analyse(rows);
    let ablation = ablation::analyse(rows);
    let (scope, scoped): (String, Vec<&RunRow>) = if !replicate.is_empty() {
        ("the replicate stage".into(), replicate)
    } else if let Some(t) = &tuning {
        (
            "each gene's best tune trial (chosen on these very runs, so optimistic)".into(),
            tune::best_rows(rows, t),
        )
    } else {
        ("all runs".into(), rows.iter().collect())
    };
    let unit_ids = scoped.iter().map(|r| r.unit_id.clone()).collect();
    let mut per_gene_config: Vec<(Gene, crate::train::TrainConfig)> = Vec::new();
    for r in &scoped {
        if !per_gene_config.iter().any(|(g, _)| *g == r.gene) {
            per_gene_config.push((r.gene, r.config.clone()));
        }
    }
    per_gene_config.sort_by_key(|(g, _)| g.index());
    let mut by_gene: BTreeMap<usize, Vec<&RunRow>> = BTreeMap::new();
    for r in &scoped {
        by_gene.entry(r.gene.index()).or_default().push(r);
    }
    for v in by_gene.values_mut() {
        v.sort_by_key(|r| r.seed);
    }
    let mut lines: Vec<Line> = by_gene
        .values()
        .map(|rs| {
            let vals = finished(rs);
            let tests: Vec<f64> = rs.iter().filter_map(|r| r.test_ppl).collect();
            Line {
                gene: rs[0].gene,
                n: rs.len(),
                diverged: rs.iter().filter(|r| r.diverged_at.is_some()).count(),
                val: stats::describe(&vals, 0.95),
                test_mean: stats::mean(&tests),
                params_nonembed: rs[0].params_nonembed,
                tokens_per_s: stats::mean(&rs.iter().map(|r| r.tokens_per_s).collect::<Vec<_>>()),
            }
        })
        .collect();
    lines.sort_by(|a, b| {
        a.val
            .mean
            .total_cmp(&b.val.mean)
            .then(a.gene.index().cmp(&b.gene.index()))
    });

    let mut comparisons = Vec::new();
    if let Some(base) = by_gene.get(&Gene::BASELINE.index()) {
        for (idx, rs) in &by_gene {
            if *idx == Gene::BASELINE.index() {
                continue;
            }
            comparisons.push(compare_one(rs, base, &opts));
        }
        let ps: Vec<f64> = comparisons.iter().map(|c| c.pvalue).collect();
        if !ps.is_empty() && ps.iter().all(|p| p.is_finite()) {
            if let Ok(adj) = stats::multitest::adjust(&ps, stats::multitest::Method::Holm) {
                for (c, q) in comparisons.iter_mut().zip(adj) {
                    c.pvalue_holm = q;
                }
            }
        }
        for c in &mut comparisons {
            c.verdict = if c.pvalue_holm <= opts.alpha && c.diff <= -opts.threshold {
                Verdict::Better
            } else if c.pvalue_holm <= opts.alpha && c.diff >= opts.threshold {
                Verdict::Worse
            } else {
                Verdict::NoDifference
            };
            if c.verdict != Verdict::NoDifference {
                c.seeds_for_80 = None;
            }
        }
    }
    let groups: Vec<Vec<f64>> = by_gene.values().map(|rs| finished(rs)).collect();
    let noise = stats::noise::variance_share(&groups);
    let search: Vec<&RunRow> = rows.iter().filter(|r| r.stage == Stage::Search).collect();
    let search = (!search.is_empty()).then(|| {
        let mut genes: Vec<usize> = search.iter().map(|r| r.gene.index()).collect();
        genes.sort_unstable();
        genes.dedup();
        (
            genes.len(),
            stats::noise::winners_curse(genes.len(), noise.ms_within.sqrt()),
        )
    });
    let friedman = blocked_test(&by_gene);
    Analysis {
        scope,
        lines,
        comparisons,
        friedman,
        seed_sd: noise.ms_within.sqrt(),
        noise,
        search,
        tune: tuning,
        ablation,
        unit_ids,
        per_gene_config,
        options: opts,
    }
}

fn blocked_test(
    by_gene: &BTreeMap<usize, Vec<&RunRow>>,
) -> Option<(stats::kgroups::KTest, Vec<stats::kgroups::PairP>, Vec<Gene>)> {
    if by_gene.len() < 3 {
        return None;
    }
    let seeds: Vec<Vec<u64>> = by_gene
        .values()
        .map(|rs| rs.iter().map(|r| r.seed).collect())
        .collect();
    if seeds.iter().any(|s| *s != seeds[0]) || seeds[0].len() < 2 {
        return None;
    }
    let worst = by_gene
        .values()
        .flatten()
        .filter_map(|r| r.val_ppl)
        .fold(0.0f64, f64::max);
    let groups: Vec<Vec<f64>> = by_gene
        .values()
        .map(|rs| {
            rs.iter()
                .map(|r| r.val_ppl.unwrap_or(worst * 1e3 + 1e6))
                .collect()
        })
        .collect();
    let f = stats::kgroups::friedman(&groups).ok()?;
    // When every seed ranks the genes in the same order, Conover's variance term is 0 and
    // its p-values collapse to 0 (as in scikit-posthocs): the post-hoc is left out.
    let ranks: Vec<Vec<f64>> = (0..groups[0].len())
        .map(|i| {
            let row: Vec<f64> = groups.iter().map(|g| g[i]).collect();
            stats::rank::rank_average(&row).0
        })
        .collect();
    let post = if ranks.iter().all(|r| *r == ranks[0]) {
        Vec::new()
    } else {
        stats::kgroups::conover_friedman(&groups).ok()?
    };
    let genes = by_gene.values().map(|rs| rs[0].gene).collect();
    Some((f, post, genes))
}

fn compare_one(rs: &[&RunRow], base: &[&RunRow], opts: &Options) -> Comparison {
    let seeds: Vec<u64> = rs.iter().map(|r| r.seed).collect();
    let base_seeds: Vec<u64> = base.iter().map(|r| r.seed).collect();
    let paired = seeds == base_seeds;
    let (x, y): (Vec<f64>, Vec<f64>) = if paired {
        rs.iter()
            .zip(base)
            .filter_map(|(a, b)| Some((a.val_ppl?, b.val_ppl?)))
            .unzip()
    } else {
        (finished(rs), finished(base))
    };
    // Rank tests: a diverged run is worse than every finished run.
    let worst = rs
        .iter()
        .chain(base)
        .filter_map(|r| r.val_ppl)
        .fold(0.0f64, f64::max);
    let with_div = |v: &[&RunRow]| -> Vec<f64> {
        v.iter()
            .map(|r| r.val_ppl.unwrap_or(worst * 1e3 + 1e6))
            .collect()
    };
    let (test, pvalue, pvalue_rank) = if paired {
        let t = ttest::paired(&x, &y, Alternative::TwoSided)
            .map(|t| t.pvalue)
            .unwrap_or(f64::NAN);
        let w = rank::wilcoxon(&with_div(rs), &with_div(base), Alternative::TwoSided)
            .map(|w| w.pvalue)
            .unwrap_or(f64::NAN);
        ("paired t", t, w)
    } else {
        let t = ttest::welch(&x, &y, Alternative::TwoSided).pvalue;
        let m = rank::mann_whitney(&with_div(rs), &with_div(base), Alternative::TwoSided).pvalue;
        ("welch", t, m)
    };
    let design = if paired {
        resample::Design::Paired
    } else {
        resample::Design::Independent
    };
    let ci = resample::bootstrap_ci(
        &x,
        &y,
        design,
        &resample::mean_diff,
        resample::Spec {
            method: resample::Method::Bca,
            resamples: opts.resamples,
            level: 1.0 - opts.alpha,
            seed: opts.seed,
        },
    );
    let neg = |v: &[f64]| v.iter().map(|a| -a).collect::<Vec<_>>();
    let d = effect::cohens_d(&x, &y);
    let seeds_for_80 =
        power::solve_n(d.abs(), 0.8, opts.alpha, Alternative::TwoSided).map(|n| n.ceil() as u64);
    Comparison {
        gene: rs[0].gene,
        n: x.len(),
        n_baseline: y.len(),
        paired,
        diff: stats::mean(&x) - stats::mean(&y),
        ci,
        test,
        pvalue,
        pvalue_holm: f64::NAN,
        pvalue_rank,
        hedges_g: effect::hedges_g(&x, &y),
        a12: effect::a12(&x, &y),
        aso_epsilon_min: aso::aso(&neg(&x), &neg(&y), opts.alpha, 1000, 1000, opts.seed)
            .epsilon_min,
        verdict: Verdict::NoDifference,
        seeds_for_80,
    }
}
