//! `bitgrad finetune --weights W --data DIR` on a user's ImageFolder (train/<class>/*.png and
//! val/<class>/*.png), through the binary: the classes come from the folder names, a corrupt file
//! is reported by name and skipped, the run writes its checkpoints, and the shipped upstream
//! model learns two easy classes in ten steps (measured 100 % on the 8 validation images).

use std::path::{Path, PathBuf};
use std::process::Command;

/// 40×30 PNGs of 4-pixel stripes, horizontal or vertical by class, at a seeded offset.
fn write_folder(root: &Path) {
    for (split, per_class) in [("train", 6), ("val", 4)] {
        for class in ["stripes_h", "stripes_v"] {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..per_class {
                let offset = (i * 3) % 8;
                let img = image::RgbImage::from_fn(40, 30, |x, y| {
                    let t = if class == "stripes_h" { y } else { x };
                    image::Rgb([if (t + offset) / 4 % 2 == 1 { 255 } else { 0 }; 3])
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    std::fs::write(root.join("train/stripes_h/broken.png"), b"\x89PNG\r\n\x1a\nnot an image").unwrap();
}

/// `bitgrad finetune` of the shipped upstream model on `data` for 10 steps of batch 8, into
/// `out`, with `extra` flags; asserts success and returns stdout.
fn finetune_upstream(data: &Path, out: &Path, extra: &[&str]) -> String {
    let run = Command::new(env!("CARGO_BIN_EXE_bitgrad"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["finetune", "--weights", "assets/demo/upstream.safetensors", "--data"])
        .arg(data)
        .args(["--steps", "10", "--batch", "8", "--quiet", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    stdout
}

#[test]
fn finetune_on_an_image_folder() {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("imagefolder-{}", std::process::id()));
    let (data, out) = (tmp.join("data"), tmp.join("run"));
    write_folder(&data);
    let stdout = finetune_upstream(&data, &out, &["--resolution", "36,32"]);
    assert!(stdout.contains("12 training examples, 2 classes, 8 validation examples"), "{stdout}");
    assert!(stdout.contains("stripes_h") && stdout.contains("stripes_v"), "per-class table: {stdout}");
    assert!(stdout.contains("skipped images: 1") && stdout.contains("broken.png"), "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("validation")).expect("a validation line");
    let top1: f64 = line.split("top-1 ").nth(1).and_then(|s| s.split('%').next()).unwrap().parse().unwrap();
    assert!(top1 >= 75.0, "top-1 {top1}% (chance 50%)");
    for f in ["last.safetensors", "best.safetensors", "metrics.jsonl", "chart.png"] {
        assert!(out.join(f).exists(), "{f} not written");
    }
}

/// The same fine-tuning on the GPU test device (Emu, or Cuda(0) under the CUDA shim) with bf16
/// activations: the tensor-core convolutions and NHWC group norm train the shipped model (20 px
/// crops to keep the emulator's run short), and the checkpoint holds the f32 master weights.
#[test]
fn finetune_in_bf16_on_the_gpu_device() {
    let device = std::env::var("BITGRAD_GPU_TEST_DEVICE").ok().filter(|d| !d.trim().is_empty());
    let device = device.unwrap_or_else(|| "emu".into());
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("imagefolder-bf16-{}", std::process::id()));
    let (data, out) = (tmp.join("data"), tmp.join("run"));
    write_folder(&data);
    let args = ["--resolution", "24,20", "--workers", "1", "--device", &device, "--precision", "bf16"];
    let stdout = finetune_upstream(&data, &out, &args);
    assert!(stdout.contains(&format!("device {device}, precision bf16")), "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("validation")).expect("a validation line");
    let top1: f64 = line.split("top-1 ").nth(1).and_then(|s| s.split('%').next()).unwrap().parse().unwrap();
    assert!(top1 >= 75.0, "top-1 {top1}% (chance 50%)");
    let ck = bitgrad::models::io::load_safetensors(out.join("last.safetensors"), &Default::default()).unwrap();
    assert!(ck.iter().all(|(_, t)| t.dtype() != bitgrad::DType::BF16), "the checkpoint keeps f32 master weights");
}
