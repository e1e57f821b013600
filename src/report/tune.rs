//! The tune section: each gene's trials, its best hyperparameters, its expected best
//! validation ppl against the number of trials (Dodge et al. 2019) with a bootstrap band,
//! and — since every gene trained on the same trial configurations — each gene against the
//! baseline configuration by configuration. No verdicts: the best trials were chosen on
//! these very runs.

use super::analysis::Options;
use super::plots::{LineChart, Mark, Series};
use super::{f2, pfmt};
use crate::gene::Gene;
use crate::record::{RunRow, Stage};
use crate::search::tune::{self, Trial};
use crate::stats::expected::{
    expected_best_band_with_failures, expected_best_with_failures_curve, BandPoint, Sampling,
};
use crate::stats::{exact, rank, Alternative};
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
    /// Per n = 1..=trials: the expected best of n trials given that one succeeded, with
    /// replacement (Dodge et al.) and without, and the probability that all n failed (a
    /// trial fails when a seed diverged), with replacement.
    pub curve: Vec<CurvePoint>,
    /// Bootstrap percentile band (95 %) of the with-replacement curve.
    pub band: Vec<BandPoint>,
}

/// One point of an expected-best curve.
#[derive(Debug, Clone, Copy)]
pub struct CurvePoint {
    /// Trials n.
    pub n: usize,
    /// E[best of n | one succeeded], with replacement.
    pub with: f64,
    /// The same, without replacement.
    pub without: f64,
    /// P(all n failed), with replacement.
    pub p_all_failed: f64,
}

/// A gene against the baseline over the shared trial configurations.
#[derive(Debug, Clone)]
pub struct TrialBlocked {
    /// Gene.
    pub gene: Gene,
    /// Configurations both genes trained.
    pub configs: usize,
    /// Configurations where the gene's trial score was lower (better).
    pub better: u64,
    /// Configurations where it was higher.
    pub worse: u64,
    /// Exact two-sided sign test over the untied configurations.
    pub sign_p: f64,
    /// Wilcoxon signed-rank over configurations (a failed trial ranks worst).
    pub wilcoxon_p: f64,
    /// Median over configurations of gene − baseline (finite pairs).
    pub median_diff: f64,
}

/// Tuning of every gene of a tune study.
#[derive(Debug, Clone)]
pub struct TuneAnalysis {
    /// Per gene, in gene order.
    pub genes: Vec<GeneTuning>,
    /// Seeds per trial.
    pub seeds_per_trial: usize,
    /// Each gene against the baseline, configuration by configuration (when the baseline
    /// was tuned).
    pub versus: Vec<TrialBlocked>,
}

/// The tune analysis of `rows` (`None` without tune rows).
pub fn analyse(rows: &[RunRow], opts: &Options) -> Option<TuneAnalysis> {
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
    let versus = all
        .get(&Gene::BASELINE)
        .map(|base| {
            all.iter()
                .filter(|(g, _)| **g != Gene::BASELINE)
                .map(|(g, ts)| trial_blocked(*g, ts, base))
                .collect()
        })
        .unwrap_or_default();
    let genes = all
        .into_iter()
        .map(|(gene, trials)| {
            let fitness: Vec<f64> = trials.iter().map(|t| t.fitness).collect();
            let n = fitness.len();
            let with = expected_best_with_failures_curve(&fitness, n, Sampling::WithReplacement);
            let without =
                expected_best_with_failures_curve(&fitness, n, Sampling::WithoutReplacement);
            let curve = with
                .iter()
                .zip(&without)
                .map(|(w, wo)| CurvePoint {
                    n: w.n,
                    with: w.expected_best,
                    without: wo.expected_best,
                    p_all_failed: w.p_all_failed,
                })
                .collect();
            GeneTuning {
                gene,
                best: tune::best_of(&trials).map_or(0, |t| t.index),
                curve,
                band: expected_best_band_with_failures(
                    &fitness,
                    n,
                    BAND_RESAMPLES,
                    0.95,
                    opts.seed,
                ),
                trials,
            }
        })
        .collect();
    Some(TuneAnalysis {
        genes,
        seeds_per_trial,
        versus,
    })
}

/// Resamples of the expected-best band.
pub const BAND_RESAMPLES: usize = 1000;

/// `gene`'s trials against the baseline's, configuration by configuration.
fn trial_blocked(gene: Gene, ts: &[Trial], base: &[Trial]) -> TrialBlocked {
    let mut pairs: Vec<(f64, f64)> = Vec::new();
    for t in ts {
        // Trials of a tune study share configurations across genes.
        let cfg = |c: &crate::train::TrainConfig| crate::search::tune::summary(c);
        if let Some(b) = base.iter().find(|b| cfg(&b.config) == cfg(&t.config)) {
            pairs.push((t.fitness, b.fitness));
        }
    }
    let worst = pairs
        .iter()
        .flat_map(|p| [p.0, p.1])
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        * 1e3
        + 1e6;
    let cap = |v: f64| if v.is_finite() { v } else { worst };
    let (x, y): (Vec<f64>, Vec<f64>) = pairs.iter().map(|p| (cap(p.0), cap(p.1))).unzip();
    let sign = exact::sign_test_paired(&y, &x, Alternative::TwoSided).ok();
    let better = sign.map_or(0, |s| s.positive);
    let untied = sign.map_or(0, |s| s.n);
    let mut finite: Vec<f64> = pairs
        .iter()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .map(|p| p.0 - p.1)
        .collect();
    finite.sort_by(f64::total_cmp);
    TrialBlocked {
        gene,
        configs: pairs.len(),
        better,
        worse: untied - better,
        sign_p: sign.map_or(f64::NAN, |s| s.pvalue),
        wilcoxon_p: rank::wilcoxon(&x, &y, Alternative::TwoSided).map_or(f64::NAN, |w| w.pvalue),
        median_diff: median_sorted(&finite),
    }
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
    if !t.versus.is_empty() {
        let _ = writeln!(
            s,
            "Every gene trained on the same {trials} configurations, so each is compared with the baseline configuration by configuration (trial scores; a failed trial ranks worst):\n\n| gene | better in | worse in | median diff (ppl) | sign test p | Wilcoxon p |\n|---|---:|---:|---:|---:|---:|"
        );
        for v in &t.versus {
            let _ = writeln!(
                s,
                "| `{}` | {} of {} | {} of {} | {} | {} | {} |",
                v.gene,
                v.better,
                v.configs,
                v.worse,
                v.configs,
                f2(v.median_diff),
                pfmt(v.sign_p),
                pfmt(v.wilcoxon_p)
            );
        }
        let _ = writeln!(
            s,
            "\nThis says whether one gene is better across hyperparameter settings, not whether its best setting beats the baseline's best; the latter needs fresh seeds.\n"
        );
    }
    let failures = t
        .genes
        .iter()
        .any(|g| g.curve.iter().any(|c| c.p_all_failed > 0.0));
    let _ = writeln!(
        s,
        "\nExpected best validation ppl after n trials (Dodge et al. 2019): with replacement (their estimator) / without replacement (exact for subsets of these trials){}. The plot's band is a 95 % bootstrap percentile band ({} resamples of the trials) around the with-replacement curve.\n",
        if failures {
            "; a trial with a diverged seed counts as a failure: the value is the expected best given that one of the n trials succeeded, and P(all failed) is given beside it"
        } else {
            ""
        },
        BAND_RESAMPLES
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
            let c = g.curve[n - 1];
            let _ = write!(s, " {} / {}", f2(c.with), f2(c.without));
            if failures {
                let _ = write!(s, " (P(all failed) {})", pfmt(c.p_all_failed));
            }
            let _ = write!(s, " |");
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
                    .map(|c| (c.n as f64, if with { c.with } else { c.without }))
                    .filter(|p| p.1.is_finite())
                    .collect(),
                band: if with {
                    g.band
                        .iter()
                        .filter(|b| b.low.is_finite() && b.high.is_finite())
                        .map(|b| (b.n as f64, b.low, b.high))
                        .collect()
                } else {
                    vec![]
                },
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
