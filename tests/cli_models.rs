//! The model subcommands of the `bitgrad` binary, run as a user runs them, on the timm fixtures of
//! tests/fixtures/models: `forward` and `backward` agree with timm, `convert`, `info` and
//! `predict` work, and bad input gives a clear error and a non-zero exit, never a panic.

use std::path::Path;

use bitgrad::models::io::{self, LoadOptions};

mod common;
use common::*;

/// The GPU device the CLI tests use: `BITGRAD_GPU_TEST_DEVICE` (`cuda` under the CUDA shim in
/// `scripts/test.sh`), else the emulator.
fn gpu_device() -> String {
    std::env::var("BITGRAD_GPU_TEST_DEVICE").ok().filter(|d| !d.trim().is_empty()).unwrap_or_else(|| "emu".into())
}

#[test]
fn forward_and_backward_agree_with_timm() {
    check_against_timm(&["tiny", "mini2"], "cpu");
}

/// `--device cuda` (or `emu`): the same fixtures, through the binary on the GPU device.
#[test]
fn forward_and_backward_on_the_gpu_device_agree_with_timm() {
    check_against_timm(&["mini2"], &gpu_device());
}

fn check_against_timm(names: &[&str], device: &str) {
    for &name in names {
        let (w, io_file) =
            (fixtures().join(format!("{name}.safetensors")), fixtures().join(format!("{name}_io.safetensors")));
        let want = load(&io_file);
        let out = tmp(&format!("{name}_{device}_fwd.safetensors"));
        // f32 explicitly: a CUDA device of compute capability 8.0+ (the shim's is 9.0) defaults to
        // bf16 activations, which these 1e-4 bounds are not for (see the bf16 test below).
        let dev = ["--device", device, "--precision", "f32"];
        ok(&[&["forward", "--weights", s(&w), "--input", s(&io_file), "--out", s(&out), "--activations"][..], &dev]
            .concat());
        let got = load(&out);
        assert!(rel(got.get("logits").unwrap(), want.get("logits").unwrap()) < 1e-4, "{name} logits");
        for (ours, theirs) in [
            ("stem", "stem"),
            ("stages.0", "stage0"),
            ("stages.3", "stage3"),
            ("features", "features"),
            ("pre_logits", "pre_logits"),
        ] {
            assert!(rel(got.get(ours).unwrap(), want.get(theirs).unwrap()) < 1e-4, "{name} {ours}");
        }

        // Labels from the file's "labels".
        let out = tmp(&format!("{name}_{device}_bwd.safetensors"));
        ok(&[&["backward", "--weights", s(&w), "--input", s(&io_file), "--out", s(&out)][..], &dev].concat());
        let got = load(&out);
        assert!(rel(got.get("loss").unwrap(), want.get("loss").unwrap()) < 1e-5, "{name} loss");
        let mut grads = 0;
        for (n, g) in want.iter() {
            if let Some(p) = n.strip_prefix("grad.") {
                assert!(rel(got.get(p).unwrap(), g) < 1e-3, "{name} ∂{p}");
                grads += 1;
            }
        }
        assert_eq!(grads, got.len() - 2, "{name}: one gradient per parameter");
    }
}

/// `bitgrad forward -w weights --input input -o out`, then `extra`.
fn forward_args<'a>(weights: &'a Path, input: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    [&["forward", "-w", s(weights), "--input", s(input), "-o", s(out)][..], extra].concat()
}

#[test]
fn forward_on_the_gpu_device_and_labels_flag() {
    let (w, io_file) = (fixtures().join("tiny.safetensors"), fixtures().join("tiny_io.safetensors"));
    let want = load(&io_file);
    let out = tmp("gpu.safetensors");
    // f32: the default on a CUDA device of compute capability 8.0+ (the shim's) is bf16.
    ok(&forward_args(&w, &io_file, &out, &["--device", &gpu_device(), "--precision", "f32"]));
    assert!(rel(load(&out).get("logits").unwrap(), want.get("logits").unwrap()) < 1e-4);
    // --labels overrides the file: other labels, another loss.
    let labels: Vec<i64> = want.get("labels").unwrap().to_vec().unwrap();
    let other = format!("{},{}", (labels[0] + 1) % 10, (labels[1] + 1) % 10);
    let out = tmp("bwd_labels.safetensors");
    ok(&["backward", "-w", s(&w), "--input", s(&io_file), "-o", s(&out), "--labels", &other]);
    let loss = load(&out).get("loss").unwrap().to_scalar().unwrap();
    assert!((loss - want.get("loss").unwrap().to_vec_f64().unwrap()[0]).abs() > 1e-3);
}

#[test]
fn convert_and_info() {
    let w = fixtures().join("tiny.safetensors");
    let half = tmp("tiny16.safetensors");
    ok(&["convert", s(&w), s(&half), "--dtype", "f16"]);
    let info = ok(&["info", "--weights", s(&half), "--arch", "resnetv2_tiny_bit"]);
    assert!(
        info.contains("resnetv2_tiny_bit") && info.contains("F16 (131514 values)") && info.contains("10 classes"),
        "{info}"
    );
    // To the original BiT format and its names.
    let npz = tmp("tiny.npz");
    ok(&["convert", s(&w), s(&npz)]);
    let raw = io::load_npz(&npz, &LoadOptions::new()).unwrap();
    assert!(raw.contains("resnet/root_block/standardized_conv2d/kernel"));
    assert_eq!(raw.get("resnet/head/conv2d/kernel").unwrap().dims(), [1, 1, 256, 10]);
    // A BiT-format .npz of a small GN model carries no group count: refused with the reason.
    let e = fails(&["info", "--weights", s(&fixtures().join("mini2.npz"))]);
    assert!(e.contains("groups"), "{e}");
}

#[test]
fn predict_prints_the_top_classes() {
    let w = fixtures().join("tiny.safetensors");
    let img = tmp("red.png");
    image_png(&img);
    let labels = tmp("classes.txt");
    std::fs::write(&labels, (0..10).map(|i| format!("thing{i}\n")).collect::<String>()).unwrap();
    let out = ok(&["predict", "-w", s(&w), "--labels", s(&labels), "--size", "48", "--top", "3", s(&img)]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[1].contains('%') && lines[1].contains("thing"), "{out}");
    let e = fails(&["predict", "-w", s(&w), "--labels", s(&img), s(&img)]);
    assert!(e.contains("class names") || e.contains("UTF-8") || e.contains("stream"), "{e}");
}

/// A 20×30 red PNG.
fn image_png(path: &Path) {
    image::RgbImage::from_pixel(20, 30, image::Rgb([200, 30, 30])).save(path).unwrap();
}

#[test]
fn bad_input_is_a_clear_error() {
    let w = fixtures().join("tiny.safetensors");
    let io_file = fixtures().join("tiny_io.safetensors");
    let out = tmp("never.safetensors");
    let e = fails(&["forward", "-w", "/nonexistent/w.safetensors", "--input", s(&io_file), "-o", s(&out)]);
    assert!(e.contains("/nonexistent/w.safetensors"), "{e}");
    let e = fails(&["forward", "-w", s(&w), "--arch", "resnetv2_50x1_bit", "--input", s(&io_file), "-o", s(&out)]);
    assert!(e.contains("--arch resnetv2_50x1_bit") && e.contains("resnetv2_tiny_bit"), "{e}");
    let e = fails(&["info", "-w", s(&w), "--arch", "resnet9000"]);
    assert!(e.contains("unknown architecture"), "{e}");
    // The weights file given as the batch: no "input" tensor.
    let e = fails(&["forward", "-w", s(&w), "--input", s(&w), "-o", s(&out)]);
    assert!(e.contains("no tensor named \"input\""), "{e}");
    let e = fails(&["backward", "-w", s(&w), "--input", s(&io_file), "-o", s(&out), "--labels", "1,2,3"]);
    assert!(e.contains("3 labels for a batch of 2"), "{e}");
    let e = fails(&["backward", "-w", s(&w), "--input", s(&io_file), "-o", s(&out), "--labels", "1,10"]);
    assert!(e.contains("label 10 is outside the model's 10 classes"), "{e}");
    let trunc = tmp("trunc.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    let e = fails(&["info", "-w", s(&trunc)]);
    assert!(e.contains("trunc.safetensors"), "{e}");
    let e = fails(&["convert", s(&w), s(&w)]);
    assert!(e.contains("different file"), "{e}");
    // An unknown fusion name in BITGRAD_FUSE is refused before any work, naming the known ones.
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_bitgrad"))
        .args(["forward", "-w", s(&w), "--input", s(&io_file), "-o", s(&out)])
        .env("BITGRAD_FUSE", "residual,wsx")
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{e}");
    assert!(e.starts_with("error: ") && e.contains("\"wsx\" is not a fusion") && e.contains("ws-packing"), "{e}");
    assert!(!out.exists(), "nothing is written on error");
}

/// `--precision`: the default is bf16 on a CUDA device of compute capability 8.0 or newer (the
/// shim's is 9.0) and f32 on the emulator and the CPU, recorded in the output's metadata; bf16
/// logits track timm's f32 ones to bf16 accuracy on every device; an unknown precision is a
/// clean error.
#[test]
fn precision_flag_defaults_and_bf16_logits() {
    let (w, io_file) = (fixtures().join("tiny.safetensors"), fixtures().join("tiny_io.safetensors"));
    let want = load(&io_file);
    for device in ["cpu".to_string(), gpu_device()] {
        let out = tmp(&format!("tiny_{device}_default.safetensors"));
        ok(&forward_args(&w, &io_file, &out, &["--device", &device]));
        let default = if device.starts_with("cuda") { "bf16" } else { "f32" };
        assert_eq!(load(&out).metadata().get("bitgrad.precision").map(String::as_str), Some(default), "{device}");

        let out = tmp(&format!("tiny_{device}_bf16.safetensors"));
        ok(&forward_args(&w, &io_file, &out, &["--device", &device, "--precision", "bf16"]));
        let got = load(&out);
        assert_eq!(got.metadata().get("bitgrad.precision").map(String::as_str), Some("bf16"));
        let logits = got.get("logits").unwrap();
        assert_eq!(logits.dtype(), bitgrad::DType::F32, "the logits are f32 in bf16 runs");
        let e = rel(logits, want.get("logits").unwrap());
        assert!(e < 3e-2, "{device}: bf16 logits are {e:e} (of the largest) off timm's f32 ones");
    }
    // A usage error (clap's exit code 2), with the reason.
    let out = bitgrad(&forward_args(&w, &io_file, &tmp("x.safetensors"), &["--precision", "fp8"]));
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(e.contains("unknown precision \"fp8\": expected bf16 or f32") && !e.contains("panicked"), "{e}");
}
