//! `kind = "evolve"`: the GA of the seed study over the gene space ([`crate::search::evolve`]),
//! one evaluation per (gene, seed), optionally followed by a replication of its top genes.

use super::replicate::{self, External, Replication};
use crate::gene::GENE_COUNT;
use crate::record::Stage;
use crate::search::{self, EvolveSpec};
use crate::study::spec::{Ctx, RawStudy, SpecError, Study, MAX_SEED};
use crate::study::{scores_of, Driven, Reached, Runner};
// (Reached is also built by hand for the hurdle stage.)
use anyhow::Result;

/// Most generations an evolve study may run.
pub const MAX_GENERATIONS: usize = 10_000;

/// A validated evolve study.
#[derive(Debug, Clone, PartialEq)]
pub struct Evolve {
    /// `[evolve]` (the published GA by default).
    pub spec: EvolveSpec,
    /// `[replicate]`: the stage after the search.
    pub replicate: Option<Replication>,
}

/// Validates `[evolve]` and the optional `[replicate]`.
pub(crate) fn validate(raw: &RawStudy, ctx: &Ctx<'_>) -> Result<Evolve, SpecError> {
    let spec = match &raw.evolve {
        None => EvolveSpec::default(),
        Some(e) => {
            let span = e.span();
            let e = e.get_ref().clone();
            let bad = |key: &str, m: String| {
                Err(ctx.err(
                    Some(ctx.key_span("evolve", key, span.clone())),
                    format!("[evolve] {m}"),
                ))
            };
            if !(2..=GENE_COUNT).contains(&e.population) {
                return bad(
                    "population",
                    format!(
                        "population = {} is out of range: population must be between 2 and the {GENE_COUNT} genes",
                        e.population
                    ),
                );
            }
            if e.elites == 0 || e.elites >= e.population {
                return bad(
                    "elites",
                    format!(
                        "elites = {} is out of range: elites must be between 1 and population − 1 = {}",
                        e.elites,
                        e.population - 1
                    ),
                );
            }
            if !(1..=MAX_GENERATIONS).contains(&e.generations) {
                return bad(
                    "generations",
                    format!(
                        "generations = {} is out of range: generations must be between 1 and {MAX_GENERATIONS}",
                        e.generations
                    ),
                );
            }
            if !(0.0..=1.0).contains(&e.mutation_rate) {
                return bad(
                    "mutation_rate",
                    format!(
                        "mutation_rate = {} is out of range: mutation_rate must be in [0, 1]",
                        e.mutation_rate
                    ),
                );
            }
            if let Some(h) = &e.hurdle {
                if !(h.at > 0.0 && h.at < 1.0) {
                    return bad(
                        "hurdle",
                        format!("hurdle at = {} is out of range: the hurdle is a fraction of the steps in (0, 1), e.g. at = 0.25", h.at),
                    );
                }
                if !(h.keep > 0.0 && h.keep <= 1.0) {
                    return bad(
                        "hurdle",
                        format!("hurdle keep = {} is out of range: keep is the fraction of genes that go on, in (0, 1], e.g. keep = 0.5", h.keep),
                    );
                }
                if h.kept(e.population) < e.elites {
                    return bad(
                        "hurdle",
                        format!(
                            "hurdle keep = {} lets only {} of the first population's {} genes go on, fewer than elites = {}: a stopped gene would become an elite; raise keep to at least {}",
                            h.keep,
                            h.kept(e.population),
                            e.population,
                            e.elites,
                            e.elites as f64 / e.population as f64
                        ),
                    );
                }
                if ctx.config.steps < 2 {
                    return bad("hurdle", "a hurdle needs at least 2 training steps".into());
                }
            }
            if e.max_evaluations.is_some_and(|m| m < e.population) {
                return bad(
                    "max_evaluations",
                    format!(
                        "max_evaluations must be at least the population ({})",
                        e.population
                    ),
                );
            }
            if e.reevaluate_elites
                && e.fresh_seed_base
                    .checked_add(e.generations as u64)
                    .is_none_or(|last| last > MAX_SEED)
            {
                return bad(
                    "fresh_seed_base",
                    format!(
                        "fresh_seed_base = {} is too large: the fresh seeds fresh_seed_base + generation must stay at most {MAX_SEED}",
                        e.fresh_seed_base
                    ),
                );
            }
            e
        }
    };
    Ok(Evolve {
        spec,
        replicate: replicate::validate_followup(raw, ctx)?,
    })
}

impl Evolve {
    /// The search (generation after generation, each needing the previous one), then the
    /// replication.
    pub fn drive(
        &self,
        study: &Study,
        external: External,
        runner: &mut dyn Runner,
        out: &mut Driven,
    ) -> Result<()> {
        let at = self.spec.hurdle.map(|h| h.step(study.config.steps));
        let runner = std::cell::RefCell::new(runner);
        let outcome = search::evolve_with_hurdle(
            &self.spec,
            &study.seeds,
            |_, missing| {
                let mut r = runner.borrow_mut();
                if r.ensure(Stage::Search, missing, true)? {
                    Ok(Some(scores_of(&**r, missing)))
                } else {
                    Ok(None)
                }
            },
            |_, missing| {
                let at = at.expect("a hurdle");
                let mut r = runner.borrow_mut();
                if r.ensure_hurdle(missing, at)? {
                    Ok(Some(
                        missing
                            .iter()
                            .map(|&(g, s)| {
                                ((g, s), r.finished_hurdle(g, s, at).and_then(|x| x.val_ppl))
                            })
                            .collect(),
                    ))
                } else {
                    Ok(None)
                }
            },
        )?;
        let runner = runner.into_inner();
        if let Some(at) = at {
            let planner = runner.planner();
            out.push(Reached {
                stage: Stage::Hurdle,
                ids: outcome
                    .hurdle_requests
                    .iter()
                    .map(|&(g, s)| crate::study::plan::hurdle_unit_id(&planner.unit(g, s).id, at))
                    .collect(),
                trials: vec![0; outcome.hurdle_requests.len()],
                requests: outcome.hurdle_requests.clone(),
                complete: outcome.complete,
            });
        }
        let complete =
            outcome.complete || (outcome.stopped_by_cap && outcome.pending_generation.is_none());
        out.push(Reached::new(
            Stage::Search,
            outcome.requests.clone(),
            runner.planner(),
            complete,
        ));
        out.evolve = Some(outcome);
        if let Some(rep) = &self.replicate {
            rep.drive(external, runner, out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{study, FakeRunner};
    use super::super::KindSpec;
    use crate::record::Stage;
    use crate::study::kinds::replicate::External;

    #[test]
    fn plans_every_generation_then_replicates_the_top_genes_on_fresh_seeds() {
        let s = study(
            "name = \"q\"\nkind = \"evolve\"\n[evolve]\npopulation = 6\nelites = 2\ngenerations = 3\ninclude_baseline = true\n[replicate]\nfrom = { study = \"q\", top = 2 }\nseeds = [101, 102]\n",
        );
        let mut r = FakeRunner::new(&s);
        let d = s.kind.drive(&s, External::default(), &mut r).unwrap();
        assert!(d.complete);
        let ev = d.evolve.as_ref().unwrap();
        assert_eq!(ev.rows.len(), 6 * 3);
        let search = r.requests(Stage::Search);
        assert!(search.iter().all(|&(_, seed)| seed == 1));
        // Every requested unit is requested once.
        let mut uniq = search.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), search.len());
        // The replication: top 2 of the search plus the baseline, on the fresh seeds.
        let rep = r.requests(Stage::Replicate);
        assert_eq!(rep.len(), 3 * 2);
        assert!(rep.iter().all(|&(_, seed)| seed == 101 || seed == 102));
        assert_eq!(rep[0].0, crate::gene::Gene::BASELINE);
        let best = ev
            .rows
            .iter()
            .min_by(|a, b| a.fitness.total_cmp(&b.fitness))
            .unwrap()
            .gene;
        assert!(rep.iter().any(|&(g, _)| g == best));
        assert_eq!(d.stages.len(), 2);
        assert!(matches!(s.kind, KindSpec::Evolve(_)));
    }
}
