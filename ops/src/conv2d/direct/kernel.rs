//! The register-blocked batch-reduce micro-kernel of the direct convolution, and its per-ISA
//! entry points.
//!
//! One call computes a tile of `MR` output channels × 2 vectors of output pixels:
//!
//! ```text
//! acc[r][v] = Σ_{c < kc} Σ_{t ∈ taps} A[c][t][r] · B[c·plane + src[v] + taps[t] .. + len[v]]
//! ```
//!
//! `A` is the packed weight panel (`MR` values per (channel, tap), zero-padded to `MR` rows), `B`
//! the zero-padded input image, read in place: a tap is only an offset into it, so there are no
//! im2col columns — this is the batch-reduce GEMM (BRGEMM) of libxsmm and oneDNN, with the
//! (channel, tap) pairs as its list of blocks. The accumulators stay in registers for the whole
//! reduction and are written (or added to the output, for the second and later channel blocks)
//! once.
//!
//! Each output element is summed in one fixed order — channels in order, taps in order, one
//! fused multiply-add each — whatever the tile, thread or image it falls in, so results do not
//! depend on the thread count.

#[cfg(target_arch = "aarch64")]
use super::simd::Neon;
use super::simd::Scalar;
use super::simd::Simd;
#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};
use bitgrad_engine::cpu::isa::Isa;

/// Output-pixel vectors per tile.
pub(crate) const NV: usize = 2;

/// The arguments of one tile. Pointers, because the tiles of one output run on several threads
/// (each writes only its own rows and pixels).
pub(crate) struct Tile<'a> {
    /// The weight panel of this (channel block, output-channel block): `[kc][taps][MR]`.
    pub a: *const f32,
    /// The padded input at the first channel of the block.
    pub b: *const f32,
    /// Elements per padded channel plane.
    pub plane: usize,
    /// Channels in this block.
    pub kc: usize,
    /// The offset of each tap in the padded plane.
    pub taps: &'a [isize],
    /// The offset of each pixel vector in the padded plane (for tap offset 0).
    pub src: [isize; NV],
    /// The output of each pixel vector, at this tile's first output channel.
    pub dst: [*mut f32; NV],
    /// Elements between output channels.
    pub ldc: usize,
    /// Lanes used by each vector (0 = vector unused).
    pub len: [usize; NV],
    /// Output channels that exist (≤ MR; the panel's other rows are zero).
    pub mr: usize,
    /// Add to the output instead of overwriting it.
    pub accumulate: bool,
}

/// The register block and vector width for `isa`: `(MR, lanes)`.
pub(crate) fn blocking(isa: Isa) -> (usize, usize) {
    match isa {
        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => (12, 16),
        // 6 × 2 accumulators + 2 input vectors + a broadcast: 15 of AVX2's 16 registers, and
        // 30 of NEON's 32 (its vectors are register pairs).
        Isa::Avx2 | Isa::Neon | Isa::Scalar => (6, 8),
    }
}

/// Runs one tile with `isa`'s kernel. `isa` must be available on this CPU (the callers take it
/// from [`bitgrad_engine::cpu::isa::active`], which never exceeds the CPU).
///
/// # Safety
/// Every pointer in `t` must be valid for the reads and writes the formula above makes: `a` for
/// `kc · taps · MR` values, `b` for every `src[v] + taps[t] + lane` of every channel plane, and
/// `dst[v] + r·ldc + lane` for `r < mr`, `lane < len[v]`.
pub(crate) unsafe fn run(isa: Isa, t: &Tile) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => tile_avx512(t),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => tile_avx2(t),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => tile_neon(t),
        _ => tile_scalar(t),
    }
}

/// NEON is in the aarch64 baseline: no `#[target_feature]` needed.
#[cfg(target_arch = "aarch64")]
unsafe fn tile_neon(t: &Tile) {
    body::<Neon, 6>(t)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn tile_avx512(t: &Tile) {
    body::<Avx512, 12>(t)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(t: &Tile) {
    body::<Avx2, 6>(t)
}

unsafe fn tile_scalar(t: &Tile) {
    body::<Scalar, 6>(t)
}

/// The kernel body, inlined into each ISA's entry point.
#[inline(always)]
unsafe fn body<S: Simd, const MR: usize>(t: &Tile) {
    // The accumulators are returned by value: through a `&mut` they were stored back to the
    // stack after every multiply-add.
    let acc = if t.len == [S::LANES; NV] { reduce::<S, MR, true>(t) } else { reduce::<S, MR, false>(t) };
    for (r, row) in acc.iter().enumerate().take(t.mr) {
        for (v, &acc) in row.iter().enumerate() {
            let len = t.len[v];
            if len == 0 {
                continue;
            }
            let p = t.dst[v].add(r * t.ldc);
            let val = if t.accumulate { S::add(S::load(p, len), acc) } else { acc };
            S::store(p, val, len);
        }
    }
}

/// The reduction over channels and taps; `FULL` when both vectors are whole (no masks).
#[inline(always)]
unsafe fn reduce<S: Simd, const MR: usize, const FULL: bool>(t: &Tile) -> [[S::V; NV]; MR] {
    let mut acc = [[S::zero(); NV]; MR];
    let len = if FULL { [S::LANES; NV] } else { t.len };
    let mut a = t.a;
    for c in 0..t.kc {
        let bc = t.b.add(c * t.plane);
        for &off in t.taps {
            let b0 = S::load(bc.offset(t.src[0] + off), len[0]);
            let b1 = S::load(bc.offset(t.src[1] + off), len[1]);
            for (r, row) in acc.iter_mut().enumerate() {
                let ar = S::splat(*a.add(r));
                row[0] = S::fma(ar, b0, row[0]);
                row[1] = S::fma(ar, b1, row[1]);
            }
            a = a.add(MR);
        }
    }
    acc
}
