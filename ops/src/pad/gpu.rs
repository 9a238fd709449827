//! pad2d on a GPU device (`kernels/cuda/pad.cu`), shared by Cuda and Emu.
//!
//! The kernels only move elements, so one kernel per element size serves every dtype
//! (`pad2d_b4` pads f32 as well as any other 4-byte type); the fill value travels as the dtype's
//! bit pattern, converted on the host exactly as the CPU path converts it (`CpuStorage::full`).
//! Inputs are made contiguous first (a strided input costs one copy, as on the CPU).

use bitgrad_engine::gpu::prims::{bytes_suffix, launch_n, out_like};
use bitgrad_engine::{CpuStorage, GpuStorage, Result, Tensor};

use super::PadGeom;

/// Runs `f` with the device storage of contiguous `t` and the index of its first element.
fn with_gpu<R>(t: &Tensor, op: &'static str, f: impl FnOnce(&GpuStorage, usize) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let st = t.storage();
    f(st.gpu(op)?, t.layout().offset())
}

/// The geometry arguments shared by both kernels.
fn geom_args(g: &PadGeom, n: usize) -> [bitgrad_engine::gpu::KernelArg; 7] {
    [
        (n as i64).into(),
        (g.h as i64).into(),
        (g.w as i64).into(),
        (g.pads[0] as i64).into(),
        (g.pads[2] as i64).into(),
        (g.out_h() as i64).into(),
        (g.out_w() as i64).into(),
    ]
}

/// `x` padded with `value` (converted to the dtype as the CPU does), as a fresh storage.
pub(super) fn pad(x: &Tensor, geom: PadGeom, value: f64) -> Result<GpuStorage> {
    let mut bits = [0u8; 8];
    let v = CpuStorage::full(x.dtype(), 1, value);
    bits[..v.as_bytes().len()].copy_from_slice(v.as_bytes());
    with_gpu(x, "pad2d", |s, off| {
        let n = geom.planes * geom.out_h() * geom.out_w();
        let out = out_like(s, s.dtype(), n)?;
        let mut args = geom_args(&geom, n).to_vec();
        args.extend([s.ptr_at(off).into(), out.ptr().into(), u64::from_le_bytes(bits).into()]);
        launch_n(s.runtime(), &format!("pad2d_{}", bytes_suffix(s.dtype())), n, &args)?;
        Ok(out)
    })
}

/// The interior of each padded plane of `g`, as a contiguous `[planes, h, w]` storage.
pub(super) fn crop(g: &Tensor, geom: PadGeom) -> Result<GpuStorage> {
    with_gpu(g, "pad2d backward", |s, off| {
        let n = geom.planes * geom.h * geom.w;
        let out = out_like(s, s.dtype(), n)?;
        let mut args = geom_args(&geom, n).to_vec();
        args.extend([s.ptr_at(off).into(), out.ptr().into()]);
        launch_n(s.runtime(), &format!("pad2d_crop_{}", bytes_suffix(s.dtype())), n, &args)?;
        Ok(out)
    })
}
