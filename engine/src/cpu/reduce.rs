//! Reductions over any set of axes: sum, max, min, argmax, argmin.
//!
//! The reduced axes are permuted to the back (a view, no copy), so each output element owns a
//! range of `R` consecutive logical indices. That range is cut into fixed chunks of
//! [`CHUNK`](super::strided::CHUNK) elements whose partial results are merged in order, so the
//! answer is bit-for-bit the same whether the chunks ran on one thread or many. Sums accumulate
//! in f64 (i64 for integers).

use rayon::prelude::*;

use super::strided::{Runs, CHUNK, PAR_THRESHOLD};
use super::unsupported;
use crate::ops::ReduceOp;
use crate::{CpuStorage, DType, Error, Layout, Result, WithDType};

/// An accumulator for one reduction.
trait Reducer<T>: Sync {
    type Acc: Copy + Send;
    fn init(&self) -> Self::Acc;
    /// Folds a run of `len` elements starting at `src[o]` with stride `s`; `idx` is the position
    /// of the first element inside the reduced range.
    fn run(&self, acc: Self::Acc, src: &[T], o: usize, s: usize, len: usize, idx: usize) -> Self::Acc;
    /// Merges a later partial into an earlier one.
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
}

struct SumF;
impl<T: WithDType> Reducer<T> for SumF {
    type Acc = f64;
    fn init(&self) -> f64 {
        0.0
    }
    fn run(&self, acc: f64, src: &[T], o: usize, s: usize, len: usize, _: usize) -> f64 {
        if s == 1 {
            // Four lanes let the compiler keep several adds in flight.
            let xs = &src[o..o + len];
            let mut lanes = [0f64; 4];
            let mut chunks = xs.chunks_exact(4);
            for c in &mut chunks {
                for k in 0..4 {
                    lanes[k] += c[k].to_f64();
                }
            }
            let tail: f64 = chunks.remainder().iter().map(|x| x.to_f64()).sum();
            acc + (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + tail
        } else {
            (0..len).fold(acc, |a, i| a + src[o + i * s].to_f64())
        }
    }
    fn merge(&self, a: f64, b: f64) -> f64 {
        a + b
    }
}

struct SumI;
impl Reducer<i64> for SumI {
    type Acc = i64;
    fn init(&self) -> i64 {
        0
    }
    fn run(&self, acc: i64, src: &[i64], o: usize, s: usize, len: usize, _: usize) -> i64 {
        (0..len).fold(acc, |a, i| a.wrapping_add(src[o + i * s]))
    }
    fn merge(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }
}

/// Max (or min with `MAX = false`) with its first position; NaN wins, as in PyTorch.
struct Extreme<const MAX: bool>;
impl<T: WithDType, const MAX: bool> Reducer<T> for Extreme<MAX> {
    type Acc = Option<(T, usize)>;
    fn init(&self) -> Self::Acc {
        None
    }
    fn run(&self, mut acc: Self::Acc, src: &[T], o: usize, s: usize, len: usize, idx: usize) -> Self::Acc {
        for i in 0..len {
            acc = self.merge(acc, Some((src[o + i * s], idx + i)));
        }
        acc
    }
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Self::Acc {
        match (a, b) {
            (None, x) | (x, None) => x,
            (Some((va, ia)), Some((vb, ib))) => {
                #[allow(clippy::eq_op)] // x != x is the NaN test for a generic T
                let a_nan = va != va;
                #[allow(clippy::eq_op)]
                let b_nan = vb != vb;
                let b_wins = !a_nan && (b_nan || if MAX { vb > va } else { vb < va });
                Some(if b_wins { (vb, ib) } else { (va, ia) })
            }
        }
    }
}

/// Reduces `src` (layout `l`, permuted so that the reduced axes are last) into `n_out` results.
fn reduce_with<T: Sync, R: Reducer<T>>(src: &[T], l: &Layout, n_out: usize, r: usize, red: &R) -> Vec<R::Acc> {
    let runs = Runs::new([l]);
    let [s] = runs.inner_strides();
    let chunks_of =
        |o: usize| (0..r.div_ceil(CHUNK)).map(move |c| (o * r + c * CHUNK, o * r + ((c + 1) * CHUNK).min(r)));
    let one = |o: usize| -> R::Acc {
        chunks_of(o).fold(red.init(), |acc, (lo, hi)| red.merge(acc, fold_range(&runs, src, s, red, lo, hi, o * r)))
    };
    if n_out * r < PAR_THRESHOLD {
        (0..n_out).map(one).collect()
    } else if n_out >= 4 * rayon::current_num_threads() {
        (0..n_out).into_par_iter().map(one).collect()
    } else {
        // Few outputs, long ranges: chunks in parallel, merged in order.
        (0..n_out)
            .map(|o| {
                let parts: Vec<R::Acc> = chunks_of(o)
                    .collect::<Vec<_>>()
                    .into_par_iter()
                    .map(|(lo, hi)| fold_range(&runs, src, s, red, lo, hi, o * r))
                    .collect();
                parts.into_iter().fold(red.init(), |a, b| red.merge(a, b))
            })
            .collect()
    }
}

/// Folds the logical indices `lo..hi` (positions counted from `base`).
fn fold_range<T, R: Reducer<T>>(
    runs: &Runs<1>,
    src: &[T],
    s: usize,
    red: &R,
    lo: usize,
    hi: usize,
    base: usize,
) -> R::Acc {
    let mut acc = red.init();
    let mut pos = lo - base;
    runs.for_each(lo..hi, |[o], len| {
        acc = red.run(acc, src, o, s, len, pos);
        pos += len;
    });
    acc
}

/// Reduces the sorted, de-duplicated `axes` of `(s, l)`. The result is contiguous with the
/// kept axes in order (the caller re-inserts size-1 axes for keepdim).
pub fn reduce(s: &CpuStorage, l: &Layout, axes: &[usize], op: ReduceOp) -> Result<CpuStorage> {
    let rank = l.shape().rank();
    let kept: Vec<usize> = (0..rank).filter(|a| !axes.contains(a)).collect();
    let perm: Vec<usize> = kept.iter().chain(axes).copied().collect();
    let pl = l.permute(&perm)?;
    let n_out: usize = kept.iter().map(|&a| l.dims()[a]).product();
    let r: usize = axes.iter().map(|&a| l.dims()[a]).product();
    if r == 0 && op != ReduceOp::Sum {
        return Err(Error::invalid(op.name(), format!("cannot reduce an empty axis of shape {}", l.shape())));
    }
    macro_rules! float_like {
        ($v:expr, $wrap:ident, $t:ty) => {
            match op {
                ReduceOp::Sum => {
                    CpuStorage::$wrap(reduce_with($v, &pl, n_out, r, &SumF).into_iter().map(<$t>::from_f64).collect())
                }
                ReduceOp::Max => CpuStorage::$wrap(
                    reduce_with($v, &pl, n_out, r, &Extreme::<true>).into_iter().map(|a| a.unwrap().0).collect(),
                ),
                ReduceOp::Min => CpuStorage::$wrap(
                    reduce_with($v, &pl, n_out, r, &Extreme::<false>).into_iter().map(|a| a.unwrap().0).collect(),
                ),
                ReduceOp::ArgMax => CpuStorage::I64(
                    reduce_with($v, &pl, n_out, r, &Extreme::<true>).into_iter().map(|a| a.unwrap().1 as i64).collect(),
                ),
                ReduceOp::ArgMin => CpuStorage::I64(
                    reduce_with($v, &pl, n_out, r, &Extreme::<false>)
                        .into_iter()
                        .map(|a| a.unwrap().1 as i64)
                        .collect(),
                ),
            }
        };
    }
    Ok(match s {
        CpuStorage::F32(v) => float_like!(v, F32, f32),
        CpuStorage::F64(v) => float_like!(v, F64, f64),
        CpuStorage::F16(v) => float_like!(v, F16, half::f16),
        CpuStorage::BF16(v) => float_like!(v, BF16, half::bf16),
        CpuStorage::I64(v) => match op {
            ReduceOp::Sum => CpuStorage::I64(reduce_with(v, &pl, n_out, r, &SumI)),
            _ => float_like!(v, I64, i64),
        },
        CpuStorage::U8(_) => return Err(unsupported(op.name(), DType::U8)),
    })
}
