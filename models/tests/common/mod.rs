//! Helpers shared by the models tests: temporary folders and synthetic BiT state dicts (weight
//! I/O), reading the fixtures of tests/fixtures/models (written by gen_fixtures.py) and comparing
//! tensors with a tolerance relative to the reference's largest magnitude (timm parity).
#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};

use bitgrad_engine::{DType, Device, Tensor};
use bitgrad_models::StateDict;

/// A fresh folder under cargo's per-target temporary directory, unique per test and process.
pub fn tmp_dir(tag: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `0, 1, 2, …` plus `base`, so every element of every tensor is distinct and a wrong
/// transpose or a swapped tensor shows up as a wrong value.
pub fn ramp(shape: &[usize], base: f32) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|i| base + i as f32).collect(), shape, Device::Cpu).unwrap()
}

/// One tensor of each dtype, including a scalar and an empty one.
pub fn every_dtype() -> StateDict {
    let mut sd = StateDict::new();
    sd.insert("f32", ramp(&[2, 3, 4], -5.5));
    sd.insert("f64", Tensor::from_vec(vec![1.0 / 3.0, -2.5, 1e300, -0.0], [2, 2], Device::Cpu).unwrap());
    sd.insert("f16", ramp(&[3, 2], 0.25).to_dtype(DType::F16).unwrap());
    sd.insert("bf16", ramp(&[5], -2.0).to_dtype(DType::BF16).unwrap());
    sd.insert("i64", Tensor::from_vec(vec![-3i64, 7, 1 << 40], [3], Device::Cpu).unwrap());
    sd.insert("u8", Tensor::from_vec(vec![0u8, 255, 7, 1], [2, 1, 2], Device::Cpu).unwrap());
    sd.insert("scalar", Tensor::from_vec(vec![3.25f32], (), Device::Cpu).unwrap());
    sd.insert("empty", Tensor::zeros([0, 3], DType::F32, Device::Cpu).unwrap());
    sd
}

/// Same names, order, dtypes, shapes and bit-identical values (f64 view of each element).
pub fn assert_same(a: &StateDict, b: &StateDict) {
    assert_eq!(a.names().collect::<Vec<_>>(), b.names().collect::<Vec<_>>());
    for ((n, x), (_, y)) in a.iter().zip(b.iter()) {
        assert_eq!(x.dtype(), y.dtype(), "{n}");
        assert_eq!(x.dims(), y.dims(), "{n}");
        let (xv, yv) = (x.to_vec_f64().unwrap(), y.to_vec_f64().unwrap());
        assert!(xv.iter().zip(&yv).all(|(p, q)| p.to_bits() == q.to_bits()), "{n}: {xv:?} vs {yv:?}");
    }
}

/// Channel widths of a small BiT with layers [1,1,1,1]: stem 8, stage i mid 8·2^i, out 4·mid.
pub const STEM: usize = 8;
pub fn mid(stage: usize) -> usize {
    8 << stage
}
pub fn out(stage: usize) -> usize {
    4 * mid(stage)
}
pub fn cin(stage: usize) -> usize {
    if stage == 0 {
        STEM
    } else {
        out(stage - 1)
    }
}

/// A small BiT ([1,1,1,1], `n_cls` classes) in the original `.npz` names and HWIO layout, with
/// distinct values everywhere, in the order Appendix A lists (`reversed` gives the opposite
/// order, as a zip may list its entries in any order).
pub fn small_bit_npz(n_cls: usize, reversed: bool) -> StateDict {
    let mut v: Vec<(String, Vec<usize>)> =
        vec![("resnet/root_block/standardized_conv2d/kernel".into(), vec![7, 7, 3, STEM])];
    for s in 0..4 {
        let p = format!("resnet/block{}/unit01", s + 1);
        let (ci, m, co) = (cin(s), mid(s), out(s));
        v.push((format!("{p}/a/proj/standardized_conv2d/kernel"), vec![1, 1, ci, co]));
        v.push((format!("{p}/a/group_norm/gamma"), vec![ci]));
        v.push((format!("{p}/a/group_norm/beta"), vec![ci]));
        v.push((format!("{p}/a/standardized_conv2d/kernel"), vec![1, 1, ci, m]));
        v.push((format!("{p}/b/group_norm/gamma"), vec![m]));
        v.push((format!("{p}/b/group_norm/beta"), vec![m]));
        v.push((format!("{p}/b/standardized_conv2d/kernel"), vec![3, 3, m, m]));
        v.push((format!("{p}/c/group_norm/gamma"), vec![m]));
        v.push((format!("{p}/c/group_norm/beta"), vec![m]));
        v.push((format!("{p}/c/standardized_conv2d/kernel"), vec![1, 1, m, co]));
    }
    v.push(("resnet/group_norm/gamma".into(), vec![out(3)]));
    v.push(("resnet/group_norm/beta".into(), vec![out(3)]));
    v.push(("resnet/head/conv2d/kernel".into(), vec![1, 1, out(3), n_cls]));
    v.push(("resnet/head/conv2d/bias".into(), vec![n_cls]));
    let tensors: Vec<(String, Tensor)> =
        v.into_iter().enumerate().map(|(i, (n, s))| (n, ramp(&s, 1000.0 * i as f32))).collect();
    if reversed {
        tensors.into_iter().rev().collect()
    } else {
        tensors.into_iter().collect()
    }
}

/// timm's names for the same model, in timm's state_dict order, with their OIHW shapes.
pub fn small_bit_timm_names(n_cls: usize) -> Vec<(String, Vec<usize>)> {
    let mut v: Vec<(String, Vec<usize>)> = vec![("stem.conv.weight".into(), vec![STEM, 3, 7, 7])];
    for s in 0..4 {
        let p = format!("stages.{s}.blocks.0");
        let (ci, m, co) = (cin(s), mid(s), out(s));
        v.push((format!("{p}.downsample.conv.weight"), vec![co, ci, 1, 1]));
        v.push((format!("{p}.norm1.weight"), vec![ci]));
        v.push((format!("{p}.norm1.bias"), vec![ci]));
        v.push((format!("{p}.conv1.weight"), vec![m, ci, 1, 1]));
        v.push((format!("{p}.norm2.weight"), vec![m]));
        v.push((format!("{p}.norm2.bias"), vec![m]));
        v.push((format!("{p}.conv2.weight"), vec![m, m, 3, 3]));
        v.push((format!("{p}.norm3.weight"), vec![m]));
        v.push((format!("{p}.norm3.bias"), vec![m]));
        v.push((format!("{p}.conv3.weight"), vec![co, m, 1, 1]));
    }
    v.push(("norm.weight".into(), vec![out(3)]));
    v.push(("norm.bias".into(), vec![out(3)]));
    v.push(("head.fc.weight".into(), vec![n_cls, out(3), 1, 1]));
    v.push(("head.fc.bias".into(), vec![n_cls]));
    v
}

/// The message of an error, for asserting on its content.
pub fn err_msg<T: std::fmt::Debug>(r: bitgrad_models::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models")
}

/// A safetensors file as a StateDict with its metadata, tensors on the CPU in the file's dtypes.
pub fn read_safetensors(path: &Path) -> StateDict {
    bitgrad_models::io::load_safetensors(path, &bitgrad_models::io::LoadOptions::new())
        .unwrap_or_else(|e| panic!("{e} (see tests/fixtures/README.md)"))
}

/// The weights of fixture `name` in the fixture's (timm's) key order, with the metadata.
pub fn read_weights(path: &Path) -> StateDict {
    let sd = read_safetensors(path);
    let keys = sd.metadata().get("keys").expect("fixture metadata lacks `keys`").clone();
    let mut ordered: StateDict = keys.split(',').map(|k| (k.to_string(), sd.get(k).unwrap().clone())).collect();
    assert_eq!(ordered.len(), sd.len());
    *ordered.metadata_mut() = sd.metadata().clone();
    ordered
}

/// max |got − want| ≤ rel · max|want|; returns the observed ratio for reporting.
pub fn assert_close(got: &Tensor, want: &Tensor, rel: f64, what: &str) -> f64 {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let (g, w) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    let scale = w.iter().fold(0f64, |m, v| m.max(v.abs()));
    let err = g.iter().zip(&w).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(scale > 0.0, "{what}: reference is all zeros");
    assert!(err <= rel * scale, "{what}: max |diff| {err:e} > {rel:e} · max|ref| {scale:e}");
    err / scale
}

/// max |got − want| / max|want| (no assertion), for reporting.
pub fn rel_err(got: &Tensor, want: &Tensor) -> f64 {
    let (g, w) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    let scale = w.iter().fold(0f64, |m, v| m.max(v.abs()));
    g.iter().zip(&w).fold(0f64, |m, (a, b)| m.max((a - b).abs())) / scale
}
