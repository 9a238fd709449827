//! `vdpbf16ps` (AVX512-BF16): the instruction, and an exact scalar emulation of it — per 16 × 16
//! tile (what the instruction tests use) and as the convolutions' 32 × 32 register block on the
//! same packed operands as AMX's ([`block_hardware`], [`block_emulated`]).

use super::amx::TILE_LEN;
use super::{from_bf16, TILE_M, TILE_N};

/// A denormal reads as a zero of its sign (the instruction's DAZ).
pub(crate) fn daz(x: f32) -> f32 {
    if x.is_subnormal() {
        f32::from_bits(x.to_bits() & 0x8000_0000)
    } else {
        x
    }
}

/// One lane of `vdpbf16ps`: `acc + a₁·b₁ + a₀·b₀` for the bf16 pairs `a = (a₀, a₁)` and `b`
/// (low half first), as the SDM specifies it: the odd products first, each a fused
/// multiply-add rounded to nearest even, denormal inputs as zero, denormal results flushed.
pub fn dpbf16_emulated(acc: f32, a: u32, b: u32) -> f32 {
    let (a0, a1) = (daz(from_bf16(a as u16)), daz(from_bf16((a >> 16) as u16)));
    let (b0, b1) = (daz(from_bf16(b as u16)), daz(from_bf16((b >> 16) as u16)));
    let t = daz(a1.mul_add(b1, daz(acc)));
    daz(a0.mul_add(b0, t))
}

/// The pair of `row`'s elements `2p, 2p + 1` as one dword (low half first).
fn pair(row: &[u16], p: usize) -> u32 {
    row[2 * p] as u32 | (row[2 * p + 1] as u32) << 16
}

/// One 16 × 16 tile of `C` from the packed `A` rows (`[16][kp]`) and `B` pairs (`[kp/2][16][2]`)
/// with the lane operation `op`: for each row, for each `k` pair in order, every column.
pub(crate) fn tile(c: &mut [f32; TILE_M * TILE_N], a: &[u16], b: &[u16], kp: usize, op: fn(f32, u32, u32) -> f32) {
    for i in 0..TILE_M {
        let arow = &a[i * kp..][..kp];
        for p in 0..kp / 2 {
            let ap = pair(arow, p);
            let brow = &b[p * TILE_N * 2..][..TILE_N * 2];
            for j in 0..TILE_N {
                c[i * TILE_N + j] = op(c[i * TILE_N + j], ap, pair(brow, j));
            }
        }
    }
}

/// Whether this CPU has AVX512-BF16 and the active ISA level is `avx512bf16` or above.
pub fn hardware_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use bitgrad_engine::cpu::isa::{active, Isa};
        active() >= Isa::Avx512Bf16 && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`tile`] with the instruction: one `vdpbf16ps` per row and `k` pair, `A`'s pair broadcast.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // the instruction is x86-only
pub(crate) fn tile_hardware(c: &mut [f32; TILE_M * TILE_N], a: &[u16], b: &[u16], kp: usize) {
    assert!(hardware_available(), "vdpbf16ps needs AVX512-BF16");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AVX512-BF16 (checked above); the loads read 16 dwords inside `b` (its
    // rows are 32 values) and 16 floats of `c`'s row.
    unsafe {
        tile_avx512bf16(c, a, b, kp)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile_avx512bf16(c: &mut [f32; TILE_M * TILE_N], a: &[u16], b: &[u16], kp: usize) {
    use std::arch::x86_64::*;
    for i in 0..TILE_M {
        let arow = &a[i * kp..][..kp];
        let mut acc = _mm512_loadu_ps(c[i * TILE_N..].as_ptr());
        for p in 0..kp / 2 {
            let av = _mm512_set1_epi32(pair(arow, p) as i32);
            let bv = _mm512_loadu_si512(b[p * TILE_N * 2..][..TILE_N * 2].as_ptr().cast());
            acc = _mm512_dpbf16_ps(
                acc,
                std::mem::transmute::<__m512i, __m512bh>(av),
                std::mem::transmute::<__m512i, __m512bh>(bv),
            );
        }
        _mm512_storeu_ps(c[i * TILE_N..].as_mut_ptr(), acc);
    }
}

/// The convolutions' 32 × 32 block `C = A·B` (`C += A·B` when `accumulate`) with vdpbf16ps
/// semantics, on the packed operands AMX reads (see [`super::amx::block_emulated`]: `a` as
/// `[ks][2 row tiles][16 rows][32 k]`, `b` as `[ks][2 column tiles][16 k-pairs][16 columns][2]`).
/// Each element of `C` is one chain: for every k-step, its 16 pairs in order, each one
/// [`dpbf16_emulated`] — the order [`block_hardware`] keeps, so the two agree bit for bit.
pub fn block_emulated(c: &mut [f32], ldc: usize, accumulate: bool, a: &[u16], b: &[u16], ksteps: usize) {
    super::amx::check_block(c, ldc, a, b, ksteps);
    for i in 0..32 {
        let (ti, r) = (i / 16, i % 16);
        for j in 0..32 {
            let (tj, q) = (j / 16, j % 16);
            let mut acc = if accumulate { c[i * ldc + j] } else { 0.0 };
            for ks in 0..ksteps {
                let arow = &a[(ks * 2 + ti) * TILE_LEN + r * 32..][..32];
                let btile = &b[(ks * 2 + tj) * TILE_LEN..][..TILE_LEN];
                for p in 0..16 {
                    acc = dpbf16_emulated(acc, pair(arow, p), pair(&btile[p * 32..], q));
                }
            }
            c[i * ldc + j] = acc;
        }
    }
}

/// [`block_emulated`] on the instruction: each 16 × 16 quarter of the block is sixteen zmm
/// accumulators (one per row), fed per k-pair by one load of `B`'s 16 pairs and one broadcast
/// of each row's `A` pair — 16 independent `vdpbf16ps` chains, enough to cover the
/// instruction's latency at one issue per cycle.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // the instruction is x86-only
pub fn block_hardware(c: &mut [f32], ldc: usize, accumulate: bool, a: &[u16], b: &[u16], ksteps: usize) {
    assert!(hardware_available(), "vdpbf16ps needs AVX512-BF16");
    super::amx::check_block(c, ldc, a, b, ksteps);
    #[cfg(target_arch = "x86_64")]
    for t in 0..4 {
        // SAFETY: the CPU has AVX512-BF16 (checked above); check_block guarantees 32 rows of
        // 32 floats at stride ldc in `c` and ksteps pairs of 1 KiB tiles in `a` and `b`.
        unsafe { quarter_avx512bf16(c, ldc, accumulate, a, b, ksteps, t / 2, t % 2) }
    }
}

/// One 16 × 16 quarter (row tile `ti`, column tile `tj`) of [`block_hardware`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn quarter_avx512bf16(
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    a: &[u16],
    b: &[u16],
    ksteps: usize,
    ti: usize,
    tj: usize,
) {
    use std::arch::x86_64::*;
    let cp = c.as_mut_ptr().add(ti * 16 * ldc + tj * 16);
    let mut acc = [_mm512_setzero_ps(); 16];
    if accumulate {
        for (r, v) in acc.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(cp.add(r * ldc));
        }
    }
    let (ap, bp) = (a.as_ptr() as *const i32, b.as_ptr() as *const i32);
    for ks in 0..ksteps {
        // Tiles as dwords (k-pairs): A's row r, pair p at r·16 + p; B's pair row p at p·16.
        let at = ap.add((ks * 2 + ti) * TILE_LEN / 2);
        let bt = bp.add((ks * 2 + tj) * TILE_LEN / 2);
        for p in 0..16 {
            let bv: __m512bh = std::mem::transmute(_mm512_loadu_si512(bt.add(p * 16).cast()));
            for (r, v) in acc.iter_mut().enumerate() {
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*at.add(r * 16 + p)));
                // B first, A's broadcast pair second: each lane takes the same two products, odd
                // first, as dpbf16_emulated(acc, a, b).
                *v = _mm512_dpbf16_ps(*v, bv, av);
            }
        }
    }
    for (r, v) in acc.iter().enumerate() {
        _mm512_storeu_ps(cp.add(r * ldc), *v);
    }
}

/// GFLOP/s of one thread running only `vdpbf16ps` on zmm registers (each: 16 lanes × 2
/// multiply-adds), 16 independent chains — the AVX512-BF16 roof the benchmarks report "% of
/// peak" against; `None` without AVX512-BF16. The best of 5 runs of about 10 ms.
pub fn peak_gflops() -> Option<f64> {
    if !hardware_available() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let iters = 200_000usize;
        let best = (0..5)
            .map(|_| {
                let t = std::time::Instant::now();
                // SAFETY: the CPU has AVX512-BF16 (checked above); registers only.
                std::hint::black_box(unsafe { chains_avx512bf16(std::hint::black_box(iters)) });
                (iters * 16 * 16 * 2 * 2) as f64 / t.elapsed().as_secs_f64() / 1e9
            })
            .fold(0.0, f64::max);
        Some(best)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn chains_avx512bf16(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 16];
    let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(0x3f80_3f80));
    let y: __m512bh = std::mem::transmute(_mm512_set1_epi32(0x0000_0000));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_dpbf16_ps(*v, x, y);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for v in acc {
        sum = _mm512_add_ps(sum, v);
    }
    _mm512_reduce_add_ps(sum)
}
