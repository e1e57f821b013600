//! `evoattn stats adjust` and `stats describe`.

use super::{check_level, parse_numbers};
use crate::cli::output::{self, num, Plain};
use anyhow::Result;
use clap::Args;
use evoattn::stats::{self, compare, multitest};
use serde_json::json;
use std::fmt::Write as _;

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
