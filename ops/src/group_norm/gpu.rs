//! Group norm on a GPU device (`kernels/cuda/group_norm.cu`), shared by Cuda and Emu, and the
//! small launch helpers the normalization ops share (as `lanes.rs` is shared on the CPU).
//!
//! Forward: one block per (n, g) group (statistics, then y with the per-channel scale and shift
//! in shared memory). Backward: one block per group computes the per-channel sums and writes dx
//! in a second pass over the group; the per-(n, c) partials of dgamma/dbeta go to f64 buffers
//! that a small kernel reduces over n in order. μ and r stay on the device.
//!
//! f16/bf16 run natively: x, γ, β, y and the gradients in the half dtype, the arithmetic in f32
//! exactly as the f32 kernels (and as the CPU op, which converts half inputs to f32), each output
//! rounded once; μ and r are saved in f32 ([`stats_dtype`]).

use std::sync::Arc;

use bitgrad_engine::gpu::prims::dtype_suffix;
use bitgrad_engine::gpu::{DevicePtr, GpuRuntime, KernelArg, LaunchConfig};
use bitgrad_engine::{DType, Error, GpuStorage, Result, Storage, Tensor};

use super::cpu::Dims;
use super::{Activation, GroupNormBackward};

/// Dynamic shared memory every GPU we target grants without opting in.
const MAX_SHARED: usize = 48 * 1024;

/// The runtime of a device tensor.
pub(crate) fn runtime(t: &Tensor) -> Result<Arc<dyn GpuRuntime>> {
    Ok(t.storage().gpu("normalization")?.runtime().clone())
}

/// The address of the first element of a contiguous device tensor.
pub(crate) fn dev_ptr(t: &Tensor) -> Result<DevicePtr> {
    debug_assert!(t.is_contiguous());
    Ok(t.storage().gpu("normalization")?.ptr_at(t.layout().offset()))
}

/// The address of an optional tensor, null when absent (the kernels test for it).
pub(crate) fn opt_ptr(t: Option<&Tensor>) -> Result<DevicePtr> {
    t.map_or(Ok(DevicePtr(0)), dev_ptr)
}

fn wrap(s: GpuStorage, dims: &[usize]) -> (Tensor, DevicePtr) {
    let p = s.ptr();
    (Tensor::from_storage(Storage::Gpu(s), dims.to_vec()), p)
}

/// A fresh (uninitialised) contiguous tensor on `like`'s device, and its address.
pub(crate) fn new_tensor(like: &Tensor, dtype: DType, dims: &[usize]) -> Result<(Tensor, DevicePtr)> {
    Ok(wrap(GpuStorage::alloc(&runtime(like)?, dtype, dims.iter().product())?, dims))
}

/// A zero-filled contiguous tensor on `like`'s device, and its address.
pub(crate) fn zeros_tensor(like: &Tensor, dtype: DType, dims: &[usize]) -> Result<(Tensor, DevicePtr)> {
    Ok(wrap(GpuStorage::zeros(&runtime(like)?, dtype, dims.iter().product())?, dims))
}

/// `<base>_<dtype>`, the name of a kernel instance.
pub(crate) fn kernel(base: &str, dtype: DType) -> String {
    format!("{base}_{}", dtype_suffix(dtype))
}

/// Threads per block for a block that strides over `len` elements: a power of two in [32, 256].
pub(crate) fn block_for(len: usize) -> u32 {
    len.next_power_of_two().clamp(32, 256) as u32
}

/// One block per row (group, channel) on `like`'s runtime.
pub(crate) fn launch_rows(
    like: &Tensor,
    name: &str,
    rows: usize,
    threads: u32,
    shared: usize,
    args: &[KernelArg],
) -> Result<()> {
    if rows == 0 {
        return Ok(());
    }
    let grid = u32::try_from(rows).ok().filter(|&r| r <= i32::MAX as u32);
    let grid = grid.ok_or_else(|| Error::invalid("normalization", format!("{rows} blocks exceed the grid limit")))?;
    let cfg = LaunchConfig { grid: [grid, 1, 1], block: [threads, 1, 1], shared_bytes: shared as u32 };
    runtime(like)?.launch(name, &cfg, args)
}

/// Fails when a per-block index range does not fit the kernels' 32-bit divisions.
pub(crate) fn check_u32(op: &'static str, what: &str, v: usize) -> Result<()> {
    if v > u32::MAX as usize {
        return Err(Error::invalid(op, format!("{what} = {v} exceeds the GPU kernel's 32-bit index")));
    }
    Ok(())
}

/// Fails when a block needs more dynamic shared memory than every target grants.
fn check_shared(bytes: usize, d: Dims) -> Result<()> {
    if bytes > MAX_SHARED {
        return Err(Error::invalid(
            "group_norm",
            format!(
                "{} channels per group need {bytes} B of shared memory on the GPU (at most {MAX_SHARED})",
                d.c / d.groups
            ),
        ));
    }
    Ok(())
}

/// The dtype of the kernels' arithmetic, of the saved μ and r, and of the per-channel scale,
/// shift and coefficients in shared memory: f64 for f64, f32 otherwise.
pub(crate) fn stats_dtype(dt: DType) -> DType {
    if dt == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Forward of a contiguous float input on the device (γ and β, when present, contiguous and of
/// x's dtype), recorded for autograd.
pub(super) fn forward(
    x: &Tensor,
    d: Dims,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    eps: f64,
    act: Activation,
) -> Result<Tensor> {
    let (dt, cg) = (x.dtype(), d.c / d.groups);
    let m = cg * d.s;
    check_u32("group_norm", "channels per group × spatial size", m)?;
    let st = stats_dtype(dt);
    let shared = 2 * cg * st.size_in_bytes();
    check_shared(shared, d)?;
    let stats = [d.n, d.groups];
    let (y, y_ptr) = new_tensor(x, dt, x.dims())?;
    // No elements (m = 0): the CPU's statistics are zeros; otherwise every group writes its own.
    let alloc = if m == 0 { zeros_tensor } else { new_tensor };
    let ((mean, mean_ptr), (rstd, rstd_ptr)) = (alloc(x, st, &stats)?, alloc(x, st, &stats)?);
    if m > 0 {
        let args = [
            (m as i64).into(),
            (d.s as u32).into(),
            (cg as i32).into(),
            (d.groups as i32).into(),
            eps.into(),
            ((act == Activation::Relu) as i32).into(),
            dev_ptr(x)?.into(),
            opt_ptr(gamma)?.into(),
            opt_ptr(beta)?.into(),
            y_ptr.into(),
            mean_ptr.into(),
            rstd_ptr.into(),
        ];
        launch_rows(x, &kernel("gn_forward", dt), d.n * d.groups, block_for(m), shared, &args)?;
    }
    let op = GroupNormBackward { dims: d, act, has_gamma: gamma.is_some(), has_beta: beta.is_some(), mean, rstd };
    let mut inputs = vec![x];
    inputs.extend(gamma);
    inputs.extend(beta);
    Ok(y.record(&inputs, op))
}

/// dx (when `x` requires it), dgamma and dbeta (when present), in the order of the op's inputs.
pub(super) fn backward(
    op: &GroupNormBackward,
    inputs: &[Tensor],
    y: &Tensor,
    g: &Tensor,
) -> Result<Vec<Option<Tensor>>> {
    let (d, x, dt) = (op.dims, &inputs[0], inputs[0].dtype());
    let (g, y) = (g.contiguous()?, y.contiguous()?);
    let (cg, relu) = (d.c / d.groups, op.act == Activation::Relu);
    let m = cg * d.s;
    let gamma = op.has_gamma.then(|| &inputs[1]);
    let write_dx = x.requires_grad();
    let (dx, dx_ptr) =
        if write_dx { new_tensor(x, dt, x.dims()).map(|(t, p)| (Some(t), p))? } else { (None, DevicePtr(0)) };
    // Partials per (n, c); zero when there are no elements (the sums over nothing).
    let alloc = if m == 0 { zeros_tensor } else { new_tensor };
    let ((_part_g, pg), (_part_gx, pgx)) = (alloc(x, DType::F64, &[d.n, d.c])?, alloc(x, DType::F64, &[d.n, d.c])?);
    if m > 0 {
        let shared = cg * (16 + stats_dtype(dt).size_in_bytes());
        check_shared(shared, d)?;
        let args = [
            (m as i64).into(),
            (d.s as u32).into(),
            (cg as i32).into(),
            (d.groups as i32).into(),
            (relu as i32).into(),
            (write_dx as i32).into(),
            dev_ptr(x)?.into(),
            dev_ptr(&g)?.into(),
            (if relu { dev_ptr(&y)? } else { DevicePtr(0) }).into(),
            opt_ptr(gamma)?.into(),
            dev_ptr(&op.mean)?.into(),
            dev_ptr(&op.rstd)?.into(),
            dx_ptr.into(),
            pg.into(),
            pgx.into(),
        ];
        launch_rows(x, &kernel("gn_backward", dt), d.n * d.groups, block_for(m), shared, &args)?;
    }
    let mut grads = vec![dx];
    if op.has_gamma || op.has_beta {
        let (dgamma, dgp) = new_tensor(x, dt, &[d.c])?;
        let (dbeta, dbp) = new_tensor(x, dt, &[d.c])?;
        let args = [(d.n as i64).into(), (d.c as i64).into(), pg.into(), pgx.into(), dgp.into(), dbp.into()];
        bitgrad_engine::gpu::prims::launch_n(&runtime(x)?, &kernel("gn_param_grads", dt), d.c, &args)?;
        if op.has_gamma {
            grads.push(Some(dgamma));
        }
        if op.has_beta {
            grads.push(Some(dbeta));
        }
    }
    Ok(grads)
}
