//! 1×1 stride-1 convolutions on the channel-blocked micro-kernel, reading the NCHW input in
//! place: no copy of the input at all.
//!
//! Without padding or stride, an image's `H·W` pixels are one run per channel, so a tile is up
//! to 14 consecutive pixels of that run (across row ends) × 32 output channels (AVX-512), and
//! its input channel `c` is a broadcast from `x[c][p]`: the kernel of `blocked_kernel.rs` with
//! the channel stride `H·W` and the pixel step 1. Output-channel blocks are the innermost loop
//! around a group of tiles, so the group's input (16 pixels of one channel per 64-byte line)
//! stays in L1/L2 while every weight panel streams past it once per group. Only the weights are copied,
//! into `[o/32][c][32]` panels.
//!
//! Forward: `y[o][p] = Σ_c w[o][c] · x[c][p]`; input gradient: `dx[c][p] = Σ_o w[o][c] · dy[o][p]`,
//! the same with the weights transposed. Each output element is summed in one fixed order
//! (channels in order), so results do not depend on the thread count.

use bitgrad_engine::cpu::isa::{self, Family, Isa};
use rayon::prelude::*;

use super::blocked::row_chunks;
use super::blocked_kernel::{self as kernel, CI};
use super::OutPtr;
use crate::conv2d::cpu::Start;
use crate::conv2d::params::Geom;
use crate::conv2d::workspace::with_scratch;

/// Input bytes a group of tiles may span (about a quarter of a core's L2).
const GROUP_BYTES: usize = 128 << 10;

/// The least reduction length (input channels of the forward, output channels of the input
/// gradient) for which the pointwise kernel is used. Each tile's work is proportional to it,
/// while its epilogue (a transpose and one store per output channel) and the stepping between
/// channel runs are not. On the Zen 4 EPYC (2 threads, batch 8, 224 px; GFLOP/s, pointwise
/// against `gemm`, two alternating runs each): 64 channels lost (64 → 256 at 56 px forward
/// 110–116 against 133–139), 128 were level (128 → 512 at 28 px forward 139–154 against
/// 147–152), 256 won or were level (the input gradient of 64 → 256 at 56 px 154–158 against
/// 124–132; of 1024 → 256 at 14 px 172–185 against 133–141), longer ones won (1024 → 256 at
/// 14 px forward 189–199 against 149–171).
const MIN_REDUCTION: usize = 256;

/// Whether the pointwise kernel takes `g` with `cin` channels on the reduction side: a 1×1
/// kernel, stride 1, no padding, one group, whole blocks of 16 channels (a partial block would
/// read past the last channel) and at least `MIN_REDUCTION` of them. `BITGRAD_CONV_BLOCKED=0`
/// turns it off.
pub(crate) fn eligible(g: &Geom, cin: usize) -> bool {
    cin >= MIN_REDUCTION && shape_ok(g, cin)
}

/// [`eligible`] without the length bound (the tests run short reductions too).
pub(crate) fn shape_ok(g: &Geom, cin: usize) -> bool {
    super::blocked::enabled()
        && g.groups == 1
        && g.kh * g.kw == 1
        && g.stride == [1, 1]
        && g.pad == [0; 4]
        && cin > 0
        && cin.is_multiple_of(CI)
}

/// The forward of `g` on top of the residual and bias in `start`.
pub(crate) fn forward(x: &[f32], w: &[f32], start: Start<f32>, g: &Geom, isa: Isa) -> Vec<f32> {
    run(x, g.batch, g.c, g.o, g.h * g.w, start, isa, |panel, ocb| {
        // [o][c] → [o/ocb][c][ocb]: each output channel's row read once, in order.
        panel.par_chunks_mut(g.c * ocb).enumerate().for_each(|(ob, dst)| {
            for j in 0..ocb.min(g.o - ob * ocb) {
                for (c, &v) in w[(ob * ocb + j) * g.c..][..g.c].iter().enumerate() {
                    dst[c * ocb + j] = v;
                }
            }
        });
    })
}

/// The input gradient of `g`.
pub(crate) fn input_grad(w: &[f32], gy: &[f32], g: &Geom, isa: Isa) -> Vec<f32> {
    run(gy, g.batch, g.o, g.c, g.h * g.w, Start::bias(None), isa, |panel, ocb| {
        // wᵀ: [c][o] → [c/ocb][o][ocb]: runs of ocb input channels of one output channel.
        panel.par_chunks_mut(g.o * ocb).enumerate().for_each(|(cb, dst)| {
            let n = ocb.min(g.c - cb * ocb);
            for (o, d) in dst.chunks_exact_mut(ocb).enumerate() {
                d[..n].copy_from_slice(&w[o * g.c + cb * ocb..][..n]);
            }
        });
    })
}

/// `out[b][o][p] = start + Σ_c W(o, c) · x[b][c][p]` for `p < pixels`, the weights packed by
/// `pack(panel, ocb)` as `[cout/ocb][cin][ocb]` (it need not write the rows past `cout`: they
/// are zeroed first when the last block is partial).
#[allow(clippy::too_many_arguments)]
fn run(
    x: &[f32],
    batch: usize,
    cin: usize,
    cout: usize,
    pixels: usize,
    start: Start<f32>,
    isa: Isa,
    pack: impl FnOnce(&mut [f32], usize),
) -> Vec<f32> {
    isa::record(Family::ConvDirect, isa.min(Family::ConvDirect.top()));
    let (ocb, rmax) = kernel::blocking(isa);
    let mut out = vec![0.0f32; batch * cout * pixels];
    if out.is_empty() {
        return out;
    }
    assert!(cin.is_multiple_of(CI) && x.len() == batch * cin * pixels, "pointwise: input shape");
    let obs = cout.div_ceil(ocb);
    let panel_len = cin * ocb;
    let tiles = row_chunks(pixels, rmax);
    // Tiles per group: their input (cin runs of group·rmax pixels, whole lines) within
    // GROUP_BYTES.
    let group = (GROUP_BYTES / (cin * (rmax * 4).next_multiple_of(64))).clamp(1, tiles.len());
    let groups = tiles.len().div_ceil(group);
    let dst = OutPtr(out.as_mut_ptr());
    let taps = [0isize];
    with_scratch::<f32, _>([0, obs * panel_len], |_, panel| {
        if !cout.is_multiple_of(ocb) {
            panel[(obs - 1) * panel_len..].fill(0.0);
        }
        pack(panel, ocb);
        (0..batch * groups).into_par_iter().for_each(|item| {
            let (b, gi) = (item / groups, item % groups);
            let img = &x[b * cin * pixels..][..cin * pixels];
            for ob in 0..obs {
                let oc0 = ob * ocb;
                for &(p0, r) in &tiles[gi * group..((gi + 1) * group).min(tiles.len())] {
                    let at = (b * cout + oc0) * pixels + p0;
                    let t = kernel::Tile {
                        x: img[p0..].as_ptr(),
                        cb_stride: CI * pixels,
                        cbs: cin / CI,
                        taps: &taps,
                        step: 1,
                        ci_stride: pixels,
                        w: panel[ob * panel_len..][..panel_len].as_ptr(),
                        out: dst.get().wrapping_add(at),
                        ldo: pixels,
                        ocs: ocb.min(cout - oc0),
                        bias: start.bias.map_or(std::ptr::null(), |bs| bs[oc0..].as_ptr()),
                        residual: start.residual.map_or(std::ptr::null(), |res| res[at..].as_ptr()),
                    };
                    // SAFETY: the tile reads x[b][c][p0 + p] for c < cin (whole blocks, checked
                    // above) and p < r (p0 + r ≤ pixels), inside `img`; the panel holds
                    // cin·ocb values; it writes (and reads of the residual, shaped as the
                    // output) elements (b, oc0 + j, p0 + p) for j < ocs, p < r, written only by
                    // this item (image b, pixel group gi); the bias has cout ≥ oc0 + ocs values.
                    unsafe { kernel::run(isa, r, &t) };
                }
            }
        });
    });
    out
}
