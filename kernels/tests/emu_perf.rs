//! Launch cost of the emulator: a 1-M-thread elementwise launch (4096 blocks of 256, no
//! barriers) on one core, and a small launch's fixed overhead. Prints the numbers; the bounds are
//! loose so that a loaded CI machine does not fail them.

mod common;

use std::time::Instant;

use bitgrad_kernels::emu::Modes;
use common::*;

fn one_core<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool").install(f)
}

#[test]
fn one_million_threads_on_one_core() {
    let n = 4096 * 256;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    for modes in [Modes::FAST, Modes::CHECKED] {
        let xb = upload(&x, &modes);
        let y = filled(n, 1f32, &modes);
        let args = [arg(&2f32), ptr(&xb), ptr(&y), arg(&(n as i32))];
        let launch = || run("selftest_axpy_f32", [4096, 1, 1], [256, 1, 1], 0, &args, &modes).unwrap();
        one_core(launch); // warm: fibers, page faults
        let t = Instant::now();
        one_core(launch);
        let secs = t.elapsed().as_secs_f64();
        eprintln!("1M-thread elementwise launch on one core ({modes:?}): {:.1} ms", secs * 1e3);
        assert!(secs < 2.0, "{secs} s");
        let got = download::<f32>(&y);
        assert!(got.iter().zip(&x).all(|(y, x)| *y == 2.0 * x + 2.0 * x + 1.0));
    }
}

#[test]
fn small_launch_overhead() {
    let modes = Modes::FAST;
    let xb = upload(&[1f32; 32], &modes);
    let y = filled(32, 0f32, &modes);
    let args = [arg(&2f32), ptr(&xb), ptr(&y), arg(&32i32)];
    let reps = 20_000;
    let t = Instant::now();
    for _ in 0..reps {
        run("selftest_axpy_f32", [1, 1, 1], [32, 1, 1], 0, &args, &modes).unwrap();
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / reps as f64;
    eprintln!("32-thread launch: {us:.2} us per launch");
    assert!(us < 1000.0);
}
