//! The `Emu` device: the `.cu` kernels compiled as C++ and run on the CPU by the emulator in
//! `bitgrad-kernels` (cooperative fibers per block, blocks across OS threads), device memory in
//! host mappings, GEMM by the CPU with cuBLAS's semantics ([`super::gemm`]).
//!
//! The emulator's checks are on by default: the order in which threads run between barriers is
//! shuffled (missing `__syncthreads` show up as wrong results), every buffer ends at a guard page
//! (an out-of-bounds access is an error naming the kernel), and a barrier not reached by every
//! thread is an error, not a hang. `BITGRAD_EMU=fast` turns the first two off (see
//! `bitgrad_kernels::emu::Modes::from_env`). Host-side copies and GEMM operands are checked
//! against the live buffers too, so a wrong pointer or leading dimension in launch code is an
//! error rather than a stray write.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bitgrad_kernels::emu::{self, Modes};

use super::alloc::CachingAllocator;
use super::{DevicePtr, GemmArgs, GpuRuntime, KernelArg, LaunchConfig};
use crate::{Device, Error, Result};

/// The emulator as a [`GpuRuntime`].
pub struct EmuRuntime {
    modes: Modes,
    allocator: CachingAllocator,
    /// Live buffers by base address.
    buffers: Mutex<BTreeMap<u64, emu::Buffer>>,
    /// Launch counter: each launch gets its own shuffle seed.
    launches: AtomicU64,
}

impl std::fmt::Debug for EmuRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmuRuntime").field("modes", &self.modes).finish_non_exhaustive()
    }
}

pub use super::launch_count;

/// The process-wide `Emu` device, with modes from the environment.
pub fn runtime() -> Result<Arc<dyn GpuRuntime>> {
    static RT: OnceLock<Arc<dyn GpuRuntime>> = OnceLock::new();
    Ok(RT.get_or_init(|| Arc::new(EmuRuntime::new(Modes::from_env()))).clone())
}

impl EmuRuntime {
    /// A separate emulator instance with explicit modes (tests run kernels under each mode).
    pub fn new(modes: Modes) -> Self {
        // Guarded buffers must end exactly at their guard page: no rounding, no cache.
        let allocator = if modes.guard { CachingAllocator::exact() } else { CachingAllocator::new() };
        EmuRuntime { modes, allocator, buffers: Mutex::default(), launches: AtomicU64::new(0) }
    }

    pub fn modes(&self) -> Modes {
        self.modes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, emu::Buffer>> {
        self.buffers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails unless `[ptr, ptr + bytes)` lies inside one live buffer.
    fn check_range(&self, what: &str, ptr: DevicePtr, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        let bufs = self.lock();
        match bufs.range(..=ptr.0).next_back() {
            Some((&base, b)) if ptr.0 + bytes as u64 <= base + b.len() as u64 => Ok(()),
            Some((&base, b)) if ptr.0 < base + b.len() as u64 => Err(self.err(format!(
                "{what}: {bytes} bytes at offset {} overrun a {}-byte buffer by {} bytes",
                ptr.0 - base,
                b.len(),
                ptr.0 + bytes as u64 - (base + b.len() as u64)
            ))),
            _ => Err(self.err(format!("{what}: address {:#x} is not in any live emulator buffer", ptr.0))),
        }
    }

    fn err(&self, msg: String) -> Error {
        Error::Gpu { device: Device::Emu, msg }
    }
}

impl GpuRuntime for EmuRuntime {
    fn device(&self) -> Device {
        Device::Emu
    }

    fn describe(&self) -> String {
        let on = |b: bool| if b { "on" } else { "off" };
        format!(
            "CUDA emulator on the CPU ({} kernels compiled in; shuffled thread order {}, guard pages {}, barrier checks on)",
            emu::kernel_names().len(),
            on(self.modes.shuffle),
            on(self.modes.guard)
        )
    }

    fn raw_alloc(&self, bytes: usize) -> Result<DevicePtr> {
        let b = emu::alloc(bytes, self.modes.guard).map_err(|e| self.err(format!("alloc of {bytes} bytes: {e}")))?;
        let p = b.as_ptr() as u64;
        self.lock().insert(p, b);
        Ok(DevicePtr(p))
    }

    unsafe fn raw_free(&self, ptr: DevicePtr, _bytes: usize) {
        self.lock().remove(&ptr.0);
    }

    fn allocator(&self) -> &CachingAllocator {
        &self.allocator
    }

    fn htod(&self, src: &[u8], dst: DevicePtr) -> Result<()> {
        self.check_range("htod", dst, src.len())?;
        // SAFETY: the range is inside a live buffer (checked above); host memory does not overlap it.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.0 as *mut u8, src.len()) };
        Ok(())
    }

    fn dtoh(&self, src: DevicePtr, dst: &mut [u8]) -> Result<()> {
        self.check_range("dtoh", src, dst.len())?;
        // SAFETY: as in htod.
        unsafe { std::ptr::copy_nonoverlapping(src.0 as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn dtod(&self, src: DevicePtr, dst: DevicePtr, bytes: usize) -> Result<()> {
        self.check_range("dtod source", src, bytes)?;
        self.check_range("dtod destination", dst, bytes)?;
        // SAFETY: both ranges are inside live buffers; `copy` allows overlap, as cuMemcpyDtoD does not promise.
        unsafe { std::ptr::copy(src.0 as *const u8, dst.0 as *mut u8, bytes) };
        Ok(())
    }

    fn memset(&self, dst: DevicePtr, value: u8, bytes: usize) -> Result<()> {
        self.check_range("memset", dst, bytes)?;
        // SAFETY: inside a live buffer.
        unsafe { std::ptr::write_bytes(dst.0 as *mut u8, value, bytes) };
        Ok(())
    }

    fn launch(&self, kernel: &str, cfg: &LaunchConfig, args: &[KernelArg]) -> Result<()> {
        let bytes: Vec<&[u8]> = args.iter().map(KernelArg::bytes).collect();
        let n = self.launches.fetch_add(1, Ordering::Relaxed);
        super::record_launch(kernel);
        let modes = Modes { seed: self.modes.seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)), ..self.modes };
        // SAFETY: pointer arguments come from this runtime's buffers (the launch code in
        // `prims` and the ops' gpu.rs only pass storage pointers); with guard pages on, a stray
        // access is caught and reported instead of corrupting memory.
        unsafe { emu::launch(kernel, cfg.grid, cfg.block, cfg.shared_bytes, &bytes, &modes) }
            .map_err(|e| Error::Kernel { device: Device::Emu, kernel: kernel.to_string(), msg: e.to_string() })
    }

    fn gemm(&self, g: &GemmArgs) -> Result<()> {
        super::gemm::validate(g)?;
        let [ea, eb, ec] = super::gemm::extents(g);
        self.check_range("gemm A", g.a, ea)?;
        self.check_range("gemm B", g.b, eb)?;
        self.check_range("gemm C", g.c, ec)?;
        // SAFETY: every operand's extent lies in a live buffer (checked above).
        unsafe { super::gemm::gemm_host(g) }
    }

    fn synchronize(&self) -> Result<()> {
        // Launches and copies complete before they return.
        Ok(())
    }
}
