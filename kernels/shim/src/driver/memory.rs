//! Device memory: allocations in the emulator's guarded buffers (an access past the end, or
//! after a free, faults), copies and memsets checked against live allocations, queued on the
//! stream in order.

use bitgrad_kernels::emu;

use super::context::sync_current;
use crate::ffi::*;
use crate::state::{api, driver, put, Alloc};

/// Allocation granularity: `cuMemAlloc` returns 256-byte aligned memory, which callers rely on.
const GRANULE: usize = 256;

/// # Safety
/// `dptr` must be valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytes: usize) -> CUresult {
    api("cuMemAlloc_v2", CUDA_ERROR_UNKNOWN, || {
        let mut d = driver();
        let ctx = d.current("cuMemAlloc_v2")?;
        if bytes == 0 {
            return Err(Fail::new(CUDA_ERROR_INVALID_VALUE, "cuMemAlloc of 0 bytes"));
        }
        let device = d.contexts[&ctx].device;
        let footprint = bytes
            .checked_next_multiple_of(GRANULE)
            .ok_or_else(|| Fail::new(CUDA_ERROR_OUT_OF_MEMORY, "size overflow"))?;
        if d.used[device] + footprint as u64 > d.cfg.mem_bytes {
            return Err(Fail::new(
                CUDA_ERROR_OUT_OF_MEMORY,
                format!(
                    "{bytes} bytes requested, {} of {} MiB free (BITGRAD_SHIM_MEM_MB)",
                    (d.cfg.mem_bytes - d.used[device]) >> 20,
                    d.cfg.mem_bytes >> 20
                ),
            ));
        }
        // The buffer ends at a guard page; a size rounded to 256 bytes keeps its start aligned.
        let buf = emu::alloc(footprint, true).map_err(|e| Fail::new(CUDA_ERROR_OUT_OF_MEMORY, e.to_string()))?;
        let base = buf.as_ptr() as u64;
        d.used[device] += footprint as u64;
        d.allocs.insert(base, Alloc { ctx, device, len: bytes, footprint, buf });
        // SAFETY: the caller's out-pointer.
        unsafe { put(dptr, base) }
    })
}

/// Waits for the context's work (as the driver's free synchronizes), then frees.
#[no_mangle]
pub extern "C" fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult {
    api("cuMemFree_v2", CUDA_ERROR_UNKNOWN, || {
        {
            let d = driver();
            let ctx = d.current("cuMemFree_v2")?;
            match d.allocs.get(&dptr) {
                Some(a) if a.ctx == ctx => {}
                Some(_) => {
                    return Err(Fail::new(CUDA_ERROR_INVALID_VALUE, format!("{dptr:#x} belongs to another context")))
                }
                None => {
                    return Err(Fail::new(
                        CUDA_ERROR_INVALID_VALUE,
                        format!(
                            "{dptr:#x} is not the start of a live allocation (freed twice, or an interior pointer)"
                        ),
                    ))
                }
            }
        }
        sync_current("cuMemFree_v2")?;
        driver().release(dptr);
        Ok(())
    })
}

/// # Safety
/// Both pointers must be valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    api("cuMemGetInfo_v2", CUDA_ERROR_UNKNOWN, || {
        let d = driver();
        let ctx = d.current("cuMemGetInfo_v2")?;
        let dev = d.contexts[&ctx].device;
        // SAFETY: the caller's out-pointers.
        unsafe {
            put(free, (d.cfg.mem_bytes - d.used[dev]) as usize)?;
            put(total, d.cfg.mem_bytes as usize)
        }
    })
}

/// Host memory given to an async copy, as an address the worker may use later.
#[derive(Clone, Copy)]
struct HostPtr(usize);

/// # Safety
/// `src` must be valid for `bytes` bytes.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2(
    dst: CUdeviceptr,
    src: *const u8,
    bytes: usize,
    stream: Handle,
) -> CUresult {
    api("cuMemcpyHtoDAsync_v2", CUDA_ERROR_UNKNOWN, || {
        let d = driver();
        let ctx = d.current("cuMemcpyHtoDAsync_v2")?;
        let s = d.stream(ctx, stream, "cuMemcpyHtoDAsync_v2")?;
        let to = d.range(ctx, dst, bytes, "cuMemcpyHtoDAsync_v2 destination")?;
        if bytes > 0 && src.is_null() {
            return Err(Fail::new(CUDA_ERROR_INVALID_VALUE, "null host source"));
        }
        // Pageable host memory is staged before the call returns: the caller may reuse it.
        // SAFETY: the caller's source holds `bytes` bytes.
        let staged = unsafe { std::slice::from_raw_parts(src, bytes) }.to_vec();
        s.enqueue(Box::new(move || {
            // SAFETY: the range was checked; memory is freed only after its stream drained.
            unsafe { std::ptr::copy_nonoverlapping(staged.as_ptr(), to as *mut u8, staged.len()) };
            Ok(())
        }));
        Ok(())
    })
}

/// Queued like the others: the host buffer is written when the stream gets there, so reading
/// it before a synchronize sees what was there before — as on a GPU.
///
/// # Safety
/// `dst` must be valid for `bytes` bytes until the stream has run the copy.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoHAsync_v2(
    dst: *mut u8,
    src: CUdeviceptr,
    bytes: usize,
    stream: Handle,
) -> CUresult {
    api("cuMemcpyDtoHAsync_v2", CUDA_ERROR_UNKNOWN, || {
        let d = driver();
        let ctx = d.current("cuMemcpyDtoHAsync_v2")?;
        let s = d.stream(ctx, stream, "cuMemcpyDtoHAsync_v2")?;
        let from = d.range(ctx, src, bytes, "cuMemcpyDtoHAsync_v2 source")?;
        if bytes > 0 && dst.is_null() {
            return Err(Fail::new(CUDA_ERROR_INVALID_VALUE, "null host destination"));
        }
        let to = HostPtr(dst as usize);
        s.enqueue(Box::new(move || {
            let to = to;
            // SAFETY: checked source; the caller keeps `dst` alive until it synchronizes.
            unsafe { std::ptr::copy_nonoverlapping(from as *const u8, to.0 as *mut u8, bytes) };
            Ok(())
        }));
        Ok(())
    })
}

/// # Safety
/// Plain value arguments only.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoDAsync_v2(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    bytes: usize,
    stream: Handle,
) -> CUresult {
    api("cuMemcpyDtoDAsync_v2", CUDA_ERROR_UNKNOWN, || {
        let d = driver();
        let ctx = d.current("cuMemcpyDtoDAsync_v2")?;
        let s = d.stream(ctx, stream, "cuMemcpyDtoDAsync_v2")?;
        let from = d.range(ctx, src, bytes, "cuMemcpyDtoDAsync_v2 source")?;
        let to = d.range(ctx, dst, bytes, "cuMemcpyDtoDAsync_v2 destination")?;
        s.enqueue(Box::new(move || {
            // SAFETY: both ranges were checked; they may overlap.
            unsafe { std::ptr::copy(from as *const u8, to as *mut u8, bytes) };
            Ok(())
        }));
        Ok(())
    })
}

/// # Safety
/// Plain value arguments only.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8Async(dst: CUdeviceptr, value: u8, n: usize, stream: Handle) -> CUresult {
    api("cuMemsetD8Async", CUDA_ERROR_UNKNOWN, || {
        let d = driver();
        let ctx = d.current("cuMemsetD8Async")?;
        let s = d.stream(ctx, stream, "cuMemsetD8Async")?;
        let to = d.range(ctx, dst, n, "cuMemsetD8Async destination")?;
        s.enqueue(Box::new(move || {
            // SAFETY: the range was checked.
            unsafe { std::ptr::write_bytes(to as *mut u8, value, n) };
            Ok(())
        }));
        Ok(())
    })
}

/// The synchronous copies are the async ones on the NULL stream, then a wait for the context's
/// work (the legacy default stream orders against every other stream), so the copy is done
/// before they return. `queued` is the async call's status.
fn then_sync(name: &str, queued: CUresult) -> CUresult {
    if queued != CUDA_SUCCESS {
        return queued;
    }
    api(name, CUDA_ERROR_UNKNOWN, || sync_current(name))
}

/// The synchronous host-to-device copy.
///
/// # Safety
/// `src` must be valid for `bytes` bytes.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(dst: CUdeviceptr, src: *const u8, bytes: usize) -> CUresult {
    // SAFETY: forwarded contract; the synchronize completes the copy before returning.
    then_sync("cuMemcpyHtoD_v2", unsafe { cuMemcpyHtoDAsync_v2(dst, src, bytes, std::ptr::null_mut()) })
}

/// # Safety
/// `dst` must be valid for `bytes` bytes.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(dst: *mut u8, src: CUdeviceptr, bytes: usize) -> CUresult {
    // SAFETY: forwarded contract; the synchronize completes the copy before returning.
    then_sync("cuMemcpyDtoH_v2", unsafe { cuMemcpyDtoHAsync_v2(dst, src, bytes, std::ptr::null_mut()) })
}

/// # Safety
/// Plain value arguments only.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoD_v2(dst: CUdeviceptr, src: CUdeviceptr, bytes: usize) -> CUresult {
    // SAFETY: value arguments.
    then_sync("cuMemcpyDtoD_v2", unsafe { cuMemcpyDtoDAsync_v2(dst, src, bytes, std::ptr::null_mut()) })
}

/// # Safety
/// Plain value arguments only.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8_v2(dst: CUdeviceptr, value: u8, n: usize) -> CUresult {
    // SAFETY: value arguments.
    then_sync("cuMemsetD8_v2", unsafe { cuMemsetD8Async(dst, value, n, std::ptr::null_mut()) })
}
