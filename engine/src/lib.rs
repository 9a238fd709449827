//! bitgrad-engine: the `Tensor` type, views, a small reverse-mode autograd, and the CPU backend
//! that is the numerical reference for every op and GPU kernel in bitgrad.
//!
//! ```
//! use bitgrad_engine::{DType, Device, Tensor};
//! # fn main() -> bitgrad_engine::Result<()> {
//! let w = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3], Device::Cpu)?.requires_grad_(true);
//! let x = Tensor::from_vec(vec![0.5f32, -1.0, 2.0], [3], Device::Cpu)?;
//! let loss = w.mul(&x)?.sum_all()?;      // Σ wᵢxᵢ
//! loss.backward()?;                       // ∂loss/∂w = x
//! assert_eq!(w.grad().unwrap().to_vec::<f32>()?, vec![0.5, -1.0, 2.0]);
//! # Ok(()) }
//! ```

pub mod autograd;
pub mod cpu;
mod device;
mod dtype;
mod error;
pub mod gpu;
pub mod gradcheck;
pub mod info;
mod layout;
mod memory_format;
pub mod ops;
pub mod rng;
mod shape;
mod storage;
mod tensor;

pub use autograd::{no_grad, BackwardOp, GradStore};
pub use device::Device;
pub use dtype::{bf16_bits, DType, FloatElem, WithDType};
pub use error::{Error, Result};
pub use layout::Layout;
pub use memory_format::MemoryFormat;
pub use rng::Rng;
pub use shape::Shape;
pub use storage::{CpuElement, CpuStorage, GpuStorage, Storage};
pub use tensor::{Tensor, TensorId};
