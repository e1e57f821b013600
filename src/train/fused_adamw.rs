//! AdamW's update of one replica-batched f32 parameter on the CPU in three in-place
//! passes (moments, then the parameter), instead of ~20 candle ops that each allocate and
//! write a fresh tensor (at the `seed` preset each of those is 17 MB for the 4.3 M-value
//! embedding alone).
//!
//! Every value goes through exactly the f32 operations, in the same order, of the
//! composite update in [`super::AdamW::step`] (candle's `t * x` is `affine(x, 0)`, i.e.
//! `v · x + 0`, `t / x` is `v · (1/x) + 0`, `t + x` is `v · 1 + x`), so the result is
//! bit-identical (tested: `fused_adamw_is_bit_identical_to_the_composite_update`). Rust
//! neither fuses a·b + c into an FMA nor drops the `+ 0.0` (which turns −0 into +0), so
//! the AVX2 and AVX-512 builds of the loops ([`crate::multiversion`]) give the same bits.

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor};
use rayon::prelude::*;

/// Values per parallel chunk (the passes are elementwise, so any size gives the same bits).
const CHUNK: usize = 1 << 16;

/// The step's constants, as candle would round them to f32.
#[derive(Clone, Copy)]
pub(crate) struct Hyper {
    pub b1: f32,
    pub one_minus_b1: f32,
    pub b2: f32,
    pub one_minus_b2: f32,
    pub inv_bc1: f32,
    pub inv_bc2: f32,
    pub eps: f32,
    /// `Some(wd)` for parameters that decay (and wd > 0).
    pub weight_decay: Option<f32>,
    pub lr: f32,
}

/// Per-replica clip factors and live masks.
pub(crate) struct Replicas<'a> {
    pub coef: &'a [f32],
    pub live: &'a [f32],
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    crate::model::kernels::contiguous_f32(s, l)
}

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("fused AdamW needs contiguous f32 tensors"),
    }
}

/// Values per replica of a `dst_len`-value tensor, after checking that every source has as
/// many values and that they split evenly into the replicas.
fn per_replica(dst_len: usize, src_lens: &[usize], reps: &Replicas<'_>) -> Result<usize> {
    let r = reps.coef.len();
    if r == 0
        || reps.live.len() != r
        || !dst_len.is_multiple_of(r)
        || src_lens.iter().any(|&n| n != dst_len)
    {
        candle_core::bail!(
            "fused AdamW: tensors of {dst_len} and {src_lens:?} values for {r} replicas"
        );
    }
    Ok(dst_len / r)
}

/// Runs `f(chunk_of_dst, offset)` over `dst` in parallel chunks that never straddle replicas.
fn for_chunks(dst: &mut [f32], per_replica: usize, f: impl Fn(&mut [f32], usize) + Sync) {
    dst.par_chunks_mut(per_replica)
        .enumerate()
        .for_each(|(r, rep)| {
            rep.par_chunks_mut(CHUNK)
                .enumerate()
                .for_each(|(c, ch)| f(ch, r * per_replica + c * CHUNK))
        });
}

/// The gradient as the composite update uses it: 0 for a frozen replica (selected, not
/// multiplied: its gradient may be NaN), times the replica's clip factor.
#[inline(always)]
fn grad(g: f32, live: f32, coef: f32) -> f32 {
    (if live != 0.0 { g } else { 0.0 }) * coef
}

/// m ← m·β₁ + g·(1 − β₁) (or v ← v·β₂ + g²·(1 − β₂)), in place.
struct Moment<'a> {
    h: Hyper,
    reps: &'a Replicas<'a>,
    second: bool,
}

impl InplaceOp2 for Moment<'_> {
    fn name(&self) -> &'static str {
        "fused-adamw-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let g = slice(s2, l2)?;
        let m = slice_mut(s1, l1)?;
        let per = per_replica(m.len(), &[g.len()], self.reps)?;
        let h = self.h;
        for_chunks(m, per, |ch, off| {
            let r = off / per;
            let (live, coef) = (self.reps.live[r], self.reps.coef[r]);
            let g = &g[off..off + ch.len()];
            if self.second {
                second_moment(ch, g, live, coef, h);
            } else {
                first_moment(ch, g, live, coef, h);
            }
        });
        Ok(())
    }
}

/// p ← p − (m̂ / (√v̂ + ε) [+ p·wd]) · live · lr, in place.
struct Update<'a> {
    h: Hyper,
    reps: &'a Replicas<'a>,
}

impl InplaceOp3 for Update<'_> {
    fn name(&self) -> &'static str {
        "fused-adamw-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let (m, v) = (slice(s2, l2)?, slice(s3, l3)?);
        let p = slice_mut(s1, l1)?;
        let per = per_replica(p.len(), &[m.len(), v.len()], self.reps)?;
        let h = self.h;
        for_chunks(p, per, |ch, off| {
            let live = self.reps.live[off / per];
            let n = ch.len();
            let (m, v) = (&m[off..off + n], &v[off..off + n]);
            update(ch, m, v, live, h);
        });
        Ok(())
    }
}

crate::multiversion! {
    /// m ← m·β₁ + g·(1 − β₁) over a chunk (g as [`grad`] gives it).
    fn first_moment(x: &mut [f32], g: &[f32], live: f32, coef: f32, h: Hyper) -> () {
        for (x, &gv) in x.iter_mut().zip(g) {
            let gv = grad(gv, live, coef);
            *x = (*x * h.b1 + 0.0) + (gv * h.one_minus_b1 + 0.0);
        }
    }
}

crate::multiversion! {
    /// v ← v·β₂ + g²·(1 − β₂) over a chunk.
    fn second_moment(x: &mut [f32], g: &[f32], live: f32, coef: f32, h: Hyper) -> () {
        for (x, &gv) in x.iter_mut().zip(g) {
            let gv = grad(gv, live, coef);
            *x = (*x * h.b2 + 0.0) + ((gv * gv) * h.one_minus_b2 + 0.0);
        }
    }
}

crate::multiversion! {
    /// p ← p − (m̂ / (√v̂ + ε) [+ p·wd]) · live · lr over a chunk.
    fn update(p: &mut [f32], m: &[f32], v: &[f32], live: f32, h: Hyper) -> () {
        for ((x, &mv), &vv) in p.iter_mut().zip(m).zip(v) {
            let mh = mv * h.inv_bc1 + 0.0;
            let vh = vv * h.inv_bc2 + 0.0;
            let mut upd = mh / (vh.sqrt() * 1.0 + h.eps);
            if let Some(wd) = h.weight_decay {
                upd += *x * wd + 0.0;
            }
            *x -= (upd * live) * h.lr + 0.0;
        }
    }
}

/// One AdamW step of parameter `p` `[R, …]` with gradient `g`, moments `m` and `v`
/// (all contiguous f32 CPU tensors of one shape), in place.
pub(crate) fn step(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    h: Hyper,
    reps: &Replicas<'_>,
) -> Result<()> {
    let g = g.contiguous()?;
    m.inplace_op2(
        &g,
        &Moment {
            h,
            reps,
            second: false,
        },
    )?;
    v.inplace_op2(
        &g,
        &Moment {
            h,
            reps,
            second: true,
        },
    )?;
    p.inplace_op3(m, v, &Update { h, reps })
}
