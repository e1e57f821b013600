//! Significance reports rebuilt from a study's Parquet store alone (no training): a verdict
//! per gene against the baseline, the leaderboard, the comparisons with their statistics,
//! the noise, caveats generated from the data and a reproducibility block. Deterministic:
//! the bootstrap and ASO are seeded and nothing depends on the clock, so a rerun gives the
//! same bytes.
//!
//! Kept apart as criterion.rs does: [`analysis`] (statistics of the runs), [`markdown`]
//! (the text), [`charts`] and [`plots`] (SVG), [`export`] (`tests.parquet`). A study kind
//! with its own analysis adds a [`Section`] ([`tune`], [`ablation`]).

pub mod ablation;
pub mod analysis;
pub mod charts;
pub mod contrast;
pub mod export;
pub mod hurdle;
pub mod markdown;
pub mod plots;
pub mod race;
pub mod tune;

pub use analysis::{analyse, Analysis, AsoResult, Comparison, Line, Options, Verdict};
pub use charts::best_so_far;
pub use export::tests_frame;
pub(crate) use markdown::{f2, pfmt};
pub use markdown::{markdown, sentence, PlotFiles};

use crate::record::RunRow;
use crate::study::spec::AnalysisSpec;
use crate::study::store::schema::{
    curves_from_frame, generations_from_frame, race_from_frame, runs_from_frame,
};
use crate::study::store::{read_parquet, write_atomic, write_parquet, StoreMeta};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// A study kind's own part of the report.
pub trait Section {
    /// Plain-words lines that open the verdict (none by default).
    fn verdict(&self, _alpha: f64) -> Vec<String> {
        Vec::new()
    }
    /// The section's Markdown; `plot` names its chart's file when one was drawn.
    fn markdown(&self, alpha: f64, plot: Option<&str>) -> String;
    /// The kind of its plot file (`<stem>.<kind>.svg`).
    fn plot_kind(&self) -> &'static str;
    /// Its chart.
    fn chart(&self) -> plots::LineChart;
}

impl Analysis {
    /// The kind sections present, in report order.
    pub fn sections(&self) -> Vec<&dyn Section> {
        let mut v: Vec<&dyn Section> = Vec::new();
        if let Some(t) = &self.tune {
            v.push(t);
        }
        if let Some(a) = &self.ablation {
            v.push(a);
        }
        if let Some(r) = &self.race {
            v.push(r);
        }
        v
    }
}

/// Facts for the reproducibility block.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// Study name.
    pub study: String,
    /// Command that produced the store.
    pub command: String,
    /// SHA-256 of the study file.
    pub study_sha256: String,
}

impl Provenance {
    /// The provenance of the study whose store folder is `dir` (from its rows and
    /// `meta.json`).
    pub fn from_store(dir: &Path, rows: &[RunRow]) -> Provenance {
        let meta = StoreMeta::read(dir).unwrap_or_default();
        Provenance {
            study: rows
                .first()
                .map(|r| r.study.clone())
                .unwrap_or_else(|| dir.display().to_string()),
            command: format!(
                "evoattn run {}",
                if meta.study_file.is_empty() {
                    "STUDY.toml"
                } else {
                    &meta.study_file
                }
            ),
            study_sha256: if meta.study_sha256.is_empty() {
                "unknown".into()
            } else {
                meta.study_sha256
            },
        }
    }
}

/// The rows of a study's `runs.parquet` in store folder `dir`.
pub fn read_runs(dir: &Path) -> Result<Vec<RunRow>> {
    let runs = dir.join("runs.parquet");
    if !runs.exists() {
        bail!(
            "{} does not exist: run the study first (evoattn run STUDY.toml)",
            runs.display()
        );
    }
    runs_from_frame(&read_parquet(&runs)?)
}

/// What `evoattn report` asks for beyond the store itself.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Where to write the report (default `report.md` in the store folder).
    pub out: Option<PathBuf>,
    /// Another search's store folder to plot against at equal budget.
    pub compare_search: Option<PathBuf>,
    /// Another study's store folder to contrast with (difference-in-differences).
    pub contrast: Option<PathBuf>,
    /// Overrides of the study's `[analysis] margin`.
    pub margin: Option<f64>,
    /// Overrides of the study's `[analysis] alpha`.
    pub alpha: Option<f64>,
}

/// The analysis options of the study in store folder `dir`: its `study.toml`'s
/// `[analysis]` (defaults without one), then `margin` and `alpha` when given.
pub fn options_for(dir: &Path, margin: Option<f64>, alpha: Option<f64>) -> Result<Options> {
    let mut spec = match std::fs::read_to_string(dir.join("study.toml")) {
        Ok(text) => AnalysisSpec::from_study_text(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("study.toml").display()))?,
        Err(_) => AnalysisSpec::default(),
    };
    if let Some(m) = margin {
        spec.margin = m;
    }
    if let Some(a) = alpha {
        spec.alpha = a;
    }
    spec.check()
        .map_err(|e| anyhow::anyhow!("--margin/--alpha: {e}"))?;
    Ok(Options {
        margin: spec.margin,
        alpha: spec.alpha,
        ..Options::default()
    })
}

/// The rows and name of the study in store folder `dir`, for `flag` errors.
fn other_study(dir: &Path, flag: &str) -> Result<(String, Vec<RunRow>)> {
    if !dir.join("runs.parquet").exists() {
        bail!(
            "{flag} {}: {} does not exist; pass a study's store folder (e.g. runs/NAME)",
            dir.display(),
            dir.join("runs.parquet").display()
        );
    }
    let r = read_runs(dir)?;
    let name = r
        .first()
        .map_or_else(|| dir.display().to_string(), |x| x.study.clone());
    Ok((name, r))
}

/// Writes the report of the study whose store folder is `dir` as `req` asks; returns the
/// report's path.
pub fn write_for_store(dir: &Path, req: &Request) -> Result<PathBuf> {
    let rows = read_runs(dir)?;
    let prov = Provenance::from_store(dir, &rows);
    let opts = options_for(dir, req.margin, req.alpha)?;
    let out = req.out.clone().unwrap_or_else(|| dir.join("report.md"));
    let search = req
        .compare_search
        .as_deref()
        .map(|c| other_study(c, "--compare-search"))
        .transpose()?;
    let contrast = req
        .contrast
        .as_deref()
        .map(|c| other_study(c, "--contrast"))
        .transpose()?
        .map(|(name, other)| contrast::contrast(&rows, &other, &name, opts.alpha));
    write_full(
        &rows,
        &prov,
        &out,
        dir,
        &Extras {
            options: opts,
            compare_search: search.as_ref().map(|(n, r)| (n.as_str(), r.as_slice())),
            contrast: contrast.as_ref(),
        },
    )?;
    Ok(out)
}

/// What a report may add to the study's own analysis.
pub struct Extras<'a> {
    /// Analysis options.
    pub options: Options,
    /// Another search (name, rows) to plot against at equal budget.
    pub compare_search: Option<(&'a str, &'a [RunRow])>,
    /// A contrast with another study.
    pub contrast: Option<&'a contrast::Contrast>,
}

/// Writes `report.md` at `out` (with its SVG plots beside it, named after it) and
/// `tests.parquet` in `store_dir`, with the default options.
pub fn write(rows: &[RunRow], prov: &Provenance, out: &Path, store_dir: &Path) -> Result<Analysis> {
    write_full(
        rows,
        prov,
        out,
        store_dir,
        &Extras {
            options: Options::default(),
            compare_search: None,
            contrast: None,
        },
    )
}

/// [`write`] with `extras`: options, another search to plot against, a contrast.
pub fn write_full(
    rows: &[RunRow],
    prov: &Provenance,
    out: &Path,
    store_dir: &Path,
    extras: &Extras<'_>,
) -> Result<Analysis> {
    let compare = extras.compare_search;
    let mut a = analyse(rows, extras.options);
    if let Some(p) = Some(store_dir.join("race.parquet")).filter(|p| p.exists()) {
        a.race = race::analyse(&race_from_frame(&read_parquet(&p)?)?);
    }
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Never create folders the user did not ask for (`--out /no/such/dir/r.md`).
    if !dir.is_dir() {
        bail!(
            "cannot write the report {}: the folder {} does not exist; create it first or pass another --out",
            out.display(),
            dir.display()
        );
    }
    let stem = out
        .file_stem()
        .map_or_else(|| "report".into(), |s| s.to_string_lossy().to_string());
    let curves = match store_dir.join("curves.parquet") {
        p if p.exists() => curves_from_frame(&read_parquet(&p)?)?,
        _ => vec![],
    };
    let gens = match store_dir.join("generations.parquet") {
        p if p.exists() => generations_from_frame(&read_parquet(&p)?)?,
        _ => vec![],
    };
    let mut svgs: Vec<(&'static str, String)> = Vec::new();
    let by_line: Vec<(String, Vec<f64>)> = a
        .lines
        .iter()
        .map(|l| {
            let v = rows
                .iter()
                .filter(|r| r.gene == l.gene && a.unit_ids.contains(&r.unit_id))
                .filter_map(|r| r.val_ppl)
                .collect();
            (l.gene.to_string(), v)
        })
        .collect();
    if by_line.len() <= 40 {
        svgs.push((
            "seeds",
            plots::strip_chart(
                "Validation ppl per seed (box: quartiles)",
                "validation ppl",
                &by_line,
            )?,
        ));
    }
    if let Some(c) = charts::curves_chart(&a, rows, &curves) {
        svgs.push(("curves", plots::line_chart(&c)?));
    }
    if let Some(c) = charts::ga_chart(&gens) {
        svgs.push(("ga", plots::line_chart(&c)?));
    }
    if let Some((name, other)) = compare {
        let (mine, theirs) = (best_so_far(rows), best_so_far(other));
        if !mine.is_empty() && !theirs.is_empty() {
            let budget = mine.len().min(theirs.len());
            let series = [(prov.study.as_str(), &mine), (name, &theirs)]
                .iter()
                .enumerate()
                .map(|(i, (n, v))| plots::Series {
                    label: n.to_string(),
                    points: v.iter().copied().filter(|p| p.1.is_finite()).collect(),
                    band: vec![],
                    mark: plots::Mark::Line,
                    color: i,
                })
                .collect();
            svgs.push((
                "search-vs",
                plots::line_chart(&plots::LineChart {
                    title: format!(
                        "Best fitness so far (equal budget: first {budget} runs of each)"
                    ),
                    x_desc: "runs trained".into(),
                    y_desc: "best mean val ppl so far".into(),
                    x_categories: vec![],
                    integer_x: true,
                    series,
                })?,
            ));
        }
    }
    for sec in a.sections() {
        svgs.push((sec.plot_kind(), plots::line_chart(&sec.chart())?));
    }
    let mut files = PlotFiles::new();
    for (kind, svg) in svgs {
        let name = format!("{stem}.{kind}.svg");
        write_atomic(&dir.join(&name), |f| {
            std::io::Write::write_all(f, svg.as_bytes()).map_err(Into::into)
        })?;
        files.insert(kind, name);
    }
    let mut md = markdown(&a, rows, prov, &files);
    let failures = crate::study::store::read_failures(store_dir);
    if !failures.is_empty() {
        // The first line says the study is incomplete and why.
        let list: Vec<String> = failures
            .iter()
            .map(|f| {
                format!(
                    "`{}` seeds {:?} ({}: {})",
                    f.gene, f.seeds, f.kind, f.message
                )
            })
            .collect();
        md = format!(
            "**Incomplete:** {} pack(s) failed in the last attempt — {}; their units are missing from every table below. Rerun `evoattn run` to retry them.\n\n{md}",
            failures.len(),
            list.join("; ")
        );
    }
    if let Some(h) = hurdle::markdown(rows) {
        let at = md.find("\n## Caveats").unwrap_or(md.len());
        md.insert_str(at, &h);
    }
    if let Some(c) = extras.contrast {
        // Before the caveats and reproducibility blocks.
        let at = md.find("\n## Caveats").unwrap_or(md.len());
        md.insert_str(at, &contrast::markdown(c));
    }
    write_atomic(out, |f| {
        std::io::Write::write_all(f, md.as_bytes()).map_err(Into::into)
    })?;
    write_parquet(&store_dir.join("tests.parquet"), &mut tests_frame(&a)?)?;
    Ok(a)
}
