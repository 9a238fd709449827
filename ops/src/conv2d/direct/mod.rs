//! Direct stride-1 convolutions on the CPU: no im2col, a register-blocked batch-reduce
//! micro-kernel per ISA (AVX-512, AVX2+FMA, scalar) reading a zero-padded copy of each image.
//!
//! Used for f32 k×k convolutions (k > 1) with one group — BiT's 3×3 convolutions, 45 % of
//! ResNet-50's FLOPs — in three passes:
//!
//! * forward: `y[o][i][j] = Σ_c Σ_(kh,kw) w[o][c][kh][kw] · xp[c][i + kh·dh][j + kw·dw]`, with
//!   `xp` the input padded by the convolution's padding (strided: `xp[c][i·sh + kh·dh][j·sw +
//!   kw·dw]`, read from phase planes, see [`Shape`]);
//! * input gradient (stride 1): the same computation on the output gradient padded by `(k−1)·d − pad` on
//!   each side, with the weights transposed (`o` ↔ `c`) and flipped (tap `t` ↔ `T−1−t`).
//!
//! * weight gradient (3-wide kernels; strided ones not at AVX2's level, see
//!   `strided_weight_grad_direct`): `dw[o][c][kh][kw] = Σ_b Σ_(i,j)
//!   dy[b][o][i][j] · xp[b][c][i·sh + kh·dh][j·sw + kw·dw]`, vectorised over input channels instead
//!   (`weight_kernel.rs`), on a channel-blocked padded copy of the input, so it runs on maps of
//!   any size.
//!
//! Layout. The kernel's vector axis is the output pixels of one row (NCHW rows are contiguous),
//! its broadcast axis the output channels, so no layout change is needed around the call: the
//! padded copy (1× the input, not the 9× of im2col columns) and the packed weights
//! (`[O/MR][C][taps][MR]`, a few hundred KiB) are the only extra memory. Rows that are whole
//! vectors (AVX-512's 16 lanes, else AVX2's 8) are written in place. Other widths (224 px
//! maps: 28, 14, 7 pixels) run on the flattened grid: output pixel `(i, j)` sits at `i·wp + j`,
//! where `wp` is the padded input's row pitch, so a tap is still one offset and the vectors run
//! straight across row ends; the `wp − wout` columns past each row's end are computed and
//! dropped when the wide result is compacted (3–29 % extra work on those maps, against a masked
//! tail in every row, which measured slower than im2col + GEMM).
//!
//! Work split: (image, block of output channels) items over rayon's threads; each output element
//! is computed by one thread in a fixed order (see `kernel.rs`), so results do not depend on the
//! thread count.

mod blocked;
mod blocked_kernel;
#[cfg(test)]
mod blocked_tests;
mod kernel;
mod pack;
mod peak;
mod pointwise;
mod simd;
#[cfg(test)]
mod tests;
mod weight_kernel;

pub(crate) use blocked::{enabled as blocked_enabled, row_chunks};
pub(crate) use pack::PlaneMap;

use std::any::TypeId;

use bitgrad_engine::cpu::isa::{self, Family, Isa};
use rayon::prelude::*;

use super::cpu::Start;
use super::params::Geom;
use kernel::{Tile, NV};
pub use peak::fma_peak_gflops;

/// Input channels per block: the weight panel of one block (`KC_BYTES` at most) stays in L1
/// while the tiles of an output-channel block stream through the image.
const KC_BYTES: usize = 16 << 10;

/// The least fraction of vector lanes the flattened grid must put to use (real pixels over
/// lanes computed) for the forward and input gradient to go direct on it; below, im2col + GEMM.
/// (Rows of whole vectors always go direct.)
const MIN_FLAT_LANE_USE: f64 = 0.8;

/// The same for the weight gradient, whose vectors run along the input channels (a masked last
/// channel block costs one vector in many, not one in every row).
const MIN_CHANNEL_LANE_USE: f64 = 0.8;

/// A convolution as the kernels see it: `cin` planes of `hin × win` (before padding), `cout`
/// output planes. A stride above 1 splits each padded plane into `sh·sw` phase planes (rows
/// `≡ py (mod sh)`, columns `≡ px (mod sw)`): a strided convolution is then a stride-1 one
/// whose taps are offsets into the phase planes, and every vector load stays contiguous.
#[derive(Clone, Copy, Debug)]
struct Shape {
    batch: usize,
    cin: usize,
    hin: usize,
    win: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    dil: [usize; 2],
    /// `[top, bottom, left, right]`.
    pad: [usize; 4],
    stride: [usize; 2],
}

impl Shape {
    /// The forward of `g`.
    fn forward(g: &Geom) -> Shape {
        Shape {
            batch: g.batch,
            cin: g.c,
            hin: g.h,
            win: g.w,
            cout: g.o,
            kh: g.kh,
            kw: g.kw,
            dil: g.dilation,
            pad: g.pad,
            stride: g.stride,
        }
    }
    /// The input gradient of `g` at stride 1 as a forward: the output gradient padded by
    /// `(k−1)·d − pad` on each side (see [`input_grad_shape_ok`]), `o` and `c` swapped.
    fn input_grad(g: &Geom) -> Shape {
        let (rh, rw) = ((g.kh - 1) * g.dilation[0], (g.kw - 1) * g.dilation[1]);
        let s = Shape {
            batch: g.batch,
            cin: g.o,
            hin: g.oh,
            win: g.ow,
            cout: g.c,
            kh: g.kh,
            kw: g.kw,
            dil: g.dilation,
            pad: [rh - g.pad[0], rh - g.pad[1], rw - g.pad[2], rw - g.pad[3]],
            stride: [1, 1],
        };
        debug_assert_eq!((s.hout(), s.wout()), (g.h, g.w));
        s
    }
    fn hp(&self) -> usize {
        self.hin + self.pad[0] + self.pad[1]
    }
    fn wp(&self) -> usize {
        self.win + self.pad[2] + self.pad[3]
    }
    /// Rows and columns of one phase plane.
    fn phase_dims(&self) -> (usize, usize) {
        (self.hp().div_ceil(self.stride[0]), self.wp().div_ceil(self.stride[1]))
    }
    /// Elements per input channel in the prepared input (all its phase planes).
    fn plane(&self) -> usize {
        let (hph, wph) = self.phase_dims();
        self.stride[0] * self.stride[1] * hph * wph
    }
    fn hout(&self) -> usize {
        (self.hp() - (self.kh - 1) * self.dil[0] - 1) / self.stride[0] + 1
    }
    fn wout(&self) -> usize {
        (self.wp() - (self.kw - 1) * self.dil[1] - 1) / self.stride[1] + 1
    }
    /// The offset of each tap from an output pixel's position in the prepared channel.
    fn taps(&self) -> Vec<isize> {
        let [sh, sw] = self.stride;
        let (hph, wph) = self.phase_dims();
        let mut t = Vec::with_capacity(self.kh * self.kw);
        for i in 0..self.kh {
            for j in 0..self.kw {
                let (ri, rj) = (i * self.dil[0], j * self.dil[1]);
                let phase = (ri % sh) * sw + rj % sw;
                t.push((phase * hph * wph + (ri / sh) * wph + rj / sw) as isize);
            }
        }
        t
    }
}

/// Whether `g` (f32) goes direct with `isa`: one group, a kernel larger than 1×1, an output
/// grid that fills the vectors well.
fn eligible(g: &Geom, isa: Isa) -> bool {
    // 1×1 convolutions stay on gemm: the direct kernel measured no faster on them.
    g.groups == 1 && g.kh * g.kw > 1 && fills(g.oh, g.ow, forward_pitch(g), g.stride, isa)
}

/// The padded input's row pitch the forward reads (a phase plane's, with a stride).
fn forward_pitch(g: &Geom) -> usize {
    (g.w + g.pad[2] + g.pad[3]).div_ceil(g.stride[1])
}

/// The padded output gradient's row pitch the input gradient reads (see [`input_grad_f32`]).
fn input_grad_pitch(g: &Geom) -> usize {
    let rw = (g.kw - 1) * g.dilation[1];
    (g.ow + 2 * rw).saturating_sub(g.pad[2] + g.pad[3])
}

/// Whether an `hout × wout` output on input rows `pitch` apart fills `isa`'s vectors: rows of
/// whole vectors, or at stride 1 a flattened grid (see the module docs) that uses enough of its
/// lanes. (Strided convolutions on the flattened grid measured slower than im2col + GEMM on
/// a Zen 4 EPYC: 15.1 against 11.4 ms for 128 channels from 56 × 56 at batch 8.)
fn fills(hout: usize, wout: usize, pitch: usize, stride: [usize; 2], isa: Isa) -> bool {
    let (_, lanes) = kernel::blocking(isa);
    let flat = || stride == [1, 1] && flat_lane_use(hout, wout, pitch, lanes) >= MIN_FLAT_LANE_USE;
    hout > 0 && (lane_use(wout, lanes) >= 1.0 || flat())
}

/// Real pixels over lanes computed on the flattened grid: `(hout − 1)·pitch + wout` positions
/// in whole vectors.
fn flat_lane_use(hout: usize, wout: usize, pitch: usize, lanes: usize) -> f64 {
    let span = (hout.max(1) - 1) * pitch + wout;
    if span == 0 {
        return 0.0;
    }
    (hout * wout) as f64 / (span.div_ceil(lanes) * lanes) as f64
}

/// False when `BITGRAD_CONV_DIRECT=0` turns the direct path off (to compare with im2col).
fn direct_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("BITGRAD_CONV_DIRECT").map_or(true, |v| v.trim() != "0"))
}

/// The kernel for an `hout × wout` output on input rows `pitch` apart under the active level
/// `isa`: `isa`'s own when its vectors are whole rows; else AVX2's 8-lane kernel on an AVX-512
/// machine when those are (rows of 8, 24 or 56 pixels: on CPUs that split 512-bit operations in
/// two, as Zen 4 does, 8 lanes lose no throughput); else `isa`'s own on the flattened grid when
/// that fills it; else none. `BITGRAD_CONV_DIRECT=0` turns the direct path off (to compare).
fn kernel_isa(hout: usize, wout: usize, pitch: usize, stride: [usize; 2], isa: Isa) -> Option<Isa> {
    let whole = |i: Isa| lane_use(wout, kernel::blocking(i).1) >= 1.0;
    pick_isa(isa, whole).or_else(|| (direct_enabled() && fills(hout, wout, pitch, stride, isa)).then_some(isa))
}

/// `isa` when its vectors `fit`, else AVX2's on an AVX-512 machine when those do, else none
/// (and none when `BITGRAD_CONV_DIRECT=0`).
fn pick_isa(isa: Isa, fits: impl Fn(Isa) -> bool) -> Option<Isa> {
    if !direct_enabled() {
        return None;
    }
    match isa {
        _ if fits(isa) => Some(isa),
        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx if fits(Isa::Avx2) => Some(Isa::Avx2),
        _ => None,
    }
}

fn lane_use(width: usize, lanes: usize) -> f64 {
    if width == 0 {
        return 0.0;
    }
    width as f64 / (width.div_ceil(lanes) * lanes) as f64
}

fn is_f32<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<f32>()
}

/// `s` as f32, when `T` is f32.
fn as_f32<T: 'static>(s: &[T]) -> &[f32] {
    assert!(is_f32::<T>());
    // SAFETY: T is f32 (checked above).
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), s.len()) }
}

/// An f32 vector as `Vec<T>`, when `T` is f32.
fn into_t<T: 'static>(v: Vec<f32>) -> Vec<T> {
    assert!(is_f32::<T>());
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: T is f32 (checked above), so pointer, length, capacity and allocation layout are
    // those of a Vec<f32>.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast(), v.len(), v.capacity()) }
}

/// The direct forward (on top of the bias and the residual in `start`), or `None` when this
/// convolution (or dtype) is not for the direct path.
pub(crate) fn forward<T: 'static>(x: &[T], w: &[T], start: Start<T>, g: &Geom) -> Option<Vec<T>> {
    if !is_f32::<T>() {
        return None;
    }
    let start = Start { bias: start.bias.map(as_f32), residual: start.residual.map(as_f32) };
    forward_at(as_f32(x), as_f32(w), start, g, isa::active()).map(into_t)
}

/// The direct forward at level `isa` (or the level its kernel choice falls back to), `None`
/// where the shape would not run direct there.
/// (The pointwise kernel, else the channel-blocked one, where they apply; else the row-vector
/// kernels.)
pub(crate) fn forward_at(x: &[f32], w: &[f32], start: Start<f32>, g: &Geom, isa: Isa) -> Option<Vec<f32>> {
    if pointwise::eligible(g, g.c) {
        return Some(pointwise::forward(x, w, start, g, isa));
    }
    if blocked::eligible(g, g.c) {
        return Some(blocked::forward(x, w, start, g, isa, None));
    }
    let isa = kernel_isa(g.oh, g.ow, forward_pitch(g), g.stride, isa)?;
    eligible(g, isa).then(|| forward_f32(x, w, start, g, isa))
}

/// Whether the forward of the f32 convolution `g` runs on a direct kernel that copies its input
/// at the active level — the ones [`forward_mapped`] can fold a plane map into (the pointwise
/// kernel reads its input in place and is not among them).
pub(crate) fn forward_goes_direct(g: &Geom) -> bool {
    blocked::eligible(g, g.c)
        || kernel_isa(g.oh, g.ow, forward_pitch(g), g.stride, isa::active()).is_some_and(|isa| eligible(g, isa))
}

/// The direct forward of an f32 convolution whose input is first mapped plane by plane (a
/// group norm, + ReLU, folded into the padded copy: `crate::group_norm_conv2d`), or `None` when
/// the shape is not for the direct path (the caller then maps the input itself).
pub(crate) fn forward_mapped(x: &[f32], w: &[f32], map: PlaneMap, g: &Geom) -> Option<Vec<f32>> {
    if blocked::eligible(g, g.c) {
        return Some(blocked::forward(x, w, Start::bias(None), g, isa::active(), Some(map)));
    }
    let isa = kernel_isa(g.oh, g.ow, forward_pitch(g), g.stride, isa::active())?;
    eligible(g, isa).then(|| forward_f32_mapped(x, w, Start::bias(None), g, isa, Some(map)))
}

/// The forward with a given ISA (tests compare levels).
fn forward_f32(x: &[f32], w: &[f32], start: Start<f32>, g: &Geom, isa: Isa) -> Vec<f32> {
    forward_f32_mapped(x, w, start, g, isa, None)
}

fn forward_f32_mapped(x: &[f32], w: &[f32], start: Start<f32>, g: &Geom, isa: Isa, map: Option<PlaneMap>) -> Vec<f32> {
    let s = Shape::forward(g);
    let (mr, _) = kernel::blocking(isa);
    let panel = pack::weights(g.o, g.c, g.kh * g.kw, mr, |o, c, t| w[(o * g.c + c) * g.kh * g.kw + t]);
    run(x, &panel, start, &s, isa, map)
}

/// Whether the input gradient of `g` can go direct: as the forward, and no side padded by more
/// than `(k−1)·d` (the gradient's own padding would be negative).
fn input_grad_eligible(g: &Geom, isa: Isa) -> bool {
    input_grad_shape_ok(g) && fills(g.h, g.w, input_grad_pitch(g), [1, 1], isa)
}

/// The shape conditions of [`input_grad_eligible`], without the lane use.
fn input_grad_shape_ok(g: &Geom) -> bool {
    let (rh, rw) = ((g.kh - 1) * g.dilation[0], (g.kw - 1) * g.dilation[1]);
    g.groups == 1
        && g.stride == [1, 1]
        && g.kh * g.kw > 1
        && g.pad[0] <= rh
        && g.pad[1] <= rh
        && g.pad[2] <= rw
        && g.pad[3] <= rw
        && g.h > 0
        && g.oh * g.ow > 0
}

/// The direct input gradient, or `None` when not for the direct path.
pub(crate) fn input_grad<T: 'static>(w: &[T], gy: &[T], g: &Geom) -> Option<Vec<T>> {
    if is_f32::<T>() && pointwise::eligible(g, g.o) {
        return Some(into_t(pointwise::input_grad(as_f32(w), as_f32(gy), g, isa::active())));
    }
    if is_f32::<T>() && input_grad_shape_ok(g) && blocked::eligible(g, g.o) {
        return Some(into_t(blocked::input_grad(as_f32(w), as_f32(gy), g, isa::active())));
    }
    let isa = kernel_isa(g.h, g.w, input_grad_pitch(g), [1, 1], isa::active())?;
    if !is_f32::<T>() || !input_grad_eligible(g, isa) {
        return None;
    }
    Some(into_t(input_grad_f32(as_f32(w), as_f32(gy), g, isa)))
}

fn input_grad_f32(w: &[f32], gy: &[f32], g: &Geom, isa: Isa) -> Vec<f32> {
    let s = Shape::input_grad(g);
    let (mr, _) = kernel::blocking(isa);
    let taps = g.kh * g.kw;
    // Transposed and flipped: the gradient's "weight" [c][o][t] is w[o][c][T−1−t].
    let panel = pack::weights(g.c, g.o, taps, mr, |c, o, t| w[(o * g.c + c) * taps + (taps - 1 - t)]);
    run(gy, &panel, Start::bias(None), &s, isa, None)
}

/// The pointer to the output, shared by the threads that write disjoint parts of it.
struct OutPtr(*mut f32);
unsafe impl Sync for OutPtr {}
impl OutPtr {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// The convolution of `s` on `x` (`[batch, cin, hin, win]`, each plane mapped by `map` first
/// when given) with the packed `panel`, added to the residual and the bias of `start`.
fn run(x: &[f32], panel: &pack::Panel, start: Start<f32>, s: &Shape, isa: Isa, map: Option<PlaneMap>) -> Vec<f32> {
    isa::record(Family::ConvDirect, isa.min(Family::ConvDirect.top()));
    let (hout, wout) = (s.hout(), s.wout());
    let (mr, lanes) = kernel::blocking(isa);
    let pitch = s.phase_dims().1;
    // Rows of whole vectors are written in place; other widths run on the flattened grid, whose
    // output rows are `pitch` apart, and are compacted at the end.
    let flat = !wout.is_multiple_of(lanes);
    let out_plane = hout * if flat { pitch } else { wout };
    let mut out = vec![0.0f32; s.batch * s.cout * out_plane];
    if out.is_empty() {
        return out;
    }
    // Unpadded stride-1 ("valid") convolutions read the input itself.
    let copy;
    let padded: &[f32] = if s.pad == [0; 4] && s.stride == [1, 1] && map.is_none() {
        x
    } else {
        copy = pack::phase_planes(x, s.batch * s.cin, s.hin, s.win, s.pad, s.stride, map);
        &copy
    };
    let plane = s.plane();
    let taps = s.taps();
    let tiles = if flat { flat_tiles(hout, wout, pitch, lanes) } else { pixel_tiles(hout, wout, pitch, lanes) };
    let kc = (KC_BYTES / (taps.len() * mr * 4)).clamp(1, s.cin);
    let blocks = s.cout.div_ceil(mr);
    // Items: (image, run of output-channel blocks); enough of them to keep every thread busy
    // even at batch 1.
    let per_image = (4 * rayon::current_num_threads()).div_ceil(s.batch).clamp(1, blocks);
    let run_len = blocks.div_ceil(per_image);
    let items = s.batch * blocks.div_ceil(run_len);
    let dst = OutPtr(out.as_mut_ptr());
    (0..items).into_par_iter().for_each(|item| {
        let (b, part) = (item / blocks.div_ceil(run_len), item % blocks.div_ceil(run_len));
        let block_range = part * run_len..((part + 1) * run_len).min(blocks);
        let img = &padded[b * s.cin * plane..][..s.cin * plane];
        let out_img = dst.get().wrapping_add(b * s.cout * out_plane);
        for ob in block_range.clone() {
            for o in ob * mr..(ob * mr + mr).min(s.cout) {
                // SAFETY: channel o < cout of image b: inside `out`, owned by this item.
                let plane = unsafe { std::slice::from_raw_parts_mut(out_img.add(o * out_plane), out_plane) };
                start_plane(plane, start, (b * s.cout + o) * hout * wout, o, if flat { pitch } else { wout }, wout);
            }
        }
        for c0 in (0..s.cin).step_by(kc) {
            let kcb = kc.min(s.cin - c0);
            for ob in block_range.clone() {
                let rows = mr.min(s.cout - ob * mr);
                let a = panel.block(ob, c0);
                for tile in &tiles {
                    let t = Tile {
                        a: a.as_ptr(),
                        b: img[c0 * plane..].as_ptr(),
                        plane,
                        kc: kcb,
                        taps: &taps,
                        src: tile.src,
                        dst: tile.dst.map(|d| out_img.wrapping_add(ob * mr * out_plane + d)),
                        ldc: out_plane,
                        len: tile.len,
                        mr: rows,
                        accumulate: c0 > 0 || start.accumulates(),
                    };
                    // SAFETY: `a` holds kcb·taps·MR values (pack::Panel::block); every
                    // src + tap + lane lies in its phase plane (pixel_tiles: lane < wout, so
                    // sw·column + (kw−1)·dw < wp and sh·row + (kh−1)·dh < hp, which keeps the
                    // phase-plane column and row below wph and hph; flat_tiles: a position past
                    // a row's end reads on into the next row of the same phase plane, and the
                    // last position is the last real pixel), and channels c0..c0+kcb exist; the
                    // destinations are this item's rows of image b, position < out_plane.
                    unsafe { kernel::run(isa, &t) };
                }
            }
        }
    });
    if flat {
        return compact(&out, hout, pitch, wout);
    }
    out
}

/// Output channel `o`'s plane (rows `pitch` apart) before the products: its rows of the residual
/// (from element `at`) plus its bias, or only the bias; untouched (zeros) without either.
fn start_plane(plane: &mut [f32], start: Start<f32>, at: usize, o: usize, pitch: usize, wout: usize) {
    let bias = start.bias.map(|b| b[o]);
    match (start.residual, bias) {
        (Some(r), _) => {
            let hout = plane.len() / pitch;
            for (src, dst) in r[at..].chunks(wout).take(hout).zip(plane.chunks_mut(pitch)) {
                match bias {
                    Some(b) => dst.iter_mut().zip(src).for_each(|(d, &r)| *d = r + b),
                    None => dst[..wout].copy_from_slice(src),
                }
            }
        }
        (None, Some(b)) => plane.fill(b),
        (None, None) => {}
    }
}

/// The flattened grid's output planes (`hout` rows `pitch` apart) without the columns past
/// `wout`.
fn compact(wide: &[f32], hout: usize, pitch: usize, wout: usize) -> Vec<f32> {
    let planes = wide.len() / (hout * pitch);
    // Every element is written once below (each plane's rows, whole): no zero-fill first.
    crate::group_norm::lanes::filled_vec(planes * hout * wout, |out| {
        out.par_chunks_mut(hout * wout).zip(wide.par_chunks(hout * pitch)).for_each(|(dst, src)| {
            for (d, s) in dst.chunks_mut(wout).zip(src.chunks(pitch)) {
                d.iter_mut().zip(&s[..wout]).for_each(|(d, &v)| {
                    d.write(v);
                });
            }
        });
    })
}

/// One tile's pixel vectors: offsets into the padded input plane and the output plane.
struct PixelTile {
    src: [isize; NV],
    dst: [usize; NV],
    len: [usize; NV],
}

/// The output pixels of one plane, row by row, cut into vectors of at most `lanes` and grouped
/// `NV` to a tile.
fn pixel_tiles(hout: usize, wout: usize, wp: usize, lanes: usize) -> Vec<PixelTile> {
    let mut vectors = Vec::new();
    for i in 0..hout {
        for j0 in (0..wout).step_by(lanes) {
            vectors.push(((i * wp + j0) as isize, i * wout + j0, lanes.min(wout - j0)));
        }
    }
    group_tiles(&vectors)
}

/// Vectors `(src, dst, len)` grouped `NV` to a tile (an unused vector has length 0 and repeats
/// the first one's offsets).
fn group_tiles(vectors: &[(isize, usize, usize)]) -> Vec<PixelTile> {
    vectors
        .chunks(NV)
        .map(|vs| {
            let at = |v: usize| vs.get(v).copied().unwrap_or((vs[0].0, vs[0].1, 0));
            PixelTile { src: [at(0).0, at(1).0], dst: [at(0).1, at(1).1], len: [at(0).2, at(1).2] }
        })
        .collect()
}

/// The output positions of one plane on the flattened grid (row `i`, column `j` at `i·pitch +
/// j`, both in the padded input and in the wide output) from the first pixel to the last real
/// one, cut into vectors of `lanes` (the last one masked) and grouped `NV` to a tile.
fn flat_tiles(hout: usize, wout: usize, pitch: usize, lanes: usize) -> Vec<PixelTile> {
    let span = (hout - 1) * pitch + wout;
    let vectors: Vec<(isize, usize, usize)> =
        (0..span).step_by(lanes).map(|q| (q as isize, q, lanes.min(span - q))).collect();
    group_tiles(&vectors)
}

/// The ISA for the weight gradient over `c` input channels (the vector axis) under `isa`, as
/// [`kernel_isa`] does for output rows.
fn weight_isa(c: usize, isa: Isa) -> Option<Isa> {
    pick_isa(isa, |i| lane_use(c, weight_kernel::blocking(i).1) >= MIN_CHANNEL_LANE_USE)
}

/// Whether the weight gradient of `g` can go direct (shape only).
fn weight_grad_shape_ok(g: &Geom) -> bool {
    g.groups == 1 && g.kw == weight_kernel::KW && g.oh * g.ow > 0 && g.batch > 0
}

/// Output maps below this many pixels keep the weight gradient on im2col + GEMM: with a
/// 6×6 padded copy per 4×4 map, the direct kernel's per-row overheads dominate (44 against
/// 76 GFLOP/s for 512→512 at 4×4 on one AVX-512 core).
const WEIGHT_MIN_PIXELS: usize = 64;

/// Whether the weight gradient of a strided convolution goes direct at `isa`. With AVX2's
/// 8-lane kernel it does not: every block of 3 output channels streams the whole channel-blocked
/// copy of the input, of which a stride-2 convolution uses a quarter, and on a Zen 3 EPYC
/// (2 threads, batch 8) im2col + GEMM was faster on 3 of BiT-R50x1's 4 strided 3×3 shapes —
/// 128 channels from 56 × 56: 15.0–16.4 against 29.7–37.9 ms; from 28 × 28 with 256 channels:
/// 13.8 against 20.9 ms; at 128 px 5.8 against 7.0 (256 channels) and 7.9 against 6.8 ms
/// (128). The wider kernels (more output channels per pass over the input) keep it; they
/// were not measured against GEMM on strided shapes.
fn strided_weight_grad_direct(g: &Geom, isa: Isa) -> bool {
    g.stride == [1, 1] || isa != Isa::Avx2
}

/// The direct weight gradient `[o][c][kh][kw]`, or `None` when not for the direct path.
pub(crate) fn weight_grad<T: 'static>(x: &[T], gy: &[T], g: &Geom) -> Option<Vec<T>> {
    let isa = weight_isa(g.c, isa::active())?;
    if !is_f32::<T>()
        || !weight_grad_shape_ok(g)
        || g.oh * g.ow < WEIGHT_MIN_PIXELS
        || !strided_weight_grad_direct(g, isa)
    {
        return None;
    }
    Some(into_t(weight_grad_f32(as_f32(x), as_f32(gy), g, isa)))
}

fn weight_grad_f32(x: &[f32], gy: &[f32], g: &Geom, isa: Isa) -> Vec<f32> {
    isa::record(Family::ConvDirect, isa.min(Family::ConvDirect.top()));
    let (mo, lanes) = weight_kernel::blocking(isa);
    let kw = weight_kernel::KW;
    let (hp, wp) = (g.h + g.pad[0] + g.pad[1], g.w + g.pad[2] + g.pad[3]);
    let packed = pack::channel_blocked(x, g.batch, g.c, g.h, g.w, g.pad, lanes);
    let (cblocks, oblocks) = (g.c.div_ceil(lanes), g.o.div_ceil(mo));
    let tile_len = mo * kw * lanes;
    let p = g.oh * g.ow;
    // Tiles [ob][cb][kh][MO][KW][L], side by side on the threads (no tile depends on another).
    let mut tiles = vec![0.0f32; oblocks * cblocks * g.kh * tile_len];
    tiles.par_chunks_mut(tile_len).enumerate().for_each(|(ti, out)| {
        let (ob, rest) = (ti / (cblocks * g.kh), ti % (cblocks * g.kh));
        let (cb, kh) = (rest / g.kh, rest % g.kh);
        let t = weight_kernel::WeightTile {
            x: packed[(cb * hp + kh * g.dilation[0]) * wp * lanes..].as_ptr(),
            x_image: cblocks * hp * wp * lanes,
            dy: gy[ob * mo * p..].as_ptr(),
            dy_image: g.o * p,
            dy_channel: p,
            mo: mo.min(g.o - ob * mo),
            batch: g.batch,
            oh: g.oh,
            ow: g.ow,
            wp,
            dw: g.dilation[1],
            stride: g.stride,
            out: out.as_mut_ptr(),
        };
        // SAFETY: for image b the kernel reads packed rows i·sh + kh·dh < hp (i < oh) and
        // columns j·sw + k·dw < wp (j < ow, k < 3) of block cb, all inside `packed`; output-gradient
        // channels ob·mo + r < o (others read channel ob·mo); `out` has MO·KW·L values.
        unsafe { weight_kernel::run(isa, &t) };
    });
    // Unpack to [o][c][kh][kw].
    let mut dw = vec![0.0f32; g.o * g.c * g.kh * kw];
    dw.par_chunks_mut(g.c * g.kh * kw).enumerate().for_each(|(o, dst)| {
        let (ob, r) = (o / mo, o % mo);
        for c in 0..g.c {
            let (cb, l) = (c / lanes, c % lanes);
            for kh in 0..g.kh {
                let tile = &tiles[((ob * cblocks + cb) * g.kh + kh) * tile_len..][..tile_len];
                for k in 0..kw {
                    dst[(c * g.kh + kh) * kw + k] = tile[(r * kw + k) * lanes + l];
                }
            }
        }
    });
    dw
}
