//! Pooling on a GPU device (`kernels/cuda/pool.cu`), shared by Cuda and Emu.
//!
//! Forward kernels run one thread per output (grid-stride), the max/avg backward kernels one
//! thread per *input* element gathering from the outputs whose window covers it (deterministic
//! with overlapping windows, no atomics, and in the CPU's order of additions), the global average
//! pool one warp per plane. Inputs are made contiguous first; f32 and f64 run directly (the caller
//! routes f16/bf16 through f32 as on the CPU).

use bitgrad_engine::gpu::prims::{dtype_suffix, launch_n, out_like, THREADS};
use bitgrad_engine::gpu::{GpuBuffer, KernelArg, LaunchConfig, MAX_GRID_BLOCKS};
use bitgrad_engine::{Error, GpuStorage, Result, Tensor};

use super::PoolGeom;

/// Mirrors `bg_pool` in `pool.cu`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct PoolArgs {
    planes: i64,
    h: i64,
    w: i64,
    kh: i64,
    kw: i64,
    sh: i64,
    sw: i64,
    ph: i64,
    pw: i64,
    oh: i64,
    ow: i64,
}

// SAFETY: eleven i64, no padding.
unsafe impl bytemuck::Zeroable for PoolArgs {}
unsafe impl bytemuck::Pod for PoolArgs {}

fn pool_arg(g: &PoolGeom) -> KernelArg {
    let i = |v: usize| v as i64;
    KernelArg::pod(&PoolArgs {
        planes: i(g.planes),
        h: i(g.h),
        w: i(g.w),
        kh: i(g.kernel[0]),
        kw: i(g.kernel[1]),
        sh: i(g.stride[0]),
        sw: i(g.stride[1]),
        ph: i(g.padding[0]),
        pw: i(g.padding[1]),
        oh: i(g.out_h),
        ow: i(g.out_w),
    })
}

/// Runs `f` with the device storage of contiguous `t` and the address of its first element.
fn with_gpu<R>(
    t: &Tensor,
    op: &'static str,
    f: impl FnOnce(&GpuStorage, bitgrad_engine::gpu::DevicePtr) -> Result<R>,
) -> Result<R> {
    let t = t.contiguous()?;
    let st = t.storage();
    let s = st.gpu(op)?;
    f(s, s.ptr_at(t.layout().offset()))
}

fn name(kernel: &str, s: &GpuStorage) -> String {
    format!("{kernel}_{}", dtype_suffix(s.dtype()))
}

/// Max pooling: the outputs and, per output, the in-plane position (u32) of its first maximum.
pub(super) fn max_forward(x: &Tensor, g: &PoolGeom) -> Result<(GpuStorage, GpuBuffer)> {
    with_gpu(x, "max_pool2d", |s, xp| {
        let n = g.planes * g.out_h * g.out_w;
        let y = out_like(s, s.dtype(), n)?;
        let arg = s.runtime().alloc(n * 4)?;
        launch_n(
            s.runtime(),
            &name("maxpool2d_fwd", s),
            n,
            &[pool_arg(g), xp.into(), y.ptr().into(), arg.ptr().into()],
        )?;
        Ok((y, arg))
    })
}

/// Max-pool backward: each input collects the gradients of the outputs it is the argmax of.
pub(super) fn max_backward(gy: &Tensor, g: &PoolGeom, argmax: &GpuBuffer) -> Result<GpuStorage> {
    with_gpu(gy, "max_pool2d backward", |s, gp| {
        let n = g.planes * g.h * g.w;
        let gx = out_like(s, s.dtype(), n)?;
        let args = [pool_arg(g), gp.into(), argmax.ptr().into(), gx.ptr().into()];
        launch_n(s.runtime(), &name("maxpool2d_bwd", s), n, &args)?;
        Ok(gx)
    })
}

pub(super) fn avg_forward(x: &Tensor, g: &PoolGeom, count_include_pad: bool) -> Result<GpuStorage> {
    with_gpu(x, "avg_pool2d", |s, xp| {
        let n = g.planes * g.out_h * g.out_w;
        let y = out_like(s, s.dtype(), n)?;
        let args = [pool_arg(g), (count_include_pad as i32).into(), xp.into(), y.ptr().into()];
        launch_n(s.runtime(), &name("avgpool2d_fwd", s), n, &args)?;
        Ok(y)
    })
}

pub(super) fn avg_backward(gy: &Tensor, g: &PoolGeom, count_include_pad: bool) -> Result<GpuStorage> {
    with_gpu(gy, "avg_pool2d backward", |s, gp| {
        let n = g.planes * g.h * g.w;
        let gx = out_like(s, s.dtype(), n)?;
        let args = [pool_arg(g), (count_include_pad as i32).into(), gp.into(), gx.ptr().into()];
        launch_n(s.runtime(), &name("avgpool2d_bwd", s), n, &args)?;
        Ok(gx)
    })
}

/// The f64-accumulated mean of each `plane`-sized block: one warp per plane, 8 per block.
pub(super) fn plane_means(x: &Tensor, plane: usize) -> Result<GpuStorage> {
    with_gpu(x, "global_avg_pool", |s, xp| {
        let planes = x.numel() / plane;
        let y = out_like(s, s.dtype(), planes)?;
        if planes > 0 {
            let blocks = planes.div_ceil((THREADS / 32) as usize).min(MAX_GRID_BLOCKS as usize) as u32;
            let args = [(planes as i64).into(), (plane as i64).into(), xp.into(), y.ptr().into()];
            s.runtime().launch(&name("gap_fwd", s), &LaunchConfig::linear(blocks, THREADS), &args)?;
        }
        Ok(y)
    })
}

/// Global-average-pool backward: `gx[e] = g[e / plane] / plane`.
pub(super) fn spread_means(gy: &Tensor, plane: usize) -> Result<GpuStorage> {
    with_gpu(gy, "global_avg_pool backward", |s, gp| {
        let n = gy.numel() * plane;
        let gx = out_like(s, s.dtype(), n)?;
        launch_n(
            s.runtime(),
            &name("gap_bwd", s),
            n,
            &[(n as i64).into(), (plane as i64).into(), gp.into(), gx.ptr().into()],
        )?;
        Ok(gx)
    })
}

/// The argmax of a max-pool forward, where the forward ran.
pub(super) enum Argmax {
    Cpu(Vec<u32>),
    Gpu(GpuBuffer),
}

impl Argmax {
    pub(super) fn gpu(&self) -> Result<&GpuBuffer> {
        match self {
            Argmax::Gpu(b) => Ok(b),
            Argmax::Cpu(_) => {
                Err(Error::invalid("max_pool2d backward", "gradient on a GPU for a forward run on the CPU"))
            }
        }
    }
    pub(super) fn cpu(&self) -> Result<&[u32]> {
        match self {
            Argmax::Cpu(v) => Ok(v),
            Argmax::Gpu(_) => {
                Err(Error::invalid("max_pool2d backward", "gradient on the CPU for a forward run on a GPU"))
            }
        }
    }
}
