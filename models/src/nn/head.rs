//! The classifier head: timm's `head.fc`, a 1×1 convolution with bias on the globally pooled
//! features (weight `(n_cls, C, 1, 1)`, bias `(n_cls,)`, not weight-standardized). On a 1×1 map
//! that is an affine layer, so it runs as `linear` on `[N, C]` with the weight seen as `[n, C]`.

use bitgrad_engine::Tensor;
use bitgrad_ops::linear::linear;

use crate::error::Result;
use crate::nn::init::{Fill, Init};
use crate::nn::module::{join, Module, ParamKind};

/// How a new head is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HeadInit {
    /// Weight and bias zero: BiT's choice for fine-tuning (bit-spec §1.6).
    Zero,
    /// Weight N(0, std²), bias zero: timm's `_init_weights` (std 0.01).
    Normal { std: f64 },
}

pub struct Head {
    /// `[n_cls, C, 1, 1]`.
    pub weight: Tensor,
    /// `[n_cls]`.
    pub bias: Tensor,
}

impl Head {
    /// `prefix` is the head module (`head`); the tensors are `prefix.fc.{weight,bias}`.
    pub fn new(init: &mut Init, prefix: &str, features: usize, classes: usize, how: HeadInit) -> Result<Self> {
        let fill = match how {
            HeadInit::Zero => Fill::Zeros,
            HeadInit::Normal { std } => Fill::Normal { std },
        };
        let fc = join(prefix, "fc");
        let weight = init.tensor(&join(&fc, "weight"), &[classes, features, 1, 1], fill, ParamKind::Parameter)?;
        let bias = init.tensor(&join(&fc, "bias"), &[classes], Fill::Zeros, ParamKind::Parameter)?;
        Ok(Head { weight, bias })
    }

    pub fn classes(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Logits `[N, n_cls]` of pooled features `[N, C]`.
    pub fn forward(&self, pooled: &Tensor) -> Result<Tensor> {
        let (n, c) = (self.weight.dims()[0], self.weight.dims()[1]);
        Ok(linear(pooled, &self.weight.reshape([n, c])?, Some(&self.bias))?)
    }
}

impl Module for Head {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, ParamKind)) {
        let fc = join(prefix, "fc");
        f(&join(&fc, "weight"), &self.weight, ParamKind::Parameter);
        f(&join(&fc, "bias"), &self.bias, ParamKind::Parameter);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, ParamKind)) {
        let fc = join(prefix, "fc");
        f(&join(&fc, "weight"), &mut self.weight, ParamKind::Parameter);
        f(&join(&fc, "bias"), &mut self.bias, ParamKind::Parameter);
    }
    fn set_training(&mut self, _training: bool) {}
}
