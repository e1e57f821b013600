//! α-entmax as one op with its own backward on the CPU.
//!
//! Composed from candle ops, α-entmax was 30 bisection passes over the whole `[R, B, H, T,
//! T]` logits, each allocating several tensors, and a backward through the Newton-corrected
//! threshold: ~3.3× the baseline's step on the `cpu` preset. Here, per row of logits z with
//! its α (x = (α − 1)·z, e = 1/(α − 1)):
//!
//! - **forward**: only entries with x > max x − 1 can be in the support (τ ≥ max x − 1,
//!   where the largest entry alone gives Σ = 1), so they are gathered first; the threshold
//!   τ solving F(τ) = Σ [x − τ]₊^e − 1 = 0 is found by Newton's method started at a
//!   Jensen lower bound of the root (see [`start`]; max x − 1 when that is larger, and
//!   again from max x − 1 should rounding have put the bound right of the root). F is
//!   convex and decreasing for e ≥ 1 (α ≤ 2), so from a point with F ≥ 0 the iterates
//!   increase monotonically to the root without overshooting: no bracket is needed, and
//!   convergence is quadratic near the root where bisection needs 30 fixed passes over
//!   the whole tensor. Then p = [x − τ]₊^e.
//! - **backward** (Peters et al. 2019; Correia et al. 2019, the `entmax` package's
//!   `EntmaxBisectFunction`): with s = p^{2−α} on the support, q = Σ s·g / Σ s,
//!   ∂L/∂z = s ⊙ (g − q), and
//!   ∂L/∂α = e²·(Σ g·p − q) − e·(Σ g·p ln p − q·Σ p ln p).
//!
//! f32 uses the vectorisable `fast_exp`/`fast_ln`; f64 (the finite-difference checks) the
//! standard library's. Other devices use [`super::attention::normalize::alpha_entmax`]'s
//! composite path.

use super::kernels::{finite_row_max, for_row_chunks, Real, LANES};
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

/// Most Newton steps per row (each step is monotone; rows stop at machine precision long
/// before this, see the module docs).
pub const NEWTON_MAX_ITERS: usize = 100;

/// ln d for d = 1 − w > 0, accurate to rounding *relative to ln d* also when w is tiny
/// (d ≈ 1, the α → 1 regime where p = d^e with e = 1/(α − 1) large would otherwise
/// amplify the rounding of 1 − w by e): ln(fl(1 − w)) plus the first-order correction for
/// the rounding of fl(1 − w) (Goldberg's log1p).
#[inline(always)]
fn ln_one_minus<F: Real>(w: F) -> F {
    let d = F::ONE - w;
    let d = if d > F::TINY { d } else { F::TINY };
    d.ln() + ((F::ONE - d) - w) / d
}

/// Σ d^e and Σ d^{e−1} over d = 1 − (w + u) > 0, with independent lanes so that it
/// vectorises.
#[inline(always)]
fn sums<F: Real>(cand: &[F], u: F, em1: F) -> (F, F) {
    let mut f = [F::ZERO; LANES];
    let mut df = [F::ZERO; LANES];
    let term = |w: F| -> (F, F) {
        let wu = w + u;
        if wu < F::ONE {
            let ln_d = ln_one_minus(wu);
            let pe1 = (em1 * ln_d).exp();
            (pe1 * (F::ONE - wu), pe1)
        } else {
            (F::ZERO, F::ZERO)
        }
    };
    let chunks = cand.chunks_exact(LANES);
    let rest = chunks.remainder();
    for ch in chunks {
        for j in 0..LANES {
            let (a, b) = term(ch[j]);
            f[j] += a;
            df[j] += b;
        }
    }
    let (mut fs, mut dfs) = (F::ZERO, F::ZERO);
    for j in 0..LANES {
        fs += f[j];
        dfs += df[j];
    }
    for &c in rest {
        let (a, b) = term(c);
        fs += a;
        dfs += b;
    }
    (fs, dfs)
}

/// A starting point for Newton's method left of the root (F(u) ≥ 0), from the candidates'
/// w (unpadded): φ(t) = [t]₊^e is convex for e ≥ 1, so for any k candidates S with mean w̄,
/// Jensen gives Σ_S φ(1 − w_j − u) ≥ k·φ(1 − w̄ − u) = 1 at u = 1 − w̄ − k^{−(α−1)}, and
/// F ≥ that sum since φ ≥ 0. Of S = all candidates and S = those with w ≤ their mean (the
/// bound is tightest for the support itself), the larger u is taken, less
/// [`START_MARGIN`] for its rounding, and never below 0 (the largest entry alone); in real
/// arithmetic the start is exact for uniform rows. The sums and the bound are taken in f64
/// (an f32 sum of thousands of equal w drifts by more than the margin). Should rounding
/// still put the start right of the root, [`forward_rows`] starts again from 0. Kernel
/// revision 4: from it Newton needs ~2–3 steps where the start at 0 needed ~6.5 on the
/// `cpu` preset.
#[inline(always)]
fn start<F: Real>(cand: &[F], am1: F) -> F {
    let am1 = am1.to_f64();
    let bound = |k: usize, sum: f64| -> f64 {
        if k == 0 {
            return 0.0;
        }
        let kf = k as f64;
        // k^{−(α−1)} = exp(−(α − 1)·ln k)
        1.0 - sum / kf - F::exp64(-(am1 * F::ln64(kf)))
    };
    let (mut sum, mut n) = (0f64, 0usize);
    for &w in cand {
        sum += w.to_f64();
        n += 1;
    }
    let mean = if n > 0 { sum / n as f64 } else { 0.0 };
    let (mut sum2, mut n2) = (0f64, 0usize);
    for &w in cand {
        if w.to_f64() <= mean {
            sum2 += w.to_f64();
            n2 += 1;
        }
    }
    let u = bound(n, sum).max(bound(n2, sum2)) - START_MARGIN;
    if u > 0.0 {
        F::from_f64(u)
    } else {
        F::ZERO
    }
}

/// Subtracted from the Jensen start of [`start`] so that the rounding of the bound (f64
/// sums; `fast_ln`/`fast_exp` in f32 and the f32 w: ~1e-6 in u) does not put it right of
/// the root, from where the monotone Newton iteration could not come back; Newton closes
/// the margin in one or two steps.
const START_MARGIN: f64 = 1e-5;

/// α-entmax of rows of width `tk`: `z` `[rows·tk]`, `alpha` `[rows]`, into `p`.
///
/// In the variables of the module docs, τ = max x − 1 + u with u ∈ [0, 1), and entry j has
/// d_j = x_j − τ = 1 − w_j − u with w_j = (α − 1)(max z − z_j) ≥ 0, which is computed
/// without cancellation; candidates are the entries with w_j < 1.
#[inline(always)]
///
/// Returns the number of rows whose Newton iteration did not reach its tolerance within
/// [`NEWTON_MAX_ITERS`] steps (the caller turns any into an error). A row holding NaN or
/// +∞ is written as NaN (not as zeros) so that the training step's finiteness check sees it.
fn forward_rows<F: Real>(z: &[F], alpha: &[F], p: &mut [F], tk: usize) -> usize {
    let mut cand: Vec<F> = Vec::with_capacity(tk);
    let mut unconverged = 0;
    for ((zr, pr), &a) in z.chunks_exact(tk).zip(p.chunks_exact_mut(tk)).zip(alpha) {
        let am1 = a - F::ONE;
        let e = F::ONE / am1;
        let em1 = e - F::ONE;
        let Some(mz) = finite_row_max(zr) else {
            pr.fill(F::from_f64(f64::NAN));
            continue;
        };
        cand.clear();
        cand.extend(zr.iter().map(|&v| am1 * (mz - v)).filter(|&w| w < F::ONE));
        let mut u = start(&cand, am1);
        // Padded to whole lanes with entries that are never in the support (w ≥ 1).
        while !cand.len().is_multiple_of(LANES) {
            cand.push(F::from_f64(2.0));
        }
        let tol = F::from_f64(2.0) * F::EPS;
        let mut converged = false;
        for it in 0..NEWTON_MAX_ITERS {
            let (f, df) = sums(&cand, u, em1);
            let step = (f - F::ONE) / (e * df);
            let next = u + step;
            // NaN-safe: stops on a non-positive, vanishing or non-finite step.
            if next.partial_cmp(&u) != Some(std::cmp::Ordering::Greater) {
                if it == 0 && u > F::ZERO {
                    // The Jensen start is left of the root by START_MARGIN unless rounding
                    // put it at or past the root; start again from 0, where F ≥ 0 exactly
                    // (the largest entry alone gives 1).
                    u = F::ZERO;
                    continue;
                }
                converged = true;
                break;
            }
            u = next;
            if step.partial_cmp(&tol) != Some(std::cmp::Ordering::Greater) {
                converged = true;
                break;
            }
        }
        // (No running sum in this loop: a sequential f32 sum would keep it from
        // vectorising.) Chunks with no entry in the support (keys after the query under
        // the causal mask) are written as zeros without the exp and ln, with the same bits.
        let p_of = |v: F| -> F {
            let wu = am1 * (mz - v) + u;
            if wu < F::ONE {
                (e * ln_one_minus(wu)).exp()
            } else {
                F::ZERO
            }
        };
        let mut pc = pr.chunks_exact_mut(LANES);
        let mut zc = zr.chunks_exact(LANES);
        for (oc, zj) in (&mut pc).zip(&mut zc) {
            if zj.iter().all(|&v| am1 * (mz - v) + u >= F::ONE) {
                oc.fill(F::ZERO);
                continue;
            }
            for j in 0..LANES {
                oc[j] = p_of(zj[j]);
            }
        }
        for (o, &v) in pc.into_remainder().iter_mut().zip(zc.remainder()) {
            *o = p_of(v);
        }
        let total = lane_sum(pr);
        // Also a row that stopped early (the step tolerance is absolute in u, whose scale
        // is α − 1) with its weights visibly off a distribution.
        let off = (total - F::ONE) > F::from_f64(1e-3) || (F::ONE - total) > F::from_f64(1e-3);
        unconverged += usize::from(!converged || off);
    }
    unconverged
}

/// Σ of a slice with [`LANES`] independent partial sums (so that it vectorises).
#[inline(always)]
fn lane_sum<F: Real>(x: &[F]) -> F {
    let mut acc = [F::ZERO; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            acc[j] += c[j];
        }
    }
    let mut sum = F::ZERO;
    for a in acc {
        sum += a;
    }
    for &r in rest {
        sum += r;
    }
    sum
}

/// The backward of [`forward_rows`]: from `p`, `g` and α, rows of `[∂z (tk), ∂α]`.
///
/// Kernel revision 4: both passes keep [`LANES`] independent f64 partial sums (so that they
/// vectorise; revision 3 summed in one sequential chain), and the f64 pass uses
/// [`Real::exp64`]/[`Real::ln64`] (for f32 the vectorisable [`super::kernels::fast_exp_f64`]
/// and [`super::kernels::fast_ln_f64`], within ~2 ulp of libm, at most 2.6e-16 relative in
/// their test; revision 3 called libm per element).
#[inline(always)]
fn backward_rows<F: Real>(p: &[F], g: &[F], alpha: &[F], out: &mut [F], tk: usize) {
    for (((pr, gr), o), &a) in p
        .chunks_exact(tk)
        .zip(g.chunks_exact(tk))
        .zip(out.chunks_exact_mut(tk + 1))
        .zip(alpha)
    {
        let am1 = a.to_f64() - 1.0;
        let e = 1.0 / am1;
        let two_m_a = F::from_f64(2.0) - a;
        let (o, da) = o.split_at_mut(tk);
        // s = p^{2−α} in F for ∂z (relative error ~ε, as its inputs), with Σs and Σs·g (for
        // q, so that Σ ∂z = 0 to rounding) and Σp.
        let s_of = |pj: F| -> F {
            if pj > F::ZERO {
                (two_m_a * (if pj > F::TINY { pj } else { F::TINY }).ln()).exp()
            } else {
                F::ZERO
            }
        };
        let mut acc = [[0f64; LANES]; 3];
        let mut rest = [0f64; 3];
        {
            let mut oc = o.chunks_exact_mut(LANES);
            let mut pc = pr.chunks_exact(LANES);
            let mut gc = gr.chunks_exact(LANES);
            for ((oj, pj), gj) in (&mut oc).zip(&mut pc).zip(&mut gc) {
                // Chunks off the support (keys after the query under the causal mask, or
                // sparse zeros) add exact zeros to the sums and leave `out` at its zeros:
                // skipped, with the same bits for finite g (a ±∞ or NaN gradient at a
                // zero weight would have made 0·g NaN).
                if pj.iter().all(|&x| x == F::ZERO) {
                    continue;
                }
                for j in 0..LANES {
                    let sj = s_of(pj[j]);
                    oj[j] = sj;
                    acc[0][j] += sj.to_f64();
                    acc[1][j] += sj.to_f64() * gj[j].to_f64();
                    acc[2][j] += pj[j].to_f64();
                }
            }
            for ((oj, &pj), &gj) in oc
                .into_remainder()
                .iter_mut()
                .zip(pc.remainder())
                .zip(gc.remainder())
            {
                let sj = s_of(pj);
                *oj = sj;
                rest[0] += sj.to_f64();
                rest[1] += sj.to_f64() * gj.to_f64();
                rest[2] += pj.to_f64();
            }
        }
        let [ssf, sgf, total] = std::array::from_fn(|i| acc[i].iter().sum::<f64>() + rest[i]);
        // ∂α is a difference of nearly equal terms scaled by e² when α → 1: its sums are
        // taken in f64 with s = p̂^{2−α} and ln p̂ recomputed in f64 from p̂ = p / Σp (an f32
        // s, or Σp = 1 ± ε, would be amplified by e²; 2500 at α = 1.02). Normalising p is
        // the gradient at the distribution the forward represents; it does not change the
        // f64 path beyond rounding. Terms: s, s·g, g·p, g·p·ln p, p·ln p (zero off the
        // support).
        let inv_total = 1.0 / total;
        let terms = |pj: F, gj: F| -> [f64; 5] {
            if pj > F::ZERO {
                let p = pj.to_f64() * inv_total;
                let lp = F::ln64(if p > 1e-300 { p } else { 1e-300 });
                let s = F::exp64(-am1 * lp) * p;
                let g = gj.to_f64();
                [s, s * g, g * p, g * p * lp, p * lp]
            } else {
                [0.0; 5]
            }
        };
        let mut acc = [[0f64; LANES]; 5];
        let mut rest = [0f64; 5];
        let pc = pr.chunks_exact(LANES);
        let gc = gr.chunks_exact(LANES);
        let (pt, gt) = (pc.remainder(), gc.remainder());
        for (pj, gj) in pc.zip(gc) {
            if pj.iter().all(|&x| x == F::ZERO) {
                continue; // exact zeros, as above
            }
            for j in 0..LANES {
                let t = terms(pj[j], gj[j]);
                for i in 0..5 {
                    acc[i][j] += t[i];
                }
            }
        }
        for (&pj, &gj) in pt.iter().zip(gt) {
            let t = terms(pj, gj);
            for i in 0..5 {
                rest[i] += t[i];
            }
        }
        let [ss, sg, gp, gpl, h] = std::array::from_fn(|i| acc[i].iter().sum::<f64>() + rest[i]);
        let q = sg / ss;
        // ∂z = s ⊙ (g − q_f32).
        let qf = F::from_f64(sgf / ssf);
        for (oj, &gj) in o.iter_mut().zip(gr) {
            *oj *= gj - qf;
        }
        da[0] = F::from_f64(e * e * (gp - q) - e * (gpl - q * h));
    }
}

crate::multiversion! {
    fn forward_f32(z: &[f32], alpha: &[f32], p: &mut [f32], tk: usize) -> usize {
        forward_rows(z, alpha, p, tk)
    }
}

crate::multiversion! {
    fn backward_f32(p: &[f32], g: &[f32], alpha: &[f32], out: &mut [f32], tk: usize) -> () {
        backward_rows(p, g, alpha, out, tk)
    }
}

/// The forward, row chunks in parallel; an error for α outside (1, 2] (where Newton from
/// the left is not guaranteed to converge and e = 1/(α − 1) is not finite) and for rows
/// whose iteration did not converge.
fn forward<F: Real>(
    z: &[F],
    alpha: &[F],
    tk: usize,
    kernel: fn(&[F], &[F], &mut [F], usize) -> usize,
) -> Result<Vec<F>> {
    let two = F::from_f64(2.0);
    if let Some(a) = alpha.iter().find(|&&a| !(a <= F::HUGE && a >= -F::HUGE)) {
        candle_core::bail!(
            "alpha-entmax: alpha = {a} is not finite (the gene's parameters diverged)"
        );
    }
    if let Some(a) = alpha.iter().find(|&&a| !(a > F::ONE && a <= two)) {
        candle_core::bail!(
            "alpha-entmax: alpha = {a} is outside (1, 2] (alpha = 1 + sigmoid(a) has \
             saturated; lower the learning rate of the gene's alpha or use entmax15)"
        );
    }
    let mut p = vec![F::ZERO; z.len()];
    let unconverged = std::sync::atomic::AtomicUsize::new(0);
    for_row_chunks(&mut p, tk, |row, chunk| {
        let n = chunk.len() / tk;
        let bad = kernel(
            &z[row * tk..(row + n) * tk],
            &alpha[row..row + n],
            chunk,
            tk,
        );
        unconverged.fetch_add(bad, std::sync::atomic::Ordering::Relaxed);
    });
    let bad = unconverged.into_inner();
    if bad > 0 {
        candle_core::bail!(
            "alpha-entmax: Newton's method did not converge (within {NEWTON_MAX_ITERS} steps, \
             to weights summing to 1 within 1e-3) in {bad} of {} rows (smallest alpha {}; \
             alpha - 1 below ~1e-6 is beyond f32; otherwise a bug: please report the gene \
             and seed)",
            alpha.len(),
            alpha
                .iter()
                .fold(F::from_f64(2.0), |a, &b| if b < a { b } else { a })
        );
    }
    Ok(p)
}

/// A row kernel of the backward: (p, g, α, out, tk).
type BwdKernel<F> = fn(&[F], &[F], &[F], &mut [F], usize);

/// The backward, row chunks in parallel: `[rows, tk + 1]`.
fn backward<F: Real>(p: &[F], g: &[F], alpha: &[F], tk: usize, kernel: BwdKernel<F>) -> Vec<F> {
    let mut out = vec![F::ZERO; alpha.len() * (tk + 1)];
    for_row_chunks(&mut out, tk + 1, |row, chunk| {
        let n = chunk.len() / (tk + 1);
        kernel(
            &p[row * tk..(row + n) * tk],
            &g[row * tk..(row + n) * tk],
            &alpha[row..row + n],
            chunk,
            tk,
        )
    });
    out
}

fn check(lz: &Layout, la: &Layout) -> Result<(usize, usize)> {
    let tk = lz.shape().dims().last().copied().unwrap_or(0);
    let rows = lz.shape().elem_count() / tk.max(1);
    if tk == 0 || la.shape().elem_count() != rows {
        candle_core::bail!(
            "alpha-entmax: logits {:?} need one alpha per row, got {:?}",
            lz.shape(),
            la.shape()
        );
    }
    Ok((rows, tk))
}

struct AlphaEntmax;

impl CustomOp2 for AlphaEntmax {
    fn name(&self) -> &'static str {
        "alpha-entmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, tk) = check(l1, l2)?;
        let out = match candle_core::backend::BackendStorage::dtype(s1) {
            DType::F32 => f32::storage(forward(
                f32::slice(s1, l1)?,
                f32::slice(s2, l2)?,
                tk,
                forward_f32,
            )?),
            DType::F64 => f64::storage(forward(
                f64::slice(s1, l1)?,
                f64::slice(s2, l2)?,
                tk,
                forward_rows::<f64>,
            )?),
            d => candle_core::bail!("alpha-entmax: no CPU kernel for {d:?}"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        z: &Tensor,
        alpha: &Tensor,
        p: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let tk = z.dim(candle_core::D::Minus1)?;
        let both = p.apply_op3_no_bwd(&grad.contiguous()?, alpha, &AlphaEntmaxGrad)?;
        let dz = both.narrow(candle_core::D::Minus1, 0, tk)?.contiguous()?;
        let da = both
            .narrow(candle_core::D::Minus1, tk, 1)?
            .contiguous()?
            .reshape(alpha.shape())?;
        Ok((Some(dz), Some(da)))
    }
}

/// `[∂z, ∂α]` per row from (p, g, α).
struct AlphaEntmaxGrad;

impl candle_core::CustomOp3 for AlphaEntmaxGrad {
    fn name(&self) -> &'static str {
        "alpha-entmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, tk) = check(l1, l3)?;
        if l2.shape() != l1.shape() {
            candle_core::bail!("alpha-entmax grad: gradient shape differs from the output's");
        }
        let out = match candle_core::backend::BackendStorage::dtype(s1) {
            DType::F32 => f32::storage(backward(
                f32::slice(s1, l1)?,
                f32::slice(s2, l2)?,
                f32::slice(s3, l3)?,
                tk,
                backward_f32,
            )),
            DType::F64 => f64::storage(backward(
                f64::slice(s1, l1)?,
                f64::slice(s2, l2)?,
                f64::slice(s3, l3)?,
                tk,
                backward_rows::<f64>,
            )),
            d => candle_core::bail!("alpha-entmax grad: no CPU kernel for {d:?}"),
        };
        let mut dims = l1.shape().dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = tk + 1;
        Ok((out, Shape::from(dims)))
    }
}

/// α-entmax of logits `z` `[..., Tk]` (masked entries already at a large negative value)
/// with one α per row, `alpha` of shape `[..., 1]`: the fused CPU op (f32 and f64).
pub fn alpha_entmax_rows(z: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    z.contiguous()?.apply_op2(&alpha.contiguous()?, AlphaEntmax)
}

#[cfg(test)]
mod tests {
    use crate::model::attention::normalize::{alpha_entmax, alpha_entmax_composite, Mask};
    use crate::model::kernels::max_abs_diff;
    use candle_core::{DType, Device, Tensor, Var};

    /// Value and gradients (∂z, ∂α) of Σ w ⊙ p for the fused and the composite path.
    const B: usize = 2;
    const H: usize = 3;
    const T: usize = 11;

    fn both(dtype: DType, alpha: f64, z: &Tensor, w: &Tensor) -> Vec<(Tensor, Tensor, Tensor)> {
        let dev = Device::Cpu;
        let h = H;
        let t = z.dim(candle_core::D::Minus1).unwrap();
        let mask = Mask::causal(t, dtype, &dev).unwrap();
        let z = z.to_dtype(dtype).unwrap();
        let w = w.to_dtype(dtype).unwrap();
        // one α per head, spread around `alpha`
        let a: Vec<f64> = (0..h).map(|i| alpha + 0.02 * i as f64).collect();
        let a = Tensor::from_vec(a, (1, h, 1, 1), &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let mut out = Vec::new();
        for fused in [true, false] {
            let zv = Var::from_tensor(&z).unwrap();
            let av = Var::from_tensor(&a).unwrap();
            let p = if fused {
                alpha_entmax(zv.as_tensor(), &mask, av.as_tensor())
            } else {
                alpha_entmax_composite(zv.as_tensor(), &mask, av.as_tensor())
            }
            .unwrap();
            let g = p.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
            out.push((p, g.get(&zv).unwrap().clone(), g.get(&av).unwrap().clone()));
        }
        out
    }

    #[test]
    fn fused_matches_composite_in_value_and_gradients() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f64, 1.0, (B, H, T, T), &dev).unwrap();
        for alpha in [1.02, 1.3, 1.5, 1.9] {
            for scale in [0.3, 3.0, 30.0] {
                let z = Tensor::randn(0f64, scale, (B, H, T, T), &dev).unwrap();
                let r = both(DType::F64, alpha, &z, &w);
                let (p, dz, da) = (&r[0].0, &r[0].1, &r[0].2);
                let tol = |x: &Tensor| 1e-9 * (1.0 + crate::model::kernels::max_abs(x));
                assert!(max_abs_diff(p, &r[1].0) < 1e-10, "α {alpha} σ {scale}: p");
                assert!(
                    max_abs_diff(dz, &r[1].1) < tol(dz),
                    "α {alpha} σ {scale}: ∂z"
                );
                assert!(
                    max_abs_diff(da, &r[1].2) < tol(da),
                    "α {alpha} σ {scale}: ∂α"
                );
                // f32 against the f64 reference
                let r32 = both(DType::F32, alpha, &z, &w);
                assert!(
                    max_abs_diff(&r32[0].0, p) < 1e-5,
                    "α {alpha} σ {scale}: f32 p"
                );
                assert!(
                    max_abs_diff(&r32[0].1, dz) < 1e-4 * (1.0 + crate::model::kernels::max_abs(dz)),
                    "α {alpha} σ {scale}: f32 ∂z"
                );
            }
        }
    }

    /// Rows of several lane chunks (T = 45: the chunk skips and lane sums of both passes)
    /// against the composite, in f64.
    #[test]
    fn long_rows_match_composite() {
        let dev = Device::Cpu;
        let t = 45;
        let w = Tensor::randn(0f64, 1.0, (B, H, t, t), &dev).unwrap();
        for alpha in [1.05, 1.5, 1.95] {
            for scale in [0.3, 3.0] {
                let z = Tensor::randn(0f64, scale, (B, H, t, t), &dev).unwrap();
                let r = both(DType::F64, alpha, &z, &w);
                let tol = |x: &Tensor| 1e-9 * (1.0 + crate::model::kernels::max_abs(x));
                assert!(
                    max_abs_diff(&r[0].0, &r[1].0) < 1e-10,
                    "α {alpha} σ {scale}: p"
                );
                for (i, name) in [(1, "∂z"), (2, "∂α")] {
                    let (f, c) = if i == 1 {
                        (&r[0].1, &r[1].1)
                    } else {
                        (&r[0].2, &r[1].2)
                    };
                    assert!(max_abs_diff(f, c) < tol(f), "α {alpha} σ {scale}: {name}");
                }
            }
        }
    }

    /// The Jensen start of Newton's method is left of the root (F ≥ 0, evaluated in f64)
    /// on rows where its bound is tight — one maximum and k − 1 equal w — up to k = 4096,
    /// and such rows come out as distributions (an f32 sum of the w drifted past the start's
    /// margin there and stopped the iteration right of the root).
    #[test]
    fn the_start_is_left_of_the_root_on_long_tight_rows() {
        let dev = Device::Cpu;
        for alpha in [1.001f32, 1.5, 1.99, 2.0] {
            let am1 = alpha - 1.0;
            let e = 1.0 / am1 as f64;
            for k in [16usize, 1024, 4096] {
                for w in [0.3f32, 0.7, 0.944] {
                    let mut cand = vec![w; k];
                    cand[0] = 0.0;
                    let u = super::start(&cand, am1) as f64;
                    let f: f64 = cand
                        .iter()
                        .map(|&w| (1.0 - w as f64 - u).max(0.0).powf(e))
                        .sum::<f64>()
                        - 1.0;
                    assert!(f >= 0.0, "α {alpha} k {k} w {w}: F(start) = {f}");
                    // the same row as logits: w_j = (α − 1)(max z − z_j)
                    let mut z = vec![-w / am1; k];
                    z[0] = 0.0;
                    let z = Tensor::from_vec(z, (1, k), &dev).unwrap();
                    let a = Tensor::new(&[[alpha]], &dev).unwrap();
                    let p = super::alpha_entmax_rows(&z, &a).unwrap();
                    let s: f64 = p.to_vec2::<f32>().unwrap()[0]
                        .iter()
                        .map(|&x| x as f64)
                        .sum();
                    // f32 bounds the sum here, not the start: d_j = 1 − (w_j + u) ≈ 1/k
                    // carries the rounding of w_j + u (~6e-8), so p_j is off by ~k·ε
                    // relative (Σp = 0.9998 at α = 2, k = 4096, as with revision 3's
                    // start); the op's own check allows 1e-3.
                    assert!((s - 1.0).abs() < 1e-3, "α {alpha} k {k} w {w}: Σp = {s}");
                }
            }
        }
    }

    /// The f32 ∂α near α = 1, where its closed form cancels terms of size e² = 1/(α − 1)²,
    /// against the f64 path on the same (f32-representable) logits.
    #[test]
    fn f32_dalpha_is_accurate_near_alpha_one() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f64, 1.0, (B, H, T, T), &dev).unwrap();
        for alpha in [1.005, 1.02, 1.1] {
            for scale in [0.3, 3.0] {
                let z = Tensor::randn(0f32, scale as f32, (B, H, T, T), &dev)
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap();
                let w = w
                    .to_dtype(DType::F32)
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap();
                let r64 = both(DType::F64, alpha, &z, &w);
                let r32 = both(DType::F32, alpha, &z, &w);
                let (da64, da32) = (&r64[0].2, &r32[0].2);
                let err = max_abs_diff(da32, da64);
                let size = crate::model::kernels::max_abs(da64);
                // (the f32 sums of kernel revision 2 were off by up to 3.6e-3 here; now
                // at most 6.5e-7)
                assert!(
                    err < 1e-6 * (1.0 + size),
                    "α {alpha} σ {scale}: f32 ∂α off by {err} (|∂α| up to {size})"
                );
            }
        }
    }

    #[test]
    fn bad_inputs_give_nan_rows_or_errors_not_zeros() {
        let dev = Device::Cpu;
        let mask = Mask::causal(4, DType::F32, &dev).unwrap();
        let a = Tensor::new(&[[[1.5f32]]], &dev).unwrap();
        let mut z = vec![0.5f32; 16];
        z[4] = f32::NAN; // row 1
        z[8 + 1] = f32::INFINITY; // row 2
        let z = Tensor::from_vec(z, (1, 4, 4), &dev).unwrap();
        let p = alpha_entmax(&z, &mask, &a)
            .unwrap()
            .to_vec3::<f32>()
            .unwrap();
        assert!((p[0][0].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[0][1].iter().all(|v| v.is_nan()), "NaN row: {:?}", p[0][1]);
        assert!(
            p[0][2].iter().all(|v| v.is_nan()),
            "+inf row: {:?}",
            p[0][2]
        );
        assert!((p[0][3].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let z = Tensor::randn(0f32, 1.0, (1, 4, 4), &dev).unwrap();
        for bad in [1.0f32, 0.7, 2.5] {
            let a = Tensor::new(&[[[bad]]], &dev).unwrap();
            let err = alpha_entmax(&z, &mask, &a).unwrap_err().to_string();
            assert!(err.contains("outside (1, 2]"), "α {bad}: {err}");
        }
        for bad in [f32::NAN, f32::INFINITY] {
            let a = Tensor::new(&[[[bad]]], &dev).unwrap();
            let err = alpha_entmax(&z, &mask, &a).unwrap_err().to_string();
            assert!(err.contains("not finite"), "α {bad}: {err}");
        }
    }

    #[test]
    fn rows_sum_to_one_with_exact_zeros() {
        let dev = Device::Cpu;
        let t = 40;
        let mask = Mask::causal(t, DType::F32, &dev).unwrap();
        let z = Tensor::randn(0f32, 4.0, (3, t, t), &dev).unwrap();
        for alpha in [1.001f32, 1.2, 1.999] {
            let a = Tensor::new(&[[[alpha]]], &dev).unwrap();
            let p = alpha_entmax(&z, &mask, &a)
                .unwrap()
                .to_vec3::<f32>()
                .unwrap();
            let mut zeros = 0;
            for pb in &p {
                for (i, row) in pb.iter().enumerate() {
                    let s: f32 = row.iter().sum();
                    assert!((s - 1.0).abs() < 2e-5, "α {alpha} row {i} sums to {s}");
                    assert!(row[i + 1..].iter().all(|&v| v == 0.0));
                    zeros += row[..=i].iter().filter(|&&v| v == 0.0).count();
                }
            }
            // sparse except near α = 1
            if alpha > 1.1 {
                assert!(zeros > 0, "α {alpha}: no exact zeros among visible keys");
            }
        }
    }
}
