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

use super::kernels::{finite_row_max, for_row_chunks, Real, LANES};
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

/// u_k over the first k sorted candidates (running sums), for both kinds, in f64: an f32
/// sum over thousands of nearly equal w drifts far enough to move the threshold visibly
/// (Σp off by 1e-2 at k = 1024 in a simulation), and these sums cost little next to the
/// sort.
#[derive(Clone, Copy)]
struct Prefix {
    k: usize,
    sum_w: f64,
    mean_w: f64,
    m2: f64,
}

impl Prefix {
    fn new() -> Self {
        Prefix {
            k: 0,
            sum_w: 0.0,
            mean_w: 0.0,
            m2: 0.0,
        }
    }

    /// Adds the next candidate (Welford's update for the variance).
    #[inline(always)]
    fn push(&mut self, w: f64) {
        self.k += 1;
        self.sum_w += w;
        let delta = w - self.mean_w;
        self.mean_w += delta / self.k as f64;
        self.m2 += delta * (w - self.mean_w);
    }

    /// u_k of the module docs.
    #[inline(always)]
    fn u(&self, kind: Sparse) -> f64 {
        let k = self.k as f64;
        match kind {
            // (Σ (1 − w) − 1)/k
            Sparse::Sparsemax => (k - self.sum_w - 1.0) / k,
            Sparse::Entmax15 => {
                let rad = (1.0 / k - self.m2 / k).max(0.0);
                (1.0 - self.mean_w) - rad.sqrt()
            }
        }
    }

    /// Whether the k-th candidate (w) is in the support of the first k: the composite's
    /// condition.
    #[inline(always)]
    fn holds(&self, kind: Sparse, w: f64) -> bool {
        let (a, u) = (1.0 - w, self.u(kind));
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
        let Some(mz) = finite_row_max(zr) else {
            pr.fill(F::from_f64(f64::NAN));
            continue;
        };
        cand.clear();
        cand.extend(zr.iter().map(|&v| c * (mz - v)).filter(|&w| w < F::ONE));
        if cand.is_empty() {
            // Only a row of −∞ has no candidate (every w is NaN): no distribution.
            pr.fill(F::from_f64(f64::NAN));
            continue;
        }
        cand.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let mut pre = Prefix::new();
        let mut kstar = 0;
        for &w in &cand {
            pre.push(w.to_f64());
            kstar += usize::from(pre.holds(kind, w.to_f64()));
        }
        let mut pre = Prefix::new();
        for &w in &cand[..kstar.max(1)] {
            pre.push(w.to_f64());
        }
        let u = F::from_f64(pre.u(kind));
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

/// The forward over row chunks in parallel, with `kernel` (the dispatched f32 one, or
/// [`forward_rows`] for f64).
fn forward<F: Real>(kind: Sparse, z: &[F], tk: usize, kernel: Fwd<F>) -> Vec<F> {
    let mut p = vec![F::ZERO; z.len()];
    for_row_chunks(&mut p, tk, |row, chunk| {
        kernel(kind, &z[row * tk..row * tk + chunk.len()], chunk, tk)
    });
    p
}

/// The backward over row chunks in parallel, as [`forward`].
fn backward<F: Real>(kind: Sparse, p: &[F], g: &[F], tk: usize, kernel: Bwd<F>) -> Vec<F> {
    let mut dz = vec![F::ZERO; p.len()];
    for_row_chunks(&mut dz, tk, |row, chunk| {
        let r = row * tk..row * tk + chunk.len();
        kernel(kind, &p[r.clone()], &g[r], chunk, tk)
    });
    dz
}

type Fwd<F> = fn(Sparse, &[F], &mut [F], usize);
type Bwd<F> = fn(Sparse, &[F], &[F], &mut [F], usize);

/// The row width of a tensor's layout (an error for no keys).
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
            DType::F32 => f32::storage(forward(kind, f32::slice(s, l)?, tk, forward_f32)),
            DType::F64 => f64::storage(forward(kind, f64::slice(s, l)?, tk, forward_rows)),
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
            DType::F32 => f32::storage(backward(
                kind,
                f32::slice(s1, l1)?,
                f32::slice(s2, l2)?,
                tk,
                backward_f32,
            )),
            DType::F64 => f64::storage(backward(
                kind,
                f64::slice(s1, l1)?,
                f64::slice(s2, l2)?,
                tk,
                backward_rows,
            )),
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
    use super::{sparse_rows, Sparse};
    use crate::model::attention::normalize::{entmax15_composite, sparsemax_composite, Mask};
    use crate::model::kernels::{max_abs, max_abs_diff};
    use candle_core::{DType, Device, Tensor, Var};

    /// The fused op itself (not through `sparsemax()`, which `EVOATTN_REFERENCE_KERNELS=1`
    /// would send to the composite).
    fn fused(kind: Sparse, z: &Tensor, mask: &Mask) -> candle_core::Result<Tensor> {
        sparse_rows(kind, &mask.apply(z)?)
    }

    fn composite(kind: Sparse, z: &Tensor, mask: &Mask) -> candle_core::Result<Tensor> {
        match kind {
            Sparse::Sparsemax => sparsemax_composite(z, mask),
            Sparse::Entmax15 => entmax15_composite(z, mask),
        }
    }

    /// Value and ∂z of Σ w ⊙ p, fused and composite, under a causal mask of z's width.
    fn both(kind: Sparse, dtype: DType, z: &Tensor, w: &Tensor) -> Vec<(Tensor, Tensor)> {
        let t = z.dim(candle_core::D::Minus1).unwrap();
        let mask = Mask::causal(t, dtype, &Device::Cpu).unwrap();
        let z = z.to_dtype(dtype).unwrap();
        let w = w.to_dtype(dtype).unwrap();
        [true, false]
            .iter()
            .map(|&f| {
                let zv = Var::from_tensor(&z).unwrap();
                let p = if f {
                    fused(kind, zv.as_tensor(), &mask)
                } else {
                    composite(kind, zv.as_tensor(), &mask)
                }
                .unwrap();
                let g = p.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
                (p, g.get(&zv).unwrap().clone())
            })
            .collect()
    }

    #[test]
    fn fused_matches_composite_in_value_and_gradient() {
        let dev = Device::Cpu;
        // 13: one lane chunk and a remainder; 45: several chunks (the lane sums of the
        // backward) and a remainder.
        for t in [13, 45] {
            let w = Tensor::randn(0f64, 1.0, (2, 3, t, t), &dev).unwrap();
            for kind in [Sparse::Sparsemax, Sparse::Entmax15] {
                for scale in [0.01, 0.3, 3.0, 30.0] {
                    let z = Tensor::randn(0f64, scale, (2, 3, t, t), &dev).unwrap();
                    let r = both(kind, DType::F64, &z, &w);
                    let tol = |x: &Tensor| 1e-10 * (1.0 + max_abs(x));
                    assert!(
                        max_abs_diff(&r[0].0, &r[1].0) < 1e-10,
                        "{kind:?} T {t} σ {scale}: p"
                    );
                    assert!(
                        max_abs_diff(&r[0].1, &r[1].1) < tol(&r[0].1),
                        "{kind:?} T {t} σ {scale}: ∂z"
                    );
                    let r32 = both(kind, DType::F32, &z, &w);
                    assert!(
                        max_abs_diff(&r32[0].0, &r[1].0) < 1e-5,
                        "{kind:?} T {t} σ {scale}: f32 p"
                    );
                    assert!(
                        max_abs_diff(&r32[0].1, &r[1].1) < 1e-4 * (1.0 + max_abs(&r[1].1)),
                        "{kind:?} T {t} σ {scale}: f32 ∂z"
                    );
                }
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
            let r = both(kind, DType::F64, &z, &w);
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

    /// An entry exactly at the candidate bound (w = 1: z = [1, 0] for sparsemax, [2, 0]
    /// for 1.5-entmax), which the composite may count into the support with weight 0.
    #[test]
    fn an_entry_at_the_candidate_bound() {
        let dev = Device::Cpu;
        let mask = Mask::from_rows(&[vec![true, true]], DType::F64, &dev).unwrap();
        for (kind, z) in [
            (Sparse::Sparsemax, [1.0, 0.0]),
            (Sparse::Entmax15, [2.0, 0.0]),
        ] {
            let z = Tensor::new(&[z], &dev).unwrap();
            let f = fused(kind, &z, &mask).unwrap().to_vec2::<f64>().unwrap();
            let c = composite(kind, &z, &mask)
                .unwrap()
                .to_vec2::<f64>()
                .unwrap();
            assert_eq!(f, vec![vec![1.0, 0.0]], "{kind:?}");
            assert_eq!(f, c, "{kind:?}");
        }
    }

    /// Long rows of one maximum and k − 1 equal logits (the bound of the support is
    /// tight): an f32 prefix sum would drift by ~k·ε and the weights would miss 1 by
    /// 1e-2 at k = 1024.
    #[test]
    fn long_rows_still_sum_to_one() {
        let dev = Device::Cpu;
        for kind in [Sparse::Sparsemax, Sparse::Entmax15] {
            let c = if kind == Sparse::Sparsemax { 1.0 } else { 0.5 };
            for k in [1024usize, 4096] {
                for w in [0.7f32, 0.944] {
                    let mut z = vec![-w / c; k];
                    z[0] = 0.0;
                    let z = Tensor::from_vec(z, (1, k), &dev).unwrap();
                    let p = sparse_rows(kind, &z).unwrap().to_vec2::<f32>().unwrap();
                    let s: f64 = p[0].iter().map(|&x| x as f64).sum();
                    assert!((s - 1.0).abs() < 1e-4, "{kind:?} k {k} w {w}: Σp = {s}");
                }
            }
        }
    }

    /// Large logits (around 1e4): w = c·(max z − z) is exact, so f32 keeps the accuracy
    /// of f64 (the composite, which subtracts the threshold from z, does not).
    #[test]
    fn large_logits_keep_f32_accuracy() {
        let dev = Device::Cpu;
        let t = 24;
        let mask = Mask::causal(t, DType::F32, &dev).unwrap();
        let mask64 = Mask::causal(t, DType::F64, &dev).unwrap();
        let z = (Tensor::randn(0f32, 0.5, (2, t, t), &dev).unwrap() + 1e4).unwrap();
        let z64 = z.to_dtype(DType::F64).unwrap();
        for kind in [Sparse::Sparsemax, Sparse::Entmax15] {
            let p32 = fused(kind, &z, &mask).unwrap();
            let p64 = fused(kind, &z64, &mask64).unwrap();
            let d = max_abs_diff(&p32, &p64);
            assert!(d < 1e-5, "{kind:?}: f32 off by {d}");
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
        for kind in [Sparse::Sparsemax, Sparse::Entmax15] {
            let p = fused(kind, &z, &mask).unwrap().to_vec3::<f32>().unwrap();
            assert_eq!(p[0][0], vec![1.0, 0.0, 0.0]);
            assert!(p[0][1].iter().all(|v| v.is_nan()), "{:?}", p[0][1]);
            assert!(p[0][2].iter().all(|v| v.is_nan()), "{:?}", p[0][2]);
            // a row of −∞ (no candidate at all): NaN, not a panic
            let z = Tensor::new(&[[f32::NEG_INFINITY; 4]], &dev).unwrap();
            let p = sparse_rows(kind, &z).unwrap().to_vec2::<f32>().unwrap();
            assert!(p[0].iter().all(|v| v.is_nan()), "{kind:?}: {:?}", p[0]);
        }
    }
}
