//! The direct bf16 passes against the gathered GEMM on the same packed operands: the same bits
//! (each output element is the same `vdpbf16ps` chain), through the emulation on every CPU and
//! on the instruction where the CPU has it, over the shapes that exercise the tiling — rows
//! wider than a tile, a 1×1 pass read in place across row ends, strides, dilation, asymmetric
//! padding, a non-square filter, batch 1 with one block of output channels. The gathered
//! passes themselves are checked against f64 in `tests.rs`, which now runs the direct ones too.
//!
//! The direct weight gradient pairs pixels within rows (the gathered one across row ends), so
//! it is checked against f64 here, in its default chunks and in chunks of a few pixels (runs of
//! rows, several per image).

use super::tests::{check, connections, rand_bf16};
use super::*;
use crate::conv2d::Conv2dParams;

fn cases() -> Vec<(&'static str, [usize; 4], [usize; 4], Conv2dParams)> {
    vec![
        ("3×3, rows of 17 (tiles of 9 + 8)", [2, 32, 9, 17], [64, 32, 3, 3], Conv2dParams::new(1, 1)),
        ("1×1 read in place, 5·7 pixels per image", [2, 64, 5, 7], [32, 64, 1, 1], Conv2dParams::default()),
        ("3×3 stride 2, odd map", [1, 32, 9, 11], [32, 32, 3, 3], Conv2dParams::new(2, 1)),
        ("1×1 stride 2", [2, 32, 7, 7], [64, 32, 1, 1], Conv2dParams::new(2, 0)),
        ("3×3 dilation 2", [1, 64, 8, 9], [32, 64, 3, 3], Conv2dParams::new(1, 2).with_dilation(2)),
        (
            "5×3, asymmetric padding",
            [1, 32, 7, 16],
            [32, 32, 5, 3],
            Conv2dParams::default().with_padding_sides(2, 1, 0, 1),
        ),
        ("3×3 valid (no padding), batch 1", [1, 32, 6, 30], [32, 32, 3, 3], Conv2dParams::default()),
    ]
}

/// `(direct, gathered)` of y, y on top of a residual, and (stride 1) dx.
fn both(tiles: Tiles, xd: [usize; 4], wd: [usize; 4], p: &Conv2dParams, seed: u64) -> [(Vec<u16>, Vec<u16>); 3] {
    let g = Geom::new(&xd, &wd, p).unwrap();
    let x = rand_bf16(g.batch * g.hw() * g.c, seed);
    let w: Vec<f32> =
        rand_bf16(g.o * g.c * g.kh * g.kw, seed + 1).into_iter().map(crate::bf16_gemm::from_bf16).collect();
    let dy = rand_bf16(g.batch * g.p() * g.o, seed + 2);
    let wk = round_weight(tiles, &w, None, &g);
    let packed = pack_weight_fprop(&wk, &g);
    let y = (direct::fprop(tiles, &x, &packed, None, &g), fprop_gathered(tiles, &x, &packed, None, &g));
    let yr = (direct::fprop(tiles, &x, &packed, Some(&dy), &g), fprop_gathered(tiles, &x, &packed, Some(&dy), &g));
    let dx = if direct::takes_dgrad(&g) {
        (direct::dgrad(tiles, &dy, &wk, &g), dgrad_gathered(tiles, &dy, &wk, &g))
    } else {
        (Vec::new(), Vec::new())
    };
    [y, yr, dx]
}

fn direct_equals_gathered(tiles: Tiles) {
    for (i, (name, xd, wd, p)) in cases().into_iter().enumerate() {
        let [y, yr, dx] = both(tiles, xd, wd, &p, 40 + 3 * i as u64);
        assert!(!y.0.is_empty() && y.0 == y.1, "{tiles:?} {name}: y");
        assert!(yr.0 == yr.1 && yr.0 != y.0, "{tiles:?} {name}: y on top of the residual");
        assert!(dx.0 == dx.1, "{tiles:?} {name}: dx");
    }
}

#[test]
fn emulated_direct_passes_are_the_gathered_bits() {
    direct_equals_gathered(Tiles::DotEmulated);
}

#[test]
fn direct_passes_on_vdpbf16ps_are_the_gathered_bits() {
    if !crate::bf16_gemm::dot::hardware_available() {
        eprintln!("skipped: this CPU has no AVX512-BF16 (or BITGRAD_CPU_ISA is below avx512bf16)");
        return;
    }
    direct_equals_gathered(Tiles::Dot);
}

#[test]
fn stride_one_input_gradients_within_the_filter_reach_go_direct() {
    let geom = |p: Conv2dParams| Geom::new(&[1, 32, 8, 8], &[32, 32, 3, 3], &p).unwrap();
    assert!(direct::takes_dgrad(&geom(Conv2dParams::new(1, 1))));
    assert!(direct::takes_dgrad(&geom(Conv2dParams::new(1, 0))));
    assert!(!direct::takes_dgrad(&geom(Conv2dParams::new(2, 1))), "stride 2");
    assert!(!direct::takes_dgrad(&geom(Conv2dParams::new(1, 3))), "padded beyond the filter's reach");
    assert!(direct::runs(Tiles::DotEmulated) && !direct::runs(Tiles::AmxEmulated), "AMX keeps its gathered tiles");
}

#[test]
fn direct_passes_do_not_depend_on_the_thread_count() {
    let tiles = Tiles::all_hardware().into_iter().find(|&t| t == Tiles::Dot).unwrap_or(Tiles::DotEmulated);
    let (_, xd, wd, p) = cases()[0];
    let many = both(tiles, xd, wd, &p, 7);
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| both(tiles, xd, wd, &p, 7));
    for (k, (a, b)) in many.iter().zip(&one).enumerate() {
        assert!(a.0 == b.0, "{tiles:?}: pass {k} differs between 1 and {} threads", rayon::current_num_threads());
    }
    // The weight gradient over many chunks (runs of rows; sums carried between them).
    let g = Geom::new(&xd, &wd, &p).unwrap();
    let x = rand_bf16(g.batch * g.hw() * g.c, 8);
    let dy = rand_bf16(g.batch * g.p() * g.o, 9);
    let dw = || wgrad_direct::wgrad_in_chunks(tiles, &dy, &x, &g, 20).krsc();
    let many = dw();
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(dw);
    assert!(many.iter().zip(&one).all(|(a, b)| a.to_bits() == b.to_bits()), "{tiles:?}: dW differs");
}

#[test]
fn direct_weight_gradients_match_f64_in_any_chunks() {
    let tiles = Tiles::all_hardware().into_iter().find(|&t| t == Tiles::Dot).unwrap_or(Tiles::DotEmulated);
    for (i, (name, xd, wd, p)) in cases().into_iter().enumerate() {
        let g = Geom::new(&xd, &wd, &p).unwrap();
        if !wgrad_direct::takes(&g) {
            continue;
        }
        let x = rand_bf16(g.batch * g.hw() * g.c, 70 + i as u64);
        let dy = rand_bf16(g.batch * g.p() * g.o, 80 + i as u64);
        let taps = g.kh * g.kw;
        let (mut want, mut scale) = (vec![0f64; g.o * taps * g.c], vec![0f64; g.o * taps * g.c]);
        let f = |v: u16| crate::bf16_gemm::from_bf16(v) as f64;
        for (op, ip, t) in connections(&g) {
            for o in 0..g.o {
                for ch in 0..g.c {
                    let v = f(dy[op * g.o + o]) * f(x[ip * g.c + ch]);
                    want[(o * taps + t) * g.c + ch] += v;
                    scale[(o * taps + t) * g.c + ch] += v.abs();
                }
            }
        }
        for pixels in [usize::MAX, 5, 2 * g.ow + 3] {
            let got = if pixels == usize::MAX {
                wgrad_direct::wgrad(tiles, &dy, &x, &g)
            } else {
                wgrad_direct::wgrad_in_chunks(tiles, &dy, &x, &g, pixels)
            };
            check(&format!("{tiles:?} {name}, chunks of {pixels}"), &got.krsc(), &want, &scale, g.batch * g.p(), false);
        }
    }
}
