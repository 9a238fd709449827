//! Loading a large safetensors file must not need the file twice in memory (BiT-M-R152x4 is
//! ≈ 4.4 GB in f32). A ~200 MB file is written in 1 MiB chunks (so the test itself never holds
//! it), then loaded while the peak resident set (VmHWM) is watched: the increase must stay below
//! 1.3× the tensors' size. Alone in its test binary so no other test moves the peak.

mod common;

use std::io::Write;

use bitgrad_engine::DType;
use bitgrad_models::{load_weights, LoadOptions};

/// Peak resident set size of this process in bytes, from /proc/self/status.
fn vm_hwm() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// (name, dtype string, elements): 100 MB + 50 MB of f32 and 50 MB of f16.
const TENSORS: [(&str, &str, usize); 3] =
    [("a", "F32", 25_000_000), ("b", "F32", 12_500_000), ("c", "F16", 25_000_000)];

/// Element `i` of every tensor is `i % 1000` (exact in f16 too).
fn write_file(path: &std::path::Path) -> u64 {
    let mut header = String::from("{");
    let mut off = 0u64;
    for (i, (n, d, len)) in TENSORS.iter().enumerate() {
        let bytes = (*len * if *d == "F32" { 4 } else { 2 }) as u64;
        let sep = if i > 0 { "," } else { "" };
        header += &format!(r#"{sep}"{n}":{{"dtype":"{d}","shape":[{len}],"data_offsets":[{off},{}]}}"#, off + bytes);
        off += bytes;
    }
    header.push('}');
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    w.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    w.write_all(header.as_bytes()).unwrap();
    for (_, d, len) in TENSORS {
        let mut chunk = Vec::with_capacity(1 << 20);
        for i in 0..len {
            let v = (i % 1000) as f32;
            if d == "F32" {
                chunk.extend_from_slice(&v.to_le_bytes());
            } else {
                chunk.extend_from_slice(&half::f16::from_f32(v).to_le_bytes());
            }
            if chunk.len() >= 1 << 20 {
                w.write_all(&chunk).unwrap();
                chunk.clear();
            }
        }
        w.write_all(&chunk).unwrap();
    }
    w.flush().unwrap();
    off
}

#[test]
fn loading_200mb_needs_about_its_size_once() {
    let Some(before) = vm_hwm() else {
        eprintln!("skipped: no /proc/self/status VmHWM on this system");
        return;
    };
    let dir = common::tmp_dir("large");
    let path = dir.join("big.safetensors");
    let t0 = std::time::Instant::now();
    let data = write_file(&path);
    let t1 = std::time::Instant::now();
    let sd = load_weights(&path, &LoadOptions::default()).unwrap();
    let t2 = std::time::Instant::now();
    let after = vm_hwm().unwrap();
    let grew = after.saturating_sub(before);
    eprintln!(
        "tensors {:.1} MB, peak RSS grew {:.1} MB ({:.3}×); write {:.2}s, load {:.2}s",
        data as f64 / 1e6,
        grew as f64 / 1e6,
        grew as f64 / data as f64,
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64()
    );
    assert!((grew as f64) < 1.3 * data as f64, "peak RSS grew {grew} bytes for {data} bytes of tensors");
    assert_eq!(sd.names().collect::<Vec<_>>(), ["a", "b", "c"]);
    let c = sd.get("c").unwrap();
    assert_eq!((c.dtype(), c.dims()), (DType::F16, &[25_000_000usize][..]));
    let a = sd.get("a").unwrap().to_vec::<f32>().unwrap();
    assert!(a.iter().enumerate().step_by(9973).all(|(i, &v)| v == (i % 1000) as f32));
    assert_eq!(a[24_999_999], 999.0);
    drop(a);
    let c = c.to_vec::<half::f16>().unwrap();
    assert_eq!(c[12_345_678].to_f32(), 678.0);
    std::fs::remove_dir_all(&dir).unwrap();
}
