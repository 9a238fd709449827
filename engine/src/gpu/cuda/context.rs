//! [`CudaRuntime`]: one device's context, its one stream, memory, launches and GEMM.
//!
//! Every call binds the context to the calling thread first (a cheap check when it already is),
//! since driver calls act on the thread's current context and tensors move between threads.
//! All work goes to one stream, so it runs in submission order; that is also what makes the
//! caching allocator safe: a block freed and reused is only touched by later work on the same
//! stream.

use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::driver::{result, sys, CudaContext, CudaStream, DriverError};

use super::blas::{self, Blas};
use super::kernels::Kernels;
use crate::gpu::alloc::CachingAllocator;
use crate::gpu::{DevicePtr, GemmArgs, GpuRuntime, KernelArg, LaunchConfig};
use crate::{Device, Error, Result};

/// The `Cuda(i)` runtime. Create it through [`super::runtime`].
#[derive(Debug)]
pub struct CudaRuntime {
    index: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: Mutex<Blas>,
    kernels: Kernels,
    allocator: CachingAllocator,
    describe: String,
    cc: (i32, i32),
    /// `BITGRAD_CUDA_SYNC=1`: synchronize after every launch, so a faulting kernel is the one named.
    sync_each_launch: bool,
}

/// A driver error as the engine's error, with what was being done.
pub(super) fn drv(what: impl std::fmt::Display) -> impl FnOnce(DriverError) -> Error {
    move |e| Error::Msg(format!("cuda: {what}: {e}"))
}

impl CudaRuntime {
    /// Opens device `index` (the caller has checked the libraries and the index).
    pub(super) fn new(index: usize) -> Result<Self> {
        let ctx = CudaContext::new(index).map_err(drv(format_args!("opening cuda:{index}")))?;
        let stream = ctx.new_stream().map_err(drv("creating a stream"))?;
        let blas = Blas::new(stream.cu_stream())?;
        let cc = ctx.compute_capability().map_err(drv("reading the compute capability"))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let mem = ctx.total_mem().map(|b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64));
        let mut driver = 0;
        // SAFETY: the driver is loaded and initialised (CudaContext::new succeeded).
        unsafe { sys::cuDriverGetVersion(&mut driver) };
        let nvrtc = super::nvrtc::version().map(|(a, b)| format!("{a}.{b}")).unwrap_or_else(|_| "?".into());
        let cublas = blas.version().map_or("?".into(), |v| format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100));
        let describe = format!(
            "{name}, compute capability {}.{}, {}, driver CUDA {}.{}, NVRTC {nvrtc}, cuBLAS {cublas}",
            cc.0,
            cc.1,
            mem.unwrap_or_else(|_| "memory unknown".into()),
            driver / 1000,
            driver % 1000 / 10
        );
        Ok(CudaRuntime {
            index,
            ctx,
            stream,
            blas: Mutex::new(blas),
            kernels: Kernels::new(cc),
            allocator: CachingAllocator::new(),
            describe,
            cc,
            sync_each_launch: std::env::var("BITGRAD_CUDA_SYNC").is_ok_and(|v| v == "1"),
        })
    }

    fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(drv(format_args!("binding cuda:{}'s context", self.index)))
    }

    fn cu_stream(&self) -> sys::CUstream {
        self.stream.cu_stream()
    }
}

impl GpuRuntime for CudaRuntime {
    fn device(&self) -> Device {
        Device::Cuda(self.index)
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn compute_capability(&self) -> Option<(i32, i32)> {
        Some(self.cc)
    }

    fn raw_alloc(&self, bytes: usize) -> Result<DevicePtr> {
        self.bind()?;
        // cuMemAlloc aligns to at least 256 bytes.
        // SAFETY: the context is bound; the pointer is owned by the caller until raw_free.
        let p = unsafe { result::malloc_sync(bytes) }.map_err(|e| {
            let free = result::mem_get_info().map(|(f, _)| format!("{} MiB free", f >> 20)).unwrap_or_default();
            Error::Msg(format!("cuda: allocating {bytes} bytes on cuda:{}: {e} ({free})", self.index))
        })?;
        Ok(DevicePtr(p))
    }

    unsafe fn raw_free(&self, ptr: DevicePtr, _bytes: usize) {
        // A failure here means the context is already broken (a prior kernel fault); the next
        // call that can return an error reports it.
        if self.bind().is_ok() {
            let _ = result::free_sync(ptr.0);
        }
    }

    fn allocator(&self) -> &CachingAllocator {
        &self.allocator
    }

    fn htod(&self, src: &[u8], dst: DevicePtr) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        self.bind()?;
        // From pageable memory the driver copies `src` into a staging buffer before returning,
        // so `src` may be dropped right after, and the copy is still ordered on our stream.
        // SAFETY: `dst` is device memory of this context with room for `src.len()` bytes.
        unsafe { result::memcpy_htod_async(dst.0, src, self.cu_stream()) }.map_err(drv("copying host to device"))
    }

    fn dtoh(&self, src: DevicePtr, dst: &mut [u8]) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: `src` holds `dst.len()` bytes; the stream sync below completes the copy
        // before `dst` is handed back.
        unsafe { result::memcpy_dtoh_async(dst, src.0, self.cu_stream()) }.map_err(drv("copying device to host"))?;
        self.synchronize()
    }

    fn dtod(&self, src: DevicePtr, dst: DevicePtr, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: both ranges are device memory of this context, `bytes` long.
        unsafe { result::memcpy_dtod_async(dst.0, src.0, bytes, self.cu_stream()) }
            .map_err(drv("copying device to device"))
    }

    fn memset(&self, dst: DevicePtr, value: u8, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: `dst` is device memory of this context, `bytes` long.
        unsafe { result::memset_d8_async(dst.0, value, bytes, self.cu_stream()) }.map_err(drv("memset"))
    }

    fn launch(&self, kernel: &str, cfg: &LaunchConfig, args: &[KernelArg]) -> Result<()> {
        self.bind()?;
        let func = self.kernels.function(&self.ctx, kernel, cfg.shared_bytes)?;
        func.check_args(kernel, &args.iter().map(|a| a.bytes().len()).collect::<Vec<_>>())?;
        // cuLaunchKernel reads each argument through a pointer to its bytes, copying them
        // before it returns, so pointers into `args` suffice.
        let mut params: Vec<*mut c_void> = args.iter().map(|a| a.bytes().as_ptr() as *mut c_void).collect();
        let [gx, gy, gz] = cfg.grid;
        let [bx, by, bz] = cfg.block;
        // SAFETY: `func` is a live function of this context; the argument count and layout are
        // the caller's contract with the kernel's signature (as for any cuLaunchKernel call).
        unsafe {
            result::launch_kernel(
                func.func.cu_function(),
                (gx, gy, gz),
                (bx, by, bz),
                cfg.shared_bytes,
                self.cu_stream(),
                &mut params,
            )
        }
        .map_err(drv(format_args!(
            "launching {kernel} (grid {:?}, block {:?}, {} bytes shared, {} args)",
            cfg.grid,
            cfg.block,
            cfg.shared_bytes,
            args.len()
        )))?;
        crate::gpu::record_launch(kernel);
        if self.sync_each_launch {
            self.stream.synchronize().map_err(drv(format_args!("running {kernel}")))?;
        }
        Ok(())
    }

    fn gemm(&self, g: &GemmArgs) -> Result<()> {
        blas::validate(g)?;
        self.bind()?;
        self.blas.lock().unwrap_or_else(|e| e.into_inner()).gemm(g)
    }

    fn synchronize(&self) -> Result<()> {
        self.bind()?;
        self.stream.synchronize().map_err(drv(format_args!("synchronizing cuda:{}", self.index)))
    }
}
