//! Type II ANOVA of a response on one to three crossed categorical factors — the full
//! factorial A, B, C, A:B, A:C, B:C, A:B:C — with an optional block factor (the seed)
//! entering additively: in patsy terms `y ~ C(seed) + C(A)*C(B)`, as statsmodels'
//! `anova_lm(ols(formula, df).fit(), typ=2)`, unbalanced designs included; and contrasts
//! between the levels of a factor on that fit (estimated marginal means; statsmodels'
//! `res.t_test(L)` with the fit's residual mean square and df).
//!
//! Type II: a term's sum of squares is what it adds to the model of every other term that
//! does not contain it — A after the block, B, C and B:C; A:B after everything except
//! A:B:C; the block, contained in nothing, after all factorial terms. F is its mean square
//! over the full model's residual mean square. Sums of squares are read off Householder QR
//! of the nested treatment-coded designs (levels sorted as patsy sorts strings), never by
//! subtracting residual sums. The full design must have full rank: an empty cell, or a
//! block confounded with the cells, is an error, as is a fit without residual df.

use super::kgroups::f_sf;
use super::t_sf;
use anyhow::{bail, ensure, Result};
use serde::Serialize;

/// A categorical factor: its name and each observation's level.
#[derive(Debug, Clone, Copy)]
pub struct Factor<'a> {
    /// Name, used in term names (`gating`, `gating:normalization`).
    pub name: &'a str,
    /// The level of each observation.
    pub values: &'a [String],
}

/// One term of a type II ANOVA table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Term {
    /// The block's name, a factor's name, or factor names joined by `:`.
    pub term: String,
    /// Type II sum of squares.
    pub sum_sq: f64,
    /// Degrees of freedom.
    pub df: f64,
    /// F statistic against the full model's residual mean square.
    pub f: f64,
    /// P(F > f).
    pub pvalue: f64,
}

/// The residual line of an ANOVA table.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Residual {
    /// Residual sum of squares of the full model.
    pub sum_sq: f64,
    /// Residual degrees of freedom.
    pub df: f64,
    /// sum_sq / df.
    pub mean_sq: f64,
}

/// A type II ANOVA table: the block (if any) first, then main effects, two-way and
/// three-way interactions in the order of the factors.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Table {
    /// The terms.
    pub terms: Vec<Term>,
    /// The residual.
    pub residual: Residual,
}

/// The estimated marginal mean of one level: the equal-weight average of the fitted cell
/// means over the other factors' levels and over the blocks.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MarginalMean {
    /// The factor.
    pub factor: String,
    /// The level.
    pub level: String,
    /// The estimated marginal mean.
    pub mean: f64,
    /// Its standard error (residual mean square and (XᵀX)⁻¹ of the fit).
    pub se: f64,
    /// Residual degrees of freedom.
    pub df: f64,
}

/// A contrast between two levels of a factor: EMM(a) − EMM(b), a t-test on the fit.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Contrast {
    /// The factor.
    pub factor: String,
    /// The first level (the x of x − y).
    pub a: String,
    /// The second level.
    pub b: String,
    /// EMM(a) − EMM(b).
    pub estimate: f64,
    /// Its standard error, √(MSE · L(XᵀX)⁻¹Lᵀ).
    pub se: f64,
    /// estimate / se.
    pub t: f64,
    /// Residual degrees of freedom of the fit.
    pub df: f64,
    /// Two-sided p-value.
    pub pvalue: f64,
}

/// Sorted levels and each observation's level index.
pub(crate) fn levels(x: &[String]) -> (Vec<String>, Vec<usize>) {
    let mut lv: Vec<String> = x.to_vec();
    lv.sort();
    lv.dedup();
    let idx = x.iter().map(|v| lv.binary_search(v).unwrap_or(0)).collect();
    (lv, idx)
}

/// A block of design columns.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    Intercept,
    Block,
    /// A factorial term: the bit mask of its factors.
    Term(u8),
}

/// Householder QR of the n×p column-major `cols`: (Qᵀy, R column-major, |column norms|).
#[derive(Debug, Clone)]
struct Qr {
    qty: Vec<f64>,
    /// r[j][i] = R_ij for i ≤ j.
    r: Vec<Vec<f64>>,
    norms: Vec<f64>,
}

fn qr(cols: &[Vec<f64>], y: &[f64]) -> Qr {
    let n = y.len();
    let norms: Vec<f64> = cols
        .iter()
        .map(|c| c.iter().map(|v| v * v).sum::<f64>().sqrt())
        .collect();
    let mut a: Vec<Vec<f64>> = cols.to_vec();
    let mut qty = y.to_vec();
    for k in 0..a.len().min(n) {
        let norm = a[k][k..].iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm == 0.0 {
            continue;
        }
        let alpha = if a[k][k] > 0.0 { -norm } else { norm };
        let mut v: Vec<f64> = a[k][k..].to_vec();
        v[0] -= alpha;
        let vnorm2 = v.iter().map(|x| x * x).sum::<f64>();
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
    let r = a
        .iter()
        .enumerate()
        .map(|(j, c)| c[..=j.min(n.saturating_sub(1))].to_vec())
        .collect();
    Qr { qty, r, norms }
}

impl Qr {
    /// Whether every column has a non-negligible component outside the span of those before.
    fn full_rank(&self) -> bool {
        self.r.iter().enumerate().all(|(j, c)| {
            c.len() == j + 1 && c[j].abs() > 1e-9 * self.norms[j].max(f64::MIN_POSITIVE)
        })
    }

    /// Sum of squares of Qᵀy over columns [start, end).
    fn ss(&self, start: usize, end: usize) -> f64 {
        self.qty[start..end].iter().map(|v| v * v).sum()
    }

    /// w with Rᵀw = l (forward substitution); ‖w‖² = l(XᵀX)⁻¹lᵀ.
    fn solve_rt(&self, l: &[f64]) -> Vec<f64> {
        let p = self.r.len();
        let mut w = vec![0.0; p];
        for j in 0..p {
            let mut s = l[j];
            for (i, wi) in w.iter().enumerate().take(j) {
                s -= self.r[j][i] * wi;
            }
            w[j] = s / self.r[j][j];
        }
        w
    }

    /// β = R⁻¹ (Qᵀy)[..p] (back substitution).
    fn coefficients(&self) -> Vec<f64> {
        let p = self.r.len();
        let mut b = vec![0.0; p];
        for j in (0..p).rev() {
            let mut s = self.qty[j];
            for (k, bk) in b.iter().enumerate().skip(j + 1) {
                s -= self.r[k][j] * bk;
            }
            b[j] = s / self.r[j][j];
        }
        b
    }
}

/// An ordinary least-squares fit of `y ~ C(block) + C(A)*C(B)*…` (treatment coding).
#[derive(Debug, Clone)]
pub struct Fit {
    /// The response minus its mean (the intercept absorbs the shift; sums of squares are
    /// computed on the centered response for accuracy).
    y: Vec<f64>,
    /// The mean that was subtracted.
    shift: f64,
    names: Vec<String>,
    levels: Vec<Vec<String>>,
    idx: Vec<Vec<usize>>,
    block: Option<(String, Vec<String>, Vec<usize>)>,
    /// Factorial terms in table order.
    terms: Vec<u8>,
    /// Full-model column blocks in order, with their column ranges.
    parts: Vec<(Part, usize, usize)>,
    beta: Vec<f64>,
    qr: Qr,
    residual: Residual,
}

impl Fit {
    /// Fits the full model of `factors` (one to three, crossed, every cell observed) plus
    /// an additive `block`. Errors on mismatched lengths, non-finite responses, a factor or
    /// block with fewer than two levels, an empty cell, a rank-deficient design (block
    /// confounded with the cells) or no residual degrees of freedom.
    pub fn new(y: &[f64], factors: &[Factor<'_>], block: Option<Factor<'_>>) -> Result<Fit> {
        let n = y.len();
        ensure!(
            (1..=3).contains(&factors.len()),
            "the ANOVA takes one to three factors, got {}",
            factors.len()
        );
        for f in factors.iter().chain(block.iter()) {
            ensure!(
                f.values.len() == n,
                "factor {} has {} values for {n} responses",
                f.name,
                f.values.len()
            );
        }
        if let Some(v) = y.iter().find(|v| !v.is_finite()) {
            bail!("the response has a non-finite value ({v}); drop it first");
        }
        let mut names = Vec::new();
        let mut lvls = Vec::new();
        let mut idx = Vec::new();
        for f in factors {
            let (lv, ix) = levels(f.values);
            ensure!(
                lv.len() >= 2,
                "factor {} needs at least two levels, has {}",
                f.name,
                lv.len()
            );
            names.push(f.name.to_string());
            lvls.push(lv);
            idx.push(ix);
        }
        let block = match block {
            Some(b) => {
                let (lv, ix) = levels(b.values);
                ensure!(
                    lv.len() >= 2,
                    "block {} needs at least two levels, has {}",
                    b.name,
                    lv.len()
                );
                Some((b.name.to_string(), lv, ix))
            }
            None => None,
        };
        // Every cell of the crossed factors needs an observation.
        let sizes: Vec<usize> = lvls.iter().map(|l| l.len()).collect();
        let cells: usize = sizes.iter().product();
        let mut count = vec![0usize; cells];
        for i in 0..n {
            let mut c = 0;
            for (f, ix) in idx.iter().enumerate() {
                c = c * sizes[f] + ix[i];
            }
            count[c] += 1;
        }
        if let Some(e) = count.iter().position(|&c| c == 0) {
            let mut rest = e;
            let mut parts = vec![String::new(); sizes.len()];
            for f in (0..sizes.len()).rev() {
                parts[f] = format!("{}={}", names[f], lvls[f][rest % sizes[f]]);
                rest /= sizes[f];
            }
            bail!(
                "cell {} has no observations; the interaction needs every cell",
                parts.join(", ")
            );
        }
        let k = factors.len();
        let mut terms: Vec<u8> = (1..(1u8 << k)).collect();
        terms.sort_by_key(|m| (m.count_ones(), *m));
        let shift = y.iter().sum::<f64>() / n as f64;
        let yc: Vec<f64> = y.iter().map(|v| v - shift).collect();
        let mut fit = Fit {
            y: yc,
            shift,
            names,
            levels: lvls,
            idx,
            block,
            terms,
            parts: Vec::new(),
            beta: Vec::new(),
            qr: Qr {
                qty: Vec::new(),
                r: Vec::new(),
                norms: Vec::new(),
            },
            residual: Residual {
                sum_sq: f64::NAN,
                df: f64::NAN,
                mean_sq: f64::NAN,
            },
        };
        let mut order = vec![Part::Intercept];
        if fit.block.is_some() {
            order.push(Part::Block);
        }
        order.extend(fit.terms.iter().map(|&m| Part::Term(m)));
        let mut cols = Vec::new();
        for part in order {
            let c = fit.columns(part);
            fit.parts.push((part, cols.len(), cols.len() + c.len()));
            cols.extend(c);
        }
        let p = cols.len();
        ensure!(
            n > p,
            "no residual degrees of freedom ({n} observations, {p} parameters): every cell has one observation; add seeds"
        );
        let q = qr(&cols, &fit.y);
        ensure!(
            q.full_rank(),
            "the design is rank-deficient: the block is confounded with the factors (every cell needs several blocks)"
        );
        let ssr = q.ss(p, n);
        let df = (n - p) as f64;
        fit.beta = q.coefficients();
        fit.qr = q;
        fit.residual = Residual {
            sum_sq: ssr,
            df,
            mean_sq: ssr / df,
        };
        Ok(fit)
    }

    /// Treatment-coded columns of a part.
    fn columns(&self, part: Part) -> Vec<Vec<f64>> {
        let n = self.y.len();
        match part {
            Part::Intercept => vec![vec![1.0; n]],
            Part::Block => {
                let (_, lv, ix) = self.block.as_ref().expect("block");
                (1..lv.len())
                    .map(|l| ix.iter().map(|&i| f64::from(u8::from(i == l))).collect())
                    .collect()
            }
            Part::Term(m) => self
                .term_levels(m)
                .iter()
                .map(|combo| {
                    (0..n)
                        .map(|i| {
                            let hit = combo.iter().all(|&(f, l)| self.idx[f][i] == l);
                            f64::from(u8::from(hit))
                        })
                        .collect()
                })
                .collect(),
        }
    }

    /// The (factor, non-reference level) combinations of a term's columns (a fixed order;
    /// the spans, and so every result, do not depend on it).
    fn term_levels(&self, m: u8) -> Vec<Vec<(usize, usize)>> {
        let fs: Vec<usize> = (0..self.names.len())
            .filter(|f| m & (1 << f) != 0)
            .collect();
        let mut out: Vec<Vec<(usize, usize)>> = vec![Vec::new()];
        for &f in fs.iter().rev() {
            out = out
                .into_iter()
                .flat_map(|c| {
                    (1..self.levels[f].len()).map(move |l| {
                        let mut c = c.clone();
                        c.insert(0, (f, l));
                        c
                    })
                })
                .collect();
        }
        out
    }

    fn term_name(&self, m: u8) -> String {
        (0..self.names.len())
            .filter(|f| m & (1 << f) != 0)
            .map(|f| self.names[f].as_str())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// SS of `last` after `before` (a nested QR), and its df.
    fn extra_ss(&self, before: &[Part], last: Part) -> (f64, f64) {
        let mut cols = Vec::new();
        for &p in before {
            cols.extend(self.columns(p));
        }
        let start = cols.len();
        cols.extend(self.columns(last));
        let q = qr(&cols, &self.y);
        (q.ss(start, cols.len()), (cols.len() - start) as f64)
    }

    /// The type II ANOVA table.
    pub fn anova(&self) -> Table {
        let mse = self.residual.mean_sq;
        let df_res = self.residual.df;
        let row = |term: String, (ss, df): (f64, f64)| {
            let f = (ss / df) / mse;
            Term {
                term,
                sum_sq: ss,
                df,
                f,
                pvalue: f_sf(f, df, df_res),
            }
        };
        let mut out = Vec::new();
        if let Some((name, _, _)) = &self.block {
            let mut before = vec![Part::Intercept];
            before.extend(self.terms.iter().map(|&m| Part::Term(m)));
            out.push(row(name.clone(), self.extra_ss(&before, Part::Block)));
        }
        for &t in &self.terms {
            let mut before = vec![Part::Intercept];
            if self.block.is_some() {
                before.push(Part::Block);
            }
            // every other term that does not contain t
            before.extend(
                self.terms
                    .iter()
                    .filter(|&&s| s != t && s & t != t)
                    .map(|&s| Part::Term(s)),
            );
            out.push(row(
                self.term_name(t),
                self.extra_ss(&before, Part::Term(t)),
            ));
        }
        Table {
            terms: out,
            residual: self.residual,
        }
    }

    /// The residual line of the full model.
    pub fn residual(&self) -> Residual {
        self.residual
    }

    /// The sorted levels of a factor (by name), or `None`.
    pub fn levels(&self, factor: &str) -> Option<&[String]> {
        self.factor_index(factor).map(|f| self.levels[f].as_slice())
    }

    fn factor_index(&self, factor: &str) -> Option<usize> {
        self.names.iter().position(|n| n == factor)
    }

    /// The averaged design row of level `l` of factor `f` over the grid of all cells × all
    /// blocks (patsy's design rows averaged with equal weights).
    fn emm_row(&self, f: usize, l: usize) -> Vec<f64> {
        let mut row = Vec::new();
        for &(part, _, _) in &self.parts {
            match part {
                Part::Intercept => row.push(1.0),
                Part::Block => {
                    let k = self.block.as_ref().expect("block").1.len();
                    row.extend(std::iter::repeat_n(1.0 / k as f64, k - 1));
                }
                Part::Term(m) => {
                    for combo in self.term_levels(m) {
                        row.push(
                            combo
                                .iter()
                                .map(|&(g, lg)| {
                                    if g == f {
                                        f64::from(u8::from(lg == l))
                                    } else {
                                        1.0 / self.levels[g].len() as f64
                                    }
                                })
                                .product(),
                        );
                    }
                }
            }
        }
        row
    }

    /// (lβ, √(MSE · l(XᵀX)⁻¹lᵀ)).
    fn estimate(&self, l: &[f64]) -> (f64, f64) {
        // l[0] multiplies the intercept, which carries the subtracted mean.
        let est: f64 =
            l.iter().zip(&self.beta).map(|(a, b)| a * b).sum::<f64>() + l[0] * self.shift;
        let w = self.qr.solve_rt(l);
        let var = self.residual.mean_sq * w.iter().map(|v| v * v).sum::<f64>();
        (est, var.sqrt())
    }

    fn level_index(&self, factor: &str, level: &str) -> Result<(usize, usize)> {
        let f = self
            .factor_index(factor)
            .ok_or_else(|| anyhow::anyhow!("no factor named {factor}"))?;
        let l = self.levels[f]
            .iter()
            .position(|v| v == level)
            .ok_or_else(|| anyhow::anyhow!("factor {factor} has no level {level}"))?;
        Ok((f, l))
    }

    /// The estimated marginal mean of every level of `factor`, in level order.
    pub fn marginal_means(&self, factor: &str) -> Result<Vec<MarginalMean>> {
        let f = self
            .factor_index(factor)
            .ok_or_else(|| anyhow::anyhow!("no factor named {factor}"))?;
        Ok((0..self.levels[f].len())
            .map(|l| {
                let (mean, se) = self.estimate(&self.emm_row(f, l));
                MarginalMean {
                    factor: factor.to_string(),
                    level: self.levels[f][l].clone(),
                    mean,
                    se,
                    df: self.residual.df,
                }
            })
            .collect())
    }

    /// EMM(a) − EMM(b) for two levels of `factor`, with its t-test on the fit's residual
    /// mean square and df (two-sided).
    pub fn contrast(&self, factor: &str, a: &str, b: &str) -> Result<Contrast> {
        let (f, la) = self.level_index(factor, a)?;
        let (_, lb) = self.level_index(factor, b)?;
        let l: Vec<f64> = self
            .emm_row(f, la)
            .iter()
            .zip(self.emm_row(f, lb))
            .map(|(x, y)| x - y)
            .collect();
        let (estimate, se) = self.estimate(&l);
        let t = estimate / se;
        let df = self.residual.df;
        Ok(Contrast {
            factor: factor.to_string(),
            a: a.to_string(),
            b: b.to_string(),
            estimate,
            se,
            t,
            df,
            pvalue: if t.is_nan() {
                f64::NAN
            } else {
                (2.0 * t_sf(t.abs(), df)).min(1.0)
            },
        })
    }

    /// Contrasts of every pair of levels of `factor`: (0, 1), (0, 2), …, (1, 2), … in level
    /// order, each as level i − level j.
    pub fn pairwise(&self, factor: &str) -> Result<Vec<Contrast>> {
        let lv = self
            .levels(factor)
            .ok_or_else(|| anyhow::anyhow!("no factor named {factor}"))?
            .to_vec();
        let mut out = Vec::new();
        for i in 0..lv.len() {
            for j in i + 1..lv.len() {
                out.push(self.contrast(factor, &lv[i], &lv[j])?);
            }
        }
        Ok(out)
    }
}

/// The type II ANOVA table of `y` on `factors` with an optional additive `block` (see
/// [`Fit::new`] for the errors).
pub fn anova(y: &[f64], factors: &[Factor<'_>], block: Option<Factor<'_>>) -> Result<Table> {
    Ok(Fit::new(y, factors, block)?.anova())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A balanced 3 × 2 design on 4 blocks with known additive structure.
    fn design() -> (Vec<f64>, Vec<String>, Vec<String>, Vec<String>) {
        let (mut y, mut a, mut b, mut blk) = (vec![], vec![], vec![], vec![]);
        let wiggle = [
            0.3, -0.1, 0.2, -0.4, 0.0, 0.1, -0.2, 0.25, 0.05, -0.3, 0.15, -0.05,
        ];
        let mut w = 0;
        for s in 0..4 {
            for i in 0..3 {
                for j in 0..2 {
                    y.push(
                        10.0 * s as f64 + 2.0 * i as f64 - j as f64
                            + wiggle[w % 12] * (1 + s) as f64,
                    );
                    w += 1;
                    a.push(format!("a{i}"));
                    b.push(format!("b{j}"));
                    blk.push(format!("s{s}"));
                }
            }
        }
        (y, a, b, blk)
    }

    #[test]
    fn balanced_blocked_design_matches_textbook_sums_of_squares() {
        let (y, a, b, blk) = design();
        let fa = Factor {
            name: "A",
            values: &a,
        };
        let fb = Factor {
            name: "B",
            values: &b,
        };
        let fblk = Factor {
            name: "seed",
            values: &blk,
        };
        let t = anova(&y, &[fa, fb], Some(fblk)).unwrap();
        let names: Vec<&str> = t.terms.iter().map(|t| t.term.as_str()).collect();
        assert_eq!(names, ["seed", "A", "B", "A:B"]);
        // Balanced: SS_A = (n per level) Σ (mean_a − grand)², and so on.
        let grand = y.iter().sum::<f64>() / y.len() as f64;
        let ss_of = |key: &dyn Fn(usize) -> String| {
            let mut groups: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
            for (i, v) in y.iter().enumerate() {
                groups.entry(key(i)).or_default().push(*v);
            }
            groups
                .values()
                .map(|g| g.len() as f64 * (g.iter().sum::<f64>() / g.len() as f64 - grand).powi(2))
                .sum::<f64>()
        };
        let ss_seed = ss_of(&|i| blk[i].clone());
        let ss_a = ss_of(&|i| a[i].clone());
        let ss_b = ss_of(&|i| b[i].clone());
        let ss_cells = ss_of(&|i| format!("{}{}", a[i], b[i]));
        let total: f64 = y.iter().map(|v| (v - grand).powi(2)).sum();
        let ss_ab = ss_cells - ss_a - ss_b;
        let resid = total - ss_seed - ss_a - ss_b - ss_ab;
        for (got, want) in [
            (t.terms[0].sum_sq, ss_seed),
            (t.terms[1].sum_sq, ss_a),
            (t.terms[2].sum_sq, ss_b),
            (t.terms[3].sum_sq, ss_ab),
            (t.residual.sum_sq, resid),
        ] {
            assert!(
                (got - want).abs() < 1e-9 * want.abs().max(1.0),
                "{got} vs {want}"
            );
        }
        assert_eq!(
            t.terms.iter().map(|t| t.df).collect::<Vec<_>>(),
            [3.0, 2.0, 1.0, 2.0]
        );
        assert_eq!(t.residual.df, 24.0 - 1.0 - 3.0 - 5.0);
        // In a balanced design the EMM contrast is the difference of raw level means.
        let fit = Fit::new(&y, &[fa, fb], Some(fblk)).unwrap();
        let c = fit.contrast("A", "a2", "a0").unwrap();
        let mean_of = |lv: &str| {
            let v: Vec<f64> = y
                .iter()
                .zip(&a)
                .filter(|(_, x)| *x == lv)
                .map(|(v, _)| *v)
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        assert!(
            (c.estimate - (mean_of("a2") - mean_of("a0"))).abs() < 1e-10,
            "{c:?}"
        );
        // se = √(MSE · 2/8): each level mean averages 8 observations.
        assert!((c.se - (t.residual.mean_sq * 2.0 / 8.0).sqrt()).abs() < 1e-12);
        assert_eq!(fit.pairwise("A").unwrap().len(), 3);
        let mm = fit.marginal_means("B").unwrap();
        assert!(
            (mm[0].mean - mm[1].mean - fit.contrast("B", "b0", "b1").unwrap().estimate).abs()
                < 1e-12
        );
    }

    #[test]
    fn degenerate_designs_are_errors_not_panics() {
        let (y, a, b, blk) = design();
        let fa = Factor {
            name: "A",
            values: &a,
        };
        let fb = Factor {
            name: "B",
            values: &b,
        };
        // empty cell
        let keep: Vec<usize> = (0..y.len())
            .filter(|&i| !(a[i] == "a1" && b[i] == "b0"))
            .collect();
        let pick = |v: &[String]| keep.iter().map(|&i| v[i].clone()).collect::<Vec<_>>();
        let (a2, b2) = (pick(&a), pick(&b));
        let y2: Vec<f64> = keep.iter().map(|&i| y[i]).collect();
        let e = anova(
            &y2,
            &[
                Factor {
                    name: "A",
                    values: &a2,
                },
                Factor {
                    name: "B",
                    values: &b2,
                },
            ],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("A=a1") && e.contains("B=b0"), "{e}");
        // block confounded with a factor
        let e = anova(
            &y,
            &[fa],
            Some(Factor {
                name: "seed",
                values: &a,
            }),
        )
        .unwrap_err();
        assert!(e.to_string().contains("confounded"), "{e}");
        // one level, mismatched lengths, NaN, no residual df, too many factors
        let one = vec!["x".to_string(); y.len()];
        assert!(anova(
            &y,
            &[Factor {
                name: "C",
                values: &one
            }],
            None
        )
        .is_err());
        assert!(anova(&y[1..], &[fa], None).is_err());
        let mut yn = y.clone();
        yn[3] = f64::NAN;
        assert!(anova(&yn, &[fa, fb], None).is_err());
        let cells: Vec<usize> = (0..6).collect();
        let y1: Vec<f64> = cells.iter().map(|&i| y[i]).collect();
        let (a1, b1): (Vec<String>, Vec<String>) =
            cells.iter().map(|&i| (a[i].clone(), b[i].clone())).unzip();
        let e = anova(
            &y1,
            &[
                Factor {
                    name: "A",
                    values: &a1,
                },
                Factor {
                    name: "B",
                    values: &b1,
                },
            ],
            None,
        );
        assert!(e.unwrap_err().to_string().contains("residual"));
        assert!(anova(&y, &[fa, fb, fa, fb], None).is_err());
        assert!(anova(
            &y,
            &[],
            Some(Factor {
                name: "seed",
                values: &blk
            })
        )
        .is_err());
        let fit = Fit::new(&y, &[fa, fb], None).unwrap();
        assert!(fit.contrast("A", "a0", "zz").is_err());
        assert!(fit.contrast("Q", "a0", "a1").is_err());
        // a perfect fit gives a huge (or infinite) F, not a panic
        let yp: Vec<f64> = a
            .iter()
            .map(|v| if v == "a0" { 1.0 } else { 2.0 })
            .collect();
        let t = anova(&yp, &[fa, fb], None).unwrap();
        assert!(t.residual.sum_sq < 1e-20 && t.terms[0].f > 1e10, "{t:?}");
    }
}
