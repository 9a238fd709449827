//! Everything a launch or an allocation can report instead of crashing or hanging.

use std::fmt;

/// An emulator error. Messages name the kernel, and the block and thread where known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmuError {
    /// No kernel of that name was compiled into this build.
    UnknownKernel(String),
    /// A launch configuration CUDA would reject; `limit` says which rule it breaks.
    BadConfig { kernel: String, limit: String },
    /// The number of arguments differs from the kernel's parameter count.
    ArgCount { kernel: String, expected: usize, got: usize },
    /// Argument `index` has `got` bytes, its parameter type has `expected`.
    ArgSize { kernel: String, index: usize, expected: usize, got: usize },
    /// Nothing in the block can run: a barrier not reached by every thread at the same call
    /// site, or a warp op waiting for lanes that never come. `detail` names barrier file:line and
    /// how many threads arrived.
    Deadlock { kernel: String, block: [u32; 3], detail: String },
    /// A warp op misused: its mask names an exited or missing lane, lanes disagree, bad width.
    WarpSync { kernel: String, block: [u32; 3], thread: Option<[u32; 3]>, detail: String },
    /// cp.async misused: a bad size or address, or data read (by ldmatrix) before the copy was
    /// waited for and published by a `__syncthreads()` (kernels/emu/tensor.cpp).
    AsyncCopy { kernel: String, block: [u32; 3], thread: Option<[u32; 3]>, detail: String },
    /// An access just past the end of a guarded buffer ([`super::Modes::guard`]).
    OutOfBounds {
        kernel: String,
        block: [u32; 3],
        thread: Option<[u32; 3]>,
        addr: usize,
        write: Option<bool>,
        /// How far past the end the access starts (0: the first byte after the buffer).
        past_end: usize,
        buffer_len: usize,
    },
    /// Any other memory fault, or a fiber stack overflow (`detail` says which).
    Fault {
        kernel: String,
        block: [u32; 3],
        thread: Option<[u32; 3]>,
        addr: usize,
        write: Option<bool>,
        detail: String,
    },
    /// The emulator could not get memory (buffers, fiber stacks, shared memory).
    Alloc { bytes: usize, detail: String },
}

struct Where<'a>(&'a [u32; 3], &'a Option<[u32; 3]>);

impl fmt::Display for Where<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [x, y, z] = self.0;
        write!(f, "block ({x},{y},{z})")?;
        if let Some([x, y, z]) = self.1 {
            write!(f, " thread ({x},{y},{z})")?;
        }
        Ok(())
    }
}

fn access(write: &Option<bool>) -> &'static str {
    match write {
        Some(true) => "write",
        Some(false) => "read",
        None => "access",
    }
}

impl fmt::Display for EmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmuError::UnknownKernel(k) => write!(f, "unknown kernel `{k}` (not in this build's kernel sources)"),
            EmuError::BadConfig { kernel, limit } => write!(f, "invalid launch of `{kernel}`: {limit}"),
            EmuError::ArgCount { kernel, expected, got } => {
                write!(f, "kernel `{kernel}` takes {expected} arguments, got {got}")
            }
            EmuError::ArgSize { kernel, index, expected, got } => {
                write!(f, "argument {index} of kernel `{kernel}` must be {expected} bytes, got {got}")
            }
            EmuError::Deadlock { kernel, block, detail } => {
                write!(f, "deadlock in kernel `{kernel}`, {}: {detail}", Where(block, &None))
            }
            EmuError::WarpSync { kernel, block, thread, detail } => {
                write!(f, "invalid warp operation in kernel `{kernel}`, {}: {detail}", Where(block, thread))
            }
            EmuError::AsyncCopy { kernel, block, thread, detail } => {
                write!(f, "invalid asynchronous copy in kernel `{kernel}`, {}: {detail}", Where(block, thread))
            }
            EmuError::OutOfBounds { kernel, block, thread, addr, write, past_end, buffer_len } => write!(
                f,
                "out-of-bounds {} in kernel `{kernel}`, {}: address {addr:#x} is {past_end} bytes past the end of a \
                 {buffer_len}-byte buffer",
                access(write),
                Where(block, thread)
            ),
            EmuError::Fault { kernel, block, thread, addr, write, detail } => write!(
                f,
                "memory fault ({} of {addr:#x}) in kernel `{kernel}`, {}: {detail}",
                access(write),
                Where(block, thread)
            ),
            EmuError::Alloc { bytes, detail } => write!(f, "emulator allocation of {bytes} bytes failed: {detail}"),
        }
    }
}

impl std::error::Error for EmuError {}
