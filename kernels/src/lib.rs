//! bitgrad-kernels: every CUDA C source of bitgrad, exposed as strings for NVRTC, and the CPU
//! emulator ([`emu`]) that runs the same sources, unmodified, without a GPU.
//!
//! The sources live in `kernels/cuda/*.cu` (shared headers `*.cuh`); `build.rs` finds their
//! `extern "C" __global__` entry points after preprocessing and compiles them as C++ for the
//! emulator. `kernels/cuda/broken/*.cu` are deliberately broken kernels for the emulator's tests.

pub mod emu;
pub mod gn_nhwc;
pub mod tc;
pub mod tc_conv;

/// A CUDA C source file shipped with bitgrad.
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// Path under `kernels/cuda/`, e.g. `"elementwise.cu"` (or `"broken/oob_write.cu"`).
    pub name: &'static str,
    /// The source text.
    pub source: &'static str,
    /// Its `extern "C" __global__` entry points, in source order.
    pub kernels: &'static [&'static str],
}

include!(concat!(env!("OUT_DIR"), "/sources.rs"));

/// The source defining `kernel`, searching [`SOURCES`] then [`TEST_SOURCES`].
pub fn find_source(kernel: &str) -> Option<&'static KernelSource> {
    SOURCES.iter().chain(TEST_SOURCES).find(|s| s.kernels.contains(&kernel))
}
