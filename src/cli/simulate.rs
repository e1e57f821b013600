//! `evoattn simulate`: how often would this study's search pick the true best gene at this
//! noise? The study's own strategy, or (`--compare`) five strategies at equal run budget,
//! on a landscape from `[simulate]` or fitted from stores.

use super::output::{self, num, Render};
use super::run::load_study;
use anyhow::{bail, Result};
use clap::Args;
use evoattn::report::plots;
use evoattn::search::simulate::{self, Landscape, Strategy, StrategyResult};
use evoattn::search::EvolveSpec;
use evoattn::study::store::write_atomic;
use evoattn::study::KindSpec;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `evoattn simulate`.
#[derive(Args)]
pub struct SimulateArgs {
    /// Study file (TOML): its search (evolve, random_search or race) and `[simulate]`.
    pub study: PathBuf,
    /// Fit the landscape from this study's store folder (repeatable; adds to
    /// `[simulate] from`).
    #[arg(long, value_name = "STORE_DIR")]
    pub noise_from: Vec<PathBuf>,
    /// Simulated studies per strategy (default: `[simulate] replicates`, else 1000).
    #[arg(long)]
    pub replicates: Option<usize>,
    /// Compare the published GA, the GA with the baseline and re-evaluated elites, random
    /// search, GA then race, and a race over a random shortlist, at the published GA's run
    /// budget.
    #[arg(long)]
    pub compare: bool,
    /// Seed of the simulation (default: `[simulate] seed`, else 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write report.md, simulate.json and report.simulate.svg into this folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// One JSON object per strategy on stdout.
    #[arg(long)]
    pub json: bool,
}

struct Results {
    rows: Vec<StrategyResult>,
    budget: Option<f64>,
}

fn est_json(v: &mut Value, key: &str, e: simulate::Estimate) {
    v[key] = num(e.mean);
    v[format!("{key}_se")] = num(e.se);
}

impl Render for Results {
    fn json(&self) -> Vec<Value> {
        self.rows
            .iter()
            .map(|r| {
                let mut v = json!({"strategy": r.strategy});
                est_json(&mut v, "p_correct", r.p_correct);
                est_json(&mut v, "p_within_margin", r.p_within_margin);
                est_json(&mut v, "regret", r.regret);
                est_json(&mut v, "winners_curse", r.winners_curse);
                est_json(&mut v, "runs", r.runs);
                if let Some(b) = self.budget {
                    v["budget"] = num(b.round());
                }
                v
            })
            .collect()
    }
    fn text(&self) -> String {
        let mut t = format!(
            "{:<52} {:>15} {:>15} {:>15} {:>16} {:>13}\n",
            "strategy", "P(true best)", "P(within δ)", "regret (ppl)", "curse (ppl)", "runs"
        );
        let e = |x: simulate::Estimate, d: usize| format!("{:.d$} ± {:.d$}", x.mean, x.se);
        for r in &self.rows {
            let _ = writeln!(
                t,
                "{:<52} {:>15} {:>15} {:>15} {:>16} {:>13}",
                r.strategy,
                e(r.p_correct, 3),
                e(r.p_within_margin, 3),
                e(r.regret, 2),
                e(r.winners_curse, 2),
                e(r.runs, 1)
            );
        }
        if let Some(b) = self.budget {
            let _ = writeln!(
                t,
                "budget: {b:.0} runs per simulated study (the published GA's mean)"
            );
        }
        t
    }
}

/// Runs `evoattn simulate`.
pub fn run(a: &SimulateArgs) -> Result<()> {
    let study = load_study(&a.study)?;
    let spec = study.simulate.clone();
    let base = a.study.parent().unwrap_or(Path::new("."));
    let hurdle_at = match &study.kind {
        KindSpec::Evolve(e) => e.spec.hurdle.map(|h| h.at),
        _ => None,
    };
    let (land, how) = evoattn::study::landscape::landscape(&spec, &a.noise_from, base, hurdle_at)?;
    let replicates = a.replicates.or(spec.replicates).unwrap_or(1000);
    if replicates < 2 {
        bail!("--replicates must be at least 2, got {replicates}");
    }
    let seed = a.seed.or(spec.seed).unwrap_or(0);
    let margin = study.analysis.margin;
    let ga = match &study.kind {
        KindSpec::Evolve(e) => e.spec.clone(),
        _ => EvolveSpec::default(),
    };
    let start = Instant::now();
    let (strategies, budget) = if a.compare {
        let all = simulate::compare_strategies(&ga);
        let b = simulate::natural_runs_mean(&all[0], &land, replicates, seed)?;
        (all, Some(b))
    } else {
        let s = match &study.kind {
            KindSpec::Evolve(e) => Strategy::Ga(e.spec.clone(), study.seeds.clone()),
            KindSpec::RandomSearch(r) => Strategy::Random(r.spec.clone()),
            KindSpec::Race(r) => match &r.genes {
                evoattn::study::kinds::replicate::GeneSource::List(g) => {
                    Strategy::Race(r.spec.clone(), g.clone())
                }
                _ => bail!("simulate needs the race's candidates listed (`genes = [...]`)"),
            },
            _ => bail!(
                "simulate runs search strategies: the study must be kind = \"evolve\", \"random_search\" or \"race\" (or use --compare)"
            ),
        };
        (vec![s], None)
    };
    let rows: Vec<StrategyResult> = strategies
        .iter()
        .map(|s| {
            simulate::simulate(
                s,
                &land,
                replicates,
                budget.map(|b| b.round() as usize),
                margin,
                seed,
            )
        })
        .collect::<Result<_>>()?;
    let secs = start.elapsed().as_secs_f64();
    let res = Results { rows, budget };
    eprintln!("{replicates} simulated studies per strategy on a landscape {how} in {secs:.1} s");
    if let Some(dir) = &a.out {
        write_out(
            dir,
            &study.name,
            &res,
            &land,
            &how,
            replicates,
            seed,
            margin,
        )?;
    }
    output::print(&res, a.json)
}

#[allow(clippy::too_many_arguments)]
fn write_out(
    dir: &Path,
    name: &str,
    res: &Results,
    land: &Landscape,
    how: &str,
    replicates: usize,
    seed: u64,
    margin: f64,
) -> Result<()> {
    if !dir.is_dir() {
        bail!(
            "--out {}: the folder does not exist; create it first",
            dir.display()
        );
    }
    let json: Vec<Value> = res.json();
    let text = json
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    write_atomic(&dir.join("simulate.json"), |f| {
        std::io::Write::write_all(f, text.as_bytes()).map_err(Into::into)
    })?;
    let (best, winners) = land.best();
    let mut md = format!(
        "# Simulation `{name}`\n\n{replicates} simulated studies per strategy (seed {seed}) on a landscape {how}: seed sd {:.3} ppl (shared by every gene on a seed), gene × seed sd {:.3} ppl, true best {} at {:.2} ppl{}. δ = {margin} ppl. Values are means over the simulated studies ± their Monte Carlo standard errors.\n\n| strategy | P(true best) | P(within δ) | regret (ppl) | winner's curse (ppl) | runs |\n|---|---:|---:|---:|---:|---:|\n",
        land.seed_sd,
        land.interaction_sd,
        winners.iter().map(|g| format!("`{g}`")).take(3).collect::<Vec<_>>().join(", "),
        best,
        if winners.len() > 3 { format!(" (and {} more tied)", winners.len() - 3) } else { String::new() }
    );
    for r in &res.rows {
        let _ = writeln!(
            md,
            "| {} | {:.3} ± {:.3} | {:.3} ± {:.3} | {:.2} ± {:.2} | {:.2} ± {:.2} | {:.1} ± {:.1} |",
            r.strategy,
            r.p_correct.mean,
            r.p_correct.se,
            r.p_within_margin.mean,
            r.p_within_margin.se,
            r.regret.mean,
            r.regret.se,
            r.winners_curse.mean,
            r.winners_curse.se,
            r.runs.mean,
            r.runs.se
        );
    }
    if let Some(b) = res.budget {
        let _ = writeln!(md, "\nEvery strategy was held to {b:.0} runs per simulated study, the published GA's mean.");
    }
    let chart = plots::LineChart {
        title: "P(true best) against runs used".into(),
        x_desc: "runs used".into(),
        y_desc: "P(true best)".into(),
        x_categories: vec![],
        integer_x: false,
        series: res
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| plots::Series {
                label: r.strategy.clone(),
                points: vec![(r.runs.mean, r.p_correct.mean)],
                band: vec![],
                mark: plots::Mark::Dots,
                color: i,
            })
            .collect(),
    };
    let svg = plots::line_chart(&chart)?;
    write_atomic(&dir.join("report.simulate.svg"), |f| {
        std::io::Write::write_all(f, svg.as_bytes()).map_err(Into::into)
    })?;
    md += "\n![P(true best) against runs used](report.simulate.svg)\n";
    write_atomic(&dir.join("report.md"), |f| {
        std::io::Write::write_all(f, md.as_bytes()).map_err(Into::into)
    })?;
    Ok(())
}
