//! Kernels by name: the source file that defines a kernel is compiled for the device (disk cache
//! first), loaded as a module once, and each `CudaFunction` is kept in memory for every later
//! launch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
use cudarc::driver::{result, sys, CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;

use super::cache::{self, DiskCache};
use super::nvrtc::{self, CodeKind};
use crate::{Error, Result};

/// Shared memory a kernel may use without opting in (`cudaFuncSetAttribute`).
const DEFAULT_MAX_DYNAMIC_SHARED: u32 = 48 << 10;

#[derive(Debug)]
struct Loaded {
    func: CudaFunction,
    /// The largest dynamic shared memory this function has been allowed so far.
    shared_allowed: u32,
    /// Each parameter's size in bytes as the compiled image declares it (`cuFuncGetParamInfo`),
    /// or `None` where the driver cannot say.
    params: Option<Vec<usize>>,
}

/// A loaded function and what a launch of it must pass.
#[derive(Debug, Clone)]
pub struct Function {
    pub func: CudaFunction,
    pub params: Option<Vec<usize>>,
}

impl Function {
    /// Checks a launch's arguments against the image's parameters: `cuLaunchKernel` reads as
    /// many pointers as the kernel has parameters and as many bytes behind each as its type has,
    /// so a missing argument or a wrong-width one would otherwise be garbage on the GPU.
    pub fn check_args(&self, kernel: &str, sizes: &[usize]) -> Result<()> {
        let Some(want) = &self.params else { return Ok(()) };
        if want.len() != sizes.len() {
            return Err(Error::Msg(format!(
                "cuda: kernel `{kernel}` takes {} arguments, the launch passes {}",
                want.len(),
                sizes.len()
            )));
        }
        match want.iter().zip(sizes).position(|(w, g)| w != g) {
            Some(i) => Err(Error::Msg(format!(
                "cuda: argument {i} of kernel `{kernel}` must be {} bytes, the launch passes {}",
                want[i], sizes[i]
            ))),
            None => Ok(()),
        }
    }
}

/// The parameter sizes of `func` from the driver (CUDA 12.4+: `cuFuncGetParamInfo`, which
/// answers `CUDA_ERROR_INVALID_VALUE` past the last parameter).
fn param_sizes(func: &CudaFunction) -> Option<Vec<usize>> {
    let probe = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut sizes = Vec::new();
        for index in 0..4096 {
            let (mut offset, mut size) = (0usize, 0usize);
            // SAFETY: a live function; the out-pointers are locals.
            let r = unsafe { sys::cuFuncGetParamInfo(func.cu_function(), index, &mut offset, &mut size) };
            match r {
                sys::CUresult::CUDA_SUCCESS => sizes.push(size),
                sys::CUresult::CUDA_ERROR_INVALID_VALUE => return Some(sizes),
                _ => return None,
            }
        }
        None
    }));
    // A driver without the function (cudarc panics on a missing symbol) just skips the check.
    probe.ok().flatten()
}

/// The modules and functions of one device.
#[derive(Debug)]
pub struct Kernels {
    /// (major, minor) compute capability.
    cc: (i32, i32),
    disk: DiskCache,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, Loaded>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update is one insert, so a panic elsewhere leaves the maps consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Kernels {
    pub fn new(cc: (i32, i32)) -> Self {
        Kernels { cc, disk: DiskCache::from_env(), modules: Mutex::default(), functions: Mutex::default() }
    }

    /// The function `name`, ready for a launch with `shared` bytes of dynamic shared memory.
    pub fn function(&self, ctx: &Arc<CudaContext>, name: &str, shared: u32) -> Result<Function> {
        let mut functions = lock(&self.functions);
        if !functions.contains_key(name) {
            let module = self.module(ctx, name)?;
            let func = module.load_function(name).map_err(|e| {
                Error::Msg(format!("cuda: kernel `{name}` is listed but not in its compiled module: {e}"))
            })?;
            let params = param_sizes(&func);
            functions.insert(name.to_string(), Loaded { func, shared_allowed: DEFAULT_MAX_DYNAMIC_SHARED, params });
        }
        let loaded = functions.get_mut(name).expect("inserted above");
        if shared > loaded.shared_allowed {
            // Above 48 KiB a kernel must opt in, once per function and size.
            // SAFETY: a live function of a loaded module; the context is bound (by module()).
            unsafe {
                result::function::set_function_attribute(
                    loaded.func.cu_function(),
                    CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    shared as i32,
                )
            }
            .map_err(|e| {
                Error::Msg(format!("cuda: kernel `{name}` cannot use {shared} bytes of shared memory: {e}"))
            })?;
            loaded.shared_allowed = shared;
        }
        Ok(Function { func: loaded.func.clone(), params: loaded.params.clone() })
    }

    /// The loaded module of the source that defines `kernel`.
    fn module(&self, ctx: &Arc<CudaContext>, kernel: &str) -> Result<Arc<CudaModule>> {
        let src = bitgrad_kernels::find_source(kernel).ok_or_else(|| {
            Error::Msg(format!("cuda: no kernel source defines `{kernel}` (bitgrad_kernels::SOURCES)"))
        })?;
        let mut modules = lock(&self.modules);
        if let Some(m) = modules.get(src.name) {
            return Ok(m.clone());
        }
        let (major, minor) = self.cc;
        // A CUBIN for this exact GPU avoids the driver's JIT; if the driver rejects it (an
        // NVRTC that knows this architecture differently than the driver), PTX for the same
        // virtual architecture goes through the driver's own compiler instead.
        let cubin = self.load(ctx, src, &format!("sm_{major}{minor}"));
        let module = match cubin {
            Ok(m) => m,
            Err(cubin_err) => self.load(ctx, src, &format!("compute_{major}{minor}")).map_err(|ptx_err| {
                Error::Msg(format!("cuda: {}: CUBIN failed ({cubin_err}); PTX failed too ({ptx_err})", src.name))
            })?,
        };
        modules.insert(src.name, module.clone());
        Ok(module)
    }

    fn load(&self, ctx: &Arc<CudaContext>, src: &bitgrad_kernels::KernelSource, arch: &str) -> Result<Arc<CudaModule>> {
        let opts = nvrtc::options(arch, &[])?;
        let key = cache::key(src.source, bitgrad_kernels::HEADERS, arch, nvrtc::version()?, &opts);
        let (kind, code) = match self.disk.get(key) {
            Some(hit) => hit,
            None => {
                let c = nvrtc::compile_with(src.source, src.name, bitgrad_kernels::HEADERS, &opts)?;
                // A read-only or full disk only costs the next process a compile.
                let _ = self.disk.put(key, c.kind, &c.code);
                (c.kind, c.code)
            }
        };
        debug_assert!(kind == CodeKind::Cubin || code.last() == Some(&0), "PTX must be NUL-terminated");
        ctx.load_module(Ptx::from_binary(code))
            .map_err(|e| Error::Msg(format!("cuda: loading {} ({kind:?} for {arch}): {e}", src.name)))
    }
}
