//! Uniform random search without replacement: the control a search must beat.

use super::draw_distinct;
use crate::gene::{Gene, GENE_COUNT};
use crate::seed::rng_for;
use serde::Deserialize;

/// `[random_search]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RandomSearchSpec {
    /// Distinct genes drawn uniformly without replacement.
    pub evaluations: usize,
    /// Seed of the draw.
    pub seed: u64,
}

impl Default for RandomSearchSpec {
    fn default() -> Self {
        RandomSearchSpec {
            evaluations: 120,
            seed: 0,
        }
    }
}

/// The genes of a random search: `evaluations` distinct genes, uniformly without replacement.
pub fn random_genes(spec: &RandomSearchSpec) -> Vec<Gene> {
    let mut rng = rng_for(spec.seed, "random_search");
    draw_distinct(&mut rng, spec.evaluations.min(GENE_COUNT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_search_draws_distinct_genes() {
        let g = random_genes(&RandomSearchSpec {
            evaluations: 120,
            seed: 3,
        });
        let set: std::collections::HashSet<Gene> = g.iter().copied().collect();
        assert_eq!(set.len(), 120);
        assert_eq!(
            g,
            random_genes(&RandomSearchSpec {
                evaluations: 120,
                seed: 3
            })
        );
    }
}
