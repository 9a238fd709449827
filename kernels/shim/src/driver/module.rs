//! Modules from real NVRTC output and their functions.

use std::ffi::{c_char, CStr};
use std::sync::Arc;

use bitgrad_kernels::emu;

use crate::config::{self, CC};
use crate::ffi::*;
use crate::image::{self, Format};
use crate::state::{api, driver, put, Function, Module};

/// # Safety
/// `image` must point to a complete CUBIN or a NUL-terminated PTX text.
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadData(module: *mut Handle, image: *const u8) -> CUresult {
    api("cuModuleLoadData", CUDA_ERROR_UNKNOWN, || {
        let mut d = driver();
        let ctx = d.current("cuModuleLoadData")?;
        // SAFETY: the caller's image.
        let img = unsafe { image::read(image) }.map_err(|e| Fail::new(CUDA_ERROR_INVALID_IMAGE, e))?;
        match img.format {
            Format::Cubin { sm } => {
                if d.cfg.reject_cubin {
                    return Err(Fail::quiet(
                        CUDA_ERROR_NO_BINARY_FOR_GPU,
                        "CUBINs refused (BITGRAD_SHIM_REJECT_CUBIN=1)",
                    ));
                }
                // SASS runs on its own major version, at its minor version or newer.
                if sm / 10 != CC.0 || sm % 10 > CC.1 {
                    return Err(Fail::new(
                        CUDA_ERROR_NO_BINARY_FOR_GPU,
                        format!("a CUBIN for sm_{sm} cannot run on this sm_{}{} device", CC.0, CC.1),
                    ));
                }
            }
            Format::Ptx { version, target } => {
                if version > config::MAX_PTX_ISA {
                    return Err(Fail::new(
                        CUDA_ERROR_UNSUPPORTED_PTX_VERSION,
                        format!(
                            "PTX ISA {}.{} is newer than this driver's {}.{} (CUDA 13.0): use NVRTC 13.0",
                            version.0,
                            version.1,
                            config::MAX_PTX_ISA.0,
                            config::MAX_PTX_ISA.1
                        ),
                    ));
                }
                if target > CC.0 * 10 + CC.1 {
                    return Err(Fail::new(
                        CUDA_ERROR_INVALID_PTX,
                        format!("PTX for sm_{target} cannot be compiled for this sm_{}{} device", CC.0, CC.1),
                    ));
                }
            }
        }
        let id = d.id();
        d.modules.insert(id, Module { ctx, image: Arc::new(img) });
        // SAFETY: the caller's out-pointer.
        unsafe { put(module, handle(Kind::Module, id)) }
    })
}

/// # Safety
/// Plain value arguments only.
#[no_mangle]
pub unsafe extern "C" fn cuModuleUnload(module: Handle) -> CUresult {
    api("cuModuleUnload", CUDA_ERROR_UNKNOWN, || {
        let mut d = driver();
        let ctx = d.current("cuModuleUnload")?;
        let id = id_of(module, Kind::Module).filter(|id| d.modules.get(id).is_some_and(|m| m.ctx == ctx)).ok_or_else(
            || Fail::new(CUDA_ERROR_INVALID_HANDLE, format!("{module:?} is not a module of this context")),
        )?;
        d.modules.remove(&id);
        d.functions.retain(|_, f| f.module != id);
        Ok(())
    })
}

/// Fails for a name the image lacks (as the driver does), and for one the emulator build lacks
/// or compiled with another parameter layout than the GPU compiler.
///
/// # Safety
/// `name` must be a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn cuModuleGetFunction(hfunc: *mut Handle, module: Handle, name: *const c_char) -> CUresult {
    api("cuModuleGetFunction", CUDA_ERROR_UNKNOWN, || {
        let mut d = driver();
        let ctx = d.current("cuModuleGetFunction")?;
        if name.is_null() {
            return Err(Fail::new(CUDA_ERROR_INVALID_VALUE, "a null kernel name"));
        }
        // SAFETY: the caller's NUL-terminated name.
        let name = unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned();
        let mid = id_of(module, Kind::Module).filter(|id| d.modules.get(id).is_some_and(|m| m.ctx == ctx)).ok_or_else(
            || Fail::new(CUDA_ERROR_INVALID_HANDLE, format!("{module:?} is not a module of this context")),
        )?;
        let image = d.modules[&mid].image.clone();
        let entry = image.entries.get(&name).ok_or_else(|| {
            let known: Vec<&str> = image.entries.keys().map(String::as_str).take(8).collect();
            Fail::new(CUDA_ERROR_NOT_FOUND, format!("no kernel `{name}` in this module (it has {})", known.join(", ")))
        })?;
        let layout = emu::param_layout(&name).ok_or_else(|| {
            Fail::new(CUDA_ERROR_NOT_FOUND, format!("`{name}` is in the image but not in the emulator's build"))
        })?;
        let gpu: Vec<usize> = entry.params.iter().map(|p| p.1).collect();
        let host: Vec<usize> = layout.iter().map(|p| p.0).collect();
        if gpu != host {
            return Err(Fail::new(
                CUDA_ERROR_INVALID_IMAGE,
                format!(
                    "`{name}`: the GPU compiler's parameter sizes {gpu:?} differ from the host C++ build's {host:?} \
                     (a struct laid out differently?)"
                ),
            ));
        }
        let id = d.id();
        d.functions.insert(id, Function { module: mid, ctx, name, max_dynamic_shared: config::DEFAULT_SHARED });
        // SAFETY: the caller's out-pointer.
        unsafe { put(hfunc, handle(Kind::Function, id)) }
    })
}

/// The function behind `f`, with its image entry, if it is live in the current context.
pub(super) fn function(d: &crate::state::Driver, ctx: u64, f: Handle, call: &str) -> Res<(u64, image::Entry)> {
    let id = id_of(f, Kind::Function).filter(|id| d.functions.contains_key(id)).ok_or_else(|| {
        Fail::new(CUDA_ERROR_INVALID_HANDLE, format!("{call}: {f:?} is not a live function (module unloaded?)"))
    })?;
    let func = &d.functions[&id];
    if func.ctx != ctx {
        return Err(Fail::new(
            CUDA_ERROR_INVALID_HANDLE,
            format!("{call}: `{}` belongs to another context", func.name),
        ));
    }
    let entry = d.modules[&func.module].image.entries[&func.name].clone();
    Ok((id, entry))
}

/// `MAX_DYNAMIC_SHARED_SIZE_BYTES` (8) raises the function's dynamic shared memory limit up to
/// the opt-in maximum less its static shared memory; the carve-out preference (9) is accepted.
///
/// # Safety
/// Plain value arguments only.
#[no_mangle]
pub unsafe extern "C" fn cuFuncSetAttribute(f: Handle, attrib: i32, value: i32) -> CUresult {
    api("cuFuncSetAttribute", CUDA_ERROR_UNKNOWN, || {
        let mut d = driver();
        let ctx = d.current("cuFuncSetAttribute")?;
        let (id, entry) = function(&d, ctx, f, "cuFuncSetAttribute")?;
        match attrib {
            8 => {
                let max = config::OPTIN_SHARED - entry.static_shared;
                if value < 0 || value as u32 > max {
                    return Err(Fail::new(
                        CUDA_ERROR_INVALID_VALUE,
                        format!(
                            "{value} bytes of dynamic shared memory: at most {max} with {} static",
                            entry.static_shared
                        ),
                    ));
                }
                d.functions.get_mut(&id).expect("checked").max_dynamic_shared = value as u32;
                Ok(())
            }
            9 if (-1..=100).contains(&value) => Ok(()),
            _ => Err(Fail::new(
                CUDA_ERROR_INVALID_VALUE,
                format!("function attribute {attrib} = {value} is not supported"),
            )),
        }
    })
}

/// # Safety
/// `pi` must be valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuFuncGetAttribute(pi: *mut i32, attrib: i32, f: Handle) -> CUresult {
    api("cuFuncGetAttribute", CUDA_ERROR_UNKNOWN, || {
        let d = driver();
        let ctx = d.current("cuFuncGetAttribute")?;
        let (id, entry) = function(&d, ctx, f, "cuFuncGetAttribute")?;
        let v = match attrib {
            0 => entry.max_block_threads().unwrap_or(config::MAX_THREADS as u64) as i32,
            1 => entry.static_shared as i32,
            2 | 3 => 0, // constant and local memory: our kernels use none (the SASS check enforces no spills)
            4 => entry.registers.map(|r| r as i32).ok_or_else(|| {
                Fail::quiet(CUDA_ERROR_NOT_SUPPORTED, "register counts are known only for CUBIN modules")
            })?,
            8 => d.functions[&id].max_dynamic_shared as i32,
            _ => {
                return Err(Fail::quiet(
                    CUDA_ERROR_INVALID_VALUE,
                    format!("function attribute {attrib} is not modelled"),
                ))
            }
        };
        // SAFETY: the caller's out-pointer.
        unsafe { put(pi, v) }
    })
}

/// The offset and size of parameter `index`, read from the image.
///
/// # Safety
/// The out-pointers must be null or valid for one write each.
#[no_mangle]
pub unsafe extern "C" fn cuFuncGetParamInfo(f: Handle, index: usize, offset: *mut usize, size: *mut usize) -> CUresult {
    api("cuFuncGetParamInfo", CUDA_ERROR_UNKNOWN, || {
        let d = driver();
        let ctx = d.current("cuFuncGetParamInfo")?;
        let (_, entry) = function(&d, ctx, f, "cuFuncGetParamInfo")?;
        let &(off, sz) = entry.params.get(index).ok_or_else(|| {
            Fail::quiet(CUDA_ERROR_INVALID_VALUE, format!("parameter {index} of {}", entry.params.len()))
        })?;
        // SAFETY: the caller's out-pointers (null ones are skipped, as the driver allows).
        unsafe {
            if !offset.is_null() {
                offset.write(off);
            }
            if !size.is_null() {
                size.write(sz);
            }
        }
        Ok(())
    })
}
