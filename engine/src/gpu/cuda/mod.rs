//! The `Cuda(i)` device: the `.cu` kernels compiled by NVRTC for the GPU at first use (cached in
//! memory and on disk), cuBLAS for GEMM, one stream per device — all through cudarc with dynamic
//! loading, so nothing CUDA is needed to build and a machine without it gets an error, not a
//! crash.
//!
//! - [`libs`]: is each library loadable, and how to fix it if not; the NVRTC include folder.
//! - [`nvrtc`]: the one compile function (runtime and kernel build check); [`ptxas`] reads its
//!   `-v` report; [`cache`]: compiled kernels on disk.
//! - [`context`]: [`CudaRuntime`], the [`GpuRuntime`] of one device; [`kernels`]: modules and
//!   functions by kernel name; [`blas`]: GEMM.

pub mod blas;
pub mod cache;
mod context;
mod kernels;
pub mod libs;
pub mod nvrtc;
pub mod ptxas;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

pub use context::CudaRuntime;
use libs::Lib;

use crate::gpu::GpuRuntime;
use crate::{Device, Error, Result};

fn unavailable(i: usize, reason: impl Into<String>) -> Error {
    Error::DeviceUnavailable { device: Device::Cuda(i), reason: reason.into() }
}

/// How many GPUs the driver sees. Errors say why none can be counted (no driver library, driver
/// init failure — e.g. `CUDA_ERROR_NO_DEVICE` — or a panic inside cudarc's loader).
pub fn device_count() -> std::result::Result<usize, String> {
    if !Lib::Driver.present() {
        return Err(Lib::Driver.missing_reason());
    }
    // cudarc panics rather than erring when a symbol cannot be loaded (e.g. a driver older than
    // the bindings); that must not take the program down.
    let counted = catch_unwind(|| -> std::result::Result<i32, String> {
        cudarc::driver::result::init().map_err(|e| format!("the CUDA driver failed to initialise: {e}"))?;
        cudarc::driver::result::device::get_count().map_err(|e| format!("counting GPUs failed: {e}"))
    });
    match counted {
        Ok(Ok(n)) => Ok(n.max(0) as usize),
        Ok(Err(e)) if e.contains("NO_DEVICE") => Err("no GPU visible (CUDA_ERROR_NO_DEVICE; check nvidia-smi and \
                                                     CUDA_VISIBLE_DEVICES)"
            .into()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the CUDA driver library could not be used (cudarc panicked while loading it; is the driver \
                       older than CUDA 13.0?)"
            .into()),
    }
}

/// Why device `i` cannot be opened, or `None` when every library is there and it exists.
pub fn check(i: usize) -> Option<String> {
    let count = match device_count() {
        Ok(n) => n,
        Err(why) => return Some(why),
    };
    if i >= count {
        return Some(match count {
            0 => "no GPU visible (the driver sees 0 devices; check nvidia-smi and CUDA_VISIBLE_DEVICES)".into(),
            n => format!("there is no cuda:{i}: {n} GPU(s) visible (cuda:0..cuda:{})", n - 1),
        });
    }
    [Lib::Nvrtc, Lib::Cublas].into_iter().find(|l| !l.present()).map(Lib::missing_reason)
}

type Registry = Mutex<HashMap<usize, Arc<CudaRuntime>>>;

/// The runtime of `Cuda(i)`, created on first use and shared by every tensor on the device.
pub fn runtime(i: usize) -> Result<Arc<dyn GpuRuntime>> {
    static RUNTIMES: OnceLock<Registry> = OnceLock::new();
    let mut map = RUNTIMES.get_or_init(Registry::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = map.get(&i) {
        return Ok(rt.clone());
    }
    if let Some(why) = check(i) {
        return Err(unavailable(i, why));
    }
    let rt = catch_unwind(AssertUnwindSafe(|| CudaRuntime::new(i)))
        .map_err(|_| unavailable(i, "cudarc panicked while opening the device (a CUDA library is missing a symbol?)"))?
        .map_err(|e| unavailable(i, e.to_string()))?;
    let rt = Arc::new(rt);
    map.insert(i, rt.clone());
    Ok(rt)
}

/// The one-line CUDA status for `bitgrad info`: each visible GPU, or exactly why CUDA is unusable.
pub fn status() -> String {
    match device_count() {
        Err(why) => format!("unavailable: {why}"),
        Ok(0) => "unavailable: no GPU visible (the driver sees 0 devices)".into(),
        Ok(n) => {
            let lines: Vec<String> = (0..n)
                .map(|i| match runtime(i) {
                    Ok(rt) if is_shim(&rt.describe()) => format!(
                        "cuda:{i}: {} — the bitgrad CUDA shim (kernels run on the CPU emulator; test \
                         infrastructure, not a GPU)",
                        rt.describe()
                    ),
                    Ok(rt) => format!("cuda:{i}: {}", rt.describe()),
                    Err(e) => format!("cuda:{i}: {e}"),
                })
                .collect();
            lines.join("\n              ")
        }
    }
}

/// The device name the test shim (`kernels/shim`, a libcuda over the emulator) reports.
pub const SHIM_DEVICE_NAME: &str = "bitgrad emulated GPU";

/// Whether a runtime's description is the test shim's rather than a GPU's.
pub fn is_shim(describe: &str) -> bool {
    describe.starts_with(SHIM_DEVICE_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without the driver library (every build machine), opening a device is a
    /// clear error, never a panic.
    #[test]
    fn missing_driver_is_an_error_naming_the_library() {
        if Lib::Driver.present() {
            eprintln!("skipped: libcuda.so.1 is present on this machine");
            return;
        }
        let e = runtime(0).unwrap_err().to_string();
        assert!(e.contains("cuda:0") && e.contains("libcuda.so.1") && e.contains("LD_LIBRARY_PATH"), "{e}");
        assert!(runtime(3).is_err());
        assert!(status().starts_with("unavailable: no CUDA driver found"), "{}", status());
    }
}
