//! CPU kernels of pad2d: fill a padded plane, and crop the interior back out (its backward).
//!
//! Both work plane by plane (one plane = one `[H, W]` matrix); planes are independent, so the
//! parallel split cannot change any result.

use bitgrad_engine::cpu::strided::PAR_THRESHOLD;
use rayon::prelude::*;

use super::PadGeom;

/// Calls `f(plane_index, out_plane)` for each `plane_len`-sized chunk of `out`, in parallel when
/// the whole output is large. Shared by the pooling kernels.
pub(crate) fn for_each_plane<T: Send>(out: &mut [T], plane_len: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if out.is_empty() || plane_len == 0 {
        return;
    }
    if out.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(plane_len).enumerate().for_each(|(p, o)| f(p, o));
    } else {
        out.chunks_mut(plane_len).enumerate().for_each(|(p, o)| f(p, o));
    }
}

/// `x` (contiguous `[planes, h, w]`) padded to `[planes, out_h, out_w]` with `value`.
pub fn pad<T: Copy + Send + Sync>(x: &[T], g: PadGeom, value: T) -> Vec<T> {
    let (oh, ow) = (g.out_h(), g.out_w());
    let [top, _, left, _] = g.pads;
    let mut out = vec![value; g.planes * oh * ow];
    for_each_plane(&mut out, oh * ow, |p, o| {
        let src = &x[p * g.h * g.w..(p + 1) * g.h * g.w];
        for i in 0..g.h {
            let row = (top + i) * ow + left;
            o[row..row + g.w].copy_from_slice(&src[i * g.w..(i + 1) * g.w]);
        }
    });
    out
}

/// The interior `[top..top + h, left..left + w]` of each padded plane of `y` (contiguous
/// `[planes, out_h, out_w]`), as a contiguous `[planes, h, w]`.
pub fn crop<T: Copy + Default + Send + Sync>(y: &[T], g: PadGeom) -> Vec<T> {
    let (oh, ow) = (g.out_h(), g.out_w());
    let [top, _, left, _] = g.pads;
    let mut out = vec![T::default(); g.planes * g.h * g.w];
    for_each_plane(&mut out, g.h * g.w, |p, o| {
        let src = &y[p * oh * ow..(p + 1) * oh * ow];
        for i in 0..g.h {
            let row = (top + i) * ow + left;
            o[i * g.w..(i + 1) * g.w].copy_from_slice(&src[row..row + g.w]);
        }
    });
    out
}
