//! Static SASS check of the tensor-core kernels (design.md §5, layer 5), without a GPU: each
//! kernel of `bitgrad_kernels::tc::TC_KERNELS` is compiled by NVRTC for sm_80 and sm_90 to CUBIN
//! (through `nvrtc::compile`, the runtime's own path, with ptxas's `-v` report), disassembled by
//! `nvdisasm` (PyPI `nvidia-cuda-nvdisasm`), and must show what the kernel was written for:
//! - `HMMA.16816.F32.BF16` inside its main loop, as many per iteration as the tile implies
//!   (warp tile / (16×8) × tile_k / 16);
//! - `LDSM` (ldmatrix) and `LDGSTS` (cp.async) in that main loop;
//! - no local memory traffic (`LDL`/`STL`: spills or stack arrays);
//! - at least 2 blocks per SM at its registers and shared memory (sm_80: 64K registers, 164 KiB
//!   shared memory per SM; sm_90: 228 KiB; 2048 threads; registers allocated per warp in units of
//!   256; 1 KiB of shared memory reserved per block).
//!
//! Prints a table (registers, shared memory, blocks per SM and what limits them, HMMA per
//! main-loop iteration). Skips with the reason when NVRTC or nvdisasm is missing, unless
//! `BITGRAD_REQUIRE_SASS=1` (scripts/test.sh sets it after installing both), which fails instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use bitgrad_engine::gpu::cuda::{nvrtc, ptxas};
use bitgrad_kernels::tc::{TcGemm, TC_KERNELS};
use rayon::prelude::*;

/// Per-SM resources that bound occupancy (CUDA C Programming Guide, "Compute Capabilities").
#[derive(Debug, Clone, Copy)]
struct SmLimits {
    arch: &'static str,
    regs: u32,
    smem: u32,
    threads: u32,
    blocks: u32,
}

const SM80: SmLimits = SmLimits { arch: "sm_80", regs: 65536, smem: 164 * 1024, threads: 2048, blocks: 32 };
const SM90: SmLimits = SmLimits { arch: "sm_90", regs: 65536, smem: 228 * 1024, threads: 2048, blocks: 32 };
/// Registers are allocated per warp in units of this many.
const REG_UNIT: u32 = 256;
/// Shared memory the system reserves per block (sm_80 and later), and its allocation unit.
const SMEM_RESERVED: u32 = 1024;
const SMEM_UNIT: u32 = 128;

/// Resident blocks per SM and the resource that limits them.
fn blocks_per_sm(l: &SmLimits, threads: u32, regs: u32, smem: u32) -> (u32, &'static str) {
    let warps = threads.div_ceil(32);
    let regs_per_warp = (regs * 32).div_ceil(REG_UNIT) * REG_UNIT;
    let by_regs = if regs == 0 { u32::MAX } else { l.regs / regs_per_warp / warps };
    let smem_block = (smem + SMEM_RESERVED).div_ceil(SMEM_UNIT) * SMEM_UNIT;
    let by_smem = l.smem / smem_block;
    let by_threads = l.threads / threads;
    [(by_regs, "registers"), (by_smem, "shared memory"), (by_threads, "threads"), (l.blocks, "blocks")]
        .into_iter()
        .min_by_key(|&(n, _)| n)
        .unwrap()
}

#[test]
fn occupancy_arithmetic() {
    // 256 threads × 32 registers, no shared memory: 8 blocks (2048 threads, and 64K registers).
    assert_eq!(blocks_per_sm(&SM80, 256, 32, 0).0, 8);
    // 128 threads × 255 registers: 8160 → 8192 per warp, 8 warps per SM, 2 blocks.
    assert_eq!(blocks_per_sm(&SM80, 128, 255, 0), (2, "registers"));
    assert_eq!(blocks_per_sm(&SM80, 128, 128, 0), (4, "registers"));
    // 48 KiB + the reserved 1 KiB per block: 3 blocks in 164 KiB, 4 in 228 KiB.
    assert_eq!(blocks_per_sm(&SM80, 128, 64, 49152), (3, "shared memory"));
    assert_eq!(blocks_per_sm(&SM90, 128, 64, 49152), (4, "shared memory"));
    assert_eq!(blocks_per_sm(&SM80, 32, 16, 0), (32, "blocks"));
}

/// One instruction of a disassembly: its mnemonic with modifiers (`HMMA.16816.F32.BF16`), the
/// label it branches to (for `BRA`), and the labels defined right before it.
#[derive(Debug, Default)]
struct Insn {
    op: String,
    target: Option<String>,
    labels: Vec<String>,
}

/// The instructions of `kernel` in `nvdisasm -c` output (its `.text.<kernel>` section).
fn parse_sass(sass: &str, kernel: &str) -> Vec<Insn> {
    let header = format!(".text.{kernel}:");
    let mut out = Vec::new();
    let mut inside = false;
    let mut labels = Vec::new();
    for line in sass.lines() {
        let l = line.trim();
        if l.starts_with(".text.") && l.ends_with(':') {
            inside = l == header;
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(label) = l.strip_suffix(':').filter(|s| s.starts_with('.') && !s.contains(' ')) {
            labels.push(label.to_string());
            continue;
        }
        // `/*0a30*/  @!P0 HMMA.16816.F32.BF16 R4, R8, R12, R4 ;`
        let Some(rest) = l.strip_prefix("/*").and_then(|r| r.split_once("*/")).map(|(_, r)| r.trim()) else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let mut op = words.next().unwrap_or_default();
        if op.starts_with('@') {
            op = words.next().unwrap_or_default(); // a predicate guard
        }
        let target = (op == "BRA" || op.starts_with("BRA."))
            .then(|| rest.split(['(', ')']).nth(1).map(|s| s.trim_matches('`').to_string()))
            .flatten();
        out.push(Insn { op: op.trim_end_matches(';').to_string(), target, labels: std::mem::take(&mut labels) });
    }
    out
}

/// The loops of a kernel as [start, end] instruction ranges: a branch back to a label at or
/// before it closes a loop that starts at that label.
fn loops(insns: &[Insn]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (end, i) in insns.iter().enumerate() {
        let Some(t) = &i.target else { continue };
        if let Some(start) = insns[..=end].iter().position(|x| x.labels.contains(t)) {
            out.push((start, end));
        }
    }
    out
}

fn count(insns: &[Insn], prefix: &str) -> usize {
    insns.iter().filter(|i| i.op.starts_with(prefix)).count()
}

/// `nvdisasm`: `$NVDISASM`, else beside the loaded libnvrtc (the PyPI wheels share
/// `nvidia/cu13/{bin,lib}`), else `$CUDA_HOME/bin`, `/usr/local/cuda/bin`, else `$PATH`.
fn find_nvdisasm() -> Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("NVDISASM") {
        candidates.push(p.into());
    }
    if let Some(lib) = bitgrad_engine::gpu::cuda::libs::loaded_library_dir("libnvrtc.so") {
        if let Some(prefix) = lib.parent() {
            candidates.push(prefix.join("bin/nvdisasm"));
        }
    }
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        candidates.push(Path::new(&home).join("bin/nvdisasm"));
    }
    candidates.push("/usr/local/cuda/bin/nvdisasm".into());
    candidates.push("nvdisasm".into());
    for c in candidates {
        if let Ok(out) = Command::new(&c).arg("--version").output() {
            if out.status.success() {
                return Ok(c);
            }
        }
    }
    Err("nvdisasm not found ($NVDISASM, beside libnvrtc, $CUDA_HOME/bin, /usr/local/cuda/bin, $PATH)".into())
}

/// The toolchain, or why it is missing.
fn toolchain() -> Result<PathBuf, String> {
    nvrtc::version().map_err(|e| e.to_string())?;
    find_nvdisasm()
}

/// What the check found for one kernel on one arch.
struct Row {
    registers: u32,
    static_smem: u32,
    blocks: (u32, &'static str),
    hmma_loop: usize,
    hmma_total: usize,
    /// (in the main loop, in the kernel)
    ldsm: (usize, usize),
    ldgsts: (usize, usize),
    local: usize,
}

/// Each source file holding a tensor-core kernel, compiled once per arch (several kernels share
/// a file), the compiles spread over the cores (NVRTC is thread-safe for separate programs).
type Compiles = HashMap<(&'static str, &'static str), Result<nvrtc::Compiled, String>>;

fn compile_sources() -> Compiles {
    let mut jobs: Vec<(&'static str, &'static str, &'static str)> = Vec::new();
    for g in TC_KERNELS {
        let src = bitgrad_kernels::find_source(g.kernel).expect("a TC_KERNELS entry is compiled in");
        for l in [SM80, SM90] {
            if !jobs.iter().any(|j| (j.0, j.2) == (src.name, l.arch)) {
                jobs.push((src.name, src.source, l.arch));
            }
        }
    }
    jobs.par_iter()
        .map(|&(name, source, arch)| {
            ((name, arch), nvrtc::compile(source, name, arch, &["--ptxas-options=-v"]).map_err(|e| e.to_string()))
        })
        .collect()
}

fn check(nvdisasm: &Path, compiles: &Compiles, g: &TcGemm, l: &SmLimits, failures: &mut Vec<String>) -> Option<Row> {
    let src = bitgrad_kernels::find_source(g.kernel).expect("a TC_KERNELS entry is compiled in");
    let what = format!("{} for {}", g.kernel, l.arch);
    let compiled = match &compiles[&(src.name, l.arch)] {
        Ok(c) => c,
        Err(e) => {
            failures.push(format!("{what}: {e}"));
            return None;
        }
    };
    let report = ptxas::parse(&compiled.log);
    let Some(f) = report.iter().find(|f| f.entry && f.name == g.kernel) else {
        failures.push(format!("{what}: ptxas reported no such entry:\n{}", compiled.log));
        return None;
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sass_tc");
    std::fs::create_dir_all(&dir).unwrap();
    let cubin = dir.join(format!("{}_{}.cubin", g.kernel, l.arch));
    std::fs::write(&cubin, &compiled.code).unwrap();
    let out = Command::new(nvdisasm).arg("-c").arg(&cubin).output().expect("nvdisasm ran for --version");
    if !out.status.success() {
        failures.push(format!("{what}: nvdisasm failed: {}", String::from_utf8_lossy(&out.stderr)));
        return None;
    }
    let sass = String::from_utf8_lossy(&out.stdout).into_owned();
    std::fs::write(dir.join(format!("{}_{}.sass", g.kernel, l.arch)), &sass).unwrap();
    let insns = parse_sass(&sass, g.kernel);
    if insns.is_empty() {
        failures.push(format!("{what}: no `.text.{}` section in the disassembly", g.kernel));
        return None;
    }
    // The main loop: the loop holding the most HMMA.
    let hmma = "HMMA.16816.F32.BF16";
    let main = loops(&insns).into_iter().max_by_key(|&(s, e)| count(&insns[s..=e], hmma));
    let in_loop = |op: &str| main.map_or(0, |(s, e)| count(&insns[s..=e], op));
    let hmma_loop = in_loop(hmma);
    let row = Row {
        registers: f.registers,
        static_smem: f.smem,
        blocks: blocks_per_sm(l, g.threads, f.registers, f.smem + g.smem_bytes),
        hmma_loop,
        hmma_total: count(&insns, hmma),
        ldsm: (in_loop("LDSM"), count(&insns, "LDSM")),
        ldgsts: (in_loop("LDGSTS"), count(&insns, "LDGSTS")),
        local: count(&insns, "LDL") + count(&insns, "STL"),
    };
    let want = g.mma_per_k_tile() as usize;
    if row.hmma_loop == 0 || !row.hmma_loop.is_multiple_of(want) {
        failures.push(format!(
            "{what}: the main loop has {} {hmma}, expected a multiple of {want} (one k tile: {}×{} warp tile, k {})",
            row.hmma_loop, g.warp_m, g.warp_n, g.tile_k
        ));
    }
    if row.ldsm.0 == 0 || row.ldgsts.0 == 0 {
        failures.push(format!(
            "{what}: the main loop has {} LDSM and {} LDGSTS: ldmatrix or cp.async is missing from it",
            row.ldsm.0, row.ldgsts.0
        ));
    }
    if row.local > 0 || f.spills() || f.stack_frame > 0 {
        failures.push(format!(
            "{what}: local memory: {} LDL/STL, {} B stack, {} B spilled, {} B reloaded",
            row.local, f.stack_frame, f.spill_stores, f.spill_loads
        ));
    }
    if row.blocks.0 < 2 {
        failures.push(format!(
            "{what}: {} block(s) per SM (limited by {}) with {} registers and {} B shared memory; the design needs 2",
            row.blocks.0,
            row.blocks.1,
            f.registers,
            f.smem + g.smem_bytes
        ));
    }
    Some(row)
}

#[test]
fn tensor_core_kernels_use_hmma_ldsm_ldgsts_without_local_memory_at_two_blocks_per_sm() {
    let nvdisasm = match toolchain() {
        Ok(p) => p,
        Err(why) => {
            let why = format!(
                "skipped: {why}. Install NVRTC 13.0 and nvdisasm with `source scripts/nvrtc-env.sh` (pip \
                 nvidia-cuda-nvrtc, nvidia-cuda-runtime, nvidia-cuda-nvdisasm into .cuda-ci/py)"
            );
            assert!(std::env::var("BITGRAD_REQUIRE_SASS").as_deref() != Ok("1"), "BITGRAD_REQUIRE_SASS=1 but {why}");
            println!("{why}");
            return;
        }
    };
    let compiles = compile_sources();
    let mut failures = Vec::new();
    let mut table = String::from(
        "| kernel | arch | registers | smem (static + dynamic) | blocks/SM (limit) | HMMA per main-loop iteration | \
         HMMA | LDSM (loop / all) | LDGSTS (loop / all) | LDL/STL |\n| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for g in TC_KERNELS {
        for l in [SM80, SM90] {
            if let Some(r) = check(&nvdisasm, &compiles, g, &l, &mut failures) {
                table += &format!(
                    "| {} | {} | {} | {} + {} | {} ({}) | {} | {} | {} / {} | {} / {} | {} |\n",
                    g.kernel,
                    l.arch,
                    r.registers,
                    r.static_smem,
                    g.smem_bytes,
                    r.blocks.0,
                    r.blocks.1,
                    r.hmma_loop,
                    r.hmma_total,
                    r.ldsm.0,
                    r.ldsm.1,
                    r.ldgsts.0,
                    r.ldgsts.1,
                    r.local
                );
            }
        }
    }
    let report = format!("nvdisasm: {}\n\n{table}", nvdisasm.display());
    println!("{report}");
    // Also kept beside the kernel build check's table (scripts/test.sh prints it in its log).
    if let Some(out) = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().map(|t| t.join("sass-tc.md")) {
        if let Err(e) = std::fs::write(&out, &report) {
            println!("could not write {}: {e}", out.display());
        }
    }
    assert!(failures.is_empty(), "SASS check failed:\n{}", failures.join("\n"));
}

#[test]
fn the_parser_finds_loops_and_predicated_instructions() {
    let sass = "\t.text.k:\n\
        /*0000*/  MOV R1, c[0x0][0x28] ;\n\
        .L_x_0:\n\
        /*0010*/  LDSM.16.M88.4 R4, [R2] ;\n\
        /*0020*/  HMMA.16816.F32.BF16 R8, R4, R6, R8 ;\n\
        /*0030*/  @P0 BRA `(.L_x_0) ;\n\
        /*0040*/  EXIT ;\n\
        \t.text.other:\n\
        /*0000*/  HMMA.16816.F32.BF16 R8, R4, R6, R8 ;\n";
    let insns = parse_sass(sass, "k");
    assert_eq!(insns.len(), 5);
    assert_eq!(loops(&insns), vec![(1, 3)]);
    assert_eq!(count(&insns, "HMMA.16816.F32.BF16"), 1);
    assert_eq!(insns[3].target.as_deref(), Some(".L_x_0"));
}
