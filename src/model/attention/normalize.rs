//! The `normalization` component: how a row of logits becomes attention weights — its
//! parameters ([`params`]: α for `alpha_entmax`) and its forward ([`weights`]), both
//! exhaustive over [`Normalization`], then the normalizers themselves.
//!
//! Every normalizer takes logits `z` of shape `[..., Tq, Tk]` and a [`Mask`] of shape
//! `[Tq, Tk]`; masked keys get weight exactly 0.
//!
//! How gradients are obtained:
//! - `softmax`, `softmax1`, `sigmoid` are compositions of differentiable candle ops
//!   (never `softmax_last_dim`, whose fused path has no gradient).
//! - `sparsemax`, `entmax15` on the CPU: one fused op per call with the same exact
//!   sort-based threshold and the closed-form gradient ([`crate::model::sparsemax`]).
//!   Elsewhere ([`sparsemax_composite`], [`entmax15_composite`]) the support is found by
//!   the exact sort-based algorithm on a detached copy; the threshold τ is then recomputed
//!   *differentiably* in closed form from the logits on that support. On a fixed support
//!   τ(z) is exactly the true threshold function, so autodiff yields the exact Jacobian
//!   `∂L/∂z = s⊙g − (Σ s⊙g / Σ s)·s` (s = support indicator, or √p for 1.5-entmax).
//! - `alpha_entmax` on the CPU: one fused op with closed-form gradients
//!   ([`crate::model::entmax`]). Elsewhere ([`alpha_entmax_composite`]): τ* is found by
//!   bisection on a detached copy; the differentiable
//!   threshold is τ = τ* − F(z, α, τ*) / sg(∂F/∂τ), with F(τ) = Σ p(τ) − 1. Its value is
//!   τ* refined by one Newton step, and its derivative is the implicit-function derivative
//!   −(∂F/∂θ)/(∂F/∂τ) for θ ∈ {z, α}, which gives the gradients of Correia et al. (2019).

use super::{constant, Layer};
use crate::gene::Normalization;
use crate::model::params::ParamSpec;
use crate::model::sparsemax::Sparse;
use crate::model::ModelConfig;
use candle_core::{DType, Device, Result, Tensor, D};

/// The parameters `norm` adds to layer `layer`.
pub fn params(norm: Normalization, cfg: &ModelConfig, layer: usize) -> Vec<ParamSpec> {
    let h = cfg.n_heads;
    match norm {
        // α_h = 1 + sigmoid(a_h), a₀ = 0 (α = 1.5).
        Normalization::AlphaEntmax => vec![constant(layer, "attn.alpha_a", &[h, 1, 1], 0.0)],
        Normalization::Softmax
        | Normalization::Softmax1
        | Normalization::Sparsemax
        | Normalization::Entmax15
        | Normalization::Sigmoid => vec![],
    }
}

/// Attention weights `[R, B, H, Tq, Tk]` from logits `z` under `mask`, with the layer's
/// parameters (α for `alpha_entmax`).
pub fn weights(norm: Normalization, l: &Layer<'_>, z: &Tensor, mask: &Mask) -> Result<Tensor> {
    let alpha = match norm {
        Normalization::AlphaEntmax => {
            let a = l.get("attn.alpha_a").unsqueeze(1)?;
            Some((candle_nn::ops::sigmoid(&a)? + 1.0)?)
        }
        Normalization::Softmax
        | Normalization::Softmax1
        | Normalization::Sparsemax
        | Normalization::Entmax15
        | Normalization::Sigmoid => None,
    };
    normalize(norm, z, mask, alpha.as_ref())
}

/// The value given to masked logits (never −inf: a cumulative sum of −inf gives NaN).
pub const MASK_VALUE: f64 = -1e9;
/// Bisection iterations for α-entmax in f64 (halves the unit bracket below f64 precision).
pub const BISECT_ITERS_F64: usize = 54;
/// Bisection iterations in f32: 30 halvings are below f32 precision, and the Newton-corrected
/// threshold refines the result further.
pub const BISECT_ITERS_F32: usize = 30;

/// Which keys each query may see, with the derived per-row quantities the normalizers need.
#[derive(Debug, Clone)]
pub struct Mask {
    /// 1 where visible, `[Tq, Tk]`, u8.
    visible_u8: Tensor,
    /// 1.0 where visible, 0.0 elsewhere, `[Tq, Tk]`, in the compute dtype.
    visible: Tensor,
    /// 1.0 at sorted positions k < n_i, `[Tq, Tk]`.
    valid_sorted: Tensor,
    /// ln(n_i), `[Tq, 1]`.
    ln_n: Tensor,
    /// Whether this is the causal mask (query i sees keys 0..=i).
    causal: bool,
}

impl Mask {
    /// The causal mask of a length-`t` sequence: query i sees keys 0..=i (n_i = i + 1).
    pub fn causal(t: usize, dtype: DType, device: &Device) -> Result<Mask> {
        let rows: Vec<Vec<bool>> = (0..t).map(|i| (0..t).map(|j| j <= i).collect()).collect();
        Mask::from_rows(&rows, dtype, device)
    }

    /// A mask from explicit rows of visibility flags; every row must see at least one key.
    pub fn from_rows(rows: &[Vec<bool>], dtype: DType, device: &Device) -> Result<Mask> {
        let tq = rows.len();
        let tk = rows.first().map(|r| r.len()).unwrap_or(0);
        let mut vis = Vec::with_capacity(tq * tk);
        let mut valid = Vec::with_capacity(tq * tk);
        let mut n = Vec::with_capacity(tq);
        let causal = tq == tk
            && rows
                .iter()
                .enumerate()
                .all(|(i, r)| r.iter().enumerate().all(|(j, &v)| v == (j <= i)));
        for r in rows {
            if r.len() != tk {
                candle_core::bail!("mask rows have different lengths");
            }
            let count = r.iter().filter(|b| **b).count();
            if count == 0 {
                candle_core::bail!("every query must see at least one key");
            }
            vis.extend(r.iter().map(|&b| b as u8));
            valid.extend((0..tk).map(|k| if k < count { 1.0f64 } else { 0.0 }));
            n.push(count as f64);
        }
        let visible_u8 = Tensor::from_vec(vis, (tq, tk), device)?;
        let visible = visible_u8.to_dtype(dtype)?;
        let valid_sorted = Tensor::from_vec(valid, (tq, tk), device)?.to_dtype(dtype)?;
        let ln_n = Tensor::from_vec(
            n.iter().map(|x: &f64| x.ln()).collect::<Vec<_>>(),
            (tq, 1),
            device,
        )?
        .to_dtype(dtype)?;
        Ok(Mask {
            visible_u8,
            visible,
            valid_sorted,
            ln_n,
            causal,
        })
    }

    /// Whether query i sees exactly keys 0..=i (fused kernels then skip the later keys).
    pub fn is_causal(&self) -> bool {
        self.causal
    }

    /// ln(n_i) per query, `[Tq, 1]`.
    pub fn ln_n(&self) -> &Tensor {
        &self.ln_n
    }

    /// Logits with masked positions set to exactly [`MASK_VALUE`].
    pub(crate) fn apply(&self, z: &Tensor) -> Result<Tensor> {
        let m = self.visible_u8.broadcast_as(z.shape())?;
        let fill = Tensor::full(MASK_VALUE, (), z.device())?
            .to_dtype(z.dtype())?
            .broadcast_as(z.shape())?;
        m.where_cond(z, &fill)
    }
}

/// Applies `kind` to logits `z` (`[..., Tq, Tk]`) under `mask`.
/// `alpha` (α ∈ (1, 2), broadcastable to `z`) is required for `alpha_entmax` and ignored otherwise.
pub fn normalize(
    kind: Normalization,
    z: &Tensor,
    mask: &Mask,
    alpha: Option<&Tensor>,
) -> Result<Tensor> {
    match kind {
        Normalization::Softmax => softmax(z, mask),
        Normalization::Softmax1 => softmax1(z, mask),
        Normalization::Sparsemax => sparsemax(z, mask),
        Normalization::Entmax15 => entmax15(z, mask),
        Normalization::AlphaEntmax => match alpha {
            Some(a) => alpha_entmax(z, mask, a),
            None => candle_core::bail!("alpha_entmax needs an alpha tensor"),
        },
        Normalization::Sigmoid => sigmoid(z, mask),
    }
}

/// exp(z − max)/Σ exp(z − max) over visible keys.
pub fn softmax(z: &Tensor, mask: &Mask) -> Result<Tensor> {
    let z = mask.apply(z)?;
    let max = z.max_keepdim(D::Minus1)?.detach();
    let e = z.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// exp(z − m)/(exp(−m) + Σ exp(z − m)), m = max(max z, 0): an implicit zero logit.
pub fn softmax1(z: &Tensor, mask: &Mask) -> Result<Tensor> {
    let z = mask.apply(z)?;
    let m = z.max_keepdim(D::Minus1)?.detach().relu()?;
    let e = z.broadcast_sub(&m)?.exp()?;
    let denom = (e.sum_keepdim(D::Minus1)? + m.neg()?.exp()?)?;
    e.broadcast_div(&denom)
}

/// sigmoid(z − ln n_i) times the mask (Ramapuram et al. 2024); rows are not normalised.
pub fn sigmoid(z: &Tensor, mask: &Mask) -> Result<Tensor> {
    let s = candle_nn::ops::sigmoid(&z.broadcast_sub(&mask.ln_n)?)?;
    s.broadcast_mul(&mask.visible)
}

/// Positions 1..=Tk as a `[Tk]` tensor in `z`'s dtype.
fn ks(z: &Tensor) -> Result<Tensor> {
    let tk = z.dim(D::Minus1)?;
    Tensor::arange(1u32, tk as u32 + 1, z.device())?.to_dtype(z.dtype())
}

/// Picks, per row, the entry of `vals` at sorted position k* − 1 where k* = Σ cond.
fn at_support_size(vals: &Tensor, cond: &Tensor) -> Result<Tensor> {
    let k = ks(vals)?;
    let kstar = cond.sum_keepdim(D::Minus1)?;
    let onehot = k.broadcast_eq(&kstar)?; // u8
                                          // `vals` may hold huge garbage beyond the valid prefix; select instead of multiplying.
    onehot
        .where_cond(vals, &vals.zeros_like()?)?
        .sum_keepdim(D::Minus1)
}

/// Whether the fused CPU ops of [`crate::model::sparsemax`] serve `z` (CPU, f32/f64, and
/// not `EVOATTN_REFERENCE_KERNELS=1`).
fn fused_sparse(z: &Tensor) -> bool {
    z.device().is_cpu()
        && !crate::model::kernels::reference_kernels()
        && matches!(z.dtype(), DType::F32 | DType::F64)
}

/// Sparsemax: [z − τ]₊ with the exact sort-based threshold (Martins & Astudillo 2016): on
/// the CPU the fused op of [`crate::model::sparsemax`], elsewhere [`sparsemax_composite`].
pub fn sparsemax(z: &Tensor, mask: &Mask) -> Result<Tensor> {
    if fused_sparse(z) {
        return crate::model::sparsemax::sparse_rows(Sparse::Sparsemax, &mask.apply(z)?);
    }
    sparsemax_composite(z, mask)
}

/// Sparsemax composed from candle ops (any device): the sort-based threshold on a detached
/// copy, then a differentiable threshold over the support.
pub fn sparsemax_composite(z: &Tensor, mask: &Mask) -> Result<Tensor> {
    let z = mask.apply(z)?;
    // Support, on a detached copy.
    let zd = z.detach();
    let (sorted, _) = zd.sort_last_dim(false)?;
    let cs = sorted.cumsum(D::Minus1)?;
    let k = ks(&zd)?;
    let cond = (sorted.broadcast_mul(&k)? + 1.0)?
        .gt(&cs)?
        .to_dtype(z.dtype())?
        .broadcast_mul(&mask.valid_sorted)?;
    let tau_k = (cs - 1.0)?.broadcast_div(&k)?;
    let tau = at_support_size(&tau_k, &cond)?;
    let support = zd.broadcast_gt(&tau)?.to_dtype(z.dtype())?;
    // Differentiable threshold on the support: τ = (Σ_S z − 1)/|S|.
    let n_s = support.sum_keepdim(D::Minus1)?;
    let tau = ((z.mul(&support)?.sum_keepdim(D::Minus1)? - 1.0)?).div(&n_s)?;
    z.broadcast_sub(&tau)?.relu()?.mul(&support)
}

/// 1.5-entmax: [z/2 − τ]₊² with the exact sort-based threshold (Peters et al. 2019): on
/// the CPU the fused op of [`crate::model::sparsemax`], elsewhere [`entmax15_composite`].
pub fn entmax15(z: &Tensor, mask: &Mask) -> Result<Tensor> {
    if fused_sparse(z) {
        return crate::model::sparsemax::sparse_rows(Sparse::Entmax15, &mask.apply(z)?);
    }
    entmax15_composite(z, mask)
}

/// 1.5-entmax composed from candle ops (any device), as [`sparsemax_composite`].
pub fn entmax15_composite(z: &Tensor, mask: &Mask) -> Result<Tensor> {
    let z = (mask.apply(z)? / 2.0)?;
    let zd = z.detach();
    let (sorted, _) = zd.sort_last_dim(false)?;
    let k = ks(&zd)?;
    let mean = sorted.cumsum(D::Minus1)?.broadcast_div(&k)?;
    let mean_sq = sorted.sqr()?.cumsum(D::Minus1)?.broadcast_div(&k)?;
    let ss = (mean_sq - mean.sqr()?)?.broadcast_mul(&k)?;
    let delta = ((ss.neg()? + 1.0)?).broadcast_div(&k)?;
    let tau_k = (&mean - delta.relu()?.sqrt()?)?;
    let cond = tau_k
        .le(&sorted)?
        .to_dtype(z.dtype())?
        .broadcast_mul(&mask.valid_sorted)?;
    let tau = at_support_size(&tau_k, &cond)?;
    let support = zd.broadcast_gt(&tau)?.to_dtype(z.dtype())?;
    // Differentiable threshold on the support S (n = |S|): Σ_S (z − τ)² = 1
    // ⇒ τ = μ − sqrt(1/n − σ²), μ and σ² the mean and variance of z over S.
    let n_s = support.sum_keepdim(D::Minus1)?;
    let zs = z.mul(&support)?;
    let mu = zs.sum_keepdim(D::Minus1)?.div(&n_s)?;
    let var = (zs.sqr()?.sum_keepdim(D::Minus1)?.div(&n_s)? - mu.sqr()?)?;
    let rad = (n_s.recip()? - var)?.relu()?;
    // A tiny floor keeps the derivative of sqrt finite when a row's radicand is exactly 0.
    let tau = (mu - (rad + 1e-30)?.sqrt()?)?;
    z.broadcast_sub(&tau)?.relu()?.sqr()?.mul(&support)
}

/// α-entmax with α broadcastable to `z` (α ∈ (1, 2)) and constant along each row: on the
/// CPU the fused op of [`crate::model::entmax`] (Newton on the support, closed-form
/// gradients), elsewhere [`alpha_entmax_composite`].
pub fn alpha_entmax(z: &Tensor, mask: &Mask, alpha: &Tensor) -> Result<Tensor> {
    let fused = z.device().is_cpu()
        && !crate::model::kernels::reference_kernels()
        && matches!(z.dtype(), DType::F32 | DType::F64)
        && alpha.dims().last() == Some(&1);
    if !fused {
        return alpha_entmax_composite(z, mask, alpha);
    }
    let z = mask.apply(z)?;
    let mut rows = z.dims().to_vec();
    *rows.last_mut().expect("logits have rank ≥ 1") = 1;
    let alpha = alpha.broadcast_as(rows)?;
    crate::model::entmax::alpha_entmax_rows(&z, &alpha)
}

/// α-entmax composed from candle ops (any device): bisection for τ on a detached copy,
/// then implicit gradients through a Newton-corrected threshold (module docs).
pub fn alpha_entmax_composite(z: &Tensor, mask: &Mask, alpha: &Tensor) -> Result<Tensor> {
    let z = mask.apply(z)?;
    let am1 = (alpha - 1.0)?; // α − 1
    let x = z.broadcast_mul(&am1)?; // (α − 1) z
    let inv = am1.recip()?; // 1/(α − 1)

    // Bisection for τ* on detached values: Σ [x − τ]₊^{1/(α−1)} = 1.
    let xd = x.detach();
    let invd = inv.detach();
    let am1d = am1.detach();
    let max = xd.max_keepdim(D::Minus1)?;
    let pow = |base: &Tensor, e: &Tensor| -> Result<Tensor> {
        // base^e for base ≥ 0 (0 where base ≤ 0), e broadcast.
        let pos = base.gt(0.0)?;
        let safe = pos.where_cond(base, &base.ones_like()?)?;
        let v = safe.log()?.broadcast_mul(e)?.exp()?;
        pos.where_cond(&v, &v.zeros_like()?)
    };
    let mut lo = (&max - 1.0)?;
    // At τ = max − n^{1−α} every visible entry gives ≥ n^{-1}, so the sum is ≥ 1 … use the
    // looser but always-valid upper bound τ = max (sum 0).
    let mut hi = max.clone();
    let iters = if z.dtype() == DType::F64 {
        BISECT_ITERS_F64
    } else {
        BISECT_ITERS_F32
    };
    for _ in 0..iters {
        let mid = ((&lo + &hi)? / 2.0)?;
        let f = pow(&xd.broadcast_sub(&mid)?, &invd)?.sum_keepdim(D::Minus1)?;
        let ge = f.ge(1.0)?;
        lo = ge.where_cond(&mid, &lo)?;
        hi = ge.where_cond(&hi, &mid)?;
    }
    let tau_star = ((&lo + &hi)? / 2.0)?;
    // Newton-corrected, differentiable threshold.
    let base_star = xd.broadcast_sub(&tau_star)?;
    let support = base_star.gt(0.0)?.to_dtype(z.dtype())?;
    let p_star = pow(&base_star, &invd)?;
    // s = p^{2−α}: ∂F/∂τ = −Σ s/(α − 1).
    let s = pow(&p_star, &(am1d.neg()? + 1.0)?.broadcast_as(am1d.shape())?)?.mul(&support)?;
    let dfdtau = s.sum_keepdim(D::Minus1)?.broadcast_mul(&invd)?.neg()?;
    // F(z, α, τ*) with gradients flowing through x and 1/(α − 1).
    let base = x.broadcast_sub(&tau_star)?;
    let f = pow(&base, &inv)?.mul(&support)?.sum_keepdim(D::Minus1)?;
    let tau = (tau_star - (f - 1.0)?.div(&dfdtau)?)?;
    pow(&x.broadcast_sub(&tau)?, &inv)?.mul(&support)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t64(v: &[f64], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn full_mask(tq: usize, tk: usize) -> Mask {
        Mask::from_rows(&vec![vec![true; tk]; tq], DType::F64, &Device::Cpu).unwrap()
    }

    fn run(kind: Normalization, z: &[f64], alpha: f64) -> Vec<f64> {
        let n = z.len();
        let zt = t64(z, &[1, n]);
        let a = t64(&[alpha], &[1, 1]);
        normalize(kind, &zt, &full_mask(1, n), Some(&a))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn reference_vectors_from_genes_md() {
        let x = [-2.0, 0.0, 0.5];
        close(
            &run(Normalization::Softmax, &x, 0.0),
            &[0.0486, 0.3592, 0.5922],
            1e-4,
        );
        close(
            &run(Normalization::Sparsemax, &x, 0.0),
            &[0.0, 0.25, 0.75],
            1e-12,
        );
        close(
            &run(Normalization::Entmax15, &x, 0.0),
            &[0.0, 0.3260, 0.6740],
            1e-4,
        );
        // α-entmax at α = 1.5 is entmax15, at α → 2 it approaches sparsemax.
        close(
            &run(Normalization::AlphaEntmax, &x, 1.5),
            &run(Normalization::Entmax15, &x, 0.0),
            1e-10,
        );
        close(
            &run(Normalization::AlphaEntmax, &x, 1.999),
            &[0.0, 0.25, 0.75],
            2e-3,
        );
    }

    #[test]
    fn exact_zeros_and_row_sums() {
        let z = [3.0, -1.0, 0.2, 2.9, -5.0, 0.0];
        for kind in [
            Normalization::Sparsemax,
            Normalization::Entmax15,
            Normalization::AlphaEntmax,
        ] {
            let p = run(kind, &z, 1.3);
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-10, "{kind}: {p:?}");
            assert_eq!(p[4], 0.0, "{kind}: {p:?}");
            assert!(p.iter().all(|v| *v >= 0.0));
        }
        let p = run(Normalization::Softmax, &z, 0.0);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // softmax1 sums to < 1 and equals softmax with an extra zero logit.
        let p1 = run(Normalization::Softmax1, &z, 0.0);
        let mut z0 = z.to_vec();
        z0.push(0.0);
        let ref0 = run(Normalization::Softmax, &z0, 0.0);
        close(&p1, &ref0[..6], 1e-12);
        assert!(p1.iter().sum::<f64>() < 1.0);
    }

    #[test]
    fn masked_keys_get_exactly_zero() {
        let dev = Device::Cpu;
        let t = 5;
        let mask = Mask::causal(t, DType::F64, &dev).unwrap();
        let z = Tensor::randn(0.0f64, 3.0, (2, t, t), &dev).unwrap();
        let a = t64(&[1.7], &[1, 1, 1]);
        for &kind in Normalization::ALL {
            let p = normalize(kind, &z, &mask, Some(&a))
                .unwrap()
                .to_vec3::<f64>()
                .unwrap();
            for pb in &p {
                for (i, row) in pb.iter().enumerate() {
                    for (j, w) in row.iter().enumerate().skip(i + 1) {
                        assert_eq!(*w, 0.0, "{kind} row {i} key {j}");
                    }
                    let s: f64 = row.iter().sum();
                    if kind.sums_to_one() {
                        assert!((s - 1.0).abs() < 1e-9, "{kind} row {i} sums to {s}");
                    } else {
                        assert!(s > 0.0 && s <= i as f64 + 1.0, "{kind} row {i} sums to {s}");
                    }
                }
                // first query sees only key 0
                if kind.sums_to_one() {
                    assert!((pb[0][0] - 1.0).abs() < 1e-9);
                }
            }
        }
    }

    #[test]
    fn f32_paths_match_f64() {
        let dev = Device::Cpu;
        let t = 8;
        let z64 = Tensor::randn(0.0f64, 2.0, (3, t, t), &dev).unwrap();
        let z32 = z64.to_dtype(DType::F32).unwrap();
        let m64 = Mask::causal(t, DType::F64, &dev).unwrap();
        let m32 = Mask::causal(t, DType::F32, &dev).unwrap();
        for &kind in Normalization::ALL {
            let a64 = t64(&[1.4], &[1, 1, 1]);
            let a32 = a64.to_dtype(DType::F32).unwrap();
            let p64 = normalize(kind, &z64, &m64, Some(&a64)).unwrap();
            let p32 = normalize(kind, &z32, &m32, Some(&a32)).unwrap();
            let err = crate::model::kernels::max_abs_diff(&p64, &p32);
            assert!(err < 1e-4, "{kind}: max |f32 − f64| = {err}");
        }
    }

    /// Central finite differences of L = Σ w ⊙ p(z) in f64 against autodiff.
    #[test]
    fn gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let t = 6;
        let mask = Mask::causal(t, DType::F64, &dev).unwrap();
        let z0 = Tensor::randn(0.0f64, 1.5, (2, t, t), &dev)
            .unwrap()
            .to_vec3::<f64>()
            .unwrap();
        let w = Tensor::randn(0.0f64, 1.0, (2, t, t), &dev).unwrap();
        let flat: Vec<f64> = z0.iter().flatten().flatten().copied().collect();
        let alpha0 = 1.37;
        let loss = |z: &[f64], a: f64, kind: Normalization| -> f64 {
            let zt = t64(z, &[2, t, t]);
            let at = t64(&[a], &[1, 1, 1]);
            let p = normalize(kind, &zt, &mask, Some(&at)).unwrap();
            p.mul(&w)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        for &kind in Normalization::ALL {
            let zv = candle_core::Var::from_vec(flat.clone(), (2, t, t), &dev).unwrap();
            let av = candle_core::Var::from_vec(vec![alpha0], (1, 1, 1), &dev).unwrap();
            let p = normalize(kind, zv.as_tensor(), &mask, Some(av.as_tensor())).unwrap();
            let l = p.mul(&w).unwrap().sum_all().unwrap();
            let grads = l.backward().unwrap();
            let gz: Vec<f64> = grads
                .get(&zv)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let h = 1e-6;
            let mut checked = 0;
            for i in 0..flat.len() {
                let (b, r, c) = (i / (t * t), (i / t) % t, i % t);
                let _ = b;
                if c > r {
                    // masked logit: no influence, gradient must be exactly 0
                    assert_eq!(gz[i], 0.0, "{kind}: masked grad at {i}");
                    continue;
                }
                let mut zp = flat.clone();
                zp[i] += h;
                let mut zm = flat.clone();
                zm[i] -= h;
                let fd = (loss(&zp, alpha0, kind) - loss(&zm, alpha0, kind)) / (2.0 * h);
                assert!(
                    (fd - gz[i]).abs() < 1e-5 * (1.0 + fd.abs()),
                    "{kind}: dL/dz[{i}] autodiff {} vs fd {fd}",
                    gz[i]
                );
                checked += 1;
            }
            assert!(checked > 0);
            if kind == Normalization::AlphaEntmax {
                let ga = grads
                    .get(&av)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()[0];
                let fd =
                    (loss(&flat, alpha0 + h, kind) - loss(&flat, alpha0 - h, kind)) / (2.0 * h);
                assert!(
                    (fd - ga).abs() < 1e-5 * (1.0 + fd.abs()),
                    "dL/dα autodiff {ga} vs fd {fd}"
                );
                assert!(ga.abs() > 1e-8, "dL/dα should not vanish: {ga}");
            }
        }
    }

    #[test]
    fn sparse_gradient_formula() {
        // genes.md: ∂L/∂z = s⊙g − (Σ s⊙g / Σ s)·s with s the support indicator (sparsemax).
        let dev = Device::Cpu;
        let z = [0.9, -1.0, 0.5, 0.2];
        let g = [0.3, -0.7, 1.1, 0.4];
        let zv = candle_core::Var::from_vec(z.to_vec(), (1, 4), &dev).unwrap();
        let p = sparsemax(zv.as_tensor(), &full_mask(1, 4)).unwrap();
        let pv: Vec<f64> = p.flatten_all().unwrap().to_vec1().unwrap();
        let l = p.mul(&t64(&g, &[1, 4])).unwrap().sum_all().unwrap();
        let gz: Vec<f64> = l
            .backward()
            .unwrap()
            .get(&zv)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let s: Vec<f64> = pv
            .iter()
            .map(|&v| if v > 0.0 { 1.0 } else { 0.0 })
            .collect();
        let sg: f64 = s.iter().zip(&g).map(|(a, b)| a * b).sum();
        let ss: f64 = s.iter().sum();
        let want: Vec<f64> = s
            .iter()
            .zip(&g)
            .map(|(si, gi)| si * gi - sg / ss * si)
            .collect();
        close(&gz, &want, 1e-12);
    }
}
