//! The micro-kernel of the direct bf16 convolutions (`direct.rs`): `R` output pixels of one row
//! × 32 output channels on `vdpbf16ps`, the input's channel pairs broadcast one at a time.
//!
//! ```text
//! acc[p][h] = start + Σ_{t ∈ taps} Σ_{cb} Σ_{k < 16} dot(x[cb][pixel p + tap t][pair k], w[t·cbs + cb][h][k])
//! ```
//!
//! `x` is the input in blocks of 32 channels, zero-padded (`[cb][hp][wp][16 pairs]`, a pair being
//! two bf16 channels in one dword), so the 16 pairs one pixel contributes to a k-step share a
//! 64-byte line. `w` is one 32-column panel of the tile passes' packed `B`
//! (`pack_weight_fprop` / `pack_weight_dgrad`: `[k-step][2 halves][16 pairs][16 columns][2]`),
//! read as two 512-bit loads per pair. Each lane is an output channel, accumulating in f32: 14
//! pixels × 2 halves are 28 zmm accumulators, plus the two weight vectors; the broadcast is the
//! instruction's memory operand.
//!
//! The sum of each output element runs in the order of the gathered GEMM over the same packed
//! `B` — k-steps (tap-major, then channel blocks), pairs in order, one `vdpbf16ps` chain started
//! from the residual or zero — and is rounded to bf16 once with the engine's rule, so the tile
//! writes the bits `dot::block_emulated` and the gathered passes would.
//!
//! [`Lanes`] is the vector: `vdpbf16ps` on zmm registers ([`Hardware`]) or its exact scalar
//! emulation ([`Emulated`], lane by lane with `dot::dpbf16_emulated`), so the same blocking runs
//! and is tested on every CPU.

use crate::bf16_gemm::dot::dpbf16_emulated;

/// One tile's arguments; dword offsets count channel pairs.
pub(super) struct Tile<'a> {
    /// The packed input at channel block 0 and the tile's first pixel (tap offset 0).
    pub x: *const u32,
    /// Dwords between channel blocks of the packed input.
    pub cb_stride: usize,
    /// Channel blocks (of 32) per tap.
    pub cbs: usize,
    /// Dword offset of each tap from a pixel's position, in the order of `w`'s k-steps.
    pub taps: &'a [isize],
    /// Dwords between the tile's consecutive output pixels (16 · stride in the packed input).
    pub step: usize,
    /// The panel of the tile's 32 output channels: `taps.len() · cbs` k-steps of 512 dwords.
    pub w: *const u32,
    /// The output (NHWC bf16) at the tile's first pixel and output channel.
    pub out: *mut u16,
    /// Elements between the tile's consecutive output pixels.
    pub ldo: usize,
    /// The residual, laid out as the output (at the same element), or null.
    pub residual: *const u16,
}

/// The most pixels per tile.
pub(super) const MAX_PIXELS: usize = 14;

/// Dwords in one k-step of a packed panel (two halves of 16 pairs × 16 columns).
const STEP_DWORDS: usize = 512;
/// Dwords from one half of a k-step to the other.
const HALF_DWORDS: usize = 256;

/// Sixteen f32 accumulator lanes and the bf16-pair operands of `vdpbf16ps`.
pub(super) trait Lanes {
    type Acc: Copy;
    type W: Copy;
    unsafe fn zero() -> Self::Acc;
    /// 16 bf16 values at `p`, widened to f32 (exact).
    unsafe fn widen(p: *const u16) -> Self::Acc;
    /// 16 dwords (bf16 pairs) at `p`.
    unsafe fn load(p: *const u32) -> Self::W;
    /// `vdpbf16ps` with the pair `a` broadcast: lane `i` gets `acc + a₁·w₁ + a₀·w₀`.
    unsafe fn dot(acc: Self::Acc, w: Self::W, a: u32) -> Self::Acc;
    /// The 16 lanes rounded to bf16 (`bitgrad_engine::bf16_bits`) and written to `p`.
    unsafe fn round_store(p: *mut u16, acc: Self::Acc);
    /// 16 f32 sums at `p`.
    unsafe fn load_sums(p: *const f32) -> Self::Acc;
    /// The 16 lanes written to `p` as they are.
    unsafe fn store_sums(p: *mut f32, acc: Self::Acc);
}

/// The exact scalar emulation of `vdpbf16ps` (any CPU).
pub(super) struct Emulated;

impl Lanes for Emulated {
    type Acc = [f32; 16];
    type W = [u32; 16];
    #[inline(always)]
    unsafe fn zero() -> Self::Acc {
        [0.0; 16]
    }
    #[inline(always)]
    unsafe fn widen(p: *const u16) -> Self::Acc {
        std::array::from_fn(|i| f32::from_bits((*p.add(i) as u32) << 16))
    }
    #[inline(always)]
    unsafe fn load(p: *const u32) -> Self::W {
        // The packed weight is a Vec<u16>: read its dwords unaligned.
        std::array::from_fn(|i| p.add(i).read_unaligned())
    }
    #[inline(always)]
    unsafe fn dot(acc: Self::Acc, w: Self::W, a: u32) -> Self::Acc {
        std::array::from_fn(|i| dpbf16_emulated(acc[i], a, w[i]))
    }
    #[inline(always)]
    unsafe fn round_store(p: *mut u16, acc: Self::Acc) {
        for (i, v) in acc.iter().enumerate() {
            *p.add(i) = bitgrad_engine::bf16_bits(*v);
        }
    }
    #[inline(always)]
    unsafe fn load_sums(p: *const f32) -> Self::Acc {
        std::array::from_fn(|i| *p.add(i))
    }
    #[inline(always)]
    unsafe fn store_sums(p: *mut f32, acc: Self::Acc) {
        for (i, v) in acc.iter().enumerate() {
            *p.add(i) = *v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::Hardware;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Lanes;
    use std::arch::x86_64::*;

    /// `vdpbf16ps` on zmm registers (AVX512-BF16).
    pub(in crate::conv2d::bf16_tiles) struct Hardware;

    impl Lanes for Hardware {
        type Acc = __m512;
        type W = __m512bh;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn widen(p: *const u16) -> __m512 {
            let h = _mm256_loadu_si256(p.cast());
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
        #[inline(always)]
        unsafe fn load(p: *const u32) -> __m512bh {
            std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p.cast()))
        }
        #[inline(always)]
        unsafe fn dot(acc: __m512, w: __m512bh, a: u32) -> __m512 {
            // Each lane takes the same two products, odd pair first, whichever operand is
            // broadcast (dot::block_hardware is tested bit for bit against the emulation).
            _mm512_dpbf16_ps(acc, w, std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(a as i32)))
        }
        #[inline(always)]
        unsafe fn round_store(p: *mut u16, acc: __m512) {
            // bitgrad_engine::bf16_bits on 16 lanes: round to nearest even on the bits, NaNs
            // kept quiet (their high half with the quiet bit set).
            let x = _mm512_castps_si512(acc);
            let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(x), _mm512_set1_epi32(1));
            let rounded =
                _mm512_srli_epi32::<16>(_mm512_add_epi32(x, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))));
            let magnitude = _mm512_and_si512(x, _mm512_set1_epi32(0x7fff_ffff));
            let nan = _mm512_cmpgt_epu32_mask(magnitude, _mm512_set1_epi32(0x7f80_0000));
            let quiet = _mm512_or_si512(_mm512_srli_epi32::<16>(x), _mm512_set1_epi32(0x40));
            let bits = _mm512_mask_blend_epi32(nan, rounded, quiet);
            _mm256_storeu_si256(p.cast(), _mm512_cvtepi32_epi16(bits));
        }
        #[inline(always)]
        unsafe fn load_sums(p: *const f32) -> __m512 {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store_sums(p: *mut f32, acc: __m512) {
            _mm512_storeu_ps(p, acc)
        }
    }
}

macro_rules! dispatch {
    ($l:ty, $r:expr, $t:expr) => {
        dispatch!(@ $l, $r, $t, [1 2 3 4 5 6 7 8 9 10 11 12 13 14])
    };
    (@ $l:ty, $r:expr, $t:expr, [$($n:literal)*]) => {
        match ($r, $t.step) {
            // Strides 1 and 2 of the packed input as constants, so that each broadcast
            // addresses `x + constant`.
            $(($n, 16) => body::<$l, $n, 16>($t),)*
            $(($n, 32) => body::<$l, $n, 32>($t),)*
            $(($n, _) => body::<$l, $n, 0>($t),)*
            _ => unreachable!("tile of {} pixels", $r),
        }
    };
}

/// Runs one tile of `r` pixels (1 ≤ r ≤ [`MAX_PIXELS`]) on the instruction.
///
/// # Safety
/// The CPU must have AVX512-BF16 (and AVX-512 F/BW/VL). `t.x` must be valid for every read
/// `tap + cb·cb_stride + p·step + k` (`p < r`, `k < 16`, `cb < cbs`), `t.w` for
/// `taps·cbs·512` dwords, `t.out` (and `t.residual`, unless null) for `p·ldo + j` (`p < r`,
/// `j < 32`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(super) unsafe fn run_hardware(r: usize, t: &Tile) {
    dispatch!(Hardware, r, t)
}

/// [`run_hardware`]'s arithmetic, emulated (any CPU).
///
/// # Safety
/// As [`run_hardware`], without the CPU requirement.
pub(super) unsafe fn run_emulated(r: usize, t: &Tile) {
    dispatch!(Emulated, r, t)
}

/// The tile for `R` pixels `STEP` dwords apart (0: `t.step` dwords apart).
#[inline(always)]
unsafe fn body<L: Lanes, const R: usize, const STEP: usize>(t: &Tile) {
    let mut acc = [[L::zero(); 2]; R];
    if !t.residual.is_null() {
        for (p, a) in acc.iter_mut().enumerate() {
            let r = t.residual.add(p * t.ldo);
            *a = [L::widen(r), L::widen(r.add(16))];
        }
    }
    let acc = reduce::<L, R, STEP>(t, acc);
    for (p, a) in acc.iter().enumerate() {
        let o = t.out.add(p * t.ldo);
        L::round_store(o, a[0]);
        L::round_store(o.add(16), a[1]);
    }
}

/// The sums of one tile, from `acc`. The accumulators go in and out by value (an array the
/// epilogue also indexes gets stored to the stack after every instruction otherwise).
#[inline(always)]
unsafe fn reduce<L: Lanes, const R: usize, const STEP: usize>(t: &Tile, mut acc: [[L::Acc; 2]; R]) -> [[L::Acc; 2]; R] {
    let step = if STEP == 0 { t.step } else { STEP };
    let mut w = t.w;
    for &off in t.taps {
        let xt = t.x.offset(off);
        for cb in 0..t.cbs {
            let xi = xt.add(cb * t.cb_stride);
            for k in 0..16 {
                let w0 = L::load(w.add(k * 16));
                let w1 = L::load(w.add(HALF_DWORDS + k * 16));
                for (p, a) in acc.iter_mut().enumerate() {
                    // Unaligned: a 1×1 pass reads the NHWC tensor (a Vec<u16>) in place.
                    let pair = xi.add(p * step + k).read_unaligned();
                    a[0] = L::dot(a[0], w0, pair);
                    a[1] = L::dot(a[1], w1, pair);
                }
            }
            w = w.add(STEP_DWORDS);
        }
    }
    acc
}

/// One weight-gradient tile's arguments: `R` output channels × 32 input channels of one tap,
/// summed over pixel pairs (dword offsets).
pub(super) struct WgradTile<'a> {
    /// The input's pixel pairs for the tile's channel block and tap, at the chunk's first row:
    /// per pair, 32 dwords (two halves of 16 channels, each lane the pair's two values).
    pub x: *const u32,
    /// The output gradient's pixel pairs at the tile's first output channel, every row of the
    /// chunk in order: per pair, the 32 dwords of the block of output channels the tile's `R`
    /// lie in.
    pub dy: *const u32,
    /// Per output row of the chunk: the dword offset of its first pair in `x`.
    pub rows: &'a [usize],
    /// Pairs per row.
    pub pairs: usize,
    /// The tile's f32 sums, `R` rows of 32, 32 floats apart: read (when `accumulate`), added
    /// to, written back.
    pub sums: *mut f32,
    /// Whether `sums` holds earlier chunks' sums (else the tile starts from zero and only
    /// writes them).
    pub accumulate: bool,
}

macro_rules! dispatch_wgrad {
    ($l:ty, $r:expr, $t:expr, [$($n:literal)*]) => {
        match $r {
            $($n => wgrad_body::<$l, $n>($t),)*
            _ => unreachable!("weight-gradient tile of {} rows", $r),
        }
    };
}

/// Runs one weight-gradient tile of `r` output channels (1 ≤ r ≤ [`MAX_PIXELS`]) on the
/// instruction.
///
/// # Safety
/// The CPU must have AVX512-BF16 (and AVX-512 F/BW/VL). For each `xo` in `t.rows` and
/// `q < t.pairs`, `t.x` must be valid for 32 dwords at `xo + 32·q`; `t.dy` for `r` dwords
/// at each `32·p` (`p < rows·pairs`), `t.sums` for `32·r` floats (initialized when
/// `t.accumulate`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(super) unsafe fn wgrad_hardware(r: usize, t: &WgradTile) {
    dispatch_wgrad!(Hardware, r, t, [1 2 3 4 5 6 7 8 9 10 11 12 13 14])
}

/// [`wgrad_hardware`]'s arithmetic, emulated (any CPU).
///
/// # Safety
/// As [`wgrad_hardware`], without the CPU requirement.
pub(super) unsafe fn wgrad_emulated(r: usize, t: &WgradTile) {
    dispatch_wgrad!(Emulated, r, t, [1 2 3 4 5 6 7 8 9 10 11 12 13 14])
}

#[inline(always)]
unsafe fn wgrad_body<L: Lanes, const R: usize>(t: &WgradTile) {
    let mut acc = [[L::zero(); 2]; R];
    if t.accumulate {
        for (i, a) in acc.iter_mut().enumerate() {
            *a = [L::load_sums(t.sums.add(32 * i)), L::load_sums(t.sums.add(32 * i + 16))];
        }
    }
    let acc = wgrad_reduce::<L, R>(t, acc);
    for (i, a) in acc.iter().enumerate() {
        L::store_sums(t.sums.add(32 * i), a[0]);
        L::store_sums(t.sums.add(32 * i + 16), a[1]);
    }
}

/// The pixel pairs of every row in order: the input pairs are the vector operand (lanes =
/// input channels), each output channel's pair the broadcast.
#[inline(always)]
unsafe fn wgrad_reduce<L: Lanes, const R: usize>(t: &WgradTile, mut acc: [[L::Acc; 2]; R]) -> [[L::Acc; 2]; R] {
    let mut dy = t.dy;
    for &xo in t.rows {
        let mut x = t.x.add(xo);
        for _ in 0..t.pairs {
            let x0 = L::load(x);
            let x1 = L::load(x.add(16));
            for (i, a) in acc.iter_mut().enumerate() {
                let d = dy.add(i).read_unaligned();
                a[0] = L::dot(a[0], x0, d);
                a[1] = L::dot(a[1], x1, d);
            }
            x = x.add(32);
            dy = dy.add(32);
        }
    }
    acc
}
