//! CPU kernels of weight standardization, generic over f32/f64.
//!
//! A weight `[O, …]` is `O` contiguous rows of `n = I·kh·kw` elements. Each row is one task
//! (rows are small enough to stay in L1/L2 between the passes over them); rows run in parallel
//! and each row's arithmetic is sequential, so results do not depend on the thread count.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::group_norm::lanes::{f64_of, filled_vec, of_f64, sum, sum_dev_sq, sum_dot};
use bitgrad_engine::FloatElem;

/// Rows per rayon task: enough for ~16k elements per task (a [64, 3, 7, 7] stem filter is
/// 9408 elements in all, not worth splitting).
fn min_rows_per_task(n: usize) -> usize {
    (16 * 1024 / n.max(1)).max(1)
}

/// ŵ per row, and each row's 1/sqrt(var + eps) for the backward.
pub(crate) fn forward<T: FloatElem>(w: &[T], rows: usize, eps: f64) -> (Vec<T>, Vec<T>) {
    crate::group_norm::lanes::level(bitgrad_engine::cpu::isa::Family::WeightStd);
    let n = w.len().checked_div(rows).unwrap_or(0);
    let mut rstd = vec![T::zero(); rows];
    let out = filled_vec(w.len(), |out| {
        if n > 0 {
            out.par_chunks_mut(n)
                .zip(w.par_chunks(n))
                .zip(rstd.par_iter_mut())
                .with_min_len(min_rows_per_task(n))
                .for_each(|((o, w), r)| *r = forward_row(w, o, eps));
        }
    });
    (out, rstd)
}

crate::multiversion! {
    /// One row: mean, corrected two-pass biased variance ([`row_stats`]), then `ŵ = (w − μ)·r`.
    fn forward_row<T: FloatElem>(w: &[T], out: &mut [MaybeUninit<T>], eps: f64) -> T {
        let (mt, rt) = row_stats(w, eps);
        for (o, &v) in out.iter_mut().zip(w) {
            o.write((v - mt) * rt);
        }
        rt
    }
}

/// One row's μ and r = 1/sqrt(var + ε), as the forward computes them.
///
/// The correction term Σ(w − μ) makes μ exact for a constant row (where the first estimate
/// may be off by one rounding), so a constant filter gives exactly ŵ = 0 rather than
/// ±1e-12-sized noise amplified by r ≈ 1/sqrt(ε).
#[inline(always)]
fn row_stats<T: FloatElem>(w: &[T], eps: f64) -> (T, T) {
    let n = w.len() as f64;
    let mean0 = sum(w) / n;
    let (dev, sq) = sum_dev_sq(w, of_f64::<T>(mean0));
    let mean = f64_of(of_f64::<T>(mean0)) + dev / n;
    let var = ((sq - dev * dev / n) / n).max(0.0);
    let r = 1.0 / (var + eps).sqrt();
    (of_f64(mean), of_f64(r))
}

/// Each row's μ and r without ŵ (WS folded into a consumer that standardizes as it reads:
/// [`standardize_row`] gives the forward's ŵ bit for bit).
pub(crate) fn stats(w: &[f32], rows: usize, eps: f64) -> (Vec<f32>, Vec<f32>) {
    crate::group_norm::lanes::level(bitgrad_engine::cpu::isa::Family::WeightStd);
    let n = w.len().checked_div(rows).unwrap_or(0);
    let (mut mean, mut rstd) = (vec![0f32; rows], vec![0f32; rows]);
    if n > 0 {
        w.par_chunks(n)
            .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
            .with_min_len(min_rows_per_task(n))
            .for_each(|(w, (m, r))| (*m, *r) = stats_row(w, eps));
    }
    (mean, rstd)
}

crate::multiversion! {
    fn stats_row<T: FloatElem>(w: &[T], eps: f64) -> (T, T) {
        row_stats(w, eps)
    }
}

/// One row's ŵ = (w − μ)·r into `out`: the forward's arithmetic, so the same bits.
pub(crate) fn standardize_row(w: &[f32], mean: f32, rstd: f32, out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(w) {
        *o = (v - mean) * rstd;
    }
}

/// [`backward`] from the raw weight and its statistics instead of ŵ: each row's ŵ is made again
/// ([`standardize_row`]) in a row-sized scratch, so the result is [`backward`]'s bit for bit.
pub(crate) fn backward_from_weight(g: &[f32], w: &[f32], mean: &[f32], rstd: &[f32]) -> Vec<f32> {
    let n = g.len().checked_div(rstd.len()).unwrap_or(0);
    by_rows(g, rstd, n, |k, g, dw, r, what| {
        standardize_row(&w[k * n..][..n], mean[k], r, what);
        backward_row(g, what, dw, r)
    })
}

/// [`backward`] and the SGD update of the weight `w`, row by row (the `ws-sgd` fusion,
/// `crate::sgd::in_backward`): each row's ∂w goes to a row-sized scratch, `earlier` (the
/// gradient of earlier backward passes) is added to it as `.grad()` would sum them, and
/// [`sgd::cpu::step_chunk`](crate::sgd::cpu::step_chunk) updates the weight row and its
/// momentum row (`buf`: the buffer and whether this is its first step) while they are in
/// cache. Bit for bit [`backward`], the sum, then `sgd::cpu::step`; no full-size ∂w is made.
pub(crate) fn backward_sgd<T: FloatElem>(
    (g, what, rstd): (&[T], &[T], &[T]),
    w: &mut [T],
    earlier: Option<&[T]>,
    buf: Option<(&mut [T], bool)>,
    h: &crate::sgd::cpu::Hyper<T>,
) {
    crate::group_norm::lanes::level(bitgrad_engine::cpu::isa::Family::WeightStd);
    crate::group_norm::lanes::level(bitgrad_engine::cpu::isa::Family::Sgd);
    let n = g.len().checked_div(rstd.len()).unwrap_or(0);
    if n == 0 {
        return;
    }
    let (mut buf_rows, first): (Vec<Option<&mut [T]>>, bool) = match buf {
        Some((b, first)) => (b.chunks_mut(n).map(Some).collect(), first),
        None => ((0..rstd.len()).map(|_| None).collect(), false),
    };
    w.par_chunks_mut(n).zip(buf_rows.par_iter_mut()).enumerate().with_min_len(min_rows_per_task(n)).for_each_init(
        || vec![T::zero(); n],
        |dw, (k, (w, b))| {
            let rows = k * n..(k + 1) * n;
            // SAFETY: MaybeUninit<T> has T's layout, and backward_row writes every element.
            let out = unsafe { &mut *(dw.as_mut_slice() as *mut [T] as *mut [MaybeUninit<T>]) };
            backward_row(&g[rows.clone()], &what[rows.clone()], out, rstd[k]);
            if let Some(e) = earlier {
                for (d, &e) in dw.iter_mut().zip(&e[rows]) {
                    *d = e + *d;
                }
            }
            crate::sgd::cpu::step_chunk(w, dw, b.as_deref_mut().map(|b| (b, first)), h);
        },
    );
}

/// dw per row from the upstream gradient `g` and the forward output `what` (= ŵ).
pub(crate) fn backward<T: FloatElem>(g: &[T], what: &[T], rstd: &[T]) -> Vec<T> {
    let n = g.len().checked_div(rstd.len()).unwrap_or(0);
    by_rows(g, rstd, 0, |k, g, dw, r, _| backward_row(g, &what[k * n..][..n], dw, r))
}

/// The backward's row loop: `row(k, g_k, dw_k, r_k, scratch)` for every row `k` of `g`, rows in
/// parallel, each task with a `scratch`-long buffer of its own.
fn by_rows<T: FloatElem>(
    g: &[T],
    rstd: &[T],
    scratch: usize,
    row: impl Fn(usize, &[T], &mut [MaybeUninit<T>], T, &mut [T]) + Sync + Send,
) -> Vec<T> {
    crate::group_norm::lanes::level(bitgrad_engine::cpu::isa::Family::WeightStd);
    let n = g.len().checked_div(rstd.len()).unwrap_or(0);
    filled_vec(g.len(), |dw| {
        if n > 0 {
            dw.par_chunks_mut(n)
                .zip(g.par_chunks(n))
                .zip(rstd.par_iter())
                .enumerate()
                .with_min_len(min_rows_per_task(n))
                .for_each_init(|| vec![T::zero(); scratch], |buf, (k, ((dw, g), &r))| row(k, g, dw, r, buf));
        }
    })
}

crate::multiversion! {
    /// One row: `dw = r·(g − mean(g) − ŵ·mean(g·ŵ))`, i.e. `dw = r·g + (ŵ·b + a)` with the two
    /// row constants a = −r·mean(g) and b = −r·mean(g·ŵ).
    fn backward_row<T: FloatElem>(g: &[T], what: &[T], dw: &mut [MaybeUninit<T>], rstd: T) {
        let n = g.len() as f64;
        let r = f64_of(rstd);
        let (sg, sgw) = sum_dot(g, what);
        let a: T = of_f64(-r * sg / n);
        let b: T = of_f64(-r * sgw / n);
        for ((o, &gv), &wv) in dw.iter_mut().zip(g).zip(what) {
            o.write(gv * rstd + (wv * b + a));
        }
    }
}
