//! Indexing: index_select / index_add along an axis, gather / scatter_add (its adjoint).

use super::map_storage;
use super::strided::Runs;
use crate::{CpuStorage, Error, Layout, Result, Shape};

/// Checks that every index is inside `0..size` and converts it.
pub fn check_indices(op: &'static str, idx: &[i64], axis: usize, size: usize) -> Result<Vec<usize>> {
    idx.iter()
        .map(|&i| {
            if i < 0 || i as usize >= size {
                Err(Error::IndexOutOfBounds { op, index: i, axis, size })
            } else {
                Ok(i as usize)
            }
        })
        .collect()
}

/// The slices `src[.., idx[j], ..]` stacked along `axis`.
pub fn index_select(s: &CpuStorage, l: &Layout, axis: usize, idx: &[usize]) -> Result<CpuStorage> {
    let mut dims = l.dims().to_vec();
    dims[axis] = idx.len();
    let out_l = Layout::contiguous(dims.clone());
    let mut out = CpuStorage::full(s.dtype(), out_l.numel(), 0.0);
    for (j, &i) in idx.iter().enumerate() {
        super::copy::copy_into(&mut out, &out_l.narrow(axis, j, 1)?, s, &l.narrow(axis, i, 1)?)?;
    }
    Ok(out)
}

fn add_into<T: Copy + std::ops::Add<Output = T>>(dst: &mut [T], dl: &Layout, src: &[T], sl: &Layout) {
    let runs = Runs::new([dl, sl]);
    let [ds, ss] = runs.inner_strides();
    runs.for_each(0..runs.numel(), |[d, s], len| {
        for i in 0..len {
            dst[d + i * ds] = dst[d + i * ds] + src[s + i * ss];
        }
    });
}

/// `dst[region dl] += src[sl]` (float and i64 storages of the same dtype).
pub fn accumulate_into(dst: &mut CpuStorage, dl: &Layout, src: &CpuStorage, sl: &Layout) -> Result<()> {
    match (dst, src) {
        (CpuStorage::F32(d), CpuStorage::F32(s)) => add_into(d, dl, s, sl),
        (CpuStorage::F64(d), CpuStorage::F64(s)) => add_into(d, dl, s, sl),
        (CpuStorage::F16(d), CpuStorage::F16(s)) => add_into(d, dl, s, sl),
        (CpuStorage::BF16(d), CpuStorage::BF16(s)) => add_into(d, dl, s, sl),
        (CpuStorage::I64(d), CpuStorage::I64(s)) => add_into(d, dl, s, sl),
        (d, s) => return Err(Error::DTypeMismatch { op: "accumulate_into", lhs: d.dtype(), rhs: s.dtype() }),
    }
    Ok(())
}

/// Zeros of `shape` with `src[.., j, ..]` added at `[.., idx[j], ..]` (the adjoint of index_select).
pub fn index_add(shape: &Shape, axis: usize, idx: &[usize], src: &CpuStorage, sl: &Layout) -> Result<CpuStorage> {
    let out_l = Layout::contiguous(shape.clone());
    let mut out = CpuStorage::full(src.dtype(), out_l.numel(), 0.0);
    for (j, &i) in idx.iter().enumerate() {
        accumulate_into(&mut out, &out_l.narrow(axis, i, 1)?, src, &sl.narrow(axis, j, 1)?)?;
    }
    Ok(out)
}

/// For each position `p` of the index tensor (row-major), the storage offset in `src` of
/// `src[p with coordinate axis replaced by index[p]]`.
pub fn gather_offsets(l: &Layout, axis: usize, index: &[i64], il: &Layout) -> Result<Vec<usize>> {
    let idims = il.dims();
    let rank = idims.len();
    if rank != l.dims().len() || (0..rank).any(|d| d != axis && idims[d] > l.dims()[d]) {
        return Err(Error::invalid(
            "gather",
            format!("index shape {} does not fit source shape {} along axis {axis}", il.shape(), l.shape()),
        ));
    }
    let runs = Runs::new([il]);
    let [is] = runs.inner_strides();
    let mut vals = Vec::with_capacity(il.numel());
    runs.for_each(0..il.numel(), |[o], len| vals.extend((0..len).map(|i| index[o + i * is])));
    let size = l.dims()[axis];
    let mut offs = Vec::with_capacity(vals.len());
    for (p, &v) in vals.iter().enumerate() {
        if v < 0 || v as usize >= size {
            return Err(Error::IndexOutOfBounds { op: "gather", index: v, axis, size });
        }
        let mut rem = p;
        let mut off = l.offset();
        for d in (0..rank).rev() {
            let c = rem % idims[d];
            rem /= idims[d];
            off += if d == axis { v as usize } else { c } * l.strides()[d];
        }
        offs.push(off);
    }
    Ok(offs)
}

/// `out[p] = src[p with axis coordinate = index[p]]`; out has the index's shape.
pub fn gather(s: &CpuStorage, l: &Layout, axis: usize, index: &[i64], il: &Layout) -> Result<CpuStorage> {
    let offs = gather_offsets(l, axis, index, il)?;
    Ok(map_storage!(s, v => offs.iter().map(|&o| v[o]).collect()))
}

fn scatter_add_typed<T: Copy + Default + std::ops::Add<Output = T>>(n: usize, offs: &[usize], src: &[T]) -> Vec<T> {
    let mut out = vec![T::default(); n];
    for (&o, &x) in offs.iter().zip(src) {
        out[o] = out[o] + x;
    }
    out
}

/// Zeros of `shape` with `src[p]` added at `[p with axis coordinate = index[p]]` (gather's
/// adjoint). `src` has the index's shape.
pub fn scatter_add(
    shape: &Shape,
    axis: usize,
    index: &[i64],
    il: &Layout,
    src: &CpuStorage,
    sl: &Layout,
) -> Result<CpuStorage> {
    let offs = gather_offsets(&Layout::contiguous(shape.clone()), axis, index, il)?;
    let n = shape.numel();
    let src = super::copy::contiguous(src, sl);
    Ok(match &src {
        CpuStorage::F32(v) => CpuStorage::F32(scatter_add_typed(n, &offs, v)),
        CpuStorage::F64(v) => CpuStorage::F64(scatter_add_typed(n, &offs, v)),
        CpuStorage::F16(v) => CpuStorage::F16(scatter_add_typed(n, &offs, v)),
        CpuStorage::BF16(v) => CpuStorage::BF16(scatter_add_typed(n, &offs, v)),
        CpuStorage::I64(v) => CpuStorage::I64(scatter_add_typed(n, &offs, v)),
        CpuStorage::U8(_) => return Err(super::unsupported("scatter_add", crate::DType::U8)),
    })
}
