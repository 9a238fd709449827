//! Build script: compiles every CUDA C source under `cuda/` as C++ for the CPU emulator, and
//! generates the Rust tables (`SOURCES`, `TEST_SOURCES`, `HEADERS`) that `src/lib.rs` includes.
//!
//! Entry points are found after preprocessing (kernels may be stamped out by macros): each `.cu`
//! is run through `g++ -E` with `BITGRAD_EMU_SCAN`, where `__global__` becomes a marker token, and
//! `extern "C" <marker> void NAME(` is looked for. Each `.cu` is then compiled as its own
//! translation unit inside a namespace of its own (CUDA modules do not share symbols, so two
//! files may both define a helper called `warp_sum`), followed by its table of trampolines.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

const MARKER: &str = "__bitgrad_emu_entry__";

struct Unit {
    /// Path relative to `cuda/`, e.g. `broken/oob_write.cu`.
    rel: String,
    path: PathBuf,
    kernels: Vec<String>,
}

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cuda = root.join("cuda");
    let emu = root.join("emu");
    for dir in ["cuda", "emu", "build.rs"] {
        println!("cargo:rerun-if-changed={dir}");
    }
    println!("cargo:rerun-if-env-changed=CXX");

    let compiler = base_build(&root).get_compiler();
    let scan = |rel: String| {
        let path = cuda.join(&rel);
        let kernels = scan_entry_points(compiler.path(), &root, &path);
        Unit { rel, path, kernels }
    };
    let sources: Vec<Unit> = list(&cuda, "cu").into_iter().map(&scan).collect();
    let tests: Vec<Unit> = list(&cuda.join("broken"), "cu").into_iter().map(|f| scan(format!("broken/{f}"))).collect();
    let headers = list(&cuda, "cuh");
    check_unique(sources.iter().chain(&tests));

    // C++: one wrapper per .cu, the registry of all tables, and the runtime.
    let mut build = base_build(&root);
    let mut tables = Vec::new();
    for (i, unit) in sources.iter().chain(&tests).enumerate() {
        let ns = format!("bitgrad_emu_f{i}_{}", ident(&unit.rel));
        let wrapper = out.join(format!("{ns}.cpp"));
        write_if_changed(&wrapper, &wrapper_source(unit, &ns));
        build.file(&wrapper);
        tables.push(ns);
    }
    let registry = out.join("bitgrad_emu_registry.cpp");
    write_if_changed(&registry, &registry_source(&tables));
    build.file(&registry);
    for f in ["runtime.cpp", "fibers.cpp", "sync.cpp", "tensor.cpp"] {
        build.file(emu.join(f));
    }
    build.compile("bitgrad_emu");

    // Rust: the source tables.
    let mut rs = String::new();
    rs += "/// Every kernel source this build ships (`kernels/cuda/*.cu`).\n";
    rs += &source_table("SOURCES", &sources);
    rs += "/// Deliberately broken kernels, for the emulator's own tests (`kernels/cuda/broken/*.cu`).\n";
    rs += &source_table("TEST_SOURCES", &tests);
    rs += "/// Every shared header (`kernels/cuda/*.cuh`) as (file name, text), for NVRTC's include list.\n";
    rs += "pub const HEADERS: &[(&str, &str)] = &[\n";
    for h in &headers {
        let _ = writeln!(rs, "    ({h:?}, include_str!({:?})),", cuda.join(h).display().to_string());
    }
    rs += "];\n";
    write_if_changed(&out.join("sources.rs"), &rs);
}

/// The compiler settings shared by the scan and the real compile.
fn base_build(root: &Path) -> cc::Build {
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        // The emulator is slow enough at -O2; never build it unoptimised.
        .opt_level(2)
        .warnings(true)
        .extra_warnings(false)
        // `#pragma unroll` is a hint for NVRTC; g++ does not know it and needs no such hint.
        .flag("-Wno-unknown-pragmas")
        // Every `a*b + c` rounded twice, as the CPU twins compute it, on every host: g++ contracts
        // it into one fused multiply-add wherever the target has the instruction (aarch64 always),
        // which moved the emulated results off the CPU's by an ulp there.
        .flag("-ffp-contract=off")
        .define("BITGRAD_EMU", None)
        .include(root.join("emu"))
        .include(root.join("emu/include"))
        .include(root.join("cuda"))
        // __FILE__ in barrier errors reads `broken/x.cu`, not an absolute path.
        .flag(format!("-fmacro-prefix-map={}/=", root.join("cuda").display()));
    b
}

/// Sorted file names in `dir` with extension `ext` (empty if the folder does not exist).
fn list(dir: &Path, ext: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().is_file() && e.path().extension().is_some_and(|x| x == ext))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Preprocesses `file` in scan mode and returns its `extern "C" __global__` function names.
fn scan_entry_points(cxx: &Path, root: &Path, file: &Path) -> Vec<String> {
    let output = Command::new(cxx)
        .args(["-E", "-P", "-x", "c++", "-std=c++17", "-DBITGRAD_EMU", "-DBITGRAD_EMU_SCAN", "-include"])
        .arg(root.join("emu/cuda_emu.h"))
        .arg("-I")
        .arg(root.join("emu/include"))
        .arg("-I")
        .arg(root.join("cuda"))
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", cxx.display()));
    if !output.status.success() {
        panic!("preprocessing {} failed:\n{}", file.display(), String::from_utf8_lossy(&output.stderr));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut names: Vec<String> = Vec::new();
    for (pos, _) in text.match_indices(MARKER) {
        let before = text[..pos].trim_end();
        if !before.ends_with("extern \"C\"") {
            panic!(
                "{}: every __global__ function must be written `extern \"C\" __global__ void NAME(...)`",
                file.display()
            );
        }
        let after = text[pos + MARKER.len()..].trim_start();
        let rest = after.strip_prefix("void").filter(|r| r.starts_with(char::is_whitespace));
        let rest = rest.unwrap_or_else(|| panic!("{}: a __global__ function must return void", file.display()));
        let rest = rest.trim_start();
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if name.is_empty() || !rest[name.len()..].trim_start().starts_with('(') {
            panic!("{}: cannot read the kernel name after `__global__ void`", file.display());
        }
        if !names.contains(&name) {
            names.push(name); // a prototype and its definition name the same kernel
        }
    }
    names
}

fn check_unique<'a>(units: impl Iterator<Item = &'a Unit>) {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for u in units {
        for k in &u.kernels {
            if let Some((_, other)) = seen.iter().find(|(n, _)| n == k) {
                panic!("kernel `{k}` is defined in both {other} and {}", u.rel);
            }
            seen.push((k, &u.rel));
        }
    }
}

/// `broken/oob-write.cu` -> `broken_oob_write_cu`.
fn ident(rel: &str) -> String {
    rel.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

fn wrapper_source(unit: &Unit, ns: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "// Generated by kernels/build.rs: {} for the CPU emulator.", unit.rel);
    s += "#include \"cuda_emu.h\"\n#include \"emu_registry.h\"\n";
    let _ = writeln!(s, "namespace {ns} {{\n#include {:?}\n}}", unit.path.display().to_string());
    s += "static const ::emu::KernelEntry entries[] = {\n";
    for k in &unit.kernels {
        let _ = writeln!(s, "    EMU_KERNEL_ENTRY({ns}, {k}),");
    }
    if unit.kernels.is_empty() {
        s += "    {nullptr, nullptr, 0, nullptr, nullptr},\n";
    }
    s += "};\n";
    let _ = writeln!(s, "extern \"C\" const ::emu::KernelTable {ns}_table = {{entries, {}}};", unit.kernels.len());
    s
}

fn registry_source(tables: &[String]) -> String {
    let mut s = String::from("// Generated by kernels/build.rs: every source's kernel table.\n");
    s += "#include \"emu_registry.h\"\n";
    for t in tables {
        let _ = writeln!(s, "extern \"C\" const ::emu::KernelTable {t}_table;");
    }
    s += "extern \"C\" const ::emu::KernelTable* const bitgrad_emu_tables[] = {\n";
    for t in tables {
        let _ = writeln!(s, "    &{t}_table,");
    }
    s += "    nullptr,\n};\n";
    let _ = writeln!(s, "extern \"C\" const size_t bitgrad_emu_table_count = {};", tables.len());
    s
}

fn source_table(name: &str, units: &[Unit]) -> String {
    let mut s = format!("pub const {name}: &[KernelSource] = &[\n");
    for u in units {
        let _ = writeln!(
            s,
            "    KernelSource {{ name: {:?}, source: include_str!({:?}), kernels: &{:?} }},",
            u.rel,
            u.path.display().to_string(),
            u.kernels
        );
    }
    s + "];\n"
}

/// Leaves unchanged files alone so their timestamps do not trigger needless recompiles.
fn write_if_changed(path: &Path, text: &str) {
    if fs::read_to_string(path).ok().as_deref() != Some(text) {
        fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}
