//! bitgrad-models: the BiT ResNet-v2 family on bitgrad — nn building blocks, the models, weight
//! I/O (timm safetensors, original .npz), the optimizer, the HyperRule schedule, data and the
//! training loop.

pub mod bit;
pub mod data;
pub mod dist;
mod error;
mod font;
pub mod hub;
pub mod io;
pub mod labels;
pub mod nn;
mod precision;
pub mod schedule;
pub mod study;
pub mod train;

pub use bit::{Activations, ResNetV2, ResNetV2Config};
pub use bitgrad_ops as ops;
pub use error::{Error, Result, ShapeProblem};
pub use io::{load_weights, save_weights, LoadOptions, StateDict};
pub use nn::{norm_spec, parse_norm, HeadInit, Module, NormKind, NORM_SPECS};
pub use precision::Precision;
