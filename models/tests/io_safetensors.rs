//! safetensors: round trips for every dtype, interop with the reference `safetensors` crate,
//! options (dtype conversion), atomic saving, and one clear error per kind of bad file.

mod common;

use std::path::Path;

use bitgrad_engine::{DType, Device, Tensor};
use bitgrad_models::io::{load_safetensors, save_safetensors};
use bitgrad_models::{LoadOptions, StateDict};
use common::*;

fn load(p: &Path) -> bitgrad_models::Result<StateDict> {
    load_safetensors(p, &LoadOptions::default())
}

#[test]
fn round_trip_every_dtype_with_metadata() {
    let dir = tmp_dir("st-roundtrip");
    let mut sd = every_dtype();
    sd.metadata_mut().insert("arch".into(), "resnetv2_50x1_bit".into());
    sd.metadata_mut().insert("json".into(), "{\"layers\": [3, 4, 6, 3]}".into());
    let p = dir.join("w.safetensors");
    save_safetensors(&p, &sd).unwrap();
    let back = load(&p).unwrap();
    assert_same(&sd, &back);
    assert_eq!(back.metadata(), sd.metadata());
    // Only the final file is left: the temporary one was renamed.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

#[test]
fn views_are_saved_as_their_elements() {
    let dir = tmp_dir("st-views");
    let base = ramp(&[3, 4], 0.0);
    let mut sd = StateDict::new();
    sd.insert("t", base.transpose(0, 1).unwrap());
    sd.insert("row", base.narrow(0, 1, 1).unwrap());
    let p = dir.join("v.safetensors");
    save_safetensors(&p, &sd).unwrap();
    let back = load(&p).unwrap();
    assert_eq!(back.get("t").unwrap().dims(), [4, 3]);
    assert_eq!(back.get("t").unwrap().to_vec::<f32>().unwrap()[..4], [0.0, 4.0, 8.0, 1.0]);
    assert_eq!(back.get("row").unwrap().to_vec::<f32>().unwrap(), [4.0, 5.0, 6.0, 7.0]);
}

#[test]
fn interop_with_the_reference_crate() {
    use safetensors::tensor::{Dtype, TensorView};
    let dir = tmp_dir("st-interop");
    // Ours → theirs.
    let sd = every_dtype();
    let p = dir.join("ours.safetensors");
    save_safetensors(&p, &sd).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let f = st.tensor("f32").unwrap();
    assert_eq!((f.dtype(), f.shape()), (Dtype::F32, &[2usize, 3, 4][..]));
    assert_eq!(f.data()[..4], (-5.5f32).to_le_bytes());
    assert_eq!(st.tensor("bf16").unwrap().dtype(), Dtype::BF16);
    // Theirs → ours, with metadata and an I64 tensor.
    let a: Vec<u8> = [1.5f32, -2.0, 3.0, 0.5].iter().flat_map(|x| x.to_le_bytes()).collect();
    let b: Vec<u8> = [9i64, -1].iter().flat_map(|x| x.to_le_bytes()).collect();
    let views = vec![
        ("a", TensorView::new(Dtype::F32, vec![2, 2], &a).unwrap()),
        ("b", TensorView::new(Dtype::I64, vec![2], &b).unwrap()),
    ];
    let meta = Some([("format".to_string(), "pt".to_string())].into_iter().collect());
    let q = dir.join("theirs.safetensors");
    safetensors::serialize_to_file(views, meta, &q).unwrap();
    let got = load(&q).unwrap();
    assert_eq!(got.get("a").unwrap().to_vec::<f32>().unwrap(), [1.5, -2.0, 3.0, 0.5]);
    assert_eq!(got.get("b").unwrap().to_vec::<i64>().unwrap(), [9, -1]);
    assert_eq!(got.metadata().get("format").map(String::as_str), Some("pt"));
}

#[test]
fn dtype_option_converts_floats_only() {
    let dir = tmp_dir("st-dtype");
    let mut sd = StateDict::new();
    sd.insert("h", ramp(&[4], 0.5).to_dtype(DType::F16).unwrap());
    sd.insert("l", Tensor::from_vec(vec![3i64], [1], Device::Cpu).unwrap());
    let p = dir.join("h.safetensors");
    save_safetensors(&p, &sd).unwrap();
    let got = load_safetensors(&p, &LoadOptions::new().dtype(DType::F32)).unwrap();
    assert_eq!(got.get("h").unwrap().dtype(), DType::F32);
    assert_eq!(got.get("h").unwrap().to_vec::<f32>().unwrap(), [0.5, 1.5, 2.5, 3.5]);
    assert_eq!(got.get("l").unwrap().dtype(), DType::I64);
    let e = err_msg(load_safetensors(&p, &LoadOptions::new().dtype(DType::I64)));
    assert!(e.contains("must be a float type"), "{e}");
}

#[test]
fn save_and_load_on_the_emulator_device() {
    let dir = tmp_dir("st-emu");
    let mut sd = StateDict::new();
    sd.insert("w", ramp(&[2, 3], 1.0).to_device(Device::Emu).unwrap());
    let p = dir.join("emu.safetensors");
    save_safetensors(&p, &sd).unwrap();
    let got = load_safetensors(&p, &LoadOptions::new().device(Device::Emu)).unwrap();
    assert_eq!(got.get("w").unwrap().device(), Device::Emu);
    assert_eq!(got.get("w").unwrap().to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
}

// ---- bad files: each gives its own message -------------------------------------------------

/// A safetensors file from a header string and data bytes (the length field is the header's).
fn raw_file(dir: &Path, name: &str, header: &str, data: &[u8]) -> std::path::PathBuf {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    let p = dir.join(name);
    std::fs::write(&p, b).unwrap();
    p
}

fn bad(dir: &Path, header: &str, data: &[u8]) -> String {
    err_msg(load(&raw_file(dir, "bad.safetensors", header, data)))
}

#[test]
fn bad_files_give_clear_errors() {
    let dir = tmp_dir("st-bad");
    let ok = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    assert!(load(&raw_file(&dir, "ok.safetensors", ok, &[0; 8])).is_ok());

    let empty = dir.join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    assert!(err_msg(load(&empty)).contains("the file is empty"));

    let short = dir.join("short.safetensors");
    std::fs::write(&short, [1, 0, 0]).unwrap();
    assert!(err_msg(load(&short)).contains("fewer than the 8-byte header length"));

    // Truncated inside the header: the length field promises more than the file has.
    let full = std::fs::read(raw_file(&dir, "full.safetensors", ok, &[0; 8])).unwrap();
    let cut = dir.join("cut-header.safetensors");
    std::fs::write(&cut, &full[..20]).unwrap();
    let e = err_msg(load(&cut));
    assert!(e.contains("only 12 follow it") && e.contains("truncated"), "{e}");

    // Truncated inside the data.
    let cut = dir.join("cut-data.safetensors");
    std::fs::write(&cut, &full[..full.len() - 3]).unwrap();
    let e = err_msg(load(&cut));
    assert!(e.contains("tensor `a`") && e.contains("past the end of the data (5 bytes)"), "{e}");

    // A length field larger than any sane header.
    let huge = dir.join("huge.safetensors");
    let mut b = (u64::MAX / 2).to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    std::fs::write(&huge, b).unwrap();
    assert!(err_msg(load(&huge)).contains("more than the 104857600-byte limit"));

    let e = bad(&dir, r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#, &[0; 8]);
    assert!(e.contains("not valid JSON"), "{e}");
    assert!(bad(&dir, "[1,2]", &[]).contains("not a JSON object"));

    let e = bad(&dir, r#"{"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}"#, &[0; 8]);
    assert!(e.contains("tensor `a` has dtype I32") && e.contains("supported: F32"), "{e}");
    let e = bad(&dir, r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, &[0; 8]);
    assert!(e.contains("hold 4 bytes but shape [2] of f32 needs 8"), "{e}");
    let e = bad(&dir, r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, &[0; 8]);
    assert!(e.contains("end before they begin"), "{e}");
    let e = bad(&dir, r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#, &[0; 8]);
    assert!(e.contains("past the end of the data (8 bytes)"), "{e}");
    let e = bad(
        &dir,
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
        &[0; 12],
    );
    assert!(e.contains("`a` (bytes 0..8) and `b` (bytes 4..12) overlap"), "{e}");
    let e = bad(&dir, r#"{"a":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]}}"#, &[0; 8]);
    assert!(e.contains("`shape` must be a list of non-negative integers"), "{e}");
    let e = bad(&dir, r#"{"a":{"dtype":"F32","shape":[2]}}"#, &[0; 8]);
    assert!(e.contains("has no `data_offsets`"), "{e}");
    let e = bad(&dir, r#"{"__metadata__":{"n":3}}"#, &[]);
    assert!(e.contains("`__metadata__`.`n` must be a string"), "{e}");
    // Shapes whose element count overflows.
    let e = bad(&dir, r#"{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#, &[0; 8]);
    assert!(e.contains("has too many elements"), "{e}");
}

/// A header claiming 10^12 elements in a 100-byte file is refused from the header alone: no
/// buffer is allocated for it (it would be 4 TB), and it answers at once.
#[test]
fn lying_header_errors_before_allocating() {
    let dir = tmp_dir("st-lie");
    let h = r#"{"a":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,4000000000000]}}"#;
    let t = std::time::Instant::now();
    let e = bad(&dir, h, &[0; 16]);
    assert!(e.contains("past the end of the data (16 bytes)"), "{e}");
    assert!(t.elapsed().as_millis() < 500);
}

#[test]
fn save_refuses_the_metadata_key_as_a_name_and_leaves_no_file() {
    let dir = tmp_dir("st-badname");
    let mut sd = StateDict::new();
    sd.insert("__metadata__", ramp(&[1], 0.0));
    let p = dir.join("x.safetensors");
    assert!(err_msg(save_safetensors(&p, &sd)).contains("cannot be a tensor name"));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}
