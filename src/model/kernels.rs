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
    let t = x * LOG2E + ROUND;
    let k = t - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // k as an integer, read from t's mantissa (t ∈ [2^23, 2^24) holds 1.5·2^23 + k in its
    // low bits): exact for the clamped range and defined for every input (NaN gives NaN
    // through p), unlike a float-to-int cast without checks.
    let ki = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let scale = f32::from_bits(((ki + 127) as u32) << 23);
    p * scale
}

/// ln x for finite f32 x > 0 in a form the compiler vectorises: x = m·2^k with
/// m ∈ [√½, √2), ln m = 2·atanh((m − 1)/(m + 1)) by its odd series to u⁹ (|u| ≤ 0.172;
/// error below 3e-7 relative to max(|ln x|, 1), tested over 1e-30…1e30). Subnormal inputs are not handled: callers clamp to ≥ 1e-30.
#[inline(always)]
pub fn fast_ln(x: f32) -> f32 {
    const LN2: f32 = std::f32::consts::LN_2;
    const SQRT2: f32 = std::f32::consts::SQRT_2;
    let bits = x.to_bits();
    let k = ((bits >> 23) & 0xff) as i32 - 127;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000); // [1, 2)
    let big = m > SQRT2;
    let m = if big { m * 0.5 } else { m };
    let k = if big { k + 1 } else { k } as f32;
    let u = (m - 1.0) / (m + 1.0);
    let u2 = u * u;
    let series = 1.0 + u2 * (1.0 / 3.0 + u2 * (1.0 / 5.0 + u2 * (1.0 / 7.0 + u2 * (1.0 / 9.0))));
    k * LN2 + 2.0 * u * series
}

/// e^x for f64 in a form the compiler vectorises (libm's `exp` is a call per element):
/// range reduction x = k·ln2 + r with fdlibm's two-part ln2 (k·ln2_hi is exact), a
/// degree-13 Taylor polynomial on |r| ≤ ln2/2 (truncation below 5e-18; measured relative
/// error below 4e-16 against the standard library, see the tests), and 2^k from the
/// exponent bits. Inputs are clamped to [−708, 709] (≈ 3e-308 … 8e307).
#[inline(always)]
pub fn fast_exp_f64(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    // fdlibm's ln2_hi (low 32 bits zero) and ln2_lo
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5·2^52
    let x = x.clamp(-708.0, 709.0);
    let t = x * LOG2E + ROUND;
    let k = t - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    const C: [f64; 14] = [
        1.0,
        1.0,
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5_040.0,
        1.0 / 40_320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
        1.0 / 6_227_020_800.0,
    ];
    let mut poly = C[13];
    for &c in C[..13].iter().rev() {
        poly = poly * r + c;
    }
    // k from t's mantissa, as in `fast_exp`.
    let ki = (t.to_bits() as i64).wrapping_sub(ROUND.to_bits() as i64);
    let scale = f64::from_bits(((ki + 1023) as u64) << 52);
    poly * scale
}

/// ln x for finite normal f64 x > 0 in a form the compiler vectorises: x = m·2^k with
/// m ∈ [√½, √2), ln m = 2·atanh((m − 1)/(m + 1)) by its odd series to u²¹ (|u| ≤ 0.172,
/// truncation below 2e-17; measured error below 4e-16 relative to max(|ln x|, 1)). The
/// exponent is turned into a float through the bits of 2^52 + k (no 64-bit integer
/// conversion, which AVX2 lacks). Callers clamp to ≥ 1e-300.
#[inline(always)]
pub fn fast_ln_f64(x: f64) -> f64 {
    // NaN, ±∞, 0, negatives and subnormals would give finite garbage, not an error.
    debug_assert!(
        (f64::MIN_POSITIVE..f64::INFINITY).contains(&x),
        "fast_ln_f64({x})"
    );
    const LN2: f64 = std::f64::consts::LN_2;
    const SQRT2: f64 = std::f64::consts::SQRT_2;
    const TWO52: f64 = 4_503_599_627_370_496.0;
    let bits = x.to_bits();
    let biased = f64::from_bits(TWO52.to_bits() | (bits >> 52)) - TWO52;
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000); // [1, 2)
    let big = m > SQRT2;
    let m = if big { m * 0.5 } else { m };
    let k = biased - if big { 1022.0 } else { 1023.0 };
    let u = (m - 1.0) / (m + 1.0);
    let u2 = u * u;
    let mut series = 1.0 / 21.0;
    for n in (0..10).rev() {
        series = series * u2 + 1.0 / (2 * n + 1) as f64;
    }
    k * LN2 + 2.0 * u * series
}

/// tanh x = 1 − 2/(e^{2x} + 1) from [`fast_exp`] (absolute error below 3e-7).
#[inline(always)]
pub fn fast_tanh(x: f32) -> f32 {
    1.0 - 2.0 / (fast_exp(2.0 * x) + 1.0)
}

/// The float types the fused kernels are written for (candle's `WithDType` gives the
/// arithmetic, `from_f64`/`to_f64` and the storage conversions): f32 with the vectorisable
/// [`fast_exp`], [`fast_ln`] and [`fast_tanh`] (training), f64 with the standard library's
/// functions (the finite-difference gradient checks).
pub(crate) trait Real: candle_core::WithDType + std::ops::Neg<Output = Self> {
    const ZERO: Self;
    const ONE: Self;
    /// Relative machine epsilon.
    const EPS: Self;
    /// The smallest argument passed to [`Real::ln`] (keeps subnormals out).
    const TINY: Self;
    /// The largest finite value.
    const HUGE: Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn tanh(self) -> Self;
    /// √x (the instruction for both types, which vectorises).
    fn sqrt(self) -> Self;
    /// e^x in f64 for the f64 sums of an f32 kernel: [`fast_exp_f64`] for f32 (training),
    /// the standard library's for f64 (the gradient checks).
    fn exp64(x: f64) -> f64;
    /// ln x in f64, as [`Real::exp64`]: [`fast_ln_f64`] for f32, the standard library's
    /// for f64.
    fn ln64(x: f64) -> f64;
    /// The data of a contiguous CPU tensor of this dtype.
    fn slice<'a>(
        s: &'a candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<&'a [Self]> {
        contiguous(s, l)
    }
    /// A CPU storage holding `v`.
    fn storage(v: Vec<Self>) -> candle_core::CpuStorage {
        Self::to_cpu_storage_owned(v)
    }
}

impl Real for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
    const EPS: f32 = f32::EPSILON;
    const TINY: f32 = 1e-30;
    const HUGE: f32 = f32::MAX;
    #[inline(always)]
    fn exp(self) -> f32 {
        fast_exp(self)
    }
    #[inline(always)]
    fn ln(self) -> f32 {
        fast_ln(self)
    }
    #[inline(always)]
    fn tanh(self) -> f32 {
        fast_tanh(self)
    }
    #[inline(always)]
    fn sqrt(self) -> f32 {
        f32::sqrt(self)
    }
    #[inline(always)]
    fn exp64(x: f64) -> f64 {
        fast_exp_f64(x)
    }
    #[inline(always)]
    fn ln64(x: f64) -> f64 {
        fast_ln_f64(x)
    }
}

impl Real for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
    const EPS: f64 = f64::EPSILON;
    const TINY: f64 = 1e-300;
    const HUGE: f64 = f64::MAX;
    #[inline(always)]
    fn exp(self) -> f64 {
        f64::exp(self)
    }
    #[inline(always)]
    fn ln(self) -> f64 {
        f64::ln(self)
    }
    #[inline(always)]
    fn tanh(self) -> f64 {
        f64::tanh(self)
    }
    #[inline(always)]
    fn sqrt(self) -> f64 {
        f64::sqrt(self)
    }
    #[inline(always)]
    fn exp64(x: f64) -> f64 {
        x.exp()
    }
    #[inline(always)]
    fn ln64(x: f64) -> f64 {
        x.ln()
    }
}

/// The maximum of a row of logits, or `None` when the row holds NaN or +∞ (−∞ is a valid,
/// if unusual, mask value): the fused normalizers write such a row as NaN, so that the
/// training step's finiteness check sees it.
#[inline(always)]
pub(crate) fn finite_row_max<F: Real>(row: &[F]) -> Option<F> {
    let mut m = row[0];
    let mut finite = true;
    for &v in row {
        if v > m {
            m = v;
        }
        finite &= v <= F::HUGE;
    }
    finite.then_some(m)
}

/// Runs `f` over `rows` rows of `width` values of `out` (with the matching rows of the
/// inputs, by row index), in parallel chunks when the current rayon pool has more than
/// one thread (an executor job's or a replica group's pool, else the global one).
pub(crate) fn for_row_chunks<T: Send>(
    out: &mut [T],
    width: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    use rayon::prelude::*;
    let rows = out.len().checked_div(width).unwrap_or(0);
    let threads = rayon::current_num_threads().max(1);
    if threads == 1 || rows < 2 {
        f(0, out);
        return;
    }
    // A few chunks per thread so that uneven rows (causal masks) balance.
    let per = rows.div_ceil(threads * 4).max(1);
    out.par_chunks_mut(per * width)
        .enumerate()
        .for_each(|(c, chunk)| f(c * per, chunk));
}

/// Whether `EVOATTN_REFERENCE_KERNELS=1` asks for the composite (candle-op) α-entmax,
/// sparsemax, 1.5-entmax and additive attention instead of the fused CPU ops, to check the fused ops' results
/// against them (`evoattn train`, `evoattn bench`); `evoattn run` refuses it, because unit
/// ids name the fused kernels ([`crate::version::kernel_revision`]).
pub fn reference_kernels() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("EVOATTN_REFERENCE_KERNELS").is_some_and(|v| v == "1"))
}

/// The data of a contiguous CPU tensor of dtype `T` (custom ops use it to read their inputs).
pub(crate) fn contiguous<'a, T: candle_core::WithDType>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<T>()?[a..b]),
        None => candle_core::bail!("this fused op needs contiguous inputs"),
    }
}

/// [`contiguous`] for f32.
pub(crate) fn contiguous_f32<'a>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
) -> candle_core::Result<&'a [f32]> {
    contiguous(s, l)
}

/// Independent accumulators per reduction, so that reductions vectorise.
pub const LANES: usize = 8;

/// Defines a row kernel three times: compiled for AVX-512 (in builds with the default
/// `avx512` feature), for AVX2+FMA, and for the baseline target, the widest the CPU has
/// picked at run time. The crate is built for baseline x86-64, where these loops would get
/// only 4-lane SSE2 and no FMA. All compute bit-identical results: Rust never contracts
/// a·b + c into an FMA nor reorders float operations, so the ISA changes only how many
/// lanes run at once (tested against scalar code in
/// `row_kernels_are_bit_identical_to_scalar_code`; 40-step runs of three genes give the
/// same perplexities with and without the AVX-512 tier). The AVX-512 tier measured no
/// faster on an Intel Xeon (`benches/results/seed-rowkernels-avx512-2026-12-02.jsonl`)
/// and ahead in 5 of 6 alternating seed rounds on an AMD Zen 5, +4 % on average
/// (`seed-rowkernels-avx512-zen5-2026-12-02.jsonl`).
#[macro_export]
#[doc(hidden)]
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        $(#[$m])*
        #[inline]
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn imp($($arg: $ty),*) -> $ret $body
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn fast512($($arg: $ty),*) -> $ret { imp($($arg),*) }
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports the features `fast512` was compiled for.
                    return unsafe { fast512($($arg),*) };
                }
            }
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
        max_on(row, [f32::NEG_INFINITY; LANES])
    }
}

/// [`row_max`]'s loop from `acc`, the lane maxima of the chunks before `row`: row's
/// chunks, then the lanes folded, then its tail.
#[inline(always)]
fn max_on(row: &[f32], mut acc: [f32; LANES]) -> f32 {
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            acc[j] = acc[j].max(c[j]);
        }
    }
    rest.iter().fold(
        acc.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)),
        |a, &b| a.max(b),
    )
}

/// e^x like [`fast_exp`], with fused multiply-adds (`f32::mul_add`: one rounding per step,
/// so the same bits on every ISA; a library call per element on CPUs without FMA): range
/// reduction x = k·ln2 + r in two FMA steps, the degree-7 Taylor polynomial in Horner form
/// (relative error below 2e-7 over the clamped range, see the tests), 2^k from the exponent
/// bits. About 17 vector operations per lane group against [`fast_exp`]'s 28.
#[inline(always)]
pub fn fast_exp_fma(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x.mul_add(LOG2E, ROUND);
    let k = t - ROUND;
    let r = (-k).mul_add(LN2_HI, x);
    let r = (-k).mul_add(LN2_LO, r);
    let mut p: f32 = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p.mul_add(r, c);
    }
    let ki = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    p * f32::from_bits(((ki + 127) as u32) << 23)
}

/// Independent partial sums of [`row_exp_sum`]: two 16-lane vectors, so that the adds'
/// latency hides behind the exponentials on AVX-512 (four vectors on AVX2).
const EXP_SUM_LANES: usize = 32;

crate::multiversion! {
    /// z ← exp(z − m) in place, returning Σ exp(z − m) ([`EXP_SUM_LANES`] partial sums
    /// added pairwise, then the tail). The output layer's softmax is then one multiply.
    pub(crate) fn row_exp_sum(z: &mut [f32], m: f32) -> f32 {
        exp_sum_on(z, m, [0f32; EXP_SUM_LANES])
    }
}

/// [`row_exp_sum`]'s loop from `acc`, the partial sums of the chunks before `z`: z's
/// chunks, its tail, then the partial sums added pairwise and the tail's sum.
#[inline(always)]
fn exp_sum_on(z: &mut [f32], m: f32, mut acc: [f32; EXP_SUM_LANES]) -> f32 {
    let mut chunks = z.chunks_exact_mut(EXP_SUM_LANES);
    for c in &mut chunks {
        for j in 0..EXP_SUM_LANES {
            let e = fast_exp_fma(c[j] - m);
            c[j] = e;
            acc[j] += e;
        }
    }
    let mut tail = 0f32;
    for x in chunks.into_remainder() {
        let e = fast_exp_fma(*x - m);
        *x = e;
        tail += e;
    }
    let mut w = EXP_SUM_LANES;
    while w > 1 {
        w /= 2;
        for j in 0..w {
            acc[j] += acc[j + w];
        }
    }
    acc[0] + tail
}

crate::multiversion! {
    /// [`row_exp_sum`]`(z, m)` and [`row_max`]`(next)` in one loop, the two rows' chunks
    /// interleaved: `next` (the following row of a buffer too large for the caches) then
    /// comes from memory while `z`'s exponentials are computed, instead of in a pass of
    /// its own that waits on memory. Each result has the bits of its own call (the same
    /// operations in the same order per row; tested).
    pub(crate) fn row_exp_sum_next_max(z: &mut [f32], m: f32, next: &[f32]) -> (f32, f32) {
        let mut acc = [0f32; EXP_SUM_LANES];
        let mut mx = [f32::NEG_INFINITY; LANES];
        let both = z.len().min(next.len()) / EXP_SUM_LANES * EXP_SUM_LANES;
        for (c, n) in z[..both]
            .chunks_exact_mut(EXP_SUM_LANES)
            .zip(next[..both].chunks_exact(EXP_SUM_LANES))
        {
            for j in 0..EXP_SUM_LANES {
                let e = fast_exp_fma(c[j] - m);
                c[j] = e;
                acc[j] += e;
            }
            for j in 0..EXP_SUM_LANES {
                mx[j % LANES] = mx[j % LANES].max(n[j]);
            }
        }
        // z's chunks and tail after `both`, as in row_exp_sum
        let sum = exp_sum_on(&mut z[both..], m, acc);
        // next's chunks of LANES after `both` (a multiple of LANES) and its tail, as in
        // row_max
        (sum, max_on(&next[both..], mx))
    }
}

crate::multiversion! {
    /// z ← z·k in place.
    pub(crate) fn row_scale(z: &mut [f32], k: f32) -> () {
        for x in z.iter_mut() {
            *x *= k;
        }
    }
}

/// The bit patterns of an f32 tensor's values, for bit-identity tests.
#[cfg(test)]
pub(crate) fn bits(t: &candle_core::Tensor) -> Vec<u32> {
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    v.iter().map(|x| x.to_bits()).collect()
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

/// Largest absolute entry of a tensor (in f64); for tests.
#[cfg(test)]
pub(crate) fn max_abs(a: &candle_core::Tensor) -> f64 {
    a.to_dtype(candle_core::DType::F64)
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
        assert!(fast_exp(f32::NAN).is_nan());
        assert!(fast_exp(f32::INFINITY) > 1e38 && fast_exp(f32::NEG_INFINITY) >= 0.0);
    }

    #[test]
    fn fast_ln_and_tanh_are_accurate() {
        let mut worst = 0f64;
        let mut x = 1e-30f32;
        while x < 1e30 {
            let want = (x as f64).ln();
            let got = fast_ln(x) as f64;
            worst = worst.max((got - want).abs() / want.abs().max(1.0));
            x *= 1.0137;
        }
        assert!(worst < 3e-7, "ln: worst error {worst}");
        assert_eq!(fast_ln(1.0), 0.0);
        let mut worst = 0f64;
        let mut x = -30f32;
        while x < 30.0 {
            worst = worst.max((fast_tanh(x) as f64 - (x as f64).tanh()).abs());
            x += 0.00731;
        }
        assert!(worst < 3e-7, "tanh: worst error {worst}");
    }

    #[test]
    fn fast_f64_exp_and_ln_are_accurate() {
        let mut worst = 0f64;
        let mut x = -708.0f64;
        while x < 709.0 {
            let want = x.exp();
            worst = worst.max(((fast_exp_f64(x) - want) / want).abs());
            x += 0.00137;
        }
        assert!(worst < 4e-16, "exp: worst relative error {worst}");
        assert_eq!(fast_exp_f64(0.0), 1.0);
        assert!(fast_exp_f64(f64::NAN).is_nan());
        let mut worst = 0f64;
        let mut x = 1e-300f64;
        while x < 1e300 {
            let want = x.ln();
            worst = worst.max((fast_ln_f64(x) - want).abs() / want.abs().max(1.0));
            x *= 1.000137;
        }
        assert!(worst < 4e-16, "ln: worst error {worst}");
        assert_eq!(fast_ln_f64(1.0), 0.0);
        // the exponent extraction, at both ends of the normal range and across m = √2
        for x in [
            f64::MIN_POSITIVE,
            1e-300,
            0.5,
            std::f64::consts::SQRT_2,
            2.0,
            1e300,
        ] {
            assert!(
                (fast_ln_f64(x) - x.ln()).abs() <= 4e-16 * x.ln().abs().max(1.0),
                "{x}"
            );
        }
    }

    #[test]
    fn fast_exp_fma_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            worst = worst.max(((fast_exp_fma(x) as f64 - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 2e-7, "worst relative error {worst}");
        assert_eq!(fast_exp_fma(0.0), 1.0);
        assert!(fast_exp_fma(-1000.0) < 1e-37 && fast_exp_fma(-1000.0) >= 0.0);
        assert!(fast_exp_fma(f32::NAN).is_nan());
        assert!(fast_exp_fma(f32::INFINITY) > 1e38);
    }

    #[test]
    fn row_kernels_are_bit_identical_to_scalar_code() {
        // Scalar code compiled for the baseline target, in the kernels' order of operations:
        // the dispatched (widest-ISA) kernels must give the same bits.
        let row: Vec<f32> = (0..1001)
            .map(|i| ((i * 7919) % 1013) as f32 * 0.0137 - 6.0)
            .collect();
        let m = std::hint::black_box(row.iter().cloned().fold(f32::NEG_INFINITY, f32::max));
        assert_eq!(row_max(&row).to_bits(), m.to_bits());
        let mut acc = [0f32; EXP_SUM_LANES];
        let chunks = row.chunks_exact(EXP_SUM_LANES);
        let rest = chunks.remainder();
        let mut want_e = Vec::new();
        for c in chunks {
            for j in 0..EXP_SUM_LANES {
                let e = std::hint::black_box(fast_exp_fma(c[j] - m));
                want_e.push(e);
                acc[j] += e;
            }
        }
        let mut tail = 0f32;
        for &z in rest {
            let e = std::hint::black_box(fast_exp_fma(z - m));
            want_e.push(e);
            tail += e;
        }
        let mut w = EXP_SUM_LANES;
        while w > 1 {
            w /= 2;
            for j in 0..w {
                acc[j] += acc[j + w];
            }
        }
        let want = acc[0] + tail;
        let mut z = row.clone();
        assert_eq!(row_exp_sum(&mut z, m).to_bits(), want.to_bits());
        let got: Vec<u32> = z.iter().map(|x| x.to_bits()).collect();
        let want_bits: Vec<u32> = want_e.iter().map(|x| x.to_bits()).collect();
        assert_eq!(got, want_bits);
        // fused with the next row's max (rows of equal and of different lengths): the
        // same bits as the two calls
        for next_len in [row.len(), 37, 1200] {
            let next: Vec<f32> = (0..next_len)
                .map(|i| ((i * 104_729) % 997) as f32 * -0.011 + 3.0)
                .collect();
            let mut z2 = row.clone();
            let (s2, m2) = row_exp_sum_next_max(&mut z2, m, &next);
            assert_eq!(s2.to_bits(), want.to_bits(), "next of {next_len}");
            assert_eq!(m2.to_bits(), row_max(&next).to_bits(), "next of {next_len}");
            assert_eq!(
                z2.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                want_bits
            );
        }
        row_scale(&mut z, 0.03);
        for (o, &e) in z.iter().zip(&want_e) {
            assert_eq!(o.to_bits(), (std::hint::black_box(e) * 0.03).to_bits());
        }
    }

    #[test]
    fn row_kernels_match_f64() {
        let row: Vec<f32> = (0..101)
            .map(|i| ((i * 37) % 23) as f32 * 0.37 - 4.0)
            .collect();
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(row_max(&row), m);
        let s: f64 = row.iter().map(|&z| ((z - m) as f64).exp()).sum();
        let mut z = row.clone();
        assert!((row_exp_sum(&mut z, m) as f64 / s - 1.0).abs() < 1e-6);
        for (o, &v) in z.iter().zip(&row) {
            let want = ((v - m) as f64).exp();
            assert!((*o as f64 / want - 1.0).abs() < 3e-7);
        }
    }
}
