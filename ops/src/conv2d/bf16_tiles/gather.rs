//! The gathers that build the packed `A` and `B` panels of the bf16 tile passes straight from NHWC
//! tensors: each k-step of 32 is one 32-channel run of one pixel under one tap (64 contiguous
//! bytes), or zeros where the tap falls in the padding or outside the map.

use super::{Geom, Phase, BLOCK, STEP_LEN};
use crate::bf16_gemm::amx::TILE_LEN;

/// Where row `local` (0–31) of a 32-row `A` panel starts in k-step `ks`.
fn row_at(local: usize, ks: usize) -> usize {
    ks * STEP_LEN + (local / 16) * TILE_LEN + (local % 16) * BLOCK
}

fn put(panel: &mut [u16], local: usize, ks: usize, src: Option<&[u16]>) {
    let dst = &mut panel[row_at(local, ks)..][..BLOCK];
    match src {
        Some(s) => dst.copy_from_slice(&s[..BLOCK]),
        None => dst.fill(0),
    }
}

/// Row `local` of an `A` panel set to zeros (rows past the end of the matrix).
pub(super) fn zero_row(panel: &mut [u16], local: usize, ksteps: usize) {
    for ks in 0..ksteps {
        put(panel, local, ks, None);
    }
}

/// `(n, i, j)` of pixel `m` of a batch of `rows × cols` maps.
fn pixel(m: usize, rows: usize, cols: usize) -> (usize, usize, usize) {
    let per = rows * cols;
    (m / per, (m % per) / cols, m % cols)
}

/// The input coordinate under tap offset `t` (`t·dilation`) of output coordinate `o`, if inside.
fn input_at(o: usize, t: usize, stride: usize, dil: usize, pad: usize, size: usize) -> Option<usize> {
    (o * stride + t * dil).checked_sub(pad).filter(|&i| i < size)
}

/// The output coordinate whose tap `t` reads input coordinate `i`, if there is one.
fn output_at(i: usize, t: usize, stride: usize, dil: usize, pad: usize, size: usize) -> Option<usize> {
    (i + pad).checked_sub(t * dil).filter(|v| v % stride == 0).map(|v| v / stride).filter(|&o| o < size)
}

/// fprop's `A` row of output pixel `m`: per tap, the input pixel's channels in runs of 32.
pub(super) fn fprop_row(x: &[u16], g: &Geom, m: usize, panel: &mut [u16], local: usize) {
    let (n, oh, ow) = pixel(m, g.oh, g.ow);
    let runs = g.c / BLOCK;
    for r in 0..g.kh {
        let ih = input_at(oh, r, g.stride[0], g.dilation[0], g.pad[0], g.h);
        for s in 0..g.kw {
            let iw = input_at(ow, s, g.stride[1], g.dilation[1], g.pad[2], g.w);
            let base = ih.zip(iw).map(|(ih, iw)| ((n * g.h + ih) * g.w + iw) * g.c);
            let tap = r * g.kw + s;
            for b in 0..runs {
                put(panel, local, tap * runs + b, base.map(|o| &x[o + b * BLOCK..]));
            }
        }
    }
}

/// dgrad's `A` row of pixel `m` of the input class `phase` (see [`Phase`]): per tap of the
/// class, the output gradient of the pixel that read it through that tap (zeros where the tap
/// falls outside the output map).
pub(super) fn dgrad_row(dy: &[u16], g: &Geom, phase: &Phase, m: usize, panel: &mut [u16], local: usize) {
    let (n, a, b) = pixel(m, phase.rows, phase.cols);
    let (ih, iw) = (phase.ph + a * g.stride[0], phase.pw + b * g.stride[1]);
    let runs = g.o / BLOCK;
    let mut tap = 0;
    for &r in &phase.taps_r {
        let oh = output_at(ih, r, g.stride[0], g.dilation[0], g.pad[0], g.oh);
        for &s in &phase.taps_s {
            let ow = output_at(iw, s, g.stride[1], g.dilation[1], g.pad[2], g.ow);
            let base = oh.zip(ow).map(|(oh, ow)| ((n * g.oh + oh) * g.ow + ow) * g.o);
            for b in 0..runs {
                put(panel, local, tap * runs + b, base.map(|o| &dy[o + b * BLOCK..]));
            }
            tap += 1;
        }
    }
}

/// Where the weight gradient's rows come from: per output pixel of the chunk, one run of 32
/// values of `dy` or of the input under a tap.
#[derive(Clone, Copy)]
pub(super) enum Rows<'a> {
    /// `dy`'s channels `32·block…` of the output pixel.
    Dy { dy: &'a [u16], block: usize },
    /// `x`'s channels `32·run…` of the input pixel under tap `tap` of the output pixel (zeros
    /// where the tap falls in the padding).
    X { x: &'a [u16], tap: usize, run: usize },
}

impl<'a> Rows<'a> {
    /// The rows of pixels `p0 + pix`, asked for with `pix = 0, 1, 2, …` in order; `None` from
    /// `len` on and in the padding.
    #[inline(always)]
    fn reader(self, g: &'a Geom, p0: usize, len: usize) -> impl FnMut(usize) -> Option<&'a [u16]> + 'a {
        let mut pixels = Pixels::from(p0, g.oh, g.ow);
        move |pix| {
            if pix >= len {
                return None;
            }
            match self {
                Rows::Dy { dy, block } => Some(&dy[(p0 + pix) * g.o + block * BLOCK..][..BLOCK]),
                Rows::X { x, tap, run } => {
                    let (n, oh, ow) = pixels.next();
                    let (r, s) = (tap / g.kw, tap % g.kw);
                    let ih = input_at(oh, r, g.stride[0], g.dilation[0], g.pad[0], g.h)?;
                    let iw = input_at(ow, s, g.stride[1], g.dilation[1], g.pad[2], g.w)?;
                    Some(&x[((n * g.h + ih) * g.w + iw) * g.c + run * BLOCK..][..BLOCK])
                }
            }
        }
    }
}

/// A weight-gradient `A` panel for pixels `p0..p0 + len`: `rows` transposed — the panel's 32
/// rows are the 32 values of each pixel's row, `k` runs over the pixels (zeros past `len`).
#[inline(always)]
pub(super) fn transposed_panel(rows: Rows, g: &Geom, p0: usize, len: usize, panel: &mut [u16]) {
    let mut row = rows.reader(g, p0, len);
    for (ks, step) in panel.chunks_mut(STEP_LEN).enumerate() {
        for p in 0..BLOCK {
            let src = row(ks * BLOCK + p);
            for i in 0..BLOCK {
                step[(i / 16) * TILE_LEN + (i % 16) * BLOCK + p] = src.map_or(0, |s| s[i]);
            }
        }
    }
}

/// Pixels of a batch of `rows × cols` maps in order, from pixel `m`: `(n, i, j)` without a
/// division per step.
struct Pixels {
    at: (usize, usize, usize),
    rows: usize,
    cols: usize,
}

impl Pixels {
    fn from(m: usize, rows: usize, cols: usize) -> Self {
        Pixels { at: pixel(m, rows, cols), rows, cols }
    }
    fn next(&mut self) -> (usize, usize, usize) {
        let now = self.at;
        let (n, i, j) = &mut self.at;
        *j += 1;
        if *j == self.cols {
            *j = 0;
            *i += 1;
            if *i == self.rows {
                *i = 0;
                *n += 1;
            }
        }
        now
    }
}

/// A weight-gradient `B` panel for pixels `p0..p0 + len`: per pixel pair, the two pixels' rows
/// interleaved value by value (zeros past `len` and in the padding).
#[inline(always)]
pub(super) fn pair_panel(rows: Rows, g: &Geom, p0: usize, len: usize, panel: &mut [u16]) {
    let mut row = rows.reader(g, p0, len);
    const ZEROS: [u16; BLOCK] = [0; BLOCK];
    for (ks, step) in panel.chunks_mut(STEP_LEN).enumerate() {
        for pair in 0..16 {
            let s0 = row(ks * BLOCK + 2 * pair).unwrap_or(&ZEROS);
            let s1 = row(ks * BLOCK + 2 * pair + 1).unwrap_or(&ZEROS);
            for tj in 0..2 {
                interleave(
                    &s0[tj * 16..][..16],
                    &s1[tj * 16..][..16],
                    &mut step[tj * TILE_LEN + pair * BLOCK..][..BLOCK],
                );
            }
        }
    }
}

/// `dst = a₀ b₀ a₁ b₁ …`: two runs of 16 values as 16 pairs (one row of a `B` tile).
#[inline(always)]
fn interleave(a: &[u16], b: &[u16], dst: &mut [u16]) {
    for (j, d) in dst.chunks_exact_mut(2).enumerate() {
        d[0] = a[j];
        d[1] = b[j];
    }
}

/// The wgrad panels built with AVX-512 (every CPU that runs the instructions has it): the same
/// code, vectorized wider.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use super::{Geom, Rows};

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(in super::super) unsafe fn transposed_panel(rows: Rows, g: &Geom, p0: usize, len: usize, panel: &mut [u16]) {
        super::transposed_panel(rows, g, p0, len, panel)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(in super::super) unsafe fn pair_panel(rows: Rows, g: &Geom, p0: usize, len: usize, panel: &mut [u16]) {
        super::pair_panel(rows, g, p0, len, panel)
    }
}
