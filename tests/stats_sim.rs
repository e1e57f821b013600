//! Seeded simulations of the error rates the reports will rely on.

use evoattn::stats::{multitest, ttest, Alternative};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

fn sample(rng: &mut ChaCha8Rng, mu: f64, n: usize) -> Vec<f64> {
    let d = Normal::new(mu, 1.0).unwrap();
    (0..n).map(|_| d.sample(rng)).collect()
}

#[test]
fn holm_controls_familywise_error_under_the_null() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (families, alpha) = (2000, 0.05);
    let mut any_rejected = 0;
    for _ in 0..families {
        let p: Vec<f64> = (0..10)
            .map(|_| {
                let (x, y) = (sample(&mut rng, 0.0, 10), sample(&mut rng, 0.0, 10));
                ttest::welch(&x, &y, Alternative::TwoSided).pvalue
            })
            .collect();
        let adj = multitest::adjust(&p, multitest::Method::Holm).unwrap();
        if multitest::reject(&adj, alpha).iter().any(|&r| r) {
            any_rejected += 1;
        }
    }
    let rate = any_rejected as f64 / families as f64;
    // α plus three binomial standard errors of the simulation
    let se = (alpha * (1.0 - alpha) / families as f64).sqrt();
    assert!(rate <= alpha + 3.0 * se, "family-wise error rate {rate}");
    // and Holm is not vacuous: without correction the rate would be far higher
    assert!(rate > 0.005, "suspiciously few rejections: {rate}");
}

#[test]
fn planted_two_sd_effect_is_detected_with_power_above_090() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let trials = 2000;
    let mut hits = 0;
    for _ in 0..trials {
        let (x, y) = (sample(&mut rng, 0.0, 10), sample(&mut rng, 2.0, 10));
        if ttest::welch(&x, &y, Alternative::TwoSided).pvalue <= 0.05 {
            hits += 1;
        }
    }
    let power = hits as f64 / trials as f64;
    assert!(power >= 0.9, "power {power}");
}
