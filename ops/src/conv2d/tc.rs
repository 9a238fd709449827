//! Tensor-core convolutions on a GPU device (`kernels/cuda/tc_conv_*.cu`; shapes, checks and
//! launches from `bitgrad_kernels::tc_conv`): bf16 operands, f32 accumulation, channels-last —
//! x `[N, H, W, C]`, weights `[K, R, S, C]`, y `[N, P, Q, K]` — with C and K multiples of 8 (the
//! stem's 3 channels are padded with `bitgrad_kernels::tc_conv::pad_channels`). Plain functions on
//! tensors, no autograd node: `crate::std_conv2d` builds the models' mixed-precision convolution
//! (one autograd node) from them. Errors (never panics) on other dtypes, devices, ranks,
//! grouped convolutions and shapes the kernels cannot take.

use std::sync::Arc;

use bitgrad_engine::gpu::{DevicePtr, GpuRuntime, KernelArg, LaunchConfig};
use bitgrad_engine::{DType, Error, GpuStorage, Result, Storage, Tensor};
use bitgrad_kernels::tc_conv::{self, ConvParams, ConvShape, Launch};

use super::Conv2dParams;

const OP: &str = "tc_conv2d";

/// The kernels' shape for input `[n, h, w, c]` and filters `[k, r, s]` under `p`.
fn shape(nhwc: [usize; 4], krs: [usize; 3], p: &Conv2dParams) -> Result<ConvShape> {
    if p.groups != 1 {
        return Err(Error::invalid(OP, format!("groups = {} (the tensor-core kernels are dense)", p.groups)));
    }
    let cp =
        ConvParams { stride: (p.stride[0], p.stride[1]), pad: p.padding.sides(), dil: (p.dilation[0], p.dilation[1]) };
    ConvShape::new(nhwc, krs, cp).map_err(|e| Error::invalid(OP, e))
}

/// `t` as a contiguous rank-4 tensor of `dtype` on a GPU device: its dims, runtime and pointer.
fn operand(t: &Tensor, what: &str, dtype: DType) -> Result<([usize; 4], Arc<dyn GpuRuntime>, Tensor)> {
    if !t.device().is_gpu() {
        return Err(Error::invalid(OP, format!("{what} is on {}; the kernels run on a GPU device", t.device())));
    }
    if t.dtype() != dtype {
        return Err(Error::invalid(OP, format!("{what} is {}, the kernels take {dtype}", t.dtype())));
    }
    let dims: [usize; 4] =
        t.dims().try_into().map_err(|_| Error::invalid(OP, format!("{what} has shape {}, not rank 4", t.shape())))?;
    let t = t.contiguous()?;
    let rt = t.storage().gpu(OP)?.runtime().clone();
    Ok((dims, rt, t))
}

/// Whether the three tensor-core passes take input `[n, h, w, c]` and filters `[k, r, s]` under
/// `p` (c and k multiples of 8, one group, shapes the launch plans accept).
pub(crate) fn takes(nhwc: [usize; 4], krs: [usize; 3], p: &Conv2dParams) -> bool {
    shape(nhwc, krs, p).is_ok_and(|sh| {
        tc_conv::fprop(&sh, false).is_ok() && tc_conv::dgrad(&sh, false).is_ok() && tc_conv::wgrad(&sh, None).is_ok()
    })
}

fn ptr(t: &Tensor) -> Result<KernelArg> {
    Ok(KernelArg::Ptr(t.storage().gpu(OP)?.ptr_at(t.layout().offset())))
}

fn launch(rt: &Arc<dyn GpuRuntime>, l: &Launch, args: &[KernelArg]) -> Result<()> {
    let cfg = LaunchConfig { grid: l.grid, block: l.block, shared_bytes: l.smem_bytes };
    rt.launch(l.kernel, &cfg, args)
}

fn out_dtype(out: DType) -> Result<bool> {
    match out {
        DType::F32 => Ok(true),
        DType::BF16 => Ok(false),
        dtype => Err(Error::UnsupportedDType { op: OP, dtype }),
    }
}

fn expect_dims(what: &str, got: [usize; 4], want: [usize; 4]) -> Result<()> {
    if got != want {
        return Err(Error::invalid(OP, format!("{what} is {got:?}, expected {want:?}")));
    }
    Ok(())
}

/// `y = conv(x, w) (+ residual)`, y `[N, P, Q, K]` in `out` (bf16 or f32); x, w and the residual
/// (`[N, P, Q, K]`) bf16.
pub fn tc_conv2d_fprop(
    x: &Tensor,
    w: &Tensor,
    residual: Option<&Tensor>,
    p: &Conv2dParams,
    out: DType,
) -> Result<Tensor> {
    let f32_out = out_dtype(out)?;
    let (xd, rt, x) = operand(x, "x", DType::BF16)?;
    let (wd, _, w) = operand(w, "w", DType::BF16)?;
    expect_dims("w's channels", [wd[3], 0, 0, 0], [xd[3], 0, 0, 0])?;
    let sh = shape(xd, [wd[0], wd[1], wd[2]], p)?;
    let yd = [xd[0], sh.p as usize, sh.q as usize, wd[0]];
    let residual = residual.map(|r| operand(r, "residual", DType::BF16)).transpose()?;
    if let Some((rd, _, _)) = &residual {
        expect_dims("the residual", *rd, yd)?;
    }
    let y = GpuStorage::alloc(&rt, out, sh.y_len())?;
    let res = residual.map(|(_, _, r)| ptr(&r)).transpose()?.unwrap_or(KernelArg::Ptr(DevicePtr(0)));
    let args = [ptr(&x)?, ptr(&w)?, res, KernelArg::Ptr(y.ptr()), KernelArg::Struct(sh.bytes())];
    launch(&rt, &tc_conv::fprop(&sh, f32_out).map_err(|e| Error::invalid(OP, e))?, &args)?;
    Ok(Tensor::from_storage(Storage::Gpu(y), yd))
}

/// The input gradient dx `[N, H, W, C]` (bf16 or f32) of a convolution with input size
/// `input_hw`, from dy `[N, P, Q, K]` and w `[K, R, S, C]` (bf16).
pub fn tc_conv2d_dgrad(dy: &Tensor, w: &Tensor, input_hw: [usize; 2], p: &Conv2dParams, out: DType) -> Result<Tensor> {
    let f32_out = out_dtype(out)?;
    let (dyd, rt, dy) = operand(dy, "dy", DType::BF16)?;
    let (wd, _, w) = operand(w, "w", DType::BF16)?;
    let sh = shape([dyd[0], input_hw[0], input_hw[1], wd[3]], [wd[0], wd[1], wd[2]], p)?;
    expect_dims("dy", dyd, [dyd[0], sh.p as usize, sh.q as usize, wd[0]])?;
    let dx = GpuStorage::alloc(&rt, out, sh.x_len())?;
    let args = [ptr(&dy)?, ptr(&w)?, KernelArg::Ptr(dx.ptr()), KernelArg::Struct(sh.bytes())];
    launch(&rt, &tc_conv::dgrad(&sh, f32_out).map_err(|e| Error::invalid(OP, e))?, &args)?;
    Ok(Tensor::from_storage(Storage::Gpu(dx), [dyd[0], input_hw[0], input_hw[1], wd[3]]))
}

/// The weight gradient dW `[K, R, S, C]` (f32) of a convolution with `filter_rs` filters, from
/// dy `[N, P, Q, K]` and x `[N, H, W, C]` (bf16). Deterministic: the split-K count depends on
/// the shape alone and the partials are added in split order.
pub fn tc_conv2d_wgrad(dy: &Tensor, x: &Tensor, filter_rs: [usize; 2], p: &Conv2dParams) -> Result<Tensor> {
    let (dyd, rt, dy) = operand(dy, "dy", DType::BF16)?;
    let (xd, _, x) = operand(x, "x", DType::BF16)?;
    let sh = shape(xd, [dyd[3], filter_rs[0], filter_rs[1]], p)?;
    expect_dims("dy", dyd, [xd[0], sh.p as usize, sh.q as usize, dyd[3]])?;
    let plan = tc_conv::wgrad(&sh, None).map_err(|e| Error::invalid(OP, e))?;
    let dw = GpuStorage::alloc(&rt, DType::F32, sh.w_len())?;
    let work = rt.alloc(4 * plan.workspace.max(1))?; // unused with one split
    let target = if plan.reduce.is_some() { work.ptr() } else { dw.ptr() };
    let args = [
        ptr(&dy)?,
        ptr(&x)?,
        KernelArg::Ptr(target),
        KernelArg::Struct(sh.bytes()),
        KernelArg::I32(plan.tiles_per_split),
    ];
    launch(&rt, &plan.launch, &args)?;
    if let Some(red) = &plan.reduce {
        let args = [
            KernelArg::Ptr(work.ptr()),
            KernelArg::Ptr(dw.ptr()),
            KernelArg::I64(sh.w_len() as i64),
            KernelArg::I32(plan.splits as i32),
        ];
        launch(&rt, red, &args)?;
    }
    Ok(Tensor::from_storage(Storage::Gpu(dw), [dyd[3], filter_rs[0], filter_rs[1], xd[3]]))
}
