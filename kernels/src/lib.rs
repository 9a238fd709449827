//! bitgrad-kernels: every CUDA C source of bitgrad, exposed as strings for NVRTC, and (from the
//! GPU-runtime issue on) the emulator that runs the same sources on the CPU.
//!
//! The crate holds no kernels yet: the engine runs on its CPU backend only. See
//! docs/architecture.md for where the kernels will land.

/// A CUDA C source file shipped with bitgrad.
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// File name under `kernels/src/`, e.g. `"elementwise.cu"`.
    pub name: &'static str,
    /// The source text.
    pub source: &'static str,
}

/// Every kernel source this build ships (empty until the GPU runtime lands).
pub const SOURCES: &[KernelSource] = &[];
