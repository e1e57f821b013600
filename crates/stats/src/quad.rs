//! Adaptive Gauss–Kronrod quadrature (QUADPACK's 7/15-point pair) for the integrals over
//! the sampling distribution of a standard deviation that the TOST power and the
//! large-noncentrality noncentral t need. Always terminates: subdivision stops at a fixed
//! depth and panel budget whatever the integrand does.

use std::cell::Cell;

/// Kronrod nodes (positive half, the last is 0).
const XGK: [f64; 8] = [
    0.991_455_371_120_812_6,
    0.949_107_912_342_758_5,
    0.864_864_423_359_769_1,
    0.741_531_185_599_394_4,
    0.586_087_235_467_691_1,
    0.405_845_151_377_397_2,
    0.207_784_955_007_898_5,
    0.0,
];
/// Kronrod weights.
const WGK: [f64; 8] = [
    0.022_935_322_010_529_22,
    0.063_092_092_629_978_55,
    0.104_790_010_322_250_18,
    0.140_653_259_715_525_92,
    0.169_004_726_639_267_9,
    0.190_350_578_064_785_4,
    0.204_432_940_075_298_9,
    0.209_482_141_084_727_83,
];
/// Gauss weights of the 7-point rule (its nodes are XGK[1], XGK[3], XGK[5], XGK[7]).
const WG: [f64; 4] = [
    0.129_484_966_168_869_7,
    0.279_705_391_489_276_7,
    0.381_830_050_505_118_9,
    0.417_959_183_673_469_4,
];

/// (K15, |K15 − G7|) on [a, b].
fn gk15(f: &impl Fn(f64) -> f64, a: f64, b: f64) -> (f64, f64) {
    let c = 0.5 * (a + b);
    let h = 0.5 * (b - a);
    let fc = f(c);
    let mut k = WGK[7] * fc;
    let mut g = WG[3] * fc;
    for j in 0..7 {
        let dx = h * XGK[j];
        let s = f(c - dx) + f(c + dx);
        k += WGK[j] * s;
        if j % 2 == 1 {
            g += WG[j / 2] * s;
        }
    }
    (k * h, ((k - g) * h).abs())
}

/// Most panels one integral (all its pieces together) may split into: a noisy or
/// pathological integrand stops here (well-behaved ones need a few hundred at most).
const MAX_PANELS: usize = 4_000;

fn adapt(
    f: &impl Fn(f64) -> f64,
    (a, b): (f64, f64),
    whole: (f64, f64),
    tol: f64,
    depth: u32,
    budget: &Cell<usize>,
) -> f64 {
    let (k, err) = whole;
    if err <= tol || depth == 0 || !k.is_finite() || budget.get() == 0 {
        return k;
    }
    let m = 0.5 * (a + b);
    if m <= a || m >= b {
        return k;
    }
    budget.set(budget.get().saturating_sub(2));
    let left = gk15(f, a, m);
    let right = gk15(f, m, b);
    adapt(f, (a, m), left, 0.5 * tol, depth - 1, budget)
        + adapt(f, (m, b), right, 0.5 * tol, depth - 1, budget)
}

/// [`integrate_with`] on a budget of its own.
#[cfg(test)]
fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64, tol: f64) -> f64 {
    integrate_with(&f, a, b, tol, &Cell::new(MAX_PANELS))
}

/// ∫ f over [a, b] to an absolute error of about `tol` (adaptive bisection, at most 50
/// levels deep, panels taken from `budget`); `a ≥ b` (or NaN ends) gives 0.
fn integrate_with(f: &impl Fn(f64) -> f64, a: f64, b: f64, tol: f64, budget: &Cell<usize>) -> f64 {
    if a.is_nan() || b.is_nan() || a >= b {
        return 0.0;
    }
    budget.set(budget.get().saturating_sub(1));
    let whole = gk15(f, a, b);
    adapt(f, (a, b), whole, tol, 50, budget)
}

/// ∫ f over [a, b] split at the `breaks` that fall inside, each piece to `tol`, sharing one
/// panel budget.
pub(crate) fn integrate_pieces(
    f: impl Fn(f64) -> f64,
    a: f64,
    b: f64,
    breaks: &[f64],
    tol: f64,
) -> f64 {
    let mut pts: Vec<f64> = std::iter::once(a)
        .chain(breaks.iter().copied().filter(|&x| x > a && x < b))
        .chain(std::iter::once(b))
        .collect();
    pts.sort_by(f64::total_cmp);
    pts.dedup();
    let budget = Cell::new(MAX_PANELS);
    pts.windows(2)
        .map(|w| integrate_with(&f, w[0], w[1], tol, &budget))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_for_polynomials_and_accurate_for_smooth_functions() {
        // K15 integrates degree ≤ 22 exactly on one panel, G7 degree ≤ 13: ∫₀¹ x^k = 1/(k+1).
        for k in 0..=22 {
            let (v, _) = gk15(&|x: f64| x.powi(k), 0.0, 1.0);
            assert!((v - 1.0 / (k + 1) as f64).abs() < 1e-15, "k={k}: {v}");
        }
        for k in 0..=13 {
            let (_, e) = gk15(&|x: f64| x.powi(k), -1.0, 2.0);
            assert!(e < 1e-12, "G7 not exact at degree {k}: {e}");
        }
        let (_, e) = gk15(&|x: f64| x.powi(14), -1.0, 2.0);
        assert!(e > 1e-8, "G7 should not be exact at degree 14");
        let v = integrate(|x: f64| (-x * x / 2.0).exp(), -10.0, 10.0, 1e-14);
        let want = (2.0 * std::f64::consts::PI).sqrt();
        assert!((v - want).abs() < 1e-13, "{v}");
        let v = integrate_pieces(|x: f64| x.abs().sqrt(), -1.0, 1.0, &[0.0], 1e-13);
        assert!((v - 4.0 / 3.0).abs() < 1e-10, "{v}");
        assert_eq!(integrate(|x| x, 1.0, 1.0, 1e-10), 0.0);
        // A non-finite integrand terminates.
        assert!(integrate(|_| f64::NAN, 0.0, 1.0, 1e-10).is_nan());
    }
}
