//! Fused cross-entropy for the CPU.
//!
//! The 33K-way output layer dominates a seed-preset step on the CPU. Written with candle's
//! composite ops, log-softmax and its backward make a dozen passes over the `[N, V]` logits,
//! each allocating a fresh 270 MB tensor. This op does the forward in two passes (max, then
//! Σ exp) and the backward in one (`softmax − onehot`, scaled), keeping each row's
//! log-sum-exp from the forward. Other devices and dtypes use the composite path.

use super::kernels::{fast_exp, LANES};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;

crate::multiversion! {
    /// max of a row, with 8 independent lanes so that it vectorises.
    pub(crate) fn row_max(row: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; LANES];
        let chunks = row.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for j in 0..LANES {
                acc[j] = acc[j].max(c[j]);
            }
        }
        rest.iter().fold(acc.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)), |a, &b| a.max(b))
    }
}

crate::multiversion! {
    /// Σ exp(z − m) of a row, with 8 independent partial sums so that it vectorises.
    pub(crate) fn row_sum_exp(row: &[f32], m: f32) -> f32 {
        let mut acc = [0f32; LANES];
        let chunks = row.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for j in 0..LANES {
                acc[j] += fast_exp(c[j] - m);
            }
        }
        acc.iter().sum::<f32>() + rest.iter().map(|&z| fast_exp(z - m)).sum::<f32>()
    }
}

crate::multiversion! {
    /// z ← exp(z − l)·g in place.
    pub(crate) fn row_softmax_scaled(z: &mut [f32], l: f32, g: f32) -> () {
        for x in z.iter_mut() {
            *x = fast_exp(*x - l) * g;
        }
    }
}

/// Rows handled per rayon task.
const ROWS_PER_TASK: usize = 16;

fn rows_of(l: &Layout) -> Result<(usize, usize)> {
    let dims = l.shape().dims();
    let v = *dims
        .last()
        .ok_or_else(|| candle_core::Error::Msg("logits need a last dim".into()))?;
    Ok((l.shape().elem_count() / v.max(1), v))
}

fn contiguous<'a, T>(s: &'a [T], l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("fused cross-entropy needs contiguous inputs"),
    }
}

/// Per-row NLL of `logits` `[…, V]` (f32) at `targets` `[…]` (u32).
struct FusedXent {
    lse: Mutex<Vec<f32>>,
}

impl CustomOp2 for FusedXent {
    fn name(&self) -> &'static str {
        "fused-xent"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(s1.as_slice::<f32>()?, l1)?;
        let t = contiguous(s2.as_slice::<u32>()?, l2)?;
        let (rows, v) = rows_of(l1)?;
        if t.len() != rows {
            candle_core::bail!("fused cross-entropy: {} targets for {rows} rows", t.len());
        }
        let mut loss = vec![0f32; rows];
        let mut lse = vec![0f32; rows];
        loss.par_chunks_mut(ROWS_PER_TASK)
            .zip(lse.par_chunks_mut(ROWS_PER_TASK))
            .enumerate()
            .try_for_each(|(c, (lo, ls))| -> Result<()> {
                for k in 0..lo.len() {
                    let i = c * ROWS_PER_TASK + k;
                    let row = &x[i * v..(i + 1) * v];
                    let m = row_max(row);
                    let s = row_sum_exp(row, m);
                    let l = m + s.ln();
                    let ti = t[i] as usize;
                    if ti >= v {
                        candle_core::bail!("target id {ti} out of range for {v} classes");
                    }
                    ls[k] = l;
                    lo[k] = l - row[ti];
                }
                Ok(())
            })?;
        *self.lse.lock().expect("lse lock") = lse;
        Ok((
            CpuStorage::F32(loss),
            Shape::from(&l1.shape().dims()[..l1.shape().rank() - 1]),
        ))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let lse = std::mem::take(&mut *self.lse.lock().expect("lse lock"));
        let g = logits.apply_op3_no_bwd(targets, &grad.contiguous()?, &XentGrad { lse })?;
        Ok((Some(g), None))
    }
}

/// `(softmax(x) − onehot(t)) · g` row by row.
struct XentGrad {
    lse: Vec<f32>,
}

impl CustomOp3 for XentGrad {
    fn name(&self) -> &'static str {
        "fused-xent-grad"
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
        let x = contiguous(s1.as_slice::<f32>()?, l1)?;
        let t = contiguous(s2.as_slice::<u32>()?, l2)?;
        let g = contiguous(s3.as_slice::<f32>()?, l3)?;
        let (rows, v) = rows_of(l1)?;
        if self.lse.len() != rows || g.len() != rows {
            candle_core::bail!("fused cross-entropy backward called without a matching forward");
        }
        let mut out = vec![0f32; rows * v];
        out.par_chunks_mut(v * ROWS_PER_TASK)
            .enumerate()
            .for_each(|(c, chunk)| {
                for (k, orow) in chunk.chunks_mut(v).enumerate() {
                    let i = c * ROWS_PER_TASK + k;
                    let row = &x[i * v..(i + 1) * v];
                    let (l, gi) = (self.lse[i], g[i]);
                    orow.copy_from_slice(row);
                    row_softmax_scaled(orow, l, gi);
                    orow[t[i] as usize] -= gi;
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Per-row negative log-likelihood `[…]` of `logits` `[…, V]` at `targets` `[…]` (u32),
/// differentiable w.r.t. the logits. Fused on the CPU for f32; composite elsewhere.
pub fn nll_rows(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if logits.device().is_cpu() && logits.dtype() == DType::F32 {
        let op = FusedXent {
            lse: Mutex::new(Vec::new()),
        };
        return logits.contiguous()?.apply_op2(&targets.contiguous()?, op);
    }
    let logp = candle_nn::ops::log_softmax(logits, candle_core::D::Minus1)?;
    logp.gather(
        &targets.unsqueeze(candle_core::D::Minus1)?,
        candle_core::D::Minus1,
    )?
    .squeeze(candle_core::D::Minus1)?
    .neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_matches_composite_in_value_and_gradient() {
        let dev = Device::Cpu;
        let (r, n, v) = (2, 7, 53);
        let x = Tensor::randn(0f32, 3.0, (r, n, v), &dev).unwrap();
        let t = Tensor::from_vec(
            (0..(r * n) as u32)
                .map(|i| (i * 17) % v as u32)
                .collect::<Vec<_>>(),
            (r, n),
            &dev,
        )
        .unwrap();
        let w = Tensor::randn(0f32, 1.0, (r, n), &dev).unwrap();
        // fused (f32 on the CPU)
        let xv = Var::from_tensor(&x).unwrap();
        let fused = nll_rows(xv.as_tensor(), &t).unwrap();
        let gf = fused
            .mul(&w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(&xv)
            .unwrap()
            .clone();
        // composite reference in f64
        let x64 = Var::from_tensor(&x.to_dtype(DType::F64).unwrap()).unwrap();
        let comp = nll_rows(x64.as_tensor(), &t).unwrap();
        let gc = comp
            .mul(&w.to_dtype(DType::F64).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(&x64)
            .unwrap()
            .clone();
        let d = |a: &Tensor, b: &Tensor| -> f64 {
            (a.to_dtype(DType::F64).unwrap() - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        assert!(
            d(&fused, &comp) < 1e-5,
            "loss differs by {}",
            d(&fused, &comp)
        );
        assert!(d(&gf, &gc) < 1e-6, "gradient differs by {}", d(&gf, &gc));
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = fast_exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(fast_exp(0.0), 1.0);
        assert!(fast_exp(-1000.0) < 1e-37 && fast_exp(-1000.0) >= 0.0);
    }

    #[test]
    fn out_of_range_target_is_an_error_not_a_panic() {
        let x = Tensor::zeros((1, 2, 4), DType::F32, &Device::Cpu).unwrap();
        let t = Tensor::from_vec(vec![1u32, 9], (1, 2), &Device::Cpu).unwrap();
        assert!(nll_rows(&x, &t).is_err());
    }
}
