//! CPU kernels of softmax cross-entropy: one pass per row forward (max, log-sum-exp, loss) and
//! one pass per row backward. Rows are independent; per-row arithmetic is in f64.

use bitgrad_engine::cpu::strided::PAR_THRESHOLD;
use bitgrad_engine::{FloatElem, WithDType};
use rayon::prelude::*;

use super::Rows;

/// Calls `f(row_index, out_row)` for each `k`-sized row of `out`, in parallel when large.
fn for_each_row<T: Send>(out: &mut [T], k: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if out.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(k).enumerate().for_each(|(n, o)| f(n, o));
    } else {
        out.chunks_mut(k).enumerate().for_each(|(n, o)| f(n, o));
    }
}

/// `q_nk = (1 − ε)·t_nk + ε/K`, the smoothed target probability of class `c` in row `n`.
#[inline]
fn q<T: FloatElem>(rows: &Rows<T>, n: usize, c: usize, k: usize, eps: f64) -> f64 {
    let t = match rows {
        Rows::Hard(labels) => (labels[n] == c) as u8 as f64,
        Rows::Soft(t) => WithDType::to_f64(t[n * k + c]),
    };
    (1.0 - eps) * t + eps / k as f64
}

/// One row's `(loss, lse)`: `lse = m + ln Σ exp(x − m)`, `loss = Σ_c q_c·(lse − x_c)`, both with
/// the maximum `m` subtracted before anything is exponentiated or summed.
fn row_loss<T: FloatElem>(x: &[T], rows: &Rows<T>, n: usize, eps: f64) -> (f64, f64) {
    let k = x.len();
    let m = x.iter().map(|&v| WithDType::to_f64(v)).fold(f64::NEG_INFINITY, f64::max);
    let ln_sum = x.iter().map(|&v| (WithDType::to_f64(v) - m).exp()).sum::<f64>().ln();
    let loss = match rows {
        // Only two terms are needed: (1 − ε)(−log p_y) + (ε/K) Σ_c (−log p_c).
        Rows::Hard(labels) => {
            let nll = |c: usize| ln_sum - (WithDType::to_f64(x[c]) - m);
            let smooth = if eps > 0.0 { (0..k).map(nll).sum::<f64>() / k as f64 } else { 0.0 };
            (1.0 - eps) * nll(labels[n]) + eps * smooth
        }
        Rows::Soft(_) => (0..k).map(|c| q(rows, n, c, k, eps) * (ln_sum - (WithDType::to_f64(x[c]) - m))).sum(),
    };
    (loss, m + ln_sum)
}

/// The mean loss over the `x.len() / k` rows and each row's log-sum-exp.
pub fn forward<T: FloatElem>(x: &[T], k: usize, rows: Rows<T>, eps: f64) -> (f64, Vec<f64>) {
    let n = x.len() / k;
    let per_row: Vec<(f64, f64)> = if x.len() >= PAR_THRESHOLD {
        x.par_chunks(k).enumerate().map(|(i, r)| row_loss(r, &rows, i, eps)).collect()
    } else {
        x.chunks(k).enumerate().map(|(i, r)| row_loss(r, &rows, i, eps)).collect()
    };
    // Summed in row order: the same result on any number of threads.
    let total: f64 = per_row.iter().map(|r| r.0).sum();
    (total / n as f64, per_row.into_iter().map(|r| r.1).collect())
}

/// `∂L/∂x_nc = (s_n·p_nc − q_nc)·scale`, `p = exp(x − lse)`, `s_n = Σ_c q_nc`, `scale = g / N`.
pub fn backward<T: FloatElem>(x: &[T], k: usize, lse: &[f64], rows: Rows<T>, eps: f64, scale: f64) -> Vec<T> {
    let mut gx = vec![T::zero(); x.len()];
    for_each_row(&mut gx, k, |n, g| {
        let xr = &x[n * k..(n + 1) * k];
        let s = match rows {
            Rows::Hard(_) => 1.0,
            Rows::Soft(_) => (0..k).map(|c| q(&rows, n, c, k, eps)).sum(),
        };
        for (c, (g, &v)) in g.iter_mut().zip(xr).enumerate() {
            let p = (WithDType::to_f64(v) - lse[n]).exp();
            *g = <T as WithDType>::from_f64((s * p - q(&rows, n, c, k, eps)) * scale);
        }
    });
    gx
}

/// `∂L/∂t_nc = −(1 − ε)·log p_nc·scale` for a soft target.
pub fn target_grad<T: FloatElem>(x: &[T], k: usize, lse: &[f64], eps: f64, scale: f64) -> Vec<T> {
    let mut gt = vec![T::zero(); x.len()];
    for_each_row(&mut gt, k, |n, g| {
        for (g, &v) in g.iter_mut().zip(&x[n * k..(n + 1) * k]) {
            *g = <T as WithDType>::from_f64(-(1.0 - eps) * (WithDType::to_f64(v) - lse[n]) * scale);
        }
    });
    gt
}
