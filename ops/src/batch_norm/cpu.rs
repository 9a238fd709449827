//! CPU kernels of batch norm, generic over f32/f64.
//!
//! The input is viewed as `[N, C, S]`. Channel c's elements are N runs of S (one per sample),
//! C·S apart, so the kernels come in two shapes: per-channel reductions (one task per channel,
//! walking its N runs) and per-run elementwise maps (one task per run of S, whose channel is
//! `run % C`). Each channel's sums are sequential, so results do not depend on the thread count.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::group_norm::lanes::{f64_of, filled_vec, of_f64, sum, sum_dev_sq, sum_dot};
use bitgrad_engine::FloatElem;

/// Sizes of one batch norm call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub n: usize,
    pub c: usize,
    /// Product of the spatial dims (1 when there are none).
    pub s: usize,
}

impl Dims {
    /// The runs of channel `ch`.
    fn runs<'a, T>(&self, data: &'a [T], ch: usize) -> impl Iterator<Item = &'a [T]> + 'a {
        let (c, s) = (self.c, self.s);
        (0..self.n).map(move |i| &data[(i * c + ch) * s..(i * c + ch + 1) * s])
    }
}

/// Channels (or runs) per rayon task, for ~16k elements per task.
fn min_per_task(elems: usize) -> usize {
    (16 * 1024 / elems.max(1)).max(1)
}

/// Per channel: (mean, biased variance) over (N, S), by the corrected two-pass algorithm.
pub(crate) fn channel_stats<T: FloatElem>(x: &[T], d: Dims) -> Vec<(f64, f64)> {
    let m = (d.n * d.s) as f64;
    (0..d.c)
        .into_par_iter()
        .with_min_len(min_per_task(d.n * d.s))
        .map(|ch| {
            let mean0 = d.runs(x, ch).map(sum).sum::<f64>() / m;
            let mt = of_f64::<T>(mean0);
            let (dev, sq) = d.runs(x, ch).map(|r| sum_dev_sq(r, mt)).fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
            (f64_of(mt) + dev / m, ((sq - dev * dev / m) / m).max(0.0))
        })
        .collect()
}

/// Per channel: (Σ g, Σ g·x) over (N, S).
pub(crate) fn channel_grad_sums<T: FloatElem>(g: &[T], x: &[T], d: Dims) -> Vec<(f64, f64)> {
    (0..d.c)
        .into_par_iter()
        .with_min_len(min_per_task(d.n * d.s))
        .map(|ch| {
            d.runs(g, ch).zip(d.runs(x, ch)).map(|(g, x)| sum_dot(g, x)).fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
        })
        .collect()
}

/// `out = a_c·u + b_c·v + k_c` per channel c (v may be absent: then `b` is ignored). This is the
/// forward (`u = x`, no v) and the input gradient (`u = g`, `v = x`).
pub(crate) fn per_channel_affine<T: FloatElem>(u: &[T], v: Option<&[T]>, d: Dims, a: &[T], b: &[T], k: &[T]) -> Vec<T> {
    filled_vec(u.len(), |out| {
        if d.s == 0 {
            return; // no elements
        }
        out.par_chunks_mut(d.s).enumerate().with_min_len(min_per_task(d.s)).for_each(|(run, o)| {
            let ch = run % d.c;
            let span = run * d.s..(run + 1) * d.s;
            affine_run(&u[span.clone()], v.map(|v| &v[span]), o, a[ch], b[ch], k[ch]);
        })
    })
}

crate::multiversion! {
    fn affine_run<T: FloatElem>(u: &[T], v: Option<&[T]>, out: &mut [MaybeUninit<T>], a: T, b: T, k: T) {
        match v {
            Some(v) => {
                for ((o, &uu), &vv) in out.iter_mut().zip(u).zip(v) {
                    o.write(a * uu + (b * vv + k));
                }
            }
            None => {
                for (o, &uu) in out.iter_mut().zip(u) {
                    o.write(a * uu + k);
                }
            }
        }
    }
}
