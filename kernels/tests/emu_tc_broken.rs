//! The deliberately broken tensor-core kernels (kernels/cuda/broken/tc_*.cu) are caught: a wrong
//! fragment index by the reference comparison, a missing cp.async wait or a missing barrier after
//! it, a diverged warp and an exited lane at a warp-wide instruction by the emulator itself, in
//! every mode and with an error naming the kernel, the instruction and the line. Each bug's
//! correct twin (tc_selftest.cu) passes under the same modes.

mod common;

use bitgrad_kernels::emu::{EmuError, Modes};
use common::tc::{Half, Rng};
use common::*;

/// The modes every check runs under: plain order, all checks, and other shuffle seeds.
const MODES: [Modes; 4] = [
    Modes::FAST,
    Modes::CHECKED,
    Modes { shuffle: true, guard: false, seed: 7 },
    Modes { shuffle: true, guard: true, seed: 0xDEAD_BEEF },
];

/// The 1-based line of `kernel`'s source containing `marker`.
fn line_of(kernel: &str, marker: &str) -> usize {
    let src = bitgrad_kernels::find_source(kernel).unwrap();
    src.source.lines().position(|l| l.contains(marker)).unwrap_or_else(|| panic!("{marker:?} not in {}", src.name)) + 1
}

/// One 16×8×16 tile through `kernel`; true when D equals the f32 reference in k order.
fn tile_correct(kernel: &str, seed: u64, modes: &Modes) -> bool {
    let mut rng = Rng(seed);
    let a: Vec<u16> = (0..256).map(|_| Half::Bf16.random(&mut rng, 0)).collect();
    let b: Vec<u16> = (0..128).map(|_| Half::Bf16.random(&mut rng, 0)).collect();
    let c: Vec<f32> = (0..128).map(|_| rng.unit()).collect();
    let bufs = [upload(&a, modes), upload(&b, modes), upload(&c, modes)];
    let d = filled(128, 0f32, modes);
    run(kernel, [1, 1, 1], [32, 1, 1], 0, &[ptr(&bufs[0]), ptr(&bufs[1]), ptr(&bufs[2]), ptr(&d)], modes).unwrap();
    let got = download::<f32>(&d);
    let f = |x: u16| Half::Bf16.to_f32(x);
    (0..16).all(|i| {
        (0..8).all(|j| {
            let want = (0..16).fold(c[i * 8 + j], |acc, k| acc + f(a[i * 16 + k]) * f(b[k * 8 + j]));
            got[i * 8 + j].to_bits() == want.to_bits()
        })
    })
}

#[test]
fn a_wrong_fragment_index_is_caught_by_the_reference() {
    for modes in MODES {
        for seed in [1, 2, 3] {
            assert!(tile_correct("tc_selftest_mma_tile_bf16", seed, &modes), "the correct gather, seed {seed}");
            assert!(!tile_correct("broken_tc_wrong_fragment", seed, &modes), "the broken gather passed, seed {seed}");
        }
    }
}

/// Runs one of the cp.async → ldmatrix kernels (128 threads, 2 KiB of shared memory).
fn cp_async_ldmatrix(kernel: &str, modes: &Modes) -> Result<(), EmuError> {
    let src: Vec<u16> = (0..1024).map(|i| i as u16).collect();
    let sb = upload(&src, modes);
    let out = filled(512, 0u32, modes);
    run(kernel, [2, 1, 1], [128, 1, 1], 2048, &[ptr(&sb), ptr(&out)], modes)
}

#[test]
fn a_missing_wait_group_is_an_error_in_every_mode() {
    let line = line_of("broken_tc_missing_wait", "bg_ldmatrix_x4(");
    for modes in MODES {
        cp_async_ldmatrix("tc_selftest_cp_async_ldmatrix", &modes).unwrap();
        let err = cp_async_ldmatrix("broken_tc_missing_wait", &modes).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, EmuError::AsyncCopy { .. }), "{modes:?}: {err:?}");
        assert!(msg.contains("broken_tc_missing_wait") && msg.contains("ldmatrix.sync.aligned.m8n8.x4"), "{msg}");
        assert!(msg.contains(&format!("broken/tc_missing_wait.cu:{line}:")), "{msg}");
        assert!(msg.contains("missing cp.async.wait_group"), "{msg}");
    }
}

#[test]
fn a_missing_barrier_after_the_wait_is_an_error_in_every_mode() {
    let line = line_of("broken_tc_missing_sync", "bg_ldmatrix_x4(");
    for modes in MODES {
        let err = cp_async_ldmatrix("broken_tc_missing_sync", &modes).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, EmuError::AsyncCopy { .. }), "{modes:?}: {err:?}");
        assert!(
            msg.contains("broken_tc_missing_sync") && msg.contains(&format!("tc_missing_sync.cu:{line}:")),
            "{msg}"
        );
        assert!(msg.contains("missing __syncthreads()"), "{msg}");
    }
}

#[test]
fn a_diverged_mma_is_an_error_naming_the_instruction() {
    for modes in MODES {
        let out = filled(32, 0f32, &modes);
        let err = with_timeout(60, move || {
            run("broken_tc_mma_diverged", [1, 1, 1], [32, 1, 1], 0, &[ptr(&out)], &modes).unwrap_err()
        });
        let msg = err.to_string();
        assert!(matches!(err, EmuError::WarpSync { .. }), "{err:?}");
        assert!(msg.contains("broken_tc_mma_diverged") && msg.contains("diverged warp"), "{msg}");
        assert!(msg.contains("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 at broken/tc_diverged.cu:"), "{msg}");
        // Both call sites are named, whichever half arrived first.
        let first = line_of("broken_tc_mma_diverged", "bg_mma_bf16_16816(d, a, b, c);");
        let second = line_of("broken_tc_mma_diverged", "BUG: a second call site");
        for line in [first, second] {
            assert!(msg.contains(&format!("tc_diverged.cu:{line}")), "line {line} missing: {msg}");
        }
    }
}

#[test]
fn an_exited_lane_at_ldmatrix_is_an_error() {
    for modes in MODES {
        let out = filled(32, 0u32, &modes);
        let err = with_timeout(60, move || {
            run("broken_tc_ldmatrix_exited", [1, 1, 1], [32, 1, 1], 128, &[ptr(&out)], &modes).unwrap_err()
        });
        let msg = err.to_string();
        assert!(matches!(err, EmuError::WarpSync { .. }), "{err:?}");
        assert!(msg.contains("broken_tc_ldmatrix_exited") && msg.contains("ldmatrix.sync.aligned.m8n8.x1"), "{msg}");
        assert!(msg.contains("exited") || msg.contains("end of the kernel"), "{msg}");
    }
}

#[test]
fn a_partial_warp_at_mma_is_an_error() {
    let modes = Modes::FAST;
    let z = filled(16 * 4, 0u32, &modes);
    let d = filled(16 * 4, 0f32, &modes);
    let err =
        run("tc_selftest_mma", [1, 1, 1], [16, 1, 1], 0, &[ptr(&z), ptr(&z), ptr(&z), ptr(&d), arg(&1i32)], &modes)
            .unwrap_err();
    assert!(err.to_string().contains("has only 16 threads"), "{err}");
}
