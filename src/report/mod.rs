//! Significance reports rebuilt from a study's Parquet store alone (no training): a verdict
//! per gene against the baseline, the leaderboard, the comparisons with their statistics,
//! the noise, caveats generated from the data and a reproducibility block. Deterministic:
//! the bootstrap and ASO are seeded and nothing depends on the clock, so a rerun gives the
//! same bytes.
//!
//! Tune studies add a [`tune`] section, ablations an [`ablation`] section; [`plots`] draws
//! the SVGs written beside the report.

use crate::gene::Gene;
use crate::stats::{self, aso, effect, power, rank, resample, ttest, Alternative};
use crate::study::store::{write_parquet, CurveRow, GenerationRow, RunRow};
use anyhow::Result;
use polars::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

pub mod ablation;
pub mod plots;
pub mod tune;

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
    let replicate: Vec<&RunRow> = rows.iter().filter(|r| r.stage == "replicate").collect();
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
    let search: Vec<&RunRow> = rows.iter().filter(|r| r.stage == "search").collect();
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

fn f2(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "–".into()
    }
}

fn pfmt(p: f64) -> String {
    if !p.is_finite() {
        "–".into()
    } else if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

/// The verdict sentence of one comparison.
pub fn sentence(c: &Comparison, opts: &Options) -> String {
    let how = if c.paired {
        format!("{} seed-paired runs each", c.n)
    } else {
        format!("{} vs {} runs", c.n, c.n_baseline)
    };
    let base = match c.verdict {
        // The interval of the improvement (better) or of the deficit (worse), both positive.
        Verdict::Better | Verdict::Worse => {
            let (lo, hi) = if c.verdict == Verdict::Better {
                (-c.ci.high, -c.ci.low)
            } else {
                (c.ci.low, c.ci.high)
            };
            format!(
                "`{}` is {} than the baseline by {:.2} ppl (95 % CI {:.2} to {:.2}; Holm-adjusted p = {}; {how}).",
                c.gene,
                if c.verdict == Verdict::Better { "better" } else { "worse" },
                c.diff.abs(),
                lo,
                hi,
                pfmt(c.pvalue_holm),
            )
        }
        Verdict::NoDifference => format!(
            "`{}`: no detectable difference from the baseline (difference {} ppl, 95 % CI {} to {}; Holm-adjusted p = {}; {how}){}.",
            c.gene,
            f2(c.diff),
            f2(c.ci.low),
            f2(c.ci.high),
            pfmt(c.pvalue_holm),
            match c.seeds_for_80 {
                Some(n) => format!(
                    "; about {n} seeds per arm would detect the observed {:.2} ppl with 80 % power",
                    c.diff.abs()
                ),
                None => String::new(),
            }
        ),
    };
    let note = if c.verdict == Verdict::NoDifference
        && c.diff.abs() < opts.threshold
        && c.pvalue_holm <= opts.alpha
    {
        " Significant after correction, but smaller than the practical threshold."
    } else {
        ""
    };
    base + note
}

/// Facts for the reproducibility block.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// Study name.
    pub study: String,
    /// Command that produced the store.
    pub command: String,
    /// SHA-256 of the study file.
    pub study_sha256: String,
}

/// The Markdown report.
/// Plot files beside the report, by kind (`seeds`, `curves`, `ga`, `search-vs`, `tune`,
/// `ablation`).
pub type PlotFiles = BTreeMap<&'static str, String>;

/// The Markdown report; `plots` names the SVG files written beside it.
pub fn markdown(a: &Analysis, rows: &[RunRow], prov: &Provenance, plots: &PlotFiles) -> String {
    let o = &a.options;
    let mut s = String::new();
    let _ = writeln!(s, "# Study `{}`\n", prov.study);
    let _ = writeln!(s, "## Verdict\n");
    if let Some(ab) = &a.ablation {
        for line in ablation::verdict(ab, o.alpha) {
            let _ = writeln!(s, "- {line}");
        }
        let _ = writeln!(s);
    }
    if a.comparisons.is_empty() && a.ablation.is_none() {
        let _ = writeln!(
            s,
            "The baseline `{}` is not among the analysed runs, so no gene is compared with it.\n",
            Gene::BASELINE
        );
    }
    for c in &a.comparisons {
        let _ = writeln!(s, "- {}", sentence(c, o));
    }
    if !a.comparisons.is_empty() {
        let _ = writeln!(
            s,
            "\nBetter/worse means significant after Holm's correction over the {} comparisons (α = {}) **and** at least {} ppl apart; lower perplexity is better. Analysed: {}.\n",
            a.comparisons.len(),
            o.alpha,
            o.threshold,
            a.scope
        );
    }
    let _ = writeln!(s, "## Leaderboard (validation perplexity)\n");
    let _ = writeln!(
        s,
        "| gene | n | diverged | val ppl mean ± sd | 95 % CI | test ppl | params (non-emb.) | tokens/s |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for l in &a.lines {
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} ± {} | {} – {} | {} | {} | {:.0} |",
            l.gene,
            l.n,
            l.diverged,
            f2(l.val.mean),
            f2(l.val.sd),
            f2(l.val.ci.low),
            f2(l.val.ci.high),
            f2(l.test_mean),
            l.params_nonembed,
            l.tokens_per_s
        );
    }
    if let Some(p) = plots.get("seeds") {
        let _ = writeln!(s, "\n![Validation ppl per seed]({p})");
    }
    if !a.per_gene_config.is_empty() {
        let same = a.per_gene_config.windows(2).all(|w| w[0].1 == w[1].1);
        let _ = writeln!(
            s,
            "\n{}\n\n| gene | lr | warmup | weight decay | β₂ |\n|---|---:|---:|---:|---:|",
            if same {
                "Every gene trained with the same hyperparameters:"
            } else {
                "The genes trained with different hyperparameters (each its own tuned values):"
            }
        );
        for (g, c) in &a.per_gene_config {
            let _ = writeln!(
                s,
                "| `{g}` | {} | {} | {} | {} |",
                c.lr, c.warmup, c.weight_decay, c.beta2
            );
        }
    }
    if !a.comparisons.is_empty() {
        let _ = writeln!(s, "\n## Comparisons against `{}`\n", Gene::BASELINE);
        let _ = writeln!(
            s,
            "| gene | diff (ppl) | BCa 95 % CI | test | p | Holm p | rank p | Hedges' g | A12 | ASO ε_min | verdict | seeds for 80 % |\n|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|"
        );
        for c in &a.comparisons {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} – {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.gene,
                f2(c.diff),
                f2(c.ci.low),
                f2(c.ci.high),
                c.test,
                pfmt(c.pvalue),
                pfmt(c.pvalue_holm),
                pfmt(c.pvalue_rank),
                f2(c.hedges_g),
                f2(c.a12),
                f2(c.aso_epsilon_min),
                c.verdict.as_str(),
                c.seeds_for_80.map_or("–".into(), |n| n.to_string())
            );
        }
        let _ = writeln!(
            s,
            "\nDifferences are gene − baseline (negative: the gene is better). BCa intervals: {} resamples, seed {}. The rank test is Wilcoxon (paired) or Mann–Whitney; it counts a diverged run as worse than every finished run, while means, t-tests, g, A12 and ASO use finished runs only. ASO ε_min < 0.2 means the gene almost stochastically dominates the baseline.",
            o.resamples, o.seed
        );
    }
    if let Some((f, post, genes)) = &a.friedman {
        let _ = writeln!(s, "\n## All genes together\n");
        let _ = writeln!(
            s,
            "Friedman test over {} genes × {} shared seeds (diverged runs rank worst): χ²({}) = {}, p = {}.",
            genes.len(),
            a.lines.first().map_or(0, |l| l.n),
            f.df_between,
            f2(f.statistic),
            pfmt(f.pvalue),
        );
        if post.is_empty() {
            let _ = writeln!(
                s,
                "\nEvery seed ranks the genes in the same order, however small the gaps; Conover's post-hoc degenerates then (its variance term is 0) and is not shown. Judge pairs by the comparisons above."
            );
        } else {
            let _ = writeln!(
                s,
                "Conover's post-hoc, Holm-adjusted over the {} pairs:\n\n| gene | gene | Holm p | differ |\n|---|---|---:|---|",
                post.len()
            );
        }
        for p in post {
            let _ = writeln!(
                s,
                "| `{}` | `{}` | {} | {} |",
                genes[p.a],
                genes[p.b],
                pfmt(p.pvalue),
                if p.pvalue <= o.alpha { "yes" } else { "no" }
            );
        }
    }
    if let Some(t) = &a.tune {
        s.push_str(&tune::markdown(t, plots.get("tune").map(|x| x.as_str())));
    }
    if let Some(ab) = &a.ablation {
        s.push_str(&ablation::markdown(
            ab,
            o.alpha,
            plots.get("ablation").map(|x| x.as_str()),
        ));
    }
    if let Some(p) = plots.get("curves") {
        let _ = writeln!(
            s,
            "\n## Learning curves\n\nMean over seeds with a ±1 sd band, analysed runs only.\n\n![Learning curves]({p})"
        );
    }
    if let Some(p) = plots.get("search-vs") {
        let _ = writeln!(
            s,
            "\n## Search against another search\n\nBest fitness so far against runs trained, for this study and the one given with `--compare-search`; compare them at equal budget (the shorter run count).\n\n![Search comparison]({p})"
        );
    }
    if let Some(p) = plots.get("ga") {
        let _ = writeln!(
            s,
            "\n## Search progress\n\nBest and mean fitness (mean validation ppl) per generation; every individual is a dot, elites are triangles.\n\n![GA progress]({p})"
        );
    }
    let _ = writeln!(s, "\n## Noise\n");
    let _ = writeln!(
        s,
        "Pooled seed sd of validation ppl: {} ppl. Share of variance between genes (one-way random effects): {}; ICC(1) = {}.",
        f2(a.seed_sd),
        f2(a.noise.gene_share),
        f2(a.noise.icc)
    );
    if let Some((n, curse)) = a.search {
        let _ = writeln!(
            s,
            "\nThe search evaluated {n} distinct genes. Picking the best of {n} single runs of *equal* genes at this seed sd would look better than the truth by {} ppl in expectation (the winner's curse); compare the search's raw improvement with that.",
            f2(curse)
        );
    }
    let _ = writeln!(s, "\n## Caveats\n");
    let min_n = a.lines.iter().map(|l| l.n).min().unwrap_or(0);
    if min_n < 5 {
        let _ = writeln!(
            s,
            "- Some genes have fewer than 5 runs (minimum {min_n}): t intervals are wide, bootstrap intervals from so few runs are too narrow to trust (they cannot reach beyond the observed spread), and rank tests have little power."
        );
    }
    let div: usize = a.lines.iter().map(|l| l.diverged).sum();
    if div > 0 {
        let _ = writeln!(
            s,
            "- {div} run(s) diverged: excluded from means and t-tests, counted as worst in rank tests."
        );
    } else {
        let _ = writeln!(s, "- No run diverged.");
    }
    let _ = writeln!(
        s,
        "- Genes were selected on validation perplexity; test perplexity is reported alongside and was not used for selection."
    );
    if let Some(r) = rows.first() {
        let tokens = r.config.steps * r.config.batch_size * r.config.seq_len;
        let _ = writeln!(
            s,
            "- Scale: preset `{}`, {} steps × {} windows × {} tokens = {} training tokens per run, d_model {}, {} layers, vocabulary cap {}.",
            r.preset,
            r.config.steps,
            r.config.batch_size,
            r.config.seq_len,
            tokens,
            r.config.d_model,
            r.config.n_layers,
            r.config.vocab_cap.map_or("none (33,278 words)".into(), |v| v.to_string())
        );
    }
    let _ = writeln!(s, "\n## Reproducibility\n");
    let commits = distinct(rows, |r| &r.git_commit);
    let devices = distinct(rows, |r| &r.device);
    let fps = distinct(rows, |r| &r.data_fingerprint);
    let _ = writeln!(s, "- Command: `{}`", prov.command);
    let _ = writeln!(s, "- Study file SHA-256: `{}`", prov.study_sha256);
    let _ = writeln!(
        s,
        "- evoattn {} (engine version {}), runs trained at commit(s) {}",
        rows.first().map_or("?", |r| r.evoattn_version.as_str()),
        rows.first().map_or(0, |r| r.engine_version),
        commits
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "- Report written by commit `{}`",
        crate::study::exec::GIT_COMMIT
    );
    let _ = writeln!(s, "- Device(s): {}", devices.join(", "));
    let _ = writeln!(
        s,
        "- Data fingerprint(s) (SHA-256 of the WikiText-2 files and vocabulary cap): {}",
        fps.iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    s
}

/// The distinct values of a text field of `rows`, sorted.
fn distinct<'r>(rows: &'r [RunRow], f: impl Fn(&'r RunRow) -> &'r String) -> Vec<&'r str> {
    let mut v: Vec<&str> = rows.iter().map(|r| f(r).as_str()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// `tests.parquet`: every comparison with all its statistics.
pub fn tests_frame(a: &Analysis) -> Result<DataFrame> {
    let c = &a.comparisons;
    let f = |g: &dyn Fn(&Comparison) -> f64| c.iter().map(g).collect::<Vec<f64>>();
    Ok(DataFrame::new_infer_height(vec![
        Column::new(
            "gene".into(),
            c.iter().map(|x| x.gene.to_string()).collect::<Vec<_>>(),
        ),
        Column::new("baseline".into(), vec![Gene::BASELINE.to_string(); c.len()]),
        Column::new("n".into(), c.iter().map(|x| x.n as i64).collect::<Vec<_>>()),
        Column::new(
            "n_baseline".into(),
            c.iter().map(|x| x.n_baseline as i64).collect::<Vec<_>>(),
        ),
        Column::new(
            "paired".into(),
            c.iter().map(|x| x.paired).collect::<Vec<_>>(),
        ),
        Column::new("diff".into(), f(&|x| x.diff)),
        Column::new("ci_low".into(), f(&|x| x.ci.low)),
        Column::new("ci_high".into(), f(&|x| x.ci.high)),
        Column::new(
            "test".into(),
            c.iter().map(|x| x.test.to_string()).collect::<Vec<_>>(),
        ),
        Column::new("pvalue".into(), f(&|x| x.pvalue)),
        Column::new("pvalue_holm".into(), f(&|x| x.pvalue_holm)),
        Column::new("pvalue_rank".into(), f(&|x| x.pvalue_rank)),
        Column::new("hedges_g".into(), f(&|x| x.hedges_g)),
        Column::new("a12".into(), f(&|x| x.a12)),
        Column::new("aso_epsilon_min".into(), f(&|x| x.aso_epsilon_min)),
        Column::new(
            "verdict".into(),
            c.iter()
                .map(|x| x.verdict.as_str().to_string())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "seeds_for_80".into(),
            c.iter()
                .map(|x| x.seeds_for_80.map(|n| n as i64))
                .collect::<Vec<Option<i64>>>(),
        ),
    ])?)
}

/// Learning curves of the analysed runs: validation ppl when every run has at least two
/// validation points, training loss otherwise.
fn curves_chart(a: &Analysis, rows: &[RunRow], curves: &[CurveRow]) -> Option<plots::LineChart> {
    let mut by_unit: BTreeMap<&str, Vec<&CurveRow>> = BTreeMap::new();
    for c in curves.iter().filter(|c| a.unit_ids.contains(&c.unit_id)) {
        by_unit.entry(c.unit_id.as_str()).or_default().push(c);
    }
    if by_unit.is_empty() {
        return None;
    }
    let use_val = by_unit
        .values()
        .all(|v| v.iter().filter(|c| c.val_ppl.is_some()).count() >= 2);
    let use_loss = by_unit.values().all(|v| v.len() >= 2);
    if !use_val && !use_loss {
        return None;
    }
    let gene_of: BTreeMap<&str, Gene> = rows.iter().map(|r| (r.unit_id.as_str(), r.gene)).collect();
    let mut per_gene: BTreeMap<usize, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for (u, cs) in &by_unit {
        let Some(g) = gene_of.get(u) else { continue };
        for c in cs {
            let v = if use_val {
                c.val_ppl
            } else {
                Some(c.train_loss)
            };
            if let Some(v) = v.filter(|v| v.is_finite()) {
                per_gene
                    .entry(g.index())
                    .or_default()
                    .entry(c.step)
                    .or_default()
                    .push(v);
            }
        }
    }
    let series = per_gene
        .iter()
        .enumerate()
        .map(|(i, (g, steps))| {
            let pts: Vec<(f64, f64, f64)> = steps
                .iter()
                .map(|(st, v)| {
                    let (m, sd) = stats::mean_sd(v);
                    (*st as f64, m, if sd.is_finite() { sd } else { 0.0 })
                })
                .collect();
            plots::Series {
                label: Gene::from_index(*g).map_or_else(String::new, |g| g.to_string()),
                points: pts.iter().map(|p| (p.0, p.1)).collect(),
                band: pts.iter().map(|p| (p.0, p.1 - p.2, p.1 + p.2)).collect(),
                mark: plots::Mark::LineDots,
                color: i,
            }
        })
        .collect();
    Some(plots::LineChart {
        title: if use_val {
            "Validation perplexity during training".into()
        } else {
            "Training loss during training".into()
        },
        x_desc: "optimiser step".into(),
        y_desc: if use_val {
            "validation ppl".into()
        } else {
            "training loss".into()
        },
        x_categories: vec![],
        integer_x: true,
        series,
    })
}

/// GA progress: best and mean finite fitness per generation, every individual, elites.
fn ga_chart(gens: &[GenerationRow]) -> Option<plots::LineChart> {
    if gens.is_empty() {
        return None;
    }
    let last = gens.iter().map(|g| g.generation).max()?;
    let per: Vec<Vec<f64>> = (0..=last)
        .map(|k| {
            gens.iter()
                .filter(|g| g.generation == k && g.fitness.is_finite())
                .map(|g| g.fitness)
                .collect()
        })
        .collect();
    let pt = |f: &dyn Fn(&[f64]) -> f64| -> Vec<(f64, f64)> {
        per.iter()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k as f64, f(v)))
            .collect()
    };
    let reevaluated = gens.iter().any(|g| g.operator == "elite" && g.n_seeds > 1);
    let dots = |elite: bool| -> Vec<(f64, f64)> {
        gens.iter()
            .filter(|g| (g.operator == "elite") == elite && g.fitness.is_finite())
            .map(|g| (g.generation as f64, g.fitness))
            .collect()
    };
    Some(plots::LineChart {
        title: "GA progress".into(),
        x_desc: "generation".into(),
        y_desc: "fitness (mean val ppl)".into(),
        x_categories: (0..=last).map(|k| k.to_string()).collect(),
        integer_x: false,
        series: vec![
            plots::Series {
                label: String::new(),
                points: dots(false),
                band: vec![],
                mark: plots::Mark::Dots,
                color: 7,
            },
            plots::Series {
                label: if reevaluated {
                    "re-evaluated elite".into()
                } else {
                    "elite".into()
                },
                points: dots(true),
                band: vec![],
                mark: plots::Mark::Triangles,
                color: 3,
            },
            plots::Series {
                label: "best".into(),
                points: pt(&|v| v.iter().copied().fold(f64::INFINITY, f64::min)),
                band: vec![],
                mark: plots::Mark::LineDots,
                color: 0,
            },
            plots::Series {
                label: "mean".into(),
                points: pt(&|v| stats::mean(v)),
                band: vec![],
                mark: plots::Mark::LineDots,
                color: 1,
            },
        ],
    })
}

/// Best fitness so far (mean validation ppl of a gene over its runs so far; +∞ while one
/// diverged) after each run of the `search` stage, in the store's order (the plan's).
pub fn best_so_far(rows: &[RunRow]) -> Vec<(f64, f64)> {
    let mut seen: BTreeMap<usize, Vec<Option<f64>>> = BTreeMap::new();
    let mut out = Vec::new();
    for (k, r) in rows.iter().filter(|r| r.stage == "search").enumerate() {
        seen.entry(r.gene.index()).or_default().push(r.val_ppl);
        let best = seen
            .values()
            .map(|v| crate::search::fitness(v))
            .fold(f64::INFINITY, f64::min);
        out.push(((k + 1) as f64, best));
    }
    out
}

/// Writes `report.md` at `out` (with its SVG plots beside it, named after it) and
/// `tests.parquet` in `store_dir`.
pub fn write(rows: &[RunRow], prov: &Provenance, out: &Path, store_dir: &Path) -> Result<Analysis> {
    write_with(rows, prov, out, store_dir, None)
}

/// [`write`], plus a plot of this study's search against another search (`compare`: its
/// name and rows) at equal budget.
pub fn write_with(
    rows: &[RunRow],
    prov: &Provenance,
    out: &Path,
    store_dir: &Path,
    compare: Option<(&str, &[RunRow])>,
) -> Result<Analysis> {
    use crate::study::store::{
        curves_from_frame, generations_from_frame, read_parquet, write_atomic,
    };
    let a = analyse(rows, Options::default());
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let stem = out
        .file_stem()
        .map_or_else(|| "report".into(), |s| s.to_string_lossy().to_string());
    let curves = match store_dir.join("curves.parquet") {
        p if p.exists() => curves_from_frame(&read_parquet(&p)?)?,
        _ => vec![],
    };
    let gens = match store_dir.join("generations.parquet") {
        p if p.exists() => generations_from_frame(&read_parquet(&p)?)?,
        _ => vec![],
    };
    let mut svgs: Vec<(&'static str, String)> = Vec::new();
    let by_line: Vec<(String, Vec<f64>)> = a
        .lines
        .iter()
        .map(|l| {
            let v = rows
                .iter()
                .filter(|r| r.gene == l.gene && a.unit_ids.contains(&r.unit_id))
                .filter_map(|r| r.val_ppl)
                .collect();
            (l.gene.to_string(), v)
        })
        .collect();
    if by_line.len() <= 40 {
        svgs.push((
            "seeds",
            plots::strip_chart(
                "Validation ppl per seed (box: quartiles)",
                "validation ppl",
                &by_line,
            )?,
        ));
    }
    if let Some(c) = curves_chart(&a, rows, &curves) {
        svgs.push(("curves", plots::line_chart(&c)?));
    }
    if let Some(c) = ga_chart(&gens) {
        svgs.push(("ga", plots::line_chart(&c)?));
    }
    if let Some((name, other)) = compare {
        let (mine, theirs) = (best_so_far(rows), best_so_far(other));
        if !mine.is_empty() && !theirs.is_empty() {
            let budget = mine.len().min(theirs.len());
            let series = [(prov.study.as_str(), &mine), (name, &theirs)]
                .iter()
                .enumerate()
                .map(|(i, (n, v))| plots::Series {
                    label: n.to_string(),
                    points: v.iter().copied().filter(|p| p.1.is_finite()).collect(),
                    band: vec![],
                    mark: plots::Mark::Line,
                    color: i,
                })
                .collect();
            svgs.push((
                "search-vs",
                plots::line_chart(&plots::LineChart {
                    title: format!(
                        "Best fitness so far (equal budget: first {budget} runs of each)"
                    ),
                    x_desc: "runs trained".into(),
                    y_desc: "best mean val ppl so far".into(),
                    x_categories: vec![],
                    integer_x: true,
                    series,
                })?,
            ));
        }
    }
    if let Some(t) = &a.tune {
        svgs.push(("tune", plots::line_chart(&tune::chart(t))?));
    }
    if let Some(ab) = &a.ablation {
        svgs.push(("ablation", plots::line_chart(&ablation::chart(ab))?));
    }
    let mut files = PlotFiles::new();
    for (kind, svg) in svgs {
        let name = format!("{stem}.{kind}.svg");
        write_atomic(&dir.join(&name), |f| {
            std::io::Write::write_all(f, svg.as_bytes()).map_err(Into::into)
        })?;
        files.insert(kind, name);
    }
    let md = markdown(&a, rows, prov, &files);
    write_atomic(out, |f| {
        std::io::Write::write_all(f, md.as_bytes()).map_err(Into::into)
    })?;
    write_parquet(&store_dir.join("tests.parquet"), &mut tests_frame(&a)?)?;
    Ok(a)
}
