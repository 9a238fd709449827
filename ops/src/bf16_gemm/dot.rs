//! `vdpbf16ps` (AVX512-BF16): the instruction, and an exact scalar emulation of it.

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

/// Whether this CPU has AVX512-BF16 (and the active ISA level is AVX-512 or above).
pub fn hardware_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use bitgrad_engine::cpu::isa::{active, Isa};
        active() >= Isa::Avx512 && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`tile`] with the instruction: one `vdpbf16ps` per row and `k` pair, `A`'s pair broadcast.
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
