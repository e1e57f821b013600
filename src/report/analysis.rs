//! The analysis of a study's runs: the leaderboard, each gene against the baseline with
//! margin-based verdicts, the k-gene Friedman test, the noise and the selection, and the
//! kind's own section (tune, ablation).
//!
//! **Verdicts.** Each gene is compared with the baseline on the seeds they share (paired t
//! on the differences) or, without shared seeds, by Welch's test. Four p-values, each
//! Holm-adjusted over the genes compared: the two-sided difference test, the minimum-effect
//! tests "better by more than δ" (H0: Δ ≥ −δ) and "worse by more than δ" (H0: Δ ≤ δ), and
//! TOST equivalence within ±δ. The verdict ([`Verdict`]) takes them in this order: better
//! by ≥ δ, worse by ≥ δ, better (within the margin when also equivalent), worse (idem),
//! equivalent, inconclusive. Power is planned for the design as run (one-sample power on
//! the paired differences, two-sample power otherwise) at the observed sd — never at the
//! observed effect.

use super::{ablation, tune};
use crate::gene::Gene;
use crate::record::{RunRow, Stage};
use crate::stats::margin::{self, MarginP, MarginTest};
use crate::stats::{self, aso, effect, exact, power, rank, resample, Alternative, Interval};
use std::collections::BTreeMap;

pub use crate::stats::margin::Verdict;

/// Runs per arm below which the bootstrap, ASO and rank tests are not trusted.
pub const SMALL_SAMPLE: usize = 5;
/// Runs per arm from which the BCa interval is shown beside the t interval.
pub const BCA_FROM: usize = 10;
/// Power that the planning figures aim at.
pub const TARGET_POWER: f64 = 0.8;

/// Choices of the analysis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// The margin δ (ppl): differences smaller than this do not matter in practice.
    pub margin: f64,
    /// Level of every test; Holm keeps each kind of claim (difference, better by ≥ δ,
    /// worse by ≥ δ, equivalence) at this family-wise level across the genes compared.
    pub alpha: f64,
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Seed of the bootstrap and ASO.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            margin: 1.0,
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

/// ASO, or why it is not reported.
#[derive(Debug, Clone, PartialEq)]
pub enum AsoResult {
    /// ε_min for "the gene is better than the baseline".
    Defined(f64),
    /// Not reported, with the reason.
    Undefined(String),
}

/// A gene against the baseline (differences are gene − baseline; lower is better).
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Gene.
    pub gene: Gene,
    /// Finished runs of the gene in the comparison (pairs when paired).
    pub n: usize,
    /// Finished baseline runs in the comparison.
    pub n_baseline: usize,
    /// Whether the runs share seeds (then tests are paired, over shared finished seeds).
    pub paired: bool,
    /// Seed pairs whose two runs recorded different hardware (CPU models or GPUs): CPU
    /// results can depend on the CPU model (README, "Reproducibility"), so such a pair's
    /// difference mixes the genes' effect with the hardware's.
    /// Counted over the finished pairs the tests use (`n`).
    pub mixed_hardware_pairs: usize,
    /// Of those pairs, the ones where either run has no recorded hardware.
    pub unrecorded_hardware_pairs: usize,
    /// Unpaired comparisons: whether the two arms' recorded hardware differs.
    pub mixed_hardware_arms: bool,
    /// Mean difference of validation ppl.
    pub diff: f64,
    /// `paired t` or `welch`.
    pub test: &'static str,
    /// The margin tests, unadjusted.
    pub tests: MarginTest,
    /// Their p-values Holm-adjusted over the genes compared (each kind separately).
    pub adjusted: MarginP,
    /// The verdict's interval: the t interval of the test that made it (1 − 2α for the
    /// one-sided margin tests and TOST, 1 − α otherwise).
    pub ci: Interval,
    /// BCa bootstrap interval of the difference (from [`BCA_FROM`] runs per arm).
    pub bca: Option<resample::BootstrapCi>,
    /// Wilcoxon (paired) or Mann–Whitney two-sided p-value; diverged runs count as worse
    /// than every finished run.
    pub pvalue_rank: f64,
    /// The smallest two-sided p-value that rank test can reach with these sample sizes.
    pub rank_min_p: f64,
    /// Hedges' g.
    pub hedges_g: f64,
    /// A12 = P(gene ppl > baseline ppl) + ½ P(=): below ½ favours the gene.
    pub a12: f64,
    /// ASO for "the gene is better than the baseline".
    pub aso: AsoResult,
    /// Verdict.
    pub verdict: Verdict,
    /// The sd power is planned with: of the paired differences, or the pooled sd.
    pub sd: f64,
    /// Its 95 % chi-square interval (the planning figures are only as good as the sd).
    pub sd_ci: Interval,
    /// Smallest difference (ppl) the two-sided test detects with 80 % power at this n.
    pub mde_80: f64,
    /// Seeds (pairs, or runs per arm) for 80 % power to detect a difference of δ.
    pub seeds_for_margin_80: Option<u64>,
    /// Seeds for 80 % power that TOST shows equivalence within ±δ when the true
    /// difference is 0.
    pub seeds_for_equivalence_80: Option<u64>,
}

impl Comparison {
    /// The two-sided p-value (unadjusted).
    pub fn pvalue(&self) -> f64 {
        self.tests.p_diff
    }
    /// The two-sided p-value, Holm-adjusted.
    pub fn pvalue_holm(&self) -> f64 {
        self.adjusted.diff
    }
}

/// What the winner's curse and the shrinkage of the selected genes say.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Distinct genes the search evaluated.
    pub genes: usize,
    /// The gene × seed interaction sd the curse is computed with, and where it came from.
    pub sd: f64,
    /// `replicate stage` or `search stage`, or `pooled seed sd` when no shared seeds.
    pub sd_from: &'static str,
    /// Seeds behind a gene's search score (its score's noise is sd / √seeds).
    pub seeds_per_gene: usize,
    /// Expected inflation of the best of `genes` equal genes, E[max of `genes` standard
    /// normals] × sd / √seeds_per_gene.
    pub curse: f64,
    /// Per replicated gene: what the search selected on — its edge over the baseline
    /// (gene − baseline) on the search seeds both ran — against the same edge on the fresh
    /// seeds, and the shrinkage (fresh − search; positive: the search flattered it).
    pub shrinkage: Vec<Shrinkage>,
}

/// One replicated gene's edge over the baseline in the search and on fresh seeds.
#[derive(Debug, Clone)]
pub struct Shrinkage {
    /// Gene.
    pub gene: Gene,
    /// Mean of gene − baseline on the search seeds both ran (NaN: the baseline was not in
    /// the search on those seeds).
    pub search_edge: f64,
    /// Search seeds in that mean.
    pub search_seeds: usize,
    /// Mean of gene − baseline on the fresh (replicate) seeds both finished.
    pub fresh_edge: f64,
    /// fresh_edge − search_edge.
    pub shrinkage: f64,
}

/// Everything a report says.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Which rows were analysed (`replicate` stage, or all).
    pub scope: String,
    /// Whether genes are compared with verdicts (not in tune studies, whose best trials
    /// were selected on the very runs that would be tested).
    pub verdicts: bool,
    /// Leaderboard, best mean validation ppl first.
    pub lines: Vec<Line>,
    /// Comparisons with the baseline (empty when it is absent or there are no verdicts).
    pub comparisons: Vec<Comparison>,
    /// Genes vs seeds.
    pub noise: stats::noise::VarianceShare,
    /// Pooled within-gene (seed) sd of validation ppl.
    pub seed_sd: f64,
    /// The gene × seed interaction sd over the analysed genes' shared seeds.
    pub interaction_sd: Option<f64>,
    /// The search and its winner's curse (studies with a search stage).
    pub selection: Option<Selection>,
    /// Friedman over genes × shared seeds (diverged runs rank worst) with Conover's
    /// post-hoc, when at least 3 genes share one seed list.
    pub friedman: Option<(stats::kgroups::KTest, Vec<stats::kgroups::PairP>, Vec<Gene>)>,
    /// Tuning (tune studies).
    pub tune: Option<tune::TuneAnalysis>,
    /// Ablation (ablate studies).
    pub ablation: Option<ablation::AblationAnalysis>,
    /// The race (race studies; read from `race.parquet` by the report writer).
    pub race: Option<super::race::RaceAnalysis>,
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
    let tuning = tune::analyse(rows, &opts);
    let ablation = ablation::analyse(rows, &opts);
    let (scope, scoped, verdicts): (String, Vec<&RunRow>, bool) = if !replicate.is_empty() {
        ("the replicate stage".into(), replicate, true)
    } else if let Some(t) = &tuning {
        (
            "each gene's best tune trial (chosen on these very runs, so optimistic)".into(),
            tune::best_rows(rows, t),
            false,
        )
    } else {
        (
            "all runs".into(),
            // Hurdle rows are partial runs, not results.
            rows.iter().filter(|r| r.stage != Stage::Hurdle).collect(),
            true,
        )
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
    if let (Some(base), true) = (by_gene.get(&Gene::BASELINE.index()), verdicts) {
        for (idx, rs) in &by_gene {
            if *idx != Gene::BASELINE.index() {
                comparisons.push(compare_one(rs, base, &opts));
            }
        }
        let family: Vec<MarginP> = comparisons.iter().map(|c| c.tests.pvalues()).collect();
        for (c, adj) in comparisons.iter_mut().zip(margin::holm(&family)) {
            c.adjusted = adj;
            c.verdict = margin::verdict(&adj, c.diff, opts.alpha);
            c.ci = verdict_interval(&c.tests, c.verdict, opts.alpha);
        }
    }
    let groups: Vec<Vec<f64>> = by_gene.values().map(|rs| finished(rs)).collect();
    let noise = stats::noise::variance_share(&groups);
    let interaction_sd = shared_matrix(&by_gene)
        .and_then(|m| stats::noise::interaction_sd(&m).ok())
        .map(|i| i.sd)
        .filter(|s| s.is_finite());
    let selection = selection(rows, &scoped, interaction_sd, noise.ms_within.sqrt());
    let friedman = blocked_test(&by_gene);
    Analysis {
        scope,
        verdicts,
        lines,
        comparisons,
        friedman,
        seed_sd: noise.ms_within.sqrt(),
        interaction_sd,
        noise,
        selection,
        tune: tuning,
        ablation,
        race: None,
        unit_ids,
        per_gene_config,
        options: opts,
    }
}

/// The genes × seeds matrix of finished runs over the seeds every gene finished (`None`
/// with fewer than two genes or two such seeds).
fn shared_matrix(by_gene: &BTreeMap<usize, Vec<&RunRow>>) -> Option<Vec<Vec<f64>>> {
    if by_gene.len() < 2 {
        return None;
    }
    let mut common: Option<std::collections::BTreeSet<u64>> = None;
    for rs in by_gene.values() {
        let s: std::collections::BTreeSet<u64> = rs
            .iter()
            .filter(|r| r.val_ppl.is_some())
            .map(|r| r.seed)
            .collect();
        common = Some(match common {
            None => s,
            Some(c) => c.intersection(&s).copied().collect(),
        });
    }
    let common = common?;
    if common.len() < 2 {
        return None;
    }
    Some(
        by_gene
            .values()
            .map(|rs| {
                common
                    .iter()
                    .filter_map(|s| rs.iter().find(|r| r.seed == *s).and_then(|r| r.val_ppl))
                    .collect()
            })
            .collect(),
    )
}

/// The winner's curse of the search stage and the shrinkage of the genes it selected.
fn selection(
    rows: &[RunRow],
    scoped: &[&RunRow],
    interaction_sd: Option<f64>,
    pooled_sd: f64,
) -> Option<Selection> {
    let search: Vec<&RunRow> = rows.iter().filter(|r| r.stage == Stage::Search).collect();
    if search.is_empty() {
        return None;
    }
    let mut by_gene: BTreeMap<usize, Vec<&RunRow>> = BTreeMap::new();
    for r in &search {
        by_gene.entry(r.gene.index()).or_default().push(r);
    }
    // The search's own shared seeds, when it has at least two: its interaction sd.
    let (sd, sd_from) = match (
        interaction_sd.filter(|_| scoped.iter().all(|r| r.stage == Stage::Replicate)),
        shared_matrix(&by_gene)
            .and_then(|m| stats::noise::interaction_sd(&m).ok())
            .map(|i| i.sd)
            .filter(|s| s.is_finite()),
    ) {
        (Some(s), _) => (s, "the replicate stage's gene × seed interaction"),
        (None, Some(s)) => (s, "the search stage's gene × seed interaction"),
        (None, None) => (
            pooled_sd,
            "the pooled seed sd (no shared seeds to separate the gene × seed interaction)",
        ),
    };
    let genes = by_gene.len();
    let mut counts: Vec<usize> = by_gene.values().map(|v| v.len()).collect();
    counts.sort_unstable();
    let seeds_per_gene = counts[counts.len() / 2].max(1);
    let val = |rs: &[&RunRow], g: Gene, s: u64| {
        rs.iter()
            .find(|r| r.gene == g && r.seed == s)
            .and_then(|r| r.val_ppl)
    };
    let edge = |rs: &[&RunRow], g: Gene| -> (f64, usize) {
        let d: Vec<f64> = rs
            .iter()
            .filter(|r| r.gene == g)
            .filter_map(|r| Some(r.val_ppl? - val(rs, Gene::BASELINE, r.seed)?))
            .collect();
        (stats::mean(&d), d.len())
    };
    let shrinkage = scoped
        .iter()
        .filter(|r| r.stage == Stage::Replicate && r.gene != Gene::BASELINE)
        .map(|r| r.gene)
        .collect::<std::collections::BTreeSet<Gene>>()
        .into_iter()
        .filter(|g| by_gene.contains_key(&g.index()))
        .map(|g| {
            let (search_edge, search_seeds) = edge(&search, g);
            let (fresh_edge, _) = edge(scoped, g);
            Shrinkage {
                gene: g,
                search_edge,
                search_seeds,
                fresh_edge,
                shrinkage: fresh_edge - search_edge,
            }
        })
        .collect();
    Some(Selection {
        genes,
        sd,
        sd_from,
        seeds_per_gene,
        curse: stats::noise::winners_curse(genes, sd / (seeds_per_gene as f64).sqrt()),
        shrinkage,
    })
}

/// The t interval of the test that made `v`: 1 − 2α for the margin tests and TOST (their
/// one-sided α bounds), 1 − α for the two-sided difference test.
pub fn verdict_interval(t: &MarginTest, v: Verdict, alpha: f64) -> Interval {
    let level = match v {
        Verdict::BetterByMargin
        | Verdict::WorseByMargin
        | Verdict::Equivalent
        | Verdict::BetterWithinMargin
        | Verdict::WorseWithinMargin => 1.0 - 2.0 * alpha,
        Verdict::Better | Verdict::Worse | Verdict::Inconclusive => 1.0 - alpha,
    };
    let h = stats::t_ppf(0.5 + level / 2.0, t.df) * t.se;
    Interval {
        level,
        low: t.diff - h,
        high: t.diff + h,
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

/// Seeds for 80 % power, as a whole number (`None` when no n up to the solver's cap).
fn ceil(n: Option<f64>) -> Option<u64> {
    n.filter(|v| v.is_finite()).map(|v| v.ceil() as u64)
}

fn compare_one(rs: &[&RunRow], base: &[&RunRow], opts: &Options) -> Comparison {
    // Paired on the seeds both ran, when they share at least two; else unpaired.
    let base_of = |s: u64| base.iter().find(|b| b.seed == s);
    let shared: Vec<(&&RunRow, &&RunRow)> = rs
        .iter()
        .filter_map(|a| Some((a, base_of(a.seed)?)))
        .collect();
    let paired = shared.len() >= 2;
    // Hardware of the finished pairs the tests use (unpaired: of the two arms).
    let used: Vec<(&&RunRow, &&RunRow)> = shared
        .iter()
        .filter(|(a, b)| a.val_ppl.is_some() && b.val_ppl.is_some())
        .copied()
        .collect();
    let recorded = |r: &RunRow| !r.hardware.is_empty();
    let (mixed_hardware_pairs, unrecorded_hardware_pairs) = if paired {
        (
            used.iter()
                .filter(|(a, b)| recorded(a) && recorded(b) && a.hardware != b.hardware)
                .count(),
            used.iter()
                .filter(|(a, b)| !recorded(a) || !recorded(b))
                .count(),
        )
    } else {
        (0, 0)
    };
    let mixed_hardware_arms = !paired && {
        let arm = |v: &[&RunRow]| -> std::collections::BTreeSet<String> {
            v.iter()
                .filter(|r| r.val_ppl.is_some() && recorded(r))
                .map(|r| r.hardware.clone())
                .collect()
        };
        let (x, y) = (arm(rs), arm(base));
        !x.is_empty() && !y.is_empty() && x != y
    };
    let (rs, base): (Vec<&RunRow>, Vec<&RunRow>) = if paired {
        shared.iter().map(|(a, b)| (**a, **b)).unzip()
    } else {
        (rs.to_vec(), base.to_vec())
    };
    let (rs, base) = (rs.as_slice(), base.as_slice());
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
    let design = if paired {
        resample::Design::Paired
    } else {
        resample::Design::Independent
    };
    let level = 1.0 - opts.alpha;
    let tests = margin::margin_test(&x, &y, design, opts.margin, level).unwrap_or(MarginTest {
        margin: opts.margin,
        diff: f64::NAN,
        se: f64::NAN,
        df: f64::NAN,
        ci: Interval {
            level,
            low: f64::NAN,
            high: f64::NAN,
        },
        p_diff: f64::NAN,
        p_better: f64::NAN,
        p_worse: f64::NAN,
        p_tost: f64::NAN,
        p_tost_lower: f64::NAN,
        p_tost_upper: f64::NAN,
    });
    let (test, pvalue_rank, rank_min_p) = if paired {
        let w = rank::wilcoxon(&with_div(rs), &with_div(base), Alternative::TwoSided)
            .map(|w| w.pvalue)
            .unwrap_or(f64::NAN);
        (
            "paired t",
            w,
            exact::wilcoxon_min_p(rs.len(), Alternative::TwoSided),
        )
    } else {
        let m = rank::mann_whitney(&with_div(rs), &with_div(base), Alternative::TwoSided).pvalue;
        (
            "welch",
            m,
            exact::mann_whitney_min_p(rs.len(), base.len(), Alternative::TwoSided),
        )
    };
    let small = x.len().min(y.len()) < SMALL_SAMPLE;
    let bca = (x.len().min(y.len()) >= BCA_FROM).then(|| {
        resample::bootstrap_ci(
            &x,
            &y,
            design,
            &resample::mean_diff,
            resample::Spec {
                method: resample::Method::Bca,
                resamples: opts.resamples,
                level,
                seed: opts.seed,
            },
        )
    });
    let neg = |v: &[f64]| v.iter().map(|a| -a).collect::<Vec<_>>();
    let aso = if small {
        AsoResult::Undefined("fewer than 5 runs per arm".into())
    } else {
        let a = aso::aso(&neg(&x), &neg(&y), opts.alpha, 1000, 1000, opts.seed);
        if !a.epsilon_min.is_finite() {
            AsoResult::Undefined("the two samples' quantile functions coincide".into())
        } else if a.spread == 0.0 {
            AsoResult::Undefined(format!(
                "every bootstrap resample gives the same violation ratio, {}{}, so its bound carries no uncertainty",
                a.violation_ratio,
                if a.violation_ratio == 0.0 {
                    ": the quantile functions never cross"
                } else {
                    ""
                }
            ))
        } else {
            AsoResult::Defined(a.epsilon_min)
        }
    };
    // Power for the design as run, at the observed sd.
    let alt = Alternative::TwoSided;
    let (sd, mde, n_margin, n_equiv) = if paired {
        let d: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a - b).collect();
        let sd = stats::var(&d).sqrt();
        let n = d.len() as f64;
        (
            sd,
            power::solve_effect_paired(n, TARGET_POWER, opts.alpha, alt)
                .map_or(f64::NAN, |e| e * sd),
            ceil(power::solve_n_paired(
                opts.margin / sd,
                TARGET_POWER,
                opts.alpha,
                alt,
            )),
            power::tost_solve_n(design, opts.margin / sd, TARGET_POWER, opts.alpha, 0.0),
        )
    } else {
        let (nx, ny) = (x.len() as f64, y.len() as f64);
        let sd =
            (((nx - 1.0) * stats::var(&x) + (ny - 1.0) * stats::var(&y)) / (nx + ny - 2.0)).sqrt();
        let n = nx.min(ny);
        (
            sd,
            power::solve_effect(n, TARGET_POWER, opts.alpha, alt).map_or(f64::NAN, |e| e * sd),
            ceil(power::solve_n(
                opts.margin / sd,
                TARGET_POWER,
                opts.alpha,
                alt,
            )),
            power::tost_solve_n(design, opts.margin / sd, TARGET_POWER, opts.alpha, 0.0),
        )
    };
    let sd_df = if paired {
        x.len() as f64 - 1.0
    } else {
        (x.len() + y.len()) as f64 - 2.0
    };
    Comparison {
        sd_ci: stats::sd_interval(sd, sd_df, 0.95),
        gene: rs[0].gene,
        n: x.len(),
        n_baseline: y.len(),
        paired,
        mixed_hardware_pairs,
        unrecorded_hardware_pairs,
        mixed_hardware_arms,
        diff: tests.diff,
        test,
        adjusted: tests.pvalues(),
        ci: tests.ci,
        tests,
        bca,
        pvalue_rank,
        rank_min_p,
        hedges_g: effect::hedges_g(&x, &y),
        a12: effect::a12(&x, &y),
        aso,
        verdict: Verdict::Inconclusive,
        sd,
        mde_80: mde,
        seeds_for_margin_80: n_margin,
        seeds_for_equivalence_80: n_equiv,
    }
}
