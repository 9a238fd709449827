//! The SGD step on a GPU device (`kernels/cuda/sgd.cu`), shared by Cuda and Emu: one fused kernel
//! per parameter, or one launch for a whole list of parameters (`sgd_multi_*`: a device array of
//! `{param, grad, buffer, n}` records, `blockIdx.y` picking the record), which is what
//! [`super::Sgd::step`] uses when every parameter lives on one GPU device — BiT-R50 has 153
//! parameter tensors, so this saves 152 launches per step.

use std::sync::Arc;

use bitgrad_engine::gpu::prims::{dtype_suffix, launch_n, THREADS};
use bitgrad_engine::gpu::{DevicePtr, GpuRuntime, KernelArg, LaunchConfig};
use bitgrad_engine::{CpuStorage, DType, GpuStorage, Result};

/// Mirrors `bg_sgd_hyper`; the kernel converts each value to the dtype, as `cpu::Hyper` does.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(super) struct Hyper {
    pub neg_lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub decay: i32,
    pub nesterov: i32,
}

// SAFETY: three f64 and two i32, no padding.
unsafe impl bytemuck::Zeroable for Hyper {}
unsafe impl bytemuck::Pod for Hyper {}

impl Hyper {
    pub fn new(lr: f64, momentum: f64, weight_decay: f64, nesterov: bool) -> Self {
        Hyper { neg_lr: -lr, momentum, weight_decay, decay: (weight_decay != 0.0) as i32, nesterov: nesterov as i32 }
    }
}

/// Mirrors `bg_sgd_record`: one parameter's update.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(super) struct Record {
    pub w: u64,
    pub g: u64,
    /// The momentum buffer, 0 without momentum.
    pub b: u64,
    pub n: i64,
    /// 1 on the parameter's first step (the buffer is written, not read).
    pub first: i32,
    pub pad: i32,
}

// SAFETY: three u64, an i64 and two i32, no padding.
unsafe impl bytemuck::Zeroable for Record {}
unsafe impl bytemuck::Pod for Record {}

impl Record {
    pub fn new(w: DevicePtr, g: DevicePtr, b: Option<DevicePtr>, n: usize, first: bool) -> Self {
        Record { w: w.0, g: g.0, b: b.map_or(0, |b| b.0), n: n as i64, first: first as i32, pad: 0 }
    }
}

/// Updates one parameter in place.
pub(super) fn step_one(rt: &Arc<dyn GpuRuntime>, dtype: DType, r: &Record, h: &Hyper) -> Result<()> {
    let args = [
        r.n.into(),
        DevicePtr(r.w).into(),
        DevicePtr(r.g).into(),
        DevicePtr(r.b).into(),
        r.first.into(),
        KernelArg::pod(h),
    ];
    launch_n(rt, &format!("sgd_step_{}", dtype_suffix(dtype)), r.n as usize, &args)
}

/// The most blocks per tensor of a multi-tensor launch: enough to fill a GPU for the largest
/// BiT tensors (2.4 M elements), grid-striding beyond.
const MULTI_BLOCKS: usize = 1024;
/// `gridDim.y` limit.
const MAX_GRID_Y: usize = 65_535;

/// Updates every parameter of `records` (all of `dtype`, on `rt`'s device) in one launch.
pub(super) fn step_multi(rt: &Arc<dyn GpuRuntime>, dtype: DType, records: &[Record], h: &Hyper) -> Result<()> {
    for chunk in records.chunks(MAX_GRID_Y) {
        let max_n = chunk.iter().map(|r| r.n as usize).max().unwrap_or(0);
        if max_n == 0 {
            continue;
        }
        let list = GpuStorage::from_cpu(rt, &CpuStorage::U8(bytemuck::cast_slice(chunk).to_vec()))?;
        let blocks = max_n.div_ceil(THREADS as usize).min(MULTI_BLOCKS) as u32;
        let cfg = LaunchConfig { grid: [blocks, chunk.len() as u32, 1], block: [THREADS, 1, 1], shared_bytes: 0 };
        // The record array goes back to the caching allocator after the launch is queued; a later
        // request reuses it only behind this kernel on the device's stream.
        rt.launch(&format!("sgd_multi_{}", dtype_suffix(dtype)), &cfg, &[list.ptr().into(), KernelArg::pod(h)])?;
    }
    Ok(())
}
