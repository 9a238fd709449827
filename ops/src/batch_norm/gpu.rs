//! Batch norm on a GPU device (`kernels/cuda/batch_norm.cu`), shared by Cuda and Emu: one block
//! per channel for the forward (statistics or running statistics, the running-statistics update,
//! then y) and for the backward (the two sums, dgamma/dbeta, then dx). The saved μ and r per
//! channel stay on the device; the running statistics are updated in place on the device.

use bitgrad_engine::gpu::DevicePtr;
use bitgrad_engine::{Result, Tensor};

use super::cpu::Dims;
use super::{BatchNormBackward, Mode, RunningStats};
use crate::group_norm::gpu::{block_for, check_u32, dev_ptr, kernel, launch_rows, new_tensor, opt_ptr};

/// Forward of a contiguous f32/f64 input on the device, recorded for autograd.
pub(super) fn forward(
    x: &Tensor,
    d: Dims,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    running: Option<&RunningStats>,
    mode: Mode,
) -> Result<Tensor> {
    let (dt, count) = (x.dtype(), d.n * d.s);
    check_u32("batch_norm", "batch × spatial size", count)?;
    let (y, y_ptr) = new_tensor(x, dt, x.dims())?;
    let (mean, mean_ptr) = new_tensor(x, dt, &[d.c])?;
    let (rstd, rstd_ptr) = new_tensor(x, dt, &[d.c])?;
    // The kernel writes the running statistics in place (thread 0 of each channel's block).
    let (rm, rv) = match running {
        Some(r) => (dev_ptr(&r.mean)?, dev_ptr(&r.var)?),
        None => (DevicePtr(0), DevicePtr(0)),
    };
    let args = [
        (count as u32).into(),
        (d.s as u32).into(),
        (d.c as i32).into(),
        (mode.training as i32).into(),
        mode.momentum.into(),
        mode.eps.into(),
        dev_ptr(x)?.into(),
        opt_ptr(gamma)?.into(),
        opt_ptr(beta)?.into(),
        rm.into(),
        rv.into(),
        y_ptr.into(),
        mean_ptr.into(),
        rstd_ptr.into(),
    ];
    launch_rows(x, &kernel("bn_forward", dt), d.c, block_for(count), 0, &args)?;
    let op = BatchNormBackward {
        dims: d,
        training: mode.training,
        has_gamma: gamma.is_some(),
        has_beta: beta.is_some(),
        mean,
        rstd,
    };
    let mut inputs = vec![x];
    inputs.extend(gamma);
    inputs.extend(beta);
    Ok(y.record(&inputs, op))
}

/// dx (when `x` requires it), dgamma and dbeta (when present), in the order of the op's inputs.
pub(super) fn backward(op: &BatchNormBackward, inputs: &[Tensor], g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let (d, x, dt) = (op.dims, &inputs[0], inputs[0].dtype());
    let g = g.contiguous()?;
    let count = d.n * d.s;
    let write_dx = x.requires_grad();
    let (dx, dx_ptr) =
        if write_dx { new_tensor(x, dt, x.dims()).map(|(t, p)| (Some(t), p))? } else { (None, DevicePtr(0)) };
    let (dgamma, dgp) = new_tensor(x, dt, &[d.c])?;
    let (dbeta, dbp) = new_tensor(x, dt, &[d.c])?;
    let args = [
        (count as u32).into(),
        (d.s as u32).into(),
        (d.c as i32).into(),
        (op.training as i32).into(),
        (write_dx as i32).into(),
        dev_ptr(x)?.into(),
        dev_ptr(&g)?.into(),
        opt_ptr(op.has_gamma.then(|| &inputs[1]))?.into(),
        dev_ptr(&op.mean)?.into(),
        dev_ptr(&op.rstd)?.into(),
        dx_ptr.into(),
        dgp.into(),
        dbp.into(),
    ];
    launch_rows(x, &kernel("bn_backward", dt), d.c, block_for(count), 0, &args)?;
    let mut grads = vec![dx];
    if op.has_gamma {
        grads.push(Some(dgamma));
    }
    if op.has_beta {
        grads.push(Some(dbeta));
    }
    Ok(grads)
}
