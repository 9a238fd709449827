//! The FMA peak of one core at each ISA level, measured: the roof the convolution benchmarks
//! report their "% of peak" against.

use std::time::Instant;

#[cfg(target_arch = "aarch64")]
use super::simd::Neon;
#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};
use super::simd::{Scalar, Simd};
use bitgrad_engine::cpu::isa::Isa;

/// Independent accumulator chains: more than FMA latency × FMA ports (4 × 2 on current x86
/// cores; NEON's 8-lane pairs make 24 chains of 4 lanes, enough for 4 FMLA pipes), so the loop
/// is bound by throughput, not latency.
const CHAINS: usize = 12;

/// GFLOP/s of one thread running only multiply-adds at `isa` (which this CPU must have):
/// the best of 5 runs of about 10 ms each. Scalar means the 8-lane portable code (not fused).
pub fn fma_peak_gflops(isa: Isa) -> f64 {
    let iters = 200_000usize;
    (0..5)
        .map(|_| {
            let t = Instant::now();
            // SAFETY: each ISA's loop runs only when the CPU has it (the caller's contract,
            // checked by `isa::force` / `isa::active`).
            let sink = unsafe {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => fma_avx512(iters),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => fma_avx2(iters),
                    #[cfg(target_arch = "aarch64")]
                    Isa::Neon => fma_loop::<Neon>(iters),
                    _ => fma_loop::<Scalar>(iters),
                }
            };
            std::hint::black_box(sink);
            let lanes = match isa {
                Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => 16,
                _ => 8,
            };
            (iters * CHAINS * lanes * 2) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn fma_avx512(iters: usize) -> f32 {
    fma_loop::<Avx512>(iters)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_avx2(iters: usize) -> f32 {
    fma_loop::<Avx2>(iters)
}

#[inline(always)]
unsafe fn fma_loop<S: Simd>(iters: usize) -> f32 {
    let (a, b) = (S::splat(0.999_999), S::splat(1e-7));
    let mut acc = [S::splat(1.0); CHAINS];
    // (No black_box inside the loop: it would spill the chains to memory every iteration.
    // Floating-point chains cannot be folded by the compiler, and the sum is returned.)
    for _ in 0..std::hint::black_box(iters) {
        for v in acc.iter_mut() {
            *v = S::fma(*v, a, b);
        }
    }
    let mut out = [0.0f32; 16];
    let mut sum = S::zero();
    for v in acc {
        sum = S::add(sum, v);
    }
    S::store(out.as_mut_ptr(), sum, S::LANES);
    out[0]
}
