//! `cuLaunchKernel`: the launch is checked as the driver checks it — against the device's
//! limits and the image's facts about the kernel — then the arguments are copied (the caller's
//! may die right after) and the emulator's build of the kernel is queued on the stream.

use std::ffi::c_void;

use bitgrad_kernels::emu::{self, EmuError};

use super::module::function;
use crate::config::{self, MAX_THREADS};
use crate::ffi::*;
use crate::state::{api, driver};

/// # Safety
/// `params` must hold one valid pointer per kernel parameter, each to that parameter's bytes.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cuLaunchKernel(
    f: Handle,
    gx: u32,
    gy: u32,
    gz: u32,
    bx: u32,
    by: u32,
    bz: u32,
    shared: u32,
    stream: Handle,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    api("cuLaunchKernel", CUDA_ERROR_UNKNOWN, || {
        let d = driver();
        let ctx = d.current("cuLaunchKernel")?;
        let (id, entry) = function(&d, ctx, f, "cuLaunchKernel")?;
        let name = d.functions[&id].name.clone();
        let s = d.stream(ctx, stream, "cuLaunchKernel")?;
        let invalid = |why: String| Err(Fail::new(CUDA_ERROR_INVALID_VALUE, format!("`{name}`: {why}")));
        if !extra.is_null() {
            return Err(Fail::new(
                CUDA_ERROR_NOT_SUPPORTED,
                format!("`{name}`: `extra` launch parameters are not emulated"),
            ));
        }
        let (grid, block) = ([gx, gy, gz], [bx, by, bz]);
        if grid.contains(&0) || block.contains(&0) {
            return invalid(format!("a zero dimension (grid {grid:?}, block {block:?})"));
        }
        if bx > 1024 || by > 1024 || bz > 64 || gx > i32::MAX as u32 || gy > 65535 || gz > 65535 {
            return invalid(format!("grid {grid:?} / block {block:?} exceed the device's dimensions"));
        }
        let threads = bx as u64 * by as u64 * bz as u64;
        if threads > MAX_THREADS as u64 {
            return invalid(format!("block {block:?} has {threads} threads, the limit is {MAX_THREADS}"));
        }
        if let Some(max) = entry.max_block_threads().filter(|&m| threads > m) {
            return Err(Fail::new(
                CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES,
                format!("`{name}`: block {block:?} has {threads} threads, its __launch_bounds__ allow {max}"),
            ));
        }
        let allowed = d.functions[&id].max_dynamic_shared;
        if shared > allowed {
            return invalid(format!(
                "{shared} bytes of dynamic shared memory (+{} static) exceed the function's limit of {allowed}{}",
                entry.static_shared,
                if allowed == config::DEFAULT_SHARED {
                    " — above 48 KiB a kernel must opt in with cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)"
                } else {
                    ""
                }
            ));
        }
        if shared + entry.static_shared > config::OPTIN_SHARED {
            return invalid(format!("{shared} dynamic + {} static bytes of shared memory", entry.static_shared));
        }
        if params.is_null() && !entry.params.is_empty() {
            return invalid(format!("no kernelParams for {} parameters", entry.params.len()));
        }
        // The driver reads each parameter's size from the image and copies it now.
        let mut args = Vec::with_capacity(entry.params.len());
        for (i, &(_, size)) in entry.params.iter().enumerate() {
            // SAFETY: the caller provides one pointer per parameter.
            let p = unsafe { *params.add(i) };
            if p.is_null() {
                return invalid(format!("kernelParams[{i}] is null"));
            }
            // SAFETY: it points to the parameter's bytes.
            args.push(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), size) }.to_vec());
        }
        let modes = d.cfg.modes;
        drop(d);
        s.enqueue(Box::new(move || {
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            // SAFETY: pointer arguments are the program's device pointers; a stray one faults in
            // the emulator and is reported like a GPU's illegal address.
            unsafe { emu::launch(&name, grid, block, shared, &refs, &modes) }.map_err(|e| {
                let code = match e {
                    EmuError::OutOfBounds { .. } | EmuError::Fault { .. } => CUDA_ERROR_ILLEGAL_ADDRESS,
                    _ => CUDA_ERROR_LAUNCH_FAILED,
                };
                Fail::new(code, e.to_string())
            })
        }));
        Ok(())
    })
}
