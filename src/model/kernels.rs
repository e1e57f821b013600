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
