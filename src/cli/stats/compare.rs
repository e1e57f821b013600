//! `evoattn stats compare`, `stats adjust` and `stats describe`.

use super::{check_level, parse_numbers};
use crate::cli::output::{self, num, Plain};
use anyhow::{bail, Result};
use clap::Args;
use evoattn::stats::{self, compare, multitest, Alternative};
use serde_json::json;
use std::fmt::Write as _;

/// `evoattn stats compare`.
#[derive(Args)]
pub struct CompareArgs {
    /// Comma-separated sample x, e.g. 99.8,99.5,100.2.
    #[arg(long, allow_hyphen_values = true)]
    pub x: String,
    /// Comma-separated sample y.
    #[arg(long, allow_hyphen_values = true)]
    pub y: String,
    /// x[i] and y[i] come from the same seed: add the paired t and Wilcoxon tests.
    #[arg(long)]
    pub paired: bool,
    /// two-sided, less (x smaller) or greater.
    #[arg(long, default_value = "two-sided")]
    pub alternative: String,
    /// Significance level.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Seed of the bootstrap interval and of ASO's bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Bootstrap resamples of the BCa interval of the difference.
    #[arg(long, default_value_t = 10_000)]
    pub resamples: usize,
    /// Larger values are better (default: lower is better, as for perplexity).
    #[arg(long)]
    pub higher_is_better: bool,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `evoattn stats adjust`.
#[derive(Args)]
pub struct AdjustArgs {
    /// Comma-separated p-values.
    #[arg(long)]
    pub p: String,
    /// holm, bonferroni or bh.
    #[arg(long, default_value = "holm")]
    pub method: String,
    /// Family-wise (or false-discovery) level.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `evoattn stats describe`.
#[derive(Args)]
pub struct DescribeArgs {
    /// Comma-separated values.
    #[arg(long, allow_hyphen_values = true)]
    pub x: String,
    /// Confidence level of the t interval of the mean.
    #[arg(long, default_value_t = 0.95)]
    pub level: f64,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `evoattn stats compare`.
pub fn run_compare(a: &CompareArgs) -> Result<()> {
    let (x, y) = (parse_numbers("x", &a.x)?, parse_numbers("y", &a.y)?);
    let alt: Alternative = a.alternative.parse()?;
    let alternative = &a.alternative;
    check_level("alpha", a.alpha)?;
    let alpha = &a.alpha;
    let seed = a.seed;
    if a.resamples == 0 {
        bail!("--resamples must be at least 1 (default 10000)");
    }
    let r = compare::compare(
        &x,
        &y,
        a.paired,
        alt,
        1.0 - alpha,
        a.higher_is_better,
        compare::Resampling {
            resamples: a.resamples,
            seed: a.seed,
        },
    )?;
    let json = vec![r.to_json()];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "x: n={} mean={:.6}   y: n={} mean={:.6}   diff (x − y) = {:.6}",
        r.n_x, r.mean_x, r.n_y, r.mean_y, r.diff
    );
    let _ = writeln!(
        out,
        "{:.0}% CI of the difference (Welch): [{:.6}, {:.6}]",
        100.0 * r.ci_diff.level,
        r.ci_diff.low,
        r.ci_diff.high
    );
    let _ = writeln!(
        out,
        "{:.0}% CI of the difference (BCa bootstrap, {} resamples, seed {seed}): [{:.6}, {:.6}]",
        100.0 * r.bootstrap_ci_diff.level,
        r.bootstrap_ci_diff.resamples,
        r.bootstrap_ci_diff.low,
        r.bootstrap_ci_diff.high
    );
    let _ = writeln!(
        out,
        "ASO (x better than y): violation ratio {:.4}, epsilon_min {:.4} ({})",
        r.aso.violation_ratio,
        r.aso.epsilon_min,
        if r.aso.epsilon_min < 0.2 {
            "x almost stochastically dominates y (< 0.2)"
        } else if r.aso.epsilon_min < 0.5 {
            "x better under the lenient 0.5 threshold only"
        } else {
            "no almost-stochastic dominance of x"
        }
    );
    let _ = writeln!(
        out,
        "{:<26} {:>12} {:>10} {:>12}  ({alternative})",
        "test", "statistic", "df", "p-value"
    );
    let mut row = |name: &str, s: f64, df: Option<f64>, p: f64| {
        let _ = writeln!(
            out,
            "{name:<26} {s:>12.6} {:>10} {p:>12.4e}",
            df.map(|d| format!("{d:.3}")).unwrap_or_else(|| "-".into())
        );
    };
    row("welch", r.welch.statistic, Some(r.welch.df), r.welch.pvalue);
    row(
        "student",
        r.student.statistic,
        Some(r.student.df),
        r.student.pvalue,
    );
    row(
        &format!("mann-whitney ({})", r.mann_whitney.method),
        r.mann_whitney.statistic,
        None,
        r.mann_whitney.pvalue,
    );
    if let Some(t) = &r.paired_t {
        row("paired t", t.statistic, Some(t.df), t.pvalue);
    }
    if let Some(w) = &r.wilcoxon {
        row(
            &format!("wilcoxon ({})", w.method),
            w.statistic,
            None,
            w.pvalue,
        );
    }
    let e = &r.effect;
    let _ = writeln!(
        out,
        "effect sizes: Cohen's d {:.4}, Hedges' g {:.4}, Cliff's delta {:.4}, A12 {:.4}, P(x better) {:.4}",
        e.cohens_d, e.hedges_g, e.cliffs_delta, e.a12, e.prob_improvement
    );
    let main_p = r.paired_t.as_ref().map_or(r.welch.pvalue, |t| t.pvalue);
    let test = if r.paired_t.is_some() {
        "paired t"
    } else {
        "Welch"
    };
    let better = if a.higher_is_better {
        r.diff > 0.0
    } else {
        r.diff < 0.0
    };
    if main_p <= *alpha {
        let _ = writeln!(
            out,
            "verdict: x is {} than y by {:.4} ({test} p = {main_p:.3e} ≤ α = {alpha}); x is {}",
            if r.diff < 0.0 { "lower" } else { "higher" },
            r.diff.abs(),
            if better { "better" } else { "worse" }
        );
    } else {
        let _ = writeln!(
            out,
            "verdict: no detectable difference at α = {alpha} ({test} p = {main_p:.3e})"
        );
    }
    output::print(&Plain { json, text: out }, a.json)
}

/// Runs `evoattn stats adjust`.
pub fn run_adjust(a: &AdjustArgs) -> Result<()> {
    let p = parse_numbers("p", &a.p)?;
    let m: multitest::Method = a.method.parse()?;
    check_level("alpha", a.alpha)?;
    let adj = multitest::adjust(&p, m)?;
    let rej = multitest::reject(&adj, a.alpha);
    let adjusted: Vec<serde_json::Value> = adj.iter().map(|&v| num(v)).collect();
    let json = json!({"method": a.method, "alpha": a.alpha, "adjusted": adjusted, "reject": rej});
    let mut out = format!(
        "{:>4} {:>12} {:>12} {:>7}\n",
        "#", "p", "adjusted", "reject"
    );
    for (i, ((x, b), r)) in p.iter().zip(&adj).zip(&rej).enumerate() {
        let _ = writeln!(
            out,
            "{i:>4} {x:>12.4e} {b:>12.4e} {:>7}",
            if *r { "yes" } else { "no" }
        );
    }
    let _ = writeln!(
        out,
        "{} of {} rejected at α = {} ({})",
        rej.iter().filter(|r| **r).count(),
        rej.len(),
        a.alpha,
        a.method
    );
    output::print(
        &Plain {
            json: vec![json],
            text: out,
        },
        a.json,
    )
}

/// Runs `evoattn stats describe`.
pub fn run_describe(a: &DescribeArgs) -> Result<()> {
    let x = parse_numbers("x", &a.x)?;
    if let Some(v) = x.iter().find(|v| !v.is_finite()) {
        anyhow::bail!("--x holds a non-finite value ({v}); give finite numbers");
    }
    check_level("level", a.level)?;
    let d = stats::describe(&x, a.level);
    let text = format!(
        "n {}  mean {:.6}  sd {:.6}  {:.0}% CI [{:.6}, {:.6}]",
        d.n,
        d.mean,
        d.sd,
        100.0 * a.level,
        d.ci.low,
        d.ci.high
    );
    output::print(
        &Plain {
            json: vec![compare::describe_json(&d)],
            text,
        },
        a.json,
    )
}
