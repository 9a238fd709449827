//! A report of the machine bitgrad runs on: CPU, threads, SIMD level, and whether CUDA could be
//! used — and if not, exactly why. Never panics: a missing CUDA driver is a line in the report, not
//! an error.

/// The widest SIMD instruction set the CPU offers that the CPU kernels use: `gemm`'s (built with
/// its `x86-v4` feature, so AVX-512F machines run its AVX-512 kernels) and bitgrad's own AVX2+FMA
/// loops (group norm, SGD), which run on AVX2 and AVX-512 machines alike.
pub fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return "avx2+fma";
        }
        if std::arch::is_x86_feature_detected!("avx") {
            return "avx";
        }
        "sse2"
    }
    #[cfg(target_arch = "aarch64")]
    {
        "neon"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar"
    }
}

/// The CPU model name from /proc/cpuinfo, when there is one.
pub fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string())
}

/// Whether the CUDA driver library (libcuda.so.1) can be loaded. Checked before anything touches
/// the driver, because cudarc panics when it is absent.
pub fn cuda_driver_present() -> bool {
    // SAFETY: only tries to dlopen the library; no driver call is made.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether NVRTC (the runtime CUDA compiler, libnvrtc.so.13) can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: as above, only a dlopen.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// The emulator's line: its `describe()` when it can be opened, else why not.
pub fn emu_status() -> String {
    match crate::gpu::runtime(crate::Device::Emu) {
        Ok(rt) => format!("available ({})", rt.describe()),
        Err(e) => format!("unavailable: {e}"),
    }
}

/// NVRTC's version and include folder, or why kernels cannot be compiled here.
pub fn nvrtc_status() -> String {
    use crate::gpu::cuda::{libs, nvrtc};
    match nvrtc::version() {
        Ok((a, b)) => match libs::nvrtc_include_dir() {
            Ok(dir) => format!("{} {a}.{b}, headers in {}", libs::Lib::Nvrtc.file(), dir.display()),
            Err(why) => format!("{} {a}.{b}, but {why}", libs::Lib::Nvrtc.file()),
        },
        Err(e) => format!("not usable (needed only to compile CUDA kernels): {e}"),
    }
}

/// The instruction-set levels: what the CPU has, what bitgrad's kernels use (see
/// [`crate::cpu::isa`]), and one line per kernel family.
pub fn isa_report() -> String {
    use crate::cpu::isa::{self, Isa};
    let levels: Vec<&str> = Isa::available().iter().map(|i| i.name()).collect();
    let forced = match std::env::var("BITGRAD_CPU_ISA") {
        Ok(v) if !v.trim().is_empty() => format!(" (BITGRAD_CPU_ISA={v})"),
        _ => String::new(),
    };
    let mut s = format!(
        "cpu isa:      {}, active {}{forced}; levels here: {}\n",
        isa::detected(),
        isa::active(),
        levels.join(" ")
    );
    for line in isa::report().lines() {
        s += &format!("  {line}\n");
    }
    s
}

/// The report printed by `bitgrad info`.
pub fn machine_report() -> String {
    let mut s = String::new();
    let threads = rayon::current_num_threads();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    s += &format!("cpu:          {}\n", cpu_model().unwrap_or_else(|| "unknown".into()));
    // `cpu::pool::join_global_pool` (the CLI calls it) makes the main thread worker 0.
    let main = if rayon::current_thread_index() == Some(0) { ", this thread included" } else { "" };
    s += &format!("threads:      {threads} (of {cores} available{main}; set RAYON_NUM_THREADS to change)\n");
    s += &format!("simd:         {}\n", simd_level());
    s += &isa_report();
    s += &format!("emu:          {}\n", emu_status());
    s += &format!("cuda:         {}\n", crate::gpu::cuda::status());
    s += &format!("nvrtc:        {}\n", nvrtc_status());
    s
}
