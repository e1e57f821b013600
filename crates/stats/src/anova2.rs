//! Two-way ANOVA with interaction and type II sums of squares, as statsmodels'
//! `anova_lm(ols("y ~ C(A) * C(B)"), typ=2)`; unbalanced designs are fine, empty cells are
//! an error (the interaction is not estimable). A thin layer over [`crate::anova`] (which
//! adds a third factor, a block and contrasts): sums of squares come from Householder QR of
//! the nested designs, read off the rotated response (no subtraction of residual sums).

use super::anova::{Factor, Fit};
use anyhow::{bail, Result};
use serde::Serialize;

/// One row of the ANOVA table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Term {
    /// `A`, `B`, `A:B` (by factor names) or `residual`.
    pub term: String,
    /// Sum of squares.
    pub ss: f64,
    /// Degrees of freedom.
    pub df: f64,
    /// F statistic (absent for the residual).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f: Option<f64>,
    /// p-value (absent for the residual).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pvalue: Option<f64>,
}

/// Type II two-way ANOVA of `y` on factors `a` (named `name_a`) and `b` with interaction:
/// the unblocked two-factor case of [`crate::anova::Fit`], as rows `A`, `B`, `A:B`,
/// `residual`.
pub fn anova_two_way(
    y: &[f64],
    a: &[String],
    b: &[String],
    name_a: &str,
    name_b: &str,
) -> Result<Vec<Term>> {
    let n = y.len();
    if a.len() != n || b.len() != n {
        bail!("the response and the factors have different lengths");
    }
    let t = Fit::new(
        y,
        &[
            Factor {
                name: name_a,
                values: a,
            },
            Factor {
                name: name_b,
                values: b,
            },
        ],
        None,
    )?
    .anova();
    let mut rows: Vec<Term> = t
        .terms
        .into_iter()
        .map(|t| Term {
            term: t.term,
            ss: t.sum_sq,
            df: t.df,
            f: Some(t.f),
            pvalue: Some(t.pvalue),
        })
        .collect();
    rows.push(Term {
        term: "residual".into(),
        ss: t.residual.sum_sq,
        df: t.residual.df,
        f: None,
        pvalue: None,
    });
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn balanced_design_matches_hand_computation() {
        // 2×2, two per cell: A effect only.
        let y = [1.0, 2.0, 1.5, 2.5, 5.0, 6.0, 5.5, 6.5];
        let a = s(&["p", "p", "p", "p", "q", "q", "q", "q"]);
        let b = s(&["u", "u", "v", "v", "u", "u", "v", "v"]);
        let t = anova_two_way(&y, &a, &b, "A", "B").unwrap();
        // Balanced: SS_A = n·b·Σ(mean_a − grand)² = 8·(2)² = 32.
        assert!((t[0].ss - 32.0).abs() < 1e-10, "{t:?}");
        assert!((t[1].ss - 0.5).abs() < 1e-10, "{t:?}");
        assert!(t[2].ss.abs() < 1e-10);
        assert!((t[3].ss - 2.0).abs() < 1e-10);
        assert_eq!(t[3].df, 4.0);
    }

    #[test]
    fn empty_cell_is_an_error() {
        let y = [1.0, 2.0, 3.0];
        let e =
            anova_two_way(&y, &s(&["p", "p", "q"]), &s(&["u", "v", "u"]), "A", "B").unwrap_err();
        assert!(
            e.to_string().contains("q") && e.to_string().contains("v"),
            "{e}"
        );
    }
}
