//! Racing over seeds (irace's F-race, Birattari et al. 2002): every alive candidate trains
//! on the same seeds, round by round — `first_test` seeds first, then `each_test` per
//! round — and after each round a test drops the candidates that are significantly worse
//! than the best so far. Pure given the scores: the evaluator behind the callback trains
//! (a study), reads a store (status) or draws from a simulated landscape (the simulator).
//!
//! The elimination test, on the candidates × seeds table of validation ppl (a diverged run
//! ranks worst):
//! - `friedman` (irace's default): the Friedman test over seed blocks; when it rejects at α,
//!   Conover's post-hoc t of each candidate against the best-ranked one (unadjusted, as
//!   irace), and every candidate with a larger rank sum and p ≤ α is eliminated. With two
//!   candidates left, Friedman's statistic is the sign test's χ² = (wins − losses)² /
//!   (wins + losses) on one df (ties dropped), as irace's `friedman.test` computes it; an
//!   exact rank test could not reject at all before 6 seeds (Wilcoxon's smallest two-sided
//!   p with 5 pairs is 0.0625).
//! - `t`: paired t of each candidate against the one with the lowest mean, Holm over those
//!   comparisons, eliminating the worse ones with adjusted p ≤ α.
//!
//! The baseline, when kept, is ranked and tested like any candidate but never eliminated
//! and does not count towards `min_survivors`. Repeated testing does not control error
//! rates: a race's survivors are confirmed on fresh seeds by the study.

use super::Scores;
use crate::gene::Gene;
use crate::record::RaceRow;
use crate::stats::{self, kgroups, multitest, ttest, Alternative};
use anyhow::Result;
use serde::Deserialize;

/// Which elimination test a race uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RaceTest {
    /// Friedman with Conover's post-hoc against the best (irace's default).
    Friedman,
    /// Paired t against the best, Holm.
    T,
}

impl RaceTest {
    /// Its spelling in study files.
    pub fn as_str(self) -> &'static str {
        match self {
            RaceTest::Friedman => "friedman",
            RaceTest::T => "t",
        }
    }
}

/// How a race runs (the `[race]` keys besides the candidates).
#[derive(Debug, Clone, PartialEq)]
pub struct RaceSpec {
    /// Seeds before the first test.
    pub first_test: usize,
    /// Seeds added per round after that.
    pub each_test: usize,
    /// The elimination test.
    pub test: RaceTest,
    /// Its level.
    pub alpha: f64,
    /// Stop when this many candidates (the baseline aside) are alive.
    pub min_survivors: usize,
    /// Stop when the alive candidates have this many seeds.
    pub max_seeds: usize,
    /// Stop before a round that would take the runs above this.
    pub max_runs: Option<usize>,
    /// Keep the baseline to the end (never eliminated).
    pub keep_baseline: bool,
}

impl Default for RaceSpec {
    fn default() -> Self {
        RaceSpec {
            first_test: 5,
            each_test: 1,
            test: RaceTest::Friedman,
            alpha: 0.05,
            min_survivors: 1,
            max_seeds: 20,
            max_runs: None,
            keep_baseline: true,
        }
    }
}

/// Why a race stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaceStop {
    /// `min_survivors` reached.
    Survivors,
    /// `max_seeds` reached.
    MaxSeeds,
    /// The next round would exceed `max_runs`.
    MaxRuns,
    /// The seed list ran out.
    Seeds,
}

/// What a race produced (so far).
#[derive(Debug, Clone, Default)]
pub struct RaceOutcome {
    /// Every candidate after every completed round.
    pub rows: Vec<RaceRow>,
    /// Every (gene, seed) requested, in order.
    pub requests: Vec<(Gene, u64)>,
    /// Alive at the end, best mean first.
    pub survivors: Vec<Gene>,
    /// Whether the race finished (false: the evaluator could not finish a round).
    pub complete: bool,
    /// Why it stopped, when complete.
    pub stop: Option<RaceStop>,
    /// The round that could not be evaluated, when incomplete.
    pub pending_round: Option<usize>,
}

impl RaceOutcome {
    /// Runs the race used.
    pub fn runs(&self) -> usize {
        self.requests.len()
    }
}

/// A large finite value for diverged runs, worse than every finished one.
fn worst(scores: &[Vec<Option<f64>>]) -> f64 {
    scores
        .iter()
        .flatten()
        .flatten()
        .copied()
        .fold(0.0f64, f64::max)
        * 1e3
        + 1e6
}

/// The candidates of `alive` that this round's test eliminates, with their p-values;
/// `table[i][s]` is candidate i's score on seed s.
fn eliminate(
    spec: &RaceSpec,
    alive: &[Gene],
    table: &[Vec<Option<f64>>],
    protected: Option<Gene>,
) -> Vec<(usize, f64)> {
    let w = worst(table);
    let groups: Vec<Vec<f64>> = table
        .iter()
        .map(|r| r.iter().map(|v| v.unwrap_or(w)).collect())
        .collect();
    let k = alive.len();
    if k < 2 || groups[0].len() < 2 {
        return vec![];
    }
    let keep = |i: usize| protected == Some(alive[i]);
    let sums = rank_sums(&groups);
    let mut out = Vec::new();
    match spec.test {
        RaceTest::Friedman if k >= 3 => {
            let Ok(f) = kgroups::friedman(&groups) else {
                return vec![];
            };
            // A NaN p-value (every seed tied) rejects nothing.
            if f.pvalue.is_nan() || f.pvalue > spec.alpha {
                return vec![];
            }
            let best = argmin(&sums);
            let Ok(post) = kgroups::conover_friedman(&groups) else {
                return vec![];
            };
            for p in post {
                let other = if p.a == best {
                    p.b
                } else if p.b == best {
                    p.a
                } else {
                    continue;
                };
                if !keep(other) && sums[other] > sums[best] && p.pvalue_unadjusted <= spec.alpha {
                    out.push((other, p.pvalue_unadjusted));
                }
            }
        }
        RaceTest::Friedman => {
            // Two candidates: Friedman's χ² is the sign test's, on one df.
            let best = argmin(&sums);
            let other = 1 - best;
            let (mut wins, mut losses) = (0.0, 0.0);
            for (a, b) in groups[other].iter().zip(&groups[best]) {
                if a > b {
                    losses += 1.0;
                } else if a < b {
                    wins += 1.0;
                }
            }
            if wins + losses > 0.0 {
                let chi2 = (losses - wins) * (losses - wins) / (wins + losses);
                let p = kgroups::chi2_sf(chi2, 1.0);
                if !keep(other) && sums[other] > sums[best] && p <= spec.alpha {
                    out.push((other, p));
                }
            }
        }
        RaceTest::T => {
            let means: Vec<f64> = groups.iter().map(|g| stats::mean(g)).collect();
            let best = argmin(&means);
            let others: Vec<usize> = (0..k).filter(|&i| i != best).collect();
            let ps: Vec<f64> = others
                .iter()
                .map(|&i| {
                    ttest::paired(&groups[i], &groups[best], Alternative::TwoSided)
                        .map_or(f64::NAN, |t| t.pvalue)
                })
                .collect();
            let adj = multitest::adjust(
                &ps.iter()
                    .map(|p| if p.is_nan() { 1.0 } else { *p })
                    .collect::<Vec<_>>(),
                multitest::Method::Holm,
            )
            .unwrap_or_else(|_| vec![1.0; ps.len()]);
            for (&i, q) in others.iter().zip(adj) {
                if !keep(i) && means[i] > means[best] && q <= spec.alpha {
                    out.push((i, q));
                }
            }
        }
    }
    out
}

fn argmin(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// Rank sums of the candidates over seed blocks (average ranks for ties).
fn rank_sums(groups: &[Vec<f64>]) -> Vec<f64> {
    let n = groups.first().map_or(0, |g| g.len());
    let mut sums = vec![0.0; groups.len()];
    for s in 0..n {
        let row: Vec<f64> = groups.iter().map(|g| g[s]).collect();
        for (t, r) in sums.iter_mut().zip(stats::rank::rank_average(&row).0) {
            *t += r;
        }
    }
    sums
}

/// Runs a race of `candidates` (the baseline among them when it races) on the ordered
/// `seeds`; `evaluate(round, requests)` returns the validation ppl of every requested
/// (gene, seed), or `None` when it cannot (yet) — then the race stops there.
pub fn race(
    spec: &RaceSpec,
    candidates: &[Gene],
    baseline: Option<Gene>,
    seeds: &[u64],
    mut evaluate: impl FnMut(usize, &[(Gene, u64)]) -> Result<Option<Scores>>,
) -> Result<RaceOutcome> {
    let mut out = RaceOutcome::default();
    let mut alive: Vec<Gene> = candidates.to_vec();
    let protected = baseline.filter(|_| spec.keep_baseline);
    let mut scores: Scores = Scores::new();
    let mut used = 0usize;
    let mut round = 0usize;
    loop {
        let want = if round == 0 {
            spec.first_test
        } else {
            used + spec.each_test
        }
        .min(spec.max_seeds);
        if want > seeds.len() {
            out.stop = Some(RaceStop::Seeds);
            break;
        }
        let new: Vec<(Gene, u64)> = alive
            .iter()
            .flat_map(|&g| seeds[used..want].iter().map(move |&s| (g, s)))
            .collect();
        if let Some(cap) = spec.max_runs {
            if round > 0 && out.requests.len() + new.len() > cap {
                out.stop = Some(RaceStop::MaxRuns);
                break;
            }
        }
        match evaluate(round, &new)? {
            Some(s) => scores.extend(s),
            None => {
                out.pending_round = Some(round);
                return Ok(out);
            }
        }
        out.requests.extend(new);
        used = want;
        let table: Vec<Vec<Option<f64>>> = alive
            .iter()
            .map(|&g| {
                seeds[..used]
                    .iter()
                    .map(|&s| scores.get(&(g, s)).copied().flatten())
                    .collect()
            })
            .collect();
        let gone = eliminate(spec, &alive, &table, protected);
        let w = worst(&table);
        let sums = rank_sums(
            &table
                .iter()
                .map(|r| r.iter().map(|v| v.unwrap_or(w)).collect())
                .collect::<Vec<_>>(),
        );
        for (i, &g) in alive.iter().enumerate() {
            let fin: Vec<f64> = table[i].iter().flatten().copied().collect();
            let p = gone.iter().find(|x| x.0 == i).map(|x| x.1);
            out.rows.push(RaceRow {
                round: round as u64,
                gene: g,
                n_seeds: used as u64,
                mean: stats::mean(&fin),
                rank_sum: sums[i],
                alive: p.is_none(),
                eliminated: p.is_some(),
                pvalue: p.unwrap_or(f64::NAN),
            });
        }
        let gone: Vec<Gene> = gone.iter().map(|x| alive[x.0]).collect();
        alive.retain(|g| !gone.contains(g));
        round += 1;
        let racing = alive.iter().filter(|g| Some(**g) != protected).count();
        if racing <= spec.min_survivors {
            out.stop = Some(RaceStop::Survivors);
            break;
        }
        if used >= spec.max_seeds {
            out.stop = Some(RaceStop::MaxSeeds);
            break;
        }
    }
    // Survivors, best mean first (ties by gene index).
    let last: Vec<&RaceRow> = out
        .rows
        .iter()
        .filter(|r| r.alive && Some(r.round) == out.rows.last().map(|l| l.round))
        .collect();
    let mut surv: Vec<(Gene, f64)> = last.iter().map(|r| (r.gene, r.mean)).collect();
    surv.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.index().cmp(&b.0.index())));
    out.survivors = surv.into_iter().map(|x| x.0).collect();
    out.complete = true;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    fn genes(n: usize) -> Vec<Gene> {
        Gene::all().into_iter().take(n).collect()
    }

    /// Scores: per-gene true means plus a shared seed effect and N(0, 1) noise.
    fn run(spec: &RaceSpec, means: &[f64], rng_seed: u64) -> RaceOutcome {
        let g = genes(means.len());
        let seeds: Vec<u64> = (1..=40).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rng_seed);
        let n = Normal::new(0.0, 1.0).unwrap();
        let seed_effect: Vec<f64> = (0..=40).map(|_| 3.0 * n.sample(&mut rng)).collect();
        race(spec, &g, None, &seeds, |_, req| {
            Ok(Some(
                req.iter()
                    .map(|&(gene, s)| {
                        let i = g.iter().position(|x| *x == gene).unwrap();
                        let v = 100.0 + means[i] + seed_effect[s as usize] + n.sample(&mut rng);
                        ((gene, s), Some(v))
                    })
                    .collect(),
            ))
        })
        .unwrap()
    }

    /// The share of 200 planted races in which the last candidate (3 noise sd worse than
    /// the others) is eliminated at the first test, and in which an equal one is.
    fn first_test_rates(spec: &RaceSpec, means: &[f64]) -> (f64, f64) {
        let (mut worse, mut equal) = (0, 0);
        for s in 0..200 {
            let out = run(spec, means, 1000 + s);
            let first: Vec<&RaceRow> = out.rows.iter().filter(|r| r.round == 0).collect();
            assert_eq!(first.len(), means.len());
            assert!(first.iter().all(|r| r.n_seeds == 5));
            worse += usize::from(first.last().unwrap().eliminated);
            equal += usize::from(first[..first.len() - 1].iter().any(|r| r.eliminated));
        }
        (worse as f64 / 200.0, equal as f64 / 200.0)
    }

    #[test]
    fn a_clearly_worse_candidate_goes_at_the_first_test() {
        for test in [RaceTest::Friedman, RaceTest::T] {
            let spec = RaceSpec {
                test,
                ..RaceSpec::default()
            };
            for means in [vec![0.0, 0.0, 3.0], vec![0.0, 3.0]] {
                let (worse, equal) = first_test_rates(&spec, &means);
                assert!(worse >= 0.8, "{test:?} {means:?}: {worse}");
                assert!(equal <= 0.15, "{test:?} {means:?}: {equal}");
            }
        }
    }

    #[test]
    fn equal_candidates_survive_to_max_seeds() {
        let spec = RaceSpec {
            max_seeds: 12,
            ..RaceSpec::default()
        };
        let mut survived = 0;
        for s in 0..20 {
            let out = run(&spec, &[0.0, 0.0, 0.0], 100 + s);
            assert!(out.complete);
            if out.stop == Some(RaceStop::MaxSeeds) && out.survivors.len() == 3 {
                survived += 1;
            }
        }
        // Each of ~8 tests can drop a candidate at α = 0.05; most races keep all three.
        assert!(survived >= 12, "{survived} of 20");
    }

    #[test]
    fn the_baseline_is_never_eliminated_and_runs_are_counted() {
        let spec = RaceSpec::default();
        let g = genes(3);
        let seeds: Vec<u64> = (1..=20).collect();
        let out = race(&spec, &g, Some(g[2]), &seeds, |_, req| {
            Ok(Some(
                req.iter()
                    .map(|&(gene, s)| {
                        let bad = if gene == g[2] { 50.0 } else { 0.0 };
                        let v = 100.0 + bad + (gene.index() as f64) * 0.01 + s as f64 * 0.1;
                        ((gene, s), Some(v))
                    })
                    .collect(),
            ))
        })
        .unwrap();
        assert!(out.survivors.contains(&g[2]), "{out:?}");
        assert!(out.rows.iter().all(|r| r.gene != g[2] || r.alive));
        let counted: u64 = out
            .rows
            .iter()
            .filter(|r| r.round == 0)
            .map(|r| r.n_seeds)
            .sum();
        assert_eq!(counted, 15u64);
        assert_eq!(out.runs(), out.requests.len());
    }
}
