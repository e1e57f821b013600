//! The ablation section: a factorial over gene components. Two-way ANOVA (type II) with
//! interaction, marginal means with confidence intervals, Kruskal–Wallis per factor and
//! Holm-corrected seed-paired comparisons between the levels of each factor.

use super::plots::{LineChart, Mark, Series};
use super::{f2, pfmt};
use crate::gene::Component;
use crate::record::{RunRow, Stage};
use crate::stats::{self, anova2, kgroups, multitest, ttest, Alternative};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One factor (a gene component with at least two levels among the runs).
#[derive(Debug, Clone)]
pub struct Factor {
    /// The component.
    pub component: Component,
    /// Component name.
    pub name: String,
    /// Levels in order of first appearance (the study file's order).
    pub levels: Vec<String>,
    /// Marginal mean, n and 95 % interval per level (finished runs).
    pub marginal: Vec<(f64, usize, stats::Interval)>,
    /// Kruskal–Wallis over the levels (diverged runs rank worst).
    pub kruskal: kgroups::KTest,
    /// Seed-paired comparisons of its levels, Holm-adjusted within the factor.
    pub pairs: Vec<LevelPair>,
}

/// Levels `a` and `b` of a factor compared over the seeds both have.
#[derive(Debug, Clone)]
pub struct LevelPair {
    /// Level indices.
    pub a: usize,
    /// Level indices.
    pub b: usize,
    /// Mean difference a − b of the per-seed level means.
    pub diff: f64,
    /// Paired t-test p-value.
    pub pvalue: f64,
    /// Holm-adjusted p-value.
    pub pvalue_holm: f64,
    /// Seeds compared.
    pub seeds: usize,
}

/// The ablation analysis.
#[derive(Debug, Clone)]
pub struct AblationAnalysis {
    /// Factors in gene-component order.
    pub factors: Vec<Factor>,
    /// Two-way ANOVA table (exactly two factors), or a one-way table (one factor).
    pub anova: Vec<anova2::Term>,
    /// Cell statistics (factor 0 level, factor 1 level) → (mean, sd, n finished, n runs).
    pub cells: BTreeMap<(usize, usize), (f64, f64, usize, usize)>,
    /// Diverged runs (left out of means and the ANOVA, worst in Kruskal–Wallis).
    pub diverged: usize,
    /// Residual mean square used for the marginal intervals.
    pub mse: f64,
    /// Its degrees of freedom.
    pub df_resid: f64,
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
pub fn analyse(rows: &[RunRow]) -> Option<AblationAnalysis> {
    let ab: Vec<&RunRow> = rows.iter().filter(|r| r.stage == Stage::Ablate).collect();
    if ab.is_empty() {
        return None;
    }
    let names: Vec<Component> = Component::ALL
        .into_iter()
        .filter(|&c| appearance(&ab, c).len() > 1)
        .collect();
    if names.is_empty() {
        return None;
    }
    let fin: Vec<&&RunRow> = ab.iter().filter(|r| r.val_ppl.is_some()).collect();
    let y: Vec<f64> = fin.iter().filter_map(|r| r.val_ppl).collect();
    let level_of = |r: &RunRow, c: Component| r.gene.get(c).to_string();
    let (anova, mse, df_resid) = if names.len() == 2 {
        let a: Vec<String> = fin.iter().map(|r| level_of(r, names[0])).collect();
        let b: Vec<String> = fin.iter().map(|r| level_of(r, names[1])).collect();
        match anova2::anova_two_way(&y, &a, &b, names[0].as_str(), names[1].as_str()) {
            Ok(t) => {
                let res = t.iter().find(|t| t.term == "residual").cloned();
                let (mse, df) = res.map_or((f64::NAN, f64::NAN), |r| (r.ss / r.df, r.df));
                (t, mse, df)
            }
            Err(_) => (vec![], f64::NAN, f64::NAN),
        }
    } else {
        (vec![], f64::NAN, f64::NAN)
    };
    let worst = y.iter().copied().fold(0.0f64, f64::max) * 1e3 + 1e6;
    let mut factors = Vec::new();
    for &name in &names {
        let levels = appearance(&ab, name);
        let groups: Vec<Vec<&RunRow>> = levels
            .iter()
            .map(|l| {
                ab.iter()
                    .copied()
                    .filter(|r| level_of(r, name) == *l)
                    .collect()
            })
            .collect();
        let marginal = groups
            .iter()
            .map(|g| {
                let v: Vec<f64> = g.iter().filter_map(|r| r.val_ppl).collect();
                let d = stats::describe(&v, 0.95);
                let ci = if mse.is_finite() && !v.is_empty() {
                    let h = stats::t_ppf(0.975, df_resid) * (mse / v.len() as f64).sqrt();
                    stats::Interval {
                        level: 0.95,
                        low: d.mean - h,
                        high: d.mean + h,
                    }
                } else {
                    d.ci
                };
                (d.mean, v.len(), ci)
            })
            .collect();
        let ranked: Vec<Vec<f64>> = groups
            .iter()
            .map(|g| g.iter().map(|r| r.val_ppl.unwrap_or(worst)).collect())
            .collect();
        let kruskal = kgroups::kruskal(&ranked);
        // Per seed: the mean over the other factors' cells of each level.
        let per_seed: Vec<BTreeMap<u64, f64>> = groups
            .iter()
            .map(|g| {
                let mut m: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
                for r in g {
                    m.entry(r.seed)
                        .or_default()
                        .push(r.val_ppl.unwrap_or(f64::NAN));
                }
                m.into_iter()
                    .filter(|(_, v)| v.iter().all(|x| x.is_finite()))
                    .map(|(s, v)| (s, stats::mean(&v)))
                    .collect()
            })
            .collect();
        let mut pairs = Vec::new();
        for i in 0..levels.len() {
            for j in i + 1..levels.len() {
                let (x, yy): (Vec<f64>, Vec<f64>) = per_seed[i]
                    .iter()
                    .filter_map(|(s, a)| per_seed[j].get(s).map(|b| (*a, *b)))
                    .unzip();
                let p = if x.len() >= 2 {
                    ttest::paired(&x, &yy, Alternative::TwoSided).map_or(f64::NAN, |t| t.pvalue)
                } else {
                    f64::NAN
                };
                let d = stats::mean(&x) - stats::mean(&yy);
                pairs.push(LevelPair {
                    a: i,
                    b: j,
                    diff: d,
                    pvalue: p,
                    pvalue_holm: f64::NAN,
                    seeds: x.len(),
                });
            }
        }
        let ps: Vec<f64> = pairs.iter().map(|p| p.pvalue).collect();
        if ps.iter().all(|p| p.is_finite()) && !ps.is_empty() {
            if let Ok(adj) = multitest::adjust(&ps, multitest::Method::Holm) {
                for (p, q) in pairs.iter_mut().zip(adj) {
                    p.pvalue_holm = q;
                }
            }
        }
        factors.push(Factor {
            component: name,
            name: name.to_string(),
            levels,
            marginal,
            kruskal,
            pairs,
        });
    }
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
        anova,
        cells,
        mse,
        df_resid,
    })
}

/// Plain-words summary lines for the verdict.
pub fn verdict(a: &AblationAnalysis, alpha: f64) -> Vec<String> {
    let mut out = Vec::new();
    for t in a.anova.iter().filter(|t| t.term != "residual") {
        let (f, p) = (t.f.unwrap_or(f64::NAN), t.pvalue.unwrap_or(f64::NAN));
        let term = t.term.replace(':', " × ");
        out.push(format!(
            "{}: F({}, {}) = {}, p = {} — {}.",
            term,
            t.df,
            a.df_resid,
            f2(f),
            pfmt(p),
            if p <= alpha {
                "a detectable effect"
            } else {
                "no detectable effect"
            }
        ));
    }
    for f in &a.factors {
        let best = f
            .marginal
            .iter()
            .enumerate()
            .min_by(|x, y| x.1 .0.total_cmp(&y.1 .0))
            .map(|(i, _)| i)
            .unwrap_or(0);
        let sig: Vec<String> = f
            .pairs
            .iter()
            .filter(|p| p.pvalue_holm <= alpha && (p.a == best || p.b == best))
            .map(|p| f.levels[if p.a == best { p.b } else { p.a }].clone())
            .collect();
        out.push(format!(
            "Best {} on average: `{}` ({} ppl); Holm-significantly better than {}.",
            f.name,
            f.levels[best],
            f2(f.marginal[best].0),
            if sig.is_empty() {
                "no other level".to_string()
            } else {
                sig.iter()
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
    }
    out
}

/// The Markdown section.
pub fn markdown(a: &AblationAnalysis, alpha: f64, plot: Option<&str>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n## Ablation\n");
    let f0 = &a.factors[0];
    if let Some(f1) = a.factors.get(1) {
        let _ = writeln!(
            s,
            "Cell means of validation ppl (mean ± sd, finished/total runs); rows: {}, columns: {}.\n",
            f0.name, f1.name
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
    if a.factors.len() > 2 {
        let _ = writeln!(
            s,
            "{} factors: the ANOVA here handles two; marginal means and per-factor tests follow.\n",
            a.factors.len()
        );
    }
    if !a.anova.is_empty() {
        let _ = writeln!(
            s,
            "\nTwo-way ANOVA with interaction, type II sums of squares (as statsmodels `anova_lm(typ=2)`), finished runs only:\n\n| term | SS | df | F | p |\n|---|---:|---:|---:|---:|"
        );
        for t in &a.anova {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                t.term.replace(':', " × "),
                f2(t.ss),
                t.df,
                t.f.map_or("".into(), f2),
                t.pvalue.map_or("".into(), pfmt)
            );
        }
    }
    if let Some(p) = plot {
        let _ = writeln!(s, "\n![Interaction plot]({p})");
    }
    for f in &a.factors {
        let _ = writeln!(
            s,
            "\n### {}\n\nMarginal means (95 % CI{}); Kruskal–Wallis over the levels: H({}) = {}, p = {}.\n\n| level | runs | mean val ppl | 95 % CI |\n|---|---:|---:|---:|",
            f.name,
            if a.mse.is_finite() {
                ", from the ANOVA's residual mean square"
            } else {
                ", t interval per level"
            },
            f.kruskal.df_between,
            f2(f.kruskal.statistic),
            pfmt(f.kruskal.pvalue)
        );
        for (l, (m, n, ci)) in f.levels.iter().zip(&f.marginal) {
            let _ = writeln!(
                s,
                "| `{l}` | {n} | {} | {} – {} |",
                f2(*m),
                f2(ci.low),
                f2(ci.high)
            );
        }
        let _ = writeln!(
            s,
            "\nSeed-paired comparisons (per seed, each level's mean over the other factor's cells; paired t-test; Holm over the {} pairs of this factor):\n\n| level | level | diff (ppl) | seeds | p | Holm p | differ |\n|---|---|---:|---:|---:|---:|---|",
            f.pairs.len()
        );
        for p in &f.pairs {
            let _ = writeln!(
                s,
                "| `{}` | `{}` | {} | {} | {} | {} | {} |",
                f.levels[p.a],
                f.levels[p.b],
                f2(p.diff),
                p.seeds,
                pfmt(p.pvalue),
                pfmt(p.pvalue_holm),
                if p.pvalue_holm <= alpha { "yes" } else { "no" }
            );
        }
    }
    if a.diverged > 0 {
        let _ = writeln!(
            s,
            "\n{} run(s) diverged: left out of means, the ANOVA and the paired comparisons (a seed with a diverged cell drops out of that level's pairs); ranked worst in Kruskal–Wallis.",
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
