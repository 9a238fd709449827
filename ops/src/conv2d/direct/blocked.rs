//! The channel-blocked direct forward: output channels on the vector lanes (see
//! `blocked_kernel.rs`), for any kernel size, stride and dilation, on maps of any width; and
//! the stride-1 input gradient, which is the same computation on the padded output gradient.
//!
//! The input is copied once per call, zero-padded, into blocks of `CI` channels
//! (`[batch][c/CI][hp][wp][CI]`, the layout oneDNN calls nChw16c; a group norm + ReLU can be
//! applied on the way, as in `pack::phase_planes`), and the weights into panels of `2·LANES`
//! output channels. Each tile sums over all input channels with its accumulators in registers
//! and writes itself once, transposed back into the NCHW output, on top of the residual and
//! bias.
//!
//! Work split: (image, block of output channels, run of output rows) items over rayon's
//! threads; each output element is computed by one tile in a fixed order, so results do not
//! depend on the thread count.

use bitgrad_engine::cpu::isa::{self, Family, Isa};
use rayon::prelude::*;

use super::blocked_kernel::{self as kernel, CI};
use super::pack::{self, PlaneMap};
use super::{OutPtr, Shape};
use crate::conv2d::cpu::Start;
use crate::conv2d::params::Geom;
use crate::conv2d::workspace::with_scratch;

/// Whether the channel-blocked kernels take a convolution with `cin` input channels (of the
/// kernels' input): more than one tap, one group, and channels that fill their blocks
/// (`MIN_CHANNEL_LANE_USE`; BiT's 3-channel stem stays on the row-vector kernel).
/// `BITGRAD_CONV_BLOCKED=0` turns them off (to compare with the row-vector kernels), as does
/// `BITGRAD_CONV_DIRECT=0` (all direct kernels).
pub(crate) fn eligible(g: &Geom, cin: usize) -> bool {
    enabled() && g.groups == 1 && g.kh * g.kw > 1 && super::lane_use(cin, CI) >= super::MIN_CHANNEL_LANE_USE
}

/// False when `BITGRAD_CONV_BLOCKED=0` or `BITGRAD_CONV_DIRECT=0` (read once).
pub(crate) fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| {
        super::direct_enabled() && std::env::var("BITGRAD_CONV_BLOCKED").map_or(true, |v| v.trim() != "0")
    })
}

/// The forward of `g` at level `isa`, `map` applied to each input plane first, on top of the
/// residual and bias in `start`.
pub(crate) fn forward(x: &[f32], w: &[f32], start: Start<f32>, g: &Geom, isa: Isa, map: Option<PlaneMap>) -> Vec<f32> {
    let s = Shape::forward(g);
    let taps = g.kh * g.kw;
    run(x, &s, |o, c| &w[(o * g.c + c) * taps..][..taps], false, start, isa, map)
}

/// The input gradient of `g` (stride 1, no side padded by more than `(k−1)·d`): the forward of
/// the output gradient, padded by `(k−1)·d − pad`, with the weights transposed and flipped.
pub(crate) fn input_grad(w: &[f32], gy: &[f32], g: &Geom, isa: Isa) -> Vec<f32> {
    let s = Shape::input_grad(g);
    let taps = g.kh * g.kw;
    // The gradient's "weight" [c][o][t] is w[o][c][T−1−t].
    run(gy, &s, |c, o| &w[(o * g.c + c) * taps..][..taps], true, Start::bias(None), isa, None)
}

/// The convolution `s` of `x` with the weights `taps_of(output, input channel)` (their taps in
/// reverse order when `flip`).
fn run<'w>(
    x: &[f32],
    s: &Shape,
    taps_of: impl Fn(usize, usize) -> &'w [f32] + Sync,
    flip: bool,
    start: Start<f32>,
    isa: Isa,
    map: Option<PlaneMap>,
) -> Vec<f32> {
    isa::record(Family::ConvDirect, isa.min(Family::ConvDirect.top()));
    let (ocb, rmax) = kernel::blocking(isa);
    let (oh, ow) = (s.hout(), s.wout());
    let mut out = vec![0.0f32; s.batch * s.cout * oh * ow];
    if out.is_empty() {
        return out;
    }
    let (hp, wp) = (s.hp(), s.wp());
    let cbs = s.cin.div_ceil(CI);
    let taps = s.kh * s.kw;
    let image_len = cbs * hp * wp * CI;
    let panel_len = cbs * taps * CI * ocb;
    let obs = s.cout.div_ceil(ocb);
    let tap_offsets: Vec<isize> = (0..s.kh)
        .flat_map(|i| (0..s.kw).map(move |j| (i * s.dil[0], j * s.dil[1])))
        .map(|(ri, rj)| ((ri * wp + rj) * CI) as isize)
        .collect();
    let chunks = row_chunks(ow, rmax);
    // Items: (image, output-channel block, run of rows); enough of them to keep every thread
    // busy even at batch 1.
    let parts = (4 * rayon::current_num_threads()).div_ceil(s.batch * obs).clamp(1, oh);
    let rows_per = oh.div_ceil(parts);
    let parts = oh.div_ceil(rows_per);
    let dst = OutPtr(out.as_mut_ptr());
    // The two copies live in this thread's reusable scratch (fresh allocations this size cost
    // their page faults on every call) and are written whole.
    with_scratch::<f32, _>([s.batch * image_len, obs * panel_len], |packed, panel| {
        pack::channel_blocked_into(packed, x, s.batch, s.cin, s.hin, s.win, s.pad, CI, map);
        pack_weights(panel, s.cout, s.cin, taps, ocb, flip, taps_of);
        (0..s.batch * obs * parts).into_par_iter().for_each(|item| {
            let (b, rest) = (item / (obs * parts), item % (obs * parts));
            let (ob, part) = (rest / parts, rest % parts);
            let oc0 = ob * ocb;
            let img = &packed[b * image_len..][..image_len];
            for i in part * rows_per..((part + 1) * rows_per).min(oh) {
                for &(j0, r) in &chunks {
                    let at = ((b * s.cout + oc0) * oh + i) * ow + j0;
                    let t = kernel::Tile {
                        x: img[((i * s.stride[0]) * wp + j0 * s.stride[1]) * CI..].as_ptr(),
                        cb_stride: hp * wp * CI,
                        cbs,
                        taps: &tap_offsets,
                        step: s.stride[1] * CI,
                        ci_stride: 1,
                        w: panel[ob * panel_len..][..panel_len].as_ptr(),
                        out: dst.get().wrapping_add(at),
                        ldo: oh * ow,
                        ocs: ocb.min(s.cout - oc0),
                        bias: start.bias.map_or(std::ptr::null(), |bs| bs[oc0..].as_ptr()),
                        residual: start.residual.map_or(std::ptr::null(), |res| res[at..].as_ptr()),
                    };
                    // SAFETY: pixel (i, j0 + p) with tap (kh, kw) reads padded row
                    // i·sh + kh·dh < hp and column (j0 + p)·sw + kw·dw < wp of each channel
                    // block of image b, all inside `img`; the panel holds cbs·taps·CI·ocb
                    // values; the tile writes (and reads of the residual, shaped as the output)
                    // elements (b, oc0 + j, i, j0 + p) for j < ocs, p < r: inside the output,
                    // and written only by this item (image b, channel block ob, row i); the
                    // bias has cout ≥ oc0 + ocs values.
                    unsafe { kernel::run(isa, r, &t) };
                }
            }
        });
    });
    out
}

/// `(first column, pixels)` of each tile of an output row `ow` wide, at most `rmax` pixels per
/// tile, as even as possible (56 → 4 × 14, 32 → 11 + 11 + 10).
pub(crate) fn row_chunks(ow: usize, rmax: usize) -> Vec<(usize, usize)> {
    let n = ow.div_ceil(rmax).max(1);
    let (base, extra) = (ow / n, ow % n);
    let mut j = 0;
    (0..n)
        .map(|k| {
            let r = base + usize::from(k < extra);
            let c = (j, r);
            j += r;
            c
        })
        .filter(|&(_, r)| r > 0)
        .collect()
}

/// Packs `[o/ocb][c/CI][taps][CI][ocb]` into `dst` from `taps_of(o, c)`, the `taps` values of
/// one (output, input) channel pair, zero past `o` and `c` (every element of `dst` is written).
/// With `flip`, tap `t` goes to place `taps − 1 − t`. One block of `ocb × CI` pairs at a time: its reads are `ocb` runs of `CI·taps` values when the
/// source is `[o][c][taps]`, its writes one L1-sized block.
pub(crate) fn pack_weights<'a>(
    dst: &mut [f32],
    o: usize,
    c: usize,
    taps: usize,
    ocb: usize,
    flip: bool,
    taps_of: impl Fn(usize, usize) -> &'a [f32] + Sync,
) {
    let cbs = c.div_ceil(CI);
    let block = taps * CI * ocb;
    assert_eq!(dst.len(), o.div_ceil(ocb) * cbs * block, "pack_weights: destination size");
    dst.par_chunks_mut(block).enumerate().for_each(|(k, dst)| {
        let (ob, cb) = (k / cbs, k % cbs);
        let (rows, cols) = (ocb.min(o - ob * ocb), CI.min(c - cb * CI));
        if rows < ocb || cols < CI {
            dst.fill(0.0);
        }
        for j in 0..rows {
            for i in 0..cols {
                for (t, &v) in taps_of(ob * ocb + j, cb * CI + i).iter().enumerate() {
                    let t = if flip { taps - 1 - t } else { t };
                    dst[(t * CI + i) * ocb + j] = v;
                }
            }
        }
    });
}
