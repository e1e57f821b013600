//! `evoattn stats …`: statistical tests on numbers given on the command line or in a table.

pub mod compare;
pub mod describe;
pub mod groups;
pub mod power;

use anyhow::{bail, Context, Result};
use clap::Subcommand;

/// `evoattn stats …`.
#[derive(Subcommand)]
pub enum StatsCmd {
    /// Compare two samples: t-tests, rank tests, effect sizes, interval of the difference.
    Compare(compare::CompareArgs),
    /// Adjust p-values for multiple comparisons.
    Adjust(describe::AdjustArgs),
    /// Compare k groups: one-way ANOVA, Kruskal–Wallis and (with --blocked) Friedman.
    Kgroups(groups::KgroupsArgs),
    /// Two-way ANOVA with interaction (type II) over a runs table (Parquet or CSV).
    Anova(groups::AnovaArgs),
    /// Power of the two-sample t-test, or the n per group for a target power, or (without
    /// --effect) the minimum detectable effect at n and power.
    Power(power::PowerArgs),
    /// n, mean, sd and the t interval of the mean.
    Describe(describe::DescribeArgs),
}

/// Runs `evoattn stats …`.
pub fn run(c: &StatsCmd) -> Result<()> {
    match c {
        StatsCmd::Compare(a) => compare::run_compare(a),
        StatsCmd::Adjust(a) => describe::run_adjust(a),
        StatsCmd::Kgroups(a) => groups::run_kgroups(a),
        StatsCmd::Anova(a) => groups::run_anova(a),
        StatsCmd::Power(a) => power::run(a),
        StatsCmd::Describe(a) => describe::run_describe(a),
    }
}

/// Comma-separated numbers of flag `--name`.
pub fn parse_numbers(name: &str, s: &str) -> Result<Vec<f64>> {
    let v: Vec<f64> = s
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            t.trim()
                .parse::<f64>()
                .with_context(|| format!("--{name}: `{t}` is not a number"))
        })
        .collect::<Result<_>>()?;
    if v.is_empty() {
        bail!("--{name} is empty: give comma-separated numbers, e.g. --{name} 1.2,3.4");
    }
    Ok(v)
}

/// A level strictly between 0 and 1.
pub fn check_level(name: &str, v: f64) -> Result<()> {
    if !(v > 0.0 && v < 1.0) {
        bail!("--{name} must be between 0 and 1, got {v}");
    }
    Ok(())
}
