//! Batch normalization (Ioffe & Szegedy, 2015), for normalization studies next to BiT's
//! GroupNorm. Semantics follow PyTorch's `F.batch_norm`.
//!
//! For `x` of shape `[N, C, …]`, each channel c is normalized over (N, spatial), M = N·S values:
//!
//! ```text
//! training:  μ_c = mean(x_c)   σ²_c = mean((x_c − μ_c)²)   (batch statistics, biased)
//! eval:      μ_c = running_mean_c   σ²_c = running_var_c
//! y = γ_c·(x − μ_c)/sqrt(σ²_c + ε) + β_c
//! ```
//!
//! **Running statistics** ([`RunningStats`]) are updated in place in training mode with
//! PyTorch's rule `running = (1 − momentum)·running + momentum·batch_stat`, where the variance
//! fed to it is the **unbiased** batch variance σ²·M/(M − 1) while the normalization itself uses
//! the biased σ². They start at mean 0, variance 1, and are never differentiated.
//!
//! **Backward.** With g = ∂L/∂y, r_c = 1/sqrt(σ²_c + ε), x̂ = (x − μ_c)·r_c, dx̂ = γ_c·g:
//!
//! ```text
//! ∂L/∂β_c = Σ g        ∂L/∂γ_c = Σ g·x̂
//! training: ∂L/∂x = r_c·(dx̂ − mean_c(dx̂) − x̂·mean_c(dx̂·x̂))   (μ, σ² depend on x)
//! eval:     ∂L/∂x = r_c·γ_c·g                                 (an affine map per channel)
//! ```
//!
//! Both are one reduction pass (Σg, Σg·x per channel) and one elementwise pass
//! `dx = A_c·g + B_c·x + C_c`, with B = C = 0 in eval mode.
//!
//! **Dtypes.** f32 and f64 run natively; f16/bf16 inputs (and γ, β) are converted to f32 at this
//! boundary and the result back; running statistics must then be f32, as in mixed-precision
//! PyTorch.
//!
//! **Devices.** On Cuda and Emu the forward (with the running-statistics update, in place on the
//! device) and the backward run as `kernels/cuda/batch_norm.cu` (`gpu.rs`: one block per channel).

mod cpu;
mod gpu;
#[cfg(test)]
mod gpu_tests;
#[cfg(test)]
mod tests;

use bitgrad_engine::{BackwardOp, DType, Device, Error, FloatElem, Result, Tensor};

use crate::group_norm::lanes::{f64_of, of_f64};

/// BatchNorm's default ε in PyTorch.
pub const BN_EPS: f64 = 1e-5;
/// BatchNorm's default momentum in PyTorch.
pub const BN_MOMENTUM: f64 = 0.1;

/// Running mean and variance per channel (`[C]` each), updated in place by training-mode calls.
/// The tensors are shared handles: views taken with [`RunningStats::mean`] see every update.
#[derive(Debug, Clone)]
pub struct RunningStats {
    mean: Tensor,
    var: Tensor,
}

impl RunningStats {
    /// Fresh statistics for `channels` channels: mean 0, variance 1 (PyTorch's initial values).
    pub fn new(channels: usize, dtype: DType, device: Device) -> Result<Self> {
        Self::from_tensors(Tensor::zeros([channels], dtype, device)?, Tensor::ones([channels], dtype, device)?)
    }

    /// Wraps existing statistics (e.g. loaded from a checkpoint): two `[C]` float tensors of one
    /// dtype. They are copied if not contiguous (the copy, not the original, is then updated).
    pub fn from_tensors(mean: Tensor, var: Tensor) -> Result<Self> {
        if mean.rank() != 1 || mean.shape() != var.shape() {
            return Err(Error::invalid(
                "RunningStats",
                format!("mean and var must be two [C] tensors, got {} and {}", mean.shape(), var.shape()),
            ));
        }
        if mean.dtype() != var.dtype() || !matches!(mean.dtype(), DType::F32 | DType::F64) {
            return Err(Error::invalid(
                "RunningStats",
                format!("mean and var must both be f32 or both f64, got {} and {}", mean.dtype(), var.dtype()),
            ));
        }
        Ok(RunningStats { mean: mean.detach().contiguous()?, var: var.detach().contiguous()? })
    }

    pub fn mean(&self) -> &Tensor {
        &self.mean
    }
    pub fn var(&self) -> &Tensor {
        &self.var
    }
    pub fn channels(&self) -> usize {
        self.mean.numel()
    }
}

/// Batch norm of `x` (`[N, C, …]`) with optional per-channel `gamma`, `beta` (`[C]`).
///
/// `training`: normalize with the batch statistics and, when `running` is given, update it in
/// place with `momentum`. Not training: normalize with `running` (required).
///
/// Errors: rank < 2, γ/β/running statistics of the wrong shape, dtype or device, eval mode
/// without running statistics, training with a single value per channel (the variance is
/// undefined), a non-finite momentum, a negative or non-finite `eps`, a non-float dtype.
pub fn batch_norm(
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    running: Option<&RunningStats>,
    training: bool,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    // A channels-last input runs through the NCHW kernels, converted once here (crate::format).
    if crate::format::is_channels_last_input(x) {
        return crate::format::nchw_boundary(x, |x| batch_norm(x, gamma, beta, running, training, momentum, eps));
    }
    let dims = check(x, gamma, beta, running, training, momentum, eps)?;
    let mode = Mode { training, momentum, eps };
    match x.dtype() {
        DType::F32 => forward::<f32>(x, dims, gamma, beta, running, mode),
        DType::F64 => forward::<f64>(x, dims, gamma, beta, running, mode),
        DType::F16 | DType::BF16 => {
            let up = |t: &Tensor| t.to_dtype(DType::F32);
            let (g, b) = (gamma.map(up).transpose()?, beta.map(up).transpose()?);
            batch_norm(&up(x)?, g.as_ref(), b.as_ref(), running, training, momentum, eps)?.to_dtype(x.dtype())
        }
        dtype => Err(Error::UnsupportedDType { op: "batch_norm", dtype }),
    }
}

#[derive(Debug, Clone, Copy)]
struct Mode {
    training: bool,
    momentum: f64,
    eps: f64,
}

fn check(
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    running: Option<&RunningStats>,
    training: bool,
    momentum: f64,
    eps: f64,
) -> Result<cpu::Dims> {
    let op = "batch_norm";
    if !x.dtype().is_float() {
        return Err(Error::UnsupportedDType { op, dtype: x.dtype() });
    }
    if x.rank() < 2 {
        return Err(Error::invalid(op, format!("expected an input [N, C, ...], got shape {}", x.shape())));
    }
    let (n, c) = (x.dims()[0], x.dims()[1]);
    let s: usize = x.dims()[2..].iter().product();
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::invalid(op, format!("eps must be finite and >= 0, got {eps}")));
    }
    if !momentum.is_finite() {
        return Err(Error::invalid(op, format!("momentum must be finite, got {momentum}")));
    }
    for (name, p) in [("gamma", gamma), ("beta", beta)] {
        let Some(p) = p else { continue };
        if p.dims() != [c] {
            return Err(Error::invalid(
                op,
                format!("{name} must have shape [{c}] for an input of shape {}, got {}", x.shape(), p.shape()),
            ));
        }
        if p.dtype() != x.dtype() {
            return Err(Error::DTypeMismatch { op, lhs: x.dtype(), rhs: p.dtype() });
        }
        if p.device() != x.device() {
            return Err(Error::DeviceMismatch { op, lhs: x.device(), rhs: p.device() });
        }
    }
    match running {
        Some(r) => {
            if r.channels() != c {
                return Err(Error::invalid(
                    op,
                    format!("running statistics have {} channels, the input {} (shape {})", r.channels(), c, x.shape()),
                ));
            }
            let compute = x.dtype().compute_type();
            if r.mean.dtype() != compute {
                return Err(Error::invalid(
                    op,
                    format!("running statistics are {} but a {} input needs {compute}", r.mean.dtype(), x.dtype()),
                ));
            }
            if r.mean.device() != x.device() {
                return Err(Error::DeviceMismatch { op, lhs: x.device(), rhs: r.mean.device() });
            }
        }
        None if !training => {
            return Err(Error::invalid(op, "eval mode (training = false) needs running statistics"));
        }
        None => {}
    }
    if training && n * s == 1 {
        return Err(Error::invalid(
            op,
            format!("expected more than 1 value per channel when training, got input shape {}", x.shape()),
        ));
    }
    Ok(cpu::Dims { n, c, s })
}

fn forward<T: FloatElem>(
    x: &Tensor,
    d: cpu::Dims,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    running: Option<&RunningStats>,
    mode: Mode,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let gamma = gamma.map(|t| t.contiguous()).transpose()?;
    let beta = beta.map(|t| t.contiguous()).transpose()?;
    if x.device().is_gpu() {
        return gpu::forward(&x, d, gamma.as_ref(), beta.as_ref(), running, mode);
    }
    // Per-channel μ and σ² (f64): the batch's in training, the running ones in eval.
    let (mean, var): (Vec<f64>, Vec<f64>) = if mode.training {
        let stats = x.with_cpu_slice(|xs| cpu::channel_stats::<T>(xs, d))?;
        if let Some(r) = running {
            update_running::<T>(r, &stats, (d.n * d.s) as f64, mode.momentum)?;
        }
        stats.into_iter().unzip()
    } else {
        let r = running.expect("checked: eval mode has running statistics");
        (r.mean.to_vec_f64()?, r.var.to_vec_f64()?)
    };
    let rstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + mode.eps).sqrt()).collect();
    let gv = param_or(gamma.as_ref(), d.c, 1.0)?;
    let bv = param_or(beta.as_ref(), d.c, 0.0)?;
    let scale: Vec<T> = (0..d.c).map(|c| of_f64(gv[c] * rstd[c])).collect();
    let shift: Vec<T> = (0..d.c).map(|c| of_f64(bv[c] - mean[c] * gv[c] * rstd[c])).collect();
    let y = x.with_cpu_slice(|xs| cpu::per_channel_affine(xs, None, d, &scale, &scale, &shift))?;
    let to_t = |v: &[f64]| Tensor::from_vec(v.iter().map(|&a| of_f64::<T>(a)).collect(), [d.c], Device::Cpu);
    let op = BatchNormBackward {
        dims: d,
        training: mode.training,
        has_gamma: gamma.is_some(),
        has_beta: beta.is_some(),
        mean: to_t(&mean)?,
        rstd: to_t(&rstd)?,
    };
    let mut inputs = vec![&x];
    inputs.extend(gamma.as_ref());
    inputs.extend(beta.as_ref());
    Ok(Tensor::from_vec(y, x.shape(), Device::Cpu)?.record(&inputs, op))
}

/// γ or β as f64, or `fill` per channel when absent.
fn param_or(p: Option<&Tensor>, c: usize, fill: f64) -> Result<Vec<f64>> {
    p.map_or_else(|| Ok(vec![fill; c]), |t| t.to_vec_f64())
}

/// `running = (1 − momentum)·running + momentum·batch`, with the unbiased batch variance.
fn update_running<T: FloatElem>(r: &RunningStats, stats: &[(f64, f64)], m: f64, momentum: f64) -> Result<()> {
    let unbias = m / (m - 1.0);
    let blend = |old: T, new: f64| of_f64::<T>((1.0 - momentum) * f64_of(old) + momentum * new);
    r.mean.with_cpu_slice_mut::<T, _>(|rm| {
        for (o, &(mean, _)) in rm.iter_mut().zip(stats) {
            *o = blend(*o, mean);
        }
    })?;
    r.var.with_cpu_slice_mut::<T, _>(|rv| {
        for (o, &(_, var)) in rv.iter_mut().zip(stats) {
            *o = blend(*o, var * unbias);
        }
    })
}

/// Saved by the forward: sizes, mode, which optional inputs exist, and the μ and r used per
/// channel (batch statistics in training, a copy of the running ones in eval).
struct BatchNormBackward {
    dims: cpu::Dims,
    training: bool,
    has_gamma: bool,
    has_beta: bool,
    mean: Tensor,
    rstd: Tensor,
}

impl BatchNormBackward {
    fn run<T: FloatElem>(&self, inputs: &[Tensor], g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (d, x) = (self.dims, &inputs[0]);
        let g = g.contiguous()?;
        let gamma = param_or(self.has_gamma.then(|| &inputs[1]), d.c, 1.0)?;
        let (mean, rstd) = (self.mean.to_vec_f64()?, self.rstd.to_vec_f64()?);
        let sums = g.with_cpu_slice(|gs| x.with_cpu_slice(|xs| cpu::channel_grad_sums::<T>(gs, xs, d)))??;
        // Σ g·x̂ per channel = r·(Σ g·x − μ·Σ g): dgamma, and the second mean of the dx formula.
        let gxhat: Vec<f64> = (0..d.c).map(|c| rstd[c] * (sums[c].1 - mean[c] * sums[c].0)).collect();
        let mut grads = Vec::with_capacity(inputs.len());
        grads.push(if x.requires_grad() {
            let m = (d.n * d.s) as f64;
            let (mut a, mut b, mut k) = (Vec::new(), Vec::new(), Vec::new());
            for c in 0..d.c {
                let r = rstd[c];
                // Eval mode: μ and r are constants, so only the A term remains.
                let (m1, m2) =
                    if self.training { (gamma[c] * sums[c].0 / m, gamma[c] * gxhat[c] / m) } else { (0.0, 0.0) };
                a.push(of_f64::<T>(r * gamma[c]));
                b.push(of_f64::<T>(-r * r * m2));
                k.push(of_f64::<T>(r * (r * m2 * mean[c] - m1)));
            }
            let dx =
                g.with_cpu_slice(|gs| x.with_cpu_slice(|xs| cpu::per_channel_affine(gs, Some(xs), d, &a, &b, &k)))??;
            Some(Tensor::from_vec(dx, x.shape(), Device::Cpu)?)
        } else {
            None
        });
        let per_channel = |v: Vec<T>| Tensor::from_vec(v, [d.c], Device::Cpu);
        if self.has_gamma {
            grads.push(Some(per_channel(gxhat.iter().map(|&v| of_f64(v)).collect())?));
        }
        if self.has_beta {
            grads.push(Some(per_channel(sums.iter().map(|&(a, _)| of_f64(a)).collect())?));
        }
        Ok(grads)
    }
}

impl BackwardOp for BatchNormBackward {
    fn name(&self) -> &'static str {
        "batch_norm"
    }

    fn backward(&self, inputs: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        if inputs[0].device().is_gpu() {
            return gpu::backward(self, inputs, g);
        }
        match inputs[0].dtype() {
            DType::F32 => self.run::<f32>(inputs, g),
            DType::F64 => self.run::<f64>(inputs, g),
            dtype => Err(Error::UnsupportedDType { op: "batch_norm backward", dtype }),
        }
    }
}
