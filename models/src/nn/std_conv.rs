//! `StdConv2d`: a bias-free convolution whose raw OIHW weight is weight-standardized on every
//! forward (per output filter: zero mean, unit biased variance, ε inside the square root — timm
//! `StdConv2d` / BiT, bit-spec §2.1), so gradients flow through the standardization to the raw
//! weight, which is what is stored and trained. WS can be switched off (a plain conv).

use bitgrad_engine::Tensor;
use bitgrad_ops::conv2d::Conv2dParams;
use bitgrad_ops::group_norm::group_norm;
use bitgrad_ops::group_norm_conv2d::{group_norm_conv2d, GroupNormArgs};
use bitgrad_ops::std_conv2d::{std_conv2d, std_conv2d_add};
use bitgrad_ops::weight_std::weight_std;

use crate::error::Result;
use crate::nn::init::{Fill, Init};
use crate::nn::module::{join, Module, ParamKind};

pub struct StdConv2d {
    /// Raw weight `[out, in, k, k]`.
    pub weight: Tensor,
    pub params: Conv2dParams,
    /// `Some(ε)`: standardize with ε (1e-8 timm, 1e-10 BiT); `None`: a plain convolution.
    pub ws_eps: Option<f64>,
}

impl StdConv2d {
    /// A `k×k` conv `cin → cout` with `stride` and symmetric padding `(k − 1) / 2` (timm's
    /// default padding, BiT's "fixed" padding for odd k); weight kaiming-normal (fan out).
    pub fn new(
        init: &mut Init,
        prefix: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        ws_eps: Option<f64>,
    ) -> Result<Self> {
        let weight =
            init.tensor(&join(prefix, "weight"), &[cout, cin, k, k], Fill::KaimingFanOut, ParamKind::Parameter)?;
        Ok(StdConv2d { weight, params: Conv2dParams::new(stride, (k - 1) / 2), ws_eps })
    }

    /// The weight the convolution uses: standardized, or the raw one.
    pub fn effective_weight(&self) -> Result<Tensor> {
        Ok(match self.ws_eps {
            Some(eps) => weight_std(&self.weight, eps)?,
            None => self.weight.clone(),
        })
    }

    /// `conv2d(x, effective_weight())`. With bf16 activations and the f32 raw weight this is
    /// the mixed-precision convolution (`bitgrad_ops::std_conv2d`: tensor cores on a GPU, the
    /// weight's gradient in f32).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(std_conv2d(x, &self.weight, self.ws_eps, &self.params)?)
    }

    /// `forward(act(group_norm(x)))` with the group norm applied as the convolution reads its
    /// input (`bitgrad_ops::group_norm_conv2d`, the `gn-conv` fusion: bit for bit the same);
    /// with bf16 activations, the two ops.
    pub fn forward_after(&self, x: &Tensor, gn: GroupNormArgs<'_>) -> Result<Tensor> {
        if x.dtype() != self.weight.dtype() {
            let normalized = group_norm(x, gn.groups, gn.gamma, gn.beta, gn.eps, gn.act)?;
            return self.forward(&normalized);
        }
        Ok(group_norm_conv2d(x, gn, &self.effective_weight()?, &self.params)?)
    }

    /// `forward(x) + residual` with the residual as the convolution's initial accumulator (one
    /// node where the kernels take it: `bitgrad_ops::std_conv2d::std_conv2d_add`).
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        Ok(std_conv2d_add(x, &self.weight, self.ws_eps, &self.params, residual)?)
    }
}

impl Module for StdConv2d {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, ParamKind)) {
        f(&join(prefix, "weight"), &self.weight, ParamKind::Parameter);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, ParamKind)) {
        f(&join(prefix, "weight"), &mut self.weight, ParamKind::Parameter);
    }
    fn set_training(&mut self, _training: bool) {}
}
