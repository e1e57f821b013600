//! `evoattn stats kgroups` and `stats anova`: more than two groups.

use super::parse_numbers;
use crate::cli::output::{self, num, Plain};
use anyhow::{bail, Result};
use clap::Args;
use evoattn::stats::{self, anova, anova_rm, kgroups};
use polars::prelude::*;
use serde_json::json;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// `evoattn stats kgroups`.
#[derive(Args)]
pub struct KgroupsArgs {
    /// Groups separated by `;`, values by `,`, e.g. "1,2,3;4,5,6;7,8,9".
    #[arg(long, allow_hyphen_values = true)]
    pub groups: String,
    /// Group j's i-th value is seed i: add the Friedman test over seed blocks.
    #[arg(long)]
    pub blocked: bool,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `evoattn stats anova`.
#[derive(Args)]
pub struct AnovaArgs {
    /// runs.parquet or a .csv file with a header.
    #[arg(long)]
    pub file: PathBuf,
    /// Response column (rows where it is null are dropped, e.g. diverged runs).
    #[arg(long, default_value = "val_ppl")]
    pub response: String,
    /// One to three factor columns, comma-separated, e.g. normalization,gating.
    #[arg(long)]
    pub factors: String,
    /// A block column entering additively, e.g. `seed` when every cell ran on the same
    /// seeds (`y ~ C(seed) + C(A)*C(B)`); adds the repeated-measures ANOVA with the
    /// Greenhouse–Geisser correction when every block has every cell once.
    #[arg(long)]
    pub block: Option<String>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `evoattn stats kgroups`.
pub fn run_kgroups(a: &KgroupsArgs) -> Result<()> {
    let gs: Vec<Vec<f64>> = a
        .groups
        .split(';')
        .enumerate()
        .map(|(i, g)| parse_numbers(&format!("groups (group {})", i + 1), g))
        .collect::<Result<_>>()?;
    if gs.len() < 2 {
        bail!("--groups needs at least 2 groups separated by `;`, e.g. \"1,2,3;4,5,6\"");
    }
    for (i, g) in gs.iter().enumerate() {
        stats::check_finite(&format!("group {}", i + 1), g)?;
    }
    let an = kgroups::anova_oneway(&gs);
    let k = kgroups::kruskal(&gs);
    let f = if a.blocked {
        Some((kgroups::friedman(&gs)?, kgroups::conover_friedman(&gs)?))
    } else {
        None
    };
    let mut v = json!({
        "anova": {"statistic": num(an.statistic), "pvalue": num(an.pvalue), "df_between": num(an.df_between), "df_within": num(an.df_within)},
        "kruskal": {"statistic": num(k.statistic), "pvalue": num(k.pvalue)},
    });
    let mut out = format!(
        "one-way ANOVA   F({}, {}) = {:.6}  p = {:.4e}\nKruskal-Wallis  H = {:.6}  p = {:.4e}\n",
        an.df_between, an.df_within, an.statistic, an.pvalue, k.statistic, k.pvalue
    );
    if let Some((f, post)) = &f {
        let ph: Vec<serde_json::Value> = post
            .iter()
            .map(|p| json!({"a": p.a, "b": p.b, "pvalue": num(p.pvalue), "pvalue_unadjusted": num(p.pvalue_unadjusted)}))
            .collect();
        v["friedman"] = json!({"statistic": num(f.statistic), "pvalue": num(f.pvalue), "posthoc": ph,
                               "posthoc_method": "conover, holm-adjusted"});
        let _ = writeln!(
            out,
            "Friedman        chi2({}) = {:.6}  p = {:.4e}",
            f.df_between, f.statistic, f.pvalue
        );
        let _ = writeln!(
            out,
            "Conover post-hoc (groups numbered from 0, Holm-adjusted p):"
        );
        for p in post {
            let _ = writeln!(
                out,
                "  {} vs {}  p = {:.4e}{}",
                p.a,
                p.b,
                p.pvalue,
                if p.pvalue <= 0.05 { "  differ" } else { "" }
            );
        }
    }
    output::print(
        &Plain {
            json: vec![v],
            text: out,
        },
        a.json,
    )
}

/// A table from a `.parquet` or `.csv` file.
pub fn read_table(file: &Path) -> Result<DataFrame> {
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "parquet" => evoattn::study::store::read_parquet(file),
        "csv" => CsvReadOptions::default()
            .with_has_header(true)
            .try_into_reader_with_file_path(Some(file.to_path_buf()))
            .and_then(|r| r.finish())
            .map_err(|e| anyhow::anyhow!("cannot read {} as CSV: {e}", file.display())),
        _ => bail!(
            "{}: unknown table format; give a .parquet or .csv file",
            file.display()
        ),
    }
}

/// Runs `evoattn stats anova`.
pub fn run_anova(a: &AnovaArgs) -> Result<()> {
    let file = &a.file;
    let response = &a.response;
    let df = read_table(file)?;
    let names: Vec<&str> = a
        .factors
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() || names.len() > 3 {
        bail!("--factors needs one to three column names, e.g. --factors normalization,gating");
    }
    let col = |name: &str| {
        df.column(name).map_err(|_| {
            let cols: Vec<String> = df
                .get_column_names()
                .iter()
                .map(|c| c.to_string())
                .collect();
            anyhow::anyhow!(
                "{} has no column `{name}`; columns: {}",
                file.display(),
                cols.join(", ")
            )
        })
    };
    let y = col(response)?
        .cast(&DataType::Float64)
        .map_err(|e| anyhow::anyhow!("column `{response}` is not numeric: {e}"))?;
    let y: Vec<Option<f64>> = y.f64()?.iter().collect();
    let mut keys: Vec<&str> = names.clone();
    if let Some(b) = &a.block {
        keys.push(b);
    }
    let cols: Vec<Column> = keys
        .iter()
        .map(|k| Ok(col(k)?.cast(&DataType::String)?))
        .collect::<Result<_>>()?;
    let strs: Vec<&StringChunked> = cols.iter().map(|c| c.str()).collect::<Result<_, _>>()?;
    let mut ys = Vec::new();
    let mut vals: Vec<Vec<String>> = vec![Vec::new(); keys.len()];
    let mut dropped = 0;
    for (i, &yi) in y.iter().enumerate() {
        let labels: Option<Vec<&str>> = strs.iter().map(|c| c.get(i)).collect();
        match (yi, labels) {
            (Some(v), Some(l)) if v.is_finite() => {
                ys.push(v);
                for (dst, x) in vals.iter_mut().zip(l) {
                    dst.push(x.to_string());
                }
            }
            _ => dropped += 1,
        }
    }
    let factors: Vec<anova::Factor> = names
        .iter()
        .zip(&vals)
        .map(|(n, v)| anova::Factor { name: n, values: v })
        .collect();
    let block = a.block.as_deref().map(|b| anova::Factor {
        name: b,
        values: &vals[names.len()],
    });
    let table = anova::anova(&ys, &factors, block)?;
    let rm = block.map(|b| anova_rm::anova_rm(&ys, b.values, &factors));
    let mut t: Vec<serde_json::Value> = table
        .terms
        .iter()
        .map(|t| json!({"term": t.term, "ss": num(t.sum_sq), "df": num(t.df), "f": num(t.f), "pvalue": num(t.pvalue)}))
        .collect();
    t.push(
        json!({"term": "residual", "ss": num(table.residual.sum_sq), "df": num(table.residual.df)}),
    );
    let mut json = json!({"terms": t, "n": ys.len(), "dropped": dropped, "block": a.block});
    let formula = format!(
        "{}{}",
        a.block
            .as_ref()
            .map_or(String::new(), |b| format!("C({b}) + ")),
        names
            .iter()
            .map(|n| format!("C({n})"))
            .collect::<Vec<_>>()
            .join("*")
    );
    let mut out = format!(
        "ANOVA (type II) of {response} ~ {formula}: {} rows ({dropped} dropped: null or non-finite)\n",
        ys.len()
    );
    let _ = writeln!(
        out,
        "{:<32} {:>14} {:>6} {:>12} {:>12}",
        "term", "sum sq", "df", "F", "p-value"
    );
    for t in &table.terms {
        let _ = writeln!(
            out,
            "{:<32} {:>14.6} {:>6} {:>12.4} {:>12.4e}",
            t.term, t.sum_sq, t.df, t.f, t.pvalue
        );
    }
    let _ = writeln!(
        out,
        "{:<32} {:>14.6} {:>6}",
        "residual", table.residual.sum_sq, table.residual.df
    );
    match rm {
        Some(Ok(terms)) => {
            json["repeated_measures"] = json!(terms
                .iter()
                .map(|t| json!({"term": t.term, "f": num(t.f), "num_df": num(t.num_df), "den_df": num(t.den_df),
                                "pvalue": num(t.pvalue), "eps_gg": num(t.eps_gg), "pvalue_gg": num(t.pvalue_gg)}))
                .collect::<Vec<_>>());
            let _ = writeln!(
                out,
                "\nrepeated-measures ANOVA (subject = {}), Greenhouse–Geisser corrected:\n{:<32} {:>12} {:>8} {:>8} {:>8} {:>12} {:>12}",
                a.block.as_deref().unwrap_or(""),
                "term", "F", "num df", "den df", "GG eps", "p-value", "GG p-value"
            );
            for t in &terms {
                let _ = writeln!(
                    out,
                    "{:<32} {:>12.4} {:>8} {:>8} {:>8.4} {:>12.4e} {:>12.4e}",
                    t.term, t.f, t.num_df, t.den_df, t.eps_gg, t.pvalue, t.pvalue_gg
                );
            }
        }
        Some(Err(e)) => {
            json["repeated_measures_error"] = json!(e.to_string());
            let _ = writeln!(out, "\nno repeated-measures ANOVA: {e}");
        }
        None => {}
    }
    output::print(
        &Plain {
            json: vec![json],
            text: out,
        },
        a.json,
    )
}
