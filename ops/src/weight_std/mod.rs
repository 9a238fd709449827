//! Weight standardization (Qiao et al., 2019), as BiT applies it to every convolution weight.
//!
//! Each output channel's filter (row o of a weight `[O, …]`: all its (I, kh, kw) elements, or
//! whatever the trailing dims are) is standardized with its own mean and **biased** variance,
//! ε inside the square root (bit-spec §2.1):
//!
//! ```text
//! μ_o = mean(w_o)   σ²_o = mean((w_o − μ_o)²)   r_o = 1/sqrt(σ²_o + ε)   ŵ_o = (w_o − μ_o)·r_o
//! ```
//!
//! ε is a parameter because the implementations differ: [`WS_EPS_BIT`] = 1e-10 (the original BiT
//! code, all three frameworks) and [`WS_EPS_TIMM`] = 1e-8 (timm and HF transformers for BiT). The
//! difference is ≈ ε/(2σ²) relative: invisible for trained kernels, visible for tiny-variance ones.
//!
//! **Backward.** The stored parameter is the raw `w`, so gradients flow through the
//! standardization. With g = ∂L/∂ŵ and n the row length (derivation: ∂r/∂w_j = −r³(w_j − μ)/n):
//!
//! ```text
//! ∂L/∂w_o = r_o·(g_o − mean(g_o) − ŵ_o·mean(g_o·ŵ_o))
//! ```
//!
//! The forward saves r per row; ŵ is the op's output, which backward receives (on GPU devices
//! the forward also saves μ and the kernel recomputes ŵ from w: the same values, unrounded for the
//! half dtypes). Forward and backward are each one task per row: a row is read, reduced and
//! written while it is in cache.
//!
//! A constant filter standardizes to exactly zero (no NaN, since ε > 0), and its gradient is
//! finite but of size 1/sqrt(ε) (1e5 for 1e-10): never zero-initialize a WS weight.
//!
//! **Dtypes.** f32 and f64 run natively. On the CPU, f16/bf16 are converted to f32 at this
//! boundary and the result back (the casts are recorded, so gradients flow); on GPU devices they
//! run natively with the same f32 arithmetic (r saved in f32), ŵ and ∂w rounded once.
//!
//! **Devices.** On Cuda and Emu the forward and backward run as `kernels/cuda/weight_std.cu`
//! (`gpu.rs`: one block per output channel, the same formulas and roundings); r stays on the device.

mod bf16;
#[cfg(test)]
mod bf16_gpu_tests;
pub(crate) mod cpu;
mod gpu;
#[cfg(test)]
mod gpu_tests;
#[cfg(test)]
mod tests;

pub use bf16::{weight_std_bf16, weight_std_bf16_backward, WsBf16};

use bitgrad_engine::{BackwardOp, DType, Device, Error, FloatElem, Result, Tensor};

/// ε of the original BiT code (PyTorch, JAX and TF2 releases).
pub const WS_EPS_BIT: f64 = 1e-10;
/// ε of timm's and HF transformers' BiT models (`StdConv2d(eps=1e-8)`).
pub const WS_EPS_TIMM: f64 = 1e-8;

/// Standardizes each output channel (the first axis) of `w` (rank ≥ 2) to mean 0 and variance
/// 1 over its remaining axes: `(w − mean) / sqrt(var + eps)`, variance biased.
///
/// Errors: rank < 2, a non-float dtype, a negative or non-finite `eps`.
pub fn weight_std(w: &Tensor, eps: f64) -> Result<Tensor> {
    if !w.dtype().is_float() {
        return Err(Error::UnsupportedDType { op: "weight_std", dtype: w.dtype() });
    }
    if w.rank() < 2 {
        return Err(Error::invalid(
            "weight_std",
            format!("expected a weight [O, ...] of rank >= 2 (output channel first), got shape {}", w.shape()),
        ));
    }
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::invalid("weight_std", format!("eps must be finite and >= 0, got {eps}")));
    }
    if w.device().is_gpu() {
        // Every float dtype runs natively (the half ones with f32 arithmetic, as below).
        return gpu::forward(&w.contiguous()?, eps);
    }
    match w.dtype() {
        DType::F32 => forward::<f32>(w, eps),
        DType::F64 => forward::<f64>(w, eps),
        DType::F16 | DType::BF16 => weight_std(&w.to_dtype(DType::F32)?, eps)?.to_dtype(w.dtype()),
        dtype => Err(Error::UnsupportedDType { op: "weight_std", dtype }),
    }
}

fn forward<T: FloatElem>(w: &Tensor, eps: f64) -> Result<Tensor> {
    let w = w.contiguous()?;
    let rows = w.dims()[0];
    let (out, rstd) = w.with_cpu_slice(|ws| cpu::forward::<T>(ws, rows, eps))?;
    let op = WeightStdBackward { rstd: Tensor::from_vec(rstd, [rows], Device::Cpu)?, mean: None };
    Ok(Tensor::from_vec(out, w.shape(), Device::Cpu)?.record(&[&w], op))
}

/// Saved by the forward: r = 1/sqrt(var + eps) per output channel (`[O]`), and on GPU devices
/// also μ (`[O]`), with which the kernel recomputes ŵ from w instead of reading the output.
struct WeightStdBackward {
    rstd: Tensor,
    mean: Option<Tensor>,
}

impl WeightStdBackward {
    /// ∂w, or `None` when a registered optimizer took it: the `ws-sgd` fusion
    /// (`crate::sgd::in_backward`) updates the weight `w` row by row here instead.
    fn run<T: FloatElem>(&self, w: &Tensor, what: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let (g, what) = (g.contiguous()?, what.contiguous()?);
        let rstd = self.rstd.to_vec::<T>()?;
        g.with_cpu_slice(|gs: &[T]| {
            what.with_cpu_slice(|ws: &[T]| {
                let fused = crate::sgd::in_backward::is_registered()
                    && crate::sgd::in_backward::apply::<T>(w, &|w, earlier, buf, h| {
                        cpu::backward_sgd((gs, ws, &rstd), w, earlier, buf, h)
                    })?;
                if fused {
                    return Ok(None);
                }
                Tensor::from_vec(cpu::backward(gs, ws, &rstd), g.shape(), Device::Cpu).map(Some)
            })
        })??
    }
}

impl BackwardOp for WeightStdBackward {
    fn name(&self) -> &'static str {
        "weight_std"
    }

    fn backward(&self, inputs: &[Tensor], what: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        if let Some(mean) = &self.mean {
            // GPU devices (the forward saved μ there); inputs[0] is the contiguous weight.
            return Ok(vec![Some(gpu::backward(&g.contiguous()?, &inputs[0], mean, &self.rstd)?)]);
        }
        let dw = match inputs[0].dtype() {
            DType::F32 => self.run::<f32>(&inputs[0], what, g)?,
            DType::F64 => self.run::<f64>(&inputs[0], what, g)?,
            dtype => return Err(Error::UnsupportedDType { op: "weight_std backward", dtype }),
        };
        Ok(vec![dw])
    }
}
