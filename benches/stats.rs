//! `cargo bench --bench stats`: timing of the resampling statistics.
//! ASO on 1,000 × 1,000 scores with 1,000 bootstrap iterations of 1,000 draws (the
//! acceptance target is under 1 s), and a 10,000-resample BCa interval for 10 × 10 runs.

use evoattn::stats::{aso, resample};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let n = Normal::new(0.0, 1.0).unwrap();
    let a: Vec<f64> = (0..1000).map(|_| n.sample(&mut rng) + 0.1).collect();
    let b: Vec<f64> = (0..1000).map(|_| n.sample(&mut rng)).collect();
    let threads = rayon::current_num_threads();
    let mut times = Vec::new();
    let mut last = None;
    for i in 0..5 {
        let t = Instant::now();
        last = Some(aso::aso(&a, &b, 0.05, 1000, 1000, i));
        times.push(t.elapsed().as_secs_f64());
    }
    println!(
        "aso 1000x1000, 1000 bootstrap iterations x 1000 draws: median {:.3} s over 5 runs ({threads} threads); last {:?}",
        median(times),
        last.unwrap()
    );
    let x: Vec<f64> = (0..10).map(|_| n.sample(&mut rng) + 98.0).collect();
    let y: Vec<f64> = (0..10).map(|_| n.sample(&mut rng) + 100.0).collect();
    let mut times = Vec::new();
    for i in 0..5 {
        let t = Instant::now();
        let ci = resample::bootstrap_ci(
            &x,
            &y,
            resample::Design::Paired,
            &resample::mean_diff,
            resample::Spec {
                method: resample::Method::Bca,
                resamples: 10_000,
                level: 0.95,
                seed: i,
            },
        );
        std::hint::black_box(ci);
        times.push(t.elapsed().as_secs_f64());
    }
    println!(
        "BCa bootstrap 10x10 paired, 10,000 resamples: median {:.4} s over 5 runs",
        median(times)
    );
}
