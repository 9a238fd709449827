//! Matrix multiplication through the `gemm` crate.
//!
//! Operands are any strided matrices: gemm takes a row and a column stride per operand, so a
//! transposed view (`b.t()`) is multiplied without being copied. Batches run one after another
//! with gemm's own threading, or side by side single-threaded when there are many small ones.
//! Short, wide products are split into column panels (see [`column_panels`]).
//!
//! Results do not depend on the thread count: the work is split by shape only (panels, batches),
//! and gemm's own threading divides output tiles, never a dot product.

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::{copy, unsupported};
use crate::{CpuStorage, DType, Error, Layout, Result};

/// Where one matrix of a batch lives.
#[derive(Clone, Copy)]
struct Mat {
    offset: usize,
    rs: isize,
    cs: isize,
}

/// The offsets of each matrix of a `[batch.., R, C]` layout, in batch order.
fn matrices(l: &Layout) -> Vec<Mat> {
    let rank = l.dims().len();
    let (rs, cs) = (l.strides()[rank - 2] as isize, l.strides()[rank - 1] as isize);
    let batch_dims = &l.dims()[..rank - 2];
    let batch_strides = &l.strides()[..rank - 2];
    let n: usize = batch_dims.iter().product();
    (0..n)
        .map(|mut b| {
            let mut off = l.offset();
            for (d, s) in batch_dims.iter().zip(batch_strides).rev() {
                off += (b % d) * s;
                b /= d;
            }
            Mat { offset: off, rs, cs }
        })
        .collect()
}

struct SendPtr<T>(*mut T);
unsafe impl<T> Sync for SendPtr<T> {}
unsafe impl<T> Send for SendPtr<T> {}
impl<T> SendPtr<T> {
    // A method (not field access) so closures capture the whole Sync wrapper.
    fn get(&self) -> *mut T {
        self.0
    }
}

/// Products with at most this many rows are split into column panels.
const PANEL_MAX_ROWS: usize = 256;
/// Aimed-at panel width in columns.
const PANEL_COLS: usize = 512;
/// The panel count is a multiple of this, so that the panels split evenly over 1, 2 or 4 threads.
const PANEL_GROUP: usize = 4;

/// The column-panel width for an `m × n` output of `flops` floating-point operations, or `None`
/// to leave the product whole.
///
/// gemm's own threading makes all threads wait for each other after every block of the `k` axis.
/// For short, wide products (the 1×1 convolutions of a ResNet: M ≤ 256 channels, N = 56·56
/// positions) that cost 10–30% on a 2-core machine. Independent panels, one gemm each, need no
/// such barrier, and packing the small `A` once per panel costs little. The panels are about
/// equal, a multiple of 8 columns wide (one AVX vector), and their number is a multiple of
/// [`PANEL_GROUP`]: an odd count left one of two threads idle for a whole panel. The width depends
/// only on the shape, so the results do too.
fn column_panels(m: usize, n: usize, flops: usize) -> Option<usize> {
    if m > PANEL_MAX_ROWS || n < 2 * PANEL_COLS || flops < (1 << 24) {
        return None;
    }
    let count = n.div_ceil(PANEL_COLS).next_multiple_of(PANEL_GROUP);
    Some(n.div_ceil(count).next_multiple_of(8))
}

fn matmul_typed<T: Copy + Default + Send + Sync + 'static>(
    a: &[T],
    la: &Layout,
    b: &[T],
    lb: &Layout,
    one: T,
    zero: T,
) -> Vec<T> {
    let rank = la.dims().len();
    let (m, k, n) = (la.dims()[rank - 2], la.dims()[rank - 1], lb.dims()[rank - 1]);
    let (ma, mb) = (matrices(la), matrices(lb));
    let mut out = super::strided::alloc::<T>(ma.len() * m * n);
    if m * n == 0 {
        return out;
    }
    let dst = SendPtr(out.as_mut_ptr());
    // Batch `i`, output columns `cols`.
    let one_gemm = |i: usize, cols: std::ops::Range<usize>, par: Parallelism| {
        let (x, y) = (ma[i], mb[i]);
        // SAFETY: every call writes its own columns of its own m×n block of `out`; the operand
        // offsets and strides come from valid layouts of `a` and `b`, and `cols` lies within 0..n,
        // so all reads stay inside those slices.
        unsafe {
            let d = dst.get().add(i * m * n + cols.start);
            gemm(
                m,
                cols.len(),
                k,
                d,
                1,
                n as isize,
                false,
                a.as_ptr().add(x.offset),
                x.cs,
                x.rs,
                b.as_ptr().offset(y.offset as isize + cols.start as isize * y.cs),
                y.cs,
                y.rs,
                zero,
                one,
                false,
                false,
                false,
                par,
            );
        }
    };
    let flops_each = 2 * m * n * k;
    let threads = rayon::current_num_threads();
    if ma.len() >= 2 * threads && flops_each < (1 << 24) {
        (0..ma.len()).into_par_iter().for_each(|i| one_gemm(i, 0..n, Parallelism::None));
    } else if let Some(width) = column_panels(m, n, flops_each) {
        let panels = n.div_ceil(width);
        // With more threads than panels, each panel's gemm gets a share of them.
        let inner = if panels >= threads { Parallelism::None } else { Parallelism::Rayon(threads.div_ceil(panels)) };
        for i in 0..ma.len() {
            (0..panels).into_par_iter().for_each(|p| one_gemm(i, p * width..n.min((p + 1) * width), inner));
        }
    } else {
        let par = if flops_each < (1 << 16) { Parallelism::None } else { Parallelism::Rayon(0) };
        (0..ma.len()).for_each(|i| one_gemm(i, 0..n, par));
    }
    out
}

/// `[B.., M, K] × [B.., K, N] → [B.., M, N]`; the batch dims of both layouts are already
/// broadcast to the same shape.
pub fn matmul(a: &CpuStorage, la: &Layout, b: &CpuStorage, lb: &Layout) -> Result<CpuStorage> {
    super::isa::record_gemm();
    match (a, b) {
        (CpuStorage::F32(x), CpuStorage::F32(y)) => Ok(CpuStorage::F32(matmul_typed(x, la, y, lb, 1.0, 0.0))),
        (CpuStorage::F64(x), CpuStorage::F64(y)) => Ok(CpuStorage::F64(matmul_typed(x, la, y, lb, 1.0, 0.0))),
        (CpuStorage::F16(_), CpuStorage::F16(_)) | (CpuStorage::BF16(_), CpuStorage::BF16(_)) => {
            // Half precision: multiply f32 copies with f32 accumulation, round once.
            let (x, y) = (copy::cast(a, la, DType::F32)?, copy::cast(b, lb, DType::F32)?);
            let (cx, cy) = (Layout::contiguous(la.shape().clone()), Layout::contiguous(lb.shape().clone()));
            let out = matmul(&x, &cx, &y, &cy)?;
            let n = out.len();
            copy::cast(&out, &Layout::contiguous([n]), a.dtype())
        }
        (x, y) if x.dtype() != y.dtype() => Err(Error::DTypeMismatch { op: "matmul", lhs: x.dtype(), rhs: y.dtype() }),
        (x, _) => Err(unsupported("matmul", x.dtype())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(m: usize, k: usize, n: usize, threads: usize) -> Vec<f32> {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1013) as f32 / 1013.0 - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 1009) as f32 / 1009.0 - 0.5).collect();
        let (la, lb) = (Layout::contiguous([m, k]), Layout::contiguous([k, n]));
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| matmul_typed(&a, &la, &b, &lb, 1.0, 0.0))
    }

    #[test]
    fn panels_are_about_equal_and_come_in_fours() {
        assert_eq!(column_panels(64, 3136, 1 << 30), Some(392)); // 8 panels
        assert_eq!(column_panels(256, 1024, 1 << 30), Some(256)); // 4 panels
        assert_eq!(column_panels(256, 12544, 1 << 30), Some(448)); // 28 panels
        assert_eq!(column_panels(257, 3136, 1 << 30), None); // tall: gemm's own threading
        assert_eq!(column_panels(64, 1000, 1 << 30), None); // narrow
        assert_eq!(column_panels(8, 3136, 1 << 20), None); // small
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        // Column panels (8 of 392; 4 of 256, so 5 threads also thread inside a panel), and whole.
        for (m, k, n) in [(64, 96, 3136), (64, 160, 1024), (300, 70, 900)] {
            let want = product(m, k, n, 1);
            for threads in [2, 3, 5] {
                assert!(product(m, k, n, threads) == want, "{m}×{k}×{n} on {threads} threads");
            }
            // And the panels compute the product.
            let a: Vec<f64> = (0..m * k).map(|i| ((i * 7919) % 1013) as f64 / 1013.0 - 0.5).collect();
            let b: Vec<f64> = (0..k * n).map(|i| ((i * 104729) % 1009) as f64 / 1009.0 - 0.5).collect();
            for (i, j) in [(0, 0), (m - 1, n - 1), (m / 2, 449), (1, n / 2)] {
                let exact: f64 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                assert!((want[i * n + j] as f64 - exact).abs() < 1e-4, "{m}×{k}×{n} at ({i}, {j})");
            }
        }
    }
}
