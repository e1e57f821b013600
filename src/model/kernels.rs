//! Small CPU kernels shared by the fused ops: a vectorisable `exp`, and a macro that
//! compiles a loop for AVX2+FMA with a baseline fallback chosen at run time.

/// e^x for f32 in a form the compiler vectorises (libm's `expf` does not): range
/// reduction x = k·ln2 + r, a degree-7 Taylor polynomial on |r| ≤ ln2/2 (relative error
/// below 2e-7 over the clamped range), and 2^k built from the exponent bits. Inputs below
/// −87 give ≈ 1.6e-38 instead of a denormal or 0, which no sum here can see.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding and subtracting rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let k = (x * LOG2E + ROUND) - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // SAFETY: k is an integer in [-126, 127] after the clamp, so the cast is exact.
    let ki: i32 = unsafe { k.to_int_unchecked() };
    let scale = f32::from_bits(((ki + 127) as u32) << 23);
    p * scale
}

/// The f32 data of a contiguous CPU tensor (custom ops use it to read their inputs).
pub(crate) fn contiguous_f32<'a>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
) -> candle_core::Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("this fused op needs contiguous inputs"),
    }
}

/// Independent accumulators per reduction, so that reductions vectorise.
pub const LANES: usize = 8;

/// Defines a row kernel twice: compiled for AVX2+FMA (picked at run time when the CPU has
/// them) and for the baseline target. The crate is built for baseline x86-64, where these
/// loops would get only 4-lane SSE2 and no FMA.
#[macro_export]
#[doc(hidden)]
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        $(#[$m])*
        #[inline]
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn imp($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($arg: $ty),*) -> $ret { imp($($arg),*) }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports the features `fast` was compiled for.
                    return unsafe { fast($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}

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

/// Largest absolute elementwise difference of two tensors (compared in f64); for tests.
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f64 {
    let a = a.to_dtype(candle_core::DType::F64).unwrap();
    let b = b.to_dtype(candle_core::DType::F64).unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn row_kernels_match_scalar_versions() {
        let row: Vec<f32> = (0..101)
            .map(|i| ((i * 37) % 23) as f32 * 0.37 - 4.0)
            .collect();
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(row_max(&row), m);
        let s: f64 = row.iter().map(|&z| ((z - m) as f64).exp()).sum();
        assert!((row_sum_exp(&row, m) as f64 / s - 1.0).abs() < 1e-6);
        let mut z = row.clone();
        row_softmax_scaled(&mut z, 0.5, 2.0);
        for (o, &v) in z.iter().zip(&row) {
            let want = ((v - 0.5) as f64).exp() * 2.0;
            assert!((*o as f64 / want - 1.0).abs() < 1e-6);
        }
    }
}
