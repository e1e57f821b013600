//! `evoattn stats power`: power of the t-test, the n for a target power, or the minimum
//! detectable effect — for two independent samples (statsmodels `TTestIndPower`) or, with
//! `--paired`, for seed-paired runs (`TTestPower` on d_z = mean / sd of the differences).

use super::check_level;
use crate::cli::output::{self, num, Plain};
use anyhow::{bail, Result};
use clap::Args;
use evoattn::stats::{power, Alternative};
use serde_json::json;

/// `evoattn stats power`.
#[derive(Args)]
pub struct PowerArgs {
    /// Standardized effect: Cohen's d, or d_z (mean / sd of the differences) with --paired.
    #[arg(long, allow_hyphen_values = true)]
    pub effect: Option<f64>,
    /// Observations per group (pairs with --paired).
    #[arg(long)]
    pub n: Option<f64>,
    /// Target power.
    #[arg(long)]
    pub power: Option<f64>,
    /// Significance level.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Seed-paired design: the one-sample t-test on the paired differences.
    #[arg(long)]
    pub paired: bool,
    /// two-sided, larger (x − y > 0) or smaller (x − y < 0), as statsmodels spells them.
    #[arg(long, default_value = "two-sided")]
    pub alternative: String,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// statsmodels' spelling (also scipy's `less`/`greater`).
fn parse_alternative(s: &str) -> Result<Alternative> {
    Ok(match s {
        "two-sided" => Alternative::TwoSided,
        "larger" | "greater" => Alternative::Greater,
        "smaller" | "less" => Alternative::Less,
        o => bail!("unknown --alternative `{o}`; use two-sided, larger or smaller"),
    })
}

/// Runs `evoattn stats power`.
pub fn run(a: &PowerArgs) -> Result<()> {
    let (effect, n, pw, alpha) = (a.effect, a.n, a.power, a.alpha);
    check_level("alpha", alpha)?;
    if let Some(p) = pw {
        check_level("power", p)?;
    }
    if let Some(d) = effect {
        if !d.is_finite() {
            bail!("--effect must be a finite number, got {d}");
        }
    }
    let alt = parse_alternative(&a.alternative)?;
    let unit = if a.paired { "pairs" } else { "per group" };
    if n.is_some_and(|n| n <= 1.0 || !n.is_finite()) {
        bail!("--n must be more than 1 ({unit})");
    }
    let design = if a.paired {
        "paired t-test"
    } else {
        "two-sample t-test"
    };
    let words = format!("{}, {design}", a.alternative);
    // Very large or small effects in scientific notation.
    let show = |d: f64| {
        if d != 0.0 && !(1e-4..1e6).contains(&d.abs()) {
            format!("{d:e}")
        } else {
            format!("{d}")
        }
    };
    let pow = |d: f64, n: f64| {
        if a.paired {
            power::ttest_paired_power(d, n, alpha, alt)
        } else {
            power::ttest_ind_power(d, n, alpha, 1.0, alt)
        }
    };
    let (json, text) = match (effect, n, pw) {
        (Some(_), Some(_), Some(_)) => {
            bail!("give two of --effect, --n, --power; the third is computed")
        }
        (Some(d), Some(n), None) => {
            let p = pow(d, n);
            (
                json!({"effect": num(d), "alpha": num(alpha), "n": num(n), "power": num(p)}),
                format!("power = {p:.6} with n = {n} {unit} at d = {}, alpha = {alpha} ({words})", show(d)),
            )
        }
        (Some(d), None, Some(p)) => {
            let solved = if a.paired {
                power::solve_n_paired(d, p, alpha, alt)
            } else {
                power::solve_n(d, p, alpha, alt)
            };
            let n = solved.ok_or_else(|| {
                anyhow::anyhow!(
                    "no n up to {} {unit} reaches power {p} at effect {} ({words})",
                    power::MAX_N,
                    show(d)
                )
            })?;
            let c = n.ceil() as u64;
            (
                json!({"effect": num(d), "alpha": num(alpha), "n": num(n), "power": num(p), "n_ceil": c}),
                format!("n = {n:.4} {unit} (use {c}) for power {p} at d = {}, alpha = {alpha} ({words})", show(d)),
            )
        }
        (None, Some(n), Some(p)) => {
            let solved = if a.paired {
                power::solve_effect_paired(n, p, alpha, alt)
            } else {
                power::solve_effect(n, p, alpha, alt)
            };
            let d = solved.ok_or_else(|| {
                anyhow::anyhow!("no effect up to 1000 reaches power {p} at n = {n} ({words})")
            })?;
            (
                json!({"effect": num(d), "alpha": num(alpha), "n": num(n), "power": num(p), "solved": "effect"}),
                format!("minimum detectable effect d = {d:.6} with n = {n} {unit} at power {p}, alpha = {alpha} ({words})"),
            )
        }
        _ => bail!("give --effect with --n (power) or --power (n), or --n with --power (minimum detectable effect)"),
    };
    let mut json = json;
    json["design"] = json!(if a.paired { "paired" } else { "independent" });
    json["alternative"] = json!(a.alternative);
    output::print(
        &Plain {
            json: vec![json],
            text,
        },
        a.json,
    )
}
