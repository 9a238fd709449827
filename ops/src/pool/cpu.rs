//! CPU kernels of the pooling ops. Each works plane by plane (one `[H, W]` matrix and its
//! `[out_h, out_w]` result); planes are independent, and inside a plane the loops run in a fixed
//! order, so the parallel split never changes a result (backward accumulations included).

use bitgrad_engine::cpu::strided::PAR_THRESHOLD;
use bitgrad_engine::{FloatElem, WithDType};
use rayon::prelude::*;

use super::PoolGeom;
use crate::pad::cpu::for_each_plane;

/// The input rows (or columns) `start..end` covered by output index `o` along one axis, clipped
/// to the real input `0..n`; also the unclipped extent within the padded input (PyTorch's
/// `count_include_pad` divisor).
#[inline]
pub(super) fn window(o: usize, k: usize, s: usize, p: usize, n: usize) -> (usize, usize, usize) {
    let start = (o * s) as isize - p as isize;
    let end_padded = (start + k as isize).min((n + p) as isize);
    let padded_len = (end_padded - start) as usize;
    (start.max(0) as usize, (end_padded.min(n as isize)) as usize, padded_len)
}

/// Max pooling: the outputs and, per output, the in-plane position of its first maximum.
pub fn max_forward<T: FloatElem>(x: &[T], g: &PoolGeom) -> (Vec<T>, Vec<u32>) {
    let (in_len, out_len) = (g.h * g.w, g.out_h * g.out_w);
    let mut out = vec![T::zero(); g.planes * out_len];
    let mut arg = vec![0u32; g.planes * out_len];
    // BiT's stem pool in f32 has a vector kernel (max_avx2.rs); everything else the plain loop.
    let fast = std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() && super::max_avx2::applies(g);
    let plane = |p: usize, (o, a): (&mut [T], &mut [u32])| {
        let xp = &x[p * in_len..(p + 1) * in_len];
        if fast {
            // SAFETY: T is f32 (checked above), so the slices are f32 slices.
            let (xp, o) = unsafe {
                (
                    std::slice::from_raw_parts(xp.as_ptr().cast::<f32>(), xp.len()),
                    std::slice::from_raw_parts_mut(o.as_mut_ptr().cast::<f32>(), o.len()),
                )
            };
            return super::max_avx2::max_plane(xp, g, o, a);
        }
        for oh in 0..g.out_h {
            for ow in 0..g.out_w {
                (o[oh * g.out_w + ow], a[oh * g.out_w + ow]) = max_output(xp, g, oh, ow);
            }
        }
    };
    if out_len > 0 {
        if out.len() >= PAR_THRESHOLD {
            out.par_chunks_mut(out_len).zip(arg.par_chunks_mut(out_len)).enumerate().for_each(|(p, c)| plane(p, c));
        } else {
            out.chunks_mut(out_len).zip(arg.chunks_mut(out_len)).enumerate().for_each(|(p, c)| plane(p, c));
        }
    }
    (out, arg)
}

/// One output of a max pool over the plane `xp`: the maximum of its window and the in-plane
/// position of its first occurrence.
#[inline]
pub(super) fn max_output<T: FloatElem>(xp: &[T], g: &PoolGeom, oh: usize, ow: usize) -> (T, u32) {
    let (h0, h1, _) = window(oh, g.kernel[0], g.stride[0], g.padding[0], g.h);
    let (w0, w1, _) = window(ow, g.kernel[1], g.stride[1], g.padding[1], g.w);
    // As PyTorch's CPU kernel: start at −∞ pointing at the first real element; a later element
    // replaces the maximum only when strictly greater (or NaN).
    let (mut best, mut best_at) = (T::neg_infinity(), h0 * g.w + w0);
    for i in h0..h1 {
        for (j, &v) in xp[i * g.w + w0..i * g.w + w1].iter().enumerate() {
            if v > best || v.is_nan() {
                best = v;
                best_at = i * g.w + w0 + j;
            }
        }
    }
    (best, best_at as u32)
}

/// Max-pool backward: each output gradient added at its argmax.
pub fn max_backward<T: FloatElem>(gy: &[T], g: &PoolGeom, argmax: &[u32]) -> Vec<T> {
    let (in_len, out_len) = (g.h * g.w, g.out_h * g.out_w);
    let mut gx = vec![T::zero(); g.planes * in_len];
    for_each_plane(&mut gx, in_len, |p, gxp| {
        let span = p * out_len..(p + 1) * out_len;
        for (&d, &at) in gy[span.clone()].iter().zip(&argmax[span]) {
            gxp[at as usize] = gxp[at as usize] + d;
        }
    });
    gx
}

/// The divisor of one average-pool window (see the module docs).
#[inline]
fn divisor(rows: (usize, usize, usize), cols: (usize, usize, usize), count_include_pad: bool) -> usize {
    if count_include_pad {
        rows.2 * cols.2
    } else {
        (rows.1 - rows.0) * (cols.1 - cols.0)
    }
}

/// Average pooling.
pub fn avg_forward<T: FloatElem>(x: &[T], g: &PoolGeom, count_include_pad: bool) -> Vec<T> {
    let (in_len, out_len) = (g.h * g.w, g.out_h * g.out_w);
    let mut out = vec![T::zero(); g.planes * out_len];
    for_each_plane(&mut out, out_len, |p, o| {
        let xp = &x[p * in_len..(p + 1) * in_len];
        for oh in 0..g.out_h {
            let rows = window(oh, g.kernel[0], g.stride[0], g.padding[0], g.h);
            for ow in 0..g.out_w {
                let cols = window(ow, g.kernel[1], g.stride[1], g.padding[1], g.w);
                let mut sum = T::zero();
                for i in rows.0..rows.1 {
                    for &v in &xp[i * g.w + cols.0..i * g.w + cols.1] {
                        sum = sum + v;
                    }
                }
                o[oh * g.out_w + ow] = sum / T::from_usize(divisor(rows, cols, count_include_pad)).unwrap();
            }
        }
    });
    out
}

/// Average-pool backward: `g[o] / d` added to every real element of window `o`.
pub fn avg_backward<T: FloatElem>(gy: &[T], g: &PoolGeom, count_include_pad: bool) -> Vec<T> {
    let (in_len, out_len) = (g.h * g.w, g.out_h * g.out_w);
    let mut gx = vec![T::zero(); g.planes * in_len];
    for_each_plane(&mut gx, in_len, |p, gxp| {
        let gyp = &gy[p * out_len..(p + 1) * out_len];
        for oh in 0..g.out_h {
            let rows = window(oh, g.kernel[0], g.stride[0], g.padding[0], g.h);
            for ow in 0..g.out_w {
                let cols = window(ow, g.kernel[1], g.stride[1], g.padding[1], g.w);
                let share = gyp[oh * g.out_w + ow] / T::from_usize(divisor(rows, cols, count_include_pad)).unwrap();
                for i in rows.0..rows.1 {
                    for d in &mut gxp[i * g.w + cols.0..i * g.w + cols.1] {
                        *d = *d + share;
                    }
                }
            }
        }
    });
    gx
}

/// The mean of each consecutive `plane`-sized block of `x`, summed in f64.
pub fn plane_means<T: FloatElem>(x: &[T], plane: usize) -> Vec<T> {
    let mean =
        |xp: &[T]| <T as WithDType>::from_f64(xp.iter().map(|&v| WithDType::to_f64(v)).sum::<f64>() / plane as f64);
    if x.len() >= PAR_THRESHOLD {
        x.par_chunks(plane).map(mean).collect()
    } else {
        x.chunks(plane).map(mean).collect()
    }
}

/// Global-average-pool backward: each plane filled with its gradient divided by the plane size.
pub fn spread_means<T: FloatElem>(gy: &[T], plane: usize) -> Vec<T> {
    let mut gx = vec![T::zero(); gy.len() * plane];
    let n = T::from_usize(plane).unwrap();
    for_each_plane(&mut gx, plane, |p, gxp| gxp.fill(gy[p] / n));
    gx
}
