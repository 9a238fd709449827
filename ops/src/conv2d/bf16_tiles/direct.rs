//! Direct bf16 convolutions on `vdpbf16ps`: the fprop of every shape the tile passes take, and
//! the stride-1 dgrad, without the gathered `A` panels.
//!
//! The gathered GEMM (`gemm_gathered`) copies, for every 32 output pixels, each input pixel once
//! per tap that reads it (nine times for a 3×3 filter), and streams the whole packed weight past
//! each 32-pixel block. Here, as in the f32 channel-blocked kernel
//! (`conv2d::direct::blocked`), the output channels are the vector lanes and the input is read
//! where it lies: it is copied once per call, zero-padded, into blocks of 32 channels
//! (`[n][c/32][hp][wp][32]`, each pixel's block one 64-byte line), and a tile of up to 14 pixels
//! of one output row × 32 output channels sums every tap and channel in registers
//! (`direct_kernel.rs`), reading one 32-column panel of the same packed `B` the gathered passes
//! use. An unpadded 1×1 pass reads the NHWC tensor in place instead of copying it; at stride 1
//! it runs on each image as one row of `H·W` pixels.
//!
//! * **fprop**: taps at `(r·dh, s·dw)` in the padded input, stride `g.stride`;
//! * **dgrad** (stride 1, no side padded by more than `(k−1)·d`): the fprop of `dy` padded by
//!   `(k−1)·d − pad`, tap `(r, s)` at `((kh−1−r)·dh, (kw−1−s)·dw)`, with `pack_weight_dgrad`'s
//!   `B` over every tap in order.
//!
//! Each output element is one `vdpbf16ps` chain over the k-steps of the gathered GEMM's order,
//! so both give the same bits (`direct_tests.rs`); the results do not depend on the tiling or
//! the thread count. Only `vdpbf16ps` (and its emulation) runs here: AMX keeps the gathered
//! passes, whose tiles it multiplies whole.
//!
//! Work split: (image, 32 output channels, run of tiles) items over rayon's threads.

use rayon::prelude::*;

use super::direct_kernel::{self as kernel, Tile, MAX_PIXELS};
use super::{pack_weight_dgrad, Geom, Tiles, BLOCK, STEP_LEN};
use crate::conv2d::direct::{blocked_enabled, row_chunks};
use crate::conv2d::workspace::with_scratch;
use crate::group_norm::lanes::filled_vec;

/// Whether `tiles`' fprop and stride-1 dgrad run here: `vdpbf16ps` or its emulation, unless
/// `BITGRAD_CONV_BLOCKED=0` (or `BITGRAD_CONV_DIRECT=0`) turns the direct kernels off.
pub(super) fn runs(tiles: Tiles) -> bool {
    matches!(tiles, Tiles::Dot | Tiles::DotEmulated) && blocked_enabled()
}

/// Whether `g`'s dgrad runs here: stride 1, and no side padded by more than the filter's reach
/// `(k−1)·d` (a "same" or "valid" convolution), so that padding `dy` makes it a forward.
pub(super) fn takes_dgrad(g: &Geom) -> bool {
    let (eh, ew) = ((g.kh - 1) * g.dilation[0], (g.kw - 1) * g.dilation[1]);
    g.stride == [1, 1] && g.pad[0] <= eh && g.pad[1] <= eh && g.pad[2] <= ew && g.pad[3] <= ew
}

/// `y` `[N, P, Q, K]` from `x` `[N, H, W, C]` and the packed weight (`pack_weight_fprop`), on
/// top of `residual` (the accumulators start from it).
pub(super) fn fprop(tiles: Tiles, x: &[u16], w_packed: &[u16], residual: Option<&[u16]>, g: &Geom) -> Vec<u16> {
    let taps = (0..g.kh).flat_map(|r| (0..g.kw).map(move |s| (r * g.dilation[0], s * g.dilation[1]))).collect();
    run(
        tiles,
        &Pass {
            src: x,
            dims: [g.batch, g.h, g.w, g.c],
            pad: g.pad,
            out: [g.oh, g.ow, g.o],
            stride: g.stride,
            taps,
            panels: w_packed,
            residual,
        },
    )
}

/// `dx` `[N, H, W, C]` from `dy` `[N, P, Q, K]` and the bf16 ŵ in KRSC order, for a `g` that
/// [`takes_dgrad`].
pub(super) fn dgrad(tiles: Tiles, dy: &[u16], w: &[u16], g: &Geom) -> Vec<u16> {
    assert!(takes_dgrad(g), "bf16 direct dgrad: stride 1, padding within the filter's reach");
    let all: Vec<usize> = (0..g.kh * g.kw).collect();
    let packed = pack_weight_dgrad(w, g, &all);
    let (eh, ew) = ((g.kh - 1) * g.dilation[0], (g.kw - 1) * g.dilation[1]);
    let taps = (0..g.kh)
        .flat_map(|r| (0..g.kw).map(move |s| ((g.kh - 1 - r) * g.dilation[0], (g.kw - 1 - s) * g.dilation[1])))
        .collect();
    run(
        tiles,
        &Pass {
            src: dy,
            dims: [g.batch, g.oh, g.ow, g.o],
            pad: [eh - g.pad[0], eh - g.pad[1], ew - g.pad[2], ew - g.pad[3]],
            out: [g.h, g.w, g.c],
            stride: [1, 1],
            taps,
            panels: &packed,
            residual: None,
        },
    )
}

/// One direct pass: `out[n][i][j][o] = start + Σ_taps Σ_c src_padded[n][i·sh + tr][j·sw + tc][c]
/// · B[tap·C + c][o]`.
struct Pass<'a> {
    /// NHWC bf16 source, `dims = [n, h, w, c]`.
    src: &'a [u16],
    dims: [usize; 4],
    /// Zeros around the source: `[top, bottom, left, right]`.
    pad: [usize; 4],
    /// `[rows, columns, channels]` of each output image.
    out: [usize; 3],
    stride: [usize; 2],
    /// `(row, column)` of each tap in the padded source, in the k-step order of `panels`.
    taps: Vec<(usize, usize)>,
    /// Packed `B`: `[out channels / 32][taps · c/32 k-steps][STEP_LEN]`.
    panels: &'a [u16],
    /// Laid out as the output, or none.
    residual: Option<&'a [u16]>,
}

/// The output pointer, shared by the items that write disjoint parts of it.
struct OutPtr(*mut u16);
// SAFETY: each item writes only its own tiles' elements (see `run`).
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so that closures capture the `Sync` wrapper, not the field).
    fn get(&self) -> *mut u16 {
        self.0
    }
}

fn run(tiles: Tiles, p: &Pass) -> Vec<u16> {
    let [n, mut h, mut w, c] = p.dims;
    let [mut oh, mut ow, cout] = p.out;
    assert!(c.is_multiple_of(BLOCK) && cout.is_multiple_of(BLOCK), "bf16 direct: channels in 32s");
    assert_eq!(p.src.len(), n * h * w * c, "bf16 direct: source size");
    assert!(p.residual.is_none_or(|r| r.len() == n * oh * ow * cout), "bf16 direct: the residual's shape");
    // A 1×1 stride-1 pass over an unpadded map: each image is one row of pixels, so that tiles
    // run across row ends and stay full on 7-pixel rows.
    let flat = p.taps == [(0, 0)] && p.stride == [1, 1] && p.pad == [0; 4] && (oh, ow) == (h, w);
    if flat {
        (w, ow, h, oh) = (h * w, oh * ow, 1, 1);
    }
    let (hp, wp) = (h + p.pad[0] + p.pad[1], w + p.pad[2] + p.pad[3]);
    assert!(
        p.taps.iter().all(|&(tr, tc)| (oh - 1) * p.stride[0] + tr < hp && (ow - 1) * p.stride[1] + tc < wp),
        "bf16 direct: taps inside the padded map"
    );
    let cbs = c / BLOCK;
    let ksteps = p.taps.len() * cbs;
    let obs = cout / BLOCK;
    assert_eq!(p.panels.len(), obs * ksteps * STEP_LEN, "bf16 direct: packed weight size");
    // An unpadded 1×1 pass reads the NHWC source where it lies (a pixel's channel pairs are its
    // run of c/2 dwords): no copy, and with a stride none of the pixels it skips. Measured
    // against copying it like the others (Zen 4, 2 threads, R50x1's stride-1 1×1s at 224 px):
    // forward 86.0–86.8 against 87.0–88.6 ms, input gradient 349–354 against 324–336 GF/s.
    let in_place = p.taps == [(0, 0)] && p.pad == [0; 4];
    let image = cbs * hp * wp * 16;
    let tap_offsets: Vec<isize> = p.taps.iter().map(|&(tr, tc)| ((tr * wp + tc) * 16) as isize).collect();
    let chunks = row_chunks(ow, MAX_PIXELS);
    let per_image = oh * chunks.len();
    // Items: (image, block of output channels, run of tiles); enough to keep every thread busy.
    let parts = (4 * rayon::current_num_threads()).div_ceil(n * obs).clamp(1, per_image);
    let tiles_per = per_image.div_ceil(parts);
    let parts = per_image.div_ceil(tiles_per);
    tiles.record();
    let run_tile: unsafe fn(usize, &Tile) = match tiles {
        #[cfg(target_arch = "x86_64")]
        Tiles::Dot => kernel::run_hardware,
        Tiles::DotEmulated => kernel::run_emulated,
        _ => unreachable!("the direct bf16 kernels run vdpbf16ps or its emulation"),
    };
    filled_vec(n * oh * ow * cout, |out| {
        let dst = OutPtr(out.as_mut_ptr().cast::<u16>());
        // The padded copy lives in this thread's reusable scratch (f32-sized words as dwords).
        with_scratch::<f32, _>([if in_place { 0 } else { n * image }, 0], |scratch, _| {
            let packed: &mut [u32] = bytemuck::cast_slice_mut(scratch);
            if !in_place {
                pack_input(packed, p.src, [n, h, w, c], p.pad);
            }
            let packed = &*packed;
            (0..n * obs * parts).into_par_iter().for_each(|item| {
                let (b, rest) = (item / (obs * parts), item % (obs * parts));
                let (ob, part) = (rest / parts, rest % parts);
                for k in part * tiles_per..((part + 1) * tiles_per).min(per_image) {
                    let (i, (j0, r)) = (k / chunks.len(), chunks[k % chunks.len()]);
                    let at = ((b * oh + i) * ow + j0) * cout + ob * BLOCK;
                    let (x, cb_stride, step) = if in_place {
                        // Input pixel (i·sh, j0·sw) of image b, channel blocks 16 dwords apart.
                        let at = ((b * h + i * p.stride[0]) * w + j0 * p.stride[1]) * c;
                        (p.src[at..].as_ptr().cast::<u32>(), 16, p.stride[1] * c / 2)
                    } else {
                        let img = &packed[b * image..][..image];
                        (img[(i * p.stride[0] * wp + j0 * p.stride[1]) * 16..].as_ptr(), hp * wp * 16, p.stride[1] * 16)
                    };
                    let t = Tile {
                        x,
                        cb_stride,
                        cbs,
                        taps: &tap_offsets,
                        step,
                        w: p.panels[ob * ksteps * STEP_LEN..].as_ptr().cast::<u32>(),
                        out: dst.get().wrapping_add(at),
                        ldo: cout,
                        residual: p.residual.map_or(std::ptr::null(), |res| res[at..].as_ptr()),
                    };
                    // SAFETY: pixel (i, j0 + q) under tap (tr, tc) reads padded row i·sh + tr <
                    // hp and column (j0 + q)·sw + tc < wp (checked above) of each channel block
                    // of image b, inside `img` (read in place: row i·sh < h, column
                    // (j0 + q)·sw < w of `src`, all c channels; src's dwords are read
                    // unaligned); the panel holds ksteps·512 dwords (read unaligned too); the
                    // tile writes (and reads of the residual, shaped
                    // as the output) the 32 channels of pixels (b, i, j0 + q), q < r, written by
                    // no other item. The instruction runs only for Tiles::Dot, which exists
                    // only where the CPU has AVX512-BF16.
                    unsafe { run_tile(r, &t) };
                }
            });
        });
    })
}

/// `src` (NHWC, `dims = [n, h, w, c]`) into `dst` as `[n][c/32][h + top + bottom][w + left +
/// right][32]`, zeros in the padding; every element of `dst` is written.
fn pack_input(dst: &mut [u32], src: &[u16], [n, h, w, c]: [usize; 4], pad: [usize; 4]) {
    let (hp, wp) = (h + pad[0] + pad[1], w + pad[2] + pad[3]);
    let cbs = c / BLOCK;
    assert_eq!(dst.len(), n * cbs * hp * wp * 16, "bf16 direct: packed input size");
    dst.par_chunks_mut(wp * 16).enumerate().for_each(|(row, d)| {
        let (img, y) = (row / hp, row % hp);
        let (b, cb) = (img / cbs, img % cbs);
        let Some(ih) = y.checked_sub(pad[0]).filter(|&ih| ih < h) else {
            d.fill(0);
            return;
        };
        let d: &mut [u16] = bytemuck::cast_slice_mut(d);
        d[..pad[2] * BLOCK].fill(0);
        d[(pad[2] + w) * BLOCK..].fill(0);
        let line = &src[(b * h + ih) * w * c..][..w * c];
        for (px, s) in d[pad[2] * BLOCK..][..w * BLOCK].chunks_exact_mut(BLOCK).zip(line.chunks_exact(c)) {
            px.copy_from_slice(&s[cb * BLOCK..][..BLOCK]);
        }
    });
}
