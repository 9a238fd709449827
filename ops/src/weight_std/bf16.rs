//! Weight standardization of the bf16 training path on a GPU device (`kernels/cuda/ws_bf16.cu`
//! for the forward, `weight_std.cu`'s `ws_backward_f32` for the backward; launches from
//! `bitgrad_kernels::gn_nhwc::ws_launch`): once per step, the f32 master weight in the tc_conv
//! layout KRSC `[K, R, S, C]` becomes the bf16 ŵ (KRSC) the tensor-core convolutions read, with
//! f32 μ, r per output channel; the backward turns the f32 dŵ that `tc_conv2d_wgrad` writes into
//! the f32 gradient of the master weight, with the f32 op's formula (ŵ recomputed in f32 from w,
//! μ and r; the bf16 rounding of ŵ is passed straight through). Plain functions, no autograd node.
//! Standardization is per output channel, over R·S·C: the same values as the f32 op on the
//! weight in any layout with K first.

use bitgrad_engine::gpu::{KernelArg, LaunchConfig};
use bitgrad_engine::{DType, Error, Result, Tensor};
use bitgrad_kernels::gn_nhwc::ws_launch;

use crate::group_norm::gpu::{dev_ptr, new_tensor, runtime};

const OP: &str = "weight_std_bf16";

/// `t` contiguous, f32, rank 4, on a GPU device (and on `like`'s device).
fn operand(t: &Tensor, what: &str, rank: usize, like: Option<&Tensor>) -> Result<Tensor> {
    if !t.device().is_gpu() {
        return Err(Error::invalid(OP, format!("{what} is on {}; the kernels run on a GPU device", t.device())));
    }
    if t.dtype() != DType::F32 {
        return Err(Error::invalid(OP, format!("{what} is {}, the kernels take f32", t.dtype())));
    }
    if t.rank() != rank {
        return Err(Error::invalid(OP, format!("{what} has shape {}, expected rank {rank}", t.shape())));
    }
    if let Some(l) = like.filter(|l| l.device() != t.device()) {
        return Err(Error::invalid(OP, format!("{what} is on {}, w on {}", t.device(), l.device())));
    }
    t.contiguous()
}

fn launch(w: &Tensor, backward: bool, args: &[KernelArg]) -> Result<()> {
    let (k, per_row) = (w.dims()[0], w.numel() / w.dims()[0].max(1));
    let l = ws_launch(k, per_row, backward).map_err(|e| Error::invalid(OP, e))?;
    let cfg = LaunchConfig { grid: l.grid, block: l.block, shared_bytes: l.smem_bytes };
    runtime(w)?.launch(l.kernel, &cfg, args)
}

/// The forward's results.
#[derive(Debug, Clone)]
pub struct WsBf16 {
    /// bf16 `[K, R, S, C]`: (w − μ)·r, rounded once.
    pub w_hat: Tensor,
    /// f32 `[K]`, for the backward.
    pub mean: Tensor,
    pub rstd: Tensor,
}

/// The bf16 standardized weight of the f32 master weight `w` `[K, R, S, C]`.
pub fn weight_std_bf16(w: &Tensor, eps: f64) -> Result<WsBf16> {
    let w = operand(w, "w", 4, None)?;
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::invalid(OP, format!("eps must be finite and >= 0, got {eps}")));
    }
    let k = w.dims()[0];
    let (w_hat, op) = new_tensor(&w, DType::BF16, w.dims())?;
    let ((mean, mp), (rstd, rp)) = (new_tensor(&w, DType::F32, &[k])?, new_tensor(&w, DType::F32, &[k])?);
    let n = (w.numel() / k.max(1)) as i64;
    launch(&w, false, &[n.into(), eps.into(), dev_ptr(&w)?.into(), op.into(), mp.into(), rp.into()])?;
    Ok(WsBf16 { w_hat, mean, rstd })
}

/// The f32 gradient of the master weight `w` from the f32 `dw_hat` (both `[K, R, S, C]`) and the
/// forward's μ, r.
pub fn weight_std_bf16_backward(dw_hat: &Tensor, w: &Tensor, mean: &Tensor, rstd: &Tensor) -> Result<Tensor> {
    let w = operand(w, "w", 4, None)?;
    let g = operand(dw_hat, "dw_hat", 4, Some(&w))?;
    if g.dims() != w.dims() {
        return Err(Error::invalid(OP, format!("dw_hat has shape {}, w {}", g.shape(), w.shape())));
    }
    let k = w.dims()[0];
    let (mean, rstd) = (operand(mean, "mean", 1, Some(&w))?, operand(rstd, "rstd", 1, Some(&w))?);
    if mean.dims() != [k] || rstd.dims() != [k] {
        return Err(Error::invalid(
            OP,
            format!("mean/rstd have shapes {}/{}, expected [{k}]", mean.shape(), rstd.shape()),
        ));
    }
    let (dw, dp) = new_tensor(&w, DType::F32, w.dims())?;
    let n = (w.numel() / k.max(1)) as i64;
    let args =
        [n.into(), dev_ptr(&g)?.into(), dev_ptr(&w)?.into(), dev_ptr(&mean)?.into(), dev_ptr(&rstd)?.into(), dp.into()];
    launch(&w, true, &args)?;
    Ok(dw)
}
