//! Helpers shared by the integration tests that run the `bitgrad` binary as a user does.
// Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bitgrad::models::io::{self, LoadOptions};
use bitgrad::models::StateDict;
use bitgrad::Tensor;

/// The committed timm fixtures (tests/fixtures/models).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

/// A path in this test binary's own scratch folder.
pub fn tmp(name: &str) -> PathBuf {
    let crate_name = env!("CARGO_CRATE_NAME").replace('_', "-");
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{crate_name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

pub fn bitgrad(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bitgrad")).args(args).output().expect("the bitgrad binary runs")
}

/// Runs and expects success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = bitgrad(args);
    let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "bitgrad {args:?} failed:\n{so}\n{se}");
    so.into_owned()
}

/// Runs and expects a clean failure (exit 1, "error: …", no panic); returns stderr.
pub fn fails(args: &[&str]) -> String {
    let out = bitgrad(args);
    let se = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "bitgrad {args:?} should fail cleanly:\n{se}");
    assert!(se.starts_with("error: ") && !se.contains("panicked"), "{se}");
    se
}

pub fn load(p: &Path) -> StateDict {
    io::load_safetensors(p, &LoadOptions::new()).unwrap()
}

/// max |got − want| / max |want|.
pub fn rel(got: &Tensor, want: &Tensor) -> f64 {
    let (g, w) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    assert_eq!(g.len(), w.len());
    let scale = w.iter().fold(0f64, |m, v| m.max(v.abs()));
    g.iter().zip(&w).fold(0f64, |m, (a, b)| m.max((a - b).abs())) / scale
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
