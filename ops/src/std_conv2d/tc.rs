//! The tensor-core route of [`super::std_conv2d`]: bf16 channels-last activations, the f32 master
//! weight standardized into a bf16 KRSC copy once per forward, implicit-GEMM fprop / dgrad /
//! split-K wgrad (`crate::conv2d::tc_conv2d_*`), and WS's backward in f32 — one autograd node.

use bitgrad_engine::{BackwardOp, DType, MemoryFormat, Result, Tensor};
use bitgrad_kernels::gn_nhwc::ws_launch;

use crate::conv2d::{tc_conv2d_dgrad, tc_conv2d_fprop, tc_conv2d_wgrad, Conv2dParams};
use crate::weight_std::{weight_std_bf16, weight_std_bf16_backward};

/// Logical NCHW (or OIHW) → the NHWC (KRSC) view of a channels-last tensor, and back.
const TO_NHWC: [usize; 4] = [0, 2, 3, 1];
const TO_NCHW: [usize; 4] = [0, 3, 1, 2];
/// The kernels take channel counts that are multiples of this; fewer input channels (the
/// RGB stem) are zero-padded up to it.
const CHANNEL_MULTIPLE: usize = 8;

/// The sizes of one convolution the tensor-core kernels take.
pub(super) struct Plan {
    params: Conv2dParams,
    /// Input channels, and the count the kernels see (the same, or 8 for a padded stem).
    c: usize,
    c_pad: usize,
    hw: [usize; 2],
    rs: [usize; 2],
}

/// The plan for `x` (bf16) and `w` (f32) under `p`, or `None` when the kernels do not take them.
pub(super) fn plan(x: &Tensor, w: &Tensor, p: &Conv2dParams) -> Option<Plan> {
    let (&[n, c, h, wd], &[k, wc, r, s]) = (x.dims(), w.dims()) else { return None };
    if !x.device().is_gpu() || wc != c || c == 0 {
        return None;
    }
    let c_pad = if c < CHANNEL_MULTIPLE { CHANNEL_MULTIPLE } else { c };
    let takes = crate::conv2d::tc::takes([n, h, wd, c_pad], [k, r, s], p)
        && ws_launch(k, r * s * c, false).is_ok()
        && ws_launch(k, r * s * c, true).is_ok();
    takes.then_some(Plan { params: *p, c, c_pad, hw: [h, wd], rs: [r, s] })
}

/// `t` (`[…, C]`, channels last) zero-padded to `c_pad` channels, contiguous.
fn pad_channels(t: &Tensor, c_pad: usize) -> Result<Tensor> {
    let c = t.dims()[3];
    if c == c_pad {
        return t.contiguous();
    }
    let mut dims = t.dims().to_vec();
    dims[3] = c_pad - c;
    let zeros = Tensor::zeros(dims, t.dtype(), t.device())?;
    Tensor::cat(&[&t.contiguous()?, &zeros], 3)
}

/// The first `c` channels of a `[…, C']` tensor, contiguous.
fn unpad_channels(t: Tensor, c: usize) -> Result<Tensor> {
    if t.dims()[3] == c {
        Ok(t)
    } else {
        t.narrow(3, 0, c)?.contiguous()
    }
}

impl Plan {
    /// The node's forward; with a residual (bf16, the output's shape, checked by the caller) the
    /// fprop adds it in its epilogue and the node records it as a third input.
    pub(super) fn forward(
        self,
        x: &Tensor,
        w: &Tensor,
        ws_eps: Option<f64>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let xcl = x.to_memory_format(MemoryFormat::ChannelsLast)?;
        let x_nhwc = pad_channels(&xcl.detach().permute(&TO_NHWC)?, self.c_pad)?;
        let w_krsc = w.detach().permute(&TO_NHWC)?.contiguous()?;
        let (w_hat, stats) = match ws_eps {
            Some(eps) => {
                let ws = weight_std_bf16(&w_krsc, eps)?;
                (ws.w_hat, Some((ws.mean, ws.rstd)))
            }
            None => (w_krsc.to_dtype(DType::BF16)?.contiguous()?, None),
        };
        let w_hat = pad_channels(&w_hat, self.c_pad)?;
        let r_nhwc = residual
            .map(|r| r.to_memory_format(MemoryFormat::ChannelsLast)?.detach().permute(&TO_NHWC)?.contiguous())
            .transpose()?;
        let y = tc_conv2d_fprop(&x_nhwc, &w_hat, r_nhwc.as_ref(), &self.params, DType::BF16)?.permute(&TO_NCHW)?;
        let mut inputs = vec![&xcl, w];
        inputs.extend(residual);
        Ok(y.record(&inputs, StdConv2dTcBackward { plan: self, x: x_nhwc, w_hat, stats }))
    }
}

/// Saved: the NHWC input and the bf16 KRSC weight the forward read (both channel-padded), and
/// WS's μ, r per output channel.
struct StdConv2dTcBackward {
    plan: Plan,
    x: Tensor,
    w_hat: Tensor,
    stats: Option<(Tensor, Tensor)>,
}

impl BackwardOp for StdConv2dTcBackward {
    fn name(&self) -> &'static str {
        "std_conv2d (tensor cores, bf16)"
    }

    fn backward(&self, inputs: &[Tensor], _y: &Tensor, gy_in: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let Plan { params, c, hw, rs, .. } = &self.plan;
        let gy = gy_in.to_dtype(DType::BF16)?.to_memory_format(MemoryFormat::ChannelsLast)?.permute(&TO_NHWC)?;
        let dx = if inputs[0].requires_grad() {
            let dx = tc_conv2d_dgrad(&gy, &self.w_hat, *hw, params, DType::BF16)?;
            Some(unpad_channels(dx, *c)?.permute(&TO_NCHW)?)
        } else {
            None
        };
        let dw = if inputs[1].requires_grad() {
            let dw_hat = unpad_channels(tc_conv2d_wgrad(&gy, &self.x, *rs, params)?, *c)?;
            let dw = match &self.stats {
                Some((mean, rstd)) => {
                    let w_krsc = inputs[1].detach().permute(&TO_NHWC)?.contiguous()?;
                    weight_std_bf16_backward(&dw_hat, &w_krsc, mean, rstd)?
                }
                None => dw_hat,
            };
            // Back to the master weight's OIHW, row-major (what the optimizer and the in-place
            // gradient sums expect).
            Some(dw.permute(&TO_NCHW)?.contiguous()?)
        } else {
            None
        };
        let mut out = vec![dx, dw];
        // A fused residual's gradient is the output gradient itself.
        if let Some(r) = inputs.get(2) {
            out.push(r.requires_grad().then(|| gy_in.clone()));
        }
        Ok(out)
    }
}
