//! The tied output layer and its cross-entropy, fused into one op on the CPU.
//!
//! On the `seed` preset the 33,278-way output layer is most of a step. Composed from
//! candle ops it costs three GEMMs plus a transposed copy of the embedding gradient, a
//! dozen passes over the `[N, V]` logits, and two fresh 270 MB tensors per step (whose
//! pages the kernel zeroes every time). This op computes `logits = h·Eᵀ` into a buffer that
//! is reused across steps, and the per-row NLL in two vectorised passes: the row max m,
//! then `z ← e = exp(z − m)` in place with its sum s (NLL = m + ln s − z_target), the
//! second fused with the next row's first ([`super::kernels::row_exp_sum_next_max`]), so
//! that the max's reads from memory overlap the exponentials (same bits). The
//! backward turns the buffer into `G = (softmax − onehot)·g = e·(g/s) − onehot·g` in place
//! (one multiply per entry: the exponentials are not computed twice) and calls the GEMM
//! kernel directly for `∂h = G·E` and `∂E = Gᵀ·h`. Other devices and dtypes use the
//! composite path.
//!
//! When the caller knows the gradient every row will receive (a mean over tokens:
//! [`lm_head_nll_scaled`]), the forward computes G right after each row's sum of exponentials,
//! while the row is still in cache, with the same operations as the backward would (so the
//! result is bit-identical), and the backward skips its pass over the `[N, V]` buffer (a
//! read and a write of 272 MB per replica and step at the `seed` preset).
//!
//! ∂E is computed in pieces of [`EMB_GRAD_ROWS`] vocabulary rows, one single-threaded GEMM
//! each, so its bits do not depend on the thread count. With [`lm_head_nll_deferred`] (the
//! training loop) the backward hands candle ∂h only and leaves the pieces to rayon's other
//! threads, which compute them while candle runs the blocks' backward op by op on this
//! thread; the caller adds [`DeferredEmbGrad::finish`]'s ∂E to the embedding's gradient
//! afterwards (bit-identical to the undeferred op, tested).

use super::kernels::{contiguous_f32, row_exp_sum, row_exp_sum_next_max, row_max, row_scale};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Buffers for logits, kept between steps so that their pages stay mapped.
static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

fn take_buffer(len: usize) -> Vec<f32> {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let mut v = match pool.iter().position(|b| b.len() >= len) {
        Some(i) => pool.swap_remove(i),
        None => pool.pop().unwrap_or_default(),
    };
    if v.len() < len {
        v.resize(len, 0.0);
    }
    v
}

fn give_buffer(v: Vec<f32>) {
    if !v.is_empty() {
        POOL.lock().unwrap_or_else(|e| e.into_inner()).push(v);
    }
}

/// The GEMMs' threads: those of the rayon pool this runs in (an executor job's, a replica
/// group's in training), not the process's thread count, so that a one-thread pool gets
/// the single-thread blocking instead of a two-way split run serially.
fn parallelism() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// Row-major `[rows, cols]` matrix view for the GEMM call: (pointer, column stride, row stride).
type MatRef = (*const f32, isize, isize);

/// dst`[m, n]` (row-major, contiguous) = lhs`[m, k]` · rhs`[k, n]`, on the threads of
/// [`parallelism`].
///
/// # Safety
/// The pointers and strides must describe valid matrices of the given shapes.
unsafe fn matmul(m: usize, n: usize, k: usize, dst: *mut f32, lhs: MatRef, rhs: MatRef) {
    matmul_on(m, n, k, dst, lhs, rhs, parallelism())
}

/// [`matmul`] on the given threads.
///
/// # Safety
/// As for [`matmul`].
unsafe fn matmul_on(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    lhs: MatRef,
    rhs: MatRef,
    par: gemm::Parallelism,
) {
    gemm::gemm(
        m, n, k, dst, 1, n as isize, false, lhs.0, lhs.1, lhs.2, rhs.0, rhs.1, rhs.2, 0.0, 1.0,
        false, false, false, par,
    )
}

struct Saved {
    /// exp(logit − row max) after the forward, G after the backward: `[R, N, V]`.
    logits: Vec<f32>,
    /// Σ exp(logit − row max) of each row, `[R·N]`.
    sums: Vec<f32>,
    dims: (usize, usize, usize, usize), // R, N, V, d
    /// `Some(g)`: `logits` already holds G for a gradient of g at every row.
    prescaled: Option<f32>,
}

/// NLL per row of `h·Eᵀ` at the targets.
struct LmHeadNll {
    saved: Mutex<Option<Saved>>,
    /// The gradient every row is expected to receive, when G is to be formed in the forward.
    grad_scale: Option<f32>,
    /// `Some`: the backward hands ∂E to this slot (see [`DeferredEmbGrad`]) instead of to
    /// candle.
    deferred: Option<Arc<Mutex<Option<Arc<EmbGradJob>>>>>,
}

impl Drop for LmHeadNll {
    fn drop(&mut self) {
        if let Some(s) = self.saved.lock().ok().and_then(|mut g| g.take()) {
            give_buffer(s.logits);
        }
    }
}

impl CustomOp3 for LmHeadNll {
    fn name(&self) -> &'static str {
        "lm-head-nll"
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
        let (r, n, d) = l1.shape().dims3()?;
        let (r2, v, d2) = l2.shape().dims3()?;
        if r2 != r || d2 != d || l3.shape().elem_count() != r * n {
            candle_core::bail!(
                "lm head: shapes h {:?}, E {:?}, targets {:?} do not match",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let h = contiguous_f32(s1, l1)?;
        let e = contiguous_f32(s2, l2)?;
        let t = match l3.contiguous_offsets() {
            Some((a, b)) => &s3.as_slice::<u32>()?[a..b],
            None => candle_core::bail!("lm head: targets must be contiguous"),
        };
        if let Some(&bad) = t.iter().find(|&&x| x as usize >= v) {
            candle_core::bail!("target id {bad} out of range for a vocabulary of {v}");
        }
        let mut logits = take_buffer(r * n * v);
        for i in 0..r {
            // SAFETY: h_i is [n, d] row-major, E_i is [v, d] row-major read as Eᵀ [d, v]
            // (column stride d, row stride 1); dst is a fresh [n, v] region of `logits`.
            unsafe {
                matmul(
                    n,
                    v,
                    d,
                    logits.as_mut_ptr().add(i * n * v),
                    (h.as_ptr().add(i * n * d), 1, d as isize),
                    (e.as_ptr().add(i * v * d), d as isize, 1),
                )
            };
        }
        let mut loss = vec![0f32; r * n];
        let mut sums = vec![0f32; r * n];
        let grad_scale = self.grad_scale;
        // Rows in blocks of ROWS_PER_TASK: within a block, each row's exponentials are
        // computed in one loop with the next row's max (which then needs no pass of its own
        // over memory); every row's values are those of its own row_max and row_exp_sum.
        logits[..r * n * v]
            .par_chunks_mut(v * ROWS_PER_TASK)
            .zip(
                loss.par_chunks_mut(ROWS_PER_TASK)
                    .zip(sums.par_chunks_mut(ROWS_PER_TASK)),
            )
            .enumerate()
            .for_each(|(block, (zs, (los, sus)))| {
                let rows = los.len();
                let mut m = row_max(&zs[..v]);
                for i in 0..rows {
                    let (z, rest) = zs[i * v..].split_at_mut(v);
                    let target = t[block * ROWS_PER_TASK + i] as usize;
                    let picked = z[target];
                    // z ← exp(z − m): the softmax is then one multiply away
                    let (s, next_m) = if i + 1 < rows {
                        row_exp_sum_next_max(z, m, &rest[..v])
                    } else {
                        (row_exp_sum(z, m), f32::NAN)
                    };
                    sus[i] = s;
                    los[i] = (m + s.ln()) - picked;
                    if let Some(g) = grad_scale {
                        softmax_minus_onehot(z, s, g, target);
                    }
                    m = next_m;
                }
            });
        *self.saved.lock().expect("saved lock") = Some(Saved {
            logits,
            sums,
            dims: (r, n, v, d),
            prescaled: grad_scale,
        });
        Ok((CpuStorage::F32(loss), Shape::from((r, n))))
    }

    fn bwd(
        &self,
        h: &Tensor,
        e: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // Taken, not borrowed: a second backward would find G where it expects logits.
        let taken = self.saved.lock().expect("saved lock").take();
        let Some(mut saved) = taken else {
            candle_core::bail!("lm head backward called twice or without a forward");
        };
        let (r, n, v, d) = saved.dims;
        let g: Vec<f32> = grad.flatten_all()?.to_vec1()?;
        let t: Vec<u32> = targets.flatten_all()?.to_vec1()?;
        // G = (softmax − onehot)·g, in place (unless the forward formed it).
        let sums = &saved.sums;
        match saved.prescaled {
            Some(g0) if g.iter().all(|&x| x.to_bits() == g0.to_bits()) => {}
            Some(g0) => {
                // The caller's promise was broken: rescale (correct, but not bit-identical
                // to forming G from the logits).
                saved.logits[..r * n * v]
                    .par_chunks_mut(v)
                    .enumerate()
                    .for_each(|(row, z)| {
                        let k = g[row] / g0;
                        z.iter_mut().for_each(|x| *x *= k);
                    });
            }
            None => saved.logits[..r * n * v]
                .par_chunks_mut(v)
                .enumerate()
                .for_each(|(row, z)| softmax_minus_onehot(z, sums[row], g[row], t[row] as usize)),
        }
        let (hs, hl) = h.storage_and_layout();
        let (es, el) = e.storage_and_layout();
        let (Storage::Cpu(hs), Storage::Cpu(es)) = (&*hs, &*es) else {
            candle_core::bail!("lm head backward on a non-CPU device");
        };
        let hh = contiguous_f32(hs, hl)?;
        let ee = contiguous_f32(es, el)?;
        let gm = &saved.logits;
        let mut gh = vec![0f32; r * n * d];
        for i in 0..r {
            let gi = gm.as_ptr().wrapping_add(i * n * v);
            // SAFETY: G_i is [n, v] row-major, E_i [v, d] row-major; the destination is
            // replica i's [n, d] slice.
            unsafe {
                matmul(
                    n,
                    d,
                    v,
                    gh.as_mut_ptr().add(i * n * d),
                    (gi, 1, v as isize),
                    (ee.as_ptr().add(i * v * d), 1, d as isize),
                );
            }
        }
        let dev = h.device();
        let gh = Tensor::from_vec(gh, (r, n, d), dev)?;
        let job = Arc::new(EmbGradJob::new(
            std::mem::take(&mut saved.logits),
            hh.to_vec(),
            saved.dims,
        ));
        if let Some(slot) = &self.deferred {
            // ∂E waits for DeferredEmbGrad::finish; helpers on rayon's threads (which flush
            // denormals like this one, see `crate::cpu::init_threads`: the same bits, and no
            // slow path on G's denormals) start on it now, alongside the rest of the
            // backward (which candle runs op by op on this thread).
            // (`current_num_threads`: the pool this runs in, e.g. one executor job's; a panic
            // in a helper aborts the process, as rayon's `spawn` does, rather than hang.)
            for _ in 1..rayon::current_num_threads().max(1) {
                let job = Arc::clone(&job);
                rayon::spawn(move || job.work());
            }
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(job);
            return Ok((Some(gh), None, None));
        }
        let ge = job.finish_parallel();
        Ok((Some(gh), Some(Tensor::from_vec(ge, (r, v, d), dev)?), None))
    }
}

/// Rows of logits per task of the forward's row passes (see [`LmHeadNll::cpu_fwd`]): the
/// first row of each block has its max computed in a pass of its own.
const ROWS_PER_TASK: usize = 32;

/// Vocabulary rows per piece of the embedding gradient `∂E = Gᵀ·h`. Each piece is one
/// single-threaded GEMM, whatever the number of threads, so the result does not depend on
/// how many threads share the pieces.
const EMB_GRAD_ROWS: usize = 1024;

/// The embedding gradient `∂E = Gᵀ·h` of one backward, in pieces of [`EMB_GRAD_ROWS`]
/// vocabulary rows that any thread may claim.
struct EmbGradJob {
    /// G `[R, N, V]`, a pooled buffer: returned to the pool as soon as every piece is done
    /// (a helper that starts late, or never, must not keep it), else on drop.
    g: Mutex<Vec<f32>>,
    g_ptr: SendPtr,
    /// h `[R, N, d]`.
    h: Vec<f32>,
    dims: (usize, usize, usize, usize), // R, N, V, d
    /// ∂E `[R, V, d]`; each piece's rows are written by the one thread that claimed it.
    out: Mutex<Vec<f32>>,
    out_ptr: SendPtr,
    next: AtomicUsize,
    done: AtomicUsize,
}

/// A pointer into [`EmbGradJob::out`] (written in disjoint pieces) or G (read only), for
/// the threads that share the job.
struct SendPtr(*mut f32);
// SAFETY: the pointees outlive every use: they are owned by the job the threads share, and
// G's buffer leaves the job only once every piece is done (a late helper finds no piece to
// claim and touches neither). Each piece of `out` is written by exactly one thread (claimed
// through `next`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl EmbGradJob {
    fn new(g: Vec<f32>, h: Vec<f32>, dims: (usize, usize, usize, usize)) -> Self {
        let (r, _, v, d) = dims;
        let mut out = vec![0f32; r * v * d];
        let out_ptr = SendPtr(out.as_mut_ptr());
        let mut g = g;
        let g_ptr = SendPtr(g.as_mut_ptr());
        EmbGradJob {
            g: Mutex::new(g),
            g_ptr,
            h,
            dims,
            out: Mutex::new(out),
            out_ptr,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        }
    }

    fn pieces(&self) -> usize {
        let (r, _, v, _) = self.dims;
        r * v.div_ceil(EMB_GRAD_ROWS)
    }

    /// Computes piece `c`: rows `v0..v0 + len` of replica i's ∂E.
    fn piece(&self, c: usize) {
        let (_, n, v, d) = self.dims;
        let per = v.div_ceil(EMB_GRAD_ROWS);
        let (i, v0) = (c / per, (c % per) * EMB_GRAD_ROWS);
        let len = EMB_GRAD_ROWS.min(v - v0);
        // SAFETY: G_i is [n, v] row-major, read as Gᵀ [v, n] (column stride v) from row v0;
        // h_i is [n, d] row-major; the destination is rows v0..v0 + len of replica i's
        // [v, d] block of `out`, which only this call writes.
        unsafe {
            matmul_on(
                len,
                d,
                n,
                self.out_ptr.0.add((i * v + v0) * d),
                (self.g_ptr.0.add(i * n * v + v0), v as isize, 1),
                (self.h.as_ptr().add(i * n * d), 1, d as isize),
                gemm::Parallelism::None,
            );
        }
        // + 0, as candle's gradient store adds ∂E to a zero tensor: a −0 becomes +0 (the
        // same bits whichever path adds this ∂E to the embedding's other gradients).
        // SAFETY: the rows just written, which only this call touches.
        let rows = unsafe {
            std::slice::from_raw_parts_mut(self.out_ptr.0.add((i * v + v0) * d), len * d)
        };
        rows.iter_mut().for_each(|x| *x += 0.0);
    }

    /// Claims and computes pieces until none is left.
    fn work(&self) {
        loop {
            let c = self.next.fetch_add(1, Ordering::Relaxed);
            if c >= self.pieces() {
                return;
            }
            self.piece(c);
            self.done.fetch_add(1, Ordering::Release);
        }
    }

    /// Works until every piece is done (helpers may still be finishing theirs), then takes ∂E
    /// and hands G back to the pool (no piece reads it any more: every piece is claimed).
    fn finish(&self) -> Vec<f32> {
        self.work();
        while self.done.load(Ordering::Acquire) < self.pieces() {
            std::thread::yield_now();
        }
        give_buffer(std::mem::take(
            &mut *self.g.lock().unwrap_or_else(|e| e.into_inner()),
        ));
        std::mem::take(&mut *self.out.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every piece on rayon's threads, then ∂E.
    fn finish_parallel(&self) -> Vec<f32> {
        (0..self.pieces())
            .into_par_iter()
            .for_each(|c| self.piece(c));
        self.next.store(self.pieces(), Ordering::Relaxed);
        self.done.store(self.pieces(), Ordering::Release);
        give_buffer(std::mem::take(
            &mut *self.g.lock().unwrap_or_else(|e| e.into_inner()),
        ));
        std::mem::take(&mut *self.out.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for EmbGradJob {
    fn drop(&mut self) {
        let g = self.g.get_mut().unwrap_or_else(|e| e.into_inner());
        give_buffer(std::mem::take(g));
    }
}

/// The output layer's embedding gradient, kept out of candle's backward so that it can be
/// computed while the rest of the backward runs (on the CPU, candle runs the blocks'
/// backward op by op on one thread; the `threads − 1` other threads start on ∂E = Gᵀ·h
/// right away). From [`lm_head_nll_deferred`]; after the backward, [`Self::finish`] gives
/// ∂E to add to the embedding's gradient.
#[derive(Default)]
pub struct DeferredEmbGrad {
    slot: Option<Arc<Mutex<Option<Arc<EmbGradJob>>>>>,
}

impl DeferredEmbGrad {
    /// ∂E of the output layer as a row-major buffer with its shape `[R, V, d]`, once the
    /// backward has run: `None` when it has not (no gradient tracking), or when the output
    /// layer's gradient went through candle (devices other than the CPU, dtypes other than
    /// f32).
    pub fn finish(self) -> Option<(Vec<f32>, (usize, usize, usize))> {
        let job = self
            .slot?
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        let (r, _, v, d) = job.dims;
        Some((job.finish(), (r, v, d)))
    }
}

/// A row of e = exp(logit − max) (sum `s`, target `target`) into G = (softmax − onehot)·g,
/// as e·(g/s) − onehot·g.
fn softmax_minus_onehot(z: &mut [f32], s: f32, g: f32, target: usize) {
    row_scale(z, g / s);
    z[target] -= g;
}

/// Per-row NLL `[R, N]` of the tied output layer: logits `h·Eᵀ` (h `[R, N, d]`, E `[R, V, d]`)
/// at `targets` `[R, N]` (u32), differentiable w.r.t. h and E.
pub fn lm_head_nll(h: &Tensor, emb: &Tensor, targets: &Tensor) -> Result<Tensor> {
    nll(h, emb, targets, None)
}

/// [`lm_head_nll`] for a caller whose every row will receive the gradient `grad_scale`
/// (e.g. `1/N` for a mean over N tokens): on the CPU the forward then also forms the
/// backward's `(softmax − onehot)·g` while each row is in cache (bit-identical to
/// [`lm_head_nll`]'s gradients; a different gradient is still handled correctly, by
/// rescaling). Without gradient tracking (evaluation) it is [`lm_head_nll`].
pub fn lm_head_nll_scaled(
    h: &Tensor,
    emb: &Tensor,
    targets: &Tensor,
    grad_scale: f32,
) -> Result<Tensor> {
    // (a zero, subnormal or non-finite scale could not be divided out again if the
    // gradient turned out different)
    let prescale = (h.track_op() || emb.track_op()) && grad_scale.is_normal();
    nll(h, emb, targets, prescale.then_some(grad_scale))
}

/// [`lm_head_nll_scaled`] whose backward leaves the embedding's share of the gradient,
/// ∂E, to the returned [`DeferredEmbGrad`]: on the CPU candle's backward gets ∂h only, and
/// other threads compute ∂E meanwhile. The caller must add
/// [`DeferredEmbGrad::finish`]'s ∂E to the embedding's gradient after the backward
/// (on other devices it is `None` and candle's gradient is already complete). The values
/// are those of [`lm_head_nll_scaled`], bit for bit.
pub fn lm_head_nll_deferred(
    h: &Tensor,
    emb: &Tensor,
    targets: &Tensor,
    grad_scale: f32,
) -> Result<(Tensor, DeferredEmbGrad)> {
    let prescale = (h.track_op() || emb.track_op()) && grad_scale.is_normal();
    let mut deferred = DeferredEmbGrad::default();
    if h.device().is_cpu() && h.dtype() == DType::F32 {
        deferred.slot = Some(Arc::new(Mutex::new(None)));
    }
    let rows = nll_op(
        h,
        emb,
        targets,
        prescale.then_some(grad_scale),
        deferred.slot.clone(),
    )?;
    Ok((rows, deferred))
}

fn nll(h: &Tensor, emb: &Tensor, targets: &Tensor, grad_scale: Option<f32>) -> Result<Tensor> {
    nll_op(h, emb, targets, grad_scale, None)
}

fn nll_op(
    h: &Tensor,
    emb: &Tensor,
    targets: &Tensor,
    grad_scale: Option<f32>,
    deferred: Option<Arc<Mutex<Option<Arc<EmbGradJob>>>>>,
) -> Result<Tensor> {
    if h.device().is_cpu() && h.dtype() == DType::F32 {
        let op = LmHeadNll {
            saved: Mutex::new(None),
            grad_scale,
            deferred,
        };
        return h
            .contiguous()?
            .apply_op3(&emb.contiguous()?, &targets.contiguous()?, op);
    }
    let logits = h.matmul(&emb.transpose(1, 2)?)?;
    let logp = candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1)?;
    let picked = logp.gather(
        &targets.unsqueeze(candle_core::D::Minus1)?,
        candle_core::D::Minus1,
    )?;
    picked.squeeze(candle_core::D::Minus1)?.neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::{bits, max_abs_diff};
    use candle_core::{Device, Var};

    /// Random h `[r, n, d]` and E `[r, v, d]` as variables, and targets `i·step mod v`.
    fn inputs(r: usize, n: usize, v: usize, d: usize, step: u32) -> (Var, Var, Tensor) {
        let dev = Device::Cpu;
        let h = Var::from_tensor(&Tensor::randn(0f32, 1.0, (r, n, d), &dev).unwrap()).unwrap();
        let e = Var::from_tensor(&Tensor::randn(0f32, 1.0, (r, v, d), &dev).unwrap()).unwrap();
        let ids: Vec<u32> = (0..(r * n) as u32).map(|i| (i * step) % v as u32).collect();
        (h, e, Tensor::from_vec(ids, (r, n), &dev).unwrap())
    }

    #[test]
    fn fused_head_matches_composite_in_value_and_gradients() {
        let dev = Device::Cpu;
        let (r, n) = (2, 9);
        let (h, e, t) = inputs(r, n, 37, 6, 7);
        let w = Tensor::randn(0f32, 1.0, (r, n), &dev).unwrap();
        let fused = lm_head_nll(h.as_tensor(), e.as_tensor(), &t).unwrap();
        let gf = fused
            .mul(&w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        // composite in f64
        let h64 = Var::from_tensor(&h.as_tensor().to_dtype(DType::F64).unwrap()).unwrap();
        let e64 = Var::from_tensor(&e.as_tensor().to_dtype(DType::F64).unwrap()).unwrap();
        let comp = lm_head_nll(h64.as_tensor(), e64.as_tensor(), &t).unwrap();
        let gc = comp
            .mul(&w.to_dtype(DType::F64).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(max_abs_diff(&fused, &comp) < 1e-5, "loss");
        assert!(
            max_abs_diff(gf.get(&h).unwrap(), gc.get(&h64).unwrap()) < 1e-5,
            "grad h"
        );
        assert!(
            max_abs_diff(gf.get(&e).unwrap(), gc.get(&e64).unwrap()) < 1e-5,
            "grad E"
        );
        // A second forward reuses the pooled buffer and still agrees.
        let again = lm_head_nll(h.as_tensor(), e.as_tensor(), &t).unwrap();
        assert!(max_abs_diff(&again, &comp) < 1e-5);
    }

    /// The gradients with G formed in the forward are bit-identical to forming it in the
    /// backward, for the promised gradient; another gradient is still right (rescaled).
    #[test]
    fn prescaled_backward_is_bit_identical() {
        let n = 16;
        let (h, e, t) = inputs(2, n, 301, 8, 13);
        let scale = 1.0 / n as f64;
        let grads = |prescale: Option<f32>, extra: f64| {
            let rows = match prescale {
                Some(g) => lm_head_nll_scaled(h.as_tensor(), e.as_tensor(), &t, g),
                None => lm_head_nll(h.as_tensor(), e.as_tensor(), &t),
            }
            .unwrap();
            let loss = rows.sum(1).unwrap().affine(scale * extra, 0.0).unwrap();
            let g = loss.sum_all().unwrap().backward().unwrap();
            (
                rows.to_vec2::<f32>().unwrap(),
                bits(g.get(&h).unwrap()),
                bits(g.get(&e).unwrap()),
                g.get(&h).unwrap().clone(),
            )
        };
        let plain = grads(None, 1.0);
        let pre = grads(Some(scale as f32), 1.0);
        assert_eq!(plain.0, pre.0, "loss rows");
        assert_eq!(plain.1, pre.1, "∂h not bit-identical");
        assert_eq!(plain.2, pre.2, "∂E not bit-identical");
        // a gradient of 3× the promised one: rescaled, equal to rounding
        let plain3 = grads(None, 3.0);
        let pre3 = grads(Some(scale as f32), 3.0);
        assert!(
            max_abs_diff(&plain3.3, &pre3.3)
                < 1e-6 * (1.0 + crate::model::kernels::max_abs(&plain3.3))
        );
        assert_ne!(plain3.1, plain.1);
    }

    /// The deferred embedding gradient, pieced over vocabulary rows (several pieces and a
    /// partial one here, shared with a helper thread), equals candle's path bit for bit
    /// once added, and ∂h is unchanged.
    #[test]
    fn deferred_embedding_gradient_is_bit_identical() {
        let (r, n, v) = (2, 24, 2 * EMB_GRAD_ROWS + 77);
        let (h, e, t) = inputs(r, n, v, 8, 37);
        let scale = 1.0 / n as f64;
        let plain = lm_head_nll_scaled(h.as_tensor(), e.as_tensor(), &t, scale as f32).unwrap();
        let g1 = plain.sum(1).unwrap().affine(scale, 0.0).unwrap();
        let g1 = g1.sum_all().unwrap().backward().unwrap();
        let (rows, deferred) =
            lm_head_nll_deferred(h.as_tensor(), e.as_tensor(), &t, scale as f32).unwrap();
        assert_eq!(
            rows.to_vec2::<f32>().unwrap(),
            plain.to_vec2::<f32>().unwrap()
        );
        let loss = rows.sum(1).unwrap().affine(scale, 0.0).unwrap();
        let g2 = loss.sum_all().unwrap().backward().unwrap();
        assert!(g2.get(&e).is_none(), "∂E went through candle");
        let (ge, dims) = deferred.finish().expect("∂E deferred");
        let ge = Tensor::from_vec(ge, dims, &Device::Cpu).unwrap();
        assert_eq!(bits(&ge), bits(g1.get(&e).unwrap()), "∂E not bit-identical");
        assert_eq!(bits(g2.get(&h).unwrap()), bits(g1.get(&h).unwrap()), "∂h");
        // and right: against the composite in f64
        let h64 = Var::from_tensor(&h.as_tensor().to_dtype(DType::F64).unwrap()).unwrap();
        let e64 = Var::from_tensor(&e.as_tensor().to_dtype(DType::F64).unwrap()).unwrap();
        let comp = lm_head_nll(h64.as_tensor(), e64.as_tensor(), &t).unwrap();
        let gc = comp.sum_all().unwrap().affine(scale, 0.0).unwrap();
        let gc = gc.backward().unwrap();
        assert!(max_abs_diff(&ge, gc.get(&e64).unwrap()) < 1e-6);
    }

    /// Without a backward (no gradient tracking) there is nothing to finish.
    #[test]
    fn deferred_gradient_without_backward_is_none() {
        let h = Tensor::randn(0f32, 1.0, (1, 3, 4), &Device::Cpu).unwrap();
        let e = Tensor::randn(0f32, 1.0, (1, 5, 4), &Device::Cpu).unwrap();
        let t = Tensor::from_vec(vec![0u32, 4, 2], (1, 3), &Device::Cpu).unwrap();
        let (rows, deferred) = lm_head_nll_deferred(&h, &e, &t, 1.0 / 3.0).unwrap();
        assert_eq!(rows.dims(), &[1, 3]);
        assert!(deferred.finish().is_none());
    }

    /// A second backward of the same op is an error, not silently wrong gradients.
    #[test]
    fn second_backward_is_an_error() {
        use candle_core::{CustomOp3, DType};
        let dev = Device::Cpu;
        let h = Tensor::randn(0f32, 1.0, (1, 3, 4), &dev).unwrap();
        let e = Tensor::randn(0f32, 1.0, (1, 5, 4), &dev).unwrap();
        let t = Tensor::from_vec(vec![0u32, 4, 2], (1, 3), &dev).unwrap();
        let op = LmHeadNll {
            saved: Mutex::new(None),
            grad_scale: None,
            deferred: None,
        };
        let (hs, hl) = h.storage_and_layout();
        let (es, el) = e.storage_and_layout();
        let (ts, tl) = t.storage_and_layout();
        let (Storage::Cpu(hs), Storage::Cpu(es), Storage::Cpu(ts)) = (&*hs, &*es, &*ts) else {
            unreachable!()
        };
        op.cpu_fwd(hs, hl, es, el, ts, tl).unwrap();
        let res = Tensor::zeros((1, 3), DType::F32, &dev).unwrap();
        let g = Tensor::ones((1, 3), DType::F32, &dev).unwrap();
        assert!(op.bwd(&h, &e, &t, &res, &g).is_ok());
        let err = op.bwd(&h, &e, &t, &res, &g).unwrap_err().to_string();
        assert!(err.contains("called twice"), "{err}");
    }

    #[test]
    fn out_of_range_target_is_an_error() {
        let h = Tensor::zeros((1, 2, 3), DType::F32, &Device::Cpu).unwrap();
        let e = Tensor::zeros((1, 4, 3), DType::F32, &Device::Cpu).unwrap();
        let t = Tensor::from_vec(vec![0u32, 4], (1, 2), &Device::Cpu).unwrap();
        assert!(lm_head_nll(&h, &e, &t).is_err());
    }
}
