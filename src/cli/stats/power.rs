//! `evoattn stats power`: power of the t-test, the n for a target power, or the minimum
//! detectable effect.

use super::check_level;
use crate::cli::output::{self, num, Plain};
use anyhow::{bail, Result};
use clap::Args;
use evoattn::stats::{power, Alternative};
use serde_json::json;

/// `evoattn stats power`.
#[derive(Args)]
pub struct PowerArgs {
    /// Standardized effect (Cohen's d).
    #[arg(long, allow_hyphen_values = true)]
    pub effect: Option<f64>,
    /// Observations per group.
    #[arg(long)]
    pub n: Option<f64>,
    /// Target power.
    #[arg(long)]
    pub power: Option<f64>,
    /// Significance level.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `evoattn stats power`.
pub fn run(a: &PowerArgs) -> Result<()> {
    let (effect, n, pw, alpha) = (a.effect, a.n, a.power, a.alpha);
    check_level("alpha", alpha)?;
    if let Some(p) = pw {
        check_level("power", p)?;
    }
    if n.is_some_and(|n| n <= 1.0 || !n.is_finite()) {
        bail!("--n must be more than 1 observation per group");
    }
    let (json, text) = match (effect, n, pw) {
        (Some(_), Some(_), Some(_)) => {
            bail!("give two of --effect, --n, --power; the third is computed")
        }
        (Some(d), n, p) if n.is_some() || p.is_some() => {
            let r = power::power_analysis(d, n, p, alpha).ok_or_else(|| {
                anyhow::anyhow!(
                    "no n up to 100,000 per group reaches power {} at effect {d}",
                    p.unwrap_or(f64::NAN)
                )
            })?;
            let mut v = json!({"effect": num(r.effect), "alpha": num(r.alpha), "n": num(r.n), "power": num(r.power)});
            if let Some(c) = r.n_ceil {
                v["n_ceil"] = json!(c);
            }
            let text = if let Some(c) = r.n_ceil {
                format!(
                    "n = {:.4} per group (use {c}) for power {} at d = {d}, alpha = {alpha} (two-sided t-test)",
                    r.n, r.power
                )
            } else {
                format!(
                    "power = {:.6} with n = {} per group at d = {d}, alpha = {alpha} (two-sided t-test)",
                    r.power, r.n
                )
            };
            (v, text)
        }
        (None, Some(n), Some(p)) => {
            let d = power::solve_effect(n, p, alpha, Alternative::TwoSided).ok_or_else(|| {
                anyhow::anyhow!("no effect up to 1000 reaches power {p} at n = {n}")
            })?;
            (
                json!({"effect": num(d), "alpha": num(alpha), "n": num(n), "power": num(p), "solved": "effect"}),
                format!("minimum detectable effect d = {d:.6} with n = {n} per group at power {p}, alpha = {alpha}"),
            )
        }
        _ => bail!("give --effect with --n (power) or --power (n), or --n with --power (minimum detectable effect)"),
    };
    output::print(
        &Plain {
            json: vec![json],
            text,
        },
        a.json,
    )
}
