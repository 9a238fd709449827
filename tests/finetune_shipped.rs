//! End to end on the shipped data (assets/demo): `bitgrad finetune` fine-tunes the shipped
//! upstream checkpoint 10-shot on the five downstream Fashion-MNIST classes with the built-in
//! demonstration's recipe and must reach a stated accuracy on the 1 500 held-out images; and the
//! same examples and recipe from scratch must end clearly below it — the transfer effect the
//! demonstration shows. Both are deterministic on the CPU; the margins leave room for another
//! CPU's SIMD path (a different rounding of the same sums).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Measured 77.9 % (seed 0, 10 shots; chance is 20 %).
const TRANSFER_THRESHOLD: f64 = 70.0;
/// Measured: transfer beats scratch by 4.9 and 3.5 points on draws 0 and 1 (mean 4.2; +3.3 to
/// +4.9 over the demonstration's five draws, docs/benchmarks.md).
const MIN_MEAN_GAIN: f64 = 1.5;

fn out_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()))
}

/// Runs the demonstration's recipe 10-shot on draw `seed`, writing into `out`; returns top-1 %.
fn finetune(start: &[&str], seed: u64, out: &Path) -> f64 {
    let run = Command::new(env!("CARGO_BIN_EXE_bitgrad"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("finetune")
        .args(start)
        .args(["--data", "assets/demo", "--format", "idx", "--shots", "10", "--seed", &seed.to_string()])
        .args(["--steps", "100", "--lr", "0.03", "--resolution", "36,32", "--batch", "50", "--mixup", "0", "--quiet"])
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let line = stdout.lines().find(|l| l.starts_with("validation")).expect("a validation line");
    line.split("top-1 ").nth(1).and_then(|s| s.split('%').next()).unwrap().parse().unwrap()
}

const UPSTREAM: [&str; 2] = ["--weights", "assets/demo/upstream.safetensors"];
const SCRATCH: [&str; 2] = ["--arch", "resnetv2_tiny_bit"];

/// One test, so that draw 0's transfer run serves both checks instead of running twice.
#[test]
fn ten_shot_transfer_reaches_the_stated_accuracy_and_beats_training_from_scratch() {
    let out = out_dir("finetune-shipped");
    let transfer0 = finetune(&UPSTREAM, 0, &out);
    assert!(transfer0 >= TRANSFER_THRESHOLD, "top-1 {transfer0}% < {TRANSFER_THRESHOLD}%");
    for f in ["last.safetensors", "metrics.jsonl", "chart.png"] {
        assert!(out.join(f).exists(), "{f} not written");
    }

    let mut gains = Vec::new();
    for seed in [0, 1] {
        let transfer = match seed {
            0 => transfer0,
            _ => finetune(&UPSTREAM, seed, &out_dir(&format!("transfer-{seed}"))),
        };
        let scratch = finetune(&SCRATCH, seed, &out_dir(&format!("scratch-{seed}")));
        gains.push(transfer - scratch);
    }
    let mean = gains.iter().sum::<f64>() / gains.len() as f64;
    assert!(mean >= MIN_MEAN_GAIN, "transfer − scratch per draw {gains:?}: mean {mean:.2} < {MIN_MEAN_GAIN}");
}
