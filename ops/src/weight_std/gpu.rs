//! Weight standardization on a GPU device (`kernels/cuda/weight_std.cu`), shared by Cuda and Emu:
//! one block per output channel for the forward and for the backward. The saved r per row stays
//! on the device.

use bitgrad_engine::{Result, Tensor};

use super::WeightStdBackward;
use crate::group_norm::gpu::{block_for, dev_ptr, kernel, launch_rows, new_tensor, zeros_tensor};

/// ŵ of a contiguous f32/f64 weight `[O, …]` on the device, recorded for autograd.
pub(super) fn forward(w: &Tensor, eps: f64) -> Result<Tensor> {
    let rows = w.dims()[0];
    let n = w.numel().checked_div(rows).unwrap_or(0);
    let (out, out_ptr) = new_tensor(w, w.dtype(), w.dims())?;
    let (rstd, rstd_ptr) =
        if n == 0 { zeros_tensor(w, w.dtype(), &[rows])? } else { new_tensor(w, w.dtype(), &[rows])? };
    if n > 0 {
        let args = [(n as i64).into(), eps.into(), dev_ptr(w)?.into(), out_ptr.into(), rstd_ptr.into()];
        launch_rows(w, &kernel("ws_forward", w.dtype()), rows, block_for(n), 0, &args)?;
    }
    Ok(out.record(&[w], WeightStdBackward { rstd }))
}

/// ∂w from the contiguous upstream gradient `g` and forward output `what`, on the device.
pub(super) fn backward(g: &Tensor, what: &Tensor, rstd: &Tensor) -> Result<Tensor> {
    let rows = rstd.numel();
    let n = g.numel().checked_div(rows).unwrap_or(0);
    let (dw, dw_ptr) = new_tensor(g, g.dtype(), g.dims())?;
    if n > 0 {
        let args = [(n as i64).into(), dev_ptr(g)?.into(), dev_ptr(what)?.into(), dev_ptr(rstd)?.into(), dw_ptr.into()];
        launch_rows(g, &kernel("ws_backward", g.dtype()), rows, block_for(n), 0, &args)?;
    }
    Ok(dw)
}
