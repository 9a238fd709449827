//! `cuInit`, the driver version, and what the emulated devices report.

use std::ffi::c_char;

use crate::config::{self, DEVICE_NAME};
use crate::ffi::*;
use crate::state::{api, driver, put};

/// # Safety
/// Plain value arguments only.
#[no_mangle]
pub unsafe extern "C" fn cuInit(flags: u32) -> CUresult {
    api("cuInit", CUDA_ERROR_UNKNOWN, || {
        if flags != 0 {
            return Err(Fail::new(CUDA_ERROR_INVALID_VALUE, format!("flags must be 0, got {flags}")));
        }
        let mut d = driver();
        if d.cfg.devices == 0 {
            return Err(Fail::quiet(CUDA_ERROR_NO_DEVICE, "BITGRAD_SHIM_DEVICES=0"));
        }
        d.initialized = true;
        Ok(())
    })
}

/// # Safety
/// `v` must be valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuDriverGetVersion(v: *mut i32) -> CUresult {
    // SAFETY: the caller's out-pointer.
    api("cuDriverGetVersion", CUDA_ERROR_UNKNOWN, || unsafe { put(v, config::DRIVER_VERSION) })
}

/// # Safety
/// `count` must be valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut i32) -> CUresult {
    api("cuDeviceGetCount", CUDA_ERROR_UNKNOWN, || {
        let d = driver();
        d.check_init()?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(count, d.cfg.devices as i32) }
    })
}

/// # Safety
/// `device` must be valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGet(device: *mut CUdevice, ordinal: i32) -> CUresult {
    api("cuDeviceGet", CUDA_ERROR_UNKNOWN, || {
        let i = driver().device(ordinal)?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(device, i as CUdevice) }
    })
}

/// # Safety
/// `name` must be valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: i32, dev: CUdevice) -> CUresult {
    api("cuDeviceGetName", CUDA_ERROR_UNKNOWN, || {
        driver().device(dev)?;
        if name.is_null() || len <= 0 {
            return Err(Fail::new(CUDA_ERROR_INVALID_VALUE, "a null or empty name buffer"));
        }
        let bytes = DEVICE_NAME.as_bytes();
        let n = bytes.len().min(len as usize - 1);
        // SAFETY: the caller's buffer holds `len` bytes; n + 1 <= len.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), name.cast::<u8>(), n);
            *name.add(n) = 0;
        }
        Ok(())
    })
}

/// # Safety
/// `bytes` must be valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) -> CUresult {
    api("cuDeviceTotalMem_v2", CUDA_ERROR_UNKNOWN, || {
        let d = driver();
        d.device(dev)?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(bytes, d.cfg.mem_bytes as usize) }
    })
}

/// # Safety
/// `pi` must be valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetAttribute(pi: *mut i32, attrib: i32, dev: CUdevice) -> CUresult {
    api("cuDeviceGetAttribute", CUDA_ERROR_UNKNOWN, || {
        driver().device(dev)?;
        let v = config::attribute(attrib).ok_or_else(|| {
            Fail::quiet(CUDA_ERROR_INVALID_VALUE, format!("device attribute {attrib} is not modelled by the shim"))
        })?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(pi, v) }
    })
}

/// The driver's private interface tables, which NVIDIA's own libraries (libnvrtc here) look up
/// when a driver is loaded. Undocumented, so not emulated; NVRTC compiles without them.
///
/// # Safety
/// Plain arguments; nothing is written.
#[no_mangle]
pub unsafe extern "C" fn cuGetExportTable(_table: *mut *const u8, _id: *const u8) -> CUresult {
    CUDA_ERROR_NOT_SUPPORTED
}
