//! Data-parallel training under `mpirun` (built with `--features mpi`; scripts/test.sh installs
//! OpenMPI and runs these). The shipped tiny model is fine-tuned on 80 of the demonstration's
//! images for 4 steps of 16:
//!
//! * 2 ranks (with `--batch-split 2`, so only the second micro-batch communicates) and 4 ranks
//!   end with the weights of one process on the same global batch, within 1e-6 (f32 sums in
//!   another order); every rank proved it held the same weights and momentum at each checkpoint;
//! * a rank killed with SIGKILL mid-run ends the run within a bounded time with a message, and so
//!   does a rank that stops without dying (the watchdog's `--dist-timeout`);
//! * ranks given different weights or a different lr are refused before training, naming both;
//! * a NaN loss stops every rank at the same step;
//! * a checkpoint of 2 ranks cannot be resumed by 1 process.
#![cfg(feature = "mpi")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bitgrad::models::io::{load_safetensors, LoadOptions};

const BIN: &str = env!("CARGO_BIN_EXE_bitgrad");

fn tmp(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("dist-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The fine-tuning arguments shared by every run (after `finetune`).
fn run_args(out: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "--weights",
        "assets/demo/upstream.safetensors",
        "--data",
        "assets/demo",
        "--format",
        "idx",
        "--shots",
        "16",
        "--steps",
        "4",
        "--batch",
        "16",
        "--lr",
        "0.01",
        "--mixup",
        "0",
        "--resolution",
        "36,32",
        "--workers",
        "1",
        "--quiet",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(out.display().to_string());
    a
}

/// `args` with `flag`'s value replaced.
fn set(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    let i = args.iter().position(|a| a == flag).unwrap();
    args[i + 1] = value.into();
    args
}

fn mpirun(np: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--allow-run-as-root", "--oversubscribe", "-np", &np.to_string()])
        // One loader thread and one compute thread per rank: 4 ranks on 2 cores stay sane.
        .args(["-x", "RAYON_NUM_THREADS=1"]);
    c
}

fn check(out: &Output, what: &str) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let sd = load_safetensors(path, &LoadOptions::default()).unwrap();
    sd.iter().map(|(n, t)| (n.to_string(), t.to_vec::<f32>().unwrap())).collect()
}

/// The largest |a − b| over every tensor (weights and momentum) of two checkpoints.
fn max_diff(a: &Path, b: &Path) -> f32 {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut worst = 0.0f32;
    for (name, x) in &a {
        for (p, q) in x.iter().zip(&b[name]) {
            assert!(p.is_finite() && q.is_finite(), "{name}");
            worst = worst.max((p - q).abs());
        }
    }
    worst
}

#[test]
fn two_and_four_ranks_train_like_one_process() {
    let dir = tmp("equal");
    let single = dir.join("single");
    let out = Command::new(BIN)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("finetune")
        .args(run_args(&single))
        .args(["--dist", "none"])
        .output()
        .unwrap();
    check(&out, "the single-process run");
    let reference = single.join("last.safetensors");
    for (np, split) in [(2, "2"), (4, "1")] {
        let ranks = dir.join(format!("np{np}"));
        let out =
            mpirun(np).arg(BIN).arg("finetune").args(run_args(&ranks)).args(["--batch-split", split]).output().unwrap();
        let text = check(&out, &format!("mpirun -np {np}"));
        assert!(text.contains(&format!("data-parallel over {np} ranks")), "{text}");
        assert!(text.contains("identical weights and momentum on every rank"), "{text}");
        let diff = max_diff(&reference, &ranks.join("last.safetensors"));
        eprintln!("{np} ranks (batch-split {split}): largest difference from one process {diff:e}");
        assert!(diff <= 1e-6, "{np} ranks: weights differ from one process by {diff}");
        // Only rank 0 writes: one metrics line per step and one evaluation.
        let metrics = std::fs::read_to_string(ranks.join("metrics.jsonl")).unwrap();
        assert_eq!(metrics.lines().count(), 5, "{metrics}");
    }
}

/// The PIDs of `mpirun`'s children and their `OMPI_COMM_WORLD_RANK`.
fn ranks_of(mpirun: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let ppid = stat.rsplit(')').next().and_then(|s| s.split_whitespace().nth(1)).and_then(|s| s.parse().ok());
        if ppid != Some(mpirun) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        for var in env.split(|&b| b == 0) {
            if let Some(r) = String::from_utf8_lossy(var).strip_prefix("OMPI_COMM_WORLD_RANK=") {
                out.push((pid, r.to_string()));
            }
        }
    }
    out
}

/// Starts a long 2-rank run, sends `signal` to rank 1 once training runs, and returns mpirun's
/// stderr and the seconds from the signal to the end of the run (bounded by 90 s).
fn signal_rank_1(tag: &str, signal: &str, timeout: &str) -> (String, f64) {
    let dir = tmp(tag);
    // Rank 0 prints a line every 400 steps (1/50 of the run) when output is not a terminal.
    let mut args = set(run_args(&dir.join("run")), "--steps", "20000");
    args.retain(|a| a != "--quiet");
    let mut child = mpirun(2)
        .arg(BIN)
        .arg("finetune")
        .args(&args)
        .args(["--dist-timeout", timeout])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    while !seen.contains("step 400/") {
        let line = lines.next().expect("mpirun's output ended before step 400").unwrap();
        seen += &line;
        seen.push('\n');
    }
    let victim = ranks_of(child.id()).into_iter().find(|(_, r)| r == "1").expect("rank 1's process").0;
    let t0 = Instant::now();
    assert!(Command::new("kill").args([signal, &victim.to_string()]).status().unwrap().success());
    std::thread::spawn(move || for _ in lines {});
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = Command::new("kill").args(["-9", &victim.to_string()]).status();
            panic!("the run still runs 90 s after rank 1 got {signal}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    (err, t0.elapsed().as_secs_f64())
}

/// A rank killed outright: mpirun notices the death and ends the job, naming the rank.
#[test]
fn a_killed_rank_ends_the_run_within_bounded_time() {
    let (err, secs) = signal_rank_1("kill", "-KILL", "600");
    assert!(err.contains("rank 1") && err.contains("signal 9"), "{err}");
    assert!(secs < 30.0, "{secs} s");
}

/// A rank that stops without dying (SIGSTOP), which mpirun does not notice: rank 0's watchdog
/// ends it after --dist-timeout with a message, and mpirun then ends the job.
#[test]
fn a_stuck_rank_ends_the_run_through_the_watchdog() {
    let (err, secs) = signal_rank_1("stop", "-STOP", "5");
    assert!(err.contains("bitgrad: rank 0 of 2: the mpi") && err.contains("did not complete within 5 s"), "{err}");
    assert!((4.0..60.0).contains(&secs), "{secs} s");
}

#[test]
fn ranks_with_different_weights_or_lr_are_refused() {
    let dir = tmp("mismatch");
    // Another weights file: the shipped one with one value of the stem's kernel changed (the head
    // is replaced by fine-tuning, so a change there would not matter).
    let mut bytes =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/upstream.safetensors")).unwrap();
    let at = {
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensor("stem.conv.weight").unwrap().data().as_ptr() as usize - bytes.as_ptr() as usize
    };
    bytes[at + 1] ^= 0x01;
    let other = dir.join("other.safetensors");
    std::fs::write(&other, bytes).unwrap();
    let out_dir = dir.join("run");
    let b = set(set(run_args(&out_dir), "--weights", &other.display().to_string()), "--lr", "0.02");
    let out = mpirun(1)
        .arg(BIN)
        .arg("finetune")
        .args(run_args(&out_dir))
        .args([":", "-np", "1", "-x", "RAYON_NUM_THREADS=1", BIN, "finetune"])
        .args(&b)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("the weights (1 of 2 ranks differ from rank 0)"), "{text}");
    assert!(text.contains("the base lr (1 of 2 ranks differ from rank 0)"), "{text}");
    assert!(!out_dir.join("last.safetensors").exists(), "a refused run wrote a checkpoint");
}

#[test]
fn a_nan_stops_every_rank_at_the_same_step() {
    let dir = tmp("nan");
    let args = set(run_args(&dir.join("run")), "--lr", "1e30");
    let out = mpirun(2).arg(BIN).arg("finetune").args(&args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    let steps: Vec<&str> = text
        .match_indices("training stopped at step ")
        .map(|(i, m)| text[i + m.len()..].split(':').next().unwrap())
        .collect();
    assert_eq!(steps.len(), 2, "both ranks report the stop:\n{text}");
    assert_eq!(steps[0], steps[1], "{text}");
}

#[test]
fn a_checkpoint_of_two_ranks_is_not_resumed_by_one() {
    let dir = tmp("resume");
    let run = dir.join("run");
    let out = mpirun(2).arg(BIN).arg("finetune").args(run_args(&run)).args(["--stop-after", "2"]).output().unwrap();
    check(&out, "mpirun -np 2 --stop-after 2");
    let mut args = run_args(&run);
    args.drain(0..2); // --weights W: the checkpoint decides
    let out = Command::new(BIN)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("finetune")
        .args(&args)
        .arg("--resume")
        .arg(run.join("last.safetensors"))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("was trained on 2 rank(s) and this run has 1"), "{text}");
}

/// With the feature built in, a run without a launcher does not touch MPI (`--dist auto`), and
/// `--dist mpi` without mpirun is an MPI singleton: a world of one rank that trains through the
/// whole data-parallel path.
#[test]
fn without_mpirun_the_mpi_build_runs_alone() {
    let dir = tmp("alone");
    for (dist, out) in [("auto", dir.join("auto")), ("mpi", dir.join("mpi"))] {
        let run = Command::new(BIN)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("finetune")
            .args(set(run_args(&out), "--steps", "1"))
            .args(["--dist", dist])
            .output()
            .unwrap();
        let text = check(&run, &format!("--dist {dist} without mpirun"));
        assert_eq!(text.contains("data-parallel over 1 ranks"), dist == "mpi", "{text}");
        assert!(out.join("last.safetensors").exists());
    }
}
