//! The tensor-core instructions (kernels/cuda/tensor_core.cuh, emulated by kernels/emu/tensor.cpp)
//! against scalar references, for every lane: mma.sync m16n8k16 bf16 and f16 (random and edge
//! values), ldmatrix in all six forms from random row addresses, cp.async in every form and
//! source size, commit/wait groups, and the poison a copy leaves until it lands.

mod common;

use bitgrad_kernels::emu::{EmuError, Modes};
use common::tc::{mma_reference, pack, same_f32, Half, Rng};
use common::*;

fn check_mma(h: Half, edge_rate: u64, seed: u64) {
    let blocks = 8usize;
    let mut rng = Rng(seed);
    let halves = |rng: &mut Rng, n: usize| -> Vec<u32> {
        (0..n).map(|_| pack(h.random(rng, edge_rate), h.random(rng, edge_rate))).collect()
    };
    let a = halves(&mut rng, blocks * 128);
    let b = halves(&mut rng, blocks * 64);
    let c: Vec<f32> = (0..blocks * 128).map(|i| if i % 7 == 0 { 0.0 } else { rng.unit() * 8.0 }).collect();
    for modes in BOTH {
        let d = filled(blocks * 128, 0f32, &modes);
        let bufs = [upload(&a, &modes), upload(&b, &modes), upload(&c, &modes)];
        let is_bf16 = (h == Half::Bf16) as i32;
        run(
            "tc_selftest_mma",
            [blocks as u32, 1, 1],
            [32, 1, 1],
            0,
            &[ptr(&bufs[0]), ptr(&bufs[1]), ptr(&bufs[2]), ptr(&d), arg(&is_bf16)],
            &modes,
        )
        .unwrap();
        let got = download::<f32>(&d);
        for blk in 0..blocks {
            let want = mma_reference(h, &a[blk * 128..][..128], &b[blk * 64..][..64], &c[blk * 128..][..128]);
            for (i, (&w, &g)) in want.iter().zip(&got[blk * 128..][..128]).enumerate() {
                assert!(same_f32(w, g), "{h:?} block {blk} lane {} d{}: want {w:e} got {g:e}", i / 4, i % 4);
            }
        }
    }
}

#[test]
fn mma_bf16_matches_the_fragment_table_for_every_lane() {
    check_mma(Half::Bf16, 0, 1);
    check_mma(Half::Bf16, 40, 2); // ±0, ±∞, NaN, extremes, subnormals among the inputs
}

#[test]
fn mma_f16_matches_the_fragment_table_for_every_lane() {
    check_mma(Half::F16, 0, 3);
    check_mma(Half::F16, 40, 4);
}

#[test]
fn mma_sums_in_the_documented_order() {
    // c = 1, then products 2^24, -2^24 and fourteen 1s. Left to right in f32: 1 + 2^24 rounds to
    // 2^24, minus 2^24 is 0, plus the ones is 14. Summing the products first would give 15.
    let one = Half::Bf16.round(1.0);
    let big = Half::Bf16.round(16_777_216.0);
    let nbig = Half::Bf16.round(-16_777_216.0);
    let mut a = vec![0u32; 128];
    let mut b = vec![0u32; 64];
    for lane in 0..32 {
        let t = lane % 4;
        for r in 0..4 {
            // Row values: A[row][k] = 2^24 at k = 0, -2^24 at k = 1, 1 elsewhere.
            let col = 2 * t + 8 * (r / 2);
            let v = |k: usize| {
                if k == 0 {
                    big
                } else if k == 1 {
                    nbig
                } else {
                    one
                }
            };
            a[lane * 4 + r] = pack(v(col), v(col + 1));
        }
        b[lane * 2] = pack(one, one);
        b[lane * 2 + 1] = pack(one, one);
    }
    let c = vec![1f32; 128];
    let modes = Modes::FAST;
    let d = filled(128, 0f32, &modes);
    let bufs = [upload(&a, &modes), upload(&b, &modes), upload(&c, &modes)];
    run(
        "tc_selftest_mma",
        [1, 1, 1],
        [32, 1, 1],
        0,
        &[ptr(&bufs[0]), ptr(&bufs[1]), ptr(&bufs[2]), ptr(&d), arg(&1i32)],
        &modes,
    )
    .unwrap();
    // 1 + 2^24 = 2^24 (rounded), - 2^24 = 0, then + 14 ones = 14.
    assert!(download::<f32>(&d).iter().all(|&x| x == 14.0), "{:?}", &download::<f32>(&d)[..8]);
}

#[test]
fn ldmatrix_every_form_matches_the_ptx_table_for_every_lane() {
    let names = ["x1", "x2", "x4", "x1.trans", "x2.trans", "x4.trans"];
    let blocks = 4usize;
    let mut rng = Rng(11);
    let src: Vec<u16> = (0..blocks * 512).map(|_| rng.next() as u16).collect();
    let rows: Vec<i32> = (0..blocks * 32).map(|_| rng.below(64) as i32).collect();
    for modes in BOTH {
        for (variant, name) in names.iter().enumerate() {
            let (num, trans) = ([1, 2, 4][variant % 3], variant >= 3);
            let out = filled(blocks * 128, 0u32, &modes);
            let (sb, rb) = (upload(&src, &modes), upload(&rows, &modes));
            run(
                "tc_selftest_ldmatrix",
                [blocks as u32, 1, 1],
                [32, 1, 1],
                1024,
                &[ptr(&sb), ptr(&rb), ptr(&out), arg(&(variant as i32))],
                &modes,
            )
            .unwrap();
            let got = download::<u32>(&out);
            for blk in 0..blocks {
                // Element (row i, col e) of matrix j: row i's address comes from lane 8j + i.
                let m = |j: usize, i: usize, e: usize| src[blk * 512 + 8 * rows[blk * 32 + 8 * j + i] as usize + e];
                for lane in 0..32 {
                    let (q, t) = (lane / 4, lane % 4);
                    for reg in 0..4 {
                        let want = if reg >= num {
                            0xDEAD_BEEF
                        } else if trans {
                            pack(m(reg, 2 * t, q), m(reg, 2 * t + 1, q))
                        } else {
                            pack(m(reg, q, 2 * t), m(reg, q, 2 * t + 1))
                        };
                        let g = got[(blk * 32 + lane) * 4 + reg];
                        assert_eq!(g, want, "{name} block {blk} lane {lane} r{reg}: {g:#x} vs {want:#x}");
                    }
                }
            }
        }
    }
}

/// Runs tc_selftest_cp_async with (form, src-size) per thread; returns each thread's 16 bytes.
fn cp_async(spec: &[(i32, i32)], src: &[u8], modes: &Modes) -> Result<Vec<u8>, EmuError> {
    let n = spec.len();
    let flat: Vec<i32> = spec.iter().flat_map(|&(f, s)| [f, s]).collect();
    let (sb, fb) = (upload(src, modes), upload(&flat, modes));
    let out = filled(16 * n, 0u8, modes);
    run("tc_selftest_cp_async", [1, 1, 1], [n as u32, 1, 1], 16 * n as u32, &[ptr(&sb), ptr(&fb), ptr(&out)], modes)?;
    Ok(download::<u8>(&out))
}

#[test]
fn cp_async_every_form_and_source_size_zero_fills_the_rest() {
    let forms = [(0, 4), (1, 8), (2, 16), (3, 16)]; // ca 4, ca 8, ca 16, cg 16
    let spec: Vec<(i32, i32)> = forms.iter().flat_map(|&(f, size)| (0..=size).map(move |s| (f, s))).collect();
    let mut rng = Rng(5);
    let src: Vec<u8> = (0..16 * spec.len()).map(|_| rng.next() as u8 | 1).collect(); // never 0
    for modes in [Modes::FAST, Modes::CHECKED, Modes { seed: 9, ..Modes::CHECKED }] {
        let got = cp_async(&spec, &src, &modes).unwrap();
        for (t, &(form, src_size)) in spec.iter().enumerate() {
            let size = forms[form as usize].1;
            for k in 0..16 {
                let want = if k < src_size as usize {
                    src[16 * t + k]
                } else if k < size as usize {
                    0
                } else {
                    0xFF // untouched shared memory
                };
                assert_eq!(got[16 * t + k], want, "thread {t} form {form} src-size {src_size} byte {k}");
            }
        }
    }
}

#[test]
fn cp_async_rejects_a_source_size_above_the_copy_size() {
    let err = cp_async(&[(1, 8), (1, 9)], &[7u8; 32], &Modes::FAST).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EmuError::AsyncCopy { .. }), "{err:?}");
    assert!(
        msg.contains("tc_selftest_cp_async") && msg.contains("src-size 9") && msg.contains("tc_selftest.cu:"),
        "{msg}"
    );
}

/// tc_selftest_cp_async_groups: the four readings, [reading][thread][4].
fn groups(n: usize, modes: &Modes) -> (Vec<f32>, Vec<f32>) {
    let src: Vec<f32> = (0..3 * n * 4).map(|i| i as f32 + 0.5).collect();
    let sb = upload(&src, modes);
    let out = filled(4 * n * 4, 0f32, modes);
    run("tc_selftest_cp_async_groups", [1, 1, 1], [n as u32, 1, 1], 48 * n as u32, &[ptr(&sb), ptr(&out)], modes)
        .unwrap();
    (src, download::<f32>(&out))
}

#[test]
fn wait_group_covers_older_groups_and_undelivered_copies_read_as_poison() {
    let n = 128;
    let poison = |x: &f32| x.to_bits() == 0xFFFF_FFFF;
    // In fast mode a copy lands at its wait: group 2 is still poison after wait_group 1.
    let (src, got) = groups(n, &Modes::FAST);
    assert_eq!(&got[..2 * n * 4], &src[..2 * n * 4], "groups 0 and 1 after wait_group 1");
    assert!(got[2 * n * 4..3 * n * 4].iter().all(poison), "group 2 must still be poison");
    assert_eq!(&got[3 * n * 4..], &src[2 * n * 4..], "group 2 after wait_all");
    // Shuffled, copies land at random points before their wait: some of group 2 has landed
    // early, some not, and what has landed is whole and right.
    let (mut early, mut late) = (0, 0);
    for seed in 1..=4 {
        let (src, got) = groups(n, &Modes { seed, ..Modes::CHECKED });
        assert_eq!(&got[..2 * n * 4], &src[..2 * n * 4]);
        assert_eq!(&got[3 * n * 4..], &src[2 * n * 4..]);
        for t in 0..n {
            let seen = &got[(2 * n + t) * 4..][..4];
            if seen.iter().all(poison) {
                late += 1;
            } else {
                assert_eq!(seen, &src[(2 * n + t) * 4..][..4], "seed {seed} thread {t}: a torn copy");
                early += 1;
            }
        }
    }
    assert!(early > 0 && late > 0, "shuffle mode should land some copies early ({early}) and some late ({late})");
}

#[test]
fn cp_async_then_wait_and_barrier_feeds_ldmatrix() {
    let src: Vec<u16> = (0..128 * 8).map(|i| (i * 7 + 3) as u16).collect();
    for modes in [Modes::FAST, Modes::CHECKED, Modes { seed: 3, ..Modes::CHECKED }] {
        let sb = upload(&src, &modes);
        let out = filled(128 * 4, 0u32, &modes);
        run("tc_selftest_cp_async_ldmatrix", [1, 1, 1], [128, 1, 1], 2048, &[ptr(&sb), ptr(&out)], &modes).unwrap();
        let got = download::<u32>(&out);
        for t in 0..128 {
            let (w, l) = (t / 32, t % 32);
            for j in 0..4 {
                let row = ((w + 1) % 4) * 32 + 8 * j + l / 4;
                let want = pack(src[row * 8 + 2 * (l % 4)], src[row * 8 + 2 * (l % 4) + 1]);
                assert_eq!(got[t * 4 + j], want, "thread {t} r{j}");
            }
        }
    }
}

#[test]
fn lanes_may_finish_a_half_warp_shuffle_while_others_wait_at_mma() {
    for modes in [Modes::FAST, Modes::CHECKED, Modes { seed: 5, ..Modes::CHECKED }, Modes { seed: 6, ..Modes::CHECKED }]
    {
        let out = filled(32, 0f32, &modes);
        run("tc_selftest_mma_after_half_warp_shfl", [1, 1, 1], [32, 1, 1], 0, &[ptr(&out)], &modes).unwrap();
        let got = download::<f32>(&out);
        for (l, &g) in got.iter().enumerate() {
            let v = if l >= 16 { l ^ 1 } else { l };
            assert_eq!(g, 16.0 + v as f32, "lane {l}");
        }
    }
}
