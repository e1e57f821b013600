//! The report's charts built from the store's tables (the drawing is in [`super::plots`]):
//! learning curves, GA progress, and a search against another at equal budget.

use super::analysis::Analysis;
use super::plots;
use crate::gene::Gene;
use crate::record::{CurveRow, GenerationRow, Operator, RunRow, Stage};
use crate::stats;
use std::collections::BTreeMap;

/// Learning curves of the analysed runs: validation ppl when every run has at least two
/// validation points, training loss otherwise.
pub(crate) fn curves_chart(
    a: &Analysis,
    rows: &[RunRow],
    curves: &[CurveRow],
) -> Option<plots::LineChart> {
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
pub(crate) fn ga_chart(gens: &[GenerationRow]) -> Option<plots::LineChart> {
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
    let reevaluated = gens
        .iter()
        .any(|g| g.operator == Operator::Elite && g.n_seeds > 1);
    let dots = |elite: bool| -> Vec<(f64, f64)> {
        gens.iter()
            .filter(|g| (g.operator == Operator::Elite) == elite && g.fitness.is_finite())
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
    for (k, r) in rows.iter().filter(|r| r.stage == Stage::Search).enumerate() {
        seen.entry(r.gene.index()).or_default().push(r.val_ppl);
        let best = seen
            .values()
            .map(|v| crate::search::fitness(v))
            .fold(f64::INFINITY, f64::min);
        out.push(((k + 1) as f64, best));
    }
    out
}
