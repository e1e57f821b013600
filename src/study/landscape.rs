//! The fitness landscape of `evoattn simulate`: fitted from finished stores (additive
//! component effects with seed blocks, the seed and gene × seed noise, and for GA hurdles
//! the hurdle noise from learning curves), then the study's `[simulate]` values on top.

use crate::gene::Component;
use crate::record::RunRow;
use crate::search::simulate::Landscape;
use crate::study::spec::SimulateSpec;
use crate::study::store::{curves_from_frame, read_parquet, runs_from_frame};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The landscape: fitted from the stores of `[simulate] from` (relative to `base`, the study
/// file's folder, unless they exist as given) and `extra` (if any), then `[simulate]`'s
/// values on top; with a description of where it came from. `hurdle_at`: the study's GA
/// hurdle, whose noise is fitted from the stores' curves.
pub fn landscape(
    spec: &SimulateSpec,
    extra: &[PathBuf],
    base: &Path,
    hurdle_at: Option<f64>,
) -> Result<(Landscape, String)> {
    let mut dirs: Vec<PathBuf> = spec
        .from
        .iter()
        .flatten()
        .map(|d| {
            let p = PathBuf::from(d);
            if p.is_absolute() || p.exists() {
                p
            } else {
                base.join(p)
            }
        })
        .collect();
    dirs.extend(extra.iter().cloned());
    let mut hurdle_fit = None;
    let mut land = if dirs.is_empty() {
        match (spec.seed_sd, spec.interaction_sd) {
            (Some(s), Some(i)) => Landscape::null(spec.mean.unwrap_or(100.0), s, i),
            _ => bail!("the landscape needs [simulate] seed_sd and interaction_sd (and effects), or stores to fit it from: [simulate] from = [\"runs/NAME\"] or --noise-from runs/NAME"),
        }
    } else {
        let mut rows: Vec<RunRow> = Vec::new();
        for d in &dirs {
            let p = d.join("runs.parquet");
            rows.extend(runs_from_frame(&read_parquet(&p).with_context(|| {
                format!(
                    "--noise-from {}: pass a study's store folder with a runs.parquet",
                    d.display()
                )
            })?)?);
        }
        let mut land = Landscape::fit(&rows)?;
        if let Some(at) = hurdle_at {
            let mut curves = Vec::new();
            for d in &dirs {
                let p = d.join("curves.parquet");
                if p.exists() {
                    curves.extend(curves_from_frame(&read_parquet(&p)?)?);
                }
            }
            hurdle_fit = Landscape::hurdle_sd_from_curves(&rows, &curves, at);
            if let Some((sd, _)) = hurdle_fit {
                land.hurdle_sd = sd;
            }
        }
        land
    };
    let mut how = if dirs.is_empty() {
        "given in [simulate]".to_string()
    } else {
        format!(
            "fitted from {}",
            dirs.iter()
                .map(|d| format!("`{}`", d.display()))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if let Some(s) = spec.seed_sd {
        land.seed_sd = s;
    }
    if let Some(s) = spec.interaction_sd {
        land.interaction_sd = s;
    }
    if let Some(m) = spec.mean {
        land.mean = m;
    }
    match (spec.hurdle_sd, hurdle_fit, hurdle_at) {
        (Some(h), _, _) => {
            land.hurdle_sd = h;
            how += &format!("; hurdle sd {h} from [simulate]");
        }
        (None, Some((sd, n)), Some(at)) => {
            how += &format!("; hurdle sd {sd:.3} ppl from {n} runs' curves at {at} of their steps");
        }
        (None, None, Some(_)) => {
            how += "; hurdle sd 0 (no curves near the hurdle in the stores, no [simulate] hurdle_sd: the hurdle ranks as the end does)";
        }
        _ => {}
    }
    for (comp, levels) in spec.effects.iter().flatten() {
        let c: Component = comp
            .parse()
            .map_err(|e: String| anyhow::anyhow!("[simulate.effects] {e}"))?;
        for (v, e) in levels {
            land.set(c, v, *e)
                .map_err(|m| anyhow::anyhow!("[simulate.effects] {m}"))?;
        }
        how += " (with [simulate.effects])";
    }
    Ok((land, how))
}
