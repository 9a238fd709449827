//! The real CUDA host path against the CUDA shim (`kernels/shim`): bugs planted in host code,
//! each of which a GPU would punish later or never report, are caught at the call that makes
//! them — and the driver contracts that bitgrad relies on hold.
//!
//! Runs only where the shim is the loaded CUDA driver (`scripts/with-shim.sh`, as
//! `scripts/test.sh` runs it, with `BITGRAD_REQUIRE_SHIM=1` so that a missing shim fails instead
//! of skipping). Scenarios that need their own driver settings, or that break their context on
//! purpose (a sticky fault), run in a child process of this test binary.

use std::process::Command;

use bitgrad_engine::gpu::cuda::{self, libs, nvrtc};
use bitgrad_engine::gpu::{self, KernelArg, LaunchConfig};
use bitgrad_engine::{DType, Device, Tensor};
use cudarc::driver::sys::CUresult;
use cudarc::driver::{result, CudaContext, CudaFunction};
use cudarc::nvrtc::Ptx;

/// Whether this process runs on the shim; with `BITGRAD_REQUIRE_SHIM=1`, anything else fails.
fn on_shim() -> bool {
    let shim = gpu::runtime(Device::Cuda(0)).is_ok_and(|rt| cuda::is_shim(&rt.describe()));
    if !shim {
        let why = "the CUDA shim is not the loaded driver (run under scripts/with-shim.sh)";
        if std::env::var("BITGRAD_REQUIRE_SHIM").is_ok_and(|v| v == "1") {
            panic!("BITGRAD_REQUIRE_SHIM=1 but {why}");
        }
        eprintln!("skipped: {why}");
    }
    shim
}

/// In the parent: runs `test` alone in a child process with `env` and asserts it passed;
/// returns false. In that child: returns true, and the caller runs the scenario.
fn in_child(test: &str, env: &[(&str, &str)]) -> bool {
    if std::env::var("BITGRAD_SHIM_CHILD").is_ok_and(|t| t == test) {
        return true;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("BITGRAD_SHIM_CHILD", test)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "{test} failed in its child process:\n{text}");
    false
}

fn code(r: Result<(), cudarc::driver::DriverError>) -> CUresult {
    match r {
        Ok(()) => CUresult::CUDA_SUCCESS,
        Err(e) => e.0,
    }
}

/// The kernels of `emu_selftest.cu`, compiled by NVRTC for `arch` and loaded into device 0's
/// primary context (the one the runtime uses), bound to this thread.
fn selftest_module(arch: &str) -> (std::sync::Arc<CudaContext>, std::sync::Arc<cudarc::driver::CudaModule>) {
    let ctx = CudaContext::new(0).unwrap();
    ctx.bind_to_thread().unwrap();
    let src = bitgrad_kernels::find_source("selftest_block_sum").unwrap();
    let opts = nvrtc::options(arch, &[]).unwrap();
    let code = nvrtc::compile_with(src.source, src.name, bitgrad_kernels::HEADERS, &opts).unwrap().code;
    let module = ctx.load_module(Ptx::from_binary(code)).unwrap();
    (ctx, module)
}

fn launch(f: &CudaFunction, block: u32, shared: u32, args: &mut [*mut std::ffi::c_void]) -> CUresult {
    // SAFETY: the arguments match the kernel (checked by the shim against the image anyway).
    code(unsafe {
        result::launch_kernel(f.cu_function(), (1, 1, 1), (block, 1, 1), shared, std::ptr::null_mut(), args)
    })
}

#[test]
fn only_the_shim_answers_for_the_driver_and_cublas() {
    if !on_shim() {
        return;
    }
    let rt = gpu::runtime(Device::Cuda(0)).unwrap();
    assert!(rt.describe().starts_with("bitgrad emulated GPU, compute capability 9.0"), "{}", rt.describe());
    // The shim is mapped (the symlinks libcuda.so*, libcublas.so* resolve to it), and no other
    // libcuda or libcublas is.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let files: Vec<&str> = maps.lines().filter_map(|l| l.split_whitespace().nth(5)).collect();
    assert!(files.iter().any(|p| p.ends_with("/libbitgrad_cuda_shim.so")), "the shim is not mapped");
    let others: Vec<&&str> = files.iter().filter(|p| p.contains("libcuda") || p.contains("libcublas")).collect();
    assert!(others.is_empty(), "other CUDA libraries are loaded: {others:?}");
    assert!(cuda::status().contains("the bitgrad CUDA shim"), "{}", cuda::status());
    assert!(libs::Lib::Driver.present() && libs::Lib::Cublas.present());
}

/// Planted bug: an argument of the wrong width, and one argument too few.
#[test]
fn wrong_argument_sizes_and_counts_are_refused() {
    if !on_shim() {
        return;
    }
    let rt = gpu::runtime(Device::Cuda(0)).unwrap();
    let (x, out) = (rt.alloc(4096).unwrap(), rt.alloc(4096).unwrap());
    let cfg = LaunchConfig::linear(1, 32).with_shared(32 * 4);
    let good = [KernelArg::Ptr(x.ptr()), KernelArg::Ptr(out.ptr()), KernelArg::I32(16)];
    rt.launch("selftest_block_sum", &cfg, &good).unwrap();
    rt.synchronize().unwrap();
    let wide = [KernelArg::Ptr(x.ptr()), KernelArg::Ptr(out.ptr()), KernelArg::I64(16)];
    let e = rt.launch("selftest_block_sum", &cfg, &wide).unwrap_err().to_string();
    assert!(e.contains("argument 2 of kernel `selftest_block_sum` must be 4 bytes, the launch passes 8"), "{e}");
    let e = rt.launch("selftest_block_sum", &cfg, &good[..2]).unwrap_err().to_string();
    assert!(e.contains("takes 3 arguments, the launch passes 2"), "{e}");
}

/// Planted bug: a thread that never made the context current calls the driver (a rayon or
/// loader thread handed a device pointer). bitgrad's runtime binds on every call, so it works.
#[test]
fn a_thread_without_a_current_context_is_refused() {
    if !on_shim() {
        return;
    }
    let rt = gpu::runtime(Device::Cuda(0)).unwrap();
    let raw = std::thread::spawn(|| {
        // SAFETY: a plain allocation request.
        unsafe { result::malloc_sync(256) }.map(|_| ()).unwrap_err()
    })
    .join()
    .unwrap();
    assert_eq!(raw.0, CUresult::CUDA_ERROR_INVALID_CONTEXT);
    assert!(raw.to_string().contains("invalid device context"), "{raw}");
    let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3], Device::Cpu).unwrap();
    let back =
        std::thread::spawn(move || t.to_device(Device::Cuda(0)).unwrap().mul_scalar(2.0).unwrap().to_vec::<f32>())
            .join()
            .unwrap()
            .unwrap();
    assert_eq!(back, [2.0, 4.0, 6.0]);
    drop(rt);
}

/// Planted bug: more than 48 KiB of dynamic shared memory without the opt-in attribute.
/// And `__launch_bounds__` is enforced from the image.
#[test]
fn shared_memory_opt_in_and_launch_bounds_are_enforced() {
    if !on_shim() {
        return;
    }
    let (_ctx, module) = selftest_module("sm_90");
    let sum = module.load_function("selftest_block_sum").unwrap();
    let rt = gpu::runtime(Device::Cuda(0)).unwrap();
    let (x, out) = (rt.alloc(4096).unwrap(), rt.alloc(4096).unwrap());
    let (mut px, mut po, mut n) = (x.ptr().0, out.ptr().0, 16i32);
    let mut args = [(&mut px as *mut u64).cast(), (&mut po as *mut u64).cast(), (&mut n as *mut i32).cast()];
    assert_eq!(launch(&sum, 32, 48 << 10, &mut args), CUresult::CUDA_SUCCESS);
    assert_eq!(launch(&sum, 32, 60 << 10, &mut args), CUresult::CUDA_ERROR_INVALID_VALUE);
    // SAFETY: a live function; the value is within the sm_90 opt-in maximum.
    unsafe {
        result::function::set_function_attribute(
            sum.cu_function(),
            cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            60 << 10,
        )
    }
    .unwrap();
    assert_eq!(launch(&sum, 32, 60 << 10, &mut args), CUresult::CUDA_SUCCESS);
    assert_eq!(launch(&sum, 32, 228 << 10, &mut args), CUresult::CUDA_ERROR_INVALID_VALUE);

    let bounded = module.load_function("selftest_bounded").unwrap();
    let mut args = [(&mut po as *mut u64).cast()];
    assert_eq!(launch(&bounded, 128, 0, &mut args), CUresult::CUDA_SUCCESS);
    assert_eq!(launch(&bounded, 256, 0, &mut args), CUresult::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES);
    assert_eq!(launch(&bounded, 2048, 0, &mut args), CUresult::CUDA_ERROR_INVALID_VALUE);
    rt.synchronize().unwrap();
}

/// Planted bug: a kernel name that the module lacks — unknown, or defined in another source file.
#[test]
fn a_kernel_name_not_in_the_module_is_not_found() {
    if !on_shim() {
        return;
    }
    let (_ctx, module) = selftest_module("sm_90");
    for name in ["no_such_kernel", "fill_f32"] {
        let e = module.load_function(name).unwrap_err();
        assert_eq!(e.0, CUresult::CUDA_ERROR_NOT_FOUND, "{name}");
    }
}

/// Images the device cannot run: a CUBIN for another SM, PTX of a newer ISA than the driver.
#[test]
fn foreign_cubins_and_too_new_ptx_are_refused() {
    if !on_shim() {
        return;
    }
    let ctx = CudaContext::new(0).unwrap();
    ctx.bind_to_thread().unwrap();
    let src = bitgrad_kernels::find_source("selftest_block_sum").unwrap();
    let opts = nvrtc::options("sm_80", &[]).unwrap();
    let cubin = nvrtc::compile_with(src.source, src.name, bitgrad_kernels::HEADERS, &opts).unwrap().code;
    let e = ctx.load_module(Ptx::from_binary(cubin)).unwrap_err();
    assert_eq!(e.0, CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU);
    let ptx = ".version 9.5\n.target sm_90\n.address_size 64\n.visible .entry k()\n{\n ret;\n}\n";
    let e = ctx.load_module(Ptx::from_src(ptx)).unwrap_err();
    assert_eq!(e.0, CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION);
}

/// Planted bug: reading a copy's destination before synchronizing. The shim runs stream work
/// asynchronously (here after 300 ms), so the host sees the old contents, as on a GPU.
#[test]
fn reading_a_result_without_synchronize_sees_stale_data() {
    if !on_shim()
        || !in_child("reading_a_result_without_synchronize_sees_stale_data", &[("BITGRAD_SHIM_LATENCY_US", "300000")])
    {
        return;
    }
    let ctx = CudaContext::new(0).unwrap();
    ctx.bind_to_thread().unwrap();
    let stream = ctx.default_stream();
    let src: Vec<f32> = (1..=64).map(|i| i as f32).collect();
    let mut host = vec![0.0f32; 64];
    // SAFETY: 256 bytes of device memory, copied to and from host vectors of 64 f32s.
    unsafe {
        let d = result::malloc_sync(256).unwrap();
        result::memcpy_htod_async(d, &src, stream.cu_stream()).unwrap();
        result::memcpy_dtoh_async(&mut host, d, stream.cu_stream()).unwrap();
        assert!(host.iter().all(|&v| v == 0.0), "the copy landed before any synchronize");
        result::stream::synchronize(stream.cu_stream()).unwrap();
        assert_eq!(host, src);
        result::free_sync(d).unwrap();
    }
}

/// Planted bug: use after free — a copy into freed memory is refused at the call; a kernel that
/// writes there faults, and the fault is sticky, with the driver's own texts.
#[test]
fn use_after_free_is_caught_and_a_kernel_fault_is_sticky() {
    if !on_shim() || !in_child("use_after_free_is_caught_and_a_kernel_fault_is_sticky", &[("BITGRAD_SHIM_QUIET", "1")])
    {
        return;
    }
    let (_ctx, module) = selftest_module("sm_90");
    let bounded = module.load_function("selftest_bounded").unwrap();
    // SAFETY: the pointer is freed on purpose; the shim must refuse the copy.
    let d = unsafe {
        let d = result::malloc_sync(512).unwrap();
        result::free_sync(d).unwrap();
        let e = result::memcpy_htod_sync(d, &[1.0f32; 4]).unwrap_err();
        assert_eq!(e.0, CUresult::CUDA_ERROR_INVALID_VALUE);
        d
    };
    let mut p = d;
    let mut args = [(&mut p as *mut u64).cast()];
    assert_eq!(launch(&bounded, 128, 0, &mut args), CUresult::CUDA_SUCCESS, "a launch only queues the work");
    // SAFETY: synchronizing the default stream.
    let e = unsafe { result::stream::synchronize(std::ptr::null_mut()) }.unwrap_err();
    assert_eq!(e.0, CUresult::CUDA_ERROR_ILLEGAL_ADDRESS);
    assert!(e.to_string().contains("an illegal memory access was encountered"), "{e}");
    // SAFETY: plain calls on the broken context.
    let later = unsafe { result::malloc_sync(256) }.unwrap_err();
    assert_eq!(later.0, CUresult::CUDA_ERROR_ILLEGAL_ADDRESS, "the fault must be sticky");
    let rt_err = gpu::runtime(Device::Cuda(0)).unwrap().alloc(64).unwrap_err().to_string();
    assert!(rt_err.contains("CUDA_ERROR_ILLEGAL_ADDRESS"), "{rt_err}");
    // SAFETY: the shim's own diagnostic, a NUL-terminated string.
    let why = unsafe {
        let lib = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        assert!(!lib.is_null(), "the shim is loaded");
        let f = libc::dlsym(lib, c"bitgradShimLastError".as_ptr());
        assert!(!f.is_null());
        let f: unsafe extern "C" fn() -> *const std::ffi::c_char = std::mem::transmute(f);
        std::ffi::CStr::from_ptr(f()).to_string_lossy().into_owned()
    };
    assert!(why.contains("selftest_bounded"), "the shim names the faulting kernel: {why}");
}

/// Out of memory, reported as the driver reports it, through the runtime's error.
#[test]
fn out_of_memory_is_the_drivers_error() {
    if !on_shim()
        || !in_child(
            "out_of_memory_is_the_drivers_error",
            &[("BITGRAD_SHIM_MEM_MB", "64"), ("BITGRAD_SHIM_QUIET", "1")],
        )
    {
        return;
    }
    let rt = gpu::runtime(Device::Cuda(0)).unwrap();
    assert!(rt.describe().contains("0.1 GiB"), "{}", rt.describe());
    let keep = rt.alloc(40 << 20).unwrap();
    let e = rt.alloc(40 << 20).unwrap_err().to_string();
    assert!(e.contains("CUDA_ERROR_OUT_OF_MEMORY") && e.contains("MiB free"), "{e}");
    drop(keep);
}

/// `BITGRAD_SHIM_DEVICES=2`: two devices, each with its own context; a third is a clear error.
#[test]
fn several_emulated_devices() {
    if !on_shim() || !in_child("several_emulated_devices", &[("BITGRAD_SHIM_DEVICES", "2")]) {
        return;
    }
    let x = Tensor::from_vec(vec![1.0f32, -2.0, 3.0], [3], Device::Cpu).unwrap();
    let a = x.to_device(Device::Cuda(0)).unwrap().relu().unwrap();
    let b = a.to_device(Device::Cuda(1)).unwrap().mul_scalar(3.0).unwrap();
    assert_eq!(b.device(), Device::Cuda(1));
    assert_eq!(b.to_vec::<f32>().unwrap(), [3.0, 0.0, 9.0]);
    let e = Tensor::zeros([2], DType::F32, Device::Cuda(2)).unwrap_err().to_string();
    assert!(e.contains("there is no cuda:2: 2 GPU(s) visible"), "{e}");
}

/// The PTX fallback: with CUBINs refused, every module loads from PTX and still runs.
#[test]
fn the_ptx_fallback_runs_when_the_cubin_is_refused() {
    if !on_shim() || !in_child("the_ptx_fallback_runs_when_the_cubin_is_refused", &[("BITGRAD_SHIM_REJECT_CUBIN", "1")])
    {
        return;
    }
    let x = Tensor::from_vec((0..100).map(|i| i as f32 - 50.0).collect::<Vec<_>>(), [10, 10], Device::Cpu).unwrap();
    let want = x.relu().unwrap().sum_all().unwrap().to_vec::<f32>().unwrap();
    let got = x.to_device(Device::Cuda(0)).unwrap().relu().unwrap().sum_all().unwrap().to_vec::<f32>().unwrap();
    assert_eq!(got, want);
}

/// Every function cudarc can load is exported (cudarc panics on a missing one): the implemented
/// ones and a generated stub for each of the rest, which answers "not supported".
#[test]
fn every_function_cudarc_knows_is_exported() {
    if !on_shim() {
        return;
    }
    gpu::runtime(Device::Cuda(0)).unwrap();
    // SAFETY: looking up symbols of the already-loaded shim.
    let lib = unsafe { libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    assert!(!lib.is_null());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels/shim/names");
    let mut n = 0;
    for file in ["driver.txt", "cublas.txt"] {
        for line in std::fs::read_to_string(root.join(file)).unwrap().lines().filter(|l| !l.starts_with('#')) {
            let name = line.split_whitespace().next().unwrap();
            let c = std::ffi::CString::new(name).unwrap();
            // SAFETY: a symbol lookup.
            assert!(!unsafe { libc::dlsym(lib, c.as_ptr()) }.is_null(), "{name} is not exported");
            n += 1;
        }
    }
    assert!(n > 1000, "{n} names");
    // A stub: an error, not a panic or a crash.
    let mut p = 0u64;
    // SAFETY: a managed allocation request; the stub writes nothing.
    let r = unsafe { cudarc::driver::sys::cuMemAllocManaged(&mut p, 256, 1) };
    assert_eq!(r, CUresult::CUDA_ERROR_NOT_SUPPORTED);
}

/// A tensor-core kernel through the CUDA host path: NVRTC's CUBIN of `tc_gemm_bf16` (mma.sync,
/// ldmatrix, cp.async, 48 KiB of dynamic shared memory, `__launch_bounds__(128, 2)`) loads, its
/// parameters agree with the emulator build's, and Cuda(0) computes bit for bit what Emu does —
/// the value an f32 sum in k order gives, which the emulator's mma reproduces.
#[test]
fn a_tensor_core_kernel_runs_through_the_cuda_host_path() {
    if !on_shim() {
        return;
    }
    let g = bitgrad_kernels::tc::TC_GEMM_BF16;
    let (m, n, k) = (70usize, 24usize, 48usize);
    g.check_shape(m, n, k).unwrap();
    let bf = |i: usize, s: usize| half::bf16::from_f32(((i * s % 19) as f32 - 9.0) / 8.0);
    let a: Vec<half::bf16> = (0..m * k).map(|i| bf(i, 37)).collect();
    let b: Vec<half::bf16> = (0..k * n).map(|i| bf(i, 11)).collect();
    let run = |device: Device| -> Vec<f32> {
        let rt = gpu::runtime(device).unwrap();
        let (da, db, dc) = (rt.alloc(2 * m * k).unwrap(), rt.alloc(2 * k * n).unwrap(), rt.alloc(4 * m * n).unwrap());
        rt.htod(bytemuck::cast_slice(&a), da.ptr()).unwrap();
        rt.htod(bytemuck::cast_slice(&b), db.ptr()).unwrap();
        let cfg = LaunchConfig { grid: g.grid(m, n), block: [g.threads, 1, 1], shared_bytes: g.smem_bytes };
        let args = [da.ptr(), db.ptr(), dc.ptr()].map(KernelArg::Ptr);
        let dims = [m, n, k].map(|d| KernelArg::I32(d as i32));
        rt.launch(g.kernel, &cfg, &[args.as_slice(), dims.as_slice()].concat()).unwrap();
        rt.synchronize().unwrap();
        let mut out = vec![0f32; m * n];
        rt.dtoh(dc.ptr(), bytemuck::cast_slice_mut(&mut out)).unwrap();
        out
    };
    let (cuda, emu) = (run(Device::Cuda(0)), run(Device::Emu));
    assert_eq!(
        cuda.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        emu.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    for (i, &got) in cuda.iter().enumerate() {
        let (r, c) = (i / n, i % n);
        let want = (0..k).fold(0f32, |acc, kk| acc + a[r * k + kk].to_f32() * b[kk * n + c].to_f32());
        assert_eq!(got, want, "C[{r}][{c}]");
    }
}

/// The tensor-core convolution through the CUDA host path: NVRTC's CUBIN of
/// `tc_conv_fprop_f32_n64` (what `tc_conv::fprop` picks for 16 output channels; the shape passed
/// by value as `tc_conv_shape`, a 3×3 stride-2 convolution over 8 channels whose 50 output pixels
/// leave a partial tile) loads and runs, and Cuda(0) computes bit for bit what Emu does, which is
/// the f32 sum over the taps (r, s, c) in order.
#[test]
fn a_tensor_core_convolution_runs_through_the_cuda_host_path() {
    if !on_shim() {
        return;
    }
    use bitgrad_kernels::tc_conv::{self, ConvParams, ConvShape};
    let sh = ConvShape::new([2, 9, 9, 8], [16, 3, 3], ConvParams::new(2, 1)).unwrap();
    let l = tc_conv::fprop(&sh, true).unwrap();
    assert_eq!(l.kernel, "tc_conv_fprop_f32_n64");
    let bf = |i: usize, s: usize| half::bf16::from_f32(((i * s % 23) as f32 - 11.0) / 8.0);
    let x: Vec<half::bf16> = (0..sh.x_len()).map(|i| bf(i, 29)).collect();
    let w: Vec<half::bf16> = (0..sh.w_len()).map(|i| bf(i, 13)).collect();
    let run = |device: Device| -> Vec<f32> {
        let rt = gpu::runtime(device).unwrap();
        let (dx, dw) = (rt.alloc(2 * x.len()).unwrap(), rt.alloc(2 * w.len()).unwrap());
        let dy = rt.alloc(4 * sh.y_len()).unwrap();
        rt.htod(bytemuck::cast_slice(&x), dx.ptr()).unwrap();
        rt.htod(bytemuck::cast_slice(&w), dw.ptr()).unwrap();
        let cfg = LaunchConfig { grid: l.grid, block: l.block, shared_bytes: l.smem_bytes };
        let args = [
            KernelArg::Ptr(dx.ptr()),
            KernelArg::Ptr(dw.ptr()),
            KernelArg::U64(0), // no residual
            KernelArg::Ptr(dy.ptr()),
            KernelArg::Struct(sh.bytes()),
        ];
        rt.launch(l.kernel, &cfg, &args).unwrap();
        rt.synchronize().unwrap();
        let mut out = vec![0f32; sh.y_len()];
        rt.dtoh(dy.ptr(), bytemuck::cast_slice_mut(&mut out)).unwrap();
        out
    };
    let (cuda, emu) = (run(Device::Cuda(0)), run(Device::Emu));
    assert_eq!(
        cuda.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        emu.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let [h, wd, c, k] = [sh.h, sh.w, sh.c, sh.k].map(|v| v as usize);
    let (p, q) = (sh.p as usize, sh.q as usize);
    for (i, &got) in cuda.iter().enumerate() {
        let (img, oy, ox, ko) = (i / (p * q * k), i / (q * k) % p, i / k % q, i % k);
        let mut want = 0f32;
        for r in 0..3 {
            for s in 0..3 {
                let (iy, ix) = ((2 * oy + r) as isize - 1, (2 * ox + s) as isize - 1);
                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                    continue;
                }
                for ch in 0..c {
                    let xi = ((img * h + iy as usize) * wd + ix as usize) * c + ch;
                    want += x[xi].to_f32() * w[((ko * 3 + r) * 3 + s) * c + ch].to_f32();
                }
            }
        }
        assert_eq!(got, want, "y[{i}]");
    }
}
