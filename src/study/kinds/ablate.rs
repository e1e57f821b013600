//! `kind = "ablate"`: a full factorial over chosen components of a base gene, every cell
//! on every seed of `seeds` (so cells are seed-paired).

use crate::gene::{Component, Gene};
use crate::record::Stage;
use crate::study::spec::{Ctx, RawStudy, SpecError, Study};
use crate::study::{Driven, Reached, Runner};
use anyhow::Result;
use serde::Deserialize;
use toml::Spanned;

/// `[ablate]` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAblate {
    /// The gene the other components come from.
    pub base: Spanned<String>,
    /// Similarity levels.
    pub similarity: Option<Spanned<Vec<String>>>,
    /// Normalization levels.
    pub normalization: Option<Spanned<Vec<String>>>,
    /// Gating levels.
    pub gating: Option<Spanned<Vec<String>>>,
    /// Temperature levels.
    pub temperature: Option<Spanned<Vec<String>>>,
}

impl RawAblate {
    fn levels(&self, c: Component) -> Option<&Spanned<Vec<String>>> {
        match c {
            Component::Similarity => self.similarity.as_ref(),
            Component::Normalization => self.normalization.as_ref(),
            Component::Gating => self.gating.as_ref(),
            Component::Temperature => self.temperature.as_ref(),
        }
    }
}

/// A validated `[ablate]`: a full factorial over `factors`, the rest fixed to `base`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ablate {
    /// The gene the other components come from.
    pub base: Gene,
    /// (component, levels) in gene order.
    pub factors: Vec<(Component, Vec<String>)>,
    /// Every cell's gene, the first factor slowest.
    pub cells: Vec<Gene>,
}

/// Validates `[ablate]` (required).
pub(crate) fn validate(raw: &RawStudy, ctx: &Ctx<'_>) -> Result<Ablate, SpecError> {
    let Some(a) = &raw.ablate else {
        return Err(ctx.err(
            None,
            "kind = \"ablate\" needs an [ablate] section with `base = \"GENE\"` and level lists, e.g. gating = [\"none\", \"output_gate\"]".into(),
        ));
    };
    let r = a.get_ref();
    let base: Gene = r
        .base
        .get_ref()
        .parse()
        .map_err(|e| ctx.err(Some(r.base.span()), format!("[ablate] base: {e}")))?;
    let mut factors = Vec::new();
    let mut cells = vec![base];
    for comp in Component::ALL {
        let Some(levels) = r.levels(comp) else {
            continue;
        };
        let v = levels.get_ref();
        let bad = |m: String| ctx.err(Some(levels.span()), format!("[ablate] {comp}{m}"));
        if v.len() < 2 {
            return Err(bad(
                " needs at least two levels (leave it out to keep the base gene's)".into(),
            ));
        }
        let mut next = Vec::with_capacity(cells.len() * v.len());
        for g in &cells {
            for (i, l) in v.iter().enumerate() {
                if v[..i].contains(l) {
                    return Err(bad(format!(": `{l}` is listed twice")));
                }
                next.push(g.with(comp, l).map_err(|e| bad(format!(": {e}")))?);
            }
        }
        cells = next;
        factors.push((comp, v.clone()));
    }
    if factors.is_empty() {
        return Err(ctx.err(
            Some(a.span()),
            "[ablate] lists no factor: add level lists for one or more of similarity, normalization, gating, temperature".into(),
        ));
    }
    Ok(Ablate {
        base,
        factors,
        cells,
    })
}

impl Ablate {
    /// Every cell's gene, the first factor slowest.
    pub fn genes(&self) -> &[Gene] {
        &self.cells
    }

    /// One stage: every cell on every seed.
    pub fn drive(&self, study: &Study, runner: &mut dyn Runner, out: &mut Driven) -> Result<()> {
        let requests: Vec<(Gene, u64)> = self
            .cells
            .iter()
            .flat_map(|&g| study.seeds.iter().map(move |&s| (g, s)))
            .collect();
        let complete = runner.ensure(Stage::Ablate, &requests, false)?;
        out.push(Reached::new(
            Stage::Ablate,
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
    use crate::gene::Gene;
    use crate::record::Stage;
    use crate::study::kinds::replicate::External;

    #[test]
    fn every_cell_on_every_seed() {
        let s = study(
            "name = \"a\"\nkind = \"ablate\"\nseeds = [1, 2, 3]\n[ablate]\nbase = \"dot+softmax+none+learned\"\nnormalization = [\"softmax\", \"sparsemax\"]\ngating = [\"none\", \"output_gate\", \"highway\"]\n",
        );
        let mut r = FakeRunner::new(&s);
        let d = s.kind.drive(&s, External::default(), &mut r).unwrap();
        let req = r.requests(Stage::Ablate);
        assert_eq!(req.len(), 6 * 3);
        let cells: Vec<Gene> = req.iter().step_by(3).map(|x| x.0).collect();
        let names: Vec<String> = cells.iter().map(|g| g.to_string()).collect();
        assert_eq!(names[0], "dot+softmax+none+learned");
        assert_eq!(names[1], "dot+softmax+output_gate+learned");
        assert_eq!(names[5], "dot+sparsemax+highway+learned");
        assert!(d.complete);
    }
}
