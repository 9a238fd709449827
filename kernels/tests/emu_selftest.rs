//! The self-test kernels (kernels/cuda/emu_selftest.cu) give the right answers in FAST and
//! CHECKED modes, for odd sizes, multi-dimensional launches and many blocks.

mod common;

use common::*;

#[test]
fn block_sum_odd_sizes_and_shapes() {
    for modes in BOTH {
        for &n in &[1usize, 31, 33, 1023, 4097] {
            let x: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
            let expect: f32 = x.iter().sum();
            for (grid, block) in
                [([1, 1, 1], [1, 1, 1]), ([3, 1, 1], [33, 1, 1]), ([2, 3, 2], [4, 5, 3]), ([64, 1, 1], [256, 1, 1])]
            {
                let nb = (grid[0] * grid[1] * grid[2]) as usize;
                let nt = block[0] * block[1] * block[2];
                let xb = upload(&x, &modes);
                let out = filled(nb, 0f32, &modes);
                run("selftest_block_sum", grid, block, nt * 4, &[ptr(&xb), ptr(&out), arg(&(n as i32))], &modes)
                    .unwrap();
                let got: f32 = download::<f32>(&out).iter().sum();
                assert_eq!(got, expect, "n={n} grid={grid:?} block={block:?} modes={modes:?}");
            }
        }
    }
}

#[test]
fn warp_sum_with_float_atomics() {
    for modes in BOTH {
        for &n in &[1usize, 33, 4097, 100_000] {
            let x: Vec<f32> = (0..n).map(|i| (i % 5) as f32).collect();
            let xb = upload(&x, &modes);
            let out = filled(1, 0f32, &modes);
            let blocks = n.div_ceil(256) as u32;
            run("selftest_warp_sum", [blocks, 1, 1], [256, 1, 1], 0, &[ptr(&xb), ptr(&out), arg(&(n as i32))], &modes)
                .unwrap();
            assert_eq!(download::<f32>(&out)[0], x.iter().sum::<f32>(), "n={n}");
        }
    }
}

/// PTX shfl semantics: the source lane, or None when the caller keeps its own value.
fn shfl_src(kind: &str, lane: i32, b: i32, width: i32) -> Option<i32> {
    let segmask = !(width - 1) & 31;
    let cval = if kind == "up" { 0 } else { 31 };
    let max_lane = (lane & segmask) | (cval & !segmask);
    let b = b & 31;
    let (j, ok) = match kind {
        "up" => (lane - b, lane - b >= max_lane),
        "down" => (lane + b, lane + b <= max_lane),
        "xor" => (lane ^ b, (lane ^ b) <= max_lane),
        _ => ((lane & segmask) | (b & !segmask), true),
    };
    ok.then_some(j)
}

#[test]
fn warp_ops_match_ptx_semantics() {
    for modes in BOTH {
        let blocks = 3usize;
        let n = blocks * 64;
        let x: Vec<i32> = (0..n as i32).map(|i| (i * 37 % 101) - 20).collect();
        let xb = upload(&x, &modes);
        let out = filled(8 * n, 0i32, &modes);
        run("selftest_warp_ops", [blocks as u32, 1, 1], [64, 1, 1], 0, &[ptr(&xb), ptr(&out)], &modes).unwrap();
        let got = download::<i32>(&out);
        for w in 0..n / 32 {
            let v = &x[w * 32..w * 32 + 32];
            let ballot = (0..32).filter(|&l| v[l] > 0).fold(0u32, |m, l| m | 1 << l);
            for l in 0..32i32 {
                let o = &got[8 * (w * 32 + l as usize)..][..8];
                let own = v[l as usize];
                let pick = |kind, b, width| shfl_src(kind, l, b, width).map_or(own, |j| v[j as usize]);
                assert_eq!(o[0], pick("idx", own & 31, 8), "idx lane {l}");
                assert_eq!(o[1], pick("up", 3, 16), "up lane {l}");
                assert_eq!(o[2], pick("down", 5, 32), "down lane {l}");
                assert_eq!(o[3], pick("xor", 6, 4), "xor lane {l}");
                assert_eq!(o[4] as u32, ballot);
                assert_eq!(o[5], v.iter().any(|&a| a > 1000) as i32);
                assert_eq!(o[6], v.iter().all(|&a| a > -1000) as i32);
                assert_eq!(o[7], v[(l ^ 1) as usize], "half-warp xor lane {l}");
            }
        }
    }
}

#[test]
fn integer_atomics_from_many_blocks_are_exact() {
    for modes in BOTH {
        let n = 300_001usize;
        let x: Vec<i32> = (0..n as i32).map(|i| i.wrapping_mul(7919).rem_euclid(100_003)).collect();
        let xb = upload(&x, &modes);
        let total = filled(1, 0u64, &modes);
        let maxv = filled(1, i32::MIN, &modes);
        let hist = filled(16, 0u32, &modes);
        let args = [ptr(&xb), arg(&(n as i32)), ptr(&total), ptr(&maxv), ptr(&hist)];
        run("selftest_atomics", [97, 1, 1], [128, 1, 1], 0, &args, &modes).unwrap();
        assert_eq!(download::<u64>(&total)[0], x.iter().map(|&v| v as u64).sum::<u64>());
        assert_eq!(download::<i32>(&maxv)[0], *x.iter().max().unwrap());
        let mut h = [0u32; 16];
        x.iter().for_each(|&v| h[(v & 15) as usize] += 1);
        assert_eq!(download::<u32>(&hist), h);
    }
}

#[test]
fn syncthreads_count() {
    for modes in BOTH {
        let n = 1000usize;
        let x: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { 1.0 } else { -1.0 }).collect();
        let xb = upload(&x, &modes);
        let out = filled(4, 0i32, &modes);
        run("selftest_count_positive", [4, 1, 1], [256, 1, 1], 0, &[ptr(&xb), ptr(&out), arg(&(n as i32))], &modes)
            .unwrap();
        let expect: Vec<i32> =
            (0..4).map(|b| (b * 256..((b + 1) * 256).min(n)).filter(|i| i % 3 == 0).count() as i32).collect();
        assert_eq!(download::<i32>(&out), expect);
    }
}

#[test]
fn struct_and_scalar_arguments() {
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Affine {
        scale: f32,
        shift: f32,
        n: i32,
    }
    for modes in BOTH {
        let n = 33;
        let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let xb = upload(&x, &modes);
        let y = filled(n, 0f32, &modes);
        let p = Affine { scale: 2.0, shift: 0.5, n: n as i32 };
        run("selftest_affine", [2, 1, 1], [32, 1, 1], 0, &[ptr(&xb), ptr(&y), arg(&p)], &modes).unwrap();
        assert_eq!(download::<f32>(&y), x.iter().map(|v| v * 2.0 + 0.5).collect::<Vec<_>>());

        let out = filled(4, 0f64, &modes);
        let args = [ptr(&out), arg(&1.25f64), arg(&-(1i64 << 40)), arg(&4_000_000_000u32), arg(&-2.5f32)];
        run("selftest_scalars", [1, 1, 1], [1, 1, 1], 0, &args, &modes).unwrap();
        assert_eq!(download::<f64>(&out), [1.25, -(1i64 << 40) as f64, 4e9, -2.5]);
    }
}

#[test]
fn three_dimensional_indices() {
    for modes in BOTH {
        for (grid, block) in [([3u32, 2, 2], [8u32, 4, 2]), ([1, 1, 5], [1, 1, 64]), ([5, 3, 1], [31, 1, 1])] {
            let nb = grid.iter().product::<u32>() as usize;
            let nt = block.iter().product::<u32>() as usize;
            let out = filled(nb * nt, u32::MAX, &modes);
            run("selftest_index", grid, block, 0, &[ptr(&out)], &modes).unwrap();
            let got = download::<u32>(&out);
            for b in 0..nb {
                for t in 0..nt {
                    assert_eq!(got[b * nt + t], (b as u32) << 10 | t as u32, "grid {grid:?} block {block:?}");
                }
            }
        }
    }
}

#[test]
fn macro_stamped_template_kernels() {
    for modes in BOTH {
        let n = 4097;
        let x: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let xb = upload(&x, &modes);
        let y = filled(n, 1.0f64, &modes);
        run(
            "selftest_axpy_f64",
            [17, 1, 1],
            [256, 1, 1],
            0,
            &[arg(&3.0f64), ptr(&xb), ptr(&y), arg(&(n as i32))],
            &modes,
        )
        .unwrap();
        assert_eq!(download::<f64>(&y), x.iter().map(|v| 3.0 * v + 1.0).collect::<Vec<_>>());
    }
}

#[test]
fn sources_tables() {
    use bitgrad_kernels::{find_source, HEADERS, SOURCES, TEST_SOURCES};
    let st = SOURCES.iter().find(|s| s.name == "emu_selftest.cu").expect("self-test source listed");
    assert!(st.kernels.contains(&"selftest_axpy_f32") && st.source.contains("SELFTEST_AXPY"));
    assert_eq!(find_source("broken_oob_write").unwrap().name, "broken/oob_write.cu");
    assert!(TEST_SOURCES.len() >= 3);
    assert!(HEADERS.iter().any(|(n, t)| *n == "common.cuh" && t.contains("DYNAMIC_SHARED")));
    let names = bitgrad_kernels::emu::kernel_names();
    assert!(names.contains(&"selftest_block_sum") && names.contains(&"broken_divergent_barrier"));
}
