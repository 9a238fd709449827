//! `--norm` on `bitgrad pretrain` and `bitgrad finetune`, run as a user runs them on the shipped
//! data: a BN + WS model trains and its weights file records the choice (running statistics
//! included); a group count that does not fit, an unknown spec, and a `--norm` that disagrees
//! with `--weights` are clean errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bitgrad::models::io::{load_safetensors, LoadOptions};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn out_dir(tag: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-norm-{tag}-{}", std::process::id()))
}

/// `bitgrad <cmd> --data assets/demo --format idx` with a 2-step, 4-shot, 32 px schedule.
fn bitgrad(cmd: &str, extra: &[&str], out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bitgrad"))
        .current_dir(root())
        .args([cmd, "--data", "assets/demo", "--format", "idx", "--shots", "4", "--steps", "2", "--batch", "8"])
        .args(["--resolution", "36,32", "--quiet", "--workers", "1"])
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn fails_with(cmd: &str, extra: &[&str], want: &str) {
    let run = bitgrad(cmd, extra, &out_dir("fail"));
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{cmd} {extra:?} should fail cleanly:\n{err}");
    assert!(err.starts_with("error: ") && err.contains(want) && !err.contains("panicked"), "{err}");
}

#[test]
fn pretrain_with_batch_norm_records_it_and_bad_choices_are_errors() {
    let out = out_dir("bn");
    let run = bitgrad("pretrain", &["--arch", "resnetv2_tiny_bit", "--norm", "bn_ws"], &out);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let weights = out.join("weights.safetensors");
    let sd = load_safetensors(&weights, &LoadOptions::new()).unwrap();
    assert_eq!(sd.metadata()["bitgrad.norm"], "batch_norm");
    assert_eq!(sd.metadata()["bitgrad.ws"], "true");
    let rv = sd.get("stages.0.blocks.0.norm1.running_var").expect("running statistics are saved");
    assert!(rv.to_vec_f64().unwrap().iter().any(|&v| v != 1.0), "and were updated by training");

    let w = weights.to_str().unwrap();
    fails_with("finetune", &["--weights", w, "--norm", "gn_ws"], "disagrees");
    fails_with("pretrain", &["--arch", "resnetv2_tiny_bit", "--norm", "gn16_ws"], "not divisible");
    fails_with("pretrain", &["--arch", "resnetv2_tiny_bit", "--norm", "groupnorm"], "unknown normalization");
}
