//! Group normalization (Wu & He, 2018), with an optional fused ReLU (timm's `GroupNormAct`).
//!
//! For an input `x` of shape `[N, C, …]` (any number of spatial dims, including none) and `G`
//! groups of `C/G` consecutive channels, each (n, g) group of `M = C/G · S` elements (S = the
//! product of the spatial dims) is normalized with its own mean and **biased** variance, ε inside
//! the square root, then scaled and shifted per channel:
//!
//! ```text
//! μ = mean(x_ng)   σ² = mean((x_ng − μ)²)   r = 1/sqrt(σ² + ε)   x̂ = (x − μ)·r
//! y = act(γ_c·x̂ + β_c)          act = identity or ReLU (after the affine, as timm does)
//! ```
//!
//! BiT uses G = 32 and ε = 1e-5 ([`GN_EPS`], bit-spec §2.2). G = 1 is LayerNorm over
//! (C, spatial) with a per-channel affine; G = C is InstanceNorm.
//!
//! **Backward.** With g' = ∂L/∂y masked by `y > 0` when the ReLU is fused (the output is what
//! backward receives, so nothing extra is saved for the mask) and dx̂ = γ_c·g':
//!
//! ```text
//! ∂L/∂β_c = Σ_{n,s} g'          ∂L/∂γ_c = Σ_{n,s} g'·x̂
//! ∂L/∂x   = r·(dx̂ − mean_ng(dx̂) − x̂·mean_ng(dx̂·x̂))
//! ```
//!
//! The forward saves μ and r per (n, g); the backward is one fused kernel that makes two passes
//! over each group while it is in cache (the per-channel sums Σg' and Σg'·x, then dx; with the
//! ReLU, a first pass writes the masked g' into dx) and yields the three gradients at once. See
//! `cpu.rs` for how the passes are arranged, and `lanes.rs` for the vectorized sums they share
//! with weight_std and batch_norm.
//!
//! **Dtypes.** f32 and f64 run natively. On the CPU, f16/bf16 inputs are converted to f32 at this
//! boundary (γ and β too), normalized in f32 and converted back, so the autograd graph gets the
//! casts. On GPU devices they run natively with the same f32 arithmetic (f32 statistics saved),
//! each output rounded once to the half dtype. γ and β must have the dtype of `x` — except for
//! bf16 activations with f32 γ/β, the mixed-precision path of `mixed.rs` (NHWC tensor-core-era
//! kernels on a GPU, f32 arithmetic elsewhere; bf16 y and dx, f32 dγ and dβ).
//!
//! **Devices.** On Cuda and Emu the forward and backward run as `kernels/cuda/group_norm.cu`
//! (`gpu.rs`: one block per (n, g) group, the same formulas and roundings); μ and r stay on the device.

pub(crate) mod cpu;
pub(crate) mod gpu;
#[cfg(test)]
pub(crate) mod gpu_tests;
pub(crate) mod lanes;
mod mixed;
#[cfg(test)]
mod mixed_gpu_tests;
mod nhwc;
mod nhwc_cpu;
#[cfg(test)]
mod nhwc_gpu_tests;
#[cfg(test)]
mod tests;

pub use nhwc::{group_norm_nhwc_bf16, group_norm_nhwc_bf16_backward, GnNhwcBackward, GnNhwcForward};

use bitgrad_engine::{BackwardOp, DType, Device, Error, FloatElem, Result, Tensor};

/// GroupNorm's ε in BiT, PyTorch and timm.
pub const GN_EPS: f64 = 1e-5;
/// The number of groups of every GroupNorm in BiT.
pub const BIT_GROUPS: usize = 32;

/// The activation fused after the affine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    #[default]
    None,
    /// `max(0, ·)`; the backward passes the gradient where the output is > 0.
    Relu,
}

/// Group norm of `x` (`[N, C, …]`) over `groups` groups of channels, with optional per-channel
/// `gamma` (scale) and `beta` (shift), both of shape `[C]`, and an optional fused ReLU.
///
/// Errors: rank < 2, `groups == 0` or not dividing C, γ/β of the wrong shape, dtype or device, a
/// negative or non-finite `eps`, a non-float dtype.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    eps: f64,
    act: Activation,
) -> Result<Tensor> {
    // bf16 activations with f32 γ/β: the mixed-precision path (NHWC kernels on a GPU).
    if x.dtype() == DType::BF16 && [gamma, beta].into_iter().flatten().any(|p| p.dtype() == DType::F32) {
        return mixed::group_norm_mixed(x, groups, gamma, beta, eps, act);
    }
    // A channels-last input runs through the NCHW kernels, converted once here (crate::format).
    if crate::format::is_channels_last_input(x) {
        return crate::format::nchw_boundary(x, |x| group_norm(x, groups, gamma, beta, eps, act));
    }
    let dims = check(x, groups, gamma, beta, eps, x.dtype())?;
    if x.device().is_gpu() {
        // Every float dtype runs natively (the half ones with f32 arithmetic, as below).
        let x = x.contiguous()?;
        let gamma = gamma.map(|t| t.contiguous()).transpose()?;
        let beta = beta.map(|t| t.contiguous()).transpose()?;
        return gpu::forward(&x, dims, gamma.as_ref(), beta.as_ref(), eps, act);
    }
    match x.dtype() {
        DType::F32 => forward::<f32>(x, dims, gamma, beta, eps, act),
        DType::F64 => forward::<f64>(x, dims, gamma, beta, eps, act),
        DType::F16 | DType::BF16 => {
            let up = |t: &Tensor| t.to_dtype(DType::F32);
            let (g, b) = (gamma.map(up).transpose()?, beta.map(up).transpose()?);
            group_norm(&up(x)?, groups, g.as_ref(), b.as_ref(), eps, act)?.to_dtype(x.dtype())
        }
        dtype => Err(Error::UnsupportedDType { op: "group_norm", dtype }),
    }
}

/// Validates the arguments and returns the `[N, C, S]` view of the sizes; γ and β must be
/// `param_dtype` (x's own, or f32 for the mixed-precision path).
pub(crate) fn check(
    x: &Tensor,
    groups: usize,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    eps: f64,
    param_dtype: DType,
) -> Result<cpu::Dims> {
    if !x.dtype().is_float() {
        return Err(Error::UnsupportedDType { op: "group_norm", dtype: x.dtype() });
    }
    if x.rank() < 2 {
        return Err(Error::invalid("group_norm", format!("expected an input [N, C, ...], got shape {}", x.shape())));
    }
    let (n, c) = (x.dims()[0], x.dims()[1]);
    if groups == 0 || c % groups != 0 {
        return Err(Error::invalid(
            "group_norm",
            format!("{c} channels (input shape {}) cannot be split into {groups} groups", x.shape()),
        ));
    }
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::invalid("group_norm", format!("eps must be finite and >= 0, got {eps}")));
    }
    for (name, p) in [("gamma", gamma), ("beta", beta)] {
        let Some(p) = p else { continue };
        if p.dims() != [c] {
            return Err(Error::invalid(
                "group_norm",
                format!("{name} must have shape [{c}] for an input of shape {}, got {}", x.shape(), p.shape()),
            ));
        }
        if p.dtype() != param_dtype {
            return Err(Error::DTypeMismatch { op: "group_norm", lhs: param_dtype, rhs: p.dtype() });
        }
        if p.device() != x.device() {
            return Err(Error::DeviceMismatch { op: "group_norm", lhs: x.device(), rhs: p.device() });
        }
    }
    Ok(cpu::Dims { n, c, s: x.dims()[2..].iter().product(), groups })
}

fn forward<T: FloatElem>(
    x: &Tensor,
    dims: cpu::Dims,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    eps: f64,
    act: Activation,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let gamma = gamma.map(|t| t.contiguous()).transpose()?;
    let beta = beta.map(|t| t.contiguous()).transpose()?;
    let (gv, bv) =
        (gamma.as_ref().map(|t| t.to_vec::<T>()).transpose()?, beta.as_ref().map(|t| t.to_vec()).transpose()?);
    let relu = act == Activation::Relu;
    let out = x.with_cpu_slice(|xs| cpu::forward(xs, dims, gv.as_deref(), bv.as_deref(), eps, relu))?;
    let stats = [dims.n, dims.groups];
    let op = GroupNormBackward {
        dims,
        act,
        has_gamma: gamma.is_some(),
        has_beta: beta.is_some(),
        mean: Tensor::from_vec(out.mean, stats, Device::Cpu)?,
        rstd: Tensor::from_vec(out.rstd, stats, Device::Cpu)?,
    };
    let mut inputs = vec![&x];
    inputs.extend(gamma.as_ref());
    inputs.extend(beta.as_ref());
    Ok(Tensor::from_vec(out.y, x.shape(), Device::Cpu)?.record(&inputs, op))
}

/// Saved by the forward: the sizes, which optional inputs exist, and μ, r per (n, g) (`[N, G]`).
struct GroupNormBackward {
    dims: cpu::Dims,
    act: Activation,
    has_gamma: bool,
    has_beta: bool,
    mean: Tensor,
    rstd: Tensor,
}

impl GroupNormBackward {
    fn run<T: FloatElem>(&self, inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let gamma = if self.has_gamma { Some(inputs[1].to_vec::<T>()?) } else { None };
        let (mean, rstd) = (self.mean.to_vec::<T>()?, self.rstd.to_vec::<T>()?);
        let g = g.contiguous()?;
        let y = y.contiguous()?;
        let relu = self.act == Activation::Relu;
        let b = x.with_cpu_slice(|xs| {
            g.with_cpu_slice(|gs| {
                y.with_cpu_slice(|ys| {
                    cpu::backward(xs, gs, relu.then_some(ys), self.dims, gamma.as_deref(), &mean, &rstd)
                })
            })
        })???;
        let c = self.dims.c;
        let mut grads = vec![x.requires_grad().then(|| Tensor::from_vec(b.dx, x.shape(), Device::Cpu)).transpose()?];
        if self.has_gamma {
            grads.push(Some(Tensor::from_vec(b.dgamma, [c], Device::Cpu)?));
        }
        if self.has_beta {
            grads.push(Some(Tensor::from_vec(b.dbeta, [c], Device::Cpu)?));
        }
        Ok(grads)
    }
}

impl BackwardOp for GroupNormBackward {
    fn name(&self) -> &'static str {
        "group_norm"
    }

    fn backward(&self, inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        if inputs[0].device().is_gpu() {
            return gpu::backward(self, inputs, y, g);
        }
        match inputs[0].dtype() {
            DType::F32 => self.run::<f32>(inputs, y, g),
            DType::F64 => self.run::<f64>(inputs, y, g),
            dtype => Err(Error::UnsupportedDType { op: "group_norm backward", dtype }),
        }
    }
}
