//! Finding the CUDA libraries before anything calls into them.
//!
//! cudarc loads the driver, NVRTC and cuBLAS by name on first use and *panics* when one is
//! missing, so every entry point of the CUDA runtime asks here first and turns a missing library
//! into an error that names the file and says how to make it visible.
//!
//! The names cudarc tries, in order, through the loader's normal search (`LD_LIBRARY_PATH`, the
//! ld.so cache, the system folders), taking the first that opens: the unversioned name first
//! (`libcuda.so`, `libnvrtc.so`, `libcublas.so`), then `lib{n}64*.so` variants, then
//! `lib{n}.so.13`, and after that older majors — `.so.12`, `.11`, `.10`, `.9` — and last
//! `.so.1`. So the driver is usually found as `libcuda.so.1` (the NVIDIA driver installs that
//! name; `libcuda.so` only with a toolkit's development files), and a CUDA 12 `libcublas.so.12`
//! is accepted when no 13 is found. The messages below name the files a user should provide.

use std::path::{Path, PathBuf};

/// A CUDA library the runtime needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lib {
    /// The driver (installed with the NVIDIA driver, not with CUDA or PyTorch).
    Driver,
    /// The runtime compiler, for the kernels.
    Nvrtc,
    /// cuBLAS, for GEMM.
    Cublas,
}

impl Lib {
    /// The file name cudarc loads (the `cuda-13000` feature fixes the major versions).
    pub fn file(self) -> &'static str {
        match self {
            Lib::Driver => "libcuda.so.1",
            Lib::Nvrtc => "libnvrtc.so.13",
            Lib::Cublas => "libcublas.so.13",
        }
    }

    /// Whether the library can be loaded. Only a `dlopen`; no CUDA call is made.
    pub fn present(self) -> bool {
        // SAFETY: each of these only tries to dlopen the library by its candidate names.
        unsafe {
            match self {
                Lib::Driver => cudarc::driver::sys::is_culib_present(),
                Lib::Nvrtc => cudarc::nvrtc::sys::is_culib_present(),
                Lib::Cublas => cudarc::cublas::sys::is_culib_present(),
            }
        }
    }

    /// Why the library is needed and how to make it loadable.
    pub fn missing_reason(self) -> String {
        let file = self.file();
        match self {
            Lib::Driver => format!(
                "no CUDA driver found ({file} could not be loaded): this machine has no NVIDIA driver, or its \
                 folder is not on the loader's path (add it to LD_LIBRARY_PATH, e.g. /usr/lib/{}-linux-gnu)",
                std::env::consts::ARCH
            ),
            Lib::Nvrtc | Lib::Cublas => {
                let what = if self == Lib::Nvrtc { "NVRTC, which compiles the kernels" } else { "cuBLAS, for GEMM" };
                format!(
                    "{file} ({what}) could not be loaded: put its folder on LD_LIBRARY_PATH — with PyTorch installed, \
                     `export LD_LIBRARY_PATH=$(python3 -c 'import nvidia, glob; \
                     print(\":\".join(glob.glob(nvidia.__path__[0] + \"/*/lib\")))'):$LD_LIBRARY_PATH`; \
                     with a CUDA toolkit, $CUDA_HOME/lib64"
                )
            }
        }
    }
}

/// The header every kernel build needs and NVRTC does not provide.
const PROBE_HEADER: &str = "cuda_fp16.h";

/// The folder with `cuda_fp16.h` (and `cuda_bf16.h`) for NVRTC's `--include-path`:
/// `$NVRTC_INCLUDE`, else `$CUDA_HOME/include`, `/usr/local/cuda/include`, else the `include`
/// folder next to the loaded libnvrtc (`…/nvidia/cu13/lib` → `…/nvidia/cu13/include`, or any
/// `…/nvidia/*/include` in an older per-library pip layout).
pub fn nvrtc_include_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("NVRTC_INCLUDE") {
        let dir = PathBuf::from(dir);
        return if dir.join(PROBE_HEADER).is_file() {
            Ok(dir)
        } else {
            Err(format!("NVRTC_INCLUDE={} has no {PROBE_HEADER}", dir.display()))
        };
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        candidates.push(Path::new(&home).join("include"));
    }
    candidates.push("/usr/local/cuda/include".into());
    if let Some(lib) = loaded_library_dir("libnvrtc.so") {
        if let Some(prefix) = lib.parent() {
            candidates.push(prefix.join("include"));
            // site-packages/nvidia/<pkg>/lib → site-packages/nvidia/*/include
            if let Some(nvidia) = prefix.parent() {
                if let Ok(entries) = std::fs::read_dir(nvidia) {
                    let mut more: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("include")).collect();
                    more.sort();
                    candidates.extend(more);
                }
            }
        }
    }
    candidates.into_iter().find(|d| d.join(PROBE_HEADER).is_file()).ok_or_else(|| {
        format!(
            "NVRTC needs {PROBE_HEADER} and none was found ($CUDA_HOME/include, /usr/local/cuda/include, next \
             to libnvrtc): set NVRTC_INCLUDE to a folder that has it (pip package nvidia-cuda-runtime: \
             nvidia/cu13/include)"
        )
    })
}

/// The folder of a shared library this process has loaded whose file name starts with `prefix`,
/// read from `/proc/self/maps` (Linux only; `None` elsewhere or when it is not loaded).
pub fn loaded_library_dir(prefix: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(Path::new)
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_the_file_and_the_fix() {
        for lib in [Lib::Driver, Lib::Nvrtc, Lib::Cublas] {
            let r = lib.missing_reason();
            assert!(r.contains(lib.file()), "{r}");
            assert!(r.contains("LD_LIBRARY_PATH"), "{r}");
        }
    }
}
