//! Compiling a kernel source with NVRTC. The runtime and the kernel build check
//! (`engine/tests/nvrtc_build.rs`) both come through [`compile`], so the flags are identical.
//!
//! Options: `--gpu-architecture=<arch>` (`sm_XY` gives a CUBIN for that GPU, `compute_XY` PTX the
//! driver JIT-compiles), `-std=c++17`, `-lineinfo` (source lines in profiles and error reports,
//! no speed cost), and the include path with `cuda_fp16.h`. No `--use_fast_math`: kernels keep
//! IEEE division, square root and denormals so they agree with their CPU twins. Every header of
//! `bitgrad_kernels::HEADERS` is handed to NVRTC in memory, so no kernel file is read from disk.

use std::ffi::{c_char, c_int, CString};

use cudarc::nvrtc::sys;

use super::libs::{self, Lib};
use crate::{Error, Result};

/// What a compile produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeKind {
    /// Machine code for one architecture (`sm_XY`).
    Cubin,
    /// PTX text, NUL-terminated, for the driver to JIT (`compute_XY`).
    Ptx,
}

impl CodeKind {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            CodeKind::Cubin => 1,
            CodeKind::Ptx => 2,
        }
    }
    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(CodeKind::Cubin),
            2 => Some(CodeKind::Ptx),
            _ => None,
        }
    }
}

/// A compiled source.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub kind: CodeKind,
    /// The CUBIN, or the PTX with its terminating NUL (what `cuModuleLoadData` takes).
    pub code: Vec<u8>,
    /// NVRTC's log, also on success (ptxas's `-v` report lands here).
    pub log: String,
}

fn unavailable(what: String) -> Error {
    Error::Msg(format!("nvrtc: {what}"))
}

/// Fails with the library's name and the fix when libnvrtc cannot be loaded.
pub fn require() -> Result<()> {
    if Lib::Nvrtc.present() {
        Ok(())
    } else {
        Err(unavailable(Lib::Nvrtc.missing_reason()))
    }
}

/// NVRTC's version, e.g. `(13, 0)`.
pub fn version() -> Result<(i32, i32)> {
    require()?;
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: the library is present (checked above); two out-pointers to live locals.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| unavailable(format!("nvrtcVersion failed: {e}")))?;
    Ok((major, minor))
}

/// The options every compile uses, plus `extra` (e.g. `--ptxas-options=-v`). Finds the include
/// folder (see [`libs::nvrtc_include_dir`]); fails when there is none.
pub fn options(arch: &str, extra: &[&str]) -> Result<Vec<String>> {
    // Loads libnvrtc for good (cudarc keeps it open), so /proc/self/maps shows where it lives.
    version()?;
    let include = libs::nvrtc_include_dir().map_err(unavailable)?;
    let mut o = vec![
        format!("--gpu-architecture={arch}"),
        "-std=c++17".to_string(),
        "-lineinfo".to_string(),
        format!("--include-path={}", include.display()),
    ];
    o.extend(extra.iter().map(|s| s.to_string()));
    Ok(o)
}

/// Compiles `source` (file name `name`, for messages) for `arch` with [`options`]`(arch, extra)`
/// and every `bitgrad_kernels::HEADERS` entry. A compile error returns the log in the error.
pub fn compile(source: &str, name: &str, arch: &str, extra: &[&str]) -> Result<Compiled> {
    let opts = options(arch, extra)?;
    compile_with(source, name, bitgrad_kernels::HEADERS, &opts)
}

/// [`compile`] with explicit headers and complete options.
pub fn compile_with(source: &str, name: &str, headers: &[(&str, &str)], opts: &[String]) -> Result<Compiled> {
    require()?;
    let cstr =
        |s: &str, what: &str| CString::new(s).map_err(|_| unavailable(format!("{what} `{name}` contains a NUL byte")));
    let src = cstr(source, "source")?;
    let file = cstr(name, "file name")?;
    let header_texts = headers.iter().map(|(_, t)| cstr(t, "a header of")).collect::<Result<Vec<_>>>()?;
    let header_names = headers.iter().map(|(n, _)| cstr(n, "a header name of")).collect::<Result<Vec<_>>>()?;
    let texts: Vec<*const c_char> = header_texts.iter().map(|c| c.as_ptr()).collect();
    let names: Vec<*const c_char> = header_names.iter().map(|c| c.as_ptr()).collect();
    let copts = opts.iter().map(|o| cstr(o, "an option for")).collect::<Result<Vec<_>>>()?;
    let opt_ptrs: Vec<*const c_char> = copts.iter().map(|c| c.as_ptr()).collect();

    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer refers to a NUL-terminated string alive until the program is
    // destroyed below; the header arrays have `headers.len()` entries each.
    unsafe {
        sys::nvrtcCreateProgram(
            &mut prog,
            src.as_ptr(),
            file.as_ptr(),
            headers.len() as c_int,
            texts.as_ptr(),
            names.as_ptr(),
        )
        .result()
        .map_err(|e| unavailable(format!("creating the program for {name}: {e}")))?;
    }
    let program = Program(prog);
    // SAFETY: `program` is a live program; the option array outlives the call.
    let status = unsafe { sys::nvrtcCompileProgram(program.0, opt_ptrs.len() as c_int, opt_ptrs.as_ptr()) };
    let log = program.log();
    if let Err(e) = status.result() {
        return Err(Error::Msg(format!("nvrtc: {name} failed to compile for {} ({e}):\n{log}", opts.join(" "))));
    }
    let cubin = opts.iter().any(|o| o.starts_with("--gpu-architecture=sm_"));
    let (kind, code) = if cubin { (CodeKind::Cubin, program.cubin()?) } else { (CodeKind::Ptx, program.ptx()?) };
    Ok(Compiled { kind, code, log })
}

/// Owns an `nvrtcProgram`; destroys it when dropped.
struct Program(sys::nvrtcProgram);

impl Program {
    fn log(&self) -> String {
        // SAFETY: a live program.
        match unsafe { cudarc::nvrtc::result::get_program_log(self.0) } {
            Ok(chars) => {
                let bytes: Vec<u8> = chars.iter().map(|&c| c as u8).take_while(|&b| b != 0).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Err(e) => format!("(no log: {e})"),
        }
    }

    fn cubin(&self) -> Result<Vec<u8>> {
        let mut size = 0usize;
        let mut code;
        // SAFETY: a live, compiled program; the buffer has the size NVRTC reports.
        unsafe {
            sys::nvrtcGetCUBINSize(self.0, &mut size)
                .result()
                .map_err(|e| unavailable(format!("nvrtcGetCUBINSize: {e}")))?;
            code = vec![0u8; size];
            sys::nvrtcGetCUBIN(self.0, code.as_mut_ptr() as *mut c_char)
                .result()
                .map_err(|e| unavailable(format!("nvrtcGetCUBIN: {e}")))?;
        }
        Ok(code)
    }

    fn ptx(&self) -> Result<Vec<u8>> {
        // SAFETY: a live, compiled program. The PTX comes with its NUL, which cuModuleLoadData needs.
        let chars =
            unsafe { cudarc::nvrtc::result::get_ptx(self.0) }.map_err(|e| unavailable(format!("nvrtcGetPTX: {e}")))?;
        Ok(chars.iter().map(|&c| c as u8).collect())
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by nvrtcCreateProgram and destroyed only here.
        let _ = unsafe { sys::nvrtcDestroyProgram(&mut self.0) };
    }
}
