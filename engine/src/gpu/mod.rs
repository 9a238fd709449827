//! The GPU runtime: what the `Cuda` and `Emu` devices have in common.
//!
//! Everything above this trait — the engine's GPU primitives in [`prims`] and each op's `gpu.rs`
//! in the ops crate — computes grid, block, shared memory and kernel arguments once and calls
//! [`GpuRuntime::launch`]. Only memory and launch differ between the two implementations:
//!
//! - [`cuda`]: cudarc (dynamic loading), kernels compiled by NVRTC at first use for the device's
//!   architecture and cached in memory and on disk, cuBLAS for GEMM, one stream per device.
//! - [`emu`]: the same `.cu` sources compiled as C++ and run by the emulator of
//!   `bitgrad-kernels` on the CPU; GEMM by the CPU `gemm` crate with cuBLAS's exact semantics.
//!
//! Device memory is handed out by a caching allocator ([`alloc`]) and owned by [`GpuBuffer`],
//! which returns it to the cache when dropped.

pub mod alloc;
pub mod cuda;
pub mod emu;
pub mod gemm;
pub mod prims;

use std::sync::Arc;

use crate::{Device, Result};

/// An address in a device's memory. On `Emu` it is a host address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevicePtr(pub u64);

impl DevicePtr {
    /// The address `bytes` further on.
    pub fn byte_add(self, bytes: usize) -> DevicePtr {
        DevicePtr(self.0 + bytes as u64)
    }
}

/// Grid and block sizes and dynamic shared memory of one launch, as in `cuLaunchKernel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Bytes of dynamic shared memory (`DYNAMIC_SHARED` in the kernel).
    pub shared_bytes: u32,
}

impl LaunchConfig {
    /// A 1-D launch of `blocks` blocks of `threads` threads.
    pub fn linear(blocks: u32, threads: u32) -> Self {
        LaunchConfig { grid: [blocks.max(1), 1, 1], block: [threads, 1, 1], shared_bytes: 0 }
    }
    /// Enough 1-D blocks of `threads` threads to cover `n` items with one thread each (the grid
    /// is capped; kernels use grid-stride loops).
    pub fn for_elements(n: usize, threads: u32) -> Self {
        let blocks = n.div_ceil(threads as usize).clamp(1, MAX_GRID_BLOCKS as usize) as u32;
        Self::linear(blocks, threads)
    }
    pub fn with_shared(mut self, bytes: u32) -> Self {
        self.shared_bytes = bytes;
        self
    }
}

/// The largest 1-D grid the primitives launch; larger problems are covered by grid-stride loops.
pub const MAX_GRID_BLOCKS: u32 = 65_535;

/// One kernel argument, passed by value as `cuLaunchKernel` passes it.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelArg {
    Ptr(DevicePtr),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    F32(f32),
    F64(f64),
    /// A `#[repr(C)]` struct mirrored in a `.cuh` header, passed by value.
    Struct(Vec<u8>),
}

impl KernelArg {
    /// The argument's bytes, as the kernel sees them.
    pub fn bytes(&self) -> &[u8] {
        match self {
            KernelArg::Ptr(p) => bytemuck::bytes_of(&p.0),
            KernelArg::I32(v) => bytemuck::bytes_of(v),
            KernelArg::U32(v) => bytemuck::bytes_of(v),
            KernelArg::I64(v) => bytemuck::bytes_of(v),
            KernelArg::U64(v) => bytemuck::bytes_of(v),
            KernelArg::F32(v) => bytemuck::bytes_of(v),
            KernelArg::F64(v) => bytemuck::bytes_of(v),
            KernelArg::Struct(b) => b,
        }
    }
    /// A `#[repr(C)]` plain-old-data struct passed by value.
    pub fn pod<T: bytemuck::Pod>(v: &T) -> Self {
        KernelArg::Struct(bytemuck::bytes_of(v).to_vec())
    }
}

impl From<DevicePtr> for KernelArg {
    fn from(p: DevicePtr) -> Self {
        KernelArg::Ptr(p)
    }
}
impl From<i32> for KernelArg {
    fn from(v: i32) -> Self {
        KernelArg::I32(v)
    }
}
impl From<u32> for KernelArg {
    fn from(v: u32) -> Self {
        KernelArg::U32(v)
    }
}
impl From<i64> for KernelArg {
    fn from(v: i64) -> Self {
        KernelArg::I64(v)
    }
}
impl From<u64> for KernelArg {
    fn from(v: u64) -> Self {
        KernelArg::U64(v)
    }
}
impl From<f32> for KernelArg {
    fn from(v: f32) -> Self {
        KernelArg::F32(v)
    }
}
impl From<f64> for KernelArg {
    fn from(v: f64) -> Self {
        KernelArg::F64(v)
    }
}

/// Element types the runtime GEMM supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmDType {
    F32,
    F64,
}

/// Whether a GEMM operand is used as stored (`N`) or transposed (`T`), as in cuBLAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    N,
    T,
}

/// A (strided batched) GEMM with cuBLAS's column-major semantics:
/// `C[b] = alpha · op(A[b]) · op(B[b]) + beta · C[b]` for `b` in `0..batch`, where `op(A)` is
/// `m×k`, `op(B)` is `k×n`, `C` is `m×n`, every matrix column-major with leading dimension
/// `ld*` and batch stride `stride_*` (in elements). `beta = 0` ignores `C`'s old contents (NaNs
/// included), as cuBLAS does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GemmArgs {
    pub dtype: GemmDType,
    pub op_a: Op,
    pub op_b: Op,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f64,
    pub a: DevicePtr,
    pub lda: usize,
    pub stride_a: usize,
    pub b: DevicePtr,
    pub ldb: usize,
    pub stride_b: usize,
    pub beta: f64,
    pub c: DevicePtr,
    pub ldc: usize,
    pub stride_c: usize,
    pub batch: usize,
}

/// What a GPU device offers: memory, copies, kernel launches by name, GEMM, synchronization.
///
/// Implementations are thread-safe; work is ordered as submitted (one stream per device), and
/// host-visible results (`dtoh`) are complete when the call returns.
pub trait GpuRuntime: Send + Sync + std::fmt::Debug {
    /// The device this runtime drives.
    fn device(&self) -> Device;
    /// One line for `bitgrad info`: the GPU's name and capability, or the emulator's modes.
    fn describe(&self) -> String;
    /// The (major, minor) compute capability of a real GPU; `None` for the emulator, which is
    /// not a GPU model (the mixed-precision default reads this: bf16 from sm_80 on).
    fn compute_capability(&self) -> Option<(i32, i32)> {
        None
    }
    /// Raw device allocation of `bytes` (> 0) bytes, aligned to at least 256 bytes.
    /// Callers normally go through [`GpuRuntime::alloc`], which caches.
    fn raw_alloc(&self, bytes: usize) -> Result<DevicePtr>;
    /// Returns memory from [`GpuRuntime::raw_alloc`].
    ///
    /// # Safety
    /// `ptr` came from `raw_alloc(bytes)` on this runtime and is not used afterwards.
    unsafe fn raw_free(&self, ptr: DevicePtr, bytes: usize);
    /// The caching allocator in front of `raw_alloc`/`raw_free`.
    fn allocator(&self) -> &alloc::CachingAllocator;
    /// Copies host bytes to device memory.
    fn htod(&self, src: &[u8], dst: DevicePtr) -> Result<()>;
    /// Copies device bytes to the host; complete on return.
    fn dtoh(&self, src: DevicePtr, dst: &mut [u8]) -> Result<()>;
    /// Copies `bytes` bytes between device buffers.
    fn dtod(&self, src: DevicePtr, dst: DevicePtr, bytes: usize) -> Result<()>;
    /// Sets `bytes` bytes to `value`.
    fn memset(&self, dst: DevicePtr, value: u8, bytes: usize) -> Result<()>;
    /// Launches the `extern "C" __global__` kernel `kernel` (one of `bitgrad_kernels::SOURCES`).
    fn launch(&self, kernel: &str, cfg: &LaunchConfig, args: &[KernelArg]) -> Result<()>;
    /// A GEMM with cuBLAS semantics (see [`GemmArgs`]).
    fn gemm(&self, g: &GemmArgs) -> Result<()>;
    /// Waits until all submitted work is done.
    fn synchronize(&self) -> Result<()>;
}

impl dyn GpuRuntime {
    /// Allocates `bytes` bytes through the caching allocator. The buffer returns to the cache
    /// when the last handle is dropped.
    pub fn alloc(self: &Arc<Self>, bytes: usize) -> Result<GpuBuffer> {
        let ptr = self.allocator().alloc(self.as_ref(), bytes)?;
        Ok(GpuBuffer { ptr, bytes, rt: self.clone() })
    }
    /// Allocates and zero-fills.
    pub fn alloc_zeroed(self: &Arc<Self>, bytes: usize) -> Result<GpuBuffer> {
        let b = self.alloc(bytes)?;
        if bytes > 0 {
            self.memset(b.ptr, 0, bytes)?;
        }
        Ok(b)
    }
}

/// Device memory owned by one tensor storage. Zero-sized buffers hold no memory.
#[derive(Debug)]
pub struct GpuBuffer {
    ptr: DevicePtr,
    bytes: usize,
    rt: Arc<dyn GpuRuntime>,
}

impl GpuBuffer {
    pub fn ptr(&self) -> DevicePtr {
        self.ptr
    }
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    pub fn runtime(&self) -> &Arc<dyn GpuRuntime> {
        &self.rt
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        self.rt.allocator().free(self.rt.as_ref(), self.ptr, self.bytes);
    }
}

/// The runtime of a GPU device, created on first use and shared by every tensor on it.
/// `Device::Cpu` is not a GPU device and answers an error.
/// Launches per kernel name, over every GPU runtime of the process.
static LAUNCH_COUNTS: std::sync::Mutex<std::collections::BTreeMap<String, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

pub(crate) fn record_launch(kernel: &str) {
    let mut counts = LAUNCH_COUNTS.lock().unwrap_or_else(|e| e.into_inner());
    match counts.get_mut(kernel) {
        Some(c) => *c += 1,
        None => {
            counts.insert(kernel.to_string(), 1);
        }
    }
}

/// How many times this process has launched `kernel` on any GPU device (`Emu` or `Cuda`) so
/// far. For tests that check which kernel an op ran (e.g. that a half-precision input reached its
/// native kernel rather than an f32 one after a conversion): counts only grow, so a test running
/// beside others can compare a count before and after its own call.
pub fn launch_count(kernel: &str) -> u64 {
    LAUNCH_COUNTS.lock().unwrap_or_else(|e| e.into_inner()).get(kernel).copied().unwrap_or(0)
}

/// The GPU device that the device tests exercise: `BITGRAD_GPU_TEST_DEVICE` — `emu` (the
/// default) or `cuda`/`cuda:N` (a GPU, or the CUDA shim that `scripts/test.sh` runs them under).
/// One test body then covers `Emu` and `Cuda`. A requested CUDA device that cannot be opened
/// fails the test with the reason rather than quietly testing nothing.
pub fn test_device() -> Device {
    let spec = std::env::var("BITGRAD_GPU_TEST_DEVICE").unwrap_or_default();
    if spec.trim().is_empty() {
        return Device::Emu;
    }
    let device: Device =
        spec.trim().parse().unwrap_or_else(|e| panic!("BITGRAD_GPU_TEST_DEVICE={spec:?}: {e} (emu, cuda or cuda:N)"));
    assert!(device != Device::Cpu, "BITGRAD_GPU_TEST_DEVICE names a GPU device (emu, cuda or cuda:N), not cpu");
    if let Err(e) = runtime(device) {
        panic!("BITGRAD_GPU_TEST_DEVICE={spec}: {e}");
    }
    device
}

pub fn runtime(device: Device) -> Result<Arc<dyn GpuRuntime>> {
    match device {
        Device::Cpu => Err(crate::Error::invalid("gpu::runtime", "the CPU has no GPU runtime")),
        Device::Emu => emu::runtime(),
        Device::Cuda(i) => cuda::runtime(i),
    }
}
