//! Moving data between images and column matrices.
//!
//! A chunk of `n_img` images has the column matrix `cols[k_all, n_img·P]`: row `r = (c, i, j)`
//! (channel, kernel row, kernel column — the order of a weight's `[I, kh, kw]` axes), column
//! `q = b·P + oh·OW + ow`, value `x[b, c, oh·sh + i·dh − pt, ow·sw + j·dw − pl]` (zero in the
//! padding). A group's rows are a contiguous block, so a group's weights `[Og, Kg]` times its
//! block of rows is that group's output.
//!
//! Every function here is a plain copy or a fixed-order sum, split over rayon tasks that own
//! disjoint output rows or planes: the result never depends on the thread count.

use std::ops::Range;

use bitgrad_engine::FloatElem;
use rayon::prelude::*;

use super::params::Geom;

/// Work below this many elements runs on the calling thread; above it, tasks get at least this
/// many elements each so that scheduling stays a small fraction of the copying.
const MIN_TASK: usize = 16 * 1024;

/// Calls `f(index, row)` for every `row_len`-long row of `buf`, in parallel when it pays.
fn for_each_row<T: Send>(buf: &mut [T], row_len: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if row_len == 0 {
        return;
    }
    if buf.len() < 2 * MIN_TASK {
        buf.chunks_mut(row_len).enumerate().for_each(|(i, r)| f(i, r));
        return;
    }
    let per_task = MIN_TASK.div_ceil(row_len);
    buf.par_chunks_mut(per_task * row_len).enumerate().for_each(|(t, block)| {
        for (i, r) in block.chunks_mut(row_len).enumerate() {
            f(t * per_task + i, r)
        }
    });
}

/// The range of output positions `o` whose input position `o·s + off` (`off = k·d − pad`) lies
/// in `0..n`, for one kernel offset along one axis.
fn valid_range(out: usize, n: usize, s: usize, off: isize) -> (usize, usize) {
    // o·s + off ≥ 0  ⇔  o ≥ ⌈−off / s⌉
    let lo = if off >= 0 { 0 } else { ((-off) as usize).div_ceil(s) };
    // o·s + off ≤ n − 1  ⇔  o ≤ ⌊(n − 1 − off) / s⌋
    let last = n as isize - 1 - off;
    let hi = if last < 0 { 0 } else { (last as usize / s + 1).min(out) };
    (lo.min(hi), hi)
}

/// Kernel offset `(i, j)` of column-matrix row `r`, and its channel.
fn row_coords(g: &Geom, r: usize) -> (usize, usize, usize) {
    (r / (g.kh * g.kw), (r / g.kw) % g.kh, r % g.kw)
}

fn offsets(g: &Geom, i: usize, j: usize) -> (isize, isize) {
    ((i * g.dilation[0]) as isize - g.pad[0] as isize, (j * g.dilation[1]) as isize - g.pad[2] as isize)
}

/// im2col: fills `cols[k_all, n_img·P]` from the images `x[n_img, c, h, w]`.
pub(crate) fn im2col<T: FloatElem>(x: &[T], g: &Geom, n_img: usize, cols: &mut [T]) {
    let (p, hw, n) = (g.p(), g.hw(), n_img * g.p());
    debug_assert_eq!(cols.len(), g.k_all() * n);
    for_each_row(cols, n, |r, row| {
        let (c, i, j) = row_coords(g, r);
        for b in 0..n_img {
            let plane = &x[(b * g.c + c) * hw..][..hw];
            im2col_plane(plane, g, i, j, 0..g.oh, &mut row[b * p..(b + 1) * p]);
        }
    });
}

/// im2col of the output rows `rows` of one image `x[c, h, w]`: `cols[k_all, rows.len()·OW]`.
pub(crate) fn im2col_rows<T: FloatElem>(x: &[T], g: &Geom, rows: Range<usize>, cols: &mut [T]) {
    let (hw, n) = (g.hw(), rows.len() * g.ow);
    debug_assert_eq!(cols.len(), g.k_all() * n);
    for_each_row(cols, n, |r, row| {
        let (c, i, j) = row_coords(g, r);
        im2col_plane(&x[c * hw..][..hw], g, i, j, rows.clone(), row);
    });
}

/// One image's part of one column-matrix row: the plane `src[h, w]` seen through kernel
/// offset `(i, j)` at the output rows `rows`, written to `dst[rows.len(), ow]`.
fn im2col_plane<T: FloatElem>(src: &[T], g: &Geom, i: usize, j: usize, rows: Range<usize>, dst: &mut [T]) {
    let [sh, sw] = g.stride;
    let (off_h, off_w) = offsets(g, i, j);
    let (lo, hi) = valid_range(g.ow, g.w, sw, off_w);
    let (oh_lo, oh_hi) = valid_range(g.oh, g.h, sh, off_h);
    // Output rows that see the image, relative to `rows.start`.
    let (a, z) = (oh_lo.clamp(rows.start, rows.end) - rows.start, oh_hi.clamp(rows.start, rows.end) - rows.start);
    dst[..a * g.ow].fill(T::zero());
    dst[z * g.ow..].fill(T::zero());
    if hi == lo || z == a {
        dst.fill(T::zero()); // this kernel offset only sees padding here
        return;
    }
    let ih0 = ((rows.start + a) * sh) as isize + off_h; // input row of output row `a`, ≥ 0
    if sh == 1 && sw == 1 && g.ow == g.w {
        // Output and input rows have the same length and advance together, so all valid rows
        // are one shifted copy; the columns a row borrowed from its neighbours (outside lo..hi)
        // are then cleared.
        let (start, end) = (a * g.ow + lo, (z - 1) * g.ow + hi);
        let src_start = (ih0 * g.w as isize + lo as isize + off_w) as usize;
        dst[start..end].copy_from_slice(&src[src_start..src_start + (end - start)]);
        for row in dst[a * g.ow..z * g.ow].chunks_exact_mut(g.ow) {
            row[..lo].fill(T::zero());
            row[hi..].fill(T::zero());
        }
        return;
    }
    let first = ((lo * sw) as isize + off_w) as usize; // ≥ 0 by construction of `lo`
    for (k, d) in dst[a * g.ow..z * g.ow].chunks_exact_mut(g.ow).enumerate() {
        let ih = ih0 as usize + k * sh;
        let src_row = &src[ih * g.w..][..g.w];
        d[..lo].fill(T::zero());
        d[hi..].fill(T::zero());
        copy_strided(&src_row[first..], sw, &mut d[lo..hi]);
    }
}

/// `dst[k] = src[k·s]` for every k.
fn copy_strided<T: FloatElem>(src: &[T], s: usize, dst: &mut [T]) {
    match s {
        1 => dst.copy_from_slice(&src[..dst.len()]),
        // Stride 2 (every downsampling conv of a ResNet) gets a loop the compiler vectorizes
        // (a deinterleave); the last element may lack its pair at the end of the row.
        2 => {
            let Some((last, body)) = dst.split_last_mut() else { return };
            for (d, pair) in body.iter_mut().zip(src.chunks_exact(2)) {
                *d = pair[0];
            }
            *last = src[2 * body.len()];
        }
        _ => dst.iter_mut().zip(src.iter().step_by(s)).for_each(|(d, &v)| *d = v),
    }
}

/// col2im: adds the columns `cols[k_all, n_img·P]` back onto the images `dx[n_img, c, h, w]`
/// they were taken from (the adjoint of [`im2col`]). Each task owns whole `(b, c)` planes of
/// `dx` and adds its kernel offsets in the fixed order `(i, j, oh, ow)`.
pub(crate) fn col2im_add<T: FloatElem>(cols: &[T], g: &Geom, n_img: usize, dx: &mut [T]) {
    let (p, n) = (g.p(), n_img * g.p());
    debug_assert_eq!(cols.len(), g.k_all() * n);
    debug_assert_eq!(dx.len(), n_img * g.c * g.hw());
    for_each_row(dx, g.hw(), |plane_idx, plane| {
        let (b, c) = (plane_idx / g.c, plane_idx % g.c);
        col2im_plane(|r| &cols[r * n + b * p..][..p], g, c, 0..g.oh, plane);
    });
}

/// Adds channel `c`'s column rows (`src(r)` = row `r`'s values at the output rows `rows`) onto
/// its input plane, kernel offset by kernel offset.
fn col2im_plane<'a, T: FloatElem>(
    src: impl Fn(usize) -> &'a [T],
    g: &Geom,
    c: usize,
    rows: Range<usize>,
    plane: &mut [T],
) {
    let kk = g.kh * g.kw;
    let [sh, sw] = g.stride;
    for r in c * kk..(c + 1) * kk {
        let (_, i, j) = row_coords(g, r);
        let (off_h, off_w) = offsets(g, i, j);
        let (lo, hi) = valid_range(g.ow, g.w, sw, off_w);
        if hi == lo {
            continue;
        }
        let first = ((lo * sw) as isize + off_w) as usize;
        for (oh, s) in rows.clone().zip(src(r).chunks_exact(g.ow)) {
            let ih = (oh * sh) as isize + off_h;
            if ih < 0 || ih >= g.h as isize {
                continue;
            }
            let dst = &mut plane[ih as usize * g.w..][..g.w];
            if sw == 1 {
                for (d, &v) in dst[first..first + (hi - lo)].iter_mut().zip(&s[lo..hi]) {
                    *d = *d + v;
                }
            } else {
                for (d, &v) in dst[first..].iter_mut().step_by(sw).zip(&s[lo..hi]) {
                    *d = *d + v;
                }
            }
        }
    }
}

/// Gathers `rows` rows of `P` values from each of `n_img` images laid out `[n_img, rows, P]`
/// into the matrix `[rows, n_img·P]` (column `b·P + p`), the layout of a chunk's GEMM operand.
pub(crate) fn gather_images<T: FloatElem>(src: &[T], rows: usize, p: usize, n_img: usize, dst: &mut [T]) {
    debug_assert_eq!(src.len(), n_img * rows * p);
    for_each_row(dst, n_img * p, |r, row| {
        for (b, d) in row.chunks_exact_mut(p).enumerate() {
            d.copy_from_slice(&src[(b * rows + r) * p..][..p]);
        }
    });
}

/// Like [`gather_images`], but transposed: `dst[n_img·P, rows]`, row `b·P + p` holding pixel
/// `p` of image `b` across all `rows`. Each task takes 64 pixels and reads them row by row
/// (contiguous runs), writing a `64 × rows` block that stays in L1/L2.
pub(crate) fn gather_images_transposed<T: FloatElem>(src: &[T], rows: usize, p: usize, n_img: usize, dst: &mut [T]) {
    const PIXELS: usize = 64;
    debug_assert_eq!(src.len(), n_img * rows * p);
    for_each_row(dst, PIXELS * rows, |blk, block| {
        let (q0, q1) = (blk * PIXELS, blk * PIXELS + block.len() / rows);
        let mut q = q0;
        while q < q1 {
            // A run of pixels of one image.
            let (b, p0) = (q / p, q % p);
            let run = (q1 - q).min(p - p0);
            for r in 0..rows {
                let s = &src[(b * rows + r) * p + p0..][..run];
                for (i, &v) in s.iter().enumerate() {
                    block[(q - q0 + i) * rows + r] = v;
                }
            }
            q += run;
        }
    });
}

/// The inverse of [`gather_images`], adding `bias[r]` to every value of row `r` on the way;
/// with `add`, the values are added to what `dst` holds (the residual of a fused
/// `conv2d_add`: `dst + (src + bias)`, the sum the separate add would make).
pub(crate) fn scatter_images<T: FloatElem>(
    src: &[T],
    rows: usize,
    p: usize,
    bias: Option<&[T]>,
    add: bool,
    dst: &mut [T],
) {
    let n = src.len() / rows.max(1);
    for_each_row(dst, p, |plane, d| {
        let (b, r) = (plane / rows, plane % rows);
        let s = &src[r * n + b * p..][..p];
        match (bias, add) {
            (Some(bias), false) => d.iter_mut().zip(s).for_each(|(d, &s)| *d = s + bias[r]),
            (Some(bias), true) => d.iter_mut().zip(s).for_each(|(d, &s)| *d = *d + (s + bias[r])),
            (None, false) => d.copy_from_slice(s),
            (None, true) => d.iter_mut().zip(s).for_each(|(d, &s)| *d = *d + s),
        }
    });
}
