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
    /// The output at the tile's first output channel and pixel: channel `j`'s `r` pixels are
    /// `out[j·ldo ..]`.
    pub out: *mut f32,
    /// Elements between output channels.
    pub ldo: usize,
    /// Output channels that exist (≤ 2·LANES; the panel's other columns are zero).
    pub ocs: usize,
    /// The bias of the tile's first output channel on, or null.
    pub bias: *const f32,
    /// The residual, laid out as the output (at the same element), or null.
    pub residual: *const f32,
}

/// Elements between output channels in the transposed sums (a tile's pixels, at most 14).
const PITCH: usize = 16;

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
/// `t.w` for `cbs·taps·CI·2·LANES` values; `t.out` (and `t.residual`, unless null) for
/// `j·ldo + p` (`j < ocs`, `p < r`), and `t.bias` (unless null) for `ocs` values.
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
    let acc = reduce::<S, R, STEP>(t);
    // Transposed to channel-major in registers (one run of pixels per output channel), then
    // each channel written in one masked store: `(residual + bias) + sum`, or `bias + sum`.
    let mut sums = [0.0f32; 16 * PITCH];
    for v in 0..2 {
        let mut rows = [S::zero(); R];
        for (row, a) in rows.iter_mut().zip(&acc) {
            *row = a[v];
        }
        S::store_transposed(&rows, sums.as_mut_ptr());
        for k in 0..l.min(t.ocs.saturating_sub(v * l)) {
            let j = v * l + k;
            let bias = S::splat(if t.bias.is_null() { 0.0 } else { *t.bias.add(j) });
            let base = if t.residual.is_null() { bias } else { S::add(S::load(t.residual.add(j * t.ldo), R), bias) };
            S::store(t.out.add(j * t.ldo), S::add(base, S::load(sums.as_ptr().add(k * PITCH), R)), R);
        }
    }
}

/// The sums of one tile. The accumulators are returned by value: kept in a variable the
/// epilogue also indexes, they were stored to the stack after every multiply-add.
#[inline(always)]
unsafe fn reduce<S: Simd, const R: usize, const STEP: usize>(t: &Tile) -> [[S::V; 2]; R] {
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
    acc
}
