//! `kind = "replicate"`, and the `[replicate]` stage that may follow a search: a gene list
//! (or the top K genes of a study's store) plus the baseline, every gene on the same seed
//! list, optionally each with its tuned hyperparameters from a tune study.

use crate::gene::Gene;
use crate::record::{RunRow, Stage};
use crate::search::{self, tune};
use crate::study::spec::{Ctx, RawStudy, SpecError, Study};
use crate::study::store::{read_parquet, schema::runs_from_frame};
use crate::study::{Driven, Reached, Runner};
use crate::train::TrainConfig;
use anyhow::{bail, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;

/// `hparams = { from = "tune study" }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HparamsSpec {
    /// The tune study whose best trial per gene supplies the tuned hyperparameters.
    pub from: String,
}

/// `from = { study = "…", top = K }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromSpec {
    /// Study whose store ranks the genes (this study's own name: its search stage).
    pub study: String,
    /// How many of its best genes (by mean validation ppl) to replicate.
    pub top: usize,
}

/// `[replicate]` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplicate {
    /// Explicit genes.
    pub genes: Option<Vec<Spanned<String>>>,
    /// Or the top K of a study's store.
    pub from: Option<Spanned<FromSpec>>,
    /// Add the baseline gene `dot+softmax+none+fixed` (default true).
    #[serde(default = "yes")]
    pub include_baseline: bool,
    /// Seeds of the replication when it follows a search in the same file (default
    /// 101..=110, disjoint from the search's seeds so the winner's lucky run is not reused).
    pub seeds: Option<Spanned<Vec<u64>>>,
    /// Each gene's tuned hyperparameters from a tune study.
    pub hparams: Option<Spanned<HparamsSpec>>,
}

fn yes() -> bool {
    true
}

/// Default seed list of a replicate study.
pub fn default_replicate_seeds() -> Vec<u64> {
    (1..=10).collect()
}

/// Default seed list of a replication that follows a search in the same file.
pub fn default_followup_seeds() -> Vec<u64> {
    (101..=110).collect()
}

/// Where the genes of a replication come from, resolved against a store later.
#[derive(Debug, Clone, PartialEq)]
pub enum GeneSource {
    /// Listed in the file.
    List(Vec<Gene>),
    /// The top K genes of a study (by mean validation ppl over its runs).
    Top {
        /// The study's name (its folder in the store).
        study: String,
        /// K.
        top: usize,
        /// Where `from` was written, for errors found when resolving it.
        at: String,
    },
}

/// A replication stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Replication {
    /// Its genes.
    pub genes: GeneSource,
    /// Add the baseline.
    pub include_baseline: bool,
    /// The common seed list.
    pub seeds: Vec<u64>,
    /// `(tune study, where it was written)`: each gene trains with its tuned values.
    pub hparams_from: Option<(String, String)>,
}

/// A validated `kind = "replicate"` study.
#[derive(Debug, Clone, PartialEq)]
pub struct Replicate {
    /// Its only stage.
    pub replication: Replication,
}

/// Validates the `[replicate]` of a replicate study (required).
pub(crate) fn validate_kind(raw: &RawStudy, ctx: &Ctx<'_>) -> Result<Replicate, SpecError> {
    match &raw.replicate {
        None => Err(ctx.err(
            None,
            "kind = \"replicate\" needs a [replicate] section with `genes = [...]` or `from = { study = \"...\", top = K }`".into(),
        )),
        Some(r) => Ok(Replicate {
            replication: validate_section(r, ctx)?,
        }),
    }
}

/// Validates the optional `[replicate]` stage after a search.
pub(crate) fn validate_followup(
    raw: &RawStudy,
    ctx: &Ctx<'_>,
) -> Result<Option<Replication>, SpecError> {
    raw.replicate
        .as_ref()
        .map(|r| validate_section(r, ctx))
        .transpose()
}

fn validate_section(r: &Spanned<RawReplicate>, ctx: &Ctx<'_>) -> Result<Replication, SpecError> {
    let own_kind = ctx.kind == super::Kind::Replicate;
    let rs = r.get_ref();
    let genes = match (&rs.genes, &rs.from) {
        (Some(_), Some(f)) => {
            return Err(ctx.err(
                Some(f.span()),
                "[replicate] has both `genes` and `from`; keep one".into(),
            ))
        }
        (None, None) => {
            return Err(ctx.err(
                Some(r.span()),
                "[replicate] needs `genes = [...]` or `from = { study = \"...\", top = K }`".into(),
            ))
        }
        (Some(list), None) => {
            let mut genes = Vec::new();
            for g in list {
                let gene: Gene = g
                    .get_ref()
                    .parse()
                    .map_err(|e| ctx.err(Some(g.span()), format!("[replicate] genes: {e}")))?;
                if genes.contains(&gene) {
                    return Err(ctx.err(
                        Some(g.span()),
                        format!("[replicate] gene `{gene}` is listed twice"),
                    ));
                }
                genes.push(gene);
            }
            if genes.is_empty() && !rs.include_baseline {
                return Err(ctx.err(
                    Some(r.span()),
                    "[replicate] genes is empty and include_baseline = false: nothing to run"
                        .into(),
                ));
            }
            GeneSource::List(genes)
        }
        (None, Some(f)) => {
            let fs = f.get_ref();
            if fs.top == 0 {
                return Err(ctx.err(
                    Some(f.span()),
                    "[replicate] from.top must be at least 1".into(),
                ));
            }
            if own_kind && fs.study == ctx.name {
                return Err(ctx.err(
                    Some(f.span()),
                    "a replicate study cannot take its genes from itself; name the search study"
                        .into(),
                ));
            }
            GeneSource::Top {
                study: fs.study.clone(),
                top: fs.top,
                at: ctx.at(f.span()),
            }
        }
    };
    let seeds = match (&rs.seeds, own_kind) {
        (Some(s), true) => return Err(ctx.err(
            Some(s.span()),
            "in a replicate study the seed list is the top-level `seeds`; remove [replicate] seeds"
                .into(),
        )),
        (Some(s), false) => ctx.seeds(s, "[replicate] seeds")?,
        (None, true) => ctx.seeds.to_vec(),
        (None, false) => default_followup_seeds(),
    };
    let hparams_from = match &rs.hparams {
        Some(h) if h.get_ref().from == ctx.name => {
            return Err(ctx.err(
                Some(h.span()),
                "`hparams.from` must name a kind = \"tune\" study, not this one".into(),
            ))
        }
        Some(h) => Some((h.get_ref().from.clone(), ctx.at(h.span()))),
        None => None,
    };
    Ok(Replication {
        genes,
        include_baseline: rs.include_baseline,
        seeds,
        hparams_from,
    })
}

/// What a study takes from other studies' stores, resolved before anything is written.
#[derive(Debug, Clone, Default)]
pub struct External {
    /// `from = { study = OTHER, top = K }`: OTHER's top K genes.
    pub genes: Option<Vec<Gene>>,
    /// `hparams = { from = TUNE }`: each tuned gene's best configuration in TUNE.
    pub hparams: Option<BTreeMap<Gene, TrainConfig>>,
}

fn read_other(root: &Path, other: &str, at: &str, key: &str) -> Result<Vec<RunRow>> {
    let path = root.join(other).join("runs.parquet");
    if !path.exists() {
        bail!(
            "{at}: `{key}` names study `{other}`, but {} does not exist; run that study first (or pass the --store that holds it)",
            path.display()
        );
    }
    let rows = read_parquet(&path)
        .and_then(|df| runs_from_frame(&df))
        .map_err(|e| {
            anyhow::anyhow!(
                "{at}: `{key}` names study `{other}`, but {} cannot be read: {e:#}; run `evoattn run` on that study again to rebuild it",
                path.display()
            )
        })?;
    // Hurdle rows are partial runs (a GA's hurdle), never results to rank genes by.
    let rows: Vec<RunRow> = rows
        .into_iter()
        .filter(|r| r.stage != Stage::Hurdle)
        .collect();
    if rows.is_empty() {
        bail!(
            "{at}: study `{other}` has no finished runs in {}",
            path.display()
        );
    }
    Ok(rows)
}

/// Resolves `from = { study = OTHER, top = K }` and `hparams = { from = TUNE }` of the
/// study's replication against the other studies' `runs.parquet` under `root`.
pub fn resolve_external(study: &Study, root: &Path) -> Result<External> {
    if let crate::study::KindSpec::Race(r) = &study.kind {
        return Ok(External {
            genes: match &r.genes {
                GeneSource::Top {
                    study: other,
                    top,
                    at,
                } => Some(search::top_genes(
                    &read_other(root, other, at, "from")?,
                    *top,
                )),
                GeneSource::List(_) => None,
            },
            hparams: None,
        });
    }
    let Some(rep) = study.kind.replication() else {
        return Ok(External::default());
    };
    let hparams = match &rep.hparams_from {
        None => None,
        Some((tune_study, at)) => {
            let rows = read_other(root, tune_study, at, "hparams.from")?;
            let best = tune::best_trials(&rows);
            if best.is_empty() {
                bail!(
                    "{at}: study `{tune_study}` has no tune runs (is it a kind = \"tune\" study?)"
                );
            }
            let mut out = BTreeMap::new();
            for (g, t) in best {
                if !t.fitness.is_finite() {
                    bail!("{at}: every trial of `{g}` in `{tune_study}` diverged on some seed; there is no tuned configuration to replicate");
                }
                let c = tune::apply_tuned(&study.config, &t.config).map_err(|d| {
                    anyhow::anyhow!("{at}: the tuned hyperparameters of `{tune_study}` do not transfer: {d}; use the same preset and overrides as the tune study")
                })?;
                out.insert(g, c);
            }
            Some(out)
        }
    };
    let genes = match &rep.genes {
        GeneSource::Top {
            study: other,
            top,
            at,
        } if *other != study.name => {
            let rows = read_other(root, other, at, "from")?;
            Some(search::top_genes(&rows, *top))
        }
        _ => None,
    };
    if let (Some(h), Some((tune_study, at))) = (&hparams, &rep.hparams_from) {
        let mut genes: Vec<Gene> = match (&genes, &rep.genes) {
            (Some(g), _) => g.clone(),
            (None, GeneSource::List(g)) => g.clone(),
            _ => vec![],
        };
        if rep.include_baseline {
            genes.push(Gene::BASELINE);
        }
        check_tuned(&genes, h, tune_study, at)?;
    }
    Ok(External { genes, hparams })
}

/// Every gene of a tuned replication must have a tuned configuration.
fn check_tuned(
    genes: &[Gene],
    tuned: &BTreeMap<Gene, TrainConfig>,
    tune: &str,
    at: &str,
) -> Result<()> {
    if let Some(g) = genes.iter().find(|g| !tuned.contains_key(g)) {
        bail!("{at}: gene `{g}` was not tuned in `{tune}`; add it to that study's [tune] genes or drop it here");
    }
    Ok(())
}

impl Replication {
    /// The replication stage: its genes (the top K of this study's search once that is
    /// complete), the baseline, every gene on every seed.
    pub fn drive(
        &self,
        external: External,
        runner: &mut dyn Runner,
        out: &mut Driven,
    ) -> Result<()> {
        let mut genes: Vec<Gene> = match (&self.genes, external.genes) {
            (GeneSource::List(g), _) => g.clone(),
            (GeneSource::Top { .. }, Some(g)) => g,
            (GeneSource::Top { top, .. }, None) => {
                if !out.complete {
                    return Ok(());
                }
                let Some(search) = out.stages.iter().find(|s| s.stage == Stage::Search) else {
                    bail!(
                        "a replication of this study's own top genes needs its search stage first"
                    );
                };
                let rows: Vec<&RunRow> = search
                    .requests
                    .iter()
                    .filter_map(|&(g, s)| runner.finished(g, s))
                    .collect();
                search::top_genes(rows, *top)
            }
        };
        if self.include_baseline && !genes.contains(&Gene::BASELINE) {
            genes.insert(0, Gene::BASELINE);
        }
        let requests: Vec<(Gene, u64)> = genes
            .iter()
            .flat_map(|&g| self.seeds.iter().map(move |&s| (g, s)))
            .collect();
        if let Some(h) = external.hparams {
            // Genes ranked by this study's own search are only known now.
            if let Some((tune, at)) = &self.hparams_from {
                check_tuned(&genes, &h, tune, at)?;
            }
            runner.planner_mut().per_gene = h;
        }
        let complete = runner.ensure(Stage::Replicate, &requests, false)?;
        out.push(Reached::new(
            Stage::Replicate,
            requests,
            runner.planner(),
            complete,
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{study, FakeRunner};
    use super::*;

    #[test]
    fn every_gene_and_the_baseline_on_every_seed() {
        let s = study(
            "name = \"r\"\nkind = \"replicate\"\nseeds = [3, 1]\n[replicate]\ngenes = [\"dot+sparsemax+output_gate+learned\", \"cosine+softmax+none+fixed\"]\n",
        );
        let mut r = FakeRunner::new(&s);
        let d = s.kind.drive(&s, External::default(), &mut r).unwrap();
        let req = r.requests(Stage::Replicate);
        assert_eq!(req.len(), 3 * 2);
        assert_eq!(req[0], (Gene::BASELINE, 3));
        assert_eq!(req[1], (Gene::BASELINE, 1));
        assert!(d.complete);
        assert_eq!(d.stages[0].ids.len(), 6);
    }

    #[test]
    fn tuned_hyperparameters_go_to_their_genes_only() {
        let s = study(
            "name = \"r\"\nkind = \"replicate\"\nseeds = [1]\n[replicate]\ngenes = [\"dot+sparsemax+output_gate+learned\"]\n",
        );
        let mut tuned = s.config.clone();
        tuned.lr = 7e-3;
        let ext = External {
            genes: None,
            hparams: Some(BTreeMap::from([(Gene::PUBLISHED_WINNER, tuned.clone())])),
        };
        let mut r = FakeRunner::new(&s);
        s.kind.drive(&s, ext, &mut r).unwrap();
        assert_eq!(r.planner.config_for(Gene::PUBLISHED_WINNER).lr, 7e-3);
        assert_eq!(r.planner.config_for(Gene::BASELINE).lr, s.config.lr);
        let ids: Vec<&String> = r.log.iter().map(|l| &l.3).collect();
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], ids[1]);
    }
}
