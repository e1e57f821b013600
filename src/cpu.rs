//! CPU set-up: flush-to-zero for denormal floats on every compute thread.
//!
//! Gradients of the large output layer contain denormal floats; on x86-64 every operation
//! on them takes a slow microcode path (measured: a PyTorch loop of the seed preset ran
//! 7× slower without flushing). Training results are unaffected at f32 precision.

/// FTZ (bit 15) and DAZ (bit 6) of MXCSR.
#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

/// The calling thread's MXCSR.
#[cfg(target_arch = "x86_64")]
fn mxcsr() -> u32 {
    let mut csr: u32 = 0;
    // SAFETY: reading MXCSR has no effect.
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack)) };
    csr
}

/// Sets FTZ (flush-to-zero) and DAZ (denormals-are-zero) on the calling thread.
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    {
        let csr = mxcsr() | FTZ_DAZ;
        // SAFETY: writing MXCSR only changes how this thread rounds subnormals.
        unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack)) };
    }
}

/// Whether FTZ and DAZ are set on the calling thread ([`flush_denormals`]); None where
/// there is no such control register to read (not x86-64).
pub fn denormals_flushed() -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        Some(mxcsr() & FTZ_DAZ == FTZ_DAZ)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Tells mimalloc to keep freed memory mapped: each step allocates and frees several
/// 100 MB tensors, and returning them to the OS makes the kernel zero fresh pages every
/// step (measured: ~25 % of a seed-preset step before this).
pub fn keep_freed_memory() {
    // mi_option_purge_delay (15 in mimalloc 2.x's enum): -1 = never purge.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: setting an allocator option is thread-safe and takes effect for later frees.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Builds rayon's global pool with `threads` threads that flush denormals, flushes on the
/// calling thread too, and keeps freed memory mapped. Safe to call more than once (later calls only flush).
///
/// Candle's own elementwise and reduction ops run on one thread (`CANDLE_NUM_THREADS=1`
/// unless set): at these sizes they gained nothing from a second thread, and their barrier
/// pool spins on every op, which slowed the backward by a third while another thread
/// computes the output layer's embedding gradient ([`crate::model::lm_head::DeferredEmbGrad`];
/// seed preset, R = 1: backward 133–153 ms with candle's pool of 2, 94–101 ms without).
/// The GEMMs and the fused kernels still use `threads` threads. Results do not depend on
/// candle's thread count.
pub fn init_threads(threads: usize) {
    flush_denormals();
    keep_freed_memory();
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .start_handler(|_| flush_denormals())
        .build_global();
}

/// The value of the first `/proc/cpuinfo` line starting with `key` (the first core's),
/// whitespace-normalised.
fn cpuinfo_field(key: &str) -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The CPU's model name (`model name` in `/proc/cpuinfo`), else the architecture.
pub fn cpu_model() -> String {
    cpuinfo_field("model name")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{} (model unknown)", std::env::consts::ARCH))
}

/// The hardware recorded with a CPU run: [`cpu_model`], with ` [AVX-512 GEMM]` appended
/// when the GEMM kernels are the AVX-512 ones ([`gemm_isa`]), whose rounding differs from
/// the AVX2 kernels' on the same CPU (so that runs of both kinds count as different
/// hardware in the reports' mixed-hardware checks).
pub fn hardware() -> String {
    match gemm_isa() {
        "avx512f" => format!("{} [AVX-512 GEMM]", cpu_model()),
        _ => cpu_model(),
    }
}

/// The GPU's name as `nvidia-smi` reports it for `ordinal`, else `cuda:ORDINAL`.
pub fn gpu_name(ordinal: usize) -> String {
    std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name",
            "--format=csv,noheader",
            "-i",
            &ordinal.to_string(),
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("cuda:{ordinal} (name unknown)"))
}

/// The f32 FMA peak of `threads` cores in GFLOP/s: cores × [`flops_per_cycle`] × the clock
/// `/proc/cpuinfo` reports (`cpu MHz`, the first core's). Turbo clocks above the reported
/// one make it low, AVX-512 clock offsets high. `None` when the clock is not reported.
pub fn peak_gflops(threads: usize) -> Option<f64> {
    Some(threads as f64 * flops_per_cycle() * cpu_mhz()? / 1000.0)
}

/// The f32 FMA rate `threads` cores sustain now, in GFLOP/s, measured: each thread runs
/// 12 independent chains of FMAs on registers at the GEMM kernels' vector width
/// ([`gemm_isa`]), best of 3 trials of about 0.1 s. Unlike [`peak_gflops`] it sees the clock
/// the cores actually run at (turbo, AVX-512 offsets, a busy host) and the number of FMA
/// units, which CPUID does not report. `None` off x86-64 or without FMA.
pub fn measured_peak_gflops(threads: usize) -> Option<f64> {
    let threads = threads.max(1);
    let lanes = match gemm_isa() {
        "avx512f" => 16,
        "avx2+fma" => 8,
        _ => return None,
    };
    // calibrate the iteration count to ~0.1 s on one thread
    let mut iters = 1u64 << 16;
    loop {
        let t = std::time::Instant::now();
        std::hint::black_box(fma_chains(lanes, iters)?);
        let el = t.elapsed().as_secs_f64();
        if el > 0.02 || iters > 1 << 34 {
            iters = ((iters as f64) * 0.1 / el.max(1e-9)).max(1.0) as u64;
            break;
        }
        iters *= 4;
    }
    let mut best = 0f64;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| s.spawn(move || std::hint::black_box(fma_chains(lanes, iters))))
                .collect();
            hs.into_iter().for_each(|h| {
                let _ = h.join();
            });
        });
        let el = t.elapsed().as_secs_f64();
        let flops = threads as f64 * iters as f64 * FMA_CHAINS as f64 * lanes as f64 * 2.0;
        best = best.max(flops / el / 1e9);
    }
    Some(best)
}

/// Independent FMA chains per thread in [`measured_peak_gflops`]: enough to cover an FMA
/// latency of 4–6 cycles on two units.
const FMA_CHAINS: usize = 12;

/// Runs `iters` rounds of [`FMA_CHAINS`] FMAs `x ← x·a + b` on vectors of `lanes` f32 and
/// returns the sum of the final lanes (so that the work cannot be optimised away and its
/// result can be checked). `None` when this CPU lacks the ISA.
fn fma_chains(lanes: usize, iters: u64) -> Option<f32> {
    #[cfg(target_arch = "x86_64")]
    {
        if lanes == 16 && std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return Some(unsafe { fma_chains_avx512(iters) });
        }
        if lanes == 8
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA.
            return Some(unsafe { fma_chains_avx2(iters) });
        }
    }
    let _ = (lanes, iters);
    None
}

/// The multiplier and addend of the FMA chains (x stays near 1 for any iteration count:
/// the fixed point of x·a + b is b / (1 − a) = 1).
const FMA_A: f32 = 0.999_999;
const FMA_B: f32 = 1.0 - FMA_A;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_avx512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm512_set1_ps(FMA_A), _mm512_set1_ps(FMA_B));
    let mut acc = [_mm512_set1_ps(2.0); FMA_CHAINS];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    acc.iter().map(|&x| _mm512_reduce_add_ps(x)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm256_set1_ps(FMA_A), _mm256_set1_ps(FMA_B));
    let mut acc = [_mm256_set1_ps(2.0); FMA_CHAINS];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let mut out = 0.0;
    for x in acc {
        let mut v = [0f32; 8];
        _mm256_storeu_ps(v.as_mut_ptr(), x);
        out += v.iter().sum::<f32>();
    }
    out
}

/// The clock `/proc/cpuinfo` reports for the first core, in MHz.
pub fn cpu_mhz() -> Option<f64> {
    cpuinfo_field("cpu MHz")?.parse().ok()
}

/// The widest f32 FMA vector ISA of this CPU: `"avx512f"`, `"avx2+fma"` or `"baseline"`.
pub fn vector_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return "avx2+fma";
        }
    }
    "baseline"
}

/// The ISA of the GEMM kernels (the `gemm` crate's, which candle's CPU matmul and the fused
/// output layer call): AVX-512 where the CPU has it and the build has the `avx512` feature
/// (on by default), else AVX2+FMA, else baseline.
pub fn gemm_isa() -> &'static str {
    match vector_isa() {
        "avx512f" if cfg!(feature = "avx512") => "avx512f",
        "avx512f" | "avx2+fma" => "avx2+fma",
        _ => "baseline",
    }
}

/// f32 FLOPs per cycle per core at the FMA peak of this CPU's widest vector ISA
/// ([`vector_isa`]), counting an FMA as two FLOPs and two FMA units per core:
/// - AVX-512: 64 (two 16-lane units, as on Intel Xeon Gold/Platinum since Skylake-SP and
///   Sapphire Rapids, and AMD Zen 5 desktop/server parts); 32 on AMD Zen 4 (family 25),
///   which executes 512-bit FMAs in two halves. Parts with one 512-bit unit (some Xeon
///   Silver/Bronze, Intel client cores from Ice Lake to Rocket Lake, Xeon E/W) or Zen 5's
///   256-bit mobile datapath peak at half this, which CPUID does not reveal (and virtual
///   machines may mask the model), so the estimate can be 2× high there;
/// - AVX2 + FMA: 32 (two 8-lane units);
/// - otherwise 8 (SSE2: 4 lanes, separate add and multiply).
pub fn flops_per_cycle() -> f64 {
    match vector_isa() {
        "avx512f" if amd_family() == Some(25) => 32.0,
        "avx512f" => 64.0,
        "avx2+fma" => 32.0,
        _ => 8.0,
    }
}

/// The CPU family of an AMD CPU (`cpu family` in `/proc/cpuinfo`), `None` for other vendors.
fn amd_family() -> Option<u32> {
    if cpuinfo_field("vendor_id")? != "AuthenticAMD" {
        return None;
    }
    cpuinfo_field("cpu family")?.parse().ok()
}

#[cfg(test)]
mod tests {
    /// The peak probe really runs its FMAs: its result is the scalar recurrence's, and
    /// the rate it reports is positive.
    #[test]
    fn fma_probe_computes_the_recurrence() {
        // enough rounds to move x from 2 to ~1.35 (a^n ≈ e^{-1.05}): a missing chain or a
        // wrong round count changes the sum by percents, far above the tolerance
        let iters = 1 << 20;
        let mut x = 2f32;
        for _ in 0..iters {
            x = x.mul_add(super::FMA_A, super::FMA_B);
        }
        for lanes in [8, 16] {
            if let Some(got) = super::fma_chains(lanes, iters) {
                let want = x * (lanes * super::FMA_CHAINS) as f32;
                assert!(
                    (got - want).abs() <= 1e-5 * want,
                    "{lanes} lanes: {got} vs {want}"
                );
            }
        }
        if super::gemm_isa() != "baseline" {
            let p = super::measured_peak_gflops(1).unwrap();
            assert!(p.is_finite() && p > 0.0, "{p}");
        }
    }

    #[test]
    fn denormals_flush_to_zero_after_init() {
        super::flush_denormals();
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        let half = std::hint::black_box(tiny / 2.0);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(half, 0.0);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = half;
    }
}
