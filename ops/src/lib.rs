//! bitgrad-ops: the neural-network ops of a BiT ResNet on top of the engine.
//!
//! One folder per op: `mod.rs` (the public API, shape checks, the `BackwardOp` and its formulas,
//! docs), `cpu.rs` (the CPU kernels — the numerical reference and the twin of each GPU kernel),
//! `tests.rs` (gradient checks, invariants). `gpu.rs` joins each folder with the GPU runtime.
//!
//! Conventions shared by every op:
//! * free functions taking `&Tensor`s and a small params struct, returning `Result<Tensor>`;
//! * NCHW activations, OIHW weights, f32 (f64 accepted everywhere for gradient checks);
//!   4-d activations may also be channels-last (NHWC strides): the output keeps the input's
//!   format, converted at the op's boundary where a kernel reads NCHW (`format.rs`);
//! * the forward saves what backward needs inside its `BackwardOp` struct (never the output:
//!   backward receives it), and backward is one fused pass where speed matters;
//! * bad shapes, dtypes and devices are `Error`s that name the shapes, never panics.

pub mod batch_norm;
pub mod bf16_gemm;
pub mod conv2d;
pub mod dropout;
pub(crate) mod format;
#[cfg(test)]
mod format_tests;
pub mod fusion;
pub mod group_norm;
pub mod group_norm_conv2d;
pub mod linear;
pub mod pad;
pub mod pool;
pub mod sgd;
pub mod softmax_xent;
pub mod std_conv2d;
#[cfg(test)]
pub(crate) mod testing;
pub mod weight_std;

pub use bitgrad_engine as engine;
