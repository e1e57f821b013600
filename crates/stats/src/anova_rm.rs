//! Repeated-measures ANOVA with subject = seed and one to three within factors, as
//! statsmodels' `AnovaRM(df, depvar, subject, within=[...]).fit()`: every subject has
//! exactly one observation in every cell (anything else is an error — aggregate repeats
//! first); each term's F is its mean square over that of its interaction with the subject,
//! on (q, q(n − 1)) degrees of freedom for a term of q df and n subjects. Beside it, the
//! Greenhouse–Geisser ε and the corrected p-value (F on qε and q(n − 1)ε df).
//!
//! Computed in contrast space: with an orthonormal basis of the term's contrasts (the
//! Kronecker product of the orthonormal Helmert contrasts of the term's factors and the
//! normalized averaging vectors of the other factors), applied to each subject's cell
//! values, Z is n × q; SS_term = n‖z̄‖², SS_error = (n − 1)·tr S with S the covariance of
//! Z across subjects, and ε = (tr S)² / (q · tr(S²)) (1 for q = 1; pingouin's and R's
//! definition). In a complete balanced design this is exactly statsmodels' table.

use super::anova::{levels, Factor};
use super::kgroups::f_sf;
use anyhow::{bail, ensure, Result};
use serde::Serialize;

/// One term of a repeated-measures ANOVA.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RmTerm {
    /// A within factor's name, or names joined by `:`.
    pub term: String,
    /// F statistic.
    pub f: f64,
    /// Numerator df, q = Π (levels − 1) over the term's factors.
    pub num_df: f64,
    /// Denominator df, q(n − 1).
    pub den_df: f64,
    /// P(F > f) on (num_df, den_df).
    pub pvalue: f64,
    /// Greenhouse–Geisser ε, in [1/q, 1] (1 when q = 1; NaN without subject variation).
    pub eps_gg: f64,
    /// P(F > f) on (ε·num_df, ε·den_df).
    pub pvalue_gg: f64,
}

/// Orthonormal Helmert contrasts of k levels: k × (k − 1), columns orthogonal to 1.
fn helmert(k: usize) -> Vec<Vec<f64>> {
    (0..k)
        .map(|i| {
            (1..k)
                .map(|j| {
                    let norm = ((j * (j + 1)) as f64).sqrt();
                    if i < j {
                        1.0 / norm
                    } else if i == j {
                        -(j as f64) / norm
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect()
}

/// Kronecker product of row-major matrices.
fn kron(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut out = Vec::with_capacity(a.len() * b.len());
    for ra in a {
        for rb in b {
            out.push(
                ra.iter()
                    .flat_map(|x| rb.iter().map(move |y| x * y))
                    .collect(),
            );
        }
    }
    out
}

/// Repeated-measures ANOVA of `y` with `subject` labels and `within` factors (one to
/// three); terms in statsmodels' order (main effects, then interactions by order).
/// Errors unless every subject has exactly one observation per cell, there are at least
/// two subjects, every factor has two levels or more and the responses are finite.
pub fn anova_rm(y: &[f64], subject: &[String], within: &[Factor<'_>]) -> Result<Vec<RmTerm>> {
    let n_obs = y.len();
    ensure!(
        (1..=3).contains(&within.len()),
        "the repeated-measures ANOVA takes one to three within factors, got {}",
        within.len()
    );
    ensure!(
        subject.len() == n_obs,
        "{} subject labels for {n_obs} responses",
        subject.len()
    );
    for f in within {
        ensure!(
            f.values.len() == n_obs,
            "factor {} has {} values for {n_obs} responses",
            f.name,
            f.values.len()
        );
    }
    if let Some(v) = y.iter().find(|v| !v.is_finite()) {
        bail!("the response has a non-finite value ({v}); drop the subject first");
    }
    let (subjects, si) = levels(subject);
    ensure!(
        subjects.len() >= 2,
        "the repeated-measures ANOVA needs at least two subjects, has {}",
        subjects.len()
    );
    let mut lv = Vec::new();
    let mut ix = Vec::new();
    for f in within {
        let (l, i) = levels(f.values);
        ensure!(
            l.len() >= 2,
            "factor {} needs at least two levels, has {}",
            f.name,
            l.len()
        );
        lv.push(l);
        ix.push(i);
    }
    let sizes: Vec<usize> = lv.iter().map(|l| l.len()).collect();
    let cells: usize = sizes.iter().product();
    let n = subjects.len();
    let mut ymat = vec![vec![0.0; cells]; n];
    let mut count = vec![vec![0usize; cells]; n];
    for i in 0..n_obs {
        let mut c = 0;
        for (f, fx) in ix.iter().enumerate() {
            c = c * sizes[f] + fx[i];
        }
        ymat[si[i]][c] = y[i];
        count[si[i]][c] += 1;
    }
    for (s, row) in count.iter().enumerate() {
        if let Some(c) = row.iter().position(|&k| k != 1) {
            let mut rest = c;
            let mut parts = vec![String::new(); sizes.len()];
            for f in (0..sizes.len()).rev() {
                parts[f] = format!("{}={}", within[f].name, lv[f][rest % sizes[f]]);
                rest /= sizes[f];
            }
            bail!(
                "subject {} has {} observations in cell {}; the repeated-measures ANOVA needs exactly one per subject and cell (aggregate repeats, drop incomplete subjects)",
                subjects[s],
                row[c],
                parts.join(", ")
            );
        }
    }
    let k = within.len();
    let mut masks: Vec<u8> = (1..(1u8 << k)).collect();
    masks.sort_by_key(|m| (m.count_ones(), *m));
    let nf = n as f64;
    Ok(masks
        .into_iter()
        .map(|m| {
            let mut basis = vec![vec![1.0]];
            for (f, &kf) in sizes.iter().enumerate() {
                let b = if m & (1 << f) != 0 {
                    helmert(kf)
                } else {
                    vec![vec![1.0 / (kf as f64).sqrt()]; kf]
                };
                basis = kron(&basis, &b);
            }
            let q = basis[0].len();
            let z: Vec<Vec<f64>> = ymat
                .iter()
                .map(|row| {
                    (0..q)
                        .map(|j| row.iter().zip(&basis).map(|(v, b)| v * b[j]).sum())
                        .collect()
                })
                .collect();
            let zbar: Vec<f64> = (0..q)
                .map(|j| z.iter().map(|r| r[j]).sum::<f64>() / nf)
                .collect();
            let mut cov = vec![vec![0.0; q]; q];
            for r in &z {
                for a in 0..q {
                    for b in 0..q {
                        cov[a][b] += (r[a] - zbar[a]) * (r[b] - zbar[b]);
                    }
                }
            }
            for row in cov.iter_mut() {
                for v in row.iter_mut() {
                    *v /= nf - 1.0;
                }
            }
            let trace: f64 = (0..q).map(|a| cov[a][a]).sum();
            let tr_sq: f64 = cov.iter().flatten().map(|v| v * v).sum();
            let qf = q as f64;
            let ss_term = nf * zbar.iter().map(|v| v * v).sum::<f64>();
            let ss_err = (nf - 1.0) * trace;
            let (d1, d2) = (qf, qf * (nf - 1.0));
            let f = (ss_term / d1) / (ss_err / d2);
            let eps = if q == 1 {
                1.0
            } else if trace > 0.0 {
                (trace * trace / (qf * tr_sq)).min(1.0)
            } else {
                f64::NAN
            };
            let name = (0..k)
                .filter(|f| m & (1 << f) != 0)
                .map(|f| within[f].name)
                .collect::<Vec<_>>()
                .join(":");
            RmTerm {
                term: name,
                f,
                num_df: d1,
                den_df: d2,
                pvalue: f_sf(f, d1, d2),
                eps_gg: eps,
                pvalue_gg: f_sf(f, d1 * eps, d2 * eps),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn helmert_is_orthonormal_and_orthogonal_to_the_mean() {
        for k in 2..6 {
            let h = helmert(k);
            for a in 0..k - 1 {
                let sum: f64 = h.iter().map(|r| r[a]).sum();
                assert!(sum.abs() < 1e-14);
                for b in 0..k - 1 {
                    let dot: f64 = h.iter().map(|r| r[a] * r[b]).sum();
                    assert!((dot - f64::from(u8::from(a == b))).abs() < 1e-14);
                }
            }
        }
    }

    #[test]
    fn one_factor_matches_the_classical_formulas_and_the_friedman_layout() {
        // 4 subjects × 3 levels.
        let y = [1.0, 2.0, 4.0, 2.0, 2.5, 5.0, 1.5, 3.5, 3.0, 0.5, 2.0, 4.5];
        let subj = s(&["p", "p", "p", "q", "q", "q", "r", "r", "r", "t", "t", "t"]);
        let lvl = s(&["a", "b", "c", "a", "b", "c", "a", "b", "c", "a", "b", "c"]);
        let r = anova_rm(
            &y,
            &subj,
            &[Factor {
                name: "A",
                values: &lvl,
            }],
        )
        .unwrap();
        // SS_A = n Σ (ȳ_a − ȳ)², SS_AS = Σ (y − ȳ_s − ȳ_a + ȳ)².
        let grand = y.iter().sum::<f64>() / 12.0;
        let lm = |l: usize| (0..4).map(|s| y[3 * s + l]).sum::<f64>() / 4.0;
        let sm = |s: usize| (0..3).map(|l| y[3 * s + l]).sum::<f64>() / 3.0;
        let ss_a: f64 = (0..3).map(|l| 4.0 * (lm(l) - grand).powi(2)).sum();
        let ss_as: f64 = (0..4)
            .flat_map(|s| (0..3).map(move |l| (s, l)))
            .map(|(s, l)| (y[3 * s + l] - sm(s) - lm(l) + grand).powi(2))
            .sum();
        let f = (ss_a / 2.0) / (ss_as / 6.0);
        assert!((r[0].f - f).abs() < 1e-12 * f, "{r:?}");
        assert_eq!((r[0].num_df, r[0].den_df), (2.0, 6.0));
        assert!(r[0].eps_gg >= 0.5 && r[0].eps_gg <= 1.0);
        assert!(
            r[0].pvalue_gg >= r[0].pvalue,
            "the correction is conservative"
        );
        // Two levels: ε = 1 and the corrected p is the p.
        let y2 = [1.0, 2.0, 2.0, 3.5, 1.5, 3.0];
        let subj2 = s(&["p", "p", "q", "q", "r", "r"]);
        let l2 = s(&["a", "b", "a", "b", "a", "b"]);
        let r2 = anova_rm(
            &y2,
            &subj2,
            &[Factor {
                name: "A",
                values: &l2,
            }],
        )
        .unwrap();
        assert_eq!(r2[0].eps_gg, 1.0);
        assert_eq!(r2[0].pvalue_gg, r2[0].pvalue);
        // F = t² of the paired t-test.
        let t = crate::ttest::paired(
            &[2.0, 3.5, 3.0],
            &[1.0, 2.0, 1.5],
            crate::Alternative::TwoSided,
        )
        .unwrap();
        assert!((r2[0].f - t.statistic.powi(2)).abs() < 1e-12 * r2[0].f);
        assert!((r2[0].pvalue - t.pvalue).abs() < 1e-12);
    }

    #[test]
    fn incomplete_or_repeated_cells_are_errors() {
        let y = [1.0, 2.0, 2.0, 3.5, 1.5];
        let subj = s(&["p", "p", "q", "q", "r"]);
        let l = s(&["a", "b", "a", "b", "a"]);
        let e = anova_rm(
            &y,
            &subj,
            &[Factor {
                name: "A",
                values: &l,
            }],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("subject r has 0 observations in cell A=b"),
            "{e}"
        );
        let y = [1.0, 2.0, 2.0, 3.5, 1.5, 2.0];
        let subj = s(&["p", "p", "q", "q", "q", "q"]);
        let l = s(&["a", "b", "a", "b", "a", "b"]);
        let e = anova_rm(
            &y,
            &subj,
            &[Factor {
                name: "A",
                values: &l,
            }],
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("subject q has 2 observations"),
            "{e}"
        );
        let one = s(&["p", "p"]);
        assert!(anova_rm(
            &[1.0, 2.0],
            &one,
            &[Factor {
                name: "A",
                values: &s(&["a", "b"])
            }]
        )
        .is_err());
        assert!(anova_rm(&[1.0, 2.0], &one, &[]).is_err());
        assert!(anova_rm(
            &[1.0, f64::NAN],
            &s(&["p", "q"]),
            &[Factor {
                name: "A",
                values: &s(&["a", "a"])
            }]
        )
        .is_err());
        // constant data: F and ε are NaN, not a panic
        let y = [1.0; 6];
        let subj = s(&["p", "p", "p", "q", "q", "q"]);
        let l = s(&["a", "b", "c", "a", "b", "c"]);
        let r = anova_rm(
            &y,
            &subj,
            &[Factor {
                name: "A",
                values: &l,
            }],
        )
        .unwrap();
        assert!(r[0].f.is_nan() && r[0].eps_gg.is_nan() && r[0].pvalue.is_nan());
    }
}
