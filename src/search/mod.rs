//! Searches over the gene space: the genetic algorithm of the seed study ([`evolve`]),
//! uniform random search ([`random`]) and the hyperparameter search of tune studies
//! ([`tune`]). All are pure given their seeds; training is behind callbacks, so the same
//! code plans, runs and reports status, and a simulator could drive them too.
//!
//! **When the gene space grows.** Every draw here is over the current space
//! ([`crate::gene::Gene::all`] in canonical order, and each component's value list), so a
//! new component value changes every initial population, every mutation and every random
//! search. Stores record the [`crate::gene::SPACE_VERSION`] they were planned with, and a
//! search study refuses to resume under another version (`study::check_space_version`).

pub mod evolve;
pub mod race;
pub mod random;
pub mod simulate;
pub mod tune;

use crate::gene::Gene;
use crate::record::RunRow;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;

pub use evolve::{
    evolve, evolve_with_hurdle, initial_population, offspring, EvolveOutcome, EvolveSpec, Hurdle,
    Individual,
};
pub use random::{random_genes, RandomSearchSpec};

/// `n` distinct genes drawn uniformly without replacement.
pub(crate) fn draw_distinct(rng: &mut ChaCha8Rng, n: usize) -> Vec<Gene> {
    let mut all = Gene::all();
    all.shuffle(rng);
    all.truncate(n);
    all
}

/// The best `k` distinct genes by fitness (lower is better; ties by gene index).
pub fn select_elites(scored: &[(Gene, f64)], k: usize) -> Vec<Gene> {
    let mut v: Vec<(Gene, f64)> = scored.to_vec();
    v.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.index().cmp(&b.0.index())));
    let mut out: Vec<Gene> = Vec::new();
    for (g, _) in v {
        if !out.contains(&g) {
            out.push(g);
        }
        if out.len() == k {
            break;
        }
    }
    out
}

/// Fitness from validation perplexities: their mean; +inf when any run diverged.
pub fn fitness(vals: &[Option<f64>]) -> f64 {
    if vals.is_empty() || vals.iter().any(|v| v.is_none_or(|x| !x.is_finite())) {
        return f64::INFINITY;
    }
    vals.iter().map(|v| v.unwrap()).sum::<f64>() / vals.len() as f64
}

/// Validation perplexity per (gene, seed); `None` for a diverged run.
pub type Scores = HashMap<(Gene, u64), Option<f64>>;

/// The best `k` genes of `rows` by mean validation ppl (a gene with a diverged run ranks
/// last; ties by gene index).
pub fn top_genes<'r>(rows: impl IntoIterator<Item = &'r RunRow>, k: usize) -> Vec<Gene> {
    let mut by_gene: HashMap<Gene, Vec<Option<f64>>> = HashMap::new();
    for r in rows {
        by_gene.entry(r.gene).or_default().push(r.val_ppl);
    }
    let scored: Vec<(Gene, f64)> = by_gene.into_iter().map(|(g, v)| (g, fitness(&v))).collect();
    select_elites(&scored, k)
}
