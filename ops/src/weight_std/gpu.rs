//! Weight standardization on a GPU device (`kernels/cuda/weight_std.cu`), shared by Cuda and Emu:
//! one block per output channel for the forward and for the backward. The saved μ and r per row
//! stay on the device; the backward recomputes ŵ from the weight with them (as the forward did,
//! so exactly the forward's values before they were stored). f16/bf16 run natively with f32
//! arithmetic (μ, r saved in f32), as the CPU op computes them in f32.

use bitgrad_engine::{Result, Tensor};

use super::WeightStdBackward;
use crate::group_norm::gpu::{block_for, dev_ptr, kernel, launch_rows, new_tensor, stats_dtype, zeros_tensor};

/// ŵ of a contiguous float weight `[O, …]` on the device, recorded for autograd.
pub(super) fn forward(w: &Tensor, eps: f64) -> Result<Tensor> {
    let rows = w.dims()[0];
    let n = w.numel().checked_div(rows).unwrap_or(0);
    let (out, out_ptr) = new_tensor(w, w.dtype(), w.dims())?;
    let st = stats_dtype(w.dtype());
    // With empty rows no kernel runs; μ and r are the CPU's zeros.
    let alloc = if n == 0 { zeros_tensor } else { new_tensor };
    let ((mean, mean_ptr), (rstd, rstd_ptr)) = (alloc(w, st, &[rows])?, alloc(w, st, &[rows])?);
    if n > 0 {
        let args =
            [(n as i64).into(), eps.into(), dev_ptr(w)?.into(), out_ptr.into(), mean_ptr.into(), rstd_ptr.into()];
        launch_rows(w, &kernel("ws_forward", w.dtype()), rows, block_for(n), 0, &args)?;
    }
    Ok(out.record(&[w], WeightStdBackward { rstd, mean: Some(mean) }))
}

/// ∂w from the contiguous upstream gradient `g`, the contiguous weight `w` (the op's input) and
/// the saved per-row μ and r, on the device.
pub(super) fn backward(g: &Tensor, w: &Tensor, mean: &Tensor, rstd: &Tensor) -> Result<Tensor> {
    let rows = rstd.numel();
    let n = g.numel().checked_div(rows).unwrap_or(0);
    let (dw, dw_ptr) = new_tensor(g, g.dtype(), g.dims())?;
    if n > 0 {
        let args = [
            (n as i64).into(),
            dev_ptr(g)?.into(),
            dev_ptr(w)?.into(),
            dev_ptr(mean)?.into(),
            dev_ptr(rstd)?.into(),
            dw_ptr.into(),
        ];
        launch_rows(g, &kernel("ws_backward", g.dtype()), rows, block_for(n), 0, &args)?;
    }
    Ok(dw)
}
