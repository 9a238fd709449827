//! Each deliberately broken kernel (kernels/cuda/broken/) is caught by its mode with a clear
//! error, and bad launches are errors, never panics or hangs.

mod common;

use bitgrad_kernels::emu::{EmuError, Modes};
use common::*;

/// Runs the missing-barrier reduction over 8 blocks of 256; true when every block sum is right.
fn missing_sync_correct(modes: Modes) -> bool {
    let x: Vec<f32> = (0..8 * 256).map(|i| (i % 9) as f32).collect();
    let xb = upload(&x, &modes);
    let out = filled(8, 0f32, &modes);
    run("broken_reduce_missing_sync", [8, 1, 1], [256, 1, 1], 256 * 4, &[ptr(&xb), ptr(&out)], &modes).unwrap();
    let got = download::<f32>(&out);
    (0..8).all(|b| got[b] == x[b * 256..(b + 1) * 256].iter().sum::<f32>())
}

#[test]
fn missing_barrier_passes_in_order_but_fails_shuffled() {
    // In thread-index order lane t-1 always wrote before lane t reads: the bug hides...
    assert!(missing_sync_correct(Modes::FAST));
    // ...and shuffling exposes it, whatever the seed.
    for seed in [1, 2, 3, 0xDEAD_BEEF] {
        assert!(!missing_sync_correct(Modes { shuffle: true, guard: false, seed }), "seed {seed} missed the race");
    }
}

#[test]
fn one_past_the_end_write_is_caught_by_guard_mode() {
    for modes in [Modes::CHECKED, Modes { shuffle: false, guard: true, seed: 0 }] {
        for n in [1usize, 100, 1023] {
            let out = filled(n, 0f32, &modes);
            let blocks = (n as u32 + 1).div_ceil(128);
            let err = run("broken_oob_write", [blocks, 1, 1], [128, 1, 1], 0, &[ptr(&out), arg(&(n as i32))], &modes)
                .unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("broken_oob_write") && msg.contains("past the end"), "{msg}");
            match err {
                EmuError::OutOfBounds { past_end, buffer_len, write, thread, block, .. } => {
                    assert_eq!((past_end, buffer_len, write), (0, 4 * n, Some(true)));
                    let gid = block[0] * 128 + thread.unwrap()[0];
                    assert_eq!(gid as usize, n, "the thread that wrote out[n]");
                }
                other => panic!("expected OutOfBounds, got {other:?}"),
            }
        }
    }
    // Without guard pages the same bug goes unnoticed.
    let out = filled(100, 0f32, &Modes::FAST);
    run("broken_oob_write", [1, 1, 1], [128, 1, 1], 0, &[ptr(&out), arg(&100i32)], &Modes::FAST).unwrap();
}

#[test]
fn divergent_barrier_is_a_deadlock_error_in_every_mode() {
    for modes in [Modes::FAST, Modes::CHECKED, Modes { shuffle: true, guard: false, seed: 7 }] {
        let msg = with_timeout(60, move || {
            let out = filled(32, 0f32, &modes);
            let err = run("broken_divergent_barrier", [4, 1, 1], [32, 1, 1], 0, &[ptr(&out)], &modes).unwrap_err();
            assert!(matches!(err, EmuError::Deadlock { .. }), "{err:?}");
            err.to_string()
        });
        assert!(msg.contains("broken_divergent_barrier"), "{msg}");
        let src = bitgrad_kernels::find_source("broken_divergent_barrier").unwrap();
        let line = src.source.lines().position(|l| l.contains("BUG: divergent barrier")).unwrap() + 1;
        assert!(msg.contains(&format!("broken/divergent_barrier.cu:{line} ")), "{msg}");
        assert!(msg.contains("16 of 32 threads"), "{msg}");
    }
}

#[test]
fn the_emulator_keeps_working_after_errors() {
    let modes = Modes::CHECKED;
    for _ in 0..3 {
        let out = filled(32, 0f32, &modes);
        assert!(run("broken_divergent_barrier", [1, 1, 1], [32, 1, 1], 0, &[ptr(&out)], &modes).is_err());
        let out = filled(10, 0f32, &modes);
        assert!(run("broken_oob_write", [1, 1, 1], [32, 1, 1], 0, &[ptr(&out), arg(&10i32)], &modes).is_err());
        let x: Vec<f32> = vec![1.0; 300];
        let xb = upload(&x, &modes);
        let sum = filled(2, 0f32, &modes);
        run("selftest_block_sum", [2, 1, 1], [128, 1, 1], 512, &[ptr(&xb), ptr(&sum), arg(&300i32)], &modes).unwrap();
        assert_eq!(download::<f32>(&sum).iter().sum::<f32>(), 300.0);
    }
}

#[test]
fn bad_launches_are_errors() {
    let modes = Modes::FAST;
    let out = filled(64, 0f32, &modes);
    let a = [ptr(&out), arg(&64i32)];
    let err = run("no_such_kernel", [1, 1, 1], [1, 1, 1], 0, &a, &modes).unwrap_err();
    assert!(matches!(err, EmuError::UnknownKernel(_)), "{err}");
    for (grid, block, shared) in [
        ([1, 1, 1], [2048, 1, 1], 0),
        ([1, 1, 1], [32, 32, 2], 0),
        ([1, 1, 1], [1, 1, 65], 0),
        ([1, 0, 1], [32, 1, 1], 0),
        ([1, 65536, 1], [32, 1, 1], 0),
        ([1, 1, 1], [32, 1, 1], 300_000),
    ] {
        let err = run("broken_oob_write", grid, block, shared, &a, &modes).unwrap_err();
        assert!(matches!(err, EmuError::BadConfig { .. }), "{err}");
    }
    let err = run("broken_oob_write", [1, 1, 1], [32, 1, 1], 0, &a[..1], &modes).unwrap_err();
    assert!(matches!(err, EmuError::ArgCount { expected: 2, got: 1, .. }), "{err}");
    let err = run("broken_oob_write", [1, 1, 1], [32, 1, 1], 0, &[ptr(&out), arg(&64i64)], &modes).unwrap_err();
    assert!(matches!(err, EmuError::ArgSize { index: 1, expected: 4, got: 8, .. }), "{err}");
}

#[test]
fn concurrent_launches_from_several_threads() {
    let handles: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let modes = if t % 2 == 0 { Modes::FAST } else { Modes::CHECKED };
                for _ in 0..5 {
                    let n = 50_000usize;
                    let x: Vec<f32> = (0..n).map(|i| (i % 3) as f32).collect();
                    let xb = upload(&x, &modes);
                    let y = filled(n, 1f32, &modes);
                    run(
                        "selftest_axpy_f32",
                        [196, 1, 1],
                        [256, 1, 1],
                        0,
                        &[arg(&2f32), ptr(&xb), ptr(&y), arg(&(n as i32))],
                        &modes,
                    )
                    .unwrap();
                    assert!(download::<f32>(&y).iter().zip(&x).all(|(y, x)| *y == 2.0 * x + 1.0));
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
}

#[test]
fn modes_parse() {
    assert_eq!(Modes::parse(""), Modes::CHECKED);
    assert_eq!(Modes::parse("fast"), Modes::FAST);
    assert_eq!(Modes::parse("checked"), Modes::CHECKED);
    assert_eq!(Modes::parse("guard"), Modes { guard: true, ..Modes::FAST });
    assert_eq!(Modes::parse("shuffle, guard"), Modes::CHECKED);
}

#[test]
fn warp_op_naming_an_exited_lane_is_an_error() {
    for modes in [Modes::FAST, Modes::CHECKED] {
        let out = filled(32, 0f32, &modes);
        let err = with_timeout(60, move || {
            run("broken_warp_exited_lane", [1, 1, 1], [32, 1, 1], 0, &[ptr(&out)], &modes).unwrap_err()
        });
        let msg = err.to_string();
        assert!(matches!(err, EmuError::WarpSync { .. } | EmuError::Deadlock { .. }), "{err:?}");
        assert!(msg.contains("broken_warp_exited_lane") && msg.contains("exited"), "{msg}");
    }
}
