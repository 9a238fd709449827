//! The CPU emulator: runs the CUDA C kernels of [`crate::SOURCES`] on the CPU.
//!
//! `build.rs` compiles each `.cu` as C++ against `kernels/emu/cuda_emu.h`, which defines the CUDA
//! built-ins; the C++ runtime (`kernels/emu/runtime.cpp` and friends) runs each block's threads
//! as cooperative fibers, blocks spread over rayon's threads. Besides running kernels it checks
//! them (see [`Modes`]):
//! - always: a `__syncthreads()` not reached by every thread of the block at the same call site,
//!   or a warp op naming an exited lane, is an [`EmuError::Deadlock`]/[`EmuError::WarpSync`]
//!   instead of a hang; so is a tensor-core instruction (mma.sync, ldmatrix) that not all 32
//!   lanes of a warp execute together, and an ldmatrix read of cp.async data before its
//!   `wait_group` and a `__syncthreads()` is an [`EmuError::AsyncCopy`] (`kernels/emu/tensor.cpp`);
//! - `shuffle`: threads resume in a seeded random order between barriers (exposes missing ones),
//!   and cp.async copies land at random points before their wait instead of at it;
//! - `guard`: [`alloc`] places each buffer's end at an inaccessible page, so an overrun is an
//!   [`EmuError::OutOfBounds`] naming kernel, block and thread.

mod buffer;
mod error;
mod ffi;
mod launch;
mod modes;

pub use buffer::{alloc, Buffer};
pub use error::EmuError;
pub use launch::{kernel_names, launch, param_layout};
pub use modes::Modes;
