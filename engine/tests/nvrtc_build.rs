//! Kernel build check (design.md §5, layer 5): every `bitgrad_kernels::SOURCES` file compiled by
//! NVRTC for sm_80 and sm_90 to CUBIN, exactly as the runtime compiles it, with ptxas's `-v`
//! report. Fails on a compile error (printing NVRTC's log), on any register spill, and on a
//! kernel the source lists but ptxas never compiled (a mismatch between the list and the file).
//! Prints a table kernel × arch → registers, shared memory, stack, spills, and writes it to
//! `<target>/nvrtc-kernels.md` for the docs.
//!
//! Needs no GPU, only libnvrtc.so.13 and cuda_fp16.h (scripts/test.sh installs both from PyPI).
//! Without them the test prints why and passes, unless `REQUIRE_NVRTC=1` (as in CI).

use bitgrad_engine::gpu::cuda::{libs::Lib, nvrtc, ptxas};
use rayon::prelude::*;

const ARCHS: [&str; 2] = ["sm_80", "sm_90"];

/// Compiled even when no source ships yet, so the toolchain itself (include path, builtins
/// library, CUBIN output) is always checked.
const PROBE: &str = r#"
#include <cuda_fp16.h>
extern "C" __global__ void bitgrad_probe(const __half* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __half2float(x[i]) * 2.0f;
}
"#;

#[test]
fn every_kernel_compiles_for_sm80_and_sm90_without_spills() {
    if let Err(e) = nvrtc::version() {
        let why = format!(
            "skipped: {} not found ({e}). Install it with `python3 -m pip install --target .cuda-ci/py \
             nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96` and set \
             LD_LIBRARY_PATH=$PWD/.cuda-ci/py/nvidia/cu13/lib NVRTC_INCLUDE=$PWD/.cuda-ci/py/nvidia/cu13/include \
             (scripts/test.sh does this)",
            Lib::Nvrtc.file()
        );
        assert!(std::env::var("REQUIRE_NVRTC").as_deref() != Ok("1"), "REQUIRE_NVRTC=1 but {why}");
        println!("{why}");
        return;
    }
    let version = nvrtc::version().unwrap();
    let mut files: Vec<(&str, &str, Vec<&str>)> = vec![("probe.cu", PROBE, vec!["bitgrad_probe"])];
    files.extend(bitgrad_kernels::SOURCES.iter().map(|s| (s.name, s.source, s.kernels.to_vec())));

    let mut failures = Vec::new();
    let mut table = format!(
        "NVRTC {}.{}, `--ptxas-options=-v`; smem = static shared memory (bytes), stack = stack frame (bytes)\n\n\
         | file | kernel | arch | registers | smem | stack | spill stores | spill loads |\n\
         | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |\n",
        version.0, version.1
    );
    // Every (file, arch) compiles independently: spread them over the cores (NVRTC is thread-safe
    // for separate programs), then report in the list's order.
    let jobs: Vec<(&str, &str, &[&str], &str)> = files
        .iter()
        .flat_map(|(name, source, kernels)| ARCHS.map(|arch| (*name, *source, kernels.as_slice(), arch)))
        .collect();
    let compiled: Vec<_> = jobs
        .par_iter()
        .map(|(name, source, _, arch)| nvrtc::compile(source, name, arch, &["--ptxas-options=-v"]))
        .collect();
    for ((name, _, kernels, arch), compiled) in jobs.iter().zip(compiled) {
        let compiled = match compiled {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{name} for {arch}: {e}"));
                continue;
            }
        };
        let report = ptxas::parse(&compiled.log);
        for k in kernels.iter() {
            if !report.iter().any(|f| f.entry && f.name == *k) {
                failures.push(format!(
                    "{name} for {arch}: kernel `{k}` is listed but ptxas compiled no such entry (log:\n{})",
                    compiled.log
                ));
            }
        }
        for f in &report {
            let shown = if f.entry { f.name.clone() } else { format!("{} (device fn)", f.name) };
            table += &format!(
                "| {name} | {shown} | {arch} | {} | {} | {} | {} | {} |\n",
                f.registers, f.smem, f.stack_frame, f.spill_stores, f.spill_loads
            );
            if f.spills() {
                failures.push(format!(
                    "{name} for {arch}: `{}` spills ({} bytes stored, {} loaded with {} registers)",
                    f.name, f.spill_stores, f.spill_loads, f.registers
                ));
            }
        }
    }
    println!("{table}");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).parent().map(|t| t.join("nvrtc-kernels.md"));
    if let Some(out) = out {
        match std::fs::write(&out, &table) {
            Ok(()) => println!("written to {}", out.display()),
            Err(e) => println!("could not write {}: {e}", out.display()),
        }
    }
    assert!(failures.is_empty(), "kernel build check failed:\n{}", failures.join("\n"));
}

/// A compile error comes back as an error carrying NVRTC's log (what a kernel author needs), and
/// PTX output for a virtual architecture is NUL-terminated as `cuModuleLoadData` requires.
#[test]
fn compile_errors_carry_the_log_and_ptx_is_terminated() {
    if nvrtc::version().is_err() {
        println!("skipped: {} not found (see the build check above)", Lib::Nvrtc.file());
        return;
    }
    let bad = "extern \"C\" __global__ void broken(float* y) { y[0] = not_declared_anywhere; }";
    let e = nvrtc::compile(bad, "broken.cu", "sm_90", &[]).unwrap_err().to_string();
    assert!(e.contains("broken.cu") && e.contains("not_declared_anywhere"), "{e}");
    let ptx = nvrtc::compile(PROBE, "probe.cu", "compute_90", &[]).unwrap();
    assert_eq!(ptx.kind, nvrtc::CodeKind::Ptx);
    assert_eq!(ptx.code.last(), Some(&0));
    assert!(String::from_utf8_lossy(&ptx.code).contains(".entry bitgrad_probe"));
    let cubin = nvrtc::compile(PROBE, "probe.cu", "sm_90", &[]).unwrap();
    assert_eq!((cubin.kind, &cubin.code[..4]), (nvrtc::CodeKind::Cubin, &b"\x7fELF"[..]));
}
