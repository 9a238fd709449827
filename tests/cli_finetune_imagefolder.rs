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

#[test]
fn finetune_on_an_image_folder() {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("imagefolder-{}", std::process::id()));
    let (data, out) = (tmp.join("data"), tmp.join("run"));
    write_folder(&data);
    let run = Command::new(env!("CARGO_BIN_EXE_bitgrad"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["finetune", "--weights", "assets/demo/upstream.safetensors", "--data"])
        .arg(&data)
        .args(["--steps", "10", "--batch", "8", "--resolution", "36,32", "--quiet", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
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
