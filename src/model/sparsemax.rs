//! Sparsemax and 1.5-entmax as fused CPU ops with the exact sort-based thresholds.
//!
//! Composed from candle ops (the path other devices keep,
//! [`super::attention::normalize::sparsemax_composite`] and
//! [`super::attention::normalize::entmax15_composite`]), each call sorted every whole row
//! of the `[R, B, H, T, T]` logits, took cumulative sums, a one-hot pick of the threshold
//! and a dozen more full-tensor passes, forward and backward: the slowest pairs of the cost
//! table on an AMD Zen 5 (`additive+entmax15` at 0.64 of the baseline's tokens/s). Here, per
//! row of logits z (masked entries at −1e9), with c = α − 1 (1 for sparsemax, ½ for
//! 1.5-entmax, whose input is z/2), w_j = c·(max z − z_j) ≥ 0 (no cancellation) and the
//! threshold written τ = c·max z − 1 + u:
//!
//! - only entries with w < 1 can be in the support (τ ≥ c·max z − 1: the largest entry
//!   alone gives Σ ≥ 1), so only they are gathered and sorted, ascending in w;
//! - the threshold is the exact sort-based one of Martins & Astudillo (2016) for sparsemax
//!   and of Peters et al. (2019) for 1.5-entmax: over the k largest entries (a = 1 − w),
//!   u_k = (Σa − 1)/k, resp. u_k = mean a − √(1/k − var a) (var by Welford's update, which
//!   does not cancel when the entries are nearly equal); the support size k* is the number
//!   of k with a_k > u_k (sparsemax), resp. u_k ≤ a_k (1.5-entmax), as the composite
//!   counts them; then u = u_{k*};
//! - p = [a − u]₊ (sparsemax), resp. [a − u]₊² (1.5-entmax), over the whole row.
//!
//! The backward is the closed form of genes.md: with s the support indicator (sparsemax) or
//! √p (1.5-entmax), ∂L/∂z = s ⊙ (g − Σ s·g / Σ s), the sums in f64 so that Σ ∂z = 0 to
//! rounding. Values and gradients agree with the composite paths to rounding (tests below,
//! f64 and f32), not bit for bit, so these genes' units have new ids
//! ([`crate::version::SPARSE_KERNEL_REVISION`]).

use super::kernels::{for_row_chunks, Real, LANES};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};

/// Which normalization: the exponent 1/(α − 1) of [a − u]₊.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sparse {
    /// α = 2: [z − τ]₊.
    Sparsemax,
    /// α = 1.5: [z/2 − τ]₊².
    Entmax15,
}

impl Sparse {
    fn name(self) -> &'static str {
        match self {
            Sparse::Sparsemax => "sparsemax",
            Sparse::Entmax15 => "entmax15",
        }
    }
}

/// u_k over the first k sorted candidates (running sums in `acc`), for both kinds.
#[derive(Clone, Copy)]
struct Prefix<F> {
    k: usize,
    sum_w: F,
    mean_w: F,
    m2: F,
}

impl<F: Real> Prefix<F> {
    fn new() -> Self {
        Prefix {
            k: 0,
            sum_w: F::ZERO,
            mean_w: F::ZERO,
            m2: F::ZERO,
        }
    }

    /// Adds the next candidate (Welford's update for the variance).
    #[inline(always)]
    fn push(&mut self, w: F) {
        self.k += 1;
        self.sum_w += w;
        let delta = w - self.mean_w;
        self.mean_w += delta / F::from_f64(self.k as f64);
        self.m2 += delta * (w - self.mean_w);
    }

    /// u_k of the module docs.
    #[inline(always)]
    fn u(&self, kind: Sparse) -> F {
        let k = F::from_f64(self.k as f64);
        match kind {
            // (Σ (1 − w) − 1)/k
            Sparse::Sparsemax => (k - self.sum_w - F::ONE) / k,
            Sparse::Entmax15 => {
                let rad = F::ONE / k - self.m2 / k;
                let rad = if rad > F::ZERO { rad } else { F::ZERO };
                (F::ONE - self.mean_w) - rad.sqrt()
            }
        }
    }

    /// Whether the k-th candidate (w) is in the support of the first k: the composite's
    /// condition.
    #[inline(always)]
    fn holds(&self, kind: Sparse, w: F) -> bool {
        let (a, u) = (F::ONE - w, self.u(kind));
        match kind {
            Sparse::Sparsemax => a > u,
            Sparse::Entmax15 => u <= a,
        }
    }
}

/// The forward of `kind` over rows of width `tk` of `z`, into `p`.
#[inline(always)]
fn forward_rows<F: Real>(kind: Sparse, z: &[F], p: &mut [F], tk: usize) {
    let c = match kind {
        Sparse::Sparsemax => F::ONE,
        Sparse::Entmax15 => F::from_f64(0.5),
    };
    let mut cand: Vec<F> = Vec::with_capacity(tk);
    for (zr, pr) in z.chunks_exact(tk).zip(p.chunks_exact_mut(tk)) {
        let mut mz = zr[0];
        let mut finite = true;
        for &v in zr {
            if v > mz {
                mz = v;
            }
            // false for NaN and +∞
            finite &= v <= F::HUGE;
        }
        if !finite {
            // A NaN row, so that the training step's finiteness check sees it.
            pr.fill(F::from_f64(f64::NAN));
            continue;
        }
        cand.clear();
        cand.extend(zr.iter().map(|&v| c * (mz - v)).filter(|&w| w < F::ONE));
        cand.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let mut pre = Prefix::new();
        let mut kstar = 0;
        for &w in &cand {
            pre.push(w);
            kstar += usize::from(pre.holds(kind, w));
        }
        let mut pre = Prefix::new();
        for &w in &cand[..kstar.max(1)] {
            pre.push(w);
        }
        let u = pre.u(kind);
        for (o, &v) in pr.iter_mut().zip(zr) {
            let d = (F::ONE - c * (mz - v)) - u;
            *o = if d > F::ZERO {
                match kind {
                    Sparse::Sparsemax => d,
                    Sparse::Entmax15 => d * d,
                }
            } else {
                F::ZERO
            };
        }
    }
}

/// The backward: ∂z = s ⊙ (g − Σ s·g / Σ s) per row, from the output `p` and its gradient.
#[inline(always)]
fn backward_rows<F: Real>(kind: Sparse, p: &[F], g: &[F], dz: &mut [F], tk: usize) {
    for ((pr, gr), o) in p
        .chunks_exact(tk)
        .zip(g.chunks_exact(tk))
        .zip(dz.chunks_exact_mut(tk))
    {
        let s_of = |pj: F| -> F {
            if pj > F::ZERO {
                match kind {
                    Sparse::Sparsemax => F::ONE,
                    Sparse::Entmax15 => pj.sqrt(),
                }
            } else {
                F::ZERO
            }
        };
        let mut acc = [[0f64; LANES]; 2];
        let mut rest = [0f64; 2];
        let (pc, gc) = (pr.chunks_exact(LANES), gr.chunks_exact(LANES));
        let (pt, gt) = (pc.remainder(), gc.remainder());
        let mut oc = o.chunks_exact_mut(LANES);
        for ((oj, pj), gj) in (&mut oc).zip(pc).zip(gc) {
            for j in 0..LANES {
                let s = s_of(pj[j]);
                oj[j] = s;
                acc[0][j] += s.to_f64();
                acc[1][j] += s.to_f64() * gj[j].to_f64();
            }
        }
        for ((oj, &pj), &gj) in oc.into_remainder().iter_mut().zip(pt).zip(gt) {
            let s = s_of(pj);
            *oj = s;
            rest[0] += s.to_f64();
            rest[1] += s.to_f64() * gj.to_f64();
        }
        let [ss, sg] = std::array::from_fn(|i| acc[i].iter().sum::<f64>() + rest[i]);
        let q = F::from_f64(sg / ss);
        for (oj, &gj) in o.iter_mut().zip(gr) {
            *oj *= gj - q;
        }
    }
}

crate::multiversion! {
    fn forward_f32(kind: Sparse, z: &[f32], p: &mut [f32], tk: usize) -> () {
        forward_rows(kind, z, p, tk)
    }
}

crate::multiversion! {
    fn backward_f32(kind: Sparse, p: &[f32], g: &[f32], dz: &mut [f32], tk: usize) -> () {
        backward_rows(kind, p, g, dz, tk)
    }
}

/// Row width and count of a contiguous tensor.
fn width(kind: Sparse, l: &Layout) -> Result<usize> {
    match l.shape().dims().last() {
        Some(&tk) if tk > 0 => Ok(tk),
        _ => candle_core::bail!("{}: logits {:?} have no keys", kind.name(), l.shape()),
    }
}

/// The fused op: logits (masked) → weights.
struct SparseOp(Sparse);

impl CustomOp1 for SparseOp {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let kind = self.0;
        let tk = width(kind, l)?;
        let out = match candle_core::backend::BackendStorage::dtype(s) {
            DType::F32 => {
                let z = f32::slice(s, l)?;
                let mut p = vec![0f32; z.len()];
                for_row_chunks(&mut p, tk, |row, chunk| {
                    forward_f32(kind, &z[row * tk..row * tk + chunk.len()], chunk, tk)
                });
                f32::storage(p)
            }
            DType::F64 => {
                let z = f64::slice(s, l)?;
                let mut p = vec![0f64; z.len()];
                for_row_chunks(&mut p, tk, |row, chunk| {
                    forward_rows(kind, &z[row * tk..row * tk + chunk.len()], chunk, tk)
                });
                f64::storage(p)
            }
            d => candle_core::bail!("{}: no CPU kernel for {d:?}", kind.name()),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _z: &Tensor, p: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(p.apply_op2_no_bwd(
            &grad.contiguous()?,
            &SparseGrad(self.0),
        )?))
    }
}

/// ∂z from (p, g).
struct SparseGrad(Sparse);

impl CustomOp2 for SparseGrad {
    fn name(&self) -> &'static str {
        match self.0 {
            Sparse::Sparsemax => "sparsemax-grad",
            Sparse::Entmax15 => "entmax15-grad",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let kind = self.0;
        let tk = width(kind, l1)?;
        if l1.shape() != l2.shape() {
            candle_core::bail!("{}: gradient shape differs from the output's", self.name());
        }
        let out = match candle_core::backend::BackendStorage::dtype(s1) {
            DType::F32 => {
                let (p, g) = (f32::slice(s1, l1)?, f32::slice(s2, l2)?);
                let mut dz = vec![0f32; p.len()];
                for_row_chunks(&mut dz, tk, |row, chunk| {
                    let r = row * tk..row * tk + chunk.len();
                    backward_f32(kind, &p[r.clone()], &g[r], chunk, tk)
                });
                f32::storage(dz)
            }
            DType::F64 => {
                let (p, g) = (f64::slice(s1, l1)?, f64::slice(s2, l2)?);
                let mut dz = vec![0f64; p.len()];
                for_row_chunks(&mut dz, tk, |row, chunk| {
                    let r = row * tk..row * tk + chunk.len();
                    backward_rows(kind, &p[r.clone()], &g[r], chunk, tk)
                });
                f64::storage(dz)
            }
            d => candle_core::bail!("{}: no CPU kernel for {d:?}", self.name()),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// `kind` of logits `z` `[..., Tk]` (masked entries already at a large negative value),
/// per row: the fused CPU op (f32 and f64).
pub fn sparse_rows(kind: Sparse, z: &Tensor) -> Result<Tensor> {
    z.contiguous()?.apply_op1(SparseOp(kind))
}

#[cfg(test)]
mod tests {
    use super::Sparse;
    use crate::model::attention::normalize::{
        entmax15, entmax15_composite, sparsemax, sparsemax_composite, Mask,
    };
    use crate::model::kernels::{max_abs, max_abs_diff};
    use candle_core::{DType, Device, Tensor, Var};

    type Norm = fn(&Tensor, &Mask) -> candle_core::Result<Tensor>;

    fn paths(kind: Sparse) -> [Norm; 2] {
        match kind {
            Sparse::Sparsemax => [sparsemax, sparsemax_composite],
            Sparse::Entmax15 => [entmax15, entmax15_composite],
        }
    }

    /// Value and ∂z of Σ w ⊙ p, fused and composite.
    fn both(kind: Sparse, dtype: DType, z: &Tensor, w: &Tensor, t: usize) -> Vec<(Tensor, Tensor)> {
        let mask = Mask::causal(t, dtype, &Device::Cpu).unwrap();
        let z = z.to_dtype(dtype).unwrap();
        let w = w.to_dtype(dtype).unwrap();
        paths(kind)
            .iter()
            .map(|f| {
                let zv = Var::from_tensor(&z).unwrap();
                let p = f(zv.as_tensor(), &mask).unwrap();
                let g = p.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
                (p, g.get(&zv).unwrap().clone())
            })
            .collect()
    }

    #[test]
    fn fused_matches_composite_in_value_and_gradient() {
        let dev = Device::Cpu;
        let t = 13;
        let w = Tensor::randn(0f64, 1.0, (2, 3, t, t), &dev).unwrap();
        for kind in [Sparse::Sparsemax, Sparse::Entmax15] {
            for scale in [0.01, 0.3, 3.0, 30.0] {
                let z = Tensor::randn(0f64, scale, (2, 3, t, t), &dev).unwrap();
                let r = both(kind, DType::F64, &z, &w, t);
                let tol = |x: &Tensor| 1e-10 * (1.0 + max_abs(x));
                assert!(
                    max_abs_diff(&r[0].0, &r[1].0) < 1e-10,
                    "{kind:?} σ {scale}: p"
                );
                assert!(
                    max_abs_diff(&r[0].1, &r[1].1) < tol(&r[0].1),
                    "{kind:?} σ {scale}: ∂z"
                );
                let r32 = both(kind, DType::F32, &z, &w, t);
                assert!(
                    max_abs_diff(&r32[0].0, &r[1].0) < 1e-5,
                    "{kind:?} σ {scale}: f32 p"
                );
                assert!(
                    max_abs_diff(&r32[0].1, &r[1].1) < 1e-4 * (1.0 + max_abs(&r[1].1)),
                    "{kind:?} σ {scale}: f32 ∂z"
                );
            }
        }
    }

    /// Ties (equal logits) and rows with one visible key, where a threshold that is off by
    /// one support entry would show.
    #[test]
    fn ties_and_single_keys() {
        let dev = Device::Cpu;
        let t = 6;
        let mut z = vec![0f64; t * t];
        for (i, v) in z.iter_mut().enumerate() {
            *v = [0.5, 0.5, 0.25, 0.5, -1.0, 0.5][i % t];
        }
        let z = Tensor::from_vec(z, (1, t, t), &dev).unwrap();
        let w = Tensor::randn(0f64, 1.0, (1, t, t), &dev).unwrap();
        for kind in [Sparse::Sparsemax, Sparse::Entmax15] {
            let r = both(kind, DType::F64, &z, &w, t);
            assert!(max_abs_diff(&r[0].0, &r[1].0) < 1e-12, "{kind:?}: p");
            assert!(max_abs_diff(&r[0].1, &r[1].1) < 1e-12, "{kind:?}: ∂z");
            let p = r[0].0.to_vec3::<f64>().unwrap();
            assert_eq!(p[0][0][0], 1.0, "{kind:?}: one visible key");
            for row in &p[0] {
                assert!(
                    (row.iter().sum::<f64>() - 1.0).abs() < 1e-12,
                    "{kind:?}: {row:?}"
                );
            }
        }
    }

    #[test]
    fn non_finite_logits_give_nan_rows() {
        let dev = Device::Cpu;
        let mask = Mask::causal(3, DType::F32, &dev).unwrap();
        let mut z = vec![0.25f32; 9];
        z[3] = f32::NAN; // row 1
        z[7] = f32::INFINITY; // row 2
        let z = Tensor::from_vec(z, (1, 3, 3), &dev).unwrap();
        for f in [sparsemax, entmax15] {
            let p = f(&z, &mask).unwrap().to_vec3::<f32>().unwrap();
            assert_eq!(p[0][0], vec![1.0, 0.0, 0.0]);
            assert!(p[0][1].iter().all(|v| v.is_nan()), "{:?}", p[0][1]);
            assert!(p[0][2].iter().all(|v| v.is_nan()), "{:?}", p[0][2]);
        }
    }
}
