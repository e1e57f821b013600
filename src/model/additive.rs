//! Additive (Bahdanau) similarity as one op with its own backward on the CPU.
//!
//! s_ij = Σ_a w_a · tanh(qa_ia + kb_ja), with qa = q·A and kb = k·B `[.., T, d_a]` per head.
//! Composed from candle ops it materialised the broadcast `[R, B, H, T, T, d_a]` sum, its
//! tanh and their gradients (~5× the baseline's step on the `cpu` preset). Here each
//! (replica, batch, head) block is one loop nest that never stores the `T × T × d_a` values:
//!
//! - **forward**: for each query i and hidden unit a, the row s_i· += w_a·tanh(qa_ia + kbᵀ_a·),
//!   vectorised over keys (kb is transposed once per block);
//! - **backward**, recomputing t = tanh(qa_ia + kb_ja): c_ij = ∂L/∂s_ij·(1 − t²),
//!   ∂qa_ia = w_a Σ_j c_ij, ∂kb_ja = w_a Σ_i c_ij, ∂w_a = Σ_ij ∂L/∂s_ij·t, for each
//!   (i, j) vectorised over a in kb's own layout.
//!
//! Under a causal mask (`causal`), keys after the query are skipped and their scores are 0:
//! every normaliser masks those positions (their values and gradients never count).

use super::kernels::{for_row_chunks, Real, LANES};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

/// Shape of one call: `blocks` (replica, batch, head) blocks of `t` queries and keys, `da`
/// hidden units; block g uses row `(g / (batch·heads))·heads + g % heads` of w.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    heads: usize,
    t: usize,
    da: usize,
    causal: bool,
}

impl Dims {
    fn w_row(&self, g: usize) -> usize {
        (g / (self.batch * self.heads)) * self.heads + g % self.heads
    }
    /// Keys query i sees.
    fn keys(&self, i: usize) -> usize {
        if self.causal {
            i + 1
        } else {
            self.t
        }
    }
}

/// `kbt[a·t + j] = kb[j·da + a]`.
#[inline(always)]
fn transpose<F: Real>(kb: &[F], t: usize, da: usize, kbt: &mut [F]) {
    for j in 0..t {
        for a in 0..da {
            kbt[a * t + j] = kb[j * da + a];
        }
    }
}

/// Scores of one block: for each query i, keys in chunks of [`LANES`] whose sums over a
/// stay in registers, the chunk's tanh vectorised over keys (kbᵀ rows are contiguous);
/// the last partial chunk key by key. `da` is a constant after inlining (see
/// [`backward_blocks`]).
#[inline(always)]
fn forward_block<F: Real>(q: &[F], kbt: &[F], wr: &[F], sb: &mut [F], d: Dims, da: usize) {
    let t = d.t;
    let wr = &wr[..da];
    for i in 0..t {
        let n = d.keys(i);
        let qi = &q[i * da..(i + 1) * da];
        let row = &mut sb[i * t..(i + 1) * t];
        let mut j0 = 0;
        // Full chunks, including the last partial one while it stays inside the row (the
        // values past key n − 1 are computed and dropped: cheaper than a scalar tail).
        while j0 < n && j0 + LANES <= t {
            let mut acc = [F::ZERO; LANES];
            for a in 0..da {
                let (qa, wa) = (qi[a], wr[a]);
                let kr = &kbt[a * t + j0..a * t + j0 + LANES];
                for l in 0..LANES {
                    acc[l] += wa * (qa + kr[l]).tanh();
                }
            }
            let m = LANES.min(n - j0);
            row[j0..j0 + m].copy_from_slice(&acc[..m]);
            j0 += m;
        }
        for j in j0..n {
            let mut x = F::ZERO;
            for a in 0..da {
                x += wr[a] * (qi[a] + kbt[a * t + j]).tanh();
            }
            row[j] = x;
        }
        row[n..].iter_mut().for_each(|x| *x = F::ZERO);
    }
}

/// Scores of `blocks = s.len() / (t·t)` blocks starting at block `g0`.
#[inline(always)]
fn forward_blocks<F: Real>(qa: &[F], kb: &[F], w: &[F], s: &mut [F], g0: usize, d: Dims) {
    let (t, da) = (d.t, d.da);
    let mut kbt = vec![F::ZERO; t * da];
    for (gi, sb) in s.chunks_exact_mut(t * t).enumerate() {
        let g = g0 + gi;
        let q = &qa[gi * t * da..(gi + 1) * t * da];
        transpose(&kb[gi * t * da..(gi + 1) * t * da], t, da, &mut kbt);
        let wr = &w[d.w_row(g) * da..(d.w_row(g) + 1) * da];
        match da {
            16 => forward_block(q, &kbt, wr, sb, d, 16),
            8 => forward_block(q, &kbt, wr, sb, d, 8),
            _ => forward_block(q, &kbt, wr, sb, d, da),
        }
    }
}

/// Width of one block's backward output: `[∂qa (t·da), ∂kb (t·da), ∂w (da)]`.
fn grad_width(d: Dims) -> usize {
    2 * d.t * d.da + d.da
}

/// The backward of one block (query-major, vectorised over the hidden units: no
/// horizontal sums): for each visible (i, j), t = tanh(qa_i + kb_j) over a,
/// c = ∂L/∂s_ij·(1 − t²)·w, ∂qa_i += c, ∂kb_j += c, ∂w += ∂L/∂s_ij·t. `da` is a constant
/// after inlining at the call sites of [`backward_blocks`], so the loops over a unroll.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_block<F: Real>(
    q: &[F],
    kb: &[F],
    wr: &[F],
    dsb: &[F],
    dq: &mut [F],
    dk: &mut [F],
    dw: &mut [F],
    d: Dims,
    da: usize,
) {
    let t = d.t;
    dq.iter_mut().for_each(|x| *x = F::ZERO);
    dk.iter_mut().for_each(|x| *x = F::ZERO);
    dw.iter_mut().for_each(|x| *x = F::ZERO);
    let wr = &wr[..da];
    for i in 0..t {
        let qi = &q[i * da..(i + 1) * da];
        let dqi = &mut dq[i * da..(i + 1) * da];
        for j in 0..d.keys(i) {
            let g = dsb[i * t + j];
            let kj = &kb[j * da..(j + 1) * da];
            let dkj = &mut dk[j * da..(j + 1) * da];
            for a in 0..da {
                let th = (qi[a] + kj[a]).tanh();
                let c = g * (F::ONE - th * th) * wr[a];
                dqi[a] += c;
                dkj[a] += c;
                dw[a] += g * th;
            }
        }
    }
}

/// The backward of blocks starting at `g0` into `out` (rows of [`grad_width`]).
#[inline(always)]
fn backward_blocks<F: Real>(
    qa: &[F],
    kb: &[F],
    w: &[F],
    ds: &[F],
    out: &mut [F],
    g0: usize,
    d: Dims,
) {
    let (t, da) = (d.t, d.da);
    for (gi, o) in out.chunks_exact_mut(grad_width(d)).enumerate() {
        let g = g0 + gi;
        let (q, k) = (
            &qa[gi * t * da..(gi + 1) * t * da],
            &kb[gi * t * da..(gi + 1) * t * da],
        );
        let wr = &w[d.w_row(g) * da..(d.w_row(g) + 1) * da];
        let dsb = &ds[gi * t * t..(gi + 1) * t * t];
        let (dq, rest) = o.split_at_mut(t * da);
        let (dk, dw) = rest.split_at_mut(t * da);
        // Constant widths for the presets' d_a (16 at `cpu` and `seed`, 8 at `smoke`).
        match da {
            16 => backward_block(q, k, wr, dsb, dq, dk, dw, d, 16),
            8 => backward_block(q, k, wr, dsb, dq, dk, dw, d, 8),
            _ => backward_block(q, k, wr, dsb, dq, dk, dw, d, da),
        }
    }
}

crate::multiversion! {
    fn forward_f32(qa: &[f32], kb: &[f32], w: &[f32], s: &mut [f32], g0: usize, d: Dims) -> () {
        forward_blocks(qa, kb, w, s, g0, d)
    }
}

crate::multiversion! {
    fn backward_f32(qa: &[f32], kb: &[f32], w: &[f32], ds: &[f32], out: &mut [f32], g0: usize, d: Dims) -> () {
        backward_blocks(qa, kb, w, ds, out, g0, d)
    }
}

type Fwd<F> = fn(&[F], &[F], &[F], &mut [F], usize, Dims);
type Bwd<F> = fn(&[F], &[F], &[F], &[F], &mut [F], usize, Dims);

fn forward<F: Real>(qa: &[F], kb: &[F], w: &[F], d: Dims, kernel: Fwd<F>) -> Vec<F> {
    let blocks = qa.len() / (d.t * d.da);
    let mut s = vec![F::ZERO; blocks * d.t * d.t];
    let tda = d.t * d.da;
    for_row_chunks(&mut s, d.t * d.t, |g0, chunk| {
        let n = chunk.len() / (d.t * d.t);
        kernel(
            &qa[g0 * tda..(g0 + n) * tda],
            &kb[g0 * tda..(g0 + n) * tda],
            w,
            chunk,
            g0,
            d,
        )
    });
    s
}

fn backward<F: Real>(qa: &[F], kb: &[F], w: &[F], ds: &[F], d: Dims, kernel: Bwd<F>) -> Vec<F> {
    let blocks = qa.len() / (d.t * d.da);
    let width = grad_width(d);
    let mut out = vec![F::ZERO; blocks * width];
    let (tda, tt) = (d.t * d.da, d.t * d.t);
    for_row_chunks(&mut out, width, |g0, chunk| {
        let n = chunk.len() / width;
        kernel(
            &qa[g0 * tda..(g0 + n) * tda],
            &kb[g0 * tda..(g0 + n) * tda],
            w,
            &ds[g0 * tt..(g0 + n) * tt],
            chunk,
            g0,
            d,
        )
    });
    out
}

/// The fused similarity: inputs qa, kb `[R, B, H, T, d_a]` and w `[R·H, d_a]`.
struct Additive(Dims);

impl Additive {
    fn check(&self, qa: &Layout, kb: &Layout, w: &Layout) -> Result<()> {
        let d = self.0;
        let block = d.t * d.da;
        let n = qa.shape().elem_count();
        let ok = qa.shape() == kb.shape()
            && n.is_multiple_of(block * d.batch * d.heads)
            && w.shape().elem_count() == n / (block * d.batch) * d.da;
        if !ok {
            candle_core::bail!(
                "additive similarity: shapes qa {:?}, kb {:?}, w {:?} do not match {d:?}",
                qa.shape(),
                kb.shape(),
                w.shape()
            );
        }
        Ok(())
    }
}

impl CustomOp3 for Additive {
    fn name(&self) -> &'static str {
        "additive-scores"
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
        self.check(l1, l2, l3)?;
        let d = self.0;
        let out = match candle_core::backend::BackendStorage::dtype(s1) {
            DType::F32 => f32::storage(forward(
                f32::slice(s1, l1)?,
                f32::slice(s2, l2)?,
                f32::slice(s3, l3)?,
                d,
                forward_f32,
            )),
            DType::F64 => f64::storage(forward(
                f64::slice(s1, l1)?,
                f64::slice(s2, l2)?,
                f64::slice(s3, l3)?,
                d,
                forward_blocks::<f64>,
            )),
            dt => candle_core::bail!("additive similarity: no CPU kernel for {dt:?}"),
        };
        let mut dims = l1.shape().dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = d.t;
        Ok((out, Shape::from(dims)))
    }

    fn bwd(
        &self,
        qa: &Tensor,
        kb: &Tensor,
        w: &Tensor,
        _s: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = self.0;
        let packed = qa.apply_op3_no_bwd(kb, w, &AdditiveInputsGrad(d, grad.contiguous()?))?;
        let blocks = qa.elem_count() / (d.t * d.da);
        let tda = d.t * d.da;
        let dqa = packed
            .narrow(1, 0, tda)?
            .contiguous()?
            .reshape(qa.shape())?;
        let dkb = packed
            .narrow(1, tda, tda)?
            .contiguous()?
            .reshape(kb.shape())?;
        let dw = packed
            .narrow(1, 2 * tda, d.da)?
            .contiguous()?
            .reshape((blocks / (d.batch * d.heads), d.batch, d.heads, d.da))?
            .sum(1)?
            .reshape(w.shape())?;
        Ok((Some(dqa), Some(dkb), Some(dw)))
    }
}

/// The backward: `[blocks, 2·T·d_a + d_a]` from (qa, kb, w) and the scores' gradient.
struct AdditiveInputsGrad(Dims, Tensor);

impl CustomOp3 for AdditiveInputsGrad {
    fn name(&self) -> &'static str {
        "additive-scores-grad"
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
        let d = self.0;
        Additive(d).check(l1, l2, l3)?;
        let (gs, gl) = self.1.storage_and_layout();
        let candle_core::Storage::Cpu(gs) = &*gs else {
            candle_core::bail!("additive similarity grad: the gradient is not on the CPU");
        };
        let blocks = l1.shape().elem_count() / (d.t * d.da);
        if gl.shape().elem_count() != blocks * d.t * d.t {
            candle_core::bail!("additive similarity grad: gradient {:?}", gl.shape());
        }
        let out = match candle_core::backend::BackendStorage::dtype(s1) {
            DType::F32 => f32::storage(backward(
                f32::slice(s1, l1)?,
                f32::slice(s2, l2)?,
                f32::slice(s3, l3)?,
                f32::slice(gs, gl)?,
                d,
                backward_f32,
            )),
            DType::F64 => f64::storage(backward(
                f64::slice(s1, l1)?,
                f64::slice(s2, l2)?,
                f64::slice(s3, l3)?,
                f64::slice(gs, gl)?,
                d,
                backward_blocks::<f64>,
            )),
            dt => candle_core::bail!("additive similarity grad: no CPU kernel for {dt:?}"),
        };
        Ok((out, Shape::from((blocks, grad_width(d)))))
    }
}

/// Additive scores `[R, B, H, T, T]` from qa, kb `[R, B, H, T, d_a]` and w `[R, H, .., d_a]`
/// (any shape with R·H·d_a elements, rows in (replica, head) order); keys after the query
/// get 0 when `causal`. The fused CPU op (f32 and f64).
pub fn additive_scores(qa: &Tensor, kb: &Tensor, w: &Tensor, causal: bool) -> Result<Tensor> {
    let (_, batch, heads, t, da) = qa.dims5()?;
    let d = Dims {
        batch,
        heads,
        t,
        da,
        causal,
    };
    qa.contiguous()?
        .apply_op3(&kb.contiguous()?, &w.contiguous()?, Additive(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attention::similarity::additive_composite;
    use crate::model::kernels::{max_abs, max_abs_diff};
    use candle_core::{Device, Var};

    const R: usize = 2;
    const B: usize = 2;
    const H: usize = 3;
    const T: usize = 13;
    const DA: usize = 5;

    fn inputs(dtype: DType) -> (Tensor, Tensor, Tensor, Tensor) {
        let dev = Device::Cpu;
        let f = |shape: &[usize], s: f64| {
            Tensor::randn(0f64, s, shape, &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        };
        (
            f(&[R, B, H, T, DA], 1.0),
            f(&[R, B, H, T, DA], 1.0),
            f(&[R, H, 1, 1, DA], 0.7),
            f(&[R, B, H, T, T], 1.0),
        )
    }

    /// (s, ∂qa, ∂kb, ∂w) of Σ g ⊙ s for the fused op and the composite path.
    fn eval(
        qa: &Tensor,
        kb: &Tensor,
        w: &Tensor,
        g: &Tensor,
        fused: bool,
        causal: bool,
    ) -> [Tensor; 4] {
        let (qv, kv, wv) = (
            Var::from_tensor(qa).unwrap(),
            Var::from_tensor(kb).unwrap(),
            Var::from_tensor(w).unwrap(),
        );
        let s = if fused {
            additive_scores(qv.as_tensor(), kv.as_tensor(), wv.as_tensor(), causal).unwrap()
        } else {
            let s = additive_composite(
                qv.as_tensor(),
                kv.as_tensor(),
                &wv.as_tensor().unsqueeze(1).unwrap(),
            )
            .unwrap();
            if causal {
                let m: Vec<f64> = (0..T * T)
                    .map(|x| if x % T <= x / T { 1.0 } else { 0.0 })
                    .collect();
                let m = Tensor::from_vec(m, (T, T), &Device::Cpu)
                    .unwrap()
                    .to_dtype(qa.dtype())
                    .unwrap();
                s.broadcast_mul(&m).unwrap()
            } else {
                s
            }
        };
        let grads = s.mul(g).unwrap().sum_all().unwrap().backward().unwrap();
        [
            s,
            grads.get(&qv).unwrap().clone(),
            grads.get(&kv).unwrap().clone(),
            grads.get(&wv).unwrap().clone(),
        ]
    }

    #[test]
    fn fused_matches_composite_in_value_and_gradients() {
        for causal in [false, true] {
            let (qa, kb, w, g) = inputs(DType::F64);
            let f = eval(&qa, &kb, &w, &g, true, causal);
            let c = eval(&qa, &kb, &w, &g, false, causal);
            for (name, (x, y)) in ["s", "∂qa", "∂kb", "∂w"].iter().zip(f.iter().zip(&c)) {
                let err = max_abs_diff(x, y);
                assert!(
                    err < 1e-12 * (1.0 + max_abs(y)),
                    "causal {causal}: {name} off by {err}"
                );
                assert!(max_abs(y) > 0.0);
            }
            // f32 (fast tanh) against the f64 reference
            let cast = |x: &Tensor| x.to_dtype(DType::F32).unwrap();
            let f32s = eval(&cast(&qa), &cast(&kb), &cast(&w), &cast(&g), true, causal);
            for (name, (x, y)) in ["s", "∂qa", "∂kb", "∂w"].iter().zip(f32s.iter().zip(&c)) {
                let err = max_abs_diff(x, y);
                assert!(
                    err < 2e-5 * (1.0 + max_abs(y)),
                    "f32, causal {causal}: {name} off by {err}"
                );
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let (qa, kb, w, g) = inputs(DType::F64);
        let loss = |qa: &Tensor, kb: &Tensor, w: &Tensor| -> f64 {
            additive_scores(qa, kb, w, true)
                .unwrap()
                .mul(&g)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let f = eval(&qa, &kb, &w, &g, true, true);
        let h = 1e-6;
        for (which, x) in [&qa, &kb, &w].into_iter().enumerate() {
            let flat: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
            let ad: Vec<f64> = f[which + 1].flatten_all().unwrap().to_vec1().unwrap();
            for i in (0..flat.len()).step_by(7) {
                let bump = |d: f64| {
                    let mut v = flat.clone();
                    v[i] += d;
                    Tensor::from_vec(v, x.shape(), &Device::Cpu).unwrap()
                };
                let args = |t: Tensor| match which {
                    0 => (t, kb.clone(), w.clone()),
                    1 => (qa.clone(), t, w.clone()),
                    _ => (qa.clone(), kb.clone(), t),
                };
                let (a, b, c) = args(bump(h));
                let up = loss(&a, &b, &c);
                let (a, b, c) = args(bump(-h));
                let fd = (up - loss(&a, &b, &c)) / (2.0 * h);
                assert!(
                    (fd - ad[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "input {which} entry {i}: autodiff {} vs fd {fd}",
                    ad[i]
                );
            }
        }
    }

    #[test]
    fn causal_scores_after_the_query_are_zero_and_the_rest_unchanged() {
        let (qa, kb, w, _) = inputs(DType::F64);
        let full = additive_scores(&qa, &kb, &w, false).unwrap();
        let causal = additive_scores(&qa, &kb, &w, true).unwrap();
        let (f, c): (Vec<f64>, Vec<f64>) = (
            full.flatten_all().unwrap().to_vec1().unwrap(),
            causal.flatten_all().unwrap().to_vec1().unwrap(),
        );
        for (idx, (x, y)) in f.iter().zip(&c).enumerate() {
            let (i, j) = ((idx / T) % T, idx % T);
            if j > i {
                assert_eq!(*y, 0.0);
            } else {
                assert_eq!(x, y, "({i}, {j})");
            }
        }
        assert!(f.iter().any(|v| *v != 0.0));
    }
}
