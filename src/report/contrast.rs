//! A contrast between two studies that share genes and seeds (e.g. a tuned and an untuned
//! replication): per gene, the seed-paired difference-in-differences
//! (gene − baseline here) − (gene − baseline there), its t interval and p (a one-sample t
//! on the per-seed values), Holm-adjusted over the genes. It tests whether the edge
//! changed between the studies (e.g. with tuning); it can show a change, not that an edge
//! vanished (that needs equivalence of the edge in the other study).

use super::{f2, pfmt};
use crate::gene::Gene;
use crate::record::{RunRow, Stage};
use crate::stats::{self, multitest, power, ttest, Alternative, Interval};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One gene's difference-in-differences.
#[derive(Debug, Clone)]
pub struct DidRow {
    /// Gene.
    pub gene: Gene,
    /// Seeds on which the gene and the baseline finished in both studies.
    pub seeds: usize,
    /// Mean of gene − baseline here.
    pub here: f64,
    /// Mean of gene − baseline in the other study.
    pub there: f64,
    /// Mean difference-in-differences (here − there).
    pub did: f64,
    /// Its t interval at 1 − α.
    pub ci: Interval,
    /// Two-sided p of H0: no change.
    pub pvalue: f64,
    /// Holm-adjusted over the genes.
    pub pvalue_holm: f64,
    /// Smallest change (ppl) detectable with 80 % power on these seeds.
    pub mde_80: f64,
}

/// The contrast of this study with another.
#[derive(Debug, Clone)]
pub struct Contrast {
    /// The other study's name.
    pub other: String,
    /// Per gene (the baseline excluded).
    pub rows: Vec<DidRow>,
    /// The level used.
    pub alpha: f64,
}

/// The analysed rows: the replicate stage when there is one, else all.
fn scope(rows: &[RunRow]) -> Vec<&RunRow> {
    let rep: Vec<&RunRow> = rows
        .iter()
        .filter(|r| r.stage == Stage::Replicate)
        .collect();
    if rep.is_empty() {
        rows.iter().collect()
    } else {
        rep
    }
}

/// (gene, seed) → finished validation ppl.
fn table(rows: &[&RunRow]) -> BTreeMap<(Gene, u64), f64> {
    rows.iter()
        .filter_map(|r| Some(((r.gene, r.seed), r.val_ppl?)))
        .collect()
}

/// The contrast of `here` (this study's rows) with `there` (study `other`'s rows).
pub fn contrast(here: &[RunRow], there: &[RunRow], other: &str, alpha: f64) -> Contrast {
    let (h, t) = (table(&scope(here)), table(&scope(there)));
    let genes: std::collections::BTreeSet<Gene> = h
        .keys()
        .map(|k| k.0)
        .filter(|g| *g != Gene::BASELINE && t.keys().any(|k| k.0 == *g))
        .collect();
    let mut rows: Vec<DidRow> = genes
        .into_iter()
        .map(|g| {
            let seeds: Vec<u64> = h
                .keys()
                .filter(|k| k.0 == g)
                .map(|k| k.1)
                .filter(|s| {
                    h.contains_key(&(Gene::BASELINE, *s))
                        && t.contains_key(&(g, *s))
                        && t.contains_key(&(Gene::BASELINE, *s))
                })
                .collect();
            let dh: Vec<f64> = seeds
                .iter()
                .map(|s| h[&(g, *s)] - h[&(Gene::BASELINE, *s)])
                .collect();
            let dt: Vec<f64> = seeds
                .iter()
                .map(|s| t[&(g, *s)] - t[&(Gene::BASELINE, *s)])
                .collect();
            let did: Vec<f64> = dh.iter().zip(&dt).map(|(a, b)| a - b).collect();
            let d = stats::describe(&did, 1.0 - alpha);
            let p = ttest::paired(&dh, &dt, Alternative::TwoSided).map_or(f64::NAN, |t| t.pvalue);
            let n = did.len() as f64;
            DidRow {
                gene: g,
                seeds: seeds.len(),
                here: stats::mean(&dh),
                there: stats::mean(&dt),
                did: d.mean,
                ci: d.ci,
                pvalue: p,
                pvalue_holm: f64::NAN,
                mde_80: power::solve_effect_paired(n, 0.8, alpha, Alternative::TwoSided)
                    .map_or(f64::NAN, |e| e * d.sd),
            }
        })
        .collect();
    let ps: Vec<f64> = rows.iter().map(|r| r.pvalue).collect();
    if !ps.is_empty() && ps.iter().all(|p| p.is_finite()) {
        if let Ok(adj) = multitest::adjust(&ps, multitest::Method::Holm) {
            for (r, q) in rows.iter_mut().zip(adj) {
                r.pvalue_holm = q;
            }
        }
    }
    Contrast {
        other: other.to_string(),
        rows,
        alpha,
    }
}

/// The Markdown section.
pub fn markdown(c: &Contrast) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## Contrast with study `{}`\n\nFor each gene both studies ran with the baseline on the same seeds: the seed-paired difference-in-differences (gene − baseline here) − (gene − baseline in `{}`), a paired t-test over the seeds on which all four runs finished, Holm over the genes (α = {}). Negative: the gene's edge is larger here. This tests whether the edge changed; not rejecting it does not show that the edge is the same, nor that it vanished.\n\n| gene | seeds | gene − baseline here | there | difference-in-differences | {:.0} % t CI | p | Holm p | detectable change (80 %) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        c.other,
        c.other,
        c.alpha,
        100.0 * (1.0 - c.alpha)
    );
    for r in &c.rows {
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} | {} – {} | {} | {} | {} |",
            r.gene,
            r.seeds,
            f2(r.here),
            f2(r.there),
            f2(r.did),
            f2(r.ci.low),
            f2(r.ci.high),
            pfmt(r.pvalue),
            pfmt(r.pvalue_holm),
            f2(r.mde_80)
        );
    }
    for r in &c.rows {
        let _ = writeln!(
            s,
            "\n- `{}`: {}",
            r.gene,
            if r.pvalue_holm <= c.alpha {
                format!(
                    "its edge over the baseline differs between the studies by {} ppl ({:.0} % t CI {} to {}; Holm p = {}).",
                    f2(r.did),
                    100.0 * (1.0 - c.alpha),
                    f2(r.ci.low),
                    f2(r.ci.high),
                    pfmt(r.pvalue_holm)
                )
            } else {
                format!(
                    "no detectable change of its edge between the studies ({} ppl, {:.0} % t CI {} to {}; Holm p = {}); with {} seeds only changes above {} ppl were detectable at 80 % power.",
                    f2(r.did),
                    100.0 * (1.0 - c.alpha),
                    f2(r.ci.low),
                    f2(r.ci.high),
                    pfmt(r.pvalue_holm),
                    r.seeds,
                    f2(r.mde_80)
                )
            }
        );
    }
    s
}
