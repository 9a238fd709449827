//! index_select / gather and their adjoints on a GPU device (`index.cu`).
//!
//! The host turns validated indices into storage offsets (the CPU twin's `gather_offsets`), so
//! the device never sees an out-of-range index; one "take" kernel serves both forward ops and one
//! atomic scatter-add both backward ones.

use super::{bytes_suffix, dtype_suffix, launch_n, LayoutArg};
use crate::{DType, Error, GpuStorage, Layout, Result, Shape};

/// Storage offsets in the view `l` of every element of `l` with the coordinate along `axis`
/// replaced by `ids[coordinate]` (row-major over the result shape).
pub fn select_offsets(l: &Layout, axis: usize, ids: &[usize]) -> Vec<i64> {
    let mut dims = l.dims().to_vec();
    dims[axis] = ids.len();
    let n: usize = dims.iter().product();
    let mut offs = Vec::with_capacity(n);
    for p in 0..n {
        let (mut rem, mut off) = (p, l.offset());
        for d in (0..dims.len()).rev() {
            let c = rem % dims[d];
            rem /= dims[d];
            off += if d == axis { ids[c] } else { c } * l.strides()[d];
        }
        offs.push(off as i64);
    }
    offs
}

fn upload_offsets(like: &GpuStorage, offs: &[i64]) -> Result<GpuStorage> {
    GpuStorage::from_cpu(like.runtime(), &crate::CpuStorage::I64(offs.to_vec()))
}

/// `out[i] = s[offs[i]]`: a fresh contiguous storage of `offs.len()` elements.
pub fn take(s: &GpuStorage, offs: &[i64]) -> Result<GpuStorage> {
    let n = offs.len();
    let out = GpuStorage::alloc(s.runtime(), s.dtype(), n)?;
    if n > 0 {
        let o = upload_offsets(s, offs)?;
        launch_n(
            s.runtime(),
            &format!("take_{}", bytes_suffix(s.dtype())),
            n,
            &[(n as i64).into(), s.ptr().into(), o.ptr().into(), out.ptr().into()],
        )?;
    }
    Ok(out)
}

/// Zeros of `shape` with `g[i]` (row-major through `lg`) added at storage offset `offs[i]`.
pub fn scatter_add(shape: &Shape, offs: &[i64], g: &GpuStorage, lg: &Layout) -> Result<GpuStorage> {
    if !matches!(g.dtype(), DType::F32 | DType::F64) {
        return Err(Error::UnsupportedDType { op: "scatter_add (GPU)", dtype: g.dtype() });
    }
    let out = GpuStorage::zeros(g.runtime(), g.dtype(), shape.numel())?;
    let n = offs.len();
    if n > 0 {
        let o = upload_offsets(g, offs)?;
        launch_n(
            g.runtime(),
            &format!("scatter_add_{}", dtype_suffix(g.dtype())),
            n,
            &[(n as i64).into(), g.ptr().into(), LayoutArg::of(lg)?.arg(), o.ptr().into(), out.ptr().into()],
        )?;
    }
    Ok(out)
}
