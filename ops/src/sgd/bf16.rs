//! The SGD step of the bf16 training path on a GPU device (`sgd_multi_f32_bf16` in
//! `kernels/cuda/sgd.cu`): one launch updates a list of f32 master weights in place (with
//! [`super::Sgd`]'s semantics and roundings: weight decay, momentum with dampening 0, Nesterov)
//! and writes each updated weight, rounded to bf16 (RNE), to its bf16 copy, so the tensor-core
//! passes read the new weights without another pass. The momentum buffers are the caller's
//! (f32, the weight's shape; written, not read, on the first step). A plain function: the
//! parameters' `.grad()`s and [`super::Sgd`]'s own buffers are not involved.

use bitgrad_engine::gpu::prims::THREADS;
use bitgrad_engine::gpu::{KernelArg, LaunchConfig};
use bitgrad_engine::{CpuStorage, DType, Error, GpuStorage, Result, Tensor};

use super::gpu::Hyper;
use super::Sgd;
use crate::group_norm::gpu::{dev_ptr, runtime};

const OP: &str = "sgd_step_f32_bf16";

/// One parameter of a step: f32 master weight, its f32 gradient and momentum buffer (None
/// without momentum), and the bf16 copy to write; all contiguous, of one shape, on one device.
#[derive(Debug, Clone, Copy)]
pub struct SgdBf16Param<'a> {
    pub w: &'a Tensor,
    pub grad: &'a Tensor,
    pub momentum_buffer: Option<&'a Tensor>,
    pub w_bf16: &'a Tensor,
}

/// Mirrors `bg_sgd_record_bf16`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct RecordBf16 {
    w: u64,
    g: u64,
    b: u64,
    wb: u64,
    n: i64,
    first: i32,
    pad: i32,
}

// SAFETY: four u64, an i64 and two i32, no padding.
unsafe impl bytemuck::Zeroable for RecordBf16 {}
unsafe impl bytemuck::Pod for RecordBf16 {}

/// The most blocks per tensor, and the `gridDim.y` limit (as `Sgd`'s multi-tensor step).
const MULTI_BLOCKS: usize = 1024;
const MAX_GRID_Y: usize = 65_535;

fn check(t: &Tensor, what: &str, i: usize, dtype: DType, w: &Tensor) -> Result<()> {
    let fail = |why: String| Err(Error::invalid(OP, format!("parameter {i}: {what} {why}")));
    if t.dtype() != dtype {
        return fail(format!("is {}, expected {dtype}", t.dtype()));
    }
    if t.dims() != w.dims() || t.device() != w.device() {
        return fail(format!("is {} on {}, the weight {} on {}", t.shape(), t.device(), w.shape(), w.device()));
    }
    if !t.is_contiguous() {
        return fail("is not contiguous (it is updated in place)".into());
    }
    Ok(())
}

/// One step of `opt`'s hyper-parameters over `params` (`first`: every parameter's first step),
/// in one launch per 65535 parameters. Errors, before anything is written, on a dtype, shape,
/// device or layout the kernel cannot take, or momentum buffers given without momentum (or
/// missing with it). The tensors of different parameters must not overlap (the launch updates
/// them concurrently; this is not checked).
pub fn sgd_step_f32_bf16(opt: &Sgd, params: &[SgdBf16Param], first: bool) -> Result<()> {
    opt.check()?;
    let Some(p0) = params.first() else { return Ok(()) };
    if !p0.w.device().is_gpu() {
        return Err(Error::invalid(
            OP,
            format!("the weights are on {}; the kernel runs on a GPU device", p0.w.device()),
        ));
    }
    let momentum = opt.momentum != 0.0;
    let mut records = Vec::with_capacity(params.len());
    for (i, p) in params.iter().enumerate() {
        if p.w.device() != p0.w.device() {
            return Err(Error::invalid(
                OP,
                format!("parameter {i} is on {}, parameter 0 on {}", p.w.device(), p0.w.device()),
            ));
        }
        check(p.w, "w", i, DType::F32, p.w)?;
        check(p.grad, "grad", i, DType::F32, p.w)?;
        check(p.w_bf16, "w_bf16", i, DType::BF16, p.w)?;
        let b = match (p.momentum_buffer, momentum) {
            (Some(b), true) => {
                check(b, "momentum_buffer", i, DType::F32, p.w)?;
                dev_ptr(b)?.0
            }
            (None, false) => 0,
            (Some(_), false) => {
                return Err(Error::invalid(OP, format!("parameter {i}: a momentum buffer without momentum")))
            }
            (None, true) => return Err(Error::invalid(OP, format!("parameter {i}: momentum needs a buffer"))),
        };
        records.push(RecordBf16 {
            w: dev_ptr(p.w)?.0,
            g: dev_ptr(p.grad)?.0,
            b,
            wb: dev_ptr(p.w_bf16)?.0,
            n: p.w.numel() as i64,
            first: first as i32,
            pad: 0,
        });
    }
    let rt = runtime(p0.w)?;
    let h = Hyper::new(opt.lr, opt.momentum, opt.weight_decay, opt.nesterov);
    for chunk in records.chunks(MAX_GRID_Y) {
        let max_n = chunk.iter().map(|r| r.n as usize).max().unwrap_or(0);
        if max_n == 0 {
            continue;
        }
        let list = GpuStorage::from_cpu(&rt, &CpuStorage::U8(bytemuck::cast_slice(chunk).to_vec()))?;
        let blocks = max_n.div_ceil(THREADS as usize).min(MULTI_BLOCKS) as u32;
        let cfg = LaunchConfig { grid: [blocks, chunk.len() as u32, 1], block: [THREADS, 1, 1], shared_bytes: 0 };
        rt.launch("sgd_multi_f32_bf16", &cfg, &[list.ptr().into(), KernelArg::pod(&h)])?;
    }
    Ok(())
}
