//! The weight-gradient micro-kernel of the direct convolution, and its per-ISA entry points.
//!
//! One call computes, for `MO` output channels, one kernel row `kh` and its 3 taps, and one
//! block of `L` input channels (one vector):
//!
//! ```text
//! acc[r][k][lanes] = Σ_b Σ_(i,j) dy[b][o0 + r][i][j] · x[b][c-block][i·sh + kh·dh][j·sw + k·dw][lanes]
//! ```
//!
//! with `x` the input zero-padded and packed channel-blocked (`[b][C/L][Hp][Wp][L]`, see
//! `pack::channel_blocked`) so that a vector is `L` input channels of one pixel: every tap is a
//! whole aligned vector, whatever the map size, and the output-gradient values are scalar
//! broadcasts. The `MO × 3` accumulators stay in registers across the whole batch (the weight
//! tile is written once), and each weight is summed in one fixed order — images, rows, columns
//! — so results do not depend on the thread count.

#[cfg(target_arch = "aarch64")]
use super::simd::Neon;
#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};
use super::simd::{Scalar, Simd};
use bitgrad_engine::cpu::isa::Isa;

/// Taps per kernel row: the kernel handles 3-wide kernels.
pub(crate) const KW: usize = 3;

/// One weight tile's arguments.
pub(crate) struct WeightTile {
    /// The packed input of image 0 at this channel block, kernel row `kh` (already offset by
    /// `kh·dh` rows).
    pub x: *const f32,
    /// Elements between images in the packed input.
    pub x_image: usize,
    /// The output gradient of image 0 at channel `o0`.
    pub dy: *const f32,
    /// Elements between images in the output gradient.
    pub dy_image: usize,
    /// Elements between output channels (`oh · ow`).
    pub dy_channel: usize,
    /// Output channels that exist (≤ MO; the others repeat channel `o0` and are not stored).
    pub mo: usize,
    pub batch: usize,
    pub oh: usize,
    pub ow: usize,
    /// Padded width (pixels per packed row).
    pub wp: usize,
    /// Horizontal dilation.
    pub dw: usize,
    /// Stride: `[rows, columns]`.
    pub stride: [usize; 2],
    /// Destination `[MO][KW][L]`, row-major, written (not added to).
    pub out: *mut f32,
}

/// Output channels per tile and lanes per vector for `isa`: `(MO, L)`.
pub(crate) fn blocking(isa: Isa) -> (usize, usize) {
    match isa {
        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => (8, 16),
        // 3 × 3 accumulators + 3 input vectors + a broadcast fit AVX2's 16 registers; 4 × 3
        // spilled one vector per pixel. NEON's register pairs fill its 32 registers the same way.
        Isa::Avx2 | Isa::Neon | Isa::Scalar => (3, 8),
    }
}

/// Runs one tile with `isa`'s kernel (which this CPU must have).
///
/// # Safety
/// `x` must be readable for every pixel `(i + kh·dh, j + k·dw)` of every image's packed block
/// (`L` values each), `dy` for `mo` channels × `oh·ow` pixels of every image, and `out` writable
/// for `MO · KW · L` values.
pub(crate) unsafe fn run(isa: Isa, t: &WeightTile) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => tile_avx512(t),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => tile_avx2(t),
        // NEON is in the aarch64 baseline: no `#[target_feature]` entry point needed.
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => body::<Neon, 3>(t),
        _ => body::<Scalar, 3>(t),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn tile_avx512(t: &WeightTile) {
    body::<Avx512, 8>(t)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(t: &WeightTile) {
    body::<Avx2, 3>(t)
}

#[inline(always)]
unsafe fn body<S: Simd, const MO: usize>(t: &WeightTile) {
    let acc = reduce::<S, MO>(t);
    for (r, row) in acc.iter().enumerate() {
        for (k, &v) in row.iter().enumerate() {
            S::store(t.out.add((r * KW + k) * S::LANES), v, S::LANES);
        }
    }
}

/// The reduction, accumulators returned by value (kept in registers).
#[inline(always)]
unsafe fn reduce<S: Simd, const MO: usize>(t: &WeightTile) -> [[S::V; KW]; MO] {
    let l = S::LANES;
    let mut acc = [[S::zero(); KW]; MO];
    // Rows past the last output channel read channel o0 again (valid memory); not stored.
    let dy_off: [usize; MO] = std::array::from_fn(|r| if r < t.mo { r * t.dy_channel } else { 0 });
    for b in 0..t.batch {
        let xb = t.x.add(b * t.x_image);
        let dyb = t.dy.add(b * t.dy_image);
        for i in 0..t.oh {
            let xrow = xb.add(i * t.stride[0] * t.wp * l);
            let dyrow = dyb.add(i * t.ow);
            for j in 0..t.ow {
                let xp = xrow.add(j * t.stride[1] * l);
                let xv: [S::V; KW] = std::array::from_fn(|k| S::load(xp.add(k * t.dw * l), l));
                for (r, row) in acc.iter_mut().enumerate() {
                    let d = S::splat(*dyrow.add(dy_off[r] + j));
                    for (a, &x) in row.iter_mut().zip(&xv) {
                        *a = S::fma(d, x, *a);
                    }
                }
            }
        }
    }
    acc
}
