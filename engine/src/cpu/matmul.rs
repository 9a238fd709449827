//! Matrix multiplication through the `gemm` crate.
//!
//! Operands are any strided matrices: gemm takes a row and a column stride per operand, so a
//! transposed view (`b.t()`) is multiplied without being copied. Batches run one after another
//! with gemm's own threading, or side by side single-threaded when there are many small ones.

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
    let mut out = vec![T::default(); ma.len() * m * n];
    if m * n == 0 {
        return out;
    }
    let dst = SendPtr(out.as_mut_ptr());
    let one_gemm = |i: usize, par: Parallelism| {
        let (x, y) = (ma[i], mb[i]);
        // SAFETY: every batch writes its own m×n block of `out`; the operand offsets and strides
        // come from valid layouts of `a` and `b`, so all reads stay inside those slices.
        unsafe {
            let d = dst.get().add(i * m * n);
            gemm(
                m,
                n,
                k,
                d,
                1,
                n as isize,
                false,
                a.as_ptr().add(x.offset),
                x.cs,
                x.rs,
                b.as_ptr().add(y.offset),
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
    if ma.len() >= 2 * rayon::current_num_threads() && flops_each < (1 << 24) {
        (0..ma.len()).into_par_iter().for_each(|i| one_gemm(i, Parallelism::None));
    } else {
        let par = if flops_each < (1 << 16) { Parallelism::None } else { Parallelism::Rayon(0) };
        (0..ma.len()).for_each(|i| one_gemm(i, par));
    }
    out
}

/// `[B.., M, K] × [B.., K, N] → [B.., M, N]`; the batch dims of both layouts are already
/// broadcast to the same shape.
pub fn matmul(a: &CpuStorage, la: &Layout, b: &CpuStorage, lb: &Layout) -> Result<CpuStorage> {
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
