//! Interop through the binary: `export` of a training checkpoint gives a model-only file under
//! timm's names (exactly the fixture's timm state_dict keys, so timm's strict load takes it) with
//! the class names, whose logits equal timm's; `--to npz` gives BiT's names; `convert` and
//! `predict` take checkpoints; BatchNorm's `num_batches_tracked` is written and accepted;
//! `predict` names ImageNet-1k and -21k classes; `embed` writes the pre-logits features that
//! `forward` computes. With torch and timm installed (`BITGRAD_PYTHON`, else `python3`), timm
//! itself loads the exports strictly and its logits are compared; otherwise that part is
//! skipped with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;

use bitgrad::models::io::{self, LoadOptions};
use bitgrad::models::schedule::HyperRule;
use bitgrad::models::train::{Checkpoint, TrainState};
use bitgrad::models::{labels, ResNetV2, ResNetV2Config, StateDict};
use bitgrad::{DType, Device, Rng, Tensor};

mod common;
use common::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A training checkpoint of `sd`'s model with momentum buffers and a run state, as finetune
/// writes it.
fn checkpoint(sd: &StateDict, classes: &[&str], path: &Path) {
    let config = ResNetV2Config::infer(sd).unwrap();
    let momentum: Vec<(String, Tensor)> = sd
        .iter()
        .filter(|(n, _)| n.ends_with("weight"))
        .map(|(n, t)| (n.to_string(), Tensor::zeros_like(t).unwrap()))
        .collect();
    let mut hyper = HyperRule::for_dataset(100, 32, 32);
    hyper.batch_split = 2;
    let state = TrainState {
        step: 21,
        position: Default::default(),
        seed: 3,
        hyper,
        classes: classes.iter().map(|c| c.to_string()).collect(),
        best: None,
        world_size: 1,
    };
    Checkpoint::save(path, sd, &config, &momentum, &state).unwrap();
}

/// The python that has torch and timm, or why there is none.
fn python() -> Result<String, String> {
    let py = std::env::var("BITGRAD_PYTHON").unwrap_or_else(|_| "python3".into());
    match Command::new(&py).args(["-c", "import torch, timm, safetensors"]).output() {
        Ok(o) if o.status.success() => Ok(py),
        Ok(_) => Err(format!("{py} lacks torch/timm/safetensors (set BITGRAD_PYTHON to a venv's python)")),
        Err(e) => Err(format!("{py}: {e}")),
    }
}

/// timm loads `model` strictly and its logits on `input` equal bitgrad's (`bitgrad forward`).
fn timm_agrees(model: &Path, input: &Path) {
    let py = match python() {
        Ok(py) => py,
        Err(why) => return eprintln!("skipped timm's strict load of {}: {why}", model.display()),
    };
    let out = tmp(&format!("{}-fwd.safetensors", model.file_stem().unwrap().to_string_lossy()));
    ok(&["forward", "-w", s(model), "--input", s(input), "-o", s(&out)]);
    let script = root().join("tests/fixtures/check_export.py");
    let o = Command::new(py).args([s(&script), s(model), s(input), s(&out)]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "timm disagrees with the export {}:\n{text}", model.display());
    eprintln!("{text}");
}

#[test]
fn export_of_a_checkpoint_is_timms_state_dict_with_class_names() {
    let fixture = load(&fixtures().join("tiny.safetensors"));
    let classes: Vec<String> = (0..10).map(|i| format!("kind {i}")).collect();
    let names: Vec<&str> = classes.iter().map(String::as_str).collect();
    let ck = tmp("last.safetensors");
    checkpoint(&fixture, &names, &ck);
    assert!(load(&ck).names().any(|n| n.starts_with("optim.momentum.")));

    let model = tmp("model.safetensors");
    let said = ok(&["export", s(&ck), s(&model)]);
    assert!(said.contains("10 class names"), "{said}");
    let got = load(&model);
    // Exactly timm's state_dict keys (the fixture's metadata lists them), shapes and values.
    let timm_keys: Vec<&str> = fixture.metadata()["keys"].split(',').collect();
    let mut ours: Vec<&str> = got.names().collect();
    let mut theirs = timm_keys.clone();
    ours.sort_unstable();
    theirs.sort_unstable();
    assert_eq!(ours, theirs, "strict load needs exactly timm's keys");
    for k in timm_keys {
        assert_eq!(got.get(k).unwrap().dims(), fixture.get(k).unwrap().dims(), "{k}");
        assert_eq!(rel(got.get(k).unwrap(), fixture.get(k).unwrap()), 0.0, "{k}");
    }
    assert_eq!(got.metadata()[io::CLASSES_KEY], classes.join("\n"));
    assert!(!got.metadata().keys().any(|k| k.starts_with("bitgrad.train.")), "the run's state stays behind");

    // The export's logits are timm's (the fixture's), and predict shows its class names.
    let io_file = fixtures().join("tiny_io.safetensors");
    let out = tmp("exported_fwd.safetensors");
    ok(&["forward", "-w", s(&model), "--input", s(&io_file), "-o", s(&out)]);
    assert!(rel(load(&out).get("logits").unwrap(), load(&io_file).get("logits").unwrap()) < 1e-4);
    let img = tmp("red.png");
    image::RgbImage::from_pixel(20, 30, image::Rgb([200, 30, 30])).save(&img).unwrap();
    for w in [&model, &ck] {
        let said = ok(&["predict", "-w", s(w), "--size", "48", "--top", "2", s(&img)]);
        assert!(said.lines().nth(1).unwrap().contains("kind "), "{said}");
    }
    timm_agrees(&model, &io_file);

    // convert of a checkpoint keeps the model only; --to npz gives BiT's names (no metadata).
    let conv = tmp("converted.safetensors");
    ok(&["convert", s(&ck), s(&conv)]);
    assert!(!load(&conv).names().any(|n| n.starts_with("optim.")));
    let npz = tmp("model.npz");
    let said = ok(&["export", s(&ck), s(&npz), "--to", "npz"]);
    assert!(said.contains("BiT .npz"), "{said}");
    let raw = io::load_npz(&npz, &LoadOptions::new()).unwrap();
    assert!(raw.contains("resnet/root_block/standardized_conv2d/kernel"));
    assert_eq!(raw.len(), fixture.len());
}

#[test]
fn batchnorm_exports_carry_num_batches_tracked_and_load_back() {
    let config = ResNetV2Config::named("resnetv2_tiny_bit", 6).unwrap().with_norm("bn_ws").unwrap();
    let model = ResNetV2::new(&config, 5).unwrap();
    let sd = bitgrad::models::Module::state_dict(&model);
    let ck = tmp("bn_last.safetensors");
    checkpoint(&sd, &["a", "b", "c", "d", "e", "f"], &ck);
    let out = tmp("bn_model.safetensors");
    ok(&["export", s(&ck), s(&out)]);
    let got = load(&out);
    let counters: Vec<&str> = got.names().filter(|n| n.ends_with(".num_batches_tracked")).collect();
    let bns = sd.names().filter(|n| n.ends_with(".running_mean")).count();
    assert!(bns > 0 && counters.len() == bns, "{counters:?}");
    // 21 steps of 2 micro-batches: 42 training forward passes, as PyTorch would have counted.
    let t = got.get(counters[0]).unwrap();
    assert_eq!((t.dtype(), t.dims().len(), t.to_vec::<i64>().unwrap()), (DType::I64, 0, vec![42]));
    // The counters are accepted on load (info, forward) and survive a second export.
    let info = ok(&["info", "-w", s(&out)]);
    assert!(info.contains("norm batch_norm") && info.contains("class names:   6"), "{info}");
    let again = tmp("bn_again.safetensors");
    ok(&["export", s(&out), s(&again)]);
    assert_eq!(load(&again).get(counters[0]).unwrap().to_vec::<i64>().unwrap(), [42]);
    let half = tmp("bn_f16.safetensors");
    ok(&["convert", s(&out), s(&half), "--dtype", "f16"]);
    assert_eq!(load(&half).get(counters[0]).unwrap().to_vec::<i64>().unwrap(), [42], "convert keeps the counters");
    // timm's side, with an input of the right size.
    let mut rng = Rng::new(1);
    let x = Tensor::randn([2, 3, 32, 32], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng).unwrap();
    let input = tmp("bn_input.safetensors");
    io::save_safetensors(&input, &[("input".to_string(), x)].into_iter().collect()).unwrap();
    timm_agrees(&out, &input);
}

/// tiny's body with a random head of `classes` outputs, as a weight file.
fn with_head(classes: usize, path: &Path) {
    // The fixture's metadata stays: it tells the GN group count that shapes cannot.
    let mut sd = load(&fixtures().join("tiny.safetensors"));
    let mut rng = Rng::new(classes as u64);
    sd.insert(
        "head.fc.weight",
        Tensor::randn([classes, 256, 1, 1], 0.0, 0.3, DType::F32, Device::Cpu, &mut rng).unwrap(),
    );
    sd.insert("head.fc.bias", Tensor::zeros([classes], DType::F32, Device::Cpu).unwrap());
    io::save_safetensors(path, &sd).unwrap();
}

#[test]
fn predict_names_imagenet_1k_and_21k_classes() {
    let img = tmp("green.png");
    image::RgbImage::from_pixel(24, 24, image::Rgb([20, 180, 40])).save(&img).unwrap();
    for classes in [1000, 21843] {
        let w = tmp(&format!("head{classes}.safetensors"));
        with_head(classes, &w);
        let said = ok(&["predict", "-w", s(&w), "--size", "48", "--top", "3", s(&img)]);
        let names = labels::for_head(classes).unwrap().unwrap();
        let lines: Vec<&str> = said.lines().skip(1).collect();
        assert_eq!(lines.len(), 3, "{said}");
        for line in lines {
            // "  12.34%  lemmas (index)": the name is the shipped list's entry at that index.
            let idx: usize = line.rsplit_once('(').unwrap().1.trim_end_matches(')').parse().unwrap();
            assert!(line.contains(&format!("{} ({idx})", names[idx].lemmas)), "{classes}: {line}");
        }
    }
}

#[test]
fn embed_writes_the_pre_logits_features_of_forward() {
    let w = root().join("assets/demo/upstream.safetensors");
    let out = tmp("features.safetensors");
    let data = root().join("assets/demo");
    let said = ok(&[
        "embed",
        "-w",
        s(&w),
        "--data",
        s(&data),
        "--format",
        "idx",
        "--split",
        "val",
        "--size",
        "48",
        "--batch",
        "128",
        "-o",
        s(&out),
    ]);
    let got = load(&out);
    let (feats, labels) = (got.get("features").unwrap(), got.get("labels").unwrap());
    let width = ResNetV2Config::infer(&load(&w)).unwrap().channels[3];
    assert_eq!(feats.dims(), [1500, width], "{said}");
    assert_eq!(labels.dims(), [1500]);
    assert_eq!(got.get("indices").unwrap().to_vec::<i64>().unwrap()[..3], [0, 1, 2]);
    assert_eq!(got.metadata()["size"], "48");

    // The same numbers as `forward --activations` on the first examples through the same
    // evaluation transform.
    use bitgrad::models::data::{open_idx_dir, Loader, LoaderConfig, Position, Resize, Transform};
    let ds = std::sync::Arc::new(open_idx_dir(&data, false).unwrap());
    let loader = Loader::new(ds, Transform::Eval { size: 48, resize: Resize::Direct }, LoaderConfig::eval(6)).unwrap();
    let batch = loader.iter(Position::default(), None).unwrap().next().unwrap().unwrap();
    assert_eq!(labels.to_vec::<i64>().unwrap()[..6], batch.labels[..]);
    let input = tmp("embed_input.safetensors");
    io::save_safetensors(&input, &[("input".to_string(), batch.images)].into_iter().collect()).unwrap();
    let fwd = tmp("embed_fwd.safetensors");
    ok(&["forward", "-w", s(&w), "--input", s(&input), "-o", s(&fwd), "--activations"]);
    let pre = load(&fwd).get("pre_logits").unwrap().reshape([6, width]).unwrap();
    let first = feats.narrow(0, 0, 6).unwrap();
    assert!(rel(&first, &pre) < 1e-6, "{}", rel(&first, &pre));
}
