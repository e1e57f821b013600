//! `kind = "race"`: racing over seeds ([`crate::search::race`]) — candidates from a list
//! or another study's top K, plus the baseline (kept to the end by default), every alive
//! candidate on the same seeds round by round — followed by a confirmation stage on fresh
//! seeds whose seed-paired verdicts are the report's (racing's repeated tests do not
//! control error rates).
//!
//! `[race]` keys: `genes = [...]` or `from = { study, top }`; `first_test` (5),
//! `each_test` (1), `test` (`"friedman"` or `"t"`), `alpha` (0.05), `min_survivors` (1),
//! `max_seeds` (20), `max_runs`, `keep_baseline` (true), `confirm_seeds` (default: the ten
//! integers after the last race seed). The race's seeds are the study's `seeds` when
//! given, else 1, 2, 3, …, `max_seeds`.

use super::replicate::{External, GeneSource, Replication};
use crate::gene::Gene;
use crate::record::Stage;
use crate::search::race::{self, RaceSpec, RaceTest};
use crate::study::spec::{Ctx, RawStudy, SpecError};
use crate::study::{scores_of, Driven, Reached, Runner};
use anyhow::Result;
use serde::Deserialize;
use toml::Spanned;

/// `from = { study = "…", top = K }` in `[race]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaceFrom {
    /// The study whose store ranks the genes.
    pub study: String,
    /// How many of its best genes race.
    pub top: usize,
}

/// `[race]` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRace {
    /// Candidates.
    pub genes: Option<Vec<Spanned<String>>>,
    /// Or another study's top K.
    pub from: Option<Spanned<RaceFrom>>,
    /// Seeds before the first test.
    pub first_test: Option<usize>,
    /// Seeds per later round.
    pub each_test: Option<usize>,
    /// `friedman` or `t`.
    pub test: Option<RaceTest>,
    /// Level of the elimination test.
    pub alpha: Option<f64>,
    /// Stop at this many survivors (baseline aside).
    pub min_survivors: Option<usize>,
    /// Stop at this many seeds.
    pub max_seeds: Option<usize>,
    /// Stop before exceeding this many runs.
    pub max_runs: Option<usize>,
    /// Keep the baseline to the end.
    pub keep_baseline: Option<bool>,
    /// Seeds of the confirmation stage.
    pub confirm_seeds: Option<Spanned<Vec<u64>>>,
}

/// A validated race study.
#[derive(Debug, Clone, PartialEq)]
pub struct Race {
    /// The candidates (resolved against a store later when `from`).
    pub genes: GeneSource,
    /// How the race runs.
    pub spec: RaceSpec,
    /// The race's seeds, in order.
    pub seeds: Vec<u64>,
    /// The confirmation stage's seeds.
    pub confirm_seeds: Vec<u64>,
}

/// Validates `[race]` (required).
pub(crate) fn validate(raw: &RawStudy, ctx: &Ctx<'_>) -> Result<Race, SpecError> {
    let Some(r) = &raw.race else {
        return Err(ctx.err(
            None,
            "kind = \"race\" needs a [race] section with `genes = [...]` or `from = { study = \"...\", top = K }`".into(),
        ));
    };
    let at = Some(r.span());
    let rr = r.get_ref();
    let bad = |m: String| Err(ctx.err(at.clone(), format!("[race] {m}")));
    let d = RaceSpec::default();
    let spec = RaceSpec {
        first_test: rr.first_test.unwrap_or(d.first_test),
        each_test: rr.each_test.unwrap_or(d.each_test),
        test: rr.test.unwrap_or(d.test),
        alpha: rr.alpha.unwrap_or(d.alpha),
        min_survivors: rr.min_survivors.unwrap_or(d.min_survivors),
        max_seeds: rr.max_seeds.unwrap_or(d.max_seeds),
        max_runs: rr.max_runs,
        keep_baseline: rr.keep_baseline.unwrap_or(d.keep_baseline),
    };
    if spec.first_test < 2 {
        return bad(format!(
            "first_test must be at least 2 (a test needs two seeds), got {}",
            spec.first_test
        ));
    }
    if spec.each_test == 0 {
        return bad("each_test must be at least 1".into());
    }
    if !(spec.alpha > 0.0 && spec.alpha < 1.0) {
        return bad(format!("alpha must be between 0 and 1, got {}", spec.alpha));
    }
    if spec.min_survivors == 0 {
        return bad("min_survivors must be at least 1".into());
    }
    const MAX_SEEDS: usize = 10_000;
    if spec.max_seeds > MAX_SEEDS || spec.first_test > MAX_SEEDS || spec.each_test > MAX_SEEDS {
        return bad(format!(
            "first_test, each_test and max_seeds must be at most {MAX_SEEDS} (got {}, {}, {})",
            spec.first_test, spec.each_test, spec.max_seeds
        ));
    }
    if spec.max_seeds < spec.first_test {
        return bad(format!(
            "max_seeds ({}) must be at least first_test ({})",
            spec.max_seeds, spec.first_test
        ));
    }
    let genes = match (&rr.genes, &rr.from) {
        (Some(_), Some(f)) => {
            return Err(ctx.err(
                Some(f.span()),
                "[race] has both `genes` and `from`; keep one".into(),
            ))
        }
        (None, None) => {
            return bad("needs `genes = [...]` or `from = { study = \"...\", top = K }`".into())
        }
        (Some(list), None) => {
            let mut v = Vec::new();
            for g in list {
                let gene: Gene = g
                    .get_ref()
                    .parse()
                    .map_err(|e| ctx.err(Some(g.span()), format!("[race] genes: {e}")))?;
                if v.contains(&gene) {
                    return Err(ctx.err(
                        Some(g.span()),
                        format!("[race] gene `{gene}` is listed twice"),
                    ));
                }
                v.push(gene);
            }
            let racing = v.iter().filter(|g| **g != Gene::BASELINE).count();
            if racing < 2 && !(racing == 1 && spec.keep_baseline) {
                return bad("needs at least two candidates (or one and the baseline)".into());
            }
            GeneSource::List(v)
        }
        (None, Some(f)) => {
            let fs = f.get_ref();
            if fs.top < 2 {
                return Err(ctx.err(Some(f.span()), "[race] from.top must be at least 2".into()));
            }
            if fs.study == ctx.name {
                return Err(ctx.err(
                    Some(f.span()),
                    "a race cannot take its candidates from itself; name the search study".into(),
                ));
            }
            GeneSource::Top {
                study: fs.study.clone(),
                top: fs.top,
                at: ctx.at(f.span()),
            }
        }
    };
    let seeds: Vec<u64> = match &raw.seeds {
        Some(_) => ctx.seeds.to_vec(),
        None => (1..=spec.max_seeds as u64).collect(),
    };
    if seeds.len() < spec.first_test {
        return bad(format!(
            "the seed list has {} seeds, fewer than first_test ({})",
            seeds.len(),
            spec.first_test
        ));
    }
    let confirm_seeds = match &rr.confirm_seeds {
        Some(c) => {
            let v = ctx.seeds(c, "[race] confirm_seeds")?;
            if let Some(s) = v.iter().find(|s| seeds.contains(s)) {
                return Err(ctx.err(
                    Some(c.span()),
                    format!("[race] confirm_seeds: seed {s} is one of the race's seeds; confirmation needs fresh seeds"),
                ));
            }
            v
        }
        None => {
            let last = seeds.iter().copied().max().unwrap_or(0);
            (last + 1..=last + 10).collect()
        }
    };
    Ok(Race {
        genes,
        spec,
        seeds,
        confirm_seeds,
    })
}

impl Race {
    /// The race (round after round, each needing the previous one), then the confirmation
    /// of its survivors (and the baseline) on fresh seeds.
    pub fn drive(
        &self,
        external: External,
        runner: &mut dyn Runner,
        out: &mut Driven,
    ) -> Result<()> {
        let mut genes: Vec<Gene> = match (&self.genes, external.genes) {
            (GeneSource::List(g), _) => g.clone(),
            (GeneSource::Top { .. }, Some(g)) => g,
            (GeneSource::Top { study, .. }, None) => {
                anyhow::bail!("race candidates from `{study}` were not resolved")
            }
        };
        if self.spec.keep_baseline && !genes.contains(&Gene::BASELINE) {
            genes.insert(0, Gene::BASELINE);
        }
        let baseline = genes.contains(&Gene::BASELINE).then_some(Gene::BASELINE);
        let outcome = race::race(&self.spec, &genes, baseline, &self.seeds, |_, missing| {
            if runner.ensure(Stage::Race, missing, true)? {
                Ok(Some(scores_of(runner, missing)))
            } else {
                Ok(None)
            }
        })?;
        let complete = outcome.complete;
        out.push(Reached::new(
            Stage::Race,
            outcome.requests.clone(),
            runner.planner(),
            complete,
        ));
        let survivors: Vec<Gene> = outcome
            .survivors
            .iter()
            .copied()
            .filter(|g| *g != Gene::BASELINE)
            .collect();
        out.race = Some(outcome);
        if complete {
            let confirm = Replication {
                genes: GeneSource::List(survivors),
                include_baseline: self.spec.keep_baseline,
                seeds: self.confirm_seeds.clone(),
                hparams_from: None,
            };
            confirm.drive(External::default(), runner, out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{study, FakeRunner};
    use super::super::KindSpec;
    use crate::gene::Gene;
    use crate::record::Stage;
    use crate::study::kinds::replicate::External;

    #[test]
    fn races_then_confirms_the_survivors_on_fresh_seeds() {
        let s = study(
            "name = \"r\"\nkind = \"race\"\n[race]\ngenes = [\"dot+sparsemax+output_gate+learned\", \"dot+sparsemax+none+fixed\", \"cosine+softmax+none+fixed\", \"neg_l2+sigmoid+highway+log_n\"]\nmax_seeds = 8\n",
        );
        let KindSpec::Race(r) = &s.kind else {
            panic!("not a race")
        };
        assert_eq!(r.seeds, (1..=8).collect::<Vec<u64>>());
        assert_eq!(r.confirm_seeds, (9..=18).collect::<Vec<u64>>());
        let mut fake = FakeRunner::new(&s);
        let d = s.kind.drive(&s, External::default(), &mut fake).unwrap();
        assert!(d.complete);
        let race = d.race.as_ref().unwrap();
        // The first round: every candidate and the baseline on seeds 1..=5.
        let first = fake.requests(Stage::Race);
        assert!(first[..25].iter().all(|&(_, seed)| (1..=5).contains(&seed)));
        assert!(race.rows.iter().any(|r| r.gene == Gene::BASELINE));
        // Confirmation: the survivors and the baseline on the fresh seeds only.
        let conf = fake.requests(Stage::Replicate);
        assert!(!conf.is_empty());
        assert!(conf.iter().all(|&(_, seed)| (9..=18).contains(&seed)));
        let genes: std::collections::BTreeSet<Gene> = conf.iter().map(|c| c.0).collect();
        assert!(genes.contains(&Gene::BASELINE));
        for g in &genes {
            assert!(race.survivors.contains(g), "{g} was not a survivor");
        }
        assert_eq!(d.stages.len(), 2);
    }

    #[test]
    fn bad_race_sections_are_refused() {
        let t = |x: &str| {
            crate::study::spec::Study::parse(
                &format!("name = \"r\"\nkind = \"race\"\n[race]\n{x}\n"),
                std::path::Path::new("r.toml"),
            )
            .unwrap_err()
            .to_string()
        };
        assert!(t("genes = [\"dot+softmax+none+fixed\"]").contains("at least two candidates"));
        assert!(t(
            "genes = [\"dot+sparsemax+none+fixed\", \"cosine+softmax+none+fixed\"]\nfirst_test = 1"
        )
        .contains("first_test"));
        assert!(t("genes = [\"dot+sparsemax+none+fixed\", \"cosine+softmax+none+fixed\"]\nconfirm_seeds = [3]").contains("fresh seeds"));
        assert!(t(
            "genes = [\"dot+sparsemax+none+fixed\", \"cosine+softmax+none+fixed\"]\ntest = \"z\""
        )
        .contains("unknown variant"));
    }
}
