//! The NCCL backend without a GPU (built with `--features nccl`): with no NCCL library the run
//! stops with the message that says what to install; with a `libnccl.so.2` only (the name NVIDIA
//! ships, which cudarc does not look for) bitgrad links it as `libnccl.so`, re-executes itself,
//! finds the library and then stops because there is no GPU — both as errors, never panics.
//! (A world-size-1 NCCL run on a real GPU is in scripts/gpu-check.sh.)
#![cfg(feature = "nccl")]

use std::path::PathBuf;
use std::process::Command;

fn finetune(envs: &[(&str, &str)]) -> (bool, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bitgrad"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["finetune", "--weights", "assets/demo/upstream.safetensors", "--data", "assets/demo"])
        .args(["--format", "idx", "--shots", "2", "--steps", "1", "--batch", "4", "--quiet"])
        .args(["--device", "cuda", "--dist", "nccl", "--out"])
        .arg(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("nccl-{}", std::process::id())))
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("BITGRAD_NCCL_LIB")
        .env_remove("BITGRAD_NCCL_REEXEC");
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("panicked"), "{text}");
    (out.status.success(), text)
}

#[test]
fn without_the_library_the_error_says_what_to_install() {
    if std::path::Path::new("/usr/lib/x86_64-linux-gnu/libnccl.so.2").exists() {
        eprintln!("skipped: this machine has a system NCCL");
        return;
    }
    let (ok, text) = finetune(&[]);
    assert!(!ok, "{text}");
    assert!(text.contains("NCCL was not found") && text.contains("nvidia-nccl-cu13"), "{text}");
}

#[test]
fn with_libnccl_so_2_but_no_gpu_the_error_says_so() {
    if std::path::Path::new("/dev/nvidia0").exists() {
        eprintln!("skipped: this machine has a GPU");
        return;
    }
    // A stand-in for NVIDIA's library: the same file name and soname, no symbols (none is called
    // before the GPU check).
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fake-nccl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("empty.c");
    std::fs::write(&src, "int bitgrad_fake_nccl;\n").unwrap();
    let lib = dir.join("libnccl.so.2");
    let cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-shared", "-fPIC", "-Wl,-soname,libnccl.so.2", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .unwrap();
    assert!(cc.success());
    let (ok, text) = finetune(&[("BITGRAD_NCCL_LIB", dir.to_str().unwrap())]);
    assert!(!ok, "{text}");
    assert!(text.contains("NCCL needs a GPU"), "{text}");
}
