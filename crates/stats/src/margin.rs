//! Margin tests for a difference Δ = x − y with a margin δ > 0, lower is better (as for
//! perplexity), and the verdict they give together.
//!
//! For paired samples (d = x − y, a one-sample t-test on d, df n − 1, as scipy's
//! `ttest_1samp` and statsmodels' `ttost_paired`) and for independent samples (Welch, as
//! statsmodels' `ttest_ind(usevar='unequal', value=…)` and `ttost_ind`): the mean
//! difference, its standard error and df, the two-sided t interval, and four p-values —
//!
//! - `p_diff`: two-sided, H0: Δ = 0;
//! - `p_better`: minimum effect "better by more than δ", H0: Δ ≥ −δ against Δ < −δ;
//! - `p_worse`: minimum effect "worse by more than δ", H0: Δ ≤ δ against Δ > δ;
//! - `p_tost`: TOST equivalence within ±δ, the larger of the one-sided p-values of
//!   H0: Δ ≤ −δ and H0: Δ ≥ δ (NaN if either is NaN).
//!
//! Degenerate samples give what the references give: with zero variance a statistic is
//! ±∞ (p = 0 or 1) or, when the difference equals the null value exactly, NaN; n < 2 gives
//! NaN. For independent samples with both variances 0 the Welch df is 0/0 = NaN, and every
//! p-value and the interval are NaN, as statsmodels gives them (scipy's `ttest_ind` would
//! report df = 1 there; see [`crate::ttest::welch`]).
//!
//! [`verdict`] turns (Holm-adjusted) p-values into a [`Verdict`]; [`holm`] adjusts each
//! kind of p-value over a family of comparisons.

use super::multitest::{adjust, Method};
use super::resample::Design;
use super::{mean, paired_differences, t_cdf, t_ppf, t_sf, var, Interval};
use anyhow::{ensure, Result};
use serde::{Serialize, Serializer};

/// Everything the margin tests say about one difference.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct MarginTest {
    /// The margin δ.
    pub margin: f64,
    /// The mean difference x − y (of the pairs, or of the sample means).
    pub diff: f64,
    /// Its standard error.
    pub se: f64,
    /// Degrees of freedom (n − 1, or Welch–Satterthwaite).
    pub df: f64,
    /// Two-sided t interval of the difference.
    pub ci: Interval,
    /// Two-sided p-value of H0: Δ = 0.
    pub p_diff: f64,
    /// p-value of H0: Δ ≥ −δ against Δ < −δ (better by more than δ).
    pub p_better: f64,
    /// p-value of H0: Δ ≤ δ against Δ > δ (worse by more than δ).
    pub p_worse: f64,
    /// TOST p-value, max(p_tost_lower, p_tost_upper).
    pub p_tost: f64,
    /// p-value of H0: Δ ≤ −δ against Δ > −δ (TOST's lower test).
    pub p_tost_lower: f64,
    /// p-value of H0: Δ ≥ δ against Δ < δ (TOST's upper test).
    pub p_tost_upper: f64,
}

/// The four p-values a [`verdict`] reads.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct MarginP {
    /// Two-sided, H0: Δ = 0.
    pub diff: f64,
    /// H0: Δ ≥ −δ.
    pub better: f64,
    /// H0: Δ ≤ δ.
    pub worse: f64,
    /// TOST within ±δ.
    pub tost: f64,
}

impl MarginTest {
    /// The unadjusted p-values for [`verdict`] or [`holm`].
    pub fn pvalues(&self) -> MarginP {
        MarginP {
            diff: self.p_diff,
            better: self.p_better,
            worse: self.p_worse,
            tost: self.p_tost,
        }
    }

    /// The verdict at level `alpha` from the unadjusted p-values.
    pub fn verdict(&self, alpha: f64) -> Verdict {
        verdict(&self.pvalues(), self.diff, alpha)
    }
}

/// Larger of two p-values, NaN if either is NaN (numpy's `maximum`).
fn max_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn check_margin(margin: f64, level: f64) -> Result<()> {
    ensure!(
        margin.is_finite() && margin > 0.0,
        "the margin must be positive and finite, got {margin}"
    );
    ensure!(
        level > 0.0 && level < 1.0,
        "the confidence level must lie in (0, 1), got {level}"
    );
    Ok(())
}

fn finish(diff: f64, se: f64, df: f64, margin: f64, level: f64) -> MarginTest {
    let p_of = |t: f64, upper: bool| {
        if t.is_nan() {
            f64::NAN
        } else if upper {
            t_sf(t, df)
        } else {
            t_cdf(t, df)
        }
    };
    let t0 = diff / se;
    let t_low = (diff + margin) / se; // against −δ
    let t_up = (diff - margin) / se; // against +δ
                                     // (NaN.min(1) would be 1: keep NaN explicitly.)
    let p_two = 2.0 * p_of(t0.abs(), true);
    let p_diff = if p_two.is_nan() {
        f64::NAN
    } else {
        p_two.min(1.0)
    };
    let p_tost_lower = p_of(t_low, true);
    let p_tost_upper = p_of(t_up, false);
    let half = t_ppf(0.5 + level / 2.0, df) * se;
    MarginTest {
        margin,
        diff,
        se,
        df,
        ci: Interval {
            level,
            low: diff - half,
            high: diff + half,
        },
        p_diff,
        p_better: p_of(t_low, false),
        p_worse: p_of(t_up, true),
        p_tost: max_nan(p_tost_lower, p_tost_upper),
        p_tost_lower,
        p_tost_upper,
    }
}

/// Margin tests on paired samples: a one-sample t-test of d = x − y, df n − 1, interval at
/// `level` (scipy `ttest_1samp(d, ·)`, statsmodels `ttost_paired(x, y, −δ, δ)`). Errors on
/// samples of different lengths, a margin that is not positive and finite, or a level
/// outside (0, 1).
pub fn margin_paired(x: &[f64], y: &[f64], margin: f64, level: f64) -> Result<MarginTest> {
    check_margin(margin, level)?;
    let d = paired_differences(x, y)?;
    let n = d.len() as f64;
    let se = (var(&d) / n).sqrt();
    Ok(finish(mean(&d), se, n - 1.0, margin, level))
}

/// Margin tests on independent samples with Welch's standard error and df (statsmodels
/// `ttest_ind(x, y, usevar='unequal', value=·)`, `ttost_ind(x, y, −δ, δ,
/// usevar='unequal')`, `CompareMeans.tconfint_diff(usevar='unequal')`). Errors as
/// [`margin_paired`] on the margin and level.
pub fn margin_welch(x: &[f64], y: &[f64], margin: f64, level: f64) -> Result<MarginTest> {
    check_margin(margin, level)?;
    let (nx, ny) = (x.len() as f64, y.len() as f64);
    let (vx, vy) = (var(x) / nx, var(y) / ny);
    let df = (vx + vy).powi(2) / (vx * vx / (nx - 1.0) + vy * vy / (ny - 1.0));
    Ok(finish(
        mean(x) - mean(y),
        (vx + vy).sqrt(),
        df,
        margin,
        level,
    ))
}

/// [`margin_paired`] or [`margin_welch`] by design.
pub fn margin_test(
    x: &[f64],
    y: &[f64],
    design: Design,
    margin: f64,
    level: f64,
) -> Result<MarginTest> {
    match design {
        Design::Paired => margin_paired(x, y, margin, level),
        Design::Independent => margin_welch(x, y, margin, level),
    }
}

/// What the margin tests conclude about x against y (lower is better).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Better by more than the margin (the minimum-effect test rejects Δ ≥ −δ).
    BetterByMargin,
    /// Better (Δ < 0 significantly), but not shown to be by more or less than δ.
    Better,
    /// Better, and equivalent within ±δ: a real but small improvement.
    BetterWithinMargin,
    /// Equivalent within ±δ, without a significant difference.
    Equivalent,
    /// Nothing shown.
    Inconclusive,
    /// Worse, and equivalent within ±δ: a real but small degradation.
    WorseWithinMargin,
    /// Worse (Δ > 0 significantly), but not shown to be by more or less than δ.
    Worse,
    /// Worse by more than the margin (the minimum-effect test rejects Δ ≤ δ).
    WorseByMargin,
}

impl Verdict {
    /// Every verdict, best first.
    pub const ALL: [Verdict; 8] = [
        Verdict::BetterByMargin,
        Verdict::Better,
        Verdict::BetterWithinMargin,
        Verdict::Equivalent,
        Verdict::Inconclusive,
        Verdict::WorseWithinMargin,
        Verdict::Worse,
        Verdict::WorseByMargin,
    ];

    /// `better_by_margin`, `better`, `better_within_margin`, `equivalent`, `inconclusive`,
    /// `worse_within_margin`, `worse` or `worse_by_margin`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::BetterByMargin => "better_by_margin",
            Verdict::Better => "better",
            Verdict::BetterWithinMargin => "better_within_margin",
            Verdict::Equivalent => "equivalent",
            Verdict::Inconclusive => "inconclusive",
            Verdict::WorseWithinMargin => "worse_within_margin",
            Verdict::Worse => "worse",
            Verdict::WorseByMargin => "worse_by_margin",
        }
    }

    /// Whether the verdict claims x is better (`better_by_margin`, `better`,
    /// `better_within_margin`).
    pub fn is_better(&self) -> bool {
        matches!(
            self,
            Verdict::BetterByMargin | Verdict::Better | Verdict::BetterWithinMargin
        )
    }

    /// Whether the verdict claims x is worse.
    pub fn is_worse(&self) -> bool {
        matches!(
            self,
            Verdict::WorseByMargin | Verdict::Worse | Verdict::WorseWithinMargin
        )
    }

    /// Whether the verdict rests on TOST rejecting (equivalence within ±δ is claimed).
    pub fn claims_equivalence(&self) -> bool {
        matches!(
            self,
            Verdict::Equivalent | Verdict::BetterWithinMargin | Verdict::WorseWithinMargin
        )
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Verdict {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Verdict::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| anyhow::anyhow!("unknown verdict `{s}`"))
    }
}

impl Serialize for Verdict {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The verdict from (Holm-adjusted) p-values, the difference `diff` (only its sign is
/// read) and the level `alpha`, in this order: `BetterByMargin` if p_better ≤ α;
/// `WorseByMargin` if p_worse ≤ α; if p_diff ≤ α and Δ < 0, `BetterWithinMargin` when
/// p_tost ≤ α, else `Better`; mirrored for Δ > 0 (`WorseWithinMargin`, `Worse`); else
/// `Equivalent` if p_tost ≤ α; else `Inconclusive`. A NaN p-value never rejects.
pub fn verdict(p: &MarginP, diff: f64, alpha: f64) -> Verdict {
    let rejects = |q: f64| q <= alpha; // false for NaN
    if rejects(p.better) {
        Verdict::BetterByMargin
    } else if rejects(p.worse) {
        Verdict::WorseByMargin
    } else if rejects(p.diff) && diff < 0.0 {
        if rejects(p.tost) {
            Verdict::BetterWithinMargin
        } else {
            Verdict::Better
        }
    } else if rejects(p.diff) && diff > 0.0 {
        if rejects(p.tost) {
            Verdict::WorseWithinMargin
        } else {
            Verdict::Worse
        }
    } else if rejects(p.tost) {
        Verdict::Equivalent
    } else {
        Verdict::Inconclusive
    }
}

/// Holm-adjusts each kind of p-value (diff, better, worse, TOST) separately over a family
/// of comparisons (statsmodels `multipletests(method='holm')`). A NaN p-value counts as 1
/// in its family (so the others are adjusted for it) and stays NaN.
pub fn holm(family: &[MarginP]) -> Vec<MarginP> {
    let kind = |get: &dyn Fn(&MarginP) -> f64| -> Vec<f64> {
        let raw: Vec<f64> = family
            .iter()
            .map(|p| {
                let v = get(p);
                if v.is_nan() {
                    1.0
                } else {
                    v.clamp(0.0, 1.0)
                }
            })
            .collect();
        let adj = adjust(&raw, Method::Holm).unwrap_or_else(|_| vec![f64::NAN; raw.len()]);
        adj.into_iter()
            .zip(family)
            .map(|(q, p)| if get(p).is_nan() { f64::NAN } else { q })
            .collect()
    };
    let d = kind(&|p| p.diff);
    let b = kind(&|p| p.better);
    let w = kind(&|p| p.worse);
    let t = kind(&|p| p.tost);
    (0..family.len())
        .map(|i| MarginP {
            diff: d[i],
            better: b[i],
            worse: w[i],
            tost: t[i],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(diff: f64, better: f64, worse: f64, tost: f64) -> MarginP {
        MarginP {
            diff,
            better,
            worse,
            tost,
        }
    }

    #[test]
    fn verdict_follows_the_documented_order() {
        let a = 0.05;
        let (r, n) = (0.01, 0.5); // rejects, does not
        assert_eq!(verdict(&p(r, r, n, n), -1.0, a), Verdict::BetterByMargin);
        // p_better is read before p_worse, and before the sign
        assert_eq!(verdict(&p(n, r, r, r), 1.0, a), Verdict::BetterByMargin);
        assert_eq!(verdict(&p(r, n, r, n), 1.0, a), Verdict::WorseByMargin);
        assert_eq!(verdict(&p(r, n, n, n), -0.1, a), Verdict::Better);
        assert_eq!(
            verdict(&p(r, n, n, r), -0.1, a),
            Verdict::BetterWithinMargin
        );
        assert_eq!(verdict(&p(r, n, n, n), 0.1, a), Verdict::Worse);
        assert_eq!(verdict(&p(r, n, n, r), 0.1, a), Verdict::WorseWithinMargin);
        assert_eq!(verdict(&p(n, n, n, r), -0.1, a), Verdict::Equivalent);
        assert_eq!(verdict(&p(n, n, n, n), -0.1, a), Verdict::Inconclusive);
        // a significant difference of sign 0 (or NaN) is read as no direction
        assert_eq!(verdict(&p(r, n, n, r), 0.0, a), Verdict::Equivalent);
        assert_eq!(verdict(&p(r, n, n, n), f64::NAN, a), Verdict::Inconclusive);
        // boundary: p = α rejects
        assert_eq!(verdict(&p(a, n, n, n), -1.0, a), Verdict::Better);
        // NaN never rejects
        let nan = f64::NAN;
        assert_eq!(
            verdict(&p(nan, nan, nan, nan), -1.0, a),
            Verdict::Inconclusive
        );
        assert_eq!(verdict(&p(nan, nan, nan, r), -1.0, a), Verdict::Equivalent);
        assert_eq!(verdict(&p(r, nan, nan, nan), -1.0, a), Verdict::Better);
        // names round-trip and are distinct
        for v in Verdict::ALL {
            assert_eq!(v.as_str().parse::<Verdict>().unwrap(), v);
            assert_eq!(
                serde_json::to_value(v).unwrap(),
                serde_json::json!(v.as_str())
            );
        }
        let better: Vec<_> = Verdict::ALL.iter().filter(|v| v.is_better()).collect();
        assert_eq!(better.len(), 3);
        assert_eq!(
            Verdict::ALL
                .iter()
                .filter(|v| v.claims_equivalence())
                .count(),
            3
        );
    }

    #[test]
    fn holm_adjusts_each_kind_and_keeps_nan() {
        let fam = [
            p(0.01, 0.2, 0.9, 0.04),
            p(0.02, f64::NAN, 0.9, 0.01),
            p(0.5, 0.3, 0.9, 0.03),
        ];
        let h = holm(&fam);
        assert!((h[0].diff - 0.03).abs() < 1e-15 && (h[1].diff - 0.04).abs() < 1e-15);
        assert_eq!(h[2].diff, 0.5);
        assert!(h[1].better.is_nan());
        // NaN counted as 1: better p of 0.2 and 0.3 are adjusted by 3 and 2 → 0.6, 0.6
        assert!((h[0].better - 0.6).abs() < 1e-15 && (h[2].better - 0.6).abs() < 1e-15);
        assert!((h[1].tost - 0.03).abs() < 1e-15 && (h[2].tost - 0.06).abs() < 1e-15);
        assert!((h[0].tost - 0.06).abs() < 1e-15);
    }

    #[test]
    fn tests_are_consistent_with_the_interval() {
        // TOST at α rejects exactly when the (1 − 2α) interval lies inside ±δ.
        let x = [10.2, 10.5, 9.9, 10.1, 10.4, 10.0, 10.3];
        let y = [10.0, 10.4, 10.0, 10.2, 10.1, 10.1, 10.2];
        for margin in [0.05, 0.1, 0.2, 0.3, 0.5] {
            let m = margin_paired(&x, &y, margin, 0.90).unwrap();
            let inside = m.ci.low > -margin && m.ci.high < margin;
            assert_eq!(m.p_tost <= 0.05, inside, "δ={margin}: {m:?}");
            // better + tost-lower = 1, worse + tost-upper = 1
            assert!((m.p_better + m.p_tost_lower - 1.0).abs() < 1e-12);
            assert!((m.p_worse + m.p_tost_upper - 1.0).abs() < 1e-12);
        }
        let w = margin_welch(&x, &y, 0.2, 0.95).unwrap();
        let t = crate::ttest::welch(&x, &y, crate::Alternative::TwoSided);
        assert!((w.p_diff - t.pvalue).abs() < 1e-14 && (w.df - t.df).abs() < 1e-12);
        assert!(margin_paired(&x, &y, 0.0, 0.95).is_err());
        assert!(margin_paired(&x, &y, f64::NAN, 0.95).is_err());
        assert!(margin_paired(&x, &y[1..], 0.1, 0.95).is_err());
        assert!(margin_welch(&x, &y, 0.1, 1.0).is_err());
    }
}
