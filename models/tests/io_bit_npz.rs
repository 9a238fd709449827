//! The BiT `.npz` ↔ timm mapping (bit-spec §3.3, Appendix A) and the format-sniffing
//! `load_weights` / extension-driven `save_weights` behind `bitgrad convert`.

mod common;

use bitgrad_engine::{Device, Tensor};
use bitgrad_models::io::{load_npz, npz_to_timm, save_npz, save_safetensors, timm_to_npz};
use bitgrad_models::{load_weights, save_weights, LoadOptions, StateDict};
use common::*;

#[test]
fn small_bit_names_shapes_order_and_transposes() {
    let n_cls = 5;
    let raw = small_bit_npz(n_cls, true);
    let raw_copy = raw.clone();
    let timm = npz_to_timm(raw).unwrap();
    let want = small_bit_timm_names(n_cls);
    assert_eq!(timm.len(), want.len());
    for ((name, t), (wn, ws)) in timm.iter().zip(&want) {
        assert_eq!((name, t.dims()), (wn.as_str(), &ws[..]));
        assert!(t.is_contiguous(), "{name}");
    }
    // conv2 of stage 1: timm[o, i, h, w] must be npz[h, w, i, o].
    let m = mid(1);
    let src = raw_copy.get("resnet/block2/unit01/b/standardized_conv2d/kernel").unwrap().to_vec::<f32>().unwrap();
    let dst = timm.get("stages.1.blocks.0.conv2.weight").unwrap().to_vec::<f32>().unwrap();
    for o in 0..m {
        for i in 0..m {
            for h in 0..3 {
                for w in 0..3 {
                    assert_eq!(dst[((o * m + i) * 3 + h) * 3 + w], src[((h * 3 + w) * m + i) * m + o]);
                }
            }
        }
    }
    // The head kernel (1, 1, C, n) becomes (n, C, 1, 1); biases and GN parameters are unchanged.
    let c = out(3);
    let src = raw_copy.get("resnet/head/conv2d/kernel").unwrap().to_vec::<f32>().unwrap();
    let dst = timm.get("head.fc.weight").unwrap().to_vec::<f32>().unwrap();
    assert!((0..n_cls).all(|o| (0..c).all(|ch| dst[o * c + ch] == src[ch * n_cls + o])));
    for (a, b) in [
        ("resnet/head/conv2d/bias", "head.fc.bias"),
        ("resnet/block3/unit01/c/group_norm/beta", "stages.2.blocks.0.norm3.bias"),
    ] {
        let (x, y) = (raw_copy.get(a).unwrap(), timm.get(b).unwrap());
        assert_eq!(x.to_vec::<f32>().unwrap(), y.to_vec::<f32>().unwrap(), "{b}");
    }
}

#[test]
fn timm_to_npz_inverts_in_appendix_order() {
    let raw = small_bit_npz(3, false);
    let back = timm_to_npz(&npz_to_timm(raw.clone()).unwrap()).unwrap();
    assert_same(&raw, &back);
}

/// The names of R152x1-sized stages ([3, 8, 36, 3]) with tiny tensors: 459 tensors, numeric
/// (not lexicographic) unit order, and some rows of bit-spec Appendix A for R50x1.
#[test]
fn deep_configs_order_numerically() {
    let layers = [3usize, 8, 36, 3];
    let mut raw = StateDict::new();
    let k = || Tensor::zeros([1, 1, 1, 1], bitgrad_engine::DType::F32, Device::Cpu).unwrap();
    let v = || Tensor::zeros([1], bitgrad_engine::DType::F32, Device::Cpu).unwrap();
    raw.insert("resnet/head/conv2d/bias", v());
    for (b, &n) in layers.iter().enumerate().rev() {
        for u in (1..=n).rev() {
            let p = format!("resnet/block{}/unit{u:02}", b + 1);
            for x in ["a", "b", "c"] {
                raw.insert(format!("{p}/{x}/standardized_conv2d/kernel"), k());
                raw.insert(format!("{p}/{x}/group_norm/gamma"), v());
                raw.insert(format!("{p}/{x}/group_norm/beta"), v());
            }
            if u == 1 {
                raw.insert(format!("{p}/a/proj/standardized_conv2d/kernel"), k());
            }
        }
    }
    for n in ["resnet/group_norm/gamma", "resnet/group_norm/beta", "resnet/head/conv2d/kernel"] {
        raw.insert(n, if n.ends_with("kernel") { k() } else { v() });
    }
    raw.insert("resnet/root_block/standardized_conv2d/kernel", k());
    let timm = npz_to_timm(raw).unwrap();
    let names: Vec<&str> = timm.names().collect();
    assert_eq!(names.len(), 459);
    // Appendix A rows 0, 1, 11, 29, 149, 152 keep their places in R50x1's order, which R152
    // shares up to stage 2.
    assert_eq!(names[0], "stem.conv.weight");
    assert_eq!(names[1], "stages.0.blocks.0.downsample.conv.weight");
    assert_eq!(names[11], "stages.0.blocks.1.norm1.weight");
    assert_eq!(names[29], "stages.1.blocks.0.downsample.conv.weight");
    assert_eq!(names[458], "head.fc.bias");
    assert_eq!(names[455], "norm.weight");
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("stages.2.blocks.9.conv1.weight") > pos("stages.2.blocks.8.conv3.weight"));
    assert!(pos("stages.2.blocks.35.conv3.weight") < pos("stages.3.blocks.0.downsample.conv.weight"));
    let back = timm_to_npz(&timm).unwrap();
    assert!(back.contains("resnet/block3/unit36/c/standardized_conv2d/kernel"));
}

#[test]
fn strict_mapping_errors() {
    let mut raw = small_bit_npz(3, false);
    raw.insert("resnet/block1/unit01/d/group_norm/gamma", ramp(&[2], 0.0));
    raw.insert("resnet/extra", ramp(&[2], 0.0));
    let e = npz_to_timm(raw).unwrap_err().to_string();
    assert!(e.starts_with("2 names are not BiT .npz parameter names"), "{e}");
    assert!(e.contains("resnet/extra") && e.contains("unit01/d/group_norm"), "{e}");

    let mut raw = small_bit_npz(3, false);
    raw.insert("resnet/block1/unit1/a/group_norm/gamma", ramp(&[STEM], 0.0));
    let e = npz_to_timm(raw).unwrap_err().to_string();
    assert!(e.contains("are the same parameter (resnet/block1/unit01/a/group_norm/gamma)"), "{e}");

    let mut raw = small_bit_npz(3, false);
    raw.insert("resnet/root_block/standardized_conv2d/kernel", ramp(&[7, 7, 3], 0.0));
    let e = npz_to_timm(raw).unwrap_err().to_string();
    assert!(e.contains("must be 4-D (HWIO), but has shape [7, 7, 3]"), "{e}");

    let mut timm = npz_to_timm(small_bit_npz(3, false)).unwrap();
    timm.insert("head.fc.extra", ramp(&[1], 0.0));
    let e = timm_to_npz(&timm).unwrap_err().to_string();
    assert!(e.contains("1 names are not timm ResNet-v2 parameter names") && e.contains("head.fc.extra"), "{e}");
}

#[test]
fn load_weights_sniffs_and_convert_round_trips() {
    let dir = tmp_dir("convert");
    let raw = small_bit_npz(4, true);
    let npz = dir.join("bit.npz");
    save_npz(&npz, &raw).unwrap();
    let opts = LoadOptions::default();
    let timm = load_weights(&npz, &opts).unwrap();
    assert_same(&npz_to_timm(raw).unwrap(), &timm);

    // npz → safetensors → npz, file names without telling extensions: content decides.
    let st = dir.join("weights.bin");
    save_safetensors(&st, &timm).unwrap();
    assert_same(&timm, &load_weights(&st, &opts).unwrap());
    let st2 = dir.join("w.safetensors");
    save_weights(&st2, &timm).unwrap();
    let npz2 = dir.join("back.npz");
    save_weights(&npz2, &load_weights(&st2, &opts).unwrap()).unwrap();
    assert_same(&small_bit_npz(4, false), &load_npz(&npz2, &opts).unwrap());

    let e = save_weights(dir.join("w.pt"), &timm).unwrap_err().to_string();
    assert!(e.contains("use .safetensors or .npz"), "{e}");
}

#[test]
fn load_weights_errors() {
    let dir = tmp_dir("sniff-bad");
    let p = dir.join("w");
    std::fs::write(&p, b"").unwrap();
    let e = err_msg(load_weights(&p, &LoadOptions::default()));
    assert!(e.contains("not a valid weights file: the file is empty"), "{e}");
    std::fs::write(&p, b"GIF89a, an image perhaps").unwrap();
    let e = err_msg(load_weights(&p, &LoadOptions::default()));
    assert!(e.contains("neither safetensors") && e.contains("nor a .npz"), "{e}");
    std::fs::write(&p, b"PK\x03\x04 but then nothing").unwrap();
    let e = err_msg(load_weights(&p, &LoadOptions::default()));
    assert!(e.contains("not a valid npz file: not a zip archive"), "{e}");
    let e = err_msg(load_weights(dir.join("missing.safetensors"), &LoadOptions::default()));
    assert!(e.contains("missing.safetensors"), "{e}");
    // An .npz of arrays that are not BiT weights fails in the mapping, naming them.
    let mut sd = StateDict::new();
    sd.insert("x", ramp(&[2], 0.0));
    save_npz(dir.join("x.npz"), &sd).unwrap();
    let e = err_msg(load_weights(dir.join("x.npz"), &LoadOptions::default()));
    assert!(e.contains("1 names are not BiT .npz parameter names:\n    x"), "{e}");
}

/// The mapping keeps each float dtype (transposes are dtype-agnostic copies), in memory and
/// through a `.npz` file (bf16 has no NumPy type and comes back as f32, exactly).
#[test]
fn timm_npz_timm_for_every_float_dtype() {
    use bitgrad_engine::DType;
    let dir = tmp_dir("map-dtypes");
    for dt in [DType::F32, DType::F64, DType::F16, DType::BF16] {
        let timm: StateDict = npz_to_timm(small_bit_npz(3, false))
            .unwrap()
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_dtype(dt).unwrap()))
            .collect();
        assert_same(&timm, &npz_to_timm(timm_to_npz(&timm).unwrap()).unwrap());
        let p = dir.join(format!("{dt}.npz"));
        save_weights(&p, &timm).unwrap();
        let back = load_weights(&p, &LoadOptions::default()).unwrap();
        let want: StateDict = if dt == DType::BF16 {
            timm.iter().map(|(n, t)| (n.to_string(), t.to_dtype(DType::F32).unwrap())).collect()
        } else {
            timm
        };
        assert_same(&want, &back);
    }
}
