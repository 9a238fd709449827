//! Group norm of the bf16 mixed-precision path: bf16 activations x, f32 γ and β (the master
//! parameters), f32 statistics, a bf16 output — what a model run with `--precision bf16` calls.
//!
//! On a GPU device, a rank-4 input whose shape the NHWC kernels take (`gn_nhwc::GnShape`) runs
//! them through one autograd node: x is made channels-last once (a recorded conversion, nothing
//! when it already is), viewed as `[N, H, W, C]` without a copy, normalized (ReLU fused), and
//! the output is the channels-last `[N, C, H, W]` view of the kernel's result. The backward
//! gives a bf16 dx and f32 dγ, dβ. On the CPU, a channels-last input (what the AMX convolutions
//! give, and any 1×1 map, which is both layouts) takes the same node through the kernels' CPU
//! twin. Anything else — an NCHW input on
//! the CPU, another rank, a shape the kernels refuse — computes in f32: x converted up, the
//! f32 op, the result rounded to bf16 (all recorded casts), so the two routes differ by the
//! bf16 rounding of y and dx only.

use bitgrad_engine::{BackwardOp, DType, Error, MemoryFormat, Result, Tensor};
use bitgrad_kernels::gn_nhwc::GnShape;

use super::{group_norm, group_norm_nhwc_bf16, group_norm_nhwc_bf16_backward, Activation};

/// NCHW (logical) → the `[N, H, W, C]` view of a channels-last tensor, and back.
const TO_NHWC: [usize; 4] = [0, 2, 3, 1];
const TO_NCHW: [usize; 4] = [0, 3, 1, 2];

/// Group norm of bf16 `x` with f32 `gamma`/`beta` (see the module docs).
pub(super) fn group_norm_mixed(
    x: &Tensor,
    groups: usize,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    eps: f64,
    act: Activation,
) -> Result<Tensor> {
    for (name, p) in [("gamma", gamma), ("beta", beta)] {
        if let Some(p) = p.filter(|p| p.dtype() != DType::F32) {
            return Err(Error::invalid(
                "group_norm",
                format!("a bf16 input takes f32 {name} (the master parameters), got {}", p.dtype()),
            ));
        }
    }
    if !nhwc_kernels_take(x, groups) {
        let y = group_norm(&x.to_dtype(DType::F32)?, groups, gamma, beta, eps, act)?;
        return y.to_dtype(DType::BF16);
    }
    super::check(x, groups, gamma, beta, eps, DType::F32)?;
    let xcl = x.to_memory_format(MemoryFormat::ChannelsLast)?;
    let x_nhwc = xcl.detach().permute(&TO_NHWC)?;
    let relu = act == Activation::Relu;
    let (g, b) = (gamma.map(Tensor::detach), beta.map(Tensor::detach));
    let f = group_norm_nhwc_bf16(&x_nhwc, groups, g.as_ref(), b.as_ref(), eps, relu)?;
    let y = f.y.permute(&TO_NCHW)?;
    let node = GroupNormNhwcBackward {
        groups,
        relu,
        has_gamma: gamma.is_some(),
        has_beta: beta.is_some(),
        x: x_nhwc,
        y: relu.then(|| f.y.clone()),
        gamma: g,
        mean: f.mean,
        rstd: f.rstd,
    };
    let mut inputs = vec![&xcl];
    inputs.extend(gamma);
    inputs.extend(beta);
    Ok(y.record(&inputs, node))
}

/// Whether the NHWC bf16 kernels run `x` in `groups` groups: on a GPU device when the launch
/// plans take the shape; on the CPU when x is already channels-last (the output of the AMX
/// convolutions), so that the activations stay bf16 NHWC between them.
fn nhwc_kernels_take(x: &Tensor, groups: usize) -> bool {
    if x.rank() != 4 {
        return false;
    }
    if x.device().is_gpu() {
        return GnShape::new(x.dims()[0], x.dims()[2] * x.dims()[3], x.dims()[1], groups).is_ok();
    }
    x.is_channels_last() && groups > 0 && x.dims()[1].is_multiple_of(groups) && x.numel() > 0
}

/// Saved: x and (with the ReLU) y as `[N, H, W, C]` bf16, γ, and μ, r `[N, G]` f32.
struct GroupNormNhwcBackward {
    groups: usize,
    relu: bool,
    has_gamma: bool,
    has_beta: bool,
    x: Tensor,
    y: Option<Tensor>,
    gamma: Option<Tensor>,
    mean: Tensor,
    rstd: Tensor,
}

impl BackwardOp for GroupNormNhwcBackward {
    fn name(&self) -> &'static str {
        "group_norm (nhwc bf16)"
    }

    fn backward(&self, inputs: &[Tensor], _y: &Tensor, gy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let gy = gy.to_dtype(DType::BF16)?.to_memory_format(MemoryFormat::ChannelsLast)?.permute(&TO_NHWC)?;
        let b = group_norm_nhwc_bf16_backward(
            &gy,
            &self.x,
            self.y.as_ref(),
            self.gamma.as_ref(),
            (&self.mean, &self.rstd),
            self.groups,
            self.relu,
        )?;
        let mut grads = vec![inputs[0].requires_grad().then(|| b.dx.permute(&TO_NCHW)).transpose()?];
        if self.has_gamma {
            grads.push(Some(b.dgamma));
        }
        if self.has_beta {
            grads.push(Some(b.dbeta));
        }
        Ok(grads)
    }
}
