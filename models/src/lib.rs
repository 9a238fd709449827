//! bitgrad-models: the BiT ResNet-v2 family on bitgrad — nn building blocks, the models, weight
//! I/O (timm safetensors, original .npz), the optimizer, the HyperRule schedule, data and the
//! training loop.

pub mod data;
mod error;
pub mod io;
pub mod schedule;

pub use bitgrad_ops as ops;
pub use error::{Error, Result, ShapeProblem};
pub use io::StateDict;
