//! The ablation section: a factorial over gene components in which every cell trains on
//! the same seeds, analysed as it was run — with seed as a block.
//!
//! - ANOVA, type II, `y ~ C(seed) + C(A)*C(B)(*C(C))` (statsmodels `anova_lm(typ=2)`), one
//!   to three factors; the unblocked fit is shown beside it for comparison.
//! - The repeated-measures ANOVA (statsmodels `AnovaRM`, subject = seed) with the
//!   Greenhouse–Geisser ε and corrected p, over the seeds on which every cell finished.
//! - Marginal means with intervals over seeds: per seed, the level's mean over the other
//!   factors' cells; the t interval of those per-seed means (so the interval carries the
//!   seed-to-seed variance, on n_seeds − 1 df).
//! - Level comparisons: contrasts of estimated marginal means on the blocked fit (its
//!   residual error and df, as statsmodels OLS `t_test`), Holm within each factor; and the
//!   same contrasts on the factor's own error term, the seed × factor interaction of the
//!   per-seed level means (as the repeated-measures ANOVA tests the factor), which does not
//!   assume that every seed × effect interaction has the same variance.
//! - The verdict lines use the repeated-measures ANOVA (each effect against its own seed ×
//!   effect error, Greenhouse–Geisser-corrected) and the split-error contrasts when every
//!   cell has enough complete seeds; the single-error blocked fit otherwise.
//! - A blocked rank test per factor on the per-seed level means: Friedman (three levels or
//!   more) or Wilcoxon (two); a diverged cell makes its level rank worst on that seed.

use super::analysis::Options;
use super::plots::{LineChart, Mark, Series};
use super::{f2, pfmt};
use crate::gene::Component;
use crate::record::{RunRow, Stage};
use crate::stats::anova::{self, Factor as AFactor, Table};
use crate::stats::anova_rm::{anova_rm, RmTerm};
use crate::stats::{self, kgroups, multitest, rank, Alternative};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A level's marginal mean.
#[derive(Debug, Clone)]
pub struct Marginal {
    /// Mean over its finished runs.
    pub mean: f64,
    /// Finished runs.
    pub runs: usize,
    /// Seeds whose every cell of this level finished (the interval's n).
    pub seeds: usize,
    /// t interval (95 %) of the per-seed level means.
    pub ci: stats::Interval,
}

/// A blocked rank test of one factor over seeds.
#[derive(Debug, Clone)]
pub struct RankTest {
    /// `Friedman` or `Wilcoxon`.
    pub name: &'static str,
    /// Statistic.
    pub statistic: f64,
    /// p-value.
    pub pvalue: f64,
    /// Seeds (blocks).
    pub seeds: usize,
}

/// One factor (a gene component with at least two levels among the runs).
#[derive(Debug, Clone)]
pub struct Factor {
    /// The component.
    pub component: Component,
    /// Component name.
    pub name: String,
    /// Levels in order of first appearance (the study file's order).
    pub levels: Vec<String>,
    /// Marginal mean per level.
    pub marginal: Vec<Marginal>,
    /// Rank test over seeds.
    pub rank: Option<RankTest>,
    /// Contrasts of its levels on the blocked fit, Holm-adjusted within the factor.
    pub pairs: Vec<LevelPair>,
}

/// Levels `a` and `b` of a factor: a contrast of estimated marginal means on the blocked fit.
#[derive(Debug, Clone)]
pub struct LevelPair {
    /// Level index (the x of x − y).
    pub a: usize,
    /// Level index.
    pub b: usize,
    /// EMM(a) − EMM(b).
    pub diff: f64,
    /// Its standard error from the blocked fit.
    pub se: f64,
    /// The fit's residual df.
    pub df: f64,
    /// Two-sided p-value.
    pub pvalue: f64,
    /// Holm-adjusted within the factor.
    pub pvalue_holm: f64,
    /// The same contrast on the factor's own error (seed × factor interaction of the
    /// per-seed level means, over complete seeds): (se, df, p, Holm p).
    pub split: Option<(f64, f64, f64, f64)>,
}

/// The ablation analysis.
#[derive(Debug, Clone)]
pub struct AblationAnalysis {
    /// Factors in gene-component order.
    pub factors: Vec<Factor>,
    /// ANOVA with seed as a block (None when it cannot be fitted, with the reason).
    pub blocked: Result<Table, String>,
    /// ANOVA without the block, for comparison.
    pub unblocked: Result<Table, String>,
    /// Repeated-measures ANOVA over the seeds on which every cell finished, and how many.
    pub rm: Result<(Vec<RmTerm>, usize), String>,
    /// Cell statistics (factor 0 level, factor 1 level; averaged over a third factor) →
    /// (mean, sd, n finished, n runs).
    pub cells: BTreeMap<(usize, usize), (f64, f64, usize, usize)>,
    /// Diverged runs (left out of means and the ANOVA).
    pub diverged: usize,
    /// Distinct seeds.
    pub seeds: usize,
}

fn appearance(rows: &[&RunRow], comp: Component) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in rows {
        let l = r.gene.get(comp).to_string();
        if !v.contains(&l) {
            v.push(l);
        }
    }
    v
}

/// The ablation analysis of the `ablate` rows (`None` without them or without a factor).
pub fn analyse(rows: &[RunRow], opts: &Options) -> Option<AblationAnalysis> {
    let ab: Vec<&RunRow> = rows.iter().filter(|r| r.stage == Stage::Ablate).collect();
    if ab.is_empty() {
        return None;
    }
    let comps: Vec<Component> = Component::ALL
        .into_iter()
        .filter(|&c| appearance(&ab, c).len() > 1)
        .collect();
    if comps.is_empty() {
        return None;
    }
    let level_of = |r: &RunRow, c: Component| r.gene.get(c).to_string();
    let fin: Vec<&RunRow> = ab.iter().copied().filter(|r| r.val_ppl.is_some()).collect();
    let y: Vec<f64> = fin.iter().filter_map(|r| r.val_ppl).collect();
    let cols: Vec<Vec<String>> = comps
        .iter()
        .map(|&c| fin.iter().map(|r| level_of(r, c)).collect())
        .collect();
    let seed_col: Vec<String> = fin.iter().map(|r| r.seed.to_string()).collect();
    let afactors: Vec<AFactor> = comps
        .iter()
        .zip(&cols)
        .map(|(c, v)| AFactor {
            name: c.as_str(),
            values: v,
        })
        .collect();
    let block = AFactor {
        name: "seed",
        values: &seed_col,
    };
    let fit = anova::Fit::new(&y, &afactors, Some(block)).map_err(|e| e.to_string());
    let blocked = fit.as_ref().map(|f| f.anova()).map_err(|e| e.clone());
    let unblocked = anova::anova(&y, &afactors, None).map_err(|e| e.to_string());
    let mut seeds: Vec<u64> = ab.iter().map(|r| r.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    // Repeated measures: the seeds on which every cell finished.
    let n_cells = ab
        .iter()
        .map(|r| r.gene)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let complete: Vec<u64> = seeds
        .iter()
        .copied()
        .filter(|s| fin.iter().filter(|r| r.seed == *s).count() == n_cells)
        .collect();
    let rm = {
        let rs: Vec<&&RunRow> = fin.iter().filter(|r| complete.contains(&r.seed)).collect();
        let y: Vec<f64> = rs.iter().filter_map(|r| r.val_ppl).collect();
        let subj: Vec<String> = rs.iter().map(|r| r.seed.to_string()).collect();
        let cols: Vec<Vec<String>> = comps
            .iter()
            .map(|&c| rs.iter().map(|r| level_of(r, c)).collect())
            .collect();
        let within: Vec<AFactor> = comps
            .iter()
            .zip(&cols)
            .map(|(c, v)| AFactor {
                name: c.as_str(),
                values: v,
            })
            .collect();
        anova_rm(&y, &subj, &within)
            .map(|t| (t, complete.len()))
            .map_err(|e| e.to_string())
    };
    let worst = y.iter().copied().fold(0.0f64, f64::max) * 1e3 + 1e6;
    let mut factors = Vec::new();
    for &comp in &comps {
        let levels = appearance(&ab, comp);
        // Per seed and level: the mean over that level's cells (worst when one diverged).
        let per_seed: Vec<BTreeMap<u64, (f64, bool)>> = levels
            .iter()
            .map(|l| {
                let mut m: BTreeMap<u64, Vec<Option<f64>>> = BTreeMap::new();
                for r in ab.iter().filter(|r| level_of(r, comp) == *l) {
                    m.entry(r.seed).or_default().push(r.val_ppl);
                }
                m.into_iter()
                    .map(|(s, v)| {
                        let ok = v.iter().all(|x| x.is_some());
                        let vals: Vec<f64> = v.iter().map(|x| x.unwrap_or(worst)).collect();
                        (s, (stats::mean(&vals), ok))
                    })
                    .collect()
            })
            .collect();
        let marginal = levels
            .iter()
            .zip(&per_seed)
            .map(|(l, ps)| {
                let v: Vec<f64> = fin
                    .iter()
                    .filter(|r| level_of(r, comp) == *l)
                    .filter_map(|r| r.val_ppl)
                    .collect();
                let means: Vec<f64> = ps.values().filter(|m| m.1).map(|m| m.0).collect();
                Marginal {
                    mean: stats::mean(&v),
                    runs: v.len(),
                    seeds: means.len(),
                    ci: stats::describe(&means, 0.95).ci,
                }
            })
            .collect();
        let rank = rank_test(&per_seed);
        let mut pairs = Vec::new();
        if let Ok(fit) = &fit {
            for i in 0..levels.len() {
                for j in i + 1..levels.len() {
                    if let Ok(c) = fit.contrast(comp.as_str(), &levels[i], &levels[j]) {
                        pairs.push(LevelPair {
                            a: i,
                            b: j,
                            diff: c.estimate,
                            se: c.se,
                            df: c.df,
                            pvalue: c.pvalue,
                            pvalue_holm: f64::NAN,
                            split: None,
                        });
                    }
                }
            }
        }
        let ps: Vec<f64> = pairs.iter().map(|p| p.pvalue).collect();
        if !ps.is_empty() && ps.iter().all(|p| p.is_finite()) {
            if let Ok(adj) = multitest::adjust(&ps, multitest::Method::Holm) {
                for (p, q) in pairs.iter_mut().zip(adj) {
                    p.pvalue_holm = q;
                }
            }
        }
        split_contrasts(&mut pairs, &per_seed);
        factors.push(Factor {
            component: comp,
            name: comp.to_string(),
            levels,
            marginal,
            rank,
            pairs,
        });
    }
    let _ = opts;
    let mut cells = BTreeMap::new();
    let f0 = &factors[0];
    let f1 = factors.get(1);
    for (i, l0) in f0.levels.iter().enumerate() {
        let n1 = f1.map_or(1, |f| f.levels.len());
        for j in 0..n1 {
            let rs: Vec<&&RunRow> = ab
                .iter()
                .filter(|r| {
                    level_of(r, f0.component) == *l0
                        && f1.is_none_or(|f| level_of(r, f.component) == f.levels[j])
                })
                .collect();
            let v: Vec<f64> = rs.iter().filter_map(|r| r.val_ppl).collect();
            let (m, sd) = crate::stats::mean_sd(&v);
            cells.insert((i, j), (m, sd, v.len(), rs.len()));
        }
    }
    Some(AblationAnalysis {
        diverged: ab.len() - fin.len(),
        factors,
        blocked,
        unblocked,
        rm,
        cells,
        seeds: seeds.len(),
    })
}

/// The contrasts of `pairs` on the factor's own error: the residual mean square of the
/// additive seed + level model over the per-seed level means of the seeds on which every
/// level's cells all finished, df (S − 1)(k − 1); se of a difference of two level means
/// √(2·MS/S). Holm over the factor's pairs.
fn split_contrasts(pairs: &mut [LevelPair], per_seed: &[BTreeMap<u64, (f64, bool)>]) {
    let Some(first) = per_seed.first() else {
        return;
    };
    let seeds: Vec<u64> = first
        .keys()
        .copied()
        .filter(|s| per_seed.iter().all(|m| m.get(s).is_some_and(|v| v.1)))
        .collect();
    if seeds.len() < 2 {
        return;
    }
    let matrix: Vec<Vec<f64>> = per_seed
        .iter()
        .map(|m| seeds.iter().map(|s| m[s].0).collect())
        .collect();
    let Ok(i) = stats::noise::interaction_sd(&matrix) else {
        return;
    };
    let n = seeds.len() as f64;
    let se = (2.0 * i.ms_resid / n).sqrt();
    let mut ps = Vec::new();
    for p in pairs.iter_mut() {
        let d = stats::mean(&matrix[p.a]) - stats::mean(&matrix[p.b]);
        let t = d / se;
        let pv = if t.is_finite() {
            (2.0 * stats::t_sf(t.abs(), i.df)).min(1.0)
        } else {
            f64::NAN
        };
        p.split = Some((se, i.df, pv, f64::NAN));
        ps.push(pv);
    }
    if ps.iter().all(|p| p.is_finite()) {
        if let Ok(adj) = multitest::adjust(&ps, multitest::Method::Holm) {
            for (p, q) in pairs.iter_mut().zip(adj) {
                if let Some(sp) = &mut p.split {
                    sp.3 = q;
                }
            }
        }
    }
}

/// The Holm p of a pair used by the verdict: the split-error one when there is one.
fn verdict_p(p: &LevelPair) -> f64 {
    p.split.map_or(p.pvalue_holm, |s| s.3)
}

/// Friedman (three levels or more) or Wilcoxon (two) over the seeds every level has.
fn rank_test(per_seed: &[BTreeMap<u64, (f64, bool)>]) -> Option<RankTest> {
    let common: Vec<u64> = per_seed
        .first()?
        .keys()
        .copied()
        .filter(|s| per_seed.iter().all(|m| m.contains_key(s)))
        .collect();
    if common.len() < 2 {
        return None;
    }
    let groups: Vec<Vec<f64>> = per_seed
        .iter()
        .map(|m| common.iter().map(|s| m[s].0).collect())
        .collect();
    if groups.len() == 2 {
        let w = rank::wilcoxon(&groups[0], &groups[1], Alternative::TwoSided).ok()?;
        Some(RankTest {
            name: "Wilcoxon",
            statistic: w.statistic,
            pvalue: w.pvalue,
            seeds: common.len(),
        })
    } else {
        let f = kgroups::friedman(&groups).ok()?;
        Some(RankTest {
            name: "Friedman",
            statistic: f.statistic,
            pvalue: f.pvalue,
            seeds: common.len(),
        })
    }
}

/// ` × `-joined term names.
fn term_name(t: &str) -> String {
    t.replace(':', " × ")
}

/// Plain-words summary lines for the verdict: the repeated-measures ANOVA when there is
/// one (each effect against its own seed × effect error, GG-corrected), else the blocked
/// fit; then the lowest level per factor and the levels it is Holm-significantly below.
pub fn verdict(a: &AblationAnalysis, alpha: f64) -> Vec<String> {
    let mut out = Vec::new();
    match (&a.rm, &a.blocked) {
        (Ok((terms, n)), _) => {
            for t in terms {
                out.push(format!(
                    "{}: F({}, {}) = {}, Greenhouse–Geisser p = {} (repeated measures over {n} seeds, each effect against its own seed × effect error) — {}.",
                    term_name(&t.term),
                    t.num_df,
                    t.den_df,
                    f2(t.f),
                    pfmt(t.pvalue_gg),
                    if t.pvalue_gg <= alpha {
                        "a detectable effect"
                    } else {
                        "no detectable effect"
                    }
                ));
            }
        }
        (Err(_), Ok(t)) => {
            for term in t.terms.iter().filter(|t| t.term != "seed") {
                out.push(format!(
                    "{}: F({}, {}) = {}, p = {} (seed as a block, one pooled error) — {}.",
                    term_name(&term.term),
                    term.df,
                    t.residual.df,
                    f2(term.f),
                    pfmt(term.pvalue),
                    if term.pvalue <= alpha {
                        "a detectable effect"
                    } else {
                        "no detectable effect"
                    }
                ));
            }
        }
        (Err(e), Err(_)) => out.push(format!("No ANOVA: {e}.")),
    }
    for f in &a.factors {
        let best = f
            .marginal
            .iter()
            .enumerate()
            .min_by(|x, y| x.1.mean.total_cmp(&y.1.mean))
            .map(|(i, _)| i)
            .unwrap_or(0);
        let sig: Vec<String> = f
            .pairs
            .iter()
            .filter(|p| verdict_p(p) <= alpha && (p.a == best || p.b == best))
            .map(|p| f.levels[if p.a == best { p.b } else { p.a }].clone())
            .collect();
        out.push(format!(
            "Lowest {} mean: `{}` ({} ppl); {}.",
            f.name,
            f.levels[best],
            f2(f.marginal[best].mean),
            if sig.is_empty() {
                "not distinguishable from any other level".to_string()
            } else {
                format!(
                    "Holm-significantly lower than {}",
                    sig.iter()
                        .map(|l| format!("`{l}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ));
    }
    out
}

fn anova_table(s: &mut String, t: &Table) {
    let _ = writeln!(s, "| term | SS | df | F | p |\n|---|---:|---:|---:|---:|");
    for term in &t.terms {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            term_name(&term.term),
            f2(term.sum_sq),
            term.df,
            f2(term.f),
            pfmt(term.pvalue)
        );
    }
    let _ = writeln!(
        s,
        "| residual | {} | {} | | |",
        f2(t.residual.sum_sq),
        t.residual.df
    );
}

/// The Markdown section.
pub fn markdown(a: &AblationAnalysis, alpha: f64, plot: Option<&str>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n## Ablation\n");
    let f0 = &a.factors[0];
    if let Some(f1) = a.factors.get(1) {
        let _ = writeln!(
            s,
            "Cell means of validation ppl (mean ± sd, finished/total runs); rows: {}, columns: {}{}.\n",
            f0.name,
            f1.name,
            if a.factors.len() > 2 {
                format!(", averaged over {}", a.factors[2].name)
            } else {
                String::new()
            }
        );
        let _ = write!(s, "| {} \\ {} |", f0.name, f1.name);
        for l in &f1.levels {
            let _ = write!(s, " `{l}` |");
        }
        let _ = write!(s, "\n|---|");
        for _ in &f1.levels {
            let _ = write!(s, "---:|");
        }
        let _ = writeln!(s);
        for (i, l0) in f0.levels.iter().enumerate() {
            let _ = write!(s, "| `{l0}` |");
            for j in 0..f1.levels.len() {
                let (m, sd, n, total) = a.cells[&(i, j)];
                let _ = write!(s, " {} ± {} ({n}/{total}) |", f2(m), f2(sd));
            }
            let _ = writeln!(s);
        }
    }
    let names: Vec<&str> = a.factors.iter().map(|f| f.name.as_str()).collect();
    let formula = names
        .iter()
        .map(|n| format!("C({n})"))
        .collect::<Vec<_>>()
        .join("*");
    match &a.blocked {
        Ok(t) => {
            let _ = writeln!(
                s,
                "\nEvery cell trained on the same {} seeds, so seed is a block. ANOVA of validation ppl, type II sums of squares, `y ~ C(seed) + {formula}` (as statsmodels `anova_lm(typ=2)`), finished runs only; its single pooled error assumes that every seed × effect interaction has the same variance:\n",
                a.seeds
            );
            anova_table(&mut s, t);
        }
        Err(e) => {
            let _ = writeln!(s, "\nNo blocked ANOVA: {e}.");
        }
    }
    match &a.rm {
        Ok((terms, n)) => {
            let _ = writeln!(
                s,
                "\nRepeated-measures ANOVA (statsmodels `AnovaRM`, subject = seed, over the {n} seeds on which every cell finished): each effect is tested against its own seed × effect interaction, with the Greenhouse–Geisser ε and corrected p, and the lower-bound p (ε = 1/df, the most conservative correction; with few seeds the estimated ε of a many-df term is capped near (seeds − 1)/df by the rank of its covariance). This is the analysis the verdict uses.\n\n| term | F | df | GG ε | p | GG p | lower-bound p |\n|---|---:|---:|---:|---:|---:|---:|"
            );
            for t in terms {
                let _ = writeln!(
                    s,
                    "| {} | {} | {}, {} | {} | {} | {} | {} |",
                    term_name(&t.term),
                    f2(t.f),
                    t.num_df,
                    t.den_df,
                    f2(t.eps_gg),
                    pfmt(t.pvalue),
                    pfmt(t.pvalue_gg),
                    pfmt(kgroups::f_sf(t.f, 1.0, t.den_df / t.num_df))
                );
            }
        }
        Err(e) => {
            let _ = writeln!(s, "\nNo repeated-measures ANOVA: {e}.");
        }
    }
    if let Ok(t) = &a.unblocked {
        let _ = writeln!(
            s,
            "\nFor comparison, the same ANOVA without the seed block (`y ~ {formula}`), which leaves the seed-to-seed variance in the residual:\n"
        );
        anova_table(&mut s, t);
    }
    if let Some(p) = plot {
        let _ = writeln!(s, "\n![Interaction plot]({p})");
    }
    for f in &a.factors {
        let _ = writeln!(
            s,
            "\n### {}\n\nMarginal means over finished runs; the 95 % interval is the t interval over seeds of each seed's mean of the level's cells (seeds on which all of them finished), so it includes the seed-to-seed variance; it describes a level's mean across seeds and is not for comparing levels (see the contrasts, which cancel the shared seed effect).{}\n\n| level | runs | mean val ppl | seeds | 95 % CI |\n|---|---:|---:|---:|---:|",
            f.name,
            match &f.rank {
                Some(r) => format!(
                    " {} test over {} seeds (per-seed level means; a diverged cell ranks its level worst): statistic {}, p = {}.",
                    r.name,
                    r.seeds,
                    f2(r.statistic),
                    pfmt(r.pvalue)
                ),
                None => String::new(),
            }
        );
        for (l, m) in f.levels.iter().zip(&f.marginal) {
            let _ = writeln!(
                s,
                "| `{l}` | {} | {} | {} | {} – {} |",
                m.runs,
                f2(m.mean),
                m.seeds,
                f2(m.ci.low),
                f2(m.ci.high)
            );
        }
        let _ = writeln!(
            s,
            "\nContrasts of estimated marginal means, Holm over the {} pairs of this factor: on the blocked fit (its pooled residual error and df, as statsmodels OLS `t_test`), and on the factor's own error (the seed × {} interaction of the per-seed level means, as the repeated-measures ANOVA tests {}; the verdict uses this one):\n\n| level | level | diff (ppl) | se (pooled) | df | Holm p (pooled) | se (own error) | df | Holm p (own error) | differ |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
            f.pairs.len(),
            f.name,
            f.name
        );
        for p in &f.pairs {
            let (sse, sdf, _, sp) = p.split.unwrap_or((f64::NAN, f64::NAN, f64::NAN, f64::NAN));
            let _ = writeln!(
                s,
                "| `{}` | `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
                f.levels[p.a],
                f.levels[p.b],
                f2(p.diff),
                f2(p.se),
                p.df,
                pfmt(p.pvalue_holm),
                f2(sse),
                if sdf.is_finite() {
                    sdf.to_string()
                } else {
                    "–".into()
                },
                pfmt(sp),
                if verdict_p(p) <= alpha { "yes" } else { "no" }
            );
        }
    }
    if a.diverged > 0 {
        let _ = writeln!(
            s,
            "\n{} run(s) diverged: left out of means and the ANOVAs (the repeated-measures ANOVA drops their seeds); their level ranks worst on that seed in the rank tests.",
            a.diverged
        );
    }
    s
}

/// The interaction plot: cell means (±1 standard error) over the first factor's levels, one
/// line per level of the second.
pub fn chart(a: &AblationAnalysis) -> LineChart {
    let f0 = &a.factors[0];
    let n1 = a.factors.get(1).map_or(1, |f| f.levels.len());
    let series = (0..n1)
        .map(|j| {
            let pts: Vec<(f64, f64, f64)> = (0..f0.levels.len())
                .map(|i| {
                    let (m, sd, n, _) = a.cells[&(i, j)];
                    let se = if n > 1 { sd / (n as f64).sqrt() } else { 0.0 };
                    (m, se, i as f64)
                })
                .map(|(m, se, x)| (x, m, se))
                .collect();
            Series {
                label: a
                    .factors
                    .get(1)
                    .map_or("all".into(), |f| f.levels[j].clone()),
                points: pts.iter().map(|p| (p.0, p.1)).collect(),
                band: pts.iter().map(|p| (p.0, p.1 - p.2, p.1 + p.2)).collect(),
                mark: Mark::LineDots,
                color: j,
            }
        })
        .collect();
    LineChart {
        title: match a.factors.get(1) {
            Some(f1) => format!("Interaction: {} × {} (±1 SE)", f0.name, f1.name),
            None => format!("{} (±1 SE)", f0.name),
        },
        x_desc: f0.name.clone(),
        y_desc: "validation ppl".into(),
        x_categories: f0.levels.clone(),
        integer_x: false,
        series,
    }
}

impl super::Section for AblationAnalysis {
    fn verdict(&self, alpha: f64) -> Vec<String> {
        verdict(self, alpha)
    }
    fn markdown(&self, alpha: f64, plot: Option<&str>) -> String {
        markdown(self, alpha, plot)
    }
    fn plot_kind(&self) -> &'static str {
        "ablation"
    }
    fn chart(&self) -> LineChart {
        chart(self)
    }
}
