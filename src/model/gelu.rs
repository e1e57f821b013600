//! GELU (tanh approximation) as one op with its own backward on the CPU.
//!
//! candle's f32 GELU and its backward call libm `tanhf`/`powf` per element and allocate
//! intermediates for the derivative; at the `cpu` preset that was ~15 % of a step. Here
//! y = ½x(1 + tanh u), u = √(2/π)(x + 0.044715x³), and
//! y' = ½(1 + tanh u) + ½x(1 − tanh²u)·√(2/π)(1 + 3·0.044715x²),
//! with tanh u = 1 − 2/(e^{2u} + 1) from the vectorisable [`fast_exp`].

use super::kernels::{contiguous_f32, fast_exp};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};

const C: f32 = 0.797_884_6; // √(2/π)
const A: f32 = 0.044_715;

#[inline(always)]
fn tanh_u(x: f32) -> f32 {
    let u = C * (x + A * x * x * x);
    1.0 - 2.0 / (fast_exp(2.0 * u) + 1.0)
}

crate::multiversion! {
    fn gelu_fwd(x: &[f32], y: &mut [f32]) -> () {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = 0.5 * v * (1.0 + tanh_u(v));
        }
    }
}

crate::multiversion! {
    fn gelu_bwd(x: &[f32], g: &[f32], out: &mut [f32]) -> () {
        for ((o, &v), &gi) in out.iter_mut().zip(x).zip(g) {
            let t = tanh_u(v);
            let d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * C * (1.0 + 3.0 * A * v * v);
            *o = gi * d;
        }
    }
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "fast-gelu"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)?;
        let mut y = vec![0f32; x.len()];
        gelu_fwd(x, &mut y);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluGrad)?))
    }
}

struct GeluGrad;

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "fast-gelu-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1)?;
        let g = contiguous_f32(s2, l2)?;
        let mut out = vec![0f32; x.len()];
        gelu_bwd(x, g, &mut out);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// GELU (tanh approximation): the fused op for f32 on the CPU, candle's `gelu` elsewhere.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(Gelu)
    } else {
        x.gelu()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::max_abs_diff;
    use candle_core::{Device, Var};

    #[test]
    fn matches_candle_gelu_in_value_and_gradient() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (7, 33), &dev).unwrap();
        let x = Tensor::cat(
            &[
                x,
                Tensor::new(&[[-60f32, -9.0, 0.0, 1e-4, 9.0, 60.0, 3.0]], &dev)
                    .unwrap()
                    .broadcast_as((1, 7))
                    .unwrap()
                    .pad_with_zeros(1, 0, 26)
                    .unwrap(),
            ],
            0,
        )
        .unwrap();
        let w = Tensor::randn(0f32, 1.0, x.shape(), &dev).unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let y = gelu(xv.as_tensor()).unwrap();
        let g = y
            .mul(&w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(&xv)
            .unwrap()
            .clone();
        // reference: candle's gelu in f64
        let x64 = Var::from_tensor(&x.to_dtype(DType::F64).unwrap()).unwrap();
        let y64 = x64.as_tensor().gelu().unwrap();
        let g64 = y64
            .mul(&w.to_dtype(DType::F64).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(&x64)
            .unwrap()
            .clone();
        assert!(
            max_abs_diff(&y, &y64) < 1e-5,
            "value {}",
            max_abs_diff(&y, &y64)
        );
        assert!(
            max_abs_diff(&g, &g64) < 1e-5,
            "gradient {}",
            max_abs_diff(&g, &g64)
        );
    }
}
