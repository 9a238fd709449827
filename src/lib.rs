//! bitgrad: a from-scratch tensor engine with a small autograd and hand-written CUDA kernels, on
//! which the Big Transfer (BiT) ResNet-v2 models are defined.
//!
//! This facade re-exports the crates: [`engine`] (tensors, autograd, CPU backend), [`kernels`],
//! [`ops`] and [`models`]. The most used types are at the top level.

pub use bitgrad_engine as engine;
pub use bitgrad_kernels as kernels;
pub use bitgrad_models as models;
pub use bitgrad_ops as ops;

pub use bitgrad_engine::{no_grad, DType, Device, Error, Result, Rng, Shape, Tensor};
