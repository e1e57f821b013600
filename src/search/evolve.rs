//! The genetic algorithm of the seed study: population 12, the best 3 distinct genes
//! survive, 9 offspring by uniform crossover of two elites and per-component mutation, 10
//! generations — plus the options that fix the published setup's flaws (off by default).

use super::{draw_distinct, fitness, select_elites, Scores};
use crate::gene::{Gating, Gene, Normalization, Similarity, Temperature, GENE_COUNT};
use crate::record::{GenerationRow, Operator};
use crate::seed::rng_for;
use anyhow::Result;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use std::collections::HashMap;

/// `[evolve]`: the published GA by default; the flaw-fixing options are off by default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvolveSpec {
    /// Individuals per generation.
    pub population: usize,
    /// The best `elites` distinct genes survive unchanged.
    pub elites: usize,
    /// Generations, the initial one included.
    pub generations: usize,
    /// Per-component probability that an offspring's value is replaced by another.
    pub mutation_rate: f64,
    /// Seed of the GA's own random choices (not of training).
    pub seed: u64,
    /// Put the baseline gene `dot+softmax+none+fixed` in the first population.
    pub include_baseline: bool,
    /// Re-evaluate every surviving elite with one fresh seed per generation.
    pub reevaluate_elites: bool,
    /// Fresh seeds for re-evaluation are `fresh_seed_base + generation`.
    pub fresh_seed_base: u64,
    /// Stop before a generation that would take the number of distinct genes above this.
    pub max_evaluations: Option<usize>,
    /// `hurdle = { at = 0.25, keep = 0.5 }`: the new genes of a generation first train to
    /// `at` of their steps; only the best `keep` of them (by validation ppl there) go on to
    /// the full budget, the rest are stopped (fitness +∞, never elites).
    pub hurdle: Option<Hurdle>,
}

/// A successive-halving hurdle inside a GA generation.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hurdle {
    /// Fraction of the steps at which the hurdle is judged, in (0, 1).
    pub at: f64,
    /// Fraction of the hurdle's genes that go on, in (0, 1]; at least one goes on.
    pub keep: f64,
}

impl Hurdle {
    /// The step of the hurdle for a run of `steps` steps (at least 1, less than `steps`).
    pub fn step(&self, steps: usize) -> usize {
        ((self.at * steps as f64).round() as usize).clamp(1, steps.saturating_sub(1).max(1))
    }
    /// How many of `n` genes go on.
    pub fn kept(&self, n: usize) -> usize {
        ((self.keep * n as f64).ceil() as usize).clamp(1.min(n), n)
    }
}

impl Default for EvolveSpec {
    fn default() -> Self {
        EvolveSpec {
            population: 12,
            elites: 3,
            generations: 10,
            mutation_rate: 0.25,
            seed: 0,
            include_baseline: false,
            reevaluate_elites: false,
            fresh_seed_base: 1000,
            max_evaluations: None,
            hurdle: None,
        }
    }
}

/// One member of a population.
#[derive(Debug, Clone, PartialEq)]
pub struct Individual {
    /// Its gene.
    pub gene: Gene,
    /// Parents (two for offspring, none otherwise).
    pub parents: Vec<Gene>,
    /// How it was made.
    pub operator: Operator,
}

/// The first population: distinct uniform draws; the baseline in slot 0 when asked.
pub fn initial_population(spec: &EvolveSpec) -> Vec<Individual> {
    let mut rng = rng_for(spec.seed, "evolve/initial");
    let mut genes = draw_distinct(&mut rng, GENE_COUNT);
    if spec.include_baseline {
        genes.retain(|g| *g != Gene::BASELINE);
        genes.insert(0, Gene::BASELINE);
    }
    genes.truncate(spec.population);
    genes
        .into_iter()
        .map(|gene| Individual {
            gene,
            parents: vec![],
            operator: Operator::Initial,
        })
        .collect()
}

/// Uniform crossover of one component: either parent's value with probability ½.
fn pick<T>(rng: &mut ChaCha8Rng, a: T, b: T) -> T {
    if rng.random_bool(0.5) {
        a
    } else {
        b
    }
}

/// With probability `rate`, replaces `v` by a *different* value drawn uniformly from the
/// others; returns whether it did.
fn maybe_mutate<T: Copy + PartialEq>(
    rng: &mut ChaCha8Rng,
    rate: f64,
    all: &[T],
    v: &mut T,
) -> bool {
    if !rng.random_bool(rate) {
        return false;
    }
    let others: Vec<T> = all.iter().copied().filter(|x| x != v).collect();
    *v = others[rng.random_range(0..others.len())];
    true
}

/// The offspring of generation `generation` (≥ 1) from `elites`: each picks two parents
/// uniformly from the elites (distinct when there are two or more), takes every component
/// from either parent with probability ½ (uniform crossover), then replaces each component
/// with a different value with probability `mutation_rate`.
pub fn offspring(spec: &EvolveSpec, generation: usize, elites: &[Gene]) -> Vec<Individual> {
    let mut rng = rng_for(spec.seed, &format!("evolve/generation/{generation}"));
    let n = spec.population.saturating_sub(elites.len());
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let i = rng.random_range(0..elites.len());
        let j = if elites.len() > 1 {
            let j = rng.random_range(0..elites.len() - 1);
            if j >= i {
                j + 1
            } else {
                j
            }
        } else {
            i
        };
        let (a, b) = (elites[i], elites[j]);
        let mut g = Gene {
            similarity: pick(&mut rng, a.similarity, b.similarity),
            normalization: pick(&mut rng, a.normalization, b.normalization),
            gating: pick(&mut rng, a.gating, b.gating),
            temperature: pick(&mut rng, a.temperature, b.temperature),
        };
        let rate = spec.mutation_rate;
        // An array, not `||`: every component draws, in order, whatever the others did.
        let mutated = [
            maybe_mutate(&mut rng, rate, Similarity::ALL, &mut g.similarity),
            maybe_mutate(&mut rng, rate, Normalization::ALL, &mut g.normalization),
            maybe_mutate(&mut rng, rate, Gating::ALL, &mut g.gating),
            maybe_mutate(&mut rng, rate, Temperature::ALL, &mut g.temperature),
        ]
        .contains(&true);
        out.push(Individual {
            gene: g,
            parents: vec![a, b],
            operator: if mutated {
                Operator::Mutation
            } else {
                Operator::Crossover
            },
        });
    }
    out
}

/// What a GA run produced (so far).
#[derive(Debug, Clone, Default)]
pub struct EvolveOutcome {
    /// Every individual of every completed generation.
    pub rows: Vec<GenerationRow>,
    /// Every (gene, seed) requested, in order of first request.
    pub requests: Vec<(Gene, u64)>,
    /// Whether all generations completed (false: `evaluate` could not finish one, or the
    /// evaluation cap stopped it; see `stopped_by_cap`).
    pub complete: bool,
    /// The GA stopped early at the evaluation cap.
    pub stopped_by_cap: bool,
    /// Generation that could not be evaluated, when incomplete.
    pub pending_generation: Option<usize>,
    /// Every (gene, seed) trained to the hurdle, in order of first request.
    pub hurdle_requests: Vec<(Gene, u64)>,
}

/// Runs the GA. `evaluate(generation, requests)` must return the validation ppl of every
/// requested (gene, seed), or `None` when it cannot (yet) — then the GA stops there.
/// Deterministic given `spec.seed` and the scores. A spec with a hurdle needs
/// [`evolve_with_hurdle`].
pub fn evolve(
    spec: &EvolveSpec,
    seeds: &[u64],
    evaluate: impl FnMut(usize, &[(Gene, u64)]) -> Result<Option<Scores>>,
) -> Result<EvolveOutcome> {
    evolve_with_hurdle(spec, seeds, evaluate, |_, _| {
        anyhow::bail!("this GA has a hurdle, and this driver cannot train to a hurdle")
    })
}

/// [`evolve`] with hurdles: `partial(generation, requests)` returns the validation ppl of
/// every requested (gene, seed) at the hurdle's step (or `None`: not yet). Per generation,
/// the genes that need new evaluations and are not surviving elites run the hurdle; the
/// best [`Hurdle::kept`] of them by mean hurdle ppl (ties by gene index) are evaluated in
/// full, the others are stopped (`stopped`, fitness +∞ in this generation).
pub fn evolve_with_hurdle(
    spec: &EvolveSpec,
    seeds: &[u64],
    mut evaluate: impl FnMut(usize, &[(Gene, u64)]) -> Result<Option<Scores>>,
    mut partial: impl FnMut(usize, &[(Gene, u64)]) -> Result<Option<Scores>>,
) -> Result<EvolveOutcome> {
    let mut hurdle_scores: Scores = HashMap::new();
    let mut out = EvolveOutcome::default();
    let mut seeds_of: HashMap<Gene, Vec<u64>> = HashMap::new();
    let mut distinct: Vec<Gene> = Vec::new();
    let mut scores: Scores = HashMap::new();
    let mut population = initial_population(spec);
    let mut elites: Vec<Gene> = Vec::new();
    for generation in 0..spec.generations {
        if generation > 0 {
            let mut next: Vec<Individual> = elites
                .iter()
                .map(|&g| Individual {
                    gene: g,
                    parents: vec![],
                    operator: Operator::Elite,
                })
                .collect();
            next.extend(offspring(spec, generation, &elites));
            population = next;
            if spec.reevaluate_elites {
                let fresh = spec.fresh_seed_base + generation as u64;
                for g in &elites {
                    let s = seeds_of.entry(*g).or_insert_with(|| seeds.to_vec());
                    if !s.contains(&fresh) {
                        s.push(fresh);
                    }
                }
            }
        }
        if let Some(cap) = spec.max_evaluations {
            let mut new = distinct.clone();
            for ind in &population {
                if !new.contains(&ind.gene) {
                    new.push(ind.gene);
                }
            }
            if new.len() > cap {
                out.stopped_by_cap = true;
                return Ok(out);
            }
        }
        let mut requests = Vec::new();
        for ind in &population {
            let s = seeds_of
                .entry(ind.gene)
                .or_insert_with(|| seeds.to_vec())
                .clone();
            for seed in s {
                if !requests.contains(&(ind.gene, seed)) {
                    requests.push((ind.gene, seed));
                }
            }
        }
        let missing: Vec<(Gene, u64)> = requests
            .iter()
            .copied()
            .filter(|k| !scores.contains_key(k))
            .collect();
        // The hurdle: new genes (not this generation's elites) first train part way.
        let mut stopped: Vec<Gene> = Vec::new();
        let mut hurdled: Vec<Gene> = Vec::new();
        let missing: Vec<(Gene, u64)> = match &spec.hurdle {
            None => missing,
            Some(h) => {
                let elite_genes: Vec<Gene> = population
                    .iter()
                    .filter(|i| i.operator == Operator::Elite)
                    .map(|i| i.gene)
                    .collect();
                for &(g, _) in &missing {
                    if !elite_genes.contains(&g) && !hurdled.contains(&g) {
                        hurdled.push(g);
                    }
                }
                let reqs: Vec<(Gene, u64)> = missing
                    .iter()
                    .copied()
                    .filter(|(g, _)| hurdled.contains(g))
                    .collect();
                for r in &reqs {
                    if !out.hurdle_requests.contains(r) {
                        out.hurdle_requests.push(*r);
                    }
                }
                let todo: Vec<(Gene, u64)> = reqs
                    .iter()
                    .copied()
                    .filter(|k| !hurdle_scores.contains_key(k))
                    .collect();
                if !todo.is_empty() {
                    match partial(generation, &todo)? {
                        Some(s) => hurdle_scores.extend(s),
                        None => {
                            out.pending_generation = Some(generation);
                            return Ok(out);
                        }
                    }
                }
                let mut ranked: Vec<(Gene, f64)> = hurdled
                    .iter()
                    .map(|&g| {
                        let vals: Vec<Option<f64>> = reqs
                            .iter()
                            .filter(|(x, _)| *x == g)
                            .map(|k| hurdle_scores.get(k).copied().flatten())
                            .collect();
                        (g, fitness(&vals))
                    })
                    .collect();
                ranked.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.index().cmp(&b.0.index())));
                let kept = h.kept(ranked.len());
                stopped = ranked[kept..].iter().map(|(g, _)| *g).collect();
                missing
                    .into_iter()
                    .filter(|(g, _)| !stopped.contains(g))
                    .collect()
            }
        };
        // Stopped genes' full units are not requested.
        for r in requests.iter().filter(|(g, _)| !stopped.contains(g)) {
            if !out.requests.contains(r) {
                out.requests.push(*r);
            }
        }
        if !missing.is_empty() {
            match evaluate(generation, &missing)? {
                Some(s) => scores.extend(s),
                None => {
                    out.pending_generation = Some(generation);
                    return Ok(out);
                }
            }
        }
        let mut scored = Vec::new();
        for (slot, ind) in population.iter().enumerate() {
            let s = &seeds_of[&ind.gene];
            let vals: Vec<Option<f64>> = s
                .iter()
                .map(|&seed| scores.get(&(ind.gene, seed)).copied().flatten())
                .collect();
            let stop = stopped.contains(&ind.gene);
            let f = if stop { f64::INFINITY } else { fitness(&vals) };
            let hurdle_fitness = hurdled.contains(&ind.gene).then(|| {
                let vals: Vec<Option<f64>> = s
                    .iter()
                    .map(|&seed| hurdle_scores.get(&(ind.gene, seed)).copied().flatten())
                    .collect();
                fitness(&vals)
            });
            scored.push((ind.gene, f));
            if !distinct.contains(&ind.gene) {
                distinct.push(ind.gene);
            }
            out.rows.push(GenerationRow {
                generation: generation as u64,
                slot: slot as u64,
                gene: ind.gene,
                parents: ind
                    .parents
                    .iter()
                    .map(|g| g.to_string())
                    .collect::<Vec<_>>()
                    .join(";"),
                operator: ind.operator,
                fitness: f,
                n_seeds: s.len() as u64,
                hurdle_fitness,
                stopped: stop,
            });
        }
        elites = select_elites(&scored, spec.elites);
    }
    out.complete = true;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic landscape: sparsemax and output gates are good.
    fn score(g: Gene, seed: u64) -> Option<f64> {
        let mut v = 100.0 + (g.index() % 7) as f64 + seed as f64 * 0.01;
        if g.normalization == Normalization::Sparsemax {
            v -= 5.0;
        }
        if g.gating == Gating::OutputGate {
            v -= 3.0;
        }
        Some(v)
    }

    fn run(spec: &EvolveSpec) -> EvolveOutcome {
        evolve(spec, &[1], |_, req| {
            Ok(Some(
                req.iter().map(|&(g, s)| ((g, s), score(g, s))).collect(),
            ))
        })
        .unwrap()
    }

    #[test]
    fn a_hurdle_stops_the_worse_half_and_never_makes_them_elites() {
        let spec = EvolveSpec {
            hurdle: Some(Hurdle {
                at: 0.25,
                keep: 0.5,
            }),
            ..EvolveSpec::default()
        };
        let mut partial_asked = 0;
        let out = evolve_with_hurdle(
            &spec,
            &[1],
            |_, req| {
                Ok(Some(
                    req.iter().map(|&(g, s)| ((g, s), score(g, s))).collect(),
                ))
            },
            |_, req| {
                partial_asked += req.len();
                // The hurdle sees the final score plus a gene-dependent offset.
                Ok(Some(
                    req.iter()
                        .map(|&(g, s)| {
                            (
                                (g, s),
                                score(g, s).map(|v| v + 10.0 + (g.index() % 5) as f64),
                            )
                        })
                        .collect(),
                ))
            },
        )
        .unwrap();
        assert!(out.complete);
        assert_eq!(partial_asked, out.hurdle_requests.len());
        for gen in 0..10u64 {
            let rows: Vec<&GenerationRow> =
                out.rows.iter().filter(|r| r.generation == gen).collect();
            let hurdled: Vec<&&GenerationRow> =
                rows.iter().filter(|r| r.hurdle_fitness.is_some()).collect();
            let stopped = hurdled.iter().filter(|r| r.stopped).count();
            // Half of the hurdle's distinct genes go on (rounded up).
            let mut distinct: Vec<Gene> = hurdled.iter().map(|r| r.gene).collect();
            distinct.sort_by_key(|g| g.index());
            distinct.dedup();
            let stopped_genes: Vec<Gene> = hurdled
                .iter()
                .filter(|r| r.stopped)
                .map(|r| r.gene)
                .collect();
            assert_eq!(
                distinct.len()
                    - Hurdle {
                        at: 0.25,
                        keep: 0.5
                    }
                    .kept(distinct.len()),
                {
                    let mut v = stopped_genes.clone();
                    v.sort_by_key(|g| g.index());
                    v.dedup();
                    v.len()
                }
            );
            assert!(stopped <= hurdled.len());
            // Elites never skip the hurdle by accident and are never stopped genes.
            if gen > 0 {
                let prev_stopped: Vec<Gene> = out
                    .rows
                    .iter()
                    .filter(|r| r.generation == gen - 1 && r.stopped)
                    .map(|r| r.gene)
                    .collect();
                for e in rows.iter().filter(|r| r.operator == Operator::Elite) {
                    assert!(e.hurdle_fitness.is_none() && !e.stopped);
                    assert!(
                        !prev_stopped.contains(&e.gene)
                            || out
                                .rows
                                .iter()
                                .any(|r| r.generation < gen && r.gene == e.gene && !r.stopped)
                    );
                }
            }
        }
        // Stopped genes' full units were never requested.
        for r in out.rows.iter().filter(|r| r.stopped) {
            let ever_full = out
                .rows
                .iter()
                .any(|x| x.gene == r.gene && !x.stopped && x.fitness.is_finite());
            assert_eq!(out.requests.iter().any(|&(g, _)| g == r.gene), ever_full);
        }
    }

    #[test]
    fn published_shape_elitism_and_operators() {
        let spec = EvolveSpec::default();
        let out = run(&spec);
        assert!(out.complete);
        assert_eq!(out.rows.len(), 12 * 10);
        for g in 1..10u64 {
            let gen: Vec<&GenerationRow> = out.rows.iter().filter(|r| r.generation == g).collect();
            let prev: Vec<&GenerationRow> =
                out.rows.iter().filter(|r| r.generation == g - 1).collect();
            assert_eq!(
                gen.iter().filter(|r| r.operator == Operator::Elite).count(),
                3
            );
            // Elites are the best 3 of the previous generation, and the best never gets worse.
            let best_prev = prev.iter().map(|r| r.fitness).fold(f64::INFINITY, f64::min);
            let best = gen.iter().map(|r| r.fitness).fold(f64::INFINITY, f64::min);
            assert_eq!(best, best_prev.min(best));
            assert!(best <= best_prev);
            assert_eq!(gen[0].fitness, best_prev);
            for r in gen.iter().filter(|r| r.operator != Operator::Elite) {
                let parents: Vec<&str> = r.parents.split(';').collect();
                assert_eq!(parents.len(), 2);
                for p in parents {
                    assert!(gen[..3].iter().any(|e| e.gene.to_string() == p));
                }
            }
        }
        // The landscape's optimum region is found.
        let last = out
            .rows
            .iter()
            .filter(|r| r.generation == 9)
            .map(|r| r.fitness);
        assert!(last.fold(f64::INFINITY, f64::min) < 94.0);
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        let spec = EvolveSpec::default();
        assert_eq!(run(&spec).rows, run(&spec).rows);
        let other = EvolveSpec { seed: 1, ..spec };
        assert_ne!(run(&other).rows, run(&EvolveSpec::default()).rows);
    }

    #[test]
    fn options_baseline_reevaluation_and_cap() {
        let spec = EvolveSpec {
            include_baseline: true,
            reevaluate_elites: true,
            ..EvolveSpec::default()
        };
        let out = run(&spec);
        assert_eq!(out.rows[0].gene, Gene::BASELINE);
        // Elites gain one seed per generation they survive.
        let g2: Vec<&GenerationRow> = out.rows.iter().filter(|r| r.generation == 2).collect();
        assert!(g2[..3].iter().all(|r| r.n_seeds >= 2), "{g2:?}");
        assert!(out.requests.contains(&(g2[0].gene, 1002)));
        let capped = run(&EvolveSpec {
            max_evaluations: Some(20),
            ..EvolveSpec::default()
        });
        assert!(capped.stopped_by_cap && !capped.complete);
        let distinct: std::collections::HashSet<Gene> =
            capped.rows.iter().map(|r| r.gene).collect();
        assert!(distinct.len() <= 20);
    }

    #[test]
    fn mutation_rate_zero_only_recombines_and_one_always_mutates() {
        let elites = [Gene::BASELINE, Gene::PUBLISHED_WINNER];
        let none = EvolveSpec {
            mutation_rate: 0.0,
            ..EvolveSpec::default()
        };
        for ind in offspring(&none, 1, &elites) {
            assert_eq!(ind.operator, Operator::Crossover);
            assert!(
                ind.gene.normalization == Normalization::Softmax
                    || ind.gene.normalization == Normalization::Sparsemax
            );
        }
        let all = EvolveSpec {
            mutation_rate: 1.0,
            ..EvolveSpec::default()
        };
        for ind in offspring(&all, 1, &elites) {
            assert_eq!(ind.operator, Operator::Mutation);
            assert_ne!(ind.gene.similarity, Similarity::Dot);
        }
    }

    #[test]
    fn incomplete_evaluation_stops_at_that_generation() {
        let out = evolve(&EvolveSpec::default(), &[1], |generation, req| {
            Ok((generation < 2).then(|| req.iter().map(|&(g, s)| ((g, s), score(g, s))).collect()))
        })
        .unwrap();
        assert!(!out.complete);
        assert_eq!(out.pending_generation, Some(2));
        assert_eq!(out.rows.len(), 24);
    }
}
