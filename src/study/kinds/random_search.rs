//! `kind = "random_search"`: distinct genes drawn uniformly without replacement
//! ([`crate::search::random_genes`]), each on every seed of `seeds`, optionally followed by a
//! replication of its top genes. The control a search must beat at equal budget.

use super::replicate::{self, External, GeneSource, Replication};
use crate::gene::{Gene, GENE_COUNT};
use crate::record::Stage;
use crate::search::{self, RandomSearchSpec};
use crate::study::spec::{Ctx, RawStudy, SpecError, Study};
use crate::study::{Driven, Reached, Runner};
use anyhow::Result;

/// A validated random-search study.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomSearch {
    /// `[random_search]`.
    pub spec: RandomSearchSpec,
    /// `[replicate]`: the stage after the search.
    pub replicate: Option<Replication>,
}

/// Validates `[random_search]` and the optional `[replicate]`.
pub(crate) fn validate(raw: &RawStudy, ctx: &Ctx<'_>) -> Result<RandomSearch, SpecError> {
    let spec = match &raw.random_search {
        None => RandomSearchSpec::default(),
        Some(r) => {
            let v = r.get_ref().clone();
            if v.evaluations == 0 || v.evaluations > GENE_COUNT {
                return Err(ctx.err(
                    Some(ctx.key_span("random_search", "evaluations", r.span())),
                    format!(
                        "[random_search] evaluations = {} is out of range: evaluations must be between 1 and {GENE_COUNT}",
                        v.evaluations
                    ),
                ));
            }
            v
        }
    };
    Ok(RandomSearch {
        spec,
        replicate: replicate::validate_followup(raw, ctx)?,
    })
}

impl RandomSearch {
    /// The search stage (all genes at once), then the replication.
    pub fn drive(
        &self,
        study: &Study,
        external: External,
        runner: &mut dyn Runner,
        out: &mut Driven,
    ) -> Result<()> {
        // A replication of this study's own top genes needs every search unit, including
        // other shards'.
        let self_ranked = matches!(
            self.replicate.as_ref().map(|r| &r.genes),
            Some(GeneSource::Top { study: s, .. }) if *s == study.name
        );
        let requests: Vec<(Gene, u64)> = search::random_genes(&self.spec)
            .into_iter()
            .flat_map(|g| study.seeds.iter().map(move |&s| (g, s)))
            .collect();
        let complete = runner.ensure(Stage::Search, &requests, self_ranked)?;
        out.push(Reached::new(
            Stage::Search,
            requests,
            runner.planner(),
            complete,
        ));
        if let Some(rep) = &self.replicate {
            rep.drive(external, runner, out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{study, FakeRunner};
    use crate::record::Stage;
    use crate::study::kinds::replicate::External;

    #[test]
    fn draws_distinct_genes_on_every_seed() {
        let s = study(
            "name = \"r\"\nkind = \"random_search\"\nseeds = [1, 2]\n[random_search]\nevaluations = 15\nseed = 4\n",
        );
        let mut r = FakeRunner::new(&s);
        let d = s.kind.drive(&s, External::default(), &mut r).unwrap();
        let req = r.requests(Stage::Search);
        assert_eq!(req.len(), 30);
        let genes: std::collections::BTreeSet<_> = req.iter().map(|x| x.0).collect();
        assert_eq!(genes.len(), 15);
        assert!(d.complete && d.stages.len() == 1);
        assert!(r.requests(Stage::Replicate).is_empty());
    }
}
