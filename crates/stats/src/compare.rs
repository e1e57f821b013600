//! Everything `evoattn stats compare` reports about two samples, and its JSON form.

use super::effect::{effects, Effects};
use super::rank::{mann_whitney, wilcoxon, RankTest};
use super::resample::Design;
use super::ttest::{paired, student, welch, welch_ci, TTest};
use super::{mean, Alternative, Describe, Interval};
use serde_json::{json, Value};

/// A full comparison of x against y (directional quantities are x − y).
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Size of x.
    pub n_x: usize,
    /// Size of y.
    pub n_y: usize,
    /// Mean of x.
    pub mean_x: f64,
    /// Mean of y.
    pub mean_y: f64,
    /// mean(x) − mean(y).
    pub diff: f64,
    /// Welch's t-test.
    pub welch: TTest,
    /// Student's t-test (pooled variance).
    pub student: TTest,
    /// Mann–Whitney U.
    pub mann_whitney: RankTest,
    /// Paired t-test (paired samples only).
    pub paired_t: Option<TTest>,
    /// Wilcoxon signed-rank test (paired samples only).
    pub wilcoxon: Option<RankTest>,
    /// Effect sizes.
    pub effect: Effects,
    /// Welch t interval of the difference.
    pub ci_diff: Interval,
    /// Seeded BCa bootstrap interval of the mean difference (paired: resampled by pair).
    pub bootstrap_ci_diff: super::resample::BootstrapCi,
    /// ASO for the claim "x is better than y" under the direction.
    pub aso: super::aso::Aso,
}

/// Options of the resampling parts of a comparison.
#[derive(Debug, Clone, Copy)]
pub struct Resampling {
    /// Bootstrap resamples (default 10,000).
    pub resamples: usize,
    /// Seed of the bootstrap and of ASO.
    pub seed: u64,
}

impl Default for Resampling {
    fn default() -> Self {
        Resampling {
            resamples: super::resample::DEFAULT_RESAMPLES,
            seed: 0,
        }
    }
}

/// Compares x with y. `paired` adds the paired t and Wilcoxon tests (equal lengths needed).
pub fn compare(
    x: &[f64],
    y: &[f64],
    paired_runs: bool,
    alt: Alternative,
    level: f64,
    higher_is_better: bool,
    resampling: Resampling,
) -> anyhow::Result<Comparison> {
    super::check_finite("x", x)?;
    super::check_finite("y", y)?;
    let (paired_t, wilcox) = if paired_runs {
        (Some(paired(x, y, alt)?), Some(wilcoxon(x, y, alt)?))
    } else {
        (None, None)
    };
    Ok(Comparison {
        n_x: x.len(),
        n_y: y.len(),
        mean_x: mean(x),
        mean_y: mean(y),
        diff: mean(x) - mean(y),
        welch: welch(x, y, alt),
        student: student(x, y, alt),
        mann_whitney: mann_whitney(x, y, alt),
        paired_t,
        wilcoxon: wilcox,
        effect: effects(x, y, higher_is_better),
        ci_diff: welch_ci(x, y, level),
        bootstrap_ci_diff: super::resample::bootstrap_ci(
            x,
            y,
            if paired_runs {
                Design::Paired
            } else {
                Design::Independent
            },
            &super::resample::mean_diff,
            super::resample::Spec {
                method: super::resample::Method::Bca,
                resamples: resampling.resamples,
                level,
                seed: resampling.seed,
            },
        ),
        aso: {
            // ASO scores are higher-is-better.
            let sign = if higher_is_better { 1.0 } else { -1.0 };
            let a: Vec<f64> = x.iter().map(|v| sign * v).collect();
            let b: Vec<f64> = y.iter().map(|v| sign * v).collect();
            super::aso::aso(&a, &b, 1.0 - level, 1000, 1000, resampling.seed)
        },
    })
}

/// A number for JSON: non-finite values become the strings "NaN", "Infinity", "-Infinity".
pub fn jnum(x: f64) -> Value {
    if x.is_nan() {
        json!("NaN")
    } else if x == f64::INFINITY {
        json!("Infinity")
    } else if x == f64::NEG_INFINITY {
        json!("-Infinity")
    } else {
        json!(x)
    }
}

fn t_json(t: &TTest) -> Value {
    json!({"statistic": jnum(t.statistic), "df": jnum(t.df), "pvalue": jnum(t.pvalue)})
}

fn interval_json(i: &Interval) -> Value {
    json!({"level": jnum(i.level), "low": jnum(i.low), "high": jnum(i.high)})
}

impl Comparison {
    /// The JSON object of `evoattn stats compare --json`.
    pub fn to_json(&self) -> Value {
        let e = &self.effect;
        let mut v = json!({
            "n_x": self.n_x, "n_y": self.n_y,
            "mean_x": jnum(self.mean_x), "mean_y": jnum(self.mean_y), "diff": jnum(self.diff),
            "welch": t_json(&self.welch),
            "student": t_json(&self.student),
            "mann_whitney": {"statistic": jnum(self.mann_whitney.statistic), "pvalue": jnum(self.mann_whitney.pvalue), "method": self.mann_whitney.method},
            "effect": {"cohens_d": jnum(e.cohens_d), "hedges_g": jnum(e.hedges_g), "cliffs_delta": jnum(e.cliffs_delta),
                       "a12": jnum(e.a12), "prob_improvement": jnum(e.prob_improvement)},
            "ci_diff": interval_json(&self.ci_diff),
            "bootstrap_ci_diff": {"method": self.bootstrap_ci_diff.method, "resamples": self.bootstrap_ci_diff.resamples,
                                  "level": jnum(self.bootstrap_ci_diff.level), "low": jnum(self.bootstrap_ci_diff.low),
                                  "high": jnum(self.bootstrap_ci_diff.high)},
            "aso": {"violation_ratio": jnum(self.aso.violation_ratio), "epsilon_min": jnum(self.aso.epsilon_min)},
        });
        if let Some(p) = &self.paired_t {
            v["paired_t"] = t_json(p);
        }
        if let Some(w) = &self.wilcoxon {
            v["wilcoxon"] = json!({"statistic": jnum(w.statistic), "w_plus": jnum(w.w_plus.unwrap_or(f64::NAN)),
                                   "pvalue": jnum(w.pvalue), "method": w.method});
        }
        v
    }
}

/// The JSON object of `evoattn stats describe --json`.
pub fn describe_json(d: &Describe) -> Value {
    json!({"n": d.n, "mean": jnum(d.mean), "sd": jnum(d.sd), "ci": interval_json(&d.ci)})
}
