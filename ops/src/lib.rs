//! bitgrad-ops: the neural-network ops of a BiT ResNet, one folder per op (mod.rs with the API
//! and backward, cpu.rs, gpu.rs, tests.rs), each plugging into the engine's autograd through
//! [`bitgrad_engine::BackwardOp`].
//!
//! The ops arrive with the CPU-ops issue; the engine already provides everything they build on.

pub use bitgrad_engine as engine;
