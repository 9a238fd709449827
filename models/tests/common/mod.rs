//! Test helpers: reading the fixtures of tests/fixtures/models (written by gen_fixtures.py) and
//! comparing tensors with a tolerance relative to the reference's largest magnitude.
#![allow(dead_code)]

use std::path::PathBuf;

use bitgrad_engine::{Device, Tensor};
use bitgrad_models::StateDict;
use safetensors::{Dtype, SafeTensors};

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models")
}

/// A safetensors file as a StateDict with its metadata, f32/f64/i64 tensors on the CPU.
// Read with the `safetensors` crate directly until bitgrad_models::io::safetensors::load lands.
pub fn read_safetensors(path: &std::path::Path) -> StateDict {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e} (see tests/fixtures/README.md)", path.display()));
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut sd = StateDict::new();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    for name in names {
        let view = st.tensor(&name).unwrap();
        let shape = view.shape().to_vec();
        let t = match view.dtype() {
            Dtype::F32 => Tensor::from_vec(
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect::<Vec<_>>(),
                shape,
                Device::Cpu,
            ),
            Dtype::F64 => Tensor::from_vec(
                view.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect::<Vec<_>>(),
                shape,
                Device::Cpu,
            ),
            Dtype::I64 => Tensor::from_vec(
                view.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect::<Vec<_>>(),
                shape,
                Device::Cpu,
            ),
            d => panic!("{}: unexpected dtype {d:?} for {name}", path.display()),
        };
        sd.insert(name, t.unwrap());
    }
    if let Some(meta) = header.metadata() {
        sd.metadata_mut().extend(meta.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    sd
}

/// The weights of fixture `name` in the fixture's (timm's) key order, with the metadata.
pub fn read_weights(path: &std::path::Path) -> StateDict {
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
