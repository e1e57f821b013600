//! The race section: who was eliminated when (from `race.parquet`), the runs the race used
//! against a fixed-n replication of every candidate on the same final seed count, and an
//! elimination chart. The confirmation stage's verdicts are the report's main verdicts.

use super::plots::{LineChart, Mark, Series};
use super::{f2, pfmt};
use crate::gene::Gene;
use crate::record::RaceRow;
use std::fmt::Write as _;

/// A race, read back.
#[derive(Debug, Clone)]
pub struct RaceAnalysis {
    /// Every candidate after every round.
    pub rows: Vec<RaceRow>,
    /// Candidates in first-round order.
    pub candidates: Vec<Gene>,
    /// Rounds run.
    pub rounds: u64,
    /// Seeds of the last round.
    pub final_seeds: u64,
    /// Runs the race used (each candidate's seeds until it left).
    pub runs: u64,
    /// Runs of a fixed replication of every candidate on `final_seeds` seeds.
    pub fixed_runs: u64,
    /// Alive at the end.
    pub survivors: Vec<Gene>,
}

/// The race analysis of `rows` (`None` without rows).
pub fn analyse(rows: &[RaceRow]) -> Option<RaceAnalysis> {
    if rows.is_empty() {
        return None;
    }
    let mut candidates: Vec<Gene> = Vec::new();
    for r in rows.iter().filter(|r| r.round == 0) {
        if !candidates.contains(&r.gene) {
            candidates.push(r.gene);
        }
    }
    let rounds = rows.iter().map(|r| r.round).max().unwrap_or(0) + 1;
    let final_seeds = rows.iter().map(|r| r.n_seeds).max().unwrap_or(0);
    let runs = candidates
        .iter()
        .map(|g| {
            rows.iter()
                .filter(|r| r.gene == *g)
                .map(|r| r.n_seeds)
                .max()
                .unwrap_or(0)
        })
        .sum();
    let survivors = rows
        .iter()
        .filter(|r| r.round == rounds - 1 && r.alive)
        .map(|r| r.gene)
        .collect();
    Some(RaceAnalysis {
        rows: rows.to_vec(),
        fixed_runs: candidates.len() as u64 * final_seeds,
        candidates,
        rounds,
        final_seeds,
        runs,
        survivors,
    })
}

/// The Markdown section.
pub fn markdown(a: &RaceAnalysis, plot: Option<&str>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## Race\n\n{} candidates raced over seeds (a round's candidates all train on the same seeds; after each round the elimination test drops those significantly worse than the best so far). {} round(s), {} seeds at the end; survivors: {}.\n",
        a.candidates.len(),
        a.rounds,
        a.final_seeds,
        a.survivors
            .iter()
            .map(|g| format!("`{g}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "The race used **{} runs**; a fixed replication of all {} candidates on {} seeds would have used {} ({:.0} %). Racing's repeated tests do not control error rates, so the verdicts above come from the confirmation stage on fresh seeds.\n",
        a.runs,
        a.candidates.len(),
        a.final_seeds,
        a.fixed_runs,
        100.0 * a.runs as f64 / a.fixed_runs.max(1) as f64
    );
    let _ = write!(s, "Mean validation ppl after each round (✗: eliminated there, with the p-value that eliminated it):\n\n| candidate |");
    for k in 0..a.rounds {
        let seeds = a
            .rows
            .iter()
            .find(|r| r.round == k)
            .map_or(0, |r| r.n_seeds);
        let _ = write!(s, " {seeds} seeds |");
    }
    let _ = write!(s, "\n|---|");
    for _ in 0..a.rounds {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s);
    for g in &a.candidates {
        let _ = write!(s, "| `{g}` |");
        for k in 0..a.rounds {
            match a.rows.iter().find(|r| r.gene == *g && r.round == k) {
                Some(r) if r.eliminated => {
                    let _ = write!(s, " {} ✗ (p = {}) |", f2(r.mean), pfmt(r.pvalue));
                }
                Some(r) => {
                    let _ = write!(s, " {} |", f2(r.mean));
                }
                None => {
                    let _ = write!(s, " |");
                }
            }
        }
        let _ = writeln!(s);
    }
    if let Some(p) = plot {
        let _ = writeln!(s, "\n![Race: mean per round]({p})");
    }
    s
}

/// The elimination chart: each candidate's mean per round while it raced.
pub fn chart(a: &RaceAnalysis) -> LineChart {
    let series = a
        .candidates
        .iter()
        .enumerate()
        .map(|(i, g)| Series {
            label: g.to_string(),
            points: a
                .rows
                .iter()
                .filter(|r| r.gene == *g && r.mean.is_finite())
                .map(|r| (r.n_seeds as f64, r.mean))
                .collect(),
            band: vec![],
            mark: Mark::LineDots,
            color: i,
        })
        .collect();
    LineChart {
        title: "Race: mean validation ppl of each candidate while it raced".into(),
        x_desc: "seeds".into(),
        y_desc: "mean val ppl".into(),
        x_categories: vec![],
        integer_x: true,
        series,
    }
}

impl super::Section for RaceAnalysis {
    fn markdown(&self, _alpha: f64, plot: Option<&str>) -> String {
        markdown(self, plot)
    }
    fn plot_kind(&self) -> &'static str {
        "race"
    }
    fn chart(&self) -> LineChart {
        chart(self)
    }
}
