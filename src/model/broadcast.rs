//! `x + p`, `x − p` and `x · p` for a tensor `p` broadcast over some of `x`'s dims
//! (biases, LayerNorm gains, position embeddings, per-head temperatures, the qk-RMSNorm
//! gains, neg_l2's ‖k‖²), with the same values and gradients as candle's `broadcast_add` /
//! `broadcast_sub` / `broadcast_mul`, bit for bit, but a fast backward.
//!
//! candle reduces a broadcast operand's gradient over non-trailing dims with a scalar loop
//! that divides and takes remainders for every element, on one thread: at the `seed`
//! preset that loop (`Map1::map` in a profile) was the largest cost of the blocks'
//! backward, and at the `cpu` preset it was 17 % of a `log_n` gene's samples (the
//! temperature σ per head, `[R, 1, H, 1, 1]` over the `[R, B, H, T, T]` logits). Here the
//! reduction walks the gradient row by row (a row: the last dim), finds each row's place in
//! `p` once, and adds the row into it: with vector operations when `p` spans the row, into
//! one accumulator when `p`'s last dim is 1. Every element of `p`'s gradient still receives
//! its terms in memory order, starting from zero, as candle's loop adds them, so the sums
//! are the same bits (tested against candle). When `p` is a constant (no gradient to track,
//! such as the `log_n` position factor), its gradient is not computed at all.
//! Other devices and dtypes, and shapes where candle reduces only trailing dims (it then
//! uses its own vectorised row sum, whose order this op does not reproduce) or `x` itself
//! would need broadcasting, use candle's ops.

use super::kernels::Real;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

/// `x + p`, `p` broadcast to `x`'s shape (same rank, each dim of `p` 1 or `x`'s).
pub fn add(x: &Tensor, p: &Tensor) -> Result<Tensor> {
    apply(x, p, Kind::Add)
}

/// `x · p`, `p` broadcast to `x`'s shape (same rank, each dim of `p` 1 or `x`'s).
pub fn mul(x: &Tensor, p: &Tensor) -> Result<Tensor> {
    apply(x, p, Kind::Mul)
}

/// `x − p`, `p` broadcast to `x`'s shape (same rank, each dim of `p` 1 or `x`'s).
pub fn sub(x: &Tensor, p: &Tensor) -> Result<Tensor> {
    apply(x, p, Kind::Sub)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Add,
    Sub,
    Mul,
}

/// Whether this op (rather than candle's) computes `x ∘ p` for these shapes.
fn takes_shapes(x: &[usize], p: &[usize]) -> bool {
    x.len() == p.len()
        && !x.is_empty()
        && x != p
        && x.iter().zip(p).all(|(&a, &b)| b == 1 || b == a)
        // p spans x's last dim, or p is one value per row and candle's reduction is its
        // memory-order loop: were only trailing dims reduced, candle would sum them with
        // its own row sum (vectorised for f32), whose order this op does not reproduce
        // (and which is fast anyway)
        && (x.last() == p.last() || !only_trailing_reduced(x, p))
}

fn apply(x: &Tensor, p: &Tensor, kind: Kind) -> Result<Tensor> {
    let fused = x.device().is_cpu()
        && x.dtype() == p.dtype()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && takes_shapes(x.dims(), p.dims());
    if !fused {
        return match kind {
            Kind::Add => x.broadcast_add(p),
            Kind::Sub => x.broadcast_sub(p),
            Kind::Mul => x.broadcast_mul(p),
        };
    }
    x.contiguous()?
        .apply_op2(&p.contiguous()?, Broadcast { kind })
}

struct Broadcast {
    kind: Kind,
}

/// Whether the dims that a gradient of `p` broadcast to `x` is summed over (those where
/// `p` is 1 and `x` is not) are exactly the last few, the case that candle's reduction
/// sums with its vectorised row sum instead of its memory-order loop.
fn only_trailing_reduced(x: &[usize], p: &[usize]) -> bool {
    let reduced: Vec<usize> = (0..x.len()).filter(|&i| p[i] == 1 && x[i] != 1).collect();
    reduced
        .iter()
        .rev()
        .enumerate()
        .all(|(i, &v)| v == x.len() - 1 - i)
}

/// Where each row (last-dim run) of a contiguous tensor of shape `x` lands in a contiguous
/// tensor of shape `p` broadcast to it: each row's offset in `p`, where `p`'s row is
/// either as long as `x`'s or a single value.
struct RowMap {
    /// Row length of `x`.
    d: usize,
    /// Whether `p`'s last dim is 1 under a longer row of `x` (one value of `p` per row).
    scalar: bool,
    /// `p`'s offset for each row of `x`.
    offsets: Vec<usize>,
}

impl RowMap {
    fn new(x: &[usize], p: &[usize]) -> Result<Self> {
        if x.len() != p.len() || x.is_empty() || x.iter().zip(p).any(|(&a, &b)| b != 1 && b != a) {
            candle_core::bail!(
                "broadcast op: shape {p:?} does not broadcast to {x:?} along its rows"
            );
        }
        let rank = x.len();
        let d = x[rank - 1];
        let rows: usize = x[..rank - 1].iter().product();
        // p's strides (contiguous), zero where p broadcasts
        let mut stride = vec![0usize; rank];
        let mut acc = 1;
        for i in (0..rank).rev() {
            stride[i] = if p[i] == 1 { 0 } else { acc };
            acc *= p[i];
        }
        let offsets = (0..rows)
            .map(|mut r| {
                let mut off = 0;
                for i in (0..rank - 1).rev() {
                    off += (r % x[i]) * stride[i];
                    r /= x[i];
                }
                off
            })
            .collect();
        let scalar = p[rank - 1] != d;
        Ok(RowMap { d, scalar, offsets })
    }
}

/// `out[i] = x[i] ∘ p[map(i)]`, with `∘` `+`, `−` or `·` (x on the left, as candle computes
/// it).
fn forward<T: Real>(x: &[T], p: &[T], map: &RowMap, kind: Kind) -> Vec<T> {
    let d = map.d;
    let mut out = vec![T::ZERO; x.len()];
    if d == 0 {
        return out;
    }
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .zip(map.offsets.par_iter())
        .for_each(|((o, x), &off)| {
            if map.scalar {
                let p = p[off];
                match kind {
                    Kind::Add => o.iter_mut().zip(x).for_each(|(o, &a)| *o = a + p),
                    Kind::Sub => o.iter_mut().zip(x).for_each(|(o, &a)| *o = a - p),
                    Kind::Mul => o.iter_mut().zip(x).for_each(|(o, &a)| *o = a * p),
                }
                return;
            }
            let p = &p[off..off + d];
            match kind {
                Kind::Add => o
                    .iter_mut()
                    .zip(x.iter().zip(p))
                    .for_each(|(o, (&a, &b))| *o = a + b),
                Kind::Sub => o
                    .iter_mut()
                    .zip(x.iter().zip(p))
                    .for_each(|(o, (&a, &b))| *o = a - b),
                Kind::Mul => o
                    .iter_mut()
                    .zip(x.iter().zip(p))
                    .for_each(|(o, (&a, &b))| *o = a * b),
            }
        });
    out
}

/// The terms of `p`'s gradient, one per element `i` of `x`.
#[derive(Clone, Copy)]
enum Term<'a, T> {
    /// `g[i]` (for `+`).
    Grad,
    /// `0 − g[i]` (for `−`: candle subtracts the gradient from a zero one).
    NegGrad,
    /// `g[i]·x[i]`, rounded one by one (for `·`).
    Times(&'a [T]),
}

/// The gradient of `p`: the sum of the `term`s over the elements `i` that `p`'s element
/// broadcast to, each sum starting at zero and taking its terms in memory order (as
/// candle's reduction does).
fn reduce<T: Real>(g: &[T], term: Term<'_, T>, p_len: usize, map: &RowMap) -> Vec<T> {
    let d = map.d;
    let mut dst = vec![T::ZERO; p_len];
    if d == 0 {
        return dst;
    }
    for (row, &off) in map.offsets.iter().enumerate() {
        let g = &g[row * d..(row + 1) * d];
        if map.scalar {
            // one accumulator: the row's terms one after another, as candle adds them
            let mut acc = dst[off];
            match term {
                Term::Grad => g.iter().for_each(|&v| acc += v),
                Term::NegGrad => g.iter().for_each(|&v| acc += T::ZERO - v),
                Term::Times(x) => g
                    .iter()
                    .zip(&x[row * d..(row + 1) * d])
                    .for_each(|(&v, &w)| acc += v * w),
            }
            dst[off] = acc;
            continue;
        }
        let dst = &mut dst[off..off + d];
        match term {
            Term::Grad => dst.iter_mut().zip(g).for_each(|(s, &v)| *s += v),
            Term::NegGrad => dst.iter_mut().zip(g).for_each(|(s, &v)| *s += T::ZERO - v),
            Term::Times(x) => {
                let x = &x[row * d..(row + 1) * d];
                dst.iter_mut()
                    .zip(g.iter().zip(x))
                    .for_each(|(s, (&v, &w))| *s += v * w)
            }
        }
    }
    dst
}

/// The data of a contiguous CPU tensor's storage (as borrowed by `storage_and_layout`).
fn cpu<'a, T: Real>(s: &'a Storage, l: &Layout) -> Result<&'a [T]> {
    match s {
        Storage::Cpu(s) => T::slice(s, l),
        _ => candle_core::bail!("broadcast op: a CPU tensor"),
    }
}

impl CustomOp2 for Broadcast {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Add => "broadcast-add",
            Kind::Sub => "broadcast-sub",
            Kind::Mul => "broadcast-mul",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let map = RowMap::new(l1.dims(), l2.dims())?;
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => f32::storage(forward(
                f32::slice(s1, l1)?,
                f32::slice(s2, l2)?,
                &map,
                self.kind,
            )),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => f64::storage(forward(
                f64::slice(s1, l1)?,
                f64::slice(s2, l2)?,
                &map,
                self.kind,
            )),
            _ => candle_core::bail!("broadcast op: f32 or f64 operands of one dtype"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let map = RowMap::new(x.dims(), p.dims())?;
        let grad = grad.contiguous()?;
        let (dx, dp) = match x.dtype() {
            DType::F32 => grads::<f32>(x, p, &grad, &map, self.kind)?,
            DType::F64 => grads::<f64>(x, p, &grad, &map, self.kind)?,
            other => candle_core::bail!("broadcast op: unsupported dtype {other:?}"),
        };
        Ok((Some(dx), dp))
    }
}

/// (∂x, ∂p) for the upstream gradient `grad`: for `+`, (g, Σg); for `−`, (g, Σ(0 − g));
/// for `·`, (g·p, Σ g·x);
/// ∂p is `None` when `p` tracks no gradient (a constant: candle would compute a gradient
/// that nothing reads).
fn grads<T: Real>(
    x: &Tensor,
    p: &Tensor,
    grad: &Tensor,
    map: &RowMap,
    kind: Kind,
) -> Result<(Tensor, Option<Tensor>)> {
    // read in place: x and p are the contiguous operands of the forward, grad was made so
    let (gs, gl) = grad.storage_and_layout();
    let g = cpu::<T>(&gs, gl)?;
    let dev = x.device();
    let want_dp = p.track_op();
    match kind {
        Kind::Add | Kind::Sub => {
            let term = if kind == Kind::Add {
                Term::Grad
            } else {
                Term::NegGrad
            };
            let dp = want_dp
                .then(|| Tensor::from_vec(reduce(g, term, p.elem_count(), map), p.shape(), dev))
                .transpose()?;
            Ok((grad.clone(), dp))
        }
        Kind::Mul => {
            let (ps, pl) = p.storage_and_layout();
            let (xs, xl) = x.storage_and_layout();
            let dx = forward(g, cpu::<T>(&ps, pl)?, map, Kind::Mul);
            let dp = if want_dp {
                let dp = reduce(g, Term::Times(cpu::<T>(&xs, xl)?), p.elem_count(), map);
                Some(Tensor::from_vec(dp, p.shape(), dev)?)
            } else {
                None
            };
            Ok((Tensor::from_vec(dx, x.shape(), dev)?, dp))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::bits;
    use candle_core::{Device, Var};

    /// The bit patterns of a tensor's values as f64 (f32 values widen exactly).
    fn bits64(t: &Tensor) -> Vec<u64> {
        let v: Vec<f64> = t
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The gradients of Σ y·w.
    fn grads_of(y: &Tensor, w: &Tensor) -> candle_core::backprop::GradStore {
        y.mul(w).unwrap().sum_all().unwrap().backward().unwrap()
    }

    /// Values and both gradients are candle's bits, for the shapes the model uses (a bias
    /// over rows, a position table over the batch, a value per head or per position, the
    /// qk-RMSNorm gain) and shapes that fall back to candle (trailing dims reduced; x itself
    /// broadcast), in f32 and f64.
    #[test]
    fn bit_identical_to_candle() {
        let dev = Device::Cpu;
        let cases: [(&[usize], &[usize]); 13] = [
            (&[2, 300, 40], &[2, 1, 40]),
            (&[2, 5, 7, 16], &[2, 1, 7, 16]),
            (&[3, 8, 1], &[1, 8, 1]),
            // one value of p per row: a temperature per head, the log_n position factor
            (&[1, 3, 4, 6, 6], &[1, 1, 4, 1, 1]),
            (&[2, 3, 4, 5, 7], &[2, 1, 4, 1, 1]),
            (&[2, 3, 4, 6, 6], &[1, 1, 1, 6, 1]),
            (&[2, 3, 1, 5, 7], &[2, 1, 1, 1, 1]),
            // rows long enough that a vectorised row sum would round differently
            (&[2, 3, 4, 5, 40], &[2, 1, 4, 1, 1]),
            // neg_l2's ‖k‖², [R, B, H, 1, T] over the [R, B, H, T, T] scores
            (&[2, 3, 4, 6, 6], &[2, 3, 4, 1, 6]),
            // the qk-RMSNorm gain, [R, 1, 1, 1, d_h] over [R, B, H, T, d_h]
            (&[2, 3, 4, 5, 8], &[2, 1, 1, 1, 8]),
            (&[2, 3, 5, 40], &[2, 3, 5, 1]),
            (&[2, 4, 6, 6], &[2, 4, 1, 1]),
            (&[2, 1, 40], &[2, 300, 40]),
        ];
        for dtype in [DType::F32, DType::F64] {
            for (xs, ps) in cases {
                for kind in [Kind::Add, Kind::Sub, Kind::Mul] {
                    let rnd = |s: &[usize]| {
                        Var::from_tensor(
                            &Tensor::randn(0f32, 1.0, s, &dev)
                                .unwrap()
                                .to_dtype(dtype)
                                .unwrap(),
                        )
                        .unwrap()
                    };
                    let (x, p) = (rnd(xs), rnd(ps));
                    let out: Vec<usize> = xs.iter().zip(ps).map(|(&a, &b)| a.max(b)).collect();
                    let w = Tensor::randn(0f32, 1.0, out.as_slice(), &dev)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap();
                    let ours = apply(x.as_tensor(), p.as_tensor(), kind).unwrap();
                    let theirs = match kind {
                        Kind::Add => x.as_tensor().broadcast_add(p.as_tensor()),
                        Kind::Sub => x.as_tensor().broadcast_sub(p.as_tensor()),
                        Kind::Mul => x.as_tensor().broadcast_mul(p.as_tensor()),
                    }
                    .unwrap();
                    let (go, gt) = (grads_of(&ours, &w), grads_of(&theirs, &w));
                    let b = bits64;
                    let what = format!("{kind:?} {xs:?} {ps:?} {dtype:?}");
                    if dtype == DType::F32 {
                        assert_eq!(bits(&ours), bits(&theirs), "value {what}");
                    }
                    assert_eq!(b(&ours), b(&theirs), "value {what}");
                    assert_eq!(b(go.get(&x).unwrap()), b(gt.get(&x).unwrap()), "∂x {what}");
                    assert_eq!(b(go.get(&p).unwrap()), b(gt.get(&p).unwrap()), "∂p {what}");
                }
            }
        }
    }

    /// Which shapes take this op and which candle's: candle's memory-order reduction
    /// (reproduced) against its vectorised sum of trailing dims (not).
    #[test]
    fn only_candles_memory_order_reductions_are_taken_over() {
        // the shapes the model sends here are taken (else every comparison above would be
        // candle against candle), the others are left to candle
        for (x, p) in [
            (&[1usize, 3, 4, 6, 6][..], &[1usize, 1, 4, 1, 1][..]),
            (&[2, 3, 4, 6, 6], &[1, 1, 1, 6, 1]),
            (&[2, 3, 4, 5, 8], &[2, 1, 1, 1, 8]),
            (&[2, 3, 4, 6, 6], &[2, 3, 4, 1, 6]),
            (&[2, 300, 40], &[2, 1, 40]),
        ] {
            assert!(takes_shapes(x, p), "{x:?} {p:?}");
        }
        for (x, p) in [
            (&[2usize, 3, 4, 6, 6][..], &[2usize, 1, 1, 1, 1][..]),
            (&[2, 3, 5, 40], &[2, 3, 5, 1]),
            (&[2, 1, 40], &[2, 300, 40]),
            (&[2, 3, 4], &[2, 3, 4]),
            (&[2, 3, 4], &[3, 4]),
        ] {
            assert!(!takes_shapes(x, p), "{x:?} {p:?}");
        }
        assert!(!only_trailing_reduced(&[1, 3, 4, 6, 6], &[1, 1, 4, 1, 1]));
        assert!(!only_trailing_reduced(&[2, 3, 4, 6, 6], &[1, 1, 1, 6, 1]));
        assert!(only_trailing_reduced(&[2, 3, 4, 6, 6], &[2, 1, 1, 1, 1]));
        assert!(only_trailing_reduced(&[2, 3, 4, 6, 6], &[2, 3, 4, 1, 1]));
        assert!(only_trailing_reduced(&[2, 3, 5, 40], &[2, 3, 5, 1]));
        // dims of size 1 in both are not reduced: a reduced dim before one of them is not
        // a trailing one (candle then takes its loop), one after them is
        assert!(!only_trailing_reduced(&[2, 1, 4, 6, 1], &[2, 1, 4, 1, 1]));
        assert!(only_trailing_reduced(&[2, 1, 4, 1, 6], &[2, 1, 4, 1, 1]));
        assert!(!only_trailing_reduced(&[2, 3, 1, 6, 6], &[2, 1, 1, 1, 1]));
    }

    /// A constant p (no gradient to track) gets none computed, and ∂x is candle's; the
    /// `log_n` temperature's chain, (s·σ)·pos, gives candle's values and gradients.
    #[test]
    fn a_constant_factor_gets_no_gradient_and_the_log_n_chain_is_candles() {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let rnd = |s: &[usize]| {
                Tensor::randn(0f32, 1.0, s, &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap()
            };
            let s = Var::from_tensor(&rnd(&[2, 3, 4, 6, 6])).unwrap();
            let sigma = Var::from_tensor(&rnd(&[2, 1, 4, 1, 1])).unwrap();
            let pos = rnd(&[6, 1]); // a constant, as the model's
            assert!(!pos.track_op());
            let w = rnd(&[2, 3, 4, 6, 6]);
            let ours = mul(
                &mul(s.as_tensor(), sigma.as_tensor()).unwrap(),
                &pos.reshape((1, 1, 1, 6, 1)).unwrap(),
            )
            .unwrap();
            let theirs = s
                .as_tensor()
                .broadcast_mul(sigma.as_tensor())
                .unwrap()
                .broadcast_mul(&pos)
                .unwrap();
            let (go, gt) = (grads_of(&ours, &w), grads_of(&theirs, &w));
            let b = bits64;
            assert_eq!(b(&ours), b(&theirs), "value {dtype:?}");
            assert_eq!(
                b(go.get(&s).unwrap()),
                b(gt.get(&s).unwrap()),
                "∂s {dtype:?}"
            );
            assert_eq!(
                b(go.get(&sigma).unwrap()),
                b(gt.get(&sigma).unwrap()),
                "∂σ {dtype:?}"
            );
            assert!(go.get(&pos).is_none());
            // the op itself computes no ∂p for the constant
            let x = Var::from_tensor(&rnd(&[2, 3, 4, 6, 6])).unwrap();
            let p5 = pos.reshape((1, 1, 1, 6, 1)).unwrap();
            let y = mul(x.as_tensor(), &p5).unwrap();
            let (_, dp) = Broadcast { kind: Kind::Mul }
                .bwd(x.as_tensor(), &p5, &y, &w)
                .unwrap();
            assert!(dp.is_none());
        }
    }

    #[test]
    fn shapes_that_do_not_broadcast_are_an_error() {
        let x = Tensor::zeros((2, 3, 4), DType::F32, &Device::Cpu).unwrap();
        let p = Tensor::zeros((2, 2, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(add(&x, &p).is_err());
        let err = x
            .apply_op2(&p, Broadcast { kind: Kind::Add })
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not broadcast"), "{err}");
    }
}
