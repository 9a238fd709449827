//! nn building blocks: the [`Module`] trait (named parameters under timm's names, train/eval
//! mode, state dicts), the parameter factory [`Init`] (random init or a state dict), and the
//! layers BiT is made of — [`StdConv2d`], the pluggable normalization ([`NormKind`],
//! [`NormLayer`], [`NormFactory`]) and the classifier [`Head`].

mod head;
mod init;
mod module;
mod norm;
mod norm_spec;
mod std_conv;

pub use head::{Head, HeadInit};
pub use init::{Fill, Init};
pub use module::{join, Module, ParamKind};
pub use norm::{BatchNormAct, GroupNormAct, NormFactory, NormKind, NormLayer, ReluOnly};
pub use norm_spec::{norm_spec, parse_norm, NORM_SPECS};
pub use std_conv::StdConv2d;
