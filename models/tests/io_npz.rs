//! .npz / .npy: files written by NumPy itself (stored, deflated, v1/v2/v3 headers), round trips
//! of our writer for every dtype, and one clear error per kind of bad archive or array.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use bitgrad_engine::DType;
use bitgrad_models::io::{load_npz, save_npz};
use bitgrad_models::{LoadOptions, StateDict};
use common::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/npz").join(name)
}

fn load(p: &Path) -> bitgrad_models::Result<StateDict> {
    load_npz(p, &LoadOptions::default())
}

/// What gen.py stores, checked value by value.
fn check_numpy_arrays(sd: &StateDict) {
    let names: Vec<_> = sd.names().collect();
    assert_eq!(names, ["f4", "f8", "f2", "i8", "u1", "scalar", "empty", "resnet/block1/unit01/a/group_norm/gamma"]);
    let f4 = sd.get("f4").unwrap();
    assert_eq!((f4.dtype(), f4.dims()), (DType::F32, &[2usize, 3, 4][..]));
    let want: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    assert_eq!(f4.to_vec::<f32>().unwrap(), want);
    assert_eq!(sd.get("f8").unwrap().to_vec::<f64>().unwrap(), [1.0 / 3.0, -2.5, 1e300, 0.0, -0.0, 7.0]);
    assert_eq!(sd.get("f2").unwrap().to_vec_f64().unwrap(), [1.5, -2.0, 0.25, 65504.0]);
    assert_eq!(sd.get("f2").unwrap().dtype(), DType::F16);
    assert_eq!(sd.get("i8").unwrap().to_vec::<i64>().unwrap(), [-3, 7, 1 << 40]);
    assert_eq!(sd.get("u1").unwrap().to_vec::<u8>().unwrap(), [0, 255, 7]);
    let s = sd.get("scalar").unwrap();
    assert_eq!((s.dims(), s.to_vec::<f32>().unwrap()), (&[][..], vec![3.25]));
    assert_eq!(sd.get("empty").unwrap().dims(), [0, 3]);
}

#[test]
fn reads_numpy_stored_and_deflated() {
    check_numpy_arrays(&load(&fixture("numpy_stored.npz")).unwrap());
    check_numpy_arrays(&load(&fixture("numpy_deflated.npz")).unwrap());
}

#[test]
fn reads_npy_versions_2_and_3() {
    let sd = load(&fixture("numpy_versions.npz")).unwrap();
    assert_eq!(sd.get("v2").unwrap().dims(), [3, 2]);
    assert_eq!(sd.get("v2").unwrap().to_vec::<f32>().unwrap(), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(sd.get("v3").unwrap().to_vec::<f64>().unwrap(), [0.0, 1.0, 2.0, 3.0]);
}

#[test]
fn round_trip_every_dtype() {
    let dir = tmp_dir("npz-roundtrip");
    let sd = every_dtype();
    let p = dir.join("w.npz");
    save_npz(&p, &sd).unwrap();
    let back = load(&p).unwrap();
    // bf16 has no NumPy type: it is written as f32, exactly.
    let mut want = sd.clone();
    want.insert("bf16", sd.get("bf16").unwrap().to_dtype(DType::F32).unwrap());
    assert_same(&want, &back);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

#[test]
fn dtype_option_converts() {
    let sd = load_npz(fixture("numpy_stored.npz"), &LoadOptions::new().dtype(DType::F64)).unwrap();
    assert_eq!(sd.get("f4").unwrap().dtype(), DType::F64);
    assert_eq!(sd.get("f2").unwrap().dtype(), DType::F64);
    assert_eq!(sd.get("i8").unwrap().dtype(), DType::I64);
}

#[test]
fn refused_layouts_give_clear_errors() {
    let e = err_msg(load(&fixture("fortran.npz")));
    assert!(e.contains("entry `a.npy`") && e.contains("fortran_order is True"), "{e}");
    let e = err_msg(load(&fixture("bigendian.npz")));
    assert!(e.contains("big-endian data (descr '>f4')"), "{e}");
    let e = err_msg(load(&fixture("int32.npz")));
    assert!(e.contains("unsupported descr '<i4'"), "{e}");
    let e = err_msg(load(&fixture("no_npy.npz")));
    assert!(e.contains("holds no .npy arrays (1 other entries)"), "{e}");
    let e = err_msg(load(&fixture("truncated_npy.npz")));
    assert!(e.contains("entry `a.npy`") && e.contains("truncated"), "{e}");
}

#[test]
fn not_a_zip_and_empty() {
    let dir = tmp_dir("npz-bad");
    let p = dir.join("x.npz");
    std::fs::write(&p, b"").unwrap();
    assert!(err_msg(load(&p)).contains("the file is empty"));
    std::fs::write(&p, b"this is just some text, not an archive at all").unwrap();
    let e = err_msg(load(&p));
    assert!(e.contains("not a valid npz file: not a zip archive"), "{e}");
}

/// A zip whose .npy entry was written with a broken header, one case per message.
fn zip_with(dir: &Path, entry: &[u8]) -> PathBuf {
    let p = dir.join("h.npz");
    let f = std::fs::File::create(&p).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("a.npy", opts).unwrap();
    z.write_all(entry).unwrap();
    z.finish().unwrap();
    p
}

fn npy_v1(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn bad_npy_headers() {
    let dir = tmp_dir("npy-bad");
    let cases: [(Vec<u8>, &str); 8] = [
        (b"\x93NUMPX\x01\x00\x00\x00garbage".to_vec(), "magic"),
        (b"\x93NUMPY\x04\x00\x00\x00garbage".to_vec(), "version 4.0 is not supported"),
        (npy_v1("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", &[0; 4]), "truncated"),
        (npy_v1("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", &[0; 8]), "has 8 bytes of data"),
        (npy_v1("{'descr': '<f4', 'shape': (1,), }", &[0; 4]), "no 'fortran_order'"),
        (npy_v1("{'descr': '<f4', 'fortran_order': False, 'shape': (1,-1), }", &[]), "cannot parse the header"),
        (npy_v1("{'descr': [('x', '<f4')], 'fortran_order': False, 'shape': (1,)}", &[]), "structured"),
        (b"\x93NUMPY\x01\x00\xff\xff{}".to_vec(), "does not fit the entry"),
    ];
    for (entry, want) in cases {
        let e = err_msg(load(&zip_with(&dir, &entry)));
        assert!(e.contains("entry `a.npy`") && e.contains(want), "want {want:?} in: {e}");
    }
    let huge = npy_v1("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 1000000), }", &[0; 16]);
    let e = err_msg(load(&zip_with(&dir, &huge)));
    assert!(e.contains("8000000000000 bytes") && e.contains("truncated"), "{e}");
}

/// A deflated entry whose central directory claims a huge uncompressed size is refused before
/// anything is allocated for it.
#[test]
fn lying_deflated_size_is_refused() {
    let dir = tmp_dir("npz-lie");
    let mut bytes = std::fs::read(fixture("numpy_deflated.npz")).unwrap();
    // Patch the uncompressed size (offset 24) of the first central directory record.
    let cd = bytes.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    bytes[cd + 24..cd + 28].copy_from_slice(&0xF000_0000u32.to_le_bytes());
    let p = dir.join("lie.npz");
    std::fs::write(&p, &bytes).unwrap();
    let e = err_msg(load(&p));
    assert!(e.contains("entry `f4.npy`") && e.contains("deflated bytes can hold"), "{e}");
}
