//! `conv2d(act(group_norm(x)), w)` as one op: the group norm (and its ReLU) applied as the
//! convolution copies its input — the `gn-conv` fusion (`crate::fusion`).
//!
//! In a pre-activation bottleneck every 3×3 convolution reads `relu(GN(h))`. Unfused, the group
//! norm writes that tensor, the direct convolution reads it back into its zero-padded copy, and
//! it stays in memory until the backward (the convolution's weight gradient and the ReLU mask
//! need it). Fused:
//!
//! * forward: the group norm's statistics only (μ, r per (n, g): one read of `x`), then the
//!   convolution's padded copy maps each value as the group norm would (`x·scale + shift`,
//!   ReLU'd, per (n, c) plane: `conv2d::direct::PlaneMap`) — the normalized tensor is never
//!   written;
//! * backward: the normalized tensor made again from `x` and the saved per-plane scale and
//!   shift (a pass over `x`), the convolution's backward on it, then the group norm's backward
//!   — the same kernels as the two unfused ops, on the same values, so every output and gradient
//!   is bit for bit the unfused one's (tests);
//! * memory: between forward and backward the node keeps `x` (which the group norm kept anyway)
//!   and two numbers per (n, c), not the normalized activation.
//!
//! Fused for f32 on the CPU where the direct convolution takes the shape (one group, a kernel
//! larger than 1×1, output rows that fill its vectors: BiT's 3×3 convolutions); anything else
//! — other dtypes and devices, 1×1 convolutions on `gemm`, channels-last tensors — is the
//! composition `conv2d(group_norm(x, …), w)`, two recorded ops, so calling it is always correct.

#[cfg(test)]
mod tests;

use bitgrad_engine::{BackwardOp, DType, Device, Error, Result, Tensor};

use crate::conv2d::params::Geom;
use crate::conv2d::{self, conv2d, direct, Conv2dParams};
use crate::group_norm::{self, group_norm, Activation};

/// The group norm in front of the convolution: [`group_norm`]'s arguments.
#[derive(Clone, Copy)]
pub struct GroupNormArgs<'a> {
    pub groups: usize,
    pub gamma: Option<&'a Tensor>,
    pub beta: Option<&'a Tensor>,
    pub eps: f64,
    pub act: Activation,
}

/// `conv2d(group_norm(x, gn.groups, gn.gamma, gn.beta, gn.eps, gn.act), w, None, p)`, fused
/// where the kernels take it (see the module docs). Errors are those of the two ops.
pub fn group_norm_conv2d(x: &Tensor, gn: GroupNormArgs<'_>, w: &Tensor, p: &Conv2dParams) -> Result<Tensor> {
    let unfused = || conv2d(&group_norm(x, gn.groups, gn.gamma, gn.beta, gn.eps, gn.act)?, w, None, p);
    let cpu_f32 = |t: &Tensor| t.dtype() == DType::F32 && t.device() == Device::Cpu;
    let fusable = cpu_f32(x)
        && cpu_f32(w)
        && [gn.gamma, gn.beta].into_iter().flatten().all(cpu_f32)
        && x.rank() == 4
        && w.rank() == 4
        && !crate::format::is_channels_last_input(x)
        && !crate::format::is_channels_last_input(w);
    if !fusable {
        return unfused();
    }
    let dims = group_norm::check(x, gn.groups, gn.gamma, gn.beta, gn.eps, DType::F32)?;
    let geom = conv2d::check(x, w, None, p)?;
    if !direct::forward_goes_direct(&geom) {
        return unfused();
    }
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    let gamma = gn.gamma.map(|t| t.contiguous()).transpose()?;
    let beta = gn.beta.map(|t| t.contiguous()).transpose()?;
    let (gv, bv) =
        (gamma.as_ref().map(|t| t.to_vec::<f32>()).transpose()?, beta.as_ref().map(|t| t.to_vec()).transpose()?);
    let relu = gn.act == Activation::Relu;
    let affine = x.with_cpu_slice(|xs| group_norm::cpu::affine(xs, dims, gv.as_deref(), bv.as_deref(), gn.eps))?;
    let map = direct::PlaneMap { scale: &affine.scale, shift: &affine.shift, relu };
    let out = x.with_cpu_slice(|xs| w.with_cpu_slice(|ws| direct::forward_mapped(xs, ws, map, &geom)))??;
    let Some(out) = out else {
        // (forward_goes_direct said yes: only a changed ISA setting could get here.)
        return unfused();
    };
    let op = GroupNormConv2dBackward {
        dims,
        geom,
        relu,
        has_gamma: gamma.is_some(),
        has_beta: beta.is_some(),
        mean: affine.mean,
        rstd: affine.rstd,
        scale: affine.scale,
        shift: affine.shift,
    };
    let mut inputs = vec![&x];
    inputs.extend(gamma.as_ref());
    inputs.extend(beta.as_ref());
    inputs.push(&w);
    Ok(Tensor::from_vec(out, [geom.batch, geom.o, geom.oh, geom.ow], Device::Cpu)?.record(&inputs, op))
}

/// Saved by the forward: the sizes, which optional inputs exist, the group norm's μ and r per
/// (n, g) (as its own node saves them) and each (n, c) plane's scale and shift (with which the
/// normalized input is made again, bit for bit). Inputs: `x`, γ?, β?, `w`.
struct GroupNormConv2dBackward {
    dims: group_norm::cpu::Dims,
    geom: Geom,
    relu: bool,
    has_gamma: bool,
    has_beta: bool,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl BackwardOp for GroupNormConv2dBackward {
    fn name(&self) -> &'static str {
        "group_norm_conv2d"
    }

    fn backward(&self, inputs: &[Tensor], _out: &Tensor, gy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let w = &inputs[inputs.len() - 1];
        let gamma = self.has_gamma.then(|| &inputs[1]);
        let gn_needs = inputs[..inputs.len() - 1].iter().any(Tensor::requires_grad);
        if gy.dtype() != DType::F32 || gy.device() != Device::Cpu {
            return Err(Error::invalid("group_norm_conv2d backward", "the output gradient must be f32 on the CPU"));
        }
        let gy = gy.contiguous()?;
        // The normalized input, as the forward's copy held it.
        let y = x.with_cpu_slice(|xs| group_norm::cpu::apply(xs, self.dims.s, &self.scale, &self.shift, self.relu))?;
        let conv = w.with_cpu_slice(|ws| {
            gy.with_cpu_slice(|gs| {
                conv2d::cpu::backward(
                    &y,
                    ws,
                    gs,
                    &self.geom,
                    [gn_needs, w.requires_grad(), false],
                    conv2d::cpu::MAX_COL_BYTES,
                )
            })
        })??;
        let dw = conv.dw.map(|v| Tensor::from_vec(v, w.shape(), Device::Cpu)).transpose()?;
        let mut grads: Vec<Option<Tensor>> = vec![None; inputs.len()];
        if let Some(dy) = conv.dx {
            let gv = gamma.map(|g| g.to_vec::<f32>()).transpose()?;
            let b = x.with_cpu_slice(|xs| {
                group_norm::cpu::backward(
                    xs,
                    &dy,
                    self.relu.then_some(&y[..]),
                    self.dims,
                    gv.as_deref(),
                    &self.mean,
                    &self.rstd,
                )
            })?;
            let c = self.dims.c;
            grads[0] = x.requires_grad().then(|| Tensor::from_vec(b.dx, x.shape(), Device::Cpu)).transpose()?;
            if self.has_gamma {
                grads[1] = Some(Tensor::from_vec(b.dgamma, [c], Device::Cpu)?);
            }
            if self.has_beta {
                grads[1 + usize::from(self.has_gamma)] = Some(Tensor::from_vec(b.dbeta, [c], Device::Cpu)?);
            }
        }
        grads[inputs.len() - 1] = dw;
        Ok(grads)
    }
}
