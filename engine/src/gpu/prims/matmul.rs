//! Batched matrix products on a GPU device through the runtime's GEMM (cuBLAS on Cuda, the CPU
//! `gemm` crate with cuBLAS's semantics on Emu).
//!
//! Row-major `C = A·B` is column-major `Cᵀ = Bᵀ·Aᵀ`, so the operands swap places and no data
//! moves: a row-major view with unit column stride *is* its transpose in column-major with
//! `ld` = its row stride, and a view with unit row stride (a transposed tensor) is handed over as
//! stored with `Op::T`. Only operands with neither unit stride (or a broadcast inside the matrix)
//! are copied first.

use super::{copy, LayoutArg};
use crate::gpu::{GemmArgs, GemmDType, Op};
use crate::{DType, Error, GpuStorage, Layout, Result};

/// How to pass the row-major matrix `X[rows, cols]` (strides `rs`, `cs`) so that the GEMM sees
/// `Xᵀ` (column-major `cols × rows`): `(op, ld)`, or `None` when it must be copied first.
fn as_transposed_operand(rs: usize, cs: usize, rows: usize, cols: usize) -> Option<(Op, usize)> {
    if cs == 1 || cols == 1 {
        let ld = if rows == 1 { cols.max(1) } else { rs };
        if ld >= cols.max(1) {
            return Some((Op::N, ld));
        }
    }
    if rs == 1 || rows == 1 {
        let ld = if cols == 1 { rows.max(1) } else { cs };
        if ld >= rows.max(1) {
            return Some((Op::T, ld));
        }
    }
    None
}

/// `[B.., M, K] × [B.., K, N] → [B.., M, N]`; the batch axes of both layouts are already
/// broadcast to the same shape.
pub fn matmul(a: &GpuStorage, la: &Layout, b: &GpuStorage, lb: &Layout) -> Result<GpuStorage> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op: "matmul", lhs: a.dtype(), rhs: b.dtype() });
    }
    match a.dtype() {
        DType::F32 | DType::F64 => {}
        DType::F16 | DType::BF16 => {
            // Half precision: multiply f32 copies (f32 accumulation), round once — as the CPU.
            let (x, y) = (copy::cast(a, la, DType::F32)?, copy::cast(b, lb, DType::F32)?);
            let (cx, cy) = (Layout::contiguous(la.shape().clone()), Layout::contiguous(lb.shape().clone()));
            let out = matmul(&x, &cx, &y, &cy)?;
            let n = out.len();
            return copy::cast(&out, &Layout::contiguous([n]), a.dtype());
        }
        d => return Err(Error::UnsupportedDType { op: "matmul", dtype: d }),
    }
    let r = la.dims().len();
    let (m, k, n) = (la.dims()[r - 2], la.dims()[r - 1], lb.dims()[r - 1]);
    let batch_dims = &la.dims()[..r - 2];
    let nb: usize = batch_dims.iter().product();
    let out = GpuStorage::zeros(a.runtime(), a.dtype(), nb * m * n)?;
    if nb * m * n == 0 || k == 0 {
        return Ok(out); // an empty product is zeros
    }
    // Operands the GEMM cannot read in place are made contiguous (then they always can).
    let prepare = |s: &GpuStorage, l: &Layout, rows: usize, cols: usize| -> Result<(Option<GpuStorage>, Layout)> {
        let (rs, cs) = (l.strides()[r - 2], l.strides()[r - 1]);
        if as_transposed_operand(rs, cs, rows, cols).is_some() {
            Ok((None, l.clone()))
        } else {
            Ok((Some(copy::contiguous(s, l)?), Layout::contiguous(l.shape().clone())))
        }
    };
    let (ca, la2) = prepare(a, la, m, k)?;
    let (cb, lb2) = prepare(b, lb, k, n)?;
    let (a, b) = (ca.as_ref().unwrap_or(a), cb.as_ref().unwrap_or(b));
    let (op_b, ldb) = as_transposed_operand(lb2.strides()[r - 2], lb2.strides()[r - 1], k, n).expect("prepared");
    let (op_a, lda) = as_transposed_operand(la2.strides()[r - 2], la2.strides()[r - 1], m, k).expect("prepared");

    // Batch axes: merged over the three operands; the innermost merged axis becomes the GEMM's
    // batch stride, the outer ones (rare: broadcasts that do not line up) a host loop.
    let batch_layout = |l: &Layout, cstrides: Option<Vec<usize>>| {
        let strides = cstrides.unwrap_or_else(|| l.strides()[..r - 2].to_vec());
        Layout::new(batch_dims.to_vec().into(), strides, l.offset())
    };
    let c_strides: Vec<usize> = {
        let mut s = vec![m * n; r - 2];
        for i in (0..r.saturating_sub(3)).rev() {
            s[i] = s[i + 1] * batch_dims[i + 1];
        }
        s
    };
    let merged = LayoutArg::merged(&[
        &batch_layout(&la2, None),
        &batch_layout(&lb2, None),
        &batch_layout(&Layout::contiguous([1]), Some(c_strides)),
    ])?;
    let rank = merged[0].rank as usize;
    let (inner, outer_dims) =
        if rank == 0 { (1, vec![]) } else { (merged[0].dims[rank - 1] as usize, merged[0].dims[..rank - 1].to_vec()) };
    let stride = |i: usize| if rank == 0 { 0 } else { merged[i].strides[rank - 1] as usize };
    let dtype = if a.dtype() == DType::F32 { GemmDType::F32 } else { GemmDType::F64 };
    let es = a.dtype().size_in_bytes();
    let outer: usize = outer_dims.iter().map(|&d| d as usize).product();
    for o in 0..outer {
        // Element offsets of this outer batch position in each operand.
        let (mut rem, mut off) = (o, [la2.offset(), lb2.offset(), 0usize]);
        for d in (0..outer_dims.len()).rev() {
            let c = rem % outer_dims[d] as usize;
            rem /= outer_dims[d] as usize;
            for (i, off) in off.iter_mut().enumerate() {
                *off += c * merged[i].strides[d] as usize;
            }
        }
        let g = GemmArgs {
            dtype,
            op_a: op_b,
            op_b: op_a,
            m: n,
            n: m,
            k,
            alpha: 1.0,
            a: b.ptr().byte_add(off[1] * es),
            lda: ldb,
            stride_a: stride(1),
            b: a.ptr().byte_add(off[0] * es),
            ldb: lda,
            stride_b: stride(0),
            beta: 0.0,
            c: out.ptr().byte_add(off[2] * es),
            ldc: n,
            stride_c: if rank == 0 { m * n } else { stride(2) },
            batch: inner,
        };
        a.runtime().gemm(&g)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operands_are_passed_in_place_when_one_stride_is_unit() {
        // Row-major 3×4: Xᵀ is column-major with ld 4.
        assert_eq!(as_transposed_operand(4, 1, 3, 4), Some((Op::N, 4)));
        // A transposed view of a 4×3 tensor: stored column-major with ld 3 → Op::T.
        assert_eq!(as_transposed_operand(1, 3, 3, 4), Some((Op::T, 3)));
        // A row of a larger matrix (padding between rows): ld is the row stride.
        assert_eq!(as_transposed_operand(10, 1, 3, 4), Some((Op::N, 10)));
        // Neither stride is unit, or a broadcast row: copy.
        assert_eq!(as_transposed_operand(8, 2, 3, 4), None);
        assert_eq!(as_transposed_operand(0, 1, 3, 4), None);
        // Vectors: any stride works along the unit axis.
        assert_eq!(as_transposed_operand(0, 1, 1, 4), Some((Op::N, 4)));
        assert_eq!(as_transposed_operand(5, 7, 3, 1), Some((Op::N, 5)));
    }
}
