//! A search-strategy simulator: the same GA, random-search and race code as a real study,
//! driven by a simulated evaluator instead of training, many times over, on a fitness
//! landscape — to say before spending GPU hours how often a search picks the true best
//! gene at a given noise.
//!
//! **Landscape.** A gene's true score is μ + Σ over its four components of an additive
//! effect per level ([`Landscape::truth`]). One simulated run of gene g on seed s scores
//! truth(g) + b_s + e_gs: b_s ~ N(0, seed_sd²) is shared by every gene on that seed (the
//! common random numbers of real seeds), e_gs ~ N(0, interaction_sd²) is the gene × seed
//! noise; a (gene, seed) asked twice scores the same. A landscape is given by hand or
//! fitted from stores ([`Landscape::fit`]: additive component effects with (study, seed)
//! as a block, by backfitting; a level the stores never ran gets effect 0).
//!
//! **Metrics** per strategy, means over replicates with their Monte Carlo standard errors:
//! the probability of picking the true best gene (ties count), of picking one within δ of
//! it, the regret (true score of the pick minus the best), the winner's curse (the score
//! the strategy reported for its pick minus its true score) and the runs used.
//! Replicate r draws from `rng_for(seed, "simulate/r")`, so results do not depend on
//! threads.

use super::race::{self, RaceSpec};
use super::{random_genes, EvolveSpec, RandomSearchSpec, Scores};
use crate::gene::{Component, Gene};
use crate::record::RunRow;
use crate::seed::rng_for;
use anyhow::{bail, Result};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// A fitness landscape (validation ppl; lower is better).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Landscape {
    /// The grand mean μ.
    pub mean: f64,
    /// Effect per component (gene order) per level (canonical order).
    pub effects: Vec<Vec<f64>>,
    /// sd of the seed effect every gene shares.
    pub seed_sd: f64,
    /// sd of the gene × seed noise.
    pub interaction_sd: f64,
    /// For GA hurdles: sd of a run's hurdle score about its final score (plus a constant
    /// offset, which does not change rankings). 0: the hurdle ranks runs as their final
    /// scores do.
    pub hurdle_sd: f64,
}

/// The index of gene `g`'s level of component `c`.
fn level(g: Gene, c: Component) -> usize {
    match c {
        Component::Similarity => g.similarity.index(),
        Component::Normalization => g.normalization.index(),
        Component::Gating => g.gating.index(),
        Component::Temperature => g.temperature.index(),
    }
}

impl Landscape {
    /// Every gene equal: only seed and gene × seed noise.
    pub fn null(mean: f64, seed_sd: f64, interaction_sd: f64) -> Landscape {
        Landscape {
            mean,
            effects: Component::ALL
                .iter()
                .map(|c| vec![0.0; c.values().len()])
                .collect(),
            seed_sd,
            interaction_sd,
            hurdle_sd: 0.0,
        }
    }

    /// The hurdle sd: per unit, its validation ppl at the hurdle minus its final one; the
    /// sd (n − 1) of those differences. From a GA with hurdles, the pairs of a `hurdle` row
    /// and its full unit's row; otherwise from learning curves, the point nearest to `at` ×
    /// steps (within 10 % of the steps). `None` with fewer than 3 such units (stores that
    /// validate only at the end). Returns the sd and the units used.
    pub fn hurdle_sd_from_curves(
        rows: &[RunRow],
        curves: &[crate::record::CurveRow],
        at: f64,
    ) -> Option<(f64, usize)> {
        use crate::record::Stage;
        let finals: HashMap<&str, f64> = rows
            .iter()
            .filter(|r| r.stage != Stage::Hurdle)
            .filter_map(|r| Some((r.unit_id.as_str(), r.val_ppl?)))
            .collect();
        let paired: Vec<f64> = rows
            .iter()
            .filter(|r| r.stage == Stage::Hurdle)
            .filter_map(|r| {
                let step = r.stopped_at?;
                let full = r.unit_id.strip_suffix(&format!("-h{step}"))?;
                Some(r.val_ppl? - finals.get(full)?)
            })
            .collect();
        let sd = |d: &[f64]| -> Option<(f64, usize)> {
            if d.len() < 3 {
                return None;
            }
            let m = d.iter().sum::<f64>() / d.len() as f64;
            let var = d.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (d.len() - 1) as f64;
            Some((var.sqrt(), d.len()))
        };
        if let Some(x) = sd(&paired) {
            return Some(x);
        }
        let rows: Vec<&RunRow> = rows.iter().filter(|r| r.stage != Stage::Hurdle).collect();
        let mut by_unit: HashMap<&str, Vec<&crate::record::CurveRow>> = HashMap::new();
        for c in curves {
            by_unit.entry(c.unit_id.as_str()).or_default().push(c);
        }
        let d: Vec<f64> = rows
            .iter()
            .filter_map(|&r| {
                let fin = r.val_ppl?;
                let steps = r.config.steps as f64;
                let target = at * steps;
                let pts = by_unit.get(r.unit_id.as_str())?;
                let p = pts.iter().filter(|c| c.val_ppl.is_some()).min_by(|a, b| {
                    (a.step as f64 - target)
                        .abs()
                        .total_cmp(&(b.step as f64 - target).abs())
                })?;
                ((p.step as f64 - target).abs() <= 0.1 * steps && (p.step as f64) < steps)
                    .then(|| p.val_ppl.unwrap() - fin)
            })
            .collect();
        sd(&d)
    }

    /// Sets the effect of `value` of component `c` (an error names a value outside it).
    pub fn set(&mut self, c: Component, value: &str, effect: f64) -> Result<(), String> {
        let i = c.values().iter().position(|v| *v == value).ok_or_else(|| {
            format!(
                "unknown {c} `{value}`; valid values: {}",
                c.values().join(", ")
            )
        })?;
        self.effects[c as usize][i] = effect;
        Ok(())
    }

    /// The true score of `g`.
    pub fn truth(&self, g: Gene) -> f64 {
        self.mean
            + Component::ALL
                .iter()
                .map(|&c| self.effects[c as usize][level(g, c)])
                .sum::<f64>()
    }

    /// The best true score over the whole space and the genes that have it.
    pub fn best(&self) -> (f64, Vec<Gene>) {
        let all = Gene::all();
        let best = all
            .iter()
            .map(|&g| self.truth(g))
            .fold(f64::INFINITY, f64::min);
        let genes = all
            .into_iter()
            .filter(|&g| self.truth(g) <= best + 1e-12)
            .collect();
        (best, genes)
    }

    /// A landscape fitted from finished runs: y = μ + Σ component effects + block + e, the
    /// block being (study, seed); by backfitting (Gauss–Seidel over the factors, which
    /// converges to the least-squares fit). seed_sd is the sd of the block effects after
    /// each study's mean block effect is taken out (studies differ in configuration);
    /// interaction_sd is √(residual sum of squares / residual df). Diverged runs are left
    /// out. Errors with fewer runs than parameters.
    pub fn fit(rows: &[RunRow]) -> Result<Landscape> {
        // Hurdle rows are partial runs (a GA's hurdle), not final scores.
        let rows: Vec<&RunRow> = rows
            .iter()
            .filter(|r| r.val_ppl.is_some() && r.stage != crate::record::Stage::Hurdle)
            .collect();
        let y: Vec<f64> = rows.iter().filter_map(|r| r.val_ppl).collect();
        let n = y.len();
        let blocks: Vec<String> = rows
            .iter()
            .map(|r| format!("{}#{}", r.study, r.seed))
            .collect();
        let mut block_ids: BTreeMap<&str, usize> = BTreeMap::new();
        for b in &blocks {
            let k = block_ids.len();
            block_ids.entry(b.as_str()).or_insert(k);
        }
        let bidx: Vec<usize> = blocks.iter().map(|b| block_ids[b.as_str()]).collect();
        let mut factors: Vec<(usize, Vec<usize>, usize)> =
            vec![(usize::MAX, bidx, block_ids.len())];
        for c in Component::ALL {
            let idx: Vec<usize> = rows.iter().map(|r| level(r.gene, c)).collect();
            let distinct = idx.iter().collect::<std::collections::BTreeSet<_>>().len();
            if distinct > 1 {
                factors.push((c as usize, idx, c.values().len()));
            }
        }
        // One mean, then levels − 1 per factor (the block included).
        let params = 1 + factors
            .iter()
            .map(|(_, idx, _)| idx.iter().collect::<std::collections::BTreeSet<_>>().len() - 1)
            .sum::<usize>();
        if n <= params {
            bail!("{n} finished runs cannot fit {params} effects; add runs or stores");
        }
        let mu = y.iter().sum::<f64>() / n as f64;
        let mut eff: Vec<Vec<f64>> = factors.iter().map(|(_, _, k)| vec![0.0; *k]).collect();
        for _ in 0..500 {
            let mut change = 0.0f64;
            for f in 0..factors.len() {
                let (_, idx, k) = &factors[f];
                let mut sum = vec![0.0; *k];
                let mut cnt = vec![0usize; *k];
                for i in 0..n {
                    let others: f64 = (0..factors.len())
                        .filter(|&g| g != f)
                        .map(|g| eff[g][factors[g].1[i]])
                        .sum();
                    sum[idx[i]] += y[i] - mu - others;
                    cnt[idx[i]] += 1;
                }
                // Centre the observed levels' effects (weighted by their runs).
                let tot: usize = cnt.iter().sum();
                let m: f64 = sum.iter().sum::<f64>() / tot as f64;
                for l in 0..*k {
                    let new = if cnt[l] > 0 {
                        sum[l] / cnt[l] as f64 - m
                    } else {
                        0.0
                    };
                    change = change.max((new - eff[f][l]).abs());
                    eff[f][l] = new;
                }
            }
            if change < 1e-12 {
                break;
            }
        }
        let fitted = |i: usize| {
            mu + (0..factors.len())
                .map(|g| eff[g][factors[g].1[i]])
                .sum::<f64>()
        };
        let rss: f64 = (0..n).map(|i| (y[i] - fitted(i)).powi(2)).sum();
        let interaction_sd = (rss / (n - params) as f64).sqrt();
        // Seed effects within each study.
        let mut by_study: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for (b, &id) in &block_ids {
            let study = b.split('#').next().unwrap_or("");
            by_study.entry(study).or_default().push(eff[0][id]);
        }
        let dev: Vec<f64> = by_study
            .values()
            .flat_map(|v| {
                let m = v.iter().sum::<f64>() / v.len() as f64;
                v.iter().map(move |x| x - m)
            })
            .collect();
        let df = dev.len().saturating_sub(by_study.len());
        let seed_sd = if df > 0 {
            (dev.iter().map(|d| d * d).sum::<f64>() / df as f64).sqrt()
        } else {
            0.0
        };
        let mut land = Landscape::null(mu, seed_sd, interaction_sd);
        for (f, (c, _, _)) in factors.iter().enumerate().skip(1) {
            land.effects[*c] = eff[f].clone();
        }
        // The block effects average 0 over blocks; the grand mean absorbs the rest.
        Ok(land)
    }
}

/// What a strategy evaluates genes with: a simulated world, or (in tests) a finished
/// store's scores.
pub trait Evaluator {
    /// The scores of `req`, or `None` when they would take the runs above `budget`.
    fn evaluate(&mut self, req: &[(Gene, u64)], budget: Option<usize>) -> Option<Scores>;
    /// Runs charged so far (distinct (gene, seed) pairs evaluated; a hurdle evaluation
    /// costs its fraction `at` of a run, finishing it the rest).
    fn used(&self) -> usize;
    /// Scores at a GA hurdle at fraction `at` of the steps (`None` above `budget`); by
    /// default the final scores (a hurdle that ranks as the end does).
    fn partial(&mut self, req: &[(Gene, u64)], at: f64, budget: Option<usize>) -> Option<Scores> {
        let _ = at;
        self.evaluate(req, budget)
    }
    /// The mean observed score of `g` over the seeds it ran.
    fn observed(&self, g: Gene) -> f64;
}

/// A finished store's scores as an evaluator (every request must be in it).
pub struct Stored {
    scores: HashMap<(Gene, u64), Option<f64>>,
    asked: std::collections::HashSet<(Gene, u64)>,
}

impl Stored {
    /// The scores of `rows`.
    pub fn new(rows: &[RunRow]) -> Stored {
        Stored {
            scores: rows.iter().map(|r| ((r.gene, r.seed), r.val_ppl)).collect(),
            asked: Default::default(),
        }
    }
}

impl Evaluator for Stored {
    fn evaluate(&mut self, req: &[(Gene, u64)], _: Option<usize>) -> Option<Scores> {
        let mut out = Scores::new();
        for k in req {
            out.insert(*k, *self.scores.get(k)?);
            self.asked.insert(*k);
        }
        Some(out)
    }
    fn used(&self) -> usize {
        self.asked.len()
    }
    fn observed(&self, g: Gene) -> f64 {
        let v: Vec<f64> = self
            .asked
            .iter()
            .filter(|k| k.0 == g)
            .filter_map(|k| self.scores[k])
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }
}

/// One replicate's simulated evaluator: lazily drawn seed effects and noise, counted runs.
struct World<'a> {
    land: &'a Landscape,
    rng: ChaCha8Rng,
    seeds: HashMap<u64, f64>,
    runs: HashMap<(Gene, u64), f64>,
    /// Final scores drawn so far (charged or only seen at a hurdle).
    drawn: HashMap<(Gene, u64), f64>,
    /// Hurdle scores and the fraction they cost.
    partials: HashMap<(Gene, u64), (f64, f64)>,
    /// Runs charged, fractional with hurdles.
    used: f64,
}

impl<'a> World<'a> {
    fn new(land: &'a Landscape, rng: ChaCha8Rng) -> World<'a> {
        World {
            land,
            rng,
            seeds: HashMap::new(),
            runs: HashMap::new(),
            drawn: HashMap::new(),
            partials: HashMap::new(),
            used: 0.0,
        }
    }

    /// The final score of (g, s), drawn once.
    fn draw(&mut self, g: Gene, s: u64) -> f64 {
        if let Some(v) = self.drawn.get(&(g, s)) {
            return *v;
        }
        let b = match self.seeds.get(&s) {
            Some(b) => *b,
            None => {
                let b = self.land.seed_sd * self.normal();
                self.seeds.insert(s, b);
                b
            }
        };
        let v = self.land.truth(g) + b + self.land.interaction_sd * self.normal();
        self.drawn.insert((g, s), v);
        v
    }

    /// What finishing (g, s) costs now.
    fn cost_of(&self, k: &(Gene, u64)) -> f64 {
        if self.runs.contains_key(k) {
            0.0
        } else {
            1.0 - self.partials.get(k).map_or(0.0, |p| p.1)
        }
    }

    fn normal(&mut self) -> f64 {
        StandardNormal.sample(&mut self.rng)
    }
}

impl Evaluator for World<'_> {
    fn evaluate(&mut self, req: &[(Gene, u64)], budget: Option<usize>) -> Option<Scores> {
        let new: f64 = req.iter().map(|k| self.cost_of(k)).sum();
        if budget.is_some_and(|b| self.used + new > b as f64 + 1e-9) {
            return None;
        }
        let mut out = Scores::new();
        for &(g, s) in req {
            let v = match self.runs.get(&(g, s)) {
                Some(v) => *v,
                None => {
                    self.used += self.cost_of(&(g, s));
                    let v = self.draw(g, s);
                    self.runs.insert((g, s), v);
                    v
                }
            };
            out.insert((g, s), Some(v));
        }
        Some(out)
    }

    fn partial(&mut self, req: &[(Gene, u64)], at: f64, budget: Option<usize>) -> Option<Scores> {
        let new = req
            .iter()
            .filter(|k| !self.partials.contains_key(k) && !self.runs.contains_key(k))
            .count() as f64
            * at;
        if budget.is_some_and(|b| self.used + new > b as f64 + 1e-9) {
            return None;
        }
        let mut out = Scores::new();
        for &(g, s) in req {
            let v = match self.partials.get(&(g, s)) {
                Some(p) => p.0,
                None => {
                    if !self.runs.contains_key(&(g, s)) {
                        self.used += at;
                    }
                    let v = self.draw(g, s) + self.land.hurdle_sd * self.normal();
                    self.partials.insert((g, s), (v, at));
                    v
                }
            };
            out.insert((g, s), Some(v));
        }
        Some(out)
    }

    fn used(&self) -> usize {
        self.used.round() as usize
    }

    fn observed(&self, g: Gene) -> f64 {
        let v: Vec<f64> = self
            .runs
            .iter()
            .filter(|(k, _)| k.0 == g)
            .map(|(_, v)| *v)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }
}

/// A search strategy the simulator can run.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// A GA (the published one, or with the baseline and re-evaluated elites) with its
    /// seeds per evaluation.
    Ga(EvolveSpec, Vec<u64>),
    /// Uniform random search over `evaluations` genes, one seed each.
    Random(RandomSearchSpec),
    /// A race over the given candidates (plus the baseline when kept).
    Race(RaceSpec, Vec<Gene>),
    /// A GA on part of the budget, then a race over its top `top` genes on the rest.
    GaThenRace(EvolveSpec, RaceSpec, usize),
    /// A race over `shortlist` random genes.
    RaceShortlist(RaceSpec, usize),
    /// Every candidate on the same `seeds` seeds; the lowest mean wins.
    Fixed(Vec<Gene>, usize),
}

/// What one strategy achieved in one replicate.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    pick: Gene,
    reported: f64,
    runs: usize,
}

fn best_of(scored: &[(Gene, f64)]) -> Option<(Gene, f64)> {
    scored
        .iter()
        .copied()
        .filter(|x| x.1.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.index().cmp(&b.0.index())))
}

/// The GA of `spec` on `seeds`, evaluated by `ev` within `budget` runs: exactly the code a
/// study runs ([`evolve`]), so a store's scores reproduce its `generations.parquet`.
pub fn ga_with(
    spec: &EvolveSpec,
    seeds: &[u64],
    ev: &mut dyn Evaluator,
    budget: Option<usize>,
) -> Result<super::EvolveOutcome> {
    let ev = std::cell::RefCell::new(ev);
    let at = spec.hurdle.map_or(1.0, |h| h.at);
    super::evolve::evolve_with_hurdle(
        spec,
        seeds,
        |_, missing| Ok(ev.borrow_mut().evaluate(missing, budget)),
        |_, missing| Ok(ev.borrow_mut().partial(missing, at, budget)),
    )
}

fn run_ga(
    spec: &EvolveSpec,
    seeds: &[u64],
    w: &mut dyn Evaluator,
    budget: Option<usize>,
) -> Result<Vec<(Gene, f64)>> {
    let out = ga_with(spec, seeds, w, budget)?;
    Ok(out.rows.iter().map(|r| (r.gene, r.fitness)).collect())
}

fn run_race(
    spec: &RaceSpec,
    cands: &[Gene],
    w: &mut dyn Evaluator,
    seeds_from: u64,
) -> Result<Option<(Gene, f64)>> {
    let mut cands = cands.to_vec();
    if spec.keep_baseline && !cands.contains(&Gene::BASELINE) {
        cands.insert(0, Gene::BASELINE);
    }
    let base = cands.contains(&Gene::BASELINE).then_some(Gene::BASELINE);
    let seeds: Vec<u64> = (seeds_from..seeds_from + spec.max_seeds as u64).collect();
    let budget = spec.max_runs.map(|m| m + w.used());
    let out = race::race(spec, &cands, base, &seeds, |_, req| {
        Ok(w.evaluate(req, budget))
    })?;
    let last = out.rows.last().map(|r| r.round);
    let alive: Vec<(Gene, f64)> = out
        .rows
        .iter()
        .filter(|r| Some(r.round) == last && r.alive)
        .map(|r| (r.gene, r.mean))
        .collect();
    Ok(best_of(&alive))
}

impl Strategy {
    /// A short name for tables.
    pub fn name(&self) -> String {
        match self {
            Strategy::Ga(s, _) if s.reevaluate_elites || s.include_baseline => {
                "GA + baseline + re-evaluated elites".into()
            }
            Strategy::Ga(_, seeds) => format!(
                "GA ({} seed{} per evaluation)",
                seeds.len(),
                if seeds.len() == 1 { "" } else { "s" }
            ),
            Strategy::Random(_) => "random search".into(),
            Strategy::Race(_, c) => format!("race over {} candidates", c.len()),
            Strategy::GaThenRace(_, _, k) => {
                format!("GA on half the budget, then a race of its top {k}")
            }
            Strategy::RaceShortlist(_, k) => format!("race over a random shortlist of {k}"),
            Strategy::Fixed(c, n) => {
                format!("fixed {n}-seed replication of {} candidates", c.len())
            }
        }
    }

    fn play(&self, w: &mut dyn Evaluator, budget: Option<usize>, rep_seed: u64) -> Result<Outcome> {
        let (pick, reported) = match self {
            Strategy::Ga(spec, seeds) => best_of(&run_ga(spec, seeds, w, budget)?),
            Strategy::Random(spec) => {
                let genes = random_genes(spec);
                let mut scored = Vec::new();
                for g in genes {
                    match w.evaluate(&[(g, 1)], budget) {
                        Some(s) => scored.push((g, s[&(g, 1)].unwrap_or(f64::INFINITY))),
                        None => break,
                    }
                }
                best_of(&scored)
            }
            Strategy::Race(spec, cands) => {
                let spec = RaceSpec {
                    max_runs: budget.or(spec.max_runs),
                    ..spec.clone()
                };
                run_race(&spec, cands, w, 1)?
            }
            Strategy::GaThenRace(ga, rs, top) => {
                let half = budget.map(|b| b / 2);
                let scored = run_ga(ga, &[1], w, half)?;
                let mut uniq: Vec<(Gene, f64)> = Vec::new();
                for (g, f) in scored {
                    match uniq.iter_mut().find(|x| x.0 == g) {
                        Some(x) => x.1 = f,
                        None => uniq.push((g, f)),
                    }
                }
                let top = super::select_elites(&uniq, *top);
                let spec = RaceSpec {
                    max_runs: budget.map(|b| b.saturating_sub(w.used())),
                    ..rs.clone()
                };
                run_race(&spec, &top, w, 1001)?
            }
            Strategy::Fixed(cands, n) => {
                let req: Vec<(Gene, u64)> = cands
                    .iter()
                    .flat_map(|&g| (1..=*n as u64).map(move |s| (g, s)))
                    .collect();
                match w.evaluate(&req, budget) {
                    Some(sc) => {
                        let scored: Vec<(Gene, f64)> = cands
                            .iter()
                            .map(|&g| {
                                let v: Vec<Option<f64>> =
                                    (1..=*n as u64).map(|s| sc[&(g, s)]).collect();
                                (g, super::fitness(&v))
                            })
                            .collect();
                        best_of(&scored)
                    }
                    None => None,
                }
            }
            Strategy::RaceShortlist(rs, k) => {
                let genes = random_genes(&RandomSearchSpec {
                    evaluations: *k,
                    seed: rep_seed,
                });
                let spec = RaceSpec {
                    max_runs: budget.or(rs.max_runs),
                    ..rs.clone()
                };
                run_race(&spec, &genes, w, 1)?
            }
        }
        .unwrap_or((Gene::BASELINE, f64::NAN));
        let reported = if reported.is_finite() {
            reported
        } else {
            w.observed(pick)
        };
        Ok(Outcome {
            pick,
            reported,
            runs: w.used(),
        })
    }
}

/// A metric's mean over replicates and its Monte Carlo standard error.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Estimate {
    /// Mean.
    pub mean: f64,
    /// Standard error of the mean (sd / √replicates).
    pub se: f64,
}

fn estimate(v: &[f64]) -> Estimate {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    Estimate {
        mean: m,
        se: (var / n).sqrt(),
    }
}

/// What a strategy achieves on a landscape.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StrategyResult {
    /// Its name.
    pub strategy: String,
    /// P(the pick is a true best gene).
    pub p_correct: Estimate,
    /// P(the pick is within δ of the true best).
    pub p_within_margin: Estimate,
    /// True score of the pick minus the best.
    pub regret: Estimate,
    /// Reported minus true score of the pick.
    pub winners_curse: Estimate,
    /// Runs used.
    pub runs: Estimate,
}

/// Runs `strategy` `replicates` times on `land` with at most `budget` runs each.
pub fn simulate(
    strategy: &Strategy,
    land: &Landscape,
    replicates: usize,
    budget: Option<usize>,
    margin: f64,
    seed: u64,
) -> Result<StrategyResult> {
    let (best, _) = land.best();
    let outs: Vec<Outcome> = (0..replicates)
        .into_par_iter()
        .map(|r| {
            let mut w = World::new(land, rng_for(seed, &format!("simulate/{r}")));
            strategy.play(&mut w, budget, seed.wrapping_add(r as u64))
        })
        .collect::<Result<_>>()?;
    let f = |g: &dyn Fn(&Outcome) -> f64| estimate(&outs.iter().map(g).collect::<Vec<_>>());
    Ok(StrategyResult {
        strategy: strategy.name(),
        p_correct: f(&|o| f64::from(u8::from(land.truth(o.pick) <= best + 1e-12))),
        p_within_margin: f(&|o| f64::from(u8::from(land.truth(o.pick) - best <= margin))),
        regret: f(&|o| land.truth(o.pick) - best),
        winners_curse: f(&|o| o.reported - land.truth(o.pick)),
        runs: f(&|o| o.runs as f64),
    })
}

/// The mean runs `strategy` uses without a budget (its natural cost), over `replicates`.
pub fn natural_runs_mean(
    strategy: &Strategy,
    land: &Landscape,
    replicates: usize,
    seed: u64,
) -> Result<f64> {
    let v: Vec<usize> = (0..replicates)
        .into_par_iter()
        .map(|r| {
            let mut w = World::new(land, rng_for(seed, &format!("simulate/{r}")));
            Ok(strategy
                .play(&mut w, None, seed.wrapping_add(r as u64))?
                .runs)
        })
        .collect::<Result<_>>()?;
    Ok(v.iter().sum::<usize>() as f64 / v.len().max(1) as f64)
}

/// Runs charged by one replicate of `strategy` without a budget (its natural cost).
pub fn natural_runs(strategy: &Strategy, land: &Landscape, seed: u64) -> Result<usize> {
    let mut w = World::new(land, rng_for(seed, "simulate/budget"));
    Ok(strategy.play(&mut w, None, seed)?.runs)
}

/// The strategies of `--compare`: the published GA, the GA with the baseline and
/// re-evaluated elites, random search, a GA followed by a race of its top 4, and a race
/// over a random shortlist of 12 — all held to the published GA's run budget.
pub fn compare_strategies(ga: &EvolveSpec) -> Vec<Strategy> {
    let published = EvolveSpec {
        include_baseline: false,
        reevaluate_elites: false,
        max_evaluations: None,
        ..ga.clone()
    };
    let fixed = EvolveSpec {
        include_baseline: true,
        reevaluate_elites: true,
        max_evaluations: None,
        ..ga.clone()
    };
    let race = RaceSpec::default();
    vec![
        Strategy::Ga(published.clone(), vec![1]),
        Strategy::Ga(fixed, vec![1]),
        Strategy::Random(RandomSearchSpec {
            evaluations: crate::gene::GENE_COUNT,
            seed: ga.seed,
        }),
        Strategy::GaThenRace(published, race.clone(), 4),
        Strategy::RaceShortlist(race, 12),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::margin;

    /// Unused helper kept small: the planted landscape is built by `by_hand`.
    fn planted() -> (Landscape, Vec<Gene>) {
        let mut land = Landscape::null(100.0, 2.0, 1.0);
        let genes: Vec<Gene> = Gene::all().into_iter().step_by(37).take(12).collect();
        // Effects through the similarity and normalization levels the genes use.
        land.effects = Component::ALL
            .iter()
            .map(|c| vec![0.0; c.values().len()])
            .collect();
        // Give each candidate its own true score via a per-gene offset on the mean: use a
        // landscape whose truth we set by hand below.
        (land, genes)
    }

    /// A landscape where `genes[i]` scores 100 + offsets[i] (others far worse).
    fn by_hand(
        genes: &[Gene],
        offsets: &[f64],
        seed_sd: f64,
        noise: f64,
    ) -> (Landscape, Vec<Gene>) {
        // Encode each gene by a distinct similarity × normalization pair with an additive
        // effect: gene i = similarity i % 6, normalization i / 6 would not be additive, so
        // use distinct genes that differ only in one component.
        let _ = genes;
        let mut land = Landscape::null(100.0, seed_sd, noise);
        let mut out = Vec::new();
        // Vary gating (5 levels) and temperature (4 levels) over dot+softmax: 20 genes,
        // truth = gating effect + temperature effect; pick offsets through two components.
        let g_eff = [0.0, 3.0, 4.0, 5.0, 6.0];
        let t_eff = [0.0, 1.25, 3.5, 4.0];
        for (i, e) in g_eff.iter().enumerate() {
            land.effects[Component::Gating as usize][i] = *e;
        }
        for (i, e) in t_eff.iter().enumerate() {
            land.effects[Component::Temperature as usize][i] = *e;
        }
        // Everything else clearly worse, so the best of the space is among the candidates.
        for c in [Component::Similarity, Component::Normalization] {
            for (i, e) in land.effects[c as usize].iter_mut().enumerate() {
                *e = if i == 0 { 0.0 } else { 10.0 };
            }
        }
        for g in Gene::all() {
            if g.similarity.index() == 0
                && g.normalization.index() == 0
                && out.len() < offsets.len().max(12)
            {
                out.push(g);
            }
        }
        (land, out)
    }

    #[test]
    fn the_race_matches_a_fixed_replication_with_far_fewer_runs() {
        let (land, cands) = by_hand(&[], &[], 2.0, 1.0);
        assert_eq!(cands.len(), 12);
        let (best, winners) = land.best();
        assert_eq!((best, winners.len()), (100.0, 1));
        assert!(cands.contains(&winners[0]));
        let reps = 1000;
        let fixed = simulate(
            &Strategy::Fixed(cands.clone(), 10),
            &land,
            reps,
            None,
            0.5,
            7,
        )
        .unwrap();
        let spec = RaceSpec {
            keep_baseline: false,
            ..RaceSpec::default()
        };
        let race = simulate(
            &Strategy::Race(spec, cands.clone()),
            &land,
            reps,
            None,
            0.5,
            7,
        )
        .unwrap();
        eprintln!("fixed: {fixed:?}\nrace: {race:?}");
        assert_eq!(fixed.runs.mean, 120.0);
        assert!(race.runs.mean <= 0.6 * fixed.runs.mean, "{race:?}");
        assert!(
            race.p_correct.mean + 2.0 * race.p_correct.se >= fixed.p_correct.mean,
            "race {race:?} fixed {fixed:?}"
        );
    }

    #[test]
    fn a_null_race_confirms_nothing_more_often_than_alpha() {
        let land = Landscape::null(100.0, 2.0, 1.0);
        let cands: Vec<Gene> = Gene::all()
            .into_iter()
            .skip(1)
            .step_by(61)
            .take(6)
            .collect();
        let races = 1000;
        let spec = RaceSpec::default();
        let alpha = 0.05;
        let mut false_claims = 0;
        for r in 0..races {
            let mut w = World::new(&land, rng_for(3, &format!("null/{r}")));
            let mut all = cands.clone();
            all.insert(0, Gene::BASELINE);
            let seeds: Vec<u64> = (1..=20).collect();
            let out = race::race(&spec, &all, Some(Gene::BASELINE), &seeds, |_, req| {
                Ok(w.evaluate(req, None))
            })
            .unwrap();
            let survivors: Vec<Gene> = out
                .survivors
                .iter()
                .copied()
                .filter(|g| *g != Gene::BASELINE)
                .collect();
            // Confirmation on 10 fresh seeds, paired against the baseline, Holm per kind.
            let fresh: Vec<u64> = (21..=30).collect();
            let base: Vec<f64> = fresh
                .iter()
                .map(|&s| {
                    w.evaluate(&[(Gene::BASELINE, s)], None).unwrap()[&(Gene::BASELINE, s)].unwrap()
                })
                .collect();
            let tests: Vec<margin::MarginTest> = survivors
                .iter()
                .map(|&g| {
                    let x: Vec<f64> = fresh
                        .iter()
                        .map(|&s| w.evaluate(&[(g, s)], None).unwrap()[&(g, s)].unwrap())
                        .collect();
                    margin::margin_paired(&x, &base, 1.0, 1.0 - alpha).unwrap()
                })
                .collect();
            let family: Vec<margin::MarginP> = tests.iter().map(|t| t.pvalues()).collect();
            let claims = margin::holm(&family).iter().zip(&tests).any(|(p, t)| {
                let v = margin::verdict(p, t.diff, alpha);
                v.is_better() || v.is_worse()
            });
            false_claims += usize::from(claims);
        }
        let rate = false_claims as f64 / races as f64;
        let se = (alpha * (1.0 - alpha) / races as f64).sqrt();
        eprintln!("null races: {false_claims} of {races} confirmed a difference");
        assert!(rate <= alpha + 3.0 * se, "{rate}");
    }

    #[test]
    fn simulations_are_seeded_and_the_null_curse_is_positive() {
        let land = Landscape::null(100.0, 2.0, 1.0);
        let spec = EvolveSpec::default();
        let a = simulate(
            &Strategy::Ga(spec.clone(), vec![1]),
            &land,
            200,
            None,
            1.0,
            5,
        )
        .unwrap();
        let b = simulate(&Strategy::Ga(spec, vec![1]), &land, 200, None, 1.0, 5).unwrap();
        assert_eq!(a, b);
        // Every gene is equal: any pick is correct, and the reported score is optimistic.
        assert_eq!(a.p_correct.mean, 1.0);
        assert!(a.winners_curse.mean < -1.0, "{a:?}");
        let _ = planted();
    }
}

#[cfg(test)]
mod hurdle_tests {
    use super::*;
    use crate::search::Hurdle;

    fn land(hurdle_sd: f64) -> Landscape {
        let mut land = Landscape::null(100.0, 2.0, 1.0);
        land.set(Component::Normalization, "sparsemax", -3.0)
            .unwrap();
        land.set(Component::Gating, "output_gate", -2.0).unwrap();
        land.hurdle_sd = hurdle_sd;
        land
    }

    #[test]
    fn hurdles_cost_fewer_runs_and_a_noisy_hurdle_picks_worse() {
        let plain = EvolveSpec::default();
        let hurdled = EvolveSpec {
            hurdle: Some(Hurdle {
                at: 0.25,
                keep: 0.5,
            }),
            ..EvolveSpec::default()
        };
        let reps = 400;
        let a = simulate(
            &Strategy::Ga(plain, vec![1]),
            &land(0.0),
            reps,
            None,
            0.5,
            3,
        )
        .unwrap();
        let b = simulate(
            &Strategy::Ga(hurdled.clone(), vec![1]),
            &land(0.0),
            reps,
            None,
            0.5,
            3,
        )
        .unwrap();
        // Per generation 12 (then 9) new genes; half go on: 0.25 + 0.5 × 0.75 of the runs.
        assert!(
            b.runs.mean < 0.75 * a.runs.mean,
            "{} vs {}",
            b.runs.mean,
            a.runs.mean
        );
        assert!(
            b.runs.mean > 0.5 * a.runs.mean,
            "{} vs {}",
            b.runs.mean,
            a.runs.mean
        );
        // A hurdle whose scores are pure noise about the end is worse than an exact one.
        let c = simulate(
            &Strategy::Ga(hurdled, vec![1]),
            &land(50.0),
            reps,
            None,
            0.5,
            3,
        )
        .unwrap();
        assert!(
            c.regret.mean > b.regret.mean,
            "noisy hurdle regret {} vs exact {}",
            c.regret.mean,
            b.regret.mean
        );
    }
}
