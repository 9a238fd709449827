//! The micro-kernel of the channel-blocked direct forward: `R` output pixels of one row × two
//! vectors of output channels, the input channels broadcast one at a time.
//!
//! ```text
//! acc[r][v] = Σ_{cb} Σ_{t ∈ taps} Σ_{i < CI} x[cb][pixel r + tap t][i] · w[cb][t][i][v·LANES ..]
//! ```
//!
//! `x` is the zero-padded input in blocks of [`CI`] channels (`[cb][hp][wp][CI]`), so the `CI`
//! values a broadcast reads for one pixel share a cache line, and a row of pixels is one run of
//! memory. `w` is the weight panel of one block of `2·LANES` output channels,
//! `[cb][taps][CI][2·LANES]`, read as two vector loads per input channel. Each vector lane is an
//! output channel, so every lane does useful work whatever the width of the map (7, 14, 28 or
//! 56 pixels): the waste of vectors along a row (the flattened grid of `kernel.rs`) is gone.
//!
//! Each output element is summed in one fixed order — channel blocks, taps, channels in the
//! block — whatever the tile or thread it falls in, so results do not depend on the thread count.

#[cfg(target_arch = "aarch64")]
use super::simd::Neon;
use super::simd::Scalar;
use super::simd::Simd;
#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};
use bitgrad_engine::cpu::isa::Isa;

/// Input channels per block of the packed input.
pub(crate) const CI: usize = 16;

/// One tile's arguments.
pub(crate) struct Tile<'a> {
    /// The packed input at channel block 0 and the tile's first pixel (tap offset 0).
    pub x: *const f32,
    /// Elements between channel blocks of the packed input.
    pub cb_stride: usize,
    /// Channel blocks to sum over.
    pub cbs: usize,
    /// Element offset of each tap from a pixel's position.
    pub taps: &'a [isize],
    /// Elements between the tile's consecutive output pixels (`stride · CI` in the packed
    /// input).
    pub step: usize,
    /// Elements between consecutive channels of a block (1 in the packed input).
    pub ci_stride: usize,
    /// The weight panel `[cbs][taps][CI][2·LANES]`.
    pub w: *const f32,
    /// Where the sums go, channel-major: output channel `j`'s pixels from `out[j·PITCH]`.
    pub out: *mut f32,
}

/// Elements between output channels in a tile's sums (its pixels, at most 14, then unused).
pub(crate) const PITCH: usize = 16;

/// The size of a tile's sums: `PITCH` per output channel, 32 channels at most.
pub(crate) const MAX_SUMS: usize = 32 * PITCH;

/// Output channels per tile (two vectors) and the most pixels per tile, for `isa`.
pub(crate) fn blocking(isa: Isa) -> (usize, usize) {
    match isa {
        // 14 × 2 accumulators + 2 weight vectors + a broadcast: 31 of 32 registers.
        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => (32, 14),
        // 6 × 2 + 2 + 1 = 15 of AVX2's 16 (30 of NEON's 32, its vectors being register pairs).
        _ => (16, 6),
    }
}

/// Runs one tile of `r` pixels (1 ≤ r ≤ the ISA's most).
///
/// # Safety
/// `t.x` must be valid for every read `cb·cb_stride + tap + p·step + i·ci_stride` (`p < r`,
/// `i < CI`),
/// `t.w` for `cbs·taps·CI·2·LANES` values and `t.out` for `2·LANES·PITCH` writes.
pub(crate) unsafe fn run(isa: Isa, r: usize, t: &Tile) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => avx512(r, t),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2(r, t),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => neon(r, t),
        _ => scalar(r, t),
    }
}

macro_rules! dispatch {
    ($s:ty, $r:expr, $t:expr, [$($n:literal)*]) => {
        match ($r, $t.step) {
            // The common pixel steps as constants, so that the broadcasts address `x + constant`:
            // the packed input at strides 1 and 2, and an NCHW image read in place (`pointwise.rs`).
            $(($n, CI) => body::<$s, $n, CI>($t),)*
            $(($n, _) if $t.step == 2 * CI => body::<$s, $n, { 2 * CI }>($t),)*
            $(($n, 1) => body::<$s, $n, 1>($t),)*
            $(($n, _) => body::<$s, $n, 0>($t),)*
            _ => unreachable!("tile of {} pixels", $r),
        }
    };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn avx512(r: usize, t: &Tile) {
    dispatch!(Avx512, r, t, [1 2 3 4 5 6 7 8 9 10 11 12 13 14])
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2(r: usize, t: &Tile) {
    dispatch!(Avx2, r, t, [1 2 3 4 5 6])
}

/// NEON is in the aarch64 baseline: no `#[target_feature]` needed.
#[cfg(target_arch = "aarch64")]
unsafe fn neon(r: usize, t: &Tile) {
    dispatch!(Neon, r, t, [1 2 3 4 5 6])
}

unsafe fn scalar(r: usize, t: &Tile) {
    dispatch!(Scalar, r, t, [1 2 3 4 5 6])
}

/// The tile body for `R` pixels `STEP` elements apart (0: `t.step` elements apart).
#[inline(always)]
unsafe fn body<S: Simd, const R: usize, const STEP: usize>(t: &Tile) {
    let l = S::LANES;
    let step = if STEP == 0 { t.step } else { STEP };
    let mut acc = [[S::zero(); 2]; R];
    let mut w = t.w;
    for cb in 0..t.cbs {
        let xc = t.x.add(cb * t.cb_stride);
        for &off in t.taps {
            let mut xi = xc.offset(off);
            for _ in 0..CI {
                let w0 = S::load(w, l);
                let w1 = S::load(w.add(l), l);
                w = w.add(2 * l);
                for (p, a) in acc.iter_mut().enumerate() {
                    let b = S::splat(*xi.add(p * step));
                    a[0] = S::fma(b, w0, a[0]);
                    a[1] = S::fma(b, w1, a[1]);
                }
                xi = xi.add(t.ci_stride);
            }
        }
    }
    // Channel-major: output channel `v·LANES + k`'s pixels from `out[(v·LANES + k)·16]`.
    for v in 0..2 {
        let mut rows = [S::zero(); R];
        for (row, a) in rows.iter_mut().zip(&acc) {
            *row = a[v];
        }
        S::store_transposed(&rows, t.out.add(v * l * PITCH));
    }
}
