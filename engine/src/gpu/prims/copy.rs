//! Strided copies, dtype casts, fills and arange on a GPU device (`copy.cu`).

use half::{bf16, f16};

use super::{bytes_suffix, dtype_suffix, launch_n, out_like, LayoutArg};
use crate::gpu::GpuRuntime;
use crate::{DType, Error, GpuStorage, Layout, Result};
use std::sync::Arc;

/// A contiguous copy of the elements `l` describes.
pub fn contiguous(s: &GpuStorage, l: &Layout) -> Result<GpuStorage> {
    let n = l.numel();
    let out = out_like(s, s.dtype(), n)?;
    if l.is_contiguous() {
        // One device-to-device copy.
        if n > 0 {
            s.runtime().dtod(s.ptr_at(l.offset()), out.ptr(), n * s.dtype().size_in_bytes())?;
        }
        return Ok(out);
    }
    copy_into(&out, &Layout::contiguous(l.shape().clone()), s, l)?;
    Ok(out)
}

/// Copies the elements of `src` (layout `sl`) into the region `dl` of `dst`; shapes must match.
/// `dst` is written through a shared reference: device memory is not Rust memory, and callers
/// hold the storage's write lock (or own a fresh buffer).
pub fn copy_into(dst: &GpuStorage, dl: &Layout, src: &GpuStorage, sl: &Layout) -> Result<()> {
    if dst.dtype() != src.dtype() {
        return Err(Error::DTypeMismatch { op: "copy_into", lhs: dst.dtype(), rhs: src.dtype() });
    }
    if dl.shape() != sl.shape() {
        return Err(Error::ShapeMismatch { op: "copy_into", lhs: dl.shape().clone(), rhs: sl.shape().clone() });
    }
    let n = sl.numel();
    let m = LayoutArg::merged(&[sl, dl])?;
    let args = [(n as i64).into(), src.ptr().into(), m[0].arg(), dst.ptr().into(), m[1].arg()];
    launch_n(src.runtime(), &format!("copy_{}", bytes_suffix(src.dtype())), n, &args)
}

/// A contiguous copy converted to `to`, with the CPU's rounding (see `copy.cu`).
pub fn cast(s: &GpuStorage, l: &Layout, to: DType) -> Result<GpuStorage> {
    if s.dtype() == to {
        return contiguous(s, l);
    }
    let n = l.numel();
    let out = out_like(s, to, n)?;
    let args = [(n as i64).into(), s.ptr().into(), LayoutArg::of(l)?.arg(), out.ptr().into()];
    launch_n(s.runtime(), &format!("cast_{}_{}", dtype_suffix(s.dtype()), dtype_suffix(to)), n, &args)?;
    Ok(out)
}

/// The bit pattern of `v` in `dtype`, converted as `CpuStorage::full` converts it.
fn bits_of(v: f64, dtype: DType) -> u64 {
    match dtype {
        DType::F32 => (v as f32).to_bits() as u64,
        DType::F64 => v.to_bits(),
        DType::F16 => f16::from_f64(v).to_bits() as u64,
        DType::BF16 => bf16::from_f64(v).to_bits() as u64,
        DType::I64 => (v as i64) as u64,
        DType::U8 => (v as u8) as u64,
    }
}

/// `n` copies of `v` converted to `dtype`.
pub fn full(rt: &Arc<dyn GpuRuntime>, dtype: DType, n: usize, v: f64) -> Result<GpuStorage> {
    let bits = bits_of(v, dtype);
    if bits == 0 {
        return GpuStorage::zeros(rt, dtype, n);
    }
    let out = GpuStorage::alloc(rt, dtype, n)?;
    let args = [(n as i64).into(), bits.into(), out.ptr().into()];
    launch_n(rt, &format!("fill_{}", bytes_suffix(dtype)), n, &args)?;
    Ok(out)
}

/// `start + i · step` for `i` in `0..n`, computed in f64 and rounded once to `dtype`.
pub fn arange(rt: &Arc<dyn GpuRuntime>, start: f64, step: f64, n: usize, dtype: DType) -> Result<GpuStorage> {
    let out = GpuStorage::alloc(rt, DType::F64, n)?;
    launch_n(rt, "arange_f64", n, &[(n as i64).into(), start.into(), step.into(), out.ptr().into()])?;
    cast(&out, &Layout::contiguous([n]), dtype)
}
