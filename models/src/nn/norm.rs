//! Pluggable normalization. Every norm in the pre-activation ResNet is followed by a ReLU, so a
//! layer here is "norm + ReLU" (timm's `GroupNormAct`, `BatchNormAct2d`).
//!
//! The model never names a concrete layer: it asks the config's [`NormKind`] to build one per
//! normalized width. Built in: GroupNorm (BiT's default, 32 groups), BatchNorm (running stats,
//! train/eval), LayerNorm over (C, H, W) = GroupNorm with one group, InstanceNorm = GroupNorm
//! with one group per channel (so the group count follows each layer's width), and none (ReLU
//! only). Textual choices (`gn_ws`, `bn`, `in`, …) are parsed by [`super::parse_norm`].
//! Another norm (Filter Response Normalization in `examples/custom_norm/`, say) is a type implementing [`NormLayer`] plus a
//! [`NormFactory`] that builds it, plugged in as `NormKind::Custom(Arc::new(factory))` — or, for
//! a built-in, one more enum variant — without touching the model code.

use std::fmt;
use std::sync::Arc;

use bitgrad_engine::Tensor;
use bitgrad_ops::batch_norm::{batch_norm, RunningStats, BN_EPS, BN_MOMENTUM};
use bitgrad_ops::group_norm::{group_norm, Activation, BIT_GROUPS, GN_EPS};
use bitgrad_ops::group_norm_conv2d::GroupNormArgs;

use crate::error::{Error, Result};
use crate::nn::init::{Fill, Init};
use crate::nn::module::{join, Module, ParamKind};

/// A normalization layer followed by a ReLU, on `[N, C, H, W]`.
pub trait NormLayer: Module + Send + Sync {
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
    /// This layer as a group norm's arguments, when it is one (a convolution that follows can
    /// then apply it as it reads its input: `bitgrad_ops::group_norm_conv2d`).
    fn as_group_norm(&self) -> Option<GroupNormArgs<'_>> {
        None
    }
}

/// Builds the norm layers of a model: one per normalized width, under timm-style names.
pub trait NormFactory: Send + Sync {
    /// A short name for messages and metadata (e.g. `instance_norm`).
    fn name(&self) -> String;
    /// Whether a layer over `channels` channels can be built (e.g. divisibility by groups).
    fn check(&self, channels: usize) -> Result<()>;
    /// Trainable scalars of one layer over `channels` channels (buffers not counted).
    fn param_count(&self, channels: usize) -> usize;
    /// The layer whose tensors are `prefix.<name>` (e.g. `prefix.weight`).
    fn build(&self, init: &mut Init, prefix: &str, channels: usize) -> Result<Box<dyn NormLayer>>;
}

/// The normalization of a model.
#[derive(Clone)]
pub enum NormKind {
    /// GroupNorm with affine γ, β (`weight`, `bias`): BiT uses 32 groups, ε 1e-5.
    Group { groups: usize, eps: f64 },
    /// BatchNorm with affine and running statistics (`weight`, `bias`, `running_mean`,
    /// `running_var`; PyTorch's `num_batches_tracked` is not kept). Batch statistics in train
    /// mode, running ones in eval mode.
    Batch { momentum: f64, eps: f64 },
    /// LayerNorm over (C, H, W) with per-channel affine: GroupNorm with one group.
    Layer { eps: f64 },
    /// InstanceNorm with per-channel affine: GroupNorm with C groups, C being each layer's own
    /// width (so it has no group count of its own).
    Instance { eps: f64 },
    /// No normalization and no tensors: the ReLU alone.
    None,
    /// Any other norm.
    Custom(Arc<dyn NormFactory>),
}

impl NormKind {
    /// BiT's GroupNorm: 32 groups, ε 1e-5.
    pub fn bit_group_norm() -> Self {
        NormKind::Group { groups: BIT_GROUPS, eps: GN_EPS }
    }
    /// GroupNorm with `groups` groups and ε 1e-5.
    pub fn group(groups: usize) -> Self {
        NormKind::Group { groups, eps: GN_EPS }
    }
    /// BatchNorm with PyTorch's momentum 0.1 and ε 1e-5.
    pub fn batch() -> Self {
        NormKind::Batch { momentum: BN_MOMENTUM, eps: BN_EPS }
    }
    pub fn layer() -> Self {
        NormKind::Layer { eps: GN_EPS }
    }
    /// InstanceNorm with ε 1e-5 (PyTorch's `InstanceNorm2d` default).
    pub fn instance() -> Self {
        NormKind::Instance { eps: GN_EPS }
    }

    /// `group_norm`, `batch_norm`, `layer_norm`, `instance_norm`, `none`, or the custom
    /// factory's name (also the `bitgrad.norm` metadata value).
    pub fn name(&self) -> String {
        match self {
            NormKind::Group { .. } => "group_norm".into(),
            NormKind::Batch { .. } => "batch_norm".into(),
            NormKind::Layer { .. } => "layer_norm".into(),
            NormKind::Instance { .. } => "instance_norm".into(),
            NormKind::None => "none".into(),
            NormKind::Custom(f) => f.name(),
        }
    }

    pub fn check(&self, channels: usize) -> Result<()> {
        match self {
            NormKind::Group { groups, .. } if *groups == 0 || !channels.is_multiple_of(*groups) => {
                Err(Error::Config(format!(
                    "GroupNorm with {groups} groups cannot normalize {channels} channels (not divisible); \
                 choose fewer groups or other widths"
                )))
            }
            NormKind::Custom(f) => f.check(channels),
            _ => Ok(()),
        }
    }

    pub fn param_count(&self, channels: usize) -> usize {
        match self {
            NormKind::Group { .. } | NormKind::Batch { .. } | NormKind::Layer { .. } | NormKind::Instance { .. } => {
                2 * channels
            }
            NormKind::None => 0,
            NormKind::Custom(f) => f.param_count(channels),
        }
    }

    pub fn build(&self, init: &mut Init, prefix: &str, channels: usize) -> Result<Box<dyn NormLayer>> {
        self.check(channels)?;
        Ok(match self {
            NormKind::Group { groups, eps } => Box::new(GroupNormAct::new(init, prefix, channels, *groups, *eps)?),
            NormKind::Layer { eps } => Box::new(GroupNormAct::new(init, prefix, channels, 1, *eps)?),
            NormKind::Instance { eps } => Box::new(GroupNormAct::new(init, prefix, channels, channels, *eps)?),
            NormKind::Batch { momentum, eps } => Box::new(BatchNormAct::new(init, prefix, channels, *momentum, *eps)?),
            NormKind::None => Box::new(ReluOnly),
            NormKind::Custom(f) => f.build(init, prefix, channels)?,
        })
    }
}

impl fmt::Debug for NormKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NormKind::Group { groups, eps } => write!(f, "GroupNorm(groups={groups}, eps={eps:e})"),
            NormKind::Batch { momentum, eps } => write!(f, "BatchNorm(momentum={momentum}, eps={eps:e})"),
            NormKind::Layer { eps } => write!(f, "LayerNorm(eps={eps:e})"),
            NormKind::Instance { eps } => write!(f, "InstanceNorm(eps={eps:e})"),
            NormKind::None => write!(f, "None"),
            NormKind::Custom(c) => write!(f, "Custom({})", c.name()),
        }
    }
}

/// Built-ins compare by value; custom factories by identity.
impl PartialEq for NormKind {
    fn eq(&self, other: &Self) -> bool {
        use NormKind::*;
        match (self, other) {
            (Group { groups: a, eps: e }, Group { groups: b, eps: f }) => a == b && e == f,
            (Batch { momentum: a, eps: e }, Batch { momentum: b, eps: f }) => a == b && e == f,
            (Layer { eps: e }, Layer { eps: f }) | (Instance { eps: e }, Instance { eps: f }) => e == f,
            (None, None) => true,
            (Custom(a), Custom(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// GroupNorm + ReLU (the ReLU fused into the op's kernel), tensors `weight` (γ) and `bias` (β).
pub struct GroupNormAct {
    pub weight: Tensor,
    pub bias: Tensor,
    pub groups: usize,
    pub eps: f64,
}

impl GroupNormAct {
    pub fn new(init: &mut Init, prefix: &str, channels: usize, groups: usize, eps: f64) -> Result<Self> {
        let weight = init.tensor(&join(prefix, "weight"), &[channels], Fill::Ones, ParamKind::Parameter)?;
        let bias = init.tensor(&join(prefix, "bias"), &[channels], Fill::Zeros, ParamKind::Parameter)?;
        Ok(GroupNormAct { weight, bias, groups, eps })
    }
}

impl NormLayer for GroupNormAct {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(group_norm(x, self.groups, Some(&self.weight), Some(&self.bias), self.eps, Activation::Relu)?)
    }
    fn as_group_norm(&self) -> Option<GroupNormArgs<'_>> {
        Some(GroupNormArgs {
            groups: self.groups,
            gamma: Some(&self.weight),
            beta: Some(&self.bias),
            eps: self.eps,
            act: Activation::Relu,
        })
    }
}

impl Module for GroupNormAct {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, ParamKind)) {
        f(&join(prefix, "weight"), &self.weight, ParamKind::Parameter);
        f(&join(prefix, "bias"), &self.bias, ParamKind::Parameter);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, ParamKind)) {
        f(&join(prefix, "weight"), &mut self.weight, ParamKind::Parameter);
        f(&join(prefix, "bias"), &mut self.bias, ParamKind::Parameter);
    }
    fn set_training(&mut self, _training: bool) {}
}

/// BatchNorm + ReLU with running statistics (PyTorch's names and update rule).
pub struct BatchNormAct {
    pub weight: Tensor,
    pub bias: Tensor,
    /// `[C]`, updated in place by training-mode forwards.
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub momentum: f64,
    pub eps: f64,
    pub training: bool,
}

impl BatchNormAct {
    pub fn new(init: &mut Init, prefix: &str, channels: usize, momentum: f64, eps: f64) -> Result<Self> {
        let c = [channels];
        Ok(BatchNormAct {
            weight: init.tensor(&join(prefix, "weight"), &c, Fill::Ones, ParamKind::Parameter)?,
            bias: init.tensor(&join(prefix, "bias"), &c, Fill::Zeros, ParamKind::Parameter)?,
            running_mean: init.tensor(&join(prefix, "running_mean"), &c, Fill::Zeros, ParamKind::Buffer)?,
            running_var: init.tensor(&join(prefix, "running_var"), &c, Fill::Ones, ParamKind::Buffer)?,
            momentum,
            eps,
            training: true,
        })
    }
}

impl NormLayer for BatchNormAct {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // RunningStats wraps handles on the same (contiguous) storage, so the op's in-place update
        // lands in `running_mean`/`running_var`.
        // bf16 activations (Precision::Bf16) are normalized in the parameters' f32 and
        // rounded back: batch norm has no bf16 kernel of its own.
        let dtype = x.dtype();
        let x = if dtype == self.weight.dtype() { x.clone() } else { x.to_dtype(self.weight.dtype())? };
        let stats = RunningStats::from_tensors(self.running_mean.clone(), self.running_var.clone())?;
        let y =
            batch_norm(&x, Some(&self.weight), Some(&self.bias), Some(&stats), self.training, self.momentum, self.eps)?;
        let y = y.relu()?;
        Ok(if y.dtype() == dtype { y } else { y.to_dtype(dtype)? })
    }
}

impl Module for BatchNormAct {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, ParamKind)) {
        f(&join(prefix, "weight"), &self.weight, ParamKind::Parameter);
        f(&join(prefix, "bias"), &self.bias, ParamKind::Parameter);
        f(&join(prefix, "running_mean"), &self.running_mean, ParamKind::Buffer);
        f(&join(prefix, "running_var"), &self.running_var, ParamKind::Buffer);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, ParamKind)) {
        f(&join(prefix, "weight"), &mut self.weight, ParamKind::Parameter);
        f(&join(prefix, "bias"), &mut self.bias, ParamKind::Parameter);
        f(&join(prefix, "running_mean"), &mut self.running_mean, ParamKind::Buffer);
        f(&join(prefix, "running_var"), &mut self.running_var, ParamKind::Buffer);
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}

/// No normalization: the ReLU of a norm + ReLU layer, with no tensors.
pub struct ReluOnly;

impl NormLayer for ReluOnly {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.relu()?)
    }
}

impl Module for ReluOnly {
    fn visit(&self, _prefix: &str, _f: &mut dyn FnMut(&str, &Tensor, ParamKind)) {}
    fn visit_mut(&mut self, _prefix: &str, _f: &mut dyn FnMut(&str, &mut Tensor, ParamKind)) {}
    fn set_training(&mut self, _training: bool) {}
}
