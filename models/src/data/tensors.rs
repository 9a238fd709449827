//! A dataset stored as safetensors tensors: `"images"` and `"labels"`.
//!
//! `images` is either `(N, H, W, C)` u8 (channels last, the natural dump of decoded images) or
//! `(N, C, H, W)` f32/f64 in [0, 1] (torchvision's `ToTensor` convention; converted to u8 with
//! rounding, so a round trip through u8 is exact). C is 1 (gray) or 3. `labels` is `(N,)` i64
//! (i32 and u8 are accepted too). Optional metadata `"classes"`: class names separated by
//! newlines; otherwise classes are numbered `0 … max label`.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::dataset::InMemory;
use crate::{Error, Result};

const FORMAT: &str = "safetensors dataset";

/// Reads a safetensors dataset file (see the module docs).
pub fn open_safetensors(path: impl AsRef<Path>) -> Result<InMemory> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |msg: String| Error::format(path, FORMAT, msg);
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let images = st.tensor("images").map_err(|_| bad(format!("no \"images\" tensor (has {:?})", st.names())))?;
    let labels = st.tensor("labels").map_err(|_| bad(format!("no \"labels\" tensor (has {:?})", st.names())))?;

    let shape = images.shape();
    if shape.len() != 4 {
        return Err(bad(format!("images must be (N, H, W, C) u8 or (N, C, H, W) float, found shape {shape:?}")));
    }
    let (n, h, w, c, pixels) = match images.dtype() {
        Dtype::U8 => {
            let [n, h, w, c] = [shape[0], shape[1], shape[2], shape[3]];
            (n, h, w, c, images.data().to_vec())
        }
        Dtype::F32 | Dtype::F64 => {
            let [n, c, h, w] = [shape[0], shape[1], shape[2], shape[3]];
            let values = floats(images.data(), images.dtype());
            (n, h, w, c, nchw_unit_to_nhwc_u8(&values, [n, c, h, w]).map_err(bad)?)
        }
        other => return Err(bad(format!("images of type {other:?}; use u8 (NHWC) or f32 (NCHW in [0, 1])"))),
    };
    if c != 1 && c != 3 {
        return Err(bad(format!("images must have 1 or 3 channels, shape {shape:?} has {c}")));
    }
    let label_values: Vec<i64> = match labels.dtype() {
        Dtype::I64 => labels.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect(),
        Dtype::I32 => labels.data().chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64).collect(),
        Dtype::U8 => labels.data().iter().map(|&b| b as i64).collect(),
        other => return Err(bad(format!("labels of type {other:?}; use i64"))),
    };
    if labels.shape() != [n] {
        return Err(bad(format!("labels have shape {:?}, the images need ({n},)", labels.shape())));
    }
    let mut out = Vec::with_capacity(n);
    for (i, &l) in label_values.iter().enumerate() {
        if !(0..u32::MAX as i64).contains(&l) {
            return Err(bad(format!("label {i} is {l}; labels must be class indices ≥ 0")));
        }
        out.push(l as u32);
    }
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let classes = match meta.metadata().as_ref().and_then(|m| m.get("classes")) {
        Some(text) => text.lines().map(|s| s.to_string()).collect(),
        None => InMemory::numbered_classes(&out),
    };
    let dims = |x: usize| u32::try_from(x).map_err(|_| bad(format!("image dimension {x} is too large")));
    InMemory::new(path.display().to_string(), pixels, out, classes, (dims(h)?, dims(w)?, dims(c)?))
}

fn floats(data: &[u8], dtype: Dtype) -> Vec<f64> {
    if dtype == Dtype::F32 {
        data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect()
    } else {
        data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect()
    }
}

/// NCHW floats in [0, 1] → NHWC u8 (`round(x · 255)`); values outside [0, 1] (beyond rounding)
/// are refused rather than guessed at: [−1, 1] or [0, 255] data would silently go wrong.
fn nchw_unit_to_nhwc_u8(v: &[f64], [n, c, h, w]: [usize; 4]) -> std::result::Result<Vec<u8>, String> {
    if let Some(x) = v.iter().find(|x| !(-1e-3..=1.0 + 1e-3).contains(*x)) {
        return Err(format!("float images must be in [0, 1] (found {x}); store u8 NHWC otherwise"));
    }
    let mut out = vec![0u8; v.len()];
    let hw = h * w;
    for i in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                out[(i * hw + p) * c + ch] = (v[(i * c + ch) * hw + p] * 255.0).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Ok(out)
}
