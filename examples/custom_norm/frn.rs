//! Filter Response Normalization with its Thresholded Linear Unit (Singh & Krishnan, 2020,
//! "Filter Response Normalization Layer: Eliminating Batch Dependence in the Training of Deep
//! Neural Networks"), written outside bitgrad's crates: a new op with its own CPU forward and
//! backward, and a [`NormFactory`] that plugs it into ResNetV2 through `NormKind::Custom`.
//!
//! For `x` of shape `[N, C, …]`, per sample n and channel c, over the S spatial positions:
//!
//! ```text
//! ν² = mean_s(x²)     r = 1/√(ν² + ε)     x̂ = x·r     y = γ_c·x̂ + β_c     z = max(y, τ_c)
//! ```
//!
//! No mean is subtracted and nothing is shared across the batch, so FRN behaves the same at
//! every batch size. The learned threshold τ of the TLU takes the place of the ReLU that follows
//! every norm in the pre-activation ResNet (a [`NormLayer`] is "norm + activation").
//!
//! **Backward** (g = ∂L/∂z): where y > τ the gradient flows to y, elsewhere to τ:
//!
//! ```text
//! g_y = g·[y > τ]          ∂τ_c = Σ_{n,s} g·[y ≤ τ]
//! ∂β_c = Σ_{n,s} g_y       ∂γ_c = Σ_{n,s} g_y·x̂
//! dx̂ = γ_c·g_y            ∂x = r·(dx̂ − x̂·mean_s(dx̂·x̂))
//! ```
//!
//! (∂ν²/∂x = 2x/S, so the second term is what the normalizer's dependence on x contributes.)
//! The backward recomputes r and y from the op's inputs instead of saving them.
//!
//! **Devices and dtypes.** On the CPU the arithmetic runs in f64 for any float dtype and the
//! result is stored in the input's dtype, with the hand-written backward above. On a GPU device
//! (Cuda, Emu) the same formula is composed of the engine's differentiable primitives (square,
//! mean, sqrt, divide, scale, shift, maximum), which have kernels, and autograd derives the
//! backward: how a user gets a new op onto the GPU without writing CUDA (a fused kernel would
//! be the next step, the way `ops/` does it). The parity test checks the two against each other.

use bitgrad::engine::{BackwardOp, Error, Result, Tensor};
use bitgrad::models::nn::{join, Fill, Init, Module, NormFactory, NormLayer, ParamKind};

/// FRN's ε for convolutional layers with more than one spatial position (the paper's 1e-6).
pub const FRN_EPS: f64 = 1e-6;

/// Checks the operands and returns (N, C, S).
fn dims(x: &Tensor, params: [&Tensor; 3], eps: f64) -> Result<(usize, usize, usize)> {
    let bad = |msg: String| Err(Error::invalid("frn", msg));
    if x.rank() < 2 {
        return bad(format!("x must be [N, C, …], got {:?}", x.dims()));
    }
    if !(eps > 0.0 && eps.is_finite()) {
        return bad(format!("eps must be finite and > 0, got {eps}"));
    }
    let (n, c) = (x.dims()[0], x.dims()[1]);
    for (name, p) in ["gamma", "beta", "tau"].iter().zip(params) {
        if p.dims() != [c] || p.dtype() != x.dtype() || p.device() != x.device() {
            return bad(format!(
                "{name} must be [{c}] {} on {:?}, got {:?} {} on {:?}",
                x.dtype(),
                x.device(),
                p.dims(),
                p.dtype(),
                p.device()
            ));
        }
    }
    Ok((n, c, x.dims()[2..].iter().product()))
}

/// The values of one FRN forward, all in f64: r per (n, c), x̂ and y per element.
struct Parts {
    r: Vec<f64>,
    xhat: Vec<f64>,
    y: Vec<f64>,
}

fn compute(x: &[f64], gamma: &[f64], beta: &[f64], (n, c, s): (usize, usize, usize), eps: f64) -> Parts {
    let mut p = Parts { r: Vec::with_capacity(n * c), xhat: vec![0.0; x.len()], y: vec![0.0; x.len()] };
    for nc in 0..n * c {
        let ch = nc % c;
        let xs = &x[nc * s..(nc + 1) * s];
        let nu2 = xs.iter().map(|v| v * v).sum::<f64>() / s as f64;
        let r = 1.0 / (nu2 + eps).sqrt();
        p.r.push(r);
        for (i, &v) in xs.iter().enumerate() {
            let xhat = v * r;
            p.xhat[nc * s + i] = xhat;
            p.y[nc * s + i] = gamma[ch] * xhat + beta[ch];
        }
    }
    p
}

/// FRN + TLU of `x` (`[N, C, …]`) with per-channel `gamma`, `beta` and threshold `tau` (`[C]`).
pub fn frn(x: &Tensor, gamma: &Tensor, beta: &Tensor, tau: &Tensor, eps: f64) -> Result<Tensor> {
    let d = dims(x, [gamma, beta, tau], eps)?;
    if x.device().is_gpu() {
        return frn_composed(x, gamma, beta, tau, eps);
    }
    let (xv, g, b, t) = (x.to_vec_f64()?, gamma.to_vec_f64()?, beta.to_vec_f64()?, tau.to_vec_f64()?);
    let p = compute(&xv, &g, &b, d, eps);
    let z: Vec<f64> = p.y.iter().enumerate().map(|(i, &y)| y.max(t[(i / d.2) % d.1])).collect();
    let out = Tensor::from_f64_vec(z, x.shape().clone(), x.dtype(), x.device())?;
    // Autograd: the graph gets a node only when some input requires a gradient.
    Ok(out.record(&[x, gamma, beta, tau], FrnBackward { eps }))
}

/// FRN on a GPU device: the formula from the engine's primitives, differentiated by autograd.
fn frn_composed(x: &Tensor, gamma: &Tensor, beta: &Tensor, tau: &Tensor, eps: f64) -> Result<Tensor> {
    let (n, c) = (x.dims()[0], x.dims()[1]);
    // [N, C, S]: the spatial positions of each (sample, channel) on one axis.
    let x3 = x.reshape([n, c, x.numel() / (n * c).max(1)])?;
    let per_channel = |t: &Tensor| t.reshape([1, c, 1]);
    let nu2 = x3.mul(&x3)?.mean(&[2], true)?;
    let xhat = x3.div(&nu2.add_scalar(eps)?.sqrt()?)?;
    let y = xhat.mul(&per_channel(gamma)?)?.add(&per_channel(beta)?)?;
    y.maximum(&per_channel(tau)?)?.reshape(x.shape().clone())
}

/// FRN's backward rule (see the module docs).
struct FrnBackward {
    eps: f64,
}

impl BackwardOp for FrnBackward {
    fn name(&self) -> &'static str {
        "frn"
    }

    fn backward(&self, inputs: &[Tensor], _output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let [x, gamma, beta, tau] = inputs else {
            return Err(Error::invalid("frn backward", format!("expected 4 inputs, got {}", inputs.len())));
        };
        let (n, c, s) = dims(x, [gamma, beta, tau], self.eps)?;
        let (xv, g, b, t) = (x.to_vec_f64()?, gamma.to_vec_f64()?, beta.to_vec_f64()?, tau.to_vec_f64()?);
        let gz = grad.to_vec_f64()?;
        let p = compute(&xv, &g, &b, (n, c, s), self.eps);
        let (mut dx, mut dgamma, mut dbeta, mut dtau) = (vec![0.0; xv.len()], vec![0.0; c], vec![0.0; c], vec![0.0; c]);
        for nc in 0..n * c {
            let ch = nc % c;
            let range = nc * s..(nc + 1) * s;
            // g_y and dx̂ for this (n, c), then the mean of dx̂·x̂ the x gradient needs.
            let mut dxhat_xhat = 0.0;
            for i in range.clone() {
                if p.y[i] > t[ch] {
                    dbeta[ch] += gz[i];
                    dgamma[ch] += gz[i] * p.xhat[i];
                    dx[i] = g[ch] * gz[i];
                    dxhat_xhat += dx[i] * p.xhat[i];
                } else {
                    dtau[ch] += gz[i];
                }
            }
            let mean = dxhat_xhat / s as f64;
            for i in range {
                dx[i] = p.r[nc] * (dx[i] - p.xhat[i] * mean);
            }
        }
        let make =
            |v: Vec<f64>, like: &Tensor| Tensor::from_f64_vec(v, like.shape().clone(), like.dtype(), like.device());
        Ok(vec![Some(make(dx, x)?), Some(make(dgamma, gamma)?), Some(make(dbeta, beta)?), Some(make(dtau, tau)?)])
    }
}

/// An FRN + TLU layer: tensors `<prefix>.weight` (γ, ones), `.bias` (β, zeros), `.tau` (τ, zeros).
pub struct FrnAct {
    pub weight: Tensor,
    pub bias: Tensor,
    pub tau: Tensor,
    pub eps: f64,
}

impl NormLayer for FrnAct {
    fn forward(&self, x: &Tensor) -> bitgrad::models::Result<Tensor> {
        Ok(frn(x, &self.weight, &self.bias, &self.tau, self.eps)?)
    }
}

impl Module for FrnAct {
    // The same names, in the same order, in both visitors: that is what state dicts, loading
    // and the optimizer see.
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, ParamKind)) {
        f(&join(prefix, "weight"), &self.weight, ParamKind::Parameter);
        f(&join(prefix, "bias"), &self.bias, ParamKind::Parameter);
        f(&join(prefix, "tau"), &self.tau, ParamKind::Parameter);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, ParamKind)) {
        f(&join(prefix, "weight"), &mut self.weight, ParamKind::Parameter);
        f(&join(prefix, "bias"), &mut self.bias, ParamKind::Parameter);
        f(&join(prefix, "tau"), &mut self.tau, ParamKind::Parameter);
    }
    /// FRN has no batch statistics: train and eval mode compute the same thing.
    fn set_training(&mut self, _training: bool) {}
}

/// Builds an [`FrnAct`] for every norm of a model: `NormKind::Custom(Arc::new(Frn::default()))`.
pub struct Frn {
    pub eps: f64,
}

impl Default for Frn {
    fn default() -> Self {
        Frn { eps: FRN_EPS }
    }
}

impl NormFactory for Frn {
    fn name(&self) -> String {
        "filter_response_norm".into()
    }
    /// Any width works: FRN normalizes each channel on its own.
    fn check(&self, _channels: usize) -> bitgrad::models::Result<()> {
        Ok(())
    }
    fn param_count(&self, channels: usize) -> usize {
        3 * channels
    }
    fn build(&self, init: &mut Init, prefix: &str, c: usize) -> bitgrad::models::Result<Box<dyn NormLayer>> {
        // `init` either makes fresh tensors or takes them from a state dict being loaded.
        let mut param = |name, fill| init.tensor(&join(prefix, name), &[c], fill, ParamKind::Parameter);
        Ok(Box::new(FrnAct {
            weight: param("weight", Fill::Ones)?,
            bias: param("bias", Fill::Zeros)?,
            tau: param("tau", Fill::Zeros)?,
            eps: self.eps,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use bitgrad::engine::gradcheck::{check_gradients, GradCheck};
    use bitgrad::models::{NormKind, ResNetV2, ResNetV2Config};
    use bitgrad::{DType, Device, Rng};

    fn randn(dims: &[usize], mean: f64, seed: u64) -> Tensor {
        Tensor::randn(dims.to_vec(), mean, 1.0, DType::F64, Device::Cpu, &mut Rng::new(seed)).unwrap()
    }

    /// Every element of x, γ, β and τ against central differences in f64. β and τ are drawn so
    /// that both sides of the threshold occur.
    #[test]
    fn gradients_match_finite_differences() {
        let inputs = [randn(&[2, 3, 4, 5], 0.3, 1), randn(&[3], 1.0, 2), randn(&[3], 0.0, 3), randn(&[3], -0.2, 4)];
        let r = check_gradients(|t| frn(&t[0], &t[1], &t[2], &t[3], FRN_EPS), &inputs, GradCheck::default()).unwrap();
        assert_eq!(r.checked, 120 + 9);
        // Without spatial dims (S = 1) too.
        let inputs = [randn(&[4, 3], 0.0, 5), randn(&[3], 1.0, 6), randn(&[3], 0.0, 7), randn(&[3], -0.5, 8)];
        check_gradients(|t| frn(&t[0], &t[1], &t[2], &t[3], 1e-3), &inputs, GradCheck::default()).unwrap();
    }

    /// The forward against the formula, written out for one element.
    #[test]
    fn forward_is_the_formula() {
        let x = randn(&[1, 2, 3, 3], 0.0, 9);
        let (g, b, t) = (randn(&[2], 1.0, 10), randn(&[2], 0.0, 11), randn(&[2], 0.0, 12));
        let z = frn(&x, &g, &b, &t, FRN_EPS).unwrap().to_vec::<f64>().unwrap();
        let (xv, gv, bv, tv) = (
            x.to_vec::<f64>().unwrap(),
            g.to_vec::<f64>().unwrap(),
            b.to_vec::<f64>().unwrap(),
            t.to_vec::<f64>().unwrap(),
        );
        for (i, &zi) in z.iter().enumerate() {
            let c = i / 9;
            let nu2 = xv[c * 9..(c + 1) * 9].iter().map(|v| v * v).sum::<f64>() / 9.0;
            let want = (gv[c] * xv[i] / (nu2 + FRN_EPS).sqrt() + bv[c]).max(tv[c]);
            assert!((zi - want).abs() < 1e-12, "{zi} vs {want}");
        }
    }

    /// The GPU path (the formula from engine primitives on Emu, differentiated by autograd)
    /// equals the CPU op with its hand-written backward: output and every gradient.
    #[test]
    fn emu_matches_the_cpu() {
        let (n, c) = (2, 3);
        let x = randn(&[n, c, 5, 4], 0.0, 11).to_dtype(DType::F32).unwrap();
        let gamma = randn(&[c], 1.0, 12).to_dtype(DType::F32).unwrap();
        let beta = randn(&[c], 0.0, 13).to_dtype(DType::F32).unwrap();
        let tau = randn(&[c], -0.2, 14).to_dtype(DType::F32).unwrap();
        let w = randn(&[n, c, 5, 4], 0.0, 15).to_dtype(DType::F32).unwrap();
        let run = |device: Device| {
            let leaves: Vec<Tensor> = [&x, &gamma, &beta, &tau]
                .iter()
                .map(|t| t.to_device(device).unwrap().detach().requires_grad_(true))
                .collect();
            let z = frn(&leaves[0], &leaves[1], &leaves[2], &leaves[3], FRN_EPS).unwrap();
            z.mul(&w.to_device(device).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
            let mut out = vec![z.to_vec_f64().unwrap()];
            out.extend(leaves.iter().map(|l| l.grad().unwrap().to_vec_f64().unwrap()));
            out
        };
        let (cpu, emu) = (run(Device::Cpu), run(Device::Emu));
        for (what, (a, b)) in ["z", "dx", "dgamma", "dbeta", "dtau"].iter().zip(cpu.iter().zip(&emu)) {
            let scale = a.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
            let err = a.iter().zip(b).fold(0f64, |m, (p, q)| m.max((p - q).abs()));
            assert!(err <= 1e-5 * scale, "{what}: {err:e} vs scale {scale:e}");
        }
    }

    #[test]
    fn bad_shapes_are_clear_errors() {
        let q = Tensor::ones([3], DType::F32, Device::Cpu).unwrap();
        let x = Tensor::ones([1, 2, 2, 2], DType::F32, Device::Cpu).unwrap();
        assert!(frn(&x, &q, &q, &q, FRN_EPS).unwrap_err().to_string().contains("gamma must be [2]"));
    }

    /// Plugged into ResNetV2 without touching the model: names, counts, a state-dict round trip.
    #[test]
    fn plugs_into_resnetv2() {
        let cfg = ResNetV2Config {
            norm: NormKind::Custom(Arc::new(Frn::default())),
            ..ResNetV2Config::named("resnetv2_tiny_bit", 2).unwrap()
        };
        let model = ResNetV2::new(&cfg, 1).unwrap();
        let sd = model.state_dict();
        assert!(sd.contains("stages.0.blocks.0.norm1.tau") && sd.contains("norm.tau"));
        assert_eq!(model.num_parameters(), cfg.param_count());
        let mut other = ResNetV2::new(&cfg, 2).unwrap();
        other.load_state_dict(&sd, true).unwrap();
        let x = Tensor::randn([2, 3, 16, 16], 0.0, 1.0, DType::F32, Device::Cpu, &mut Rng::new(3)).unwrap();
        assert_eq!(
            model.forward(&x).unwrap().to_vec::<f32>().unwrap(),
            other.forward(&x).unwrap().to_vec::<f32>().unwrap()
        );
    }
}
