//! Seeded simulations of the error rates the margin verdicts rely on, and of the exact TOST
//! power against the test it describes. Each check is "rate ≤ α + 3 Monte Carlo standard
//! errors" (or within 4 standard errors of the exact power), with a non-vacuity check that
//! the same procedure does reject when it should. Run with `--nocapture` to see the rates.

use evoattn_stats::margin::{holm, margin_paired, verdict, MarginP, Verdict};
use evoattn_stats::power::tost_power;
use evoattn_stats::resample::Design;
use evoattn_stats::seed::rng_for;
use evoattn_stats::{mean, t_ppf, var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    loop {
        let u: f64 = rng.random();
        if u > 0.0 {
            let v: f64 = rng.random();
            return (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
        }
    }
}

const ALPHA: f64 = 0.05;
const SEEDS: usize = 10;
const GENES: usize = 3;
/// Seed effect sd (shared by every arm of a seed) and gene × seed noise sd.
const SEED_SD: f64 = 3.0;
const NOISE_SD: f64 = 0.5;
/// The margin: about 2.5 standard errors of a paired difference of 10 seeds.
const MARGIN: f64 = 0.6;

/// Verdicts of `studies` synthetic paired studies: a baseline and GENES genes on SEEDS
/// seeds each, every gene `true_diff` from the baseline; Holm over the genes.
fn simulate(true_diff: f64, studies: usize, tag: &str) -> Vec<[Verdict; GENES]> {
    let mut rng = rng_for(20261205, tag);
    (0..studies)
        .map(|_| {
            let seed_effect: Vec<f64> = (0..SEEDS).map(|_| SEED_SD * normal(&mut rng)).collect();
            let arm = |rng: &mut ChaCha8Rng, shift: f64| -> Vec<f64> {
                seed_effect
                    .iter()
                    .map(|u| 100.0 + shift + u + NOISE_SD * normal(rng))
                    .collect()
            };
            let base = arm(&mut rng, 0.0);
            let tests: Vec<_> = (0..GENES)
                .map(|_| {
                    let x = arm(&mut rng, true_diff);
                    margin_paired(&x, &base, MARGIN, 0.95).unwrap()
                })
                .collect();
            let raw: Vec<MarginP> = tests.iter().map(|t| t.pvalues()).collect();
            let adj = holm(&raw);
            std::array::from_fn(|g| verdict(&adj[g], tests[g].diff, ALPHA))
        })
        .collect()
}

/// Share of studies where any gene's verdict satisfies `pred`.
fn rate(v: &[[Verdict; GENES]], pred: impl Fn(Verdict) -> bool) -> f64 {
    v.iter().filter(|s| s.iter().any(|&x| pred(x))).count() as f64 / v.len() as f64
}

/// Share of (study, gene) verdicts equal to `kind`.
fn share(v: &[[Verdict; GENES]], kind: Verdict) -> f64 {
    v.iter().flatten().filter(|&&x| x == kind).count() as f64 / (v.len() * GENES) as f64
}

fn bound(n: usize) -> f64 {
    ALPHA + 3.0 * (ALPHA * (1.0 - ALPHA) / n as f64).sqrt()
}

fn report(what: &str, v: &[[Verdict; GENES]]) {
    let kinds: Vec<String> = Verdict::ALL
        .iter()
        .map(|&k| format!("{} {:.4}", k.as_str(), share(v, k)))
        .collect();
    eprintln!(
        "{what}: per-verdict shares of all gene verdicts: {}",
        kinds.join(", ")
    );
}

#[test]
fn no_true_effect_rarely_gives_a_better_verdict() {
    let studies = 20_000;
    let v = simulate(0.0, studies, "sim/null");
    let any_better = rate(&v, |x| x.is_better());
    let any_worse = rate(&v, |x| x.is_worse());
    let any_equiv = rate(&v, |x| x == Verdict::Equivalent);
    report("Δ = 0", &v);
    eprintln!(
        "Δ = 0: {studies} studies × {GENES} genes (Holm): any better* {any_better:.4}, any worse* {any_worse:.4}, bound {:.4}",
        bound(studies)
    );
    assert!(
        any_better <= bound(studies),
        "any better* rate {any_better}"
    );
    assert!(any_worse <= bound(studies), "any worse* rate {any_worse}");
    // Not vacuous: the tests do reject (two-sided differences, mirrored), and equivalence
    // within a margin of 2.5 standard errors is usually shown.
    assert!(
        any_better > 0.005,
        "suspiciously few rejections: {any_better}"
    );
    assert!(any_equiv > 0.5, "equivalence rarely shown: {any_equiv}");
}

#[test]
fn a_difference_of_exactly_the_margin_is_rarely_called_equivalent() {
    let studies = 20_000;
    for (sign, name) in [(1.0, "+δ"), (-1.0, "−δ")] {
        let v = simulate(sign * MARGIN, studies, &format!("sim/margin{sign}"));
        let equiv = rate(&v, |x| x == Verdict::Equivalent);
        let within = rate(&v, |x| {
            x == Verdict::BetterWithinMargin || x == Verdict::WorseWithinMargin
        });
        let any_equiv = rate(&v, |x| x.claims_equivalence());
        let by_margin = rate(&v, |x| {
            x == if sign > 0.0 {
                Verdict::WorseByMargin
            } else {
                Verdict::BetterByMargin
            }
        });
        let direction = rate(&v, |x| {
            if sign > 0.0 {
                x.is_worse()
            } else {
                x.is_better()
            }
        });
        report(&format!("Δ = {name}"), &v);
        eprintln!(
            "Δ = {name}: any equivalent {equiv:.4}, any *_within_margin {within:.4}, any equivalence claim {any_equiv:.4}, \
             any {}_by_margin {by_margin:.4}, any {}* {direction:.4}, bound {:.4}",
            if sign > 0.0 { "worse" } else { "better" },
            if sign > 0.0 { "worse" } else { "better" },
            bound(studies)
        );
        let b = bound(studies);
        assert!(equiv <= b, "{name}: equivalent rate {equiv}");
        assert!(within <= b, "{name}: within-margin rate {within}");
        assert!(any_equiv <= b, "{name}: any equivalence claim {any_equiv}");
        // the minimum-effect test is at its boundary too
        assert!(by_margin <= b, "{name}: by-margin rate {by_margin}");
        // not vacuous: a true difference of δ (2.5 se) is usually detected as a difference
        assert!(direction > 0.5, "{name}: direction found only {direction}");
        assert!(
            any_equiv > 0.002,
            "{name}: no equivalence claim at all: {any_equiv}"
        );
    }
}

/// The share of `draws` simulated data sets on which TOST at `alpha` shows equivalence
/// within ±margin·σ (σ = 1), for a true difference `theta`: paired through
/// `margin_paired`, independent through the pooled equal-n TOST.
fn simulated_tost(
    design: Design,
    margin: f64,
    n: usize,
    theta: f64,
    draws: usize,
    tag: &str,
) -> f64 {
    let mut rng = rng_for(20261206, tag);
    let alpha = 0.05;
    let mut hits = 0usize;
    for _ in 0..draws {
        let shown = match design {
            Design::Paired => {
                let d: Vec<f64> = (0..n).map(|_| theta + normal(&mut rng)).collect();
                let zero = vec![0.0; n];
                margin_paired(&d, &zero, margin, 0.9).unwrap().p_tost <= alpha
            }
            Design::Independent => {
                let x: Vec<f64> = (0..n).map(|_| theta + normal(&mut rng)).collect();
                let y: Vec<f64> = (0..n).map(|_| normal(&mut rng)).collect();
                let df = 2.0 * n as f64 - 2.0;
                let sp = ((var(&x) + var(&y)) / 2.0).sqrt();
                let se = sp * (2.0 / n as f64).sqrt();
                let tc = -t_ppf(alpha, df);
                let diff = mean(&x) - mean(&y);
                diff - tc * se > -margin && diff + tc * se < margin
            }
        };
        hits += usize::from(shown);
    }
    hits as f64 / draws as f64
}

#[test]
fn exact_tost_power_matches_a_simulation_of_the_test() {
    let draws = 200_000;
    for (design, margin, n, theta) in [
        (Design::Paired, 1.0, 10, 0.0),
        (Design::Paired, 0.5, 30, 0.2),
        (Design::Paired, 2.0, 3, 0.0),
        (Design::Independent, 1.0, 10, 0.0),
        (Design::Independent, 0.8, 20, -0.3),
    ] {
        let exact = tost_power(design, margin, n as u64, 0.05, theta);
        let sim = simulated_tost(
            design,
            margin,
            n,
            theta,
            draws,
            &format!("tost/{design:?}/{margin}/{n}/{theta}"),
        );
        let se = (exact * (1.0 - exact) / draws as f64).sqrt();
        eprintln!("TOST power {design:?} δ/σ={margin} n={n} θ={theta}: exact {exact:.5}, simulated {sim:.5} ± {se:.5}");
        assert!(
            (exact - sim).abs() <= 4.0 * se,
            "{design:?} {margin} {n} {theta}: {exact} vs {sim} ± {se}"
        );
        assert!(
            exact > 0.05 && exact < 0.999,
            "a case that can fail: {exact}"
        );
    }
}
