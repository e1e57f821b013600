//! The tune section: each gene's trials, its best hyperparameters and its expected best
//! validation ppl against the number of trials (Dodge et al. 2019).

use super::f2;
use super::plots::{LineChart, Mark, Series};
use crate::gene::Gene;
use crate::record::{RunRow, Stage};
use crate::search::tune::{self, Trial};
use crate::stats::expected::expected_best_curves;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One gene's tuning.
#[derive(Debug, Clone)]
pub struct GeneTuning {
    /// Gene.
    pub gene: Gene,
    /// Its trials in order.
    pub trials: Vec<Trial>,
    /// Index of the best trial.
    pub best: usize,
    /// (n, expected best with replacement, without replacement) for n = 1..=trials.
    pub curve: Vec<(usize, f64, f64)>,
}

/// Tuning of every gene of a tune study.
#[derive(Debug, Clone)]
pub struct TuneAnalysis {
    /// Per gene, in gene order.
    pub genes: Vec<GeneTuning>,
    /// Seeds per trial.
    pub seeds_per_trial: usize,
}

/// The tune analysis of `rows` (`None` without tune rows).
pub fn analyse(rows: &[RunRow]) -> Option<TuneAnalysis> {
    let all: BTreeMap<Gene, Vec<Trial>> = tune::trials(rows);
    if all.is_empty() {
        return None;
    }
    let seeds_per_trial = all
        .values()
        .flatten()
        .map(|t| t.vals.len())
        .max()
        .unwrap_or(0);
    let genes = all
        .into_iter()
        .map(|(gene, trials)| {
            let fitness: Vec<f64> = trials.iter().map(|t| t.fitness).collect();
            GeneTuning {
                gene,
                best: tune::best_of(&trials).map_or(0, |t| t.index),
                curve: expected_best_curves(&fitness),
                trials,
            }
        })
        .collect();
    Some(TuneAnalysis {
        genes,
        seeds_per_trial,
    })
}

/// The rows of each gene's best trial (the tune study's leaderboard scope).
pub fn best_rows<'r>(rows: &'r [RunRow], t: &TuneAnalysis) -> Vec<&'r RunRow> {
    rows.iter()
        .filter(|r| {
            r.stage == Stage::Tune
                && t.genes
                    .iter()
                    .any(|g| g.gene == r.gene && g.trials[g.best].config == r.config)
        })
        .collect()
}

fn hp(c: &crate::train::TrainConfig) -> String {
    tune::summary(c)
}

/// Median of sorted values; +∞ when a middle value is (a trial with a diverged seed).
fn median_sorted(f: &[f64]) -> f64 {
    let n = f.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => f[n / 2],
        _ => (f[n / 2 - 1] + f[n / 2]) / 2.0,
    }
}

/// The Markdown section (plot file name `plot`, or none).
pub fn markdown(t: &TuneAnalysis, plot: Option<&str>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n## Tuning\n");
    let trials = t.genes.first().map_or(0, |g| g.trials.len());
    let _ = writeln!(
        s,
        "Every gene had the same {trials} trial configurations (drawn once, shared by all genes), each trained on {} seed(s); a trial's score is its mean validation ppl (∞ when a seed diverged). The best trial is chosen on these same runs, so its score is optimistic: the unbiased comparison is a replication with the tuned values on fresh seeds (`[replicate] hparams = {{ from = \"…\" }}`).\n",
        t.seeds_per_trial
    );
    let _ = writeln!(
        s,
        "| gene | best trial | hyperparameters | best mean val ppl | median trial | worst trial |\n|---|---:|---|---:|---:|---:|"
    );
    for g in &t.genes {
        let mut f: Vec<f64> = g.trials.iter().map(|t| t.fitness).collect();
        f.sort_by(f64::total_cmp);
        let b = &g.trials[g.best];
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} | {} |",
            g.gene,
            b.index,
            hp(&b.config),
            f2(b.fitness),
            f2(median_sorted(&f)),
            f2(f[f.len() - 1])
        );
    }
    let _ = writeln!(
        s,
        "\nExpected best validation ppl after n trials (Dodge et al. 2019): with replacement (their estimator) / without replacement (exact for subsets of these trials).\n"
    );
    let ns: Vec<usize> = (0..)
        .map(|k| 1usize << k)
        .take_while(|&n| n < trials)
        .chain(std::iter::once(trials))
        .collect();
    let _ = write!(s, "| gene |");
    for n in &ns {
        let _ = write!(s, " n = {n} |");
    }
    let _ = write!(s, "\n|---|");
    for _ in &ns {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s);
    for g in &t.genes {
        let _ = write!(s, "| `{}` |", g.gene);
        for &n in &ns {
            let (_, w, wo) = g.curve[n - 1];
            let _ = write!(s, " {} / {} |", f2(w), f2(wo));
        }
        let _ = writeln!(s);
    }
    if let Some(p) = plot {
        let _ = writeln!(s, "\n![Expected best validation ppl against trials]({p})");
    }
    let _ = writeln!(s, "\nAll trials:\n\n| gene | trial | hyperparameters | val ppl per seed | mean ± sd |\n|---|---:|---|---|---:|");
    for g in &t.genes {
        for tr in &g.trials {
            let vals: Vec<String> = tr
                .vals
                .iter()
                .map(|v| v.map_or("diverged".into(), f2))
                .collect();
            let fin: Vec<f64> = tr.vals.iter().flatten().copied().collect();
            let (m, sd) = crate::stats::mean_sd(&fin);
            let _ = writeln!(
                s,
                "| `{}` | {}{} | {} | {} | {} ± {} |",
                g.gene,
                tr.index,
                if tr.index == g.best { " (best)" } else { "" },
                hp(&tr.config),
                vals.join(", "),
                f2(m),
                f2(sd)
            );
        }
    }
    s
}

/// The expected-best plot.
pub fn chart(t: &TuneAnalysis) -> LineChart {
    let mut series = Vec::new();
    for (i, g) in t.genes.iter().enumerate() {
        for (what, mark, with) in [
            ("with replacement", Mark::Line, true),
            ("without", Mark::Dots, false),
        ] {
            series.push(Series {
                label: format!("{} ({what})", g.gene),
                points: g
                    .curve
                    .iter()
                    .map(|c| (c.0 as f64, if with { c.1 } else { c.2 }))
                    .collect(),
                band: vec![],
                mark,
                color: i,
            });
        }
    }
    LineChart {
        title: "Expected best validation ppl vs. trials".into(),
        x_desc: "trials".into(),
        y_desc: "expected best val ppl".into(),
        x_categories: vec![],
        integer_x: true,
        series,
    }
}

impl super::Section for TuneAnalysis {
    fn markdown(&self, _alpha: f64, plot: Option<&str>) -> String {
        markdown(self, plot)
    }
    fn plot_kind(&self) -> &'static str {
        "tune"
    }
    fn chart(&self) -> LineChart {
        chart(self)
    }
}

#[cfg(test)]
mod tests {
    use super::median_sorted;

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median_sorted(&[1.0, 2.0, 4.0, 8.0]), 3.0);
        assert_eq!(median_sorted(&[1.0, 2.0, 4.0]), 2.0);
        assert_eq!(median_sorted(&[1.0, f64::INFINITY]), f64::INFINITY);
        assert!(median_sorted(&[]).is_nan());
    }
}
