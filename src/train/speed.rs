//! Training speed, as `evoattn bench` measures it: tokens/s of one run after its warm-up
//! steps, the genes of the cost table, and replica counts compared in paired rounds
//! ([`compare_replicas`], on [`super::turns`]).

use super::{Progress, RunOptions, RunOutput, TrainConfig};
use crate::data::Corpus;
use crate::gene::Gene;
use anyhow::{bail, Result};
use candle_core::Device;
use std::time::Instant;

/// Untimed steps at the start of every timed run (allocation, first-touch pages, caches).
pub const WARMUP_STEPS: usize = 2;

/// Untimed steps of each run of a [`compare_replicas`] before its first round. More than
/// [`WARMUP_STEPS`]: with 2, the second round was still slow for R = 2 (both rounds R = 2
/// lost in 70 at the seed preset were second rounds; 7 of the first two rounds' 8 ratios lay
/// below their invocation's mean).
pub const COMPARE_WARMUP_STEPS: usize = 6;

/// Training tokens/s of `gene` over `steps` steps after [`WARMUP_STEPS`] warm-up steps, and
/// the number of replica groups the run trained in.
pub fn measure(
    gene: Gene,
    run_cfg: &TrainConfig,
    corpus: &Corpus,
    replicas: usize,
    steps: usize,
    replica_groups: Option<usize>,
    device: &Device,
) -> Result<(f64, usize)> {
    let warm = WARMUP_STEPS;
    let mut marks: Vec<Instant> = Vec::new();
    let mut cb = |p: Progress| {
        if p.step == warm || p.step == warm.saturating_add(steps) {
            marks.push(Instant::now());
        }
    };
    let out = bench_run(
        gene,
        run_cfg,
        corpus,
        device,
        replicas,
        warm.saturating_add(steps),
        replica_groups,
        &mut cb,
    )?;
    let [t0, t1] = marks[..] else {
        let at: Vec<String> = out
            .seeds
            .iter()
            .filter_map(|s| s.diverged_at.map(|d| format!("seed {}: step {d}", s.seed)))
            .collect();
        bail!(
            "{gene}: every replica diverged before the {steps} timed steps ended ({}); nothing to time: lower lr (--set lr=...)",
            at.join(", ")
        );
    };
    let secs = t1.duration_since(t0).as_secs_f64();
    Ok((
        steps as f64 * (replicas * run_cfg.batch_size * run_cfg.seq_len) as f64 / secs,
        out.replica_groups,
    ))
}

/// `replicas` replicas of `gene` (seeds 1..=replicas) trained for `steps` steps without
/// evaluation, `on_step` after each: the run every timing here is taken from.
#[allow(clippy::too_many_arguments)]
fn bench_run(
    gene: Gene,
    cfg: &TrainConfig,
    corpus: &Corpus,
    device: &Device,
    replicas: usize,
    steps: usize,
    replica_groups: Option<usize>,
    on_step: &mut dyn FnMut(Progress),
) -> Result<RunOutput> {
    let seeds: Vec<u64> = (1..=replicas as u64).collect();
    super::train(
        gene,
        cfg,
        corpus,
        &seeds,
        device,
        RunOptions {
            on_step: Some(on_step),
            max_steps: Some(steps),
            skip_eval: true,
            eval_test: false,
            replica_groups,
            ..Default::default()
        },
    )
}

/// The genes of the cost table: similarity × normalization at the cheapest gating and
/// temperature, then each other gating and temperature on the baseline.
pub fn sweep_genes() -> Vec<Gene> {
    use crate::gene::Component;
    let base = Gene::BASELINE;
    let mut out = Vec::new();
    for s in Component::Similarity.values() {
        for n in Component::Normalization.values() {
            let g = base
                .with(Component::Similarity, s)
                .and_then(|g| g.with(Component::Normalization, n))
                .expect("values of the space");
            out.push(g);
        }
    }
    for c in [Component::Gating, Component::Temperature] {
        for v in c.values() {
            let g = base.with(c, v).expect("values of the space");
            if !out.contains(&g) {
                out.push(g);
            }
        }
    }
    out
}

/// A paired comparison of replica counts ([`compare_replicas`]).
pub struct Design<'a> {
    /// Replica counts, the first the reference (two or more, each at least 1).
    pub counts: &'a [usize],
    /// Timed steps per turn.
    pub steps: usize,
    /// Turns of each run per round (see [`super::turns::schedule`]).
    pub passes: usize,
    /// Rounds: in each, every count's run trains `passes` turns of `steps` steps.
    pub rounds: usize,
    /// Replica groups of every run (None: each run's default).
    pub replica_groups: Option<usize>,
}

/// One replica count's timings in a [`Comparison`].
pub struct CountRow {
    /// Replicas of the run.
    pub replicas: usize,
    /// Replica groups it trained in.
    pub groups: usize,
    /// Tokens/s in each round.
    pub round_tokens_per_s: Vec<f64>,
    /// Tokens over time, all rounds together.
    pub tokens_per_s: f64,
    /// Each round's tokens/s over the first count's in the same round.
    pub ratio_to_first: Vec<f64>,
    /// The ratios as paired measurements (None for the first count).
    pub summary: Option<RatioSummary>,
}

/// Per-round ratios of one replica count to the first, as paired measurements (a round's
/// timings share the host's state).
pub struct RatioSummary {
    /// Rounds with a ratio above 1.
    pub ahead: usize,
    /// The lowest ratio.
    pub lowest: f64,
    /// Geometric mean of the ratios.
    pub geomean: f64,
    /// 95 % t interval of the geometric mean (exp of the log ratios' interval, df =
    /// rounds − 1); NaN with one round.
    pub ci95: (f64, f64),
    /// Exact two-sided sign test of rounds ahead against rounds behind (ties left out), as
    /// scipy's `binomtest(ahead, ahead + behind)`.
    pub sign_p: f64,
    /// Standard deviation of the log ratios over rounds (n − 1); NaN with one round.
    pub sd_log: f64,
}

impl RatioSummary {
    /// The summary of per-round ratios `r`.
    pub fn of(r: &[f64]) -> Self {
        use crate::stats::{exact::sign_test, mean_sd, t_ppf, Alternative};
        let logs: Vec<f64> = r.iter().map(|x| x.ln()).collect();
        let n = logs.len() as f64;
        let (m, sd) = mean_sd(&logs);
        let half = t_ppf(0.975, n - 1.0) * sd / n.sqrt();
        let ahead = r.iter().filter(|&&x| x > 1.0).count();
        let behind = r.iter().filter(|&&x| x < 1.0).count();
        RatioSummary {
            ahead,
            lowest: r.iter().copied().fold(f64::INFINITY, f64::min),
            geomean: m.exp(),
            ci95: ((m - half).exp(), (m + half).exp()),
            sign_p: sign_test(ahead as u64, (ahead + behind) as u64, Alternative::TwoSided),
            sd_log: sd,
        }
    }

    /// Turns per round at which a lead the size of this geometric mean would show in every
    /// one of `rounds` rounds with probability `prob`, for ratios measured in rounds of
    /// `passes` turns: each round's log ratio taken as normal with this summary's mean and
    /// sd, the sd shrinking as 1/√turns. A planning estimate, not a test: it assumes the
    /// turns' noise independent (on an AMD Zen 4 VM, four comparisons in three invocations
    /// with rounds of 128 turns had 0.8–1.4 times the sd that rounds of 8 predicted, R = 2
    /// alone 1.0–1.4, and pooled 1.73 times the
    /// variance: consistent with independence, within wide uncertainty; the speed journal)
    /// and takes the estimated lead and sd as true; [`Self::passes_for_every_round_at_ci_low`]
    /// plans for the smallest lead the interval allows. `None` without a lead (geometric
    /// mean ≤ 1) or a spread (one round).
    pub fn passes_for_every_round(&self, passes: usize, rounds: usize, prob: f64) -> Option<usize> {
        passes_needed(self.geomean.ln(), self.sd_log, passes, rounds, prob)
    }

    /// As [`Self::passes_for_every_round`], for a lead only as large as the lower end of the
    /// 95 % interval: the length to choose where a round that misses is costly. `None` where
    /// that end is no lead (≤ 1).
    pub fn passes_for_every_round_at_ci_low(
        &self,
        passes: usize,
        rounds: usize,
        prob: f64,
    ) -> Option<usize> {
        passes_needed(self.ci95.0.ln(), self.sd_log, passes, rounds, prob)
    }
}

/// ceil((z · sd · √passes / lead)²), z = Φ⁻¹(prob^(1/rounds)), at least 1 (and 1 where
/// z ≤ 0: a round ahead with probability ½ asks for no length); `lead` and `sd` on the log
/// scale. `None` for no lead, no finite sd, no rounds or a probability outside (0, 1).
fn passes_needed(lead: f64, sd: f64, passes: usize, rounds: usize, prob: f64) -> Option<usize> {
    use statrs::distribution::{ContinuousCDF, Normal};
    let valid_prob = prob > 0.0 && prob < 1.0; // false for NaN too
    if lead.is_nan() || lead <= 0.0 || !sd.is_finite() || rounds == 0 || !valid_prob {
        return None;
    }
    let z = Normal::new(0.0, 1.0)
        .expect("standard normal")
        .inverse_cdf(prob.powf(1.0 / rounds as f64));
    if z <= 0.0 {
        return Some(1);
    }
    let need = (z * sd * (passes as f64).sqrt() / lead).powi(2).ceil();
    Some((need as usize).max(1))
}

/// The probability with which [`Comparison::markdown`] and `bench --json` plan the turns
/// per round ([`RatioSummary::passes_for_every_round`]).
pub const EVERY_ROUND_PROB: f64 = 0.95;

/// The result of [`compare_replicas`].
pub struct Comparison {
    /// Untimed warm-up steps of each run.
    pub warm: usize,
    /// Timed steps per turn.
    pub steps: usize,
    /// Turns of each run per round.
    pub passes: usize,
    /// Rounds.
    pub rounds: usize,
    /// One per replica count, in the design's order.
    pub rows: Vec<CountRow>,
}

impl Comparison {
    /// Turns per round at which the lead of `s` would show in all of this comparison's
    /// rounds with probability [`EVERY_ROUND_PROB`]: for the estimated lead
    /// ([`RatioSummary::passes_for_every_round`]) and for the lower end of its interval
    /// ([`RatioSummary::passes_for_every_round_at_ci_low`]).
    pub fn planned_passes(&self, s: &RatioSummary) -> (Option<usize>, Option<usize>) {
        let (p, r, q) = (self.passes, self.rounds, EVERY_ROUND_PROB);
        (
            s.passes_for_every_round(p, r, q),
            s.passes_for_every_round_at_ci_low(p, r, q),
        )
    }

    /// A Markdown table of the rounds, then one line per count after the first.
    pub fn markdown(&self) -> String {
        let rows = &self.rows;
        let mut text = format!(
            "training tokens/s of each replica count in the same round; in each round every run trains {} turn(s) of {} step(s) (after {} warm-up steps each), the order reversing from turn to turn and rotating from round to round\n\n| round |",
            self.passes, self.steps, self.warm
        );
        for r in rows {
            text.push_str(&format!(" R={} ({} group(s)) |", r.replicas, r.groups));
        }
        for r in &rows[1..] {
            text.push_str(&format!(" R={} / R={} |", r.replicas, rows[0].replicas));
        }
        text.push_str(&format!("\n|---|{}\n", "---:|".repeat(2 * rows.len() - 1)));
        for k in 0..self.rounds {
            text.push_str(&format!("| {} |", k + 1));
            for r in rows {
                text.push_str(&format!(" {:.0} |", r.round_tokens_per_s[k]));
            }
            for r in &rows[1..] {
                text.push_str(&format!(" {:.3} |", r.ratio_to_first[k]));
            }
            text.push('\n');
        }
        text.push_str("| all |");
        for r in rows {
            text.push_str(&format!(" {:.0} |", r.tokens_per_s));
        }
        for r in &rows[1..] {
            text.push_str(&format!(" {:.3} |", r.tokens_per_s / rows[0].tokens_per_s));
        }
        text.push('\n');
        for r in &rows[1..] {
            let Some(s) = &r.summary else { continue };
            text.push_str(&format!(
                "\nR={} / R={}: ahead in {} of {} rounds (lowest ratio {:.3}); geometric mean {:.3}, 95 % t interval [{:.3}, {:.3}] over rounds; sign test p = {:.2e} (two-sided)",
                r.replicas, rows[0].replicas, s.ahead, self.rounds, s.lowest, s.geomean, s.ci95.0, s.ci95.1, s.sign_p
            ));
            if let (Some(n), low) = self.planned_passes(s) {
                text.push_str(&format!(
                    "; sd of the log ratio over rounds {:.4}: a lead this size would show in all {} rounds with probability {} in rounds of about {} turns (--passes {}, if the turns' noise is independent)",
                    s.sd_log, self.rounds, EVERY_ROUND_PROB, n, n
                ));
                text.push_str(&match low {
                    Some(l) => {
                        format!(", about {l} for a lead only as large as the interval's lower end")
                    }
                    None => {
                        ", and no length for the interval's lower end, which is no lead".to_string()
                    }
                });
            }
        }
        text
    }
}

/// Replica counts compared in paired rounds: one run of `gene` per count (seeds 1..=R), all
/// alive at once, training in turns ([`super::turns::in_turns`]) of `design.steps` steps,
/// `design.passes` turns per round, after [`COMPARE_WARMUP_STEPS`] each. A run whose replica diverges is an error: a frozen replica
/// does no work, and its run's timing would not compare.
pub fn compare_replicas(
    gene: Gene,
    cfg: &TrainConfig,
    corpus: &Corpus,
    device: &Device,
    design: Design<'_>,
) -> Result<Comparison> {
    let Design {
        counts,
        steps,
        passes,
        rounds,
        replica_groups,
    } = design;
    if counts.len() < 2 || counts.contains(&0) {
        bail!(
            "--compare-replicas needs two or more replica counts of at least 1 (e.g. 1,2), got {counts:?}"
        );
    }
    if rounds == 0 || steps == 0 || passes == 0 {
        bail!("--rounds, --passes and --steps must be at least 1");
    }
    if let Some(g) = replica_groups {
        if let Some(c) = counts.iter().find(|&&c| g == 0 || c % g != 0) {
            bail!(
                "--replica-groups {g} applies to every count of --compare-replicas and must divide each; it does not divide {c}: leave it out (each run then picks its own) or give counts it divides"
            );
        }
    }
    let warm = COMPARE_WARMUP_STEPS;
    let total = rounds
        .checked_mul(passes)
        .and_then(|x| x.checked_mul(steps))
        .and_then(|x| x.checked_add(warm))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--rounds {rounds} × --passes {passes} × --steps {steps}: too many steps"
            )
        })?;
    let mut cfg = cfg.clone();
    cfg.steps = cfg.steps.max(total);
    cfg.check()
        .map_err(|e| anyhow::anyhow!("--rounds {rounds} --passes {passes} --steps {steps}: {e}"))?;
    let cfg = &cfg;
    let runs = super::turns::in_turns(counts.len(), warm, rounds, passes, steps, |i, on_step| {
        let out = bench_run(
            gene,
            cfg,
            corpus,
            device,
            counts[i],
            total,
            replica_groups,
            on_step,
        )?;
        if let Some(s) = out.seeds.iter().find(|s| s.diverged_at.is_some()) {
            bail!(
                "{gene}, R={}: seed {} diverged at step {}; its replica stopped training, so the timing is not comparable: lower lr (--set lr=...)",
                counts[i],
                s.seed,
                s.diverged_at.unwrap_or_default()
            );
        }
        Ok(out.replica_groups)
    })?;
    let (groups, secs): (Vec<usize>, Vec<Vec<f64>>) = runs.into_iter().unzip();
    // tokens of one round
    let tokens = |r: usize| (passes * steps * r * cfg.batch_size * cfg.seq_len) as f64;
    let tps: Vec<Vec<f64>> = counts
        .iter()
        .zip(&secs)
        .map(|(&r, s)| s.iter().map(|&x| tokens(r) / x).collect())
        .collect();
    let rows = (0..counts.len())
        .map(|i| {
            let ratio: Vec<f64> = tps[i].iter().zip(&tps[0]).map(|(x, y)| x / y).collect();
            CountRow {
                replicas: counts[i],
                groups: groups[i],
                tokens_per_s: rounds as f64 * tokens(counts[i]) / secs[i].iter().sum::<f64>(),
                round_tokens_per_s: tps[i].clone(),
                summary: (i > 0).then(|| RatioSummary::of(&ratio)),
                ratio_to_first: ratio,
            }
        })
        .collect();
    Ok(Comparison {
        warm,
        steps,
        passes,
        rounds,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_summary_is_a_t_interval_of_the_log_ratios() {
        // log ratios 0.1, 0.2, 0.0, 0.3: mean 0.15, sd 0.1291, t(0.975, 3) = 3.182446
        let r: Vec<f64> = [0.1f64, 0.2, 0.0, 0.3].iter().map(|x| x.exp()).collect();
        let s = RatioSummary::of(&r);
        assert!((s.geomean - 0.15f64.exp()).abs() < 1e-12);
        let half = 3.182446305284263 * (0.05f64 / 3.0).sqrt() / 2.0;
        assert!(
            (s.ci95.0 - (0.15 - half).exp()).abs() < 1e-9,
            "{:?}",
            s.ci95
        );
        assert!(
            (s.ci95.1 - (0.15 + half).exp()).abs() < 1e-9,
            "{:?}",
            s.ci95
        );
        // 3 ahead, one tie (ratio 1): binomtest(3, 3) = 0.25
        assert_eq!(s.ahead, 3);
        assert!((s.sign_p - 0.25).abs() < 1e-12);
        assert_eq!(s.lowest, 1.0);
        assert!((s.sd_log - (0.05f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn turns_per_round_are_planned_from_the_rounds_spread() {
        // log ratios 0.1, 0.2, 0.0, 0.3 from rounds of 8 turns: mean 0.15, sd √(0.05/3).
        // One round at probability 0.975: z = 1.959963984540054 (scipy norm.ppf(0.975)),
        // so (z · sd · √8 / 0.15)² = 22.76… turns, rounded up.
        let r: Vec<f64> = [0.1f64, 0.2, 0.0, 0.3].iter().map(|x| x.exp()).collect();
        let s = RatioSummary::of(&r);
        let z = 1.959963984540054f64;
        let exact = (z * (0.05f64 / 3.0).sqrt() * 8f64.sqrt() / 0.15).powi(2);
        assert_eq!(
            s.passes_for_every_round(8, 1, 0.975),
            Some(exact.ceil() as usize)
        );
        assert_eq!(exact.ceil(), 23.0);
        // Ten rounds all ahead ask for more turns each than one round does; so does a
        // higher probability; and the estimate scales with the turns it was measured at.
        let ten = s.passes_for_every_round(8, 10, 0.975).unwrap();
        assert!(ten > 23, "{ten}");
        assert!(s.passes_for_every_round(8, 1, 0.99).unwrap() > 23);
        assert_eq!(
            s.passes_for_every_round(2, 1, 0.975),
            Some((exact / 4.0).ceil() as usize)
        );
        // No lead, no plan; no spread (one round), no plan; no noise at all, one turn.
        let behind: Vec<f64> = r.iter().map(|x| 1.0 / x).collect();
        assert_eq!(
            RatioSummary::of(&behind).passes_for_every_round(8, 10, 0.95),
            None
        );
        assert_eq!(
            RatioSummary::of(&[1.05]).passes_for_every_round(8, 10, 0.95),
            None
        );
        assert_eq!(
            RatioSummary::of(&[1.05, 1.05]).passes_for_every_round(8, 10, 0.95),
            Some(1)
        );
        assert_eq!(s.passes_for_every_round(8, 10, 1.0), None);
        assert_eq!(s.passes_for_every_round(8, 0, 0.95), None);
        // One round ahead with probability 0.1 < ½ needs no length: z = −1.28 must not square
        // up into (z · sd · √128 / 0.15)² ≈ 156 turns.
        assert_eq!(s.passes_for_every_round(128, 1, 0.1), Some(1));
        // The case the speed journal planned from (Zen 4, 40 rounds of 8 turns): lead 1.026,
        // sd 0.036, all ten rounds with probability 0.95. z = norm.ppf(0.95 ** 0.1) =
        // 2.5678753685925684 (scipy), (z · 0.036 · √8 / ln 1.026)² = 103.77, so 104 turns.
        let (m, d) = (1.026f64.ln(), 0.036 / 2f64.sqrt());
        let j = RatioSummary::of(&[(m - d).exp(), (m + d).exp()]);
        assert!((j.sd_log - 0.036).abs() < 1e-12 && (j.geomean - 1.026).abs() < 1e-12);
        assert_eq!(j.passes_for_every_round(8, 10, 0.95), Some(104));
        // Two rounds give a t interval (1 degree of freedom) whose lower end is no lead.
        assert_eq!(j.passes_for_every_round_at_ci_low(8, 10, 0.95), None);
        // Five rounds of 128 turns, log ratios 0.02, 0.03, 0.025, 0.035, 0.03: mean 0.028,
        // lower end 0.028 − t · sd / √5 = 0.0209214 with t = 2.776445105197799 (scipy
        // t.ppf(0.975, 4)); (z · sd · √128 / lead)² = 34.99 at the mean, 62.67 at that end.
        let r: Vec<f64> = [0.02f64, 0.03, 0.025, 0.035, 0.03]
            .iter()
            .map(|x| x.exp())
            .collect();
        let f = RatioSummary::of(&r);
        assert_eq!(f.passes_for_every_round(128, 10, 0.95), Some(35));
        assert_eq!(f.passes_for_every_round_at_ci_low(128, 10, 0.95), Some(63));
    }
}
