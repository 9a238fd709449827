//! The stride-1 weight gradient on `vdpbf16ps` without per-tap panels:
//! `dW[o][r][s][c] = Σ_pixels dy[pixel][o] · x[pixel + (r·dh, s·dw)][c]`.
//!
//! `vdpbf16ps` sums pairs, so the reduction over pixels runs over pixel pairs: the pair
//! `(2q, 2q + 1)` of an output row. The gathered GEMM (`wgrad_gathered`) builds, for every
//! tap and 32 input channels, a panel of the input under that tap with each pair's values
//! interleaved — nine copies of the input for a 3×3 filter. Here the input is interleaved
//! twice, once per alignment: pairs starting at even columns of the zero-padded map, and at
//! odd ones. With stride 1, the pair `(2q + s·dw, 2q + 1 + s·dw)` that tap `(r, s)` reads for
//! the output pair `q` is then pair `q + ⌊s·dw/2⌋` of the copy of alignment `s·dw mod 2`, in
//! row `oh + r·dh`: every tap reads the same two copies at an offset. `dy` is interleaved once,
//! `[K/32][row][pair][32]` (each dword the pair's two values of one output channel), so a
//! tile's output channels are one run of dwords per pair.
//!
//! A tile is up to 14 output channels (broadcast) × 32 input channels (two vectors of pairs) of
//! one tap, its f32 sums in registers over every pair of a chunk of output rows; the sums live
//! in the result between chunks (`WeightGrad`'s blocked layout, `[tap][C/32][K][32]`). A chunk
//! is whole images, or rows of one image ([`chunk_pixels`]): large enough that reading and
//! writing a tile's sums costs little against its work, small enough that what the tiles share
//! stays in L2. An odd-width row's last
//! pair has a zero second value; a 1×1 unpadded pass runs on each image as one row.
//!
//! Each sum runs over chunks, rows and pairs in order, so results do not depend on the thread
//! count. They are not the gathered GEMM's bits (it pairs pixels across row ends): the tests
//! compare both with f64.

use rayon::prelude::*;

use super::direct_kernel::{self as kernel, WgradTile, MAX_PIXELS};
use super::{Geom, Tiles, WeightGrad, BLOCK};
use crate::conv2d::direct::row_chunks;
use crate::conv2d::workspace::with_scratch;

/// What a chunk may hold of the operand every tile of a thread's run reads (about half a
/// core's L2; see [`order`]).
const CHUNK_BYTES: usize = 512 << 10;
/// Output pixels per chunk, at least: each tile reads and writes its f32 sums once per chunk
/// (`K·taps·C` of them in all, more than L2 holds for the deep layers), so a chunk must carry
/// enough work to pay for that traffic.
const MIN_CHUNK_PIXELS: usize = 512;
/// Work per chunk, at least: the threads meet after packing and after the tiles of every chunk,
/// so a chunk of a few microseconds of work (64 → 64 channels, 1×1) would be mostly waiting.
/// Its operands then come from L3.
const MIN_CHUNK_FLOP: usize = 64 << 20;

/// Whether the weight gradient of `g` runs here: stride 1 (and some output pixels).
pub(super) fn takes(g: &Geom) -> bool {
    g.stride == [1, 1] && g.batch * g.p() > 0
}

/// The pass in the view the kernel runs: a 1×1 unpadded map as one row per image.
struct View {
    n: usize,
    /// Input rows and columns, channels; output rows and columns, channels.
    h: usize,
    w: usize,
    c: usize,
    oh: usize,
    ow: usize,
    k: usize,
    /// Top and left zero padding.
    pt: usize,
    pl: usize,
    /// Tap offsets `(r·dh, s·dw)`, row-major over `(r, s)`.
    taps: Vec<(usize, usize)>,
    /// The filter's reach down the rows, `(kh − 1)·dh`.
    eh: usize,
    /// Pixel pairs per output row, and per row of the interleaved input.
    pairs: usize,
    xq: usize,
}

impl View {
    /// The view of `g` for chunks of `pixels` output pixels (with one input copy, the only
    /// one a 1×1 filter needs).
    fn of(g: &Geom, pixels: usize) -> View {
        // One row per image where an image fits a chunk (rows end where images do).
        let flat = g.kh * g.kw == 1 && g.pad == [0; 4] && g.hw() <= pixels;
        let (h, w, oh, ow) = if flat { (1, g.hw(), 1, g.p()) } else { (g.h, g.w, g.oh, g.ow) };
        let taps = (0..g.kh).flat_map(|r| (0..g.kw).map(move |s| (r * g.dilation[0], s * g.dilation[1]))).collect();
        let (eh, ew) = ((g.kh - 1) * g.dilation[0], (g.kw - 1) * g.dilation[1]);
        let pairs = ow.div_ceil(2);
        // Tap s reads pairs q + ⌊s·dw/2⌋ of its copy, columns up to 2·pairs + ew − 1.
        let xq = pairs + ew.div_ceil(2);
        View { n: g.batch, h, w, c: g.c, oh, ow, k: g.o, pt: g.pad[0], pl: g.pad[2], taps, eh, pairs, xq }
    }

    /// Runs of output rows `(image, first row, end row)`, grouped into chunks: whole images
    /// when one fits, else runs of one image's rows.
    fn chunks(&self, pixels: usize) -> Vec<Vec<(usize, usize, usize)>> {
        let per_image = self.oh * self.ow;
        if per_image <= pixels {
            let images = pixels / per_image;
            (0..self.n)
                .step_by(images)
                .map(|i0| (i0..(i0 + images).min(self.n)).map(|i| (i, 0, self.oh)).collect())
                .collect()
        } else {
            let rows = pixels.div_ceil(self.ow);
            (0..self.n)
                .flat_map(|i| (0..self.oh).step_by(rows).map(move |r0| vec![(i, r0, (r0 + rows).min(self.oh))]))
                .collect()
        }
    }
}

/// Whether the tiles run output-channel-run-major: `(run, channel block, tap)` when `dy`'s pairs
/// (`k` values a pixel) outweigh the input copies (`parities · c`), so that a run's pairs stay
/// in L2 while every input copy streams past; `(channel block, tap, run)` otherwise, all of
/// `dy`'s pairs staying in L2 while one channel block's copies stream.
fn order(c: usize, k: usize, parities: usize) -> bool {
    k > parities * c
}

/// Output pixels per chunk for `c` input and `k` output channels, `taps` taps and `parities`
/// input copies: the operand that stays in L2 (see [`order`]) within [`CHUNK_BYTES`], plus one
/// stream of the other — or more, up to [`MIN_CHUNK_FLOP`] of work, where the channels are few.
fn chunk_pixels(c: usize, k: usize, taps: usize, parities: usize) -> usize {
    let resident = 2 * (parities * c).min(k);
    let by_work = MIN_CHUNK_FLOP.div_ceil(2 * c * k * taps);
    (CHUNK_BYTES / (resident + 128)).max(MIN_CHUNK_PIXELS).max(by_work)
}

/// The sums' pointer, shared by tiles that each own their block of it.
struct SumsPtr(*mut f32);
// SAFETY: each tile reads and writes only its own block of sums (see `wgrad`).
unsafe impl Sync for SumsPtr {}

impl SumsPtr {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// `dW` from `dy` `[N, P, Q, K]` and `x` `[N, H, W, C]` (bf16) for a `g` this [`takes`].
pub(super) fn wgrad(tiles: Tiles, dy: &[u16], x: &[u16], g: &Geom) -> WeightGrad {
    wgrad_in_chunks(tiles, dy, x, g, chunk_pixels(g.c, g.o, g.kh * g.kw, parities(g)))
}

/// The input copies `g` needs: the odd-aligned one only when some tap's column offset `s·dw`
/// is odd.
fn parities(g: &Geom) -> usize {
    if (0..g.kw).any(|s| s * g.dilation[1] % 2 == 1) {
        2
    } else {
        1
    }
}

/// [`wgrad`] in chunks of about `pixels` output pixels (the tests run small ones).
pub(super) fn wgrad_in_chunks(tiles: Tiles, dy: &[u16], x: &[u16], g: &Geom, pixels: usize) -> WeightGrad {
    assert!(takes(g), "bf16 direct wgrad: stride 1");
    let v = View::of(g, pixels);
    let cbs = v.c / BLOCK;
    let ntaps = v.taps.len();
    // Every element is written by the first chunk's tiles (each (tap, block, run) once); later
    // chunks add to it. No zero fill: dW is as large as the layer's weights.
    let mut blocked: Vec<f32> = Vec::with_capacity(ntaps * v.c * v.k);
    let parities = parities(g);
    // Runs of output channels within each block of 32 (dy's pairs are packed per block).
    let oblocks: Vec<(usize, usize)> = (0..v.k / BLOCK)
        .flat_map(|kb| row_chunks(BLOCK, MAX_PIXELS).into_iter().map(move |(j, r)| (kb * BLOCK + j, r)))
        .collect();
    // The tiles in the order of `order`: rayon gives each thread a run of consecutive ones.
    let mut work = Vec::with_capacity(cbs * ntaps * oblocks.len());
    if order(v.c, v.k, parities) {
        for &ob in &oblocks {
            work.extend((0..cbs).flat_map(|cb| (0..ntaps).map(move |t| (cb, t, ob))));
        }
    } else {
        for cb in 0..cbs {
            for t in 0..ntaps {
                work.extend(oblocks.iter().map(|&ob| (cb, t, ob)));
            }
        }
    }
    let run_tile: unsafe fn(usize, &WgradTile) = match tiles {
        #[cfg(target_arch = "x86_64")]
        Tiles::Dot => kernel::wgrad_hardware,
        Tiles::DotEmulated => kernel::wgrad_emulated,
        _ => unreachable!("the direct bf16 kernels run vdpbf16ps or its emulation"),
    };
    tiles.record();
    let sums = SumsPtr(blocked.as_mut_ptr());
    for (ci, chunk) in v.chunks(pixels).into_iter().enumerate() {
        let out_rows: usize = chunk.iter().map(|&(_, r0, r1)| r1 - r0).sum();
        let in_rows = out_rows + chunk.len() * v.eh;
        let copy_len = cbs * in_rows * v.xq * 32;
        with_scratch::<f32, _>([parities * copy_len, out_rows * v.pairs * v.k], |xs, ds| {
            let xs: &mut [u32] = bytemuck::cast_slice_mut(xs);
            let ds: &mut [u32] = bytemuck::cast_slice_mut(ds);
            // Per output row: the offset of its first pair in an input copy (tap (0, 0)); its
            // pairs of dy follow the previous row's.
            let mut rows = Vec::with_capacity(out_rows);
            let mut xr = 0;
            for &(_, r0, r1) in &chunk {
                rows.extend((0..r1 - r0).map(|i| (xr + i) * v.xq * 32));
                xr += r1 - r0 + v.eh;
            }
            let wide = tiles == Tiles::Dot;
            pack_input(xs, x, &v, &chunk, in_rows, parities, wide);
            pack_dy(ds, dy, &v, &chunk, wide);
            let (xs, ds) = (&*xs, &*ds);
            work.par_iter().for_each(|&(cb, t, (o0, r))| {
                let (tr, tc) = v.taps[t];
                let copy = (tc % 2) * copy_len + cb * in_rows * v.xq * 32;
                let tile = WgradTile {
                    x: xs[copy + (tr * v.xq + tc / 2) * 32..].as_ptr(),
                    dy: ds[(o0 / BLOCK) * out_rows * v.pairs * BLOCK + o0 % BLOCK..].as_ptr(),
                    rows: &rows,
                    pairs: v.pairs,
                    sums: sums.get().wrapping_add(((t * cbs + cb) * v.k + o0) * BLOCK),
                    accumulate: ci > 0,
                };
                // SAFETY: output row i of a run reads input-copy row i + tr ≤ the run's last
                // row + eh, pairs tc/2 + q < xq (View::of), inside copy `tc mod 2` of block cb;
                // dy's row i, pairs q < pairs, channels o0 + j < K; the tile's sums are rows
                // o0..o0 + r of block (t, cb), which no other tile touches (read only after
                // the first chunk wrote them). The instruction
                // runs only for Tiles::Dot, which exists only where the CPU has AVX512-BF16.
                unsafe { run_tile(r, &tile) };
            });
        });
    }
    // SAFETY: the capacity holds ntaps·C·K floats, all written by the first chunk (there is at
    // least one: takes(), asserted above, requires output pixels).
    unsafe { blocked.set_len(ntaps * v.c * v.k) };
    WeightGrad { blocked, g: *g, transposed: false }
}

/// The chunk's input rows (each run's output rows plus the filter's reach, zero-padded) into
/// `dst` as `[alignment][C/32][row][xq pairs][32]`: alignment 0 pairs columns `(2q, 2q + 1)` of
/// the padded map, alignment 1 `(2q + 1, 2q + 2)`; each dword is a pair of one channel, the
/// lower column in the low half. `wide`: compiled for AVX-512 (x86-64 only).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn pack_input(
    dst: &mut [u32],
    x: &[u16],
    v: &View,
    chunk: &[(usize, usize, usize)],
    in_rows: usize,
    parities: usize,
    wide: bool,
) {
    // (image, padded row) of each input-copy row.
    let sources: Vec<(usize, usize)> =
        chunk.iter().flat_map(|&(n, r0, r1)| (r0..r1 + v.eh).map(move |pr| (n, pr))).collect();
    debug_assert_eq!(sources.len(), in_rows);
    let cbs = v.c / BLOCK;
    dst[..parities * cbs * in_rows * v.xq * 32].par_chunks_mut(v.xq * 32).enumerate().for_each(|(k, d)| {
        let (par, rest) = (k / (cbs * in_rows), k % (cbs * in_rows));
        let (cb, (n, pr)) = (rest / in_rows, sources[rest % in_rows]);
        match pr.checked_sub(v.pt).filter(|&ih| ih < v.h) {
            Some(ih) => {
                let line = &x[(n * v.h + ih) * v.w * v.c + cb * BLOCK..];
                // SAFETY: `wide` only where the CPU has AVX-512 (Tiles::Dot).
                #[cfg(target_arch = "x86_64")]
                if wide {
                    return unsafe { avx512::pair_row(d, line, v, par) };
                }
                pair_row(d, line, v, par)
            }
            None => d.fill(0),
        }
    });
}

/// One row of an input copy: pair `q` of alignment `par` from the padded columns `2q + par`
/// and `2q + par + 1` of `line` (the image row from channel `32·cb` on; zeros outside it).
#[inline(always)]
fn pair_row(d: &mut [u32], line: &[u16], v: &View, par: usize) {
    const ZEROS: [u16; BLOCK] = [0; BLOCK];
    let px = |col: usize| match col.checked_sub(v.pl).filter(|&iw| iw < v.w) {
        Some(iw) => &line[iw * v.c..][..BLOCK],
        None => &ZEROS[..],
    };
    for (q, out) in d.chunks_exact_mut(32).enumerate() {
        interleave(px(2 * q + par), px(2 * q + par + 1), out);
    }
}

/// `out[j] = a[j] | b[j] << 16`: two runs of values as pairs, `a` in the low halves.
#[inline(always)]
fn interleave(a: &[u16], b: &[u16], out: &mut [u32]) {
    for (o, (&a, &b)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = a as u32 | (b as u32) << 16;
    }
}

/// The chunk's output-gradient rows into `dst` as `[K/32][row][pair][32]`: each dword the
/// pair's two values of one output channel (the second zero past an odd row's end), so that a
/// tile's channels are one stream of 64-byte lines.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // `wide`: x86-64 only
fn pack_dy(dst: &mut [u32], dy: &[u16], v: &View, chunk: &[(usize, usize, usize)], wide: bool) {
    let rows: Vec<(usize, usize)> = chunk.iter().flat_map(|&(n, r0, r1)| (r0..r1).map(move |r| (n, r))).collect();
    let per_row = v.pairs * BLOCK;
    dst[..v.k * rows.len() * v.pairs].par_chunks_mut(per_row).enumerate().for_each(|(i, d)| {
        let (kb, (n, r)) = (i / rows.len(), rows[i % rows.len()]);
        let line = &dy[(n * v.oh + r) * v.ow * v.k + kb * BLOCK..];
        // SAFETY: `wide` only where the CPU has AVX-512 (Tiles::Dot).
        #[cfg(target_arch = "x86_64")]
        if wide {
            return unsafe { avx512::dy_row(d, line, v) };
        }
        dy_row(d, line, v)
    });
}

/// One row of `dy`'s pairs for 32 output channels (`line` from the first): pixel `2q` in the
/// low halves, `2q + 1` (or zeros) in the high.
#[inline(always)]
fn dy_row(d: &mut [u32], line: &[u16], v: &View) {
    for (q, out) in d.chunks_exact_mut(BLOCK).enumerate() {
        let a = &line[2 * q * v.k..][..BLOCK];
        if 2 * q + 1 < v.ow {
            interleave(a, &line[(2 * q + 1) * v.k..][..BLOCK], out);
        } else {
            out.iter_mut().zip(a).for_each(|(o, &a)| *o = a as u32);
        }
    }
}

/// The packings compiled for AVX-512 (every CPU that runs `vdpbf16ps` has it): the same code,
/// vectorized wider.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::View;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn pair_row(d: &mut [u32], line: &[u16], v: &View, par: usize) {
        super::pair_row(d, line, v, par)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn dy_row(d: &mut [u32], line: &[u16], v: &View) {
        super::dy_row(d, line, v)
    }
}
