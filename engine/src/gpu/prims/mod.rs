//! The engine's primitives on a GPU device: launch code for the kernels in
//! `kernels/cuda/{elementwise,copy,random,reduce,softmax,index}.cu`, shared by Cuda and Emu.
//!
//! Each function mirrors its CPU twin in `crate::cpu` (same arguments, same result, a fresh
//! contiguous storage) and computes the launch geometry and the by-value arguments once. Layouts
//! travel as [`LayoutArg`] (mirrors `bg_layout` in `kernels/cuda/common.cuh`) after adjacent axes
//! that are contiguous in every operand are merged, so most index arithmetic is one division.

pub mod copy;
pub mod elementwise;
pub mod index;
pub mod matmul;
pub mod random;
pub mod reduce;
pub mod softmax;

use std::sync::Arc;

use super::{GpuRuntime, KernelArg, LaunchConfig};
use crate::{DType, Error, GpuStorage, Layout, Result};

/// Most axes a kernel layout holds after merging (`BG_MAX_RANK`).
pub const MAX_RANK: usize = 8;

/// Threads per block of the elementwise kernels.
pub const THREADS: u32 = 256;

/// `bg_layout`: element `i` (row-major) lives at `offset + Σ i_d · strides[d]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutArg {
    pub dims: [i64; MAX_RANK],
    pub strides: [i64; MAX_RANK],
    pub offset: i64,
    pub rank: i32,
    /// 1 when element `i` is at `offset + i`.
    pub contiguous: i32,
}

// SAFETY: plain integers, no padding (8·8·2 + 8 + 4 + 4 bytes, all 8-aligned).
unsafe impl bytemuck::Zeroable for LayoutArg {}
unsafe impl bytemuck::Pod for LayoutArg {}

impl LayoutArg {
    /// From explicit dims and strides (elements); fails beyond [`MAX_RANK`] axes.
    pub fn new(dims: &[usize], strides: &[usize], offset: usize) -> Result<Self> {
        if dims.len() > MAX_RANK {
            return Err(Error::invalid(
                "gpu layout",
                format!("{} axes that cannot be merged (shape {dims:?}, strides {strides:?}); GPU kernels take at most {MAX_RANK}", dims.len()),
            ));
        }
        let mut a = LayoutArg {
            dims: [1; MAX_RANK],
            strides: [0; MAX_RANK],
            offset: offset as i64,
            rank: dims.len() as i32,
            contiguous: 0,
        };
        for (i, (&d, &s)) in dims.iter().zip(strides).enumerate() {
            a.dims[i] = d as i64;
            a.strides[i] = s as i64;
        }
        let mut acc = 1usize;
        a.contiguous = dims.iter().zip(strides).rev().all(|(&d, &s)| {
            let ok = d == 1 || s == acc;
            acc *= d;
            ok
        }) as i32;
        Ok(a)
    }

    /// One layout on its own, axes merged.
    pub fn of(l: &Layout) -> Result<Self> {
        Ok(Self::merged(&[l])?.remove(0))
    }

    /// Several layouts of the same shape, walked together: axes are merged where every layout
    /// allows it, so the kernels see the same (shorter) logical shape for all of them.
    pub fn merged(ls: &[&Layout]) -> Result<Vec<Self>> {
        let dims = ls[0].dims();
        // Keep the axes of size > 1; then fold axis i into the one before when contiguous in all.
        let keep: Vec<usize> = (0..dims.len()).filter(|&d| dims[d] != 1).collect();
        let mut md: Vec<usize> = Vec::new();
        let mut ms: Vec<Vec<usize>> = vec![Vec::new(); ls.len()];
        for &d in &keep {
            let mergeable =
                !md.is_empty() && ls.iter().zip(&ms).all(|(l, s)| *s.last().unwrap() == l.strides()[d] * dims[d]);
            if mergeable {
                *md.last_mut().unwrap() *= dims[d];
                for (l, s) in ls.iter().zip(ms.iter_mut()) {
                    *s.last_mut().unwrap() = l.strides()[d];
                }
            } else {
                md.push(dims[d]);
                for (l, s) in ls.iter().zip(ms.iter_mut()) {
                    s.push(l.strides()[d]);
                }
            }
        }
        ls.iter().zip(&ms).map(|(l, s)| LayoutArg::new(&md, s, l.offset())).collect()
    }

    /// The same layout starting `offset` elements into the storage.
    pub fn with_offset(mut self, offset: usize) -> Self {
        self.offset = offset as i64;
        self
    }

    pub fn arg(&self) -> KernelArg {
        KernelArg::pod(self)
    }
}

/// The kernel-name suffix of a dtype (`unary_f32`, `cast_f16_f32`, …): its usual name.
pub fn dtype_suffix(d: DType) -> &'static str {
    d.as_str()
}

/// The suffix of the kernels that only move bytes (`copy_b4`, `take_b2`, …).
pub fn bytes_suffix(d: DType) -> &'static str {
    match d.size_in_bytes() {
        1 => "b1",
        2 => "b2",
        4 => "b4",
        _ => "b8",
    }
}

/// Fails unless `d` is a float type (the arithmetic kernels are instantiated for those).
pub fn expect_float(op: &'static str, d: DType) -> Result<()> {
    if d.is_float() {
        Ok(())
    } else {
        Err(Error::UnsupportedDType { op, dtype: d })
    }
}

/// A grid-stride launch over `n` elements; nothing is launched for `n = 0`.
pub fn launch_n(rt: &Arc<dyn GpuRuntime>, kernel: &str, n: usize, args: &[KernelArg]) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    rt.launch(kernel, &LaunchConfig::for_elements(n, THREADS), args)
}

/// Output storage on the same runtime as `like`.
pub fn out_like(like: &GpuStorage, dtype: DType, n: usize) -> Result<GpuStorage> {
    GpuStorage::alloc(like.runtime(), dtype, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_arg_matches_the_c_struct_size() {
        assert_eq!(std::mem::size_of::<LayoutArg>(), 8 * MAX_RANK * 2 + 16);
    }

    #[test]
    fn merging_folds_contiguous_axes_and_drops_unit_axes() {
        let l = Layout::contiguous([2, 1, 3, 4]);
        let a = LayoutArg::of(&l).unwrap();
        assert_eq!((a.rank, a.dims[0], a.strides[0], a.contiguous), (1, 24, 1, 1));
        // A transposed view does not merge; a broadcast operand blocks merging for both.
        let t = Layout::contiguous([3, 4]).permute(&[1, 0]).unwrap();
        let a = LayoutArg::of(&t).unwrap();
        assert_eq!((a.rank, &a.dims[..2], &a.strides[..2], a.contiguous), (2, &[4, 3][..], &[1, 4][..], 0));
        let b = Layout::contiguous([1, 4]).broadcast_to(&[3, 4].into()).unwrap();
        let m = LayoutArg::merged(&[&Layout::contiguous([3, 4]), &b]).unwrap();
        assert_eq!((m[0].rank, m[1].rank, m[1].strides[0], m[1].strides[1]), (2, 2, 0, 1));
        // Scalars: rank 0, contiguous.
        let s = LayoutArg::of(&Layout::contiguous(())).unwrap();
        assert_eq!((s.rank, s.contiguous), (0, 1));
    }

    #[test]
    fn too_many_axes_is_an_error() {
        let dims = [2usize; 9];
        let l = Layout::contiguous(dims).permute(&[8, 7, 6, 5, 4, 3, 2, 1, 0]).unwrap();
        assert!(LayoutArg::of(&l).is_err());
    }
}
