//! Two-way ANOVA with interaction and type II sums of squares, as statsmodels'
//! `anova_lm(ols("y ~ C(A) * C(B)"), typ=2)`; unbalanced designs are fine, empty cells are
//! an error (the interaction is not estimable). Sums of squares come from Householder QR of
//! the nested designs, read off the rotated response (no subtraction of residual sums).

use super::kgroups::f_sf;
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

/// Levels in sorted order and each observation's level index.
fn levels(x: &[String]) -> (Vec<String>, Vec<usize>) {
    let mut lv: Vec<String> = x.to_vec();
    lv.sort();
    lv.dedup();
    let idx = x
        .iter()
        .map(|v| lv.binary_search(v).expect("level present"))
        .collect();
    (lv, idx)
}

/// Householder QR of the n×p column-major `cols` applied to `y`: returns (Qᵀy, |diag R|).
fn qr_rotate(cols: &[Vec<f64>], y: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let n = y.len();
    let mut a: Vec<Vec<f64>> = cols.to_vec();
    let mut qty = y.to_vec();
    let mut diag = Vec::with_capacity(a.len());
    for k in 0..a.len() {
        let norm = a[k][k..].iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm == 0.0 {
            diag.push(0.0);
            continue;
        }
        let alpha = if a[k][k] > 0.0 { -norm } else { norm };
        let mut v: Vec<f64> = a[k][k..].to_vec();
        v[0] -= alpha;
        let vnorm2 = v.iter().map(|x| x * x).sum::<f64>();
        diag.push(alpha.abs());
        if vnorm2 == 0.0 {
            continue;
        }
        let reflect = |col: &mut [f64]| {
            let dot: f64 = v.iter().zip(&col[k..n]).map(|(a, b)| a * b).sum();
            let s = 2.0 * dot / vnorm2;
            for (c, vi) in col[k..n].iter_mut().zip(&v) {
                *c -= s * vi;
            }
        };
        for col in a.iter_mut().skip(k) {
            reflect(col);
        }
        reflect(&mut qty);
    }
    (qty, diag)
}

/// Sums of squares of consecutive column blocks in a nested design (`blocks` gives the
/// number of columns of each), the residual sum of squares and the rank of each block.
fn sequential_ss(blocks: &[Vec<Vec<f64>>], y: &[f64]) -> (Vec<(f64, usize)>, f64, usize) {
    let cols: Vec<Vec<f64>> = blocks.iter().flatten().cloned().collect();
    let (qty, diag) = qr_rotate(&cols, y);
    let scale = diag.iter().cloned().fold(0.0f64, f64::max);
    let tol = scale * 1e-10 * y.len() as f64;
    let mut out = Vec::new();
    let mut start = 0;
    let mut rank = 0;
    for b in blocks {
        let mut ss = 0.0;
        let mut r = 0;
        for j in start..start + b.len() {
            if diag[j] > tol {
                ss += qty[j] * qty[j];
                r += 1;
            }
        }
        rank += r;
        out.push((ss, r));
        start += b.len();
    }
    // Residual: everything past the columns (rank-deficient columns rotate nothing).
    let resid = qty[cols.len().min(qty.len())..]
        .iter()
        .map(|v| v * v)
        .sum::<f64>();
    (out, resid, rank)
}

/// Type II two-way ANOVA of `y` on factors `a` (named `name_a`) and `b` with interaction.
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
    if y.iter().any(|v| !v.is_finite()) {
        bail!("the response has non-finite values; drop them first");
    }
    let (la, ia) = levels(a);
    let (lb, ib) = levels(b);
    if la.len() < 2 || lb.len() < 2 {
        bail!(
            "each factor needs at least two levels ({name_a}: {}, {name_b}: {})",
            la.len(),
            lb.len()
        );
    }
    let mut cell = vec![0usize; la.len() * lb.len()];
    for i in 0..n {
        cell[ia[i] * lb.len() + ib[i]] += 1;
    }
    if let Some(e) = cell.iter().position(|&c| c == 0) {
        bail!(
            "cell {name_a}={}, {name_b}={} has no observations; the interaction needs every cell",
            la[e / lb.len()],
            lb[e % lb.len()]
        );
    }
    let intercept = vec![vec![1.0; n]];
    let dummies = |idx: &[usize], k: usize| -> Vec<Vec<f64>> {
        (1..k)
            .map(|l| idx.iter().map(|&i| f64::from(u8::from(i == l))).collect())
            .collect()
    };
    let da = dummies(&ia, la.len());
    let db = dummies(&ib, lb.len());
    let dab: Vec<Vec<f64>> = da
        .iter()
        .flat_map(|ca| {
            db.iter()
                .map(move |cb| ca.iter().zip(cb).map(|(x, y)| x * y).collect())
        })
        .collect();
    // Order [1, B, A, AB]: SS(A | B) and SS(AB | A, B); order [1, A, B]: SS(B | A).
    let (s1, resid, rank_full) =
        sequential_ss(&[intercept.clone(), db.clone(), da.clone(), dab], y);
    let (s2, _, _) = sequential_ss(&[intercept, da, db], y);
    let df_res = (n - rank_full) as f64;
    if df_res <= 0.0 {
        bail!("no residual degrees of freedom: every cell has one observation; add seeds");
    }
    let ms_res = resid / df_res;
    let term = |name: String, (ss, df): (f64, usize)| {
        let df = df as f64;
        let f = (ss / df) / ms_res;
        Term {
            term: name,
            ss,
            df,
            f: Some(f),
            pvalue: Some(f_sf(f, df, df_res)),
        }
    };
    Ok(vec![
        term(name_a.to_string(), s1[2]),
        term(name_b.to_string(), s2[2]),
        term(format!("{name_a}:{name_b}"), s1[3]),
        Term {
            term: "residual".into(),
            ss: resid,
            df: df_res,
            f: None,
            pvalue: None,
        },
    ])
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
