//! The bf16 passes against an f64 reference of the same bf16 operands (every shape kind: batch
//! pixels not a multiple of 32, stride 2 — whose input gradient runs per residue class, some
//! classes reached by no tap —, asymmetric padding, dilation, 1×1) through both
//! instruction families' emulations, each emulation against its instruction bit for bit where
//! the CPU has it (AMX, AVX512-BF16), and independence from the thread count.

use super::*;
use crate::bf16_gemm::{from_bf16, to_bf16};
use crate::conv2d::Conv2dParams;

pub(super) fn rand_bf16(n: usize, seed: u64) -> Vec<u16> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            to_bf16(((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
        })
        .collect()
}

/// `(x dims NCHW, w dims OIHW, params)` of the cases.
fn cases() -> Vec<([usize; 4], [usize; 4], Conv2dParams)> {
    vec![
        ([2, 32, 5, 5], [64, 32, 3, 3], Conv2dParams::new(1, 1)),
        ([1, 64, 7, 6], [32, 64, 3, 3], Conv2dParams::new(2, 1)),
        ([3, 32, 4, 4], [32, 32, 1, 1], Conv2dParams::new(2, 0)),
        ([1, 32, 6, 6], [32, 32, 3, 3], Conv2dParams::new(1, 2).with_dilation(2)),
        ([2, 32, 6, 5], [32, 32, 3, 3], Conv2dParams::default().with_stride(2).with_padding_sides(0, 1, 0, 1)),
        ([1, 64, 3, 3], [64, 64, 1, 1], Conv2dParams::default()),
        // Stride 2 with dilation 2: each input class is reached by every tap or by none.
        ([1, 32, 7, 8], [32, 32, 3, 3], Conv2dParams::new(2, 2).with_dilation(2)),
        // 1×1 with more output than input channels (the weight gradient transposed), at stride
        // 1 and at stride 2 with an odd map.
        ([2, 32, 5, 5], [64, 32, 1, 1], Conv2dParams::default()),
        ([1, 32, 7, 7], [96, 32, 1, 1], Conv2dParams::new(2, 0)),
    ]
}

struct Case {
    g: Geom,
    x: Vec<u16>,
    /// KRSC.
    w: Vec<f32>,
    dy: Vec<u16>,
}

fn case(i: usize) -> Case {
    let (xd, wd, p) = cases()[i];
    let g = Geom::new(&xd, &wd, &p).unwrap();
    let x = rand_bf16(g.batch * g.hw() * g.c, 10 + i as u64);
    // The weight as the forward sees it: f32 values already on the bf16 grid, so the reference
    // and the packed weight agree exactly.
    let w = rand_bf16(g.o * g.c * g.kh * g.kw, 20 + i as u64).into_iter().map(from_bf16).collect();
    let dy = rand_bf16(g.batch * g.p() * g.o, 30 + i as u64);
    Case { g, x, w, dy }
}

/// Every (output pixel index in NPQ, input pixel index in NHW, tap) the convolution connects.
pub(super) fn connections(g: &Geom) -> Vec<(usize, usize, usize)> {
    let mut v = Vec::new();
    for n in 0..g.batch {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                for r in 0..g.kh {
                    for s in 0..g.kw {
                        let ih = (oh * g.stride[0] + r * g.dilation[0]).checked_sub(g.pad[0]).filter(|&v| v < g.h);
                        let iw = (ow * g.stride[1] + s * g.dilation[1]).checked_sub(g.pad[2]).filter(|&v| v < g.w);
                        if let (Some(ih), Some(iw)) = (ih, iw) {
                            v.push(((n * g.oh + oh) * g.ow + ow, (n * g.h + ih) * g.w + iw, r * g.kw + s));
                        }
                    }
                }
            }
        }
    }
    v
}

/// `got` within the f32 accumulation bound of `terms` additions of the f64 reference, plus one
/// bf16 rounding of the result when `rounded`.
pub(super) fn check(what: &str, got: &[f32], want: &[f64], scale: &[f64], terms: usize, rounded: bool) {
    for i in 0..got.len() {
        let acc = (terms as f64 + 2.0) * f32::EPSILON as f64 * scale[i];
        let round = if rounded { want[i].abs() / 256.0 } else { 0.0 };
        let err = (got[i] as f64 - want[i]).abs();
        assert!(err <= acc + round + 1e-30, "{what}[{i}]: {} vs {} (bound {})", got[i], want[i], acc + round);
    }
}

/// A KRSC weight in OIHW order (what `round_weight` takes).
fn oihw(w: &[f32], g: &Geom) -> Vec<f32> {
    let (taps, c) = (g.kh * g.kw, g.c);
    let mut out = vec![0f32; w.len()];
    for (k, row) in w.chunks(taps * c).enumerate() {
        for (t, run) in row.chunks(c).enumerate() {
            for (ci, v) in run.iter().enumerate() {
                out[(k * c + ci) * taps + t] = *v;
            }
        }
    }
    out
}

fn bf(v: &[u16]) -> Vec<f32> {
    v.iter().map(|&b| from_bf16(b)).collect()
}

/// y, dx, dW, and y on top of a residual (dy, which has y's shape).
fn run_all(tiles: Tiles, c: &Case) -> (Vec<u16>, Vec<u16>, Vec<f32>, Vec<u16>) {
    let w = round_weight(tiles, &oihw(&c.w, &c.g), None, &c.g);
    let packed = pack_weight_fprop(&w, &c.g);
    let y = fprop(tiles, &c.x, &packed, None, &c.g);
    let y_res = fprop(tiles, &c.x, &packed, Some(&c.dy), &c.g);
    let dx = dgrad(tiles, &c.dy, &w, &c.g);
    let dw = wgrad(tiles, &c.dy, &c.x, &c.g);
    assert_eq!(oihw(&dw.krsc(), &c.g), dw.oihw(), "the two orders of dW agree");
    (y, dx, dw.krsc(), y_res)
}

#[test]
fn emulated_passes_match_the_f64_reference() {
    for i in 0..cases().len() {
        let c = case(i);
        let g = &c.g;
        let (taps, ci, k) = (g.kh * g.kw, g.c, g.o);
        let (x, dy) = (bf(&c.x), bf(&c.dy));
        let wv = |o: usize, ch: usize, t: usize| c.w[(o * taps + t) * ci + ch] as f64;
        let (mut y, mut ys) = (vec![0.0; g.batch * g.p() * k], vec![0.0; g.batch * g.p() * k]);
        let (mut dx, mut dxs) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        let (mut dw, mut dws) = (vec![0.0; k * taps * ci], vec![0.0; k * taps * ci]);
        for (op, ip, t) in connections(g) {
            for o in 0..k {
                for ch in 0..ci {
                    let yv = x[ip * ci + ch] as f64 * wv(o, ch, t);
                    y[op * k + o] += yv;
                    ys[op * k + o] += yv.abs();
                    let dxv = dy[op * k + o] as f64 * wv(o, ch, t);
                    dx[ip * ci + ch] += dxv;
                    dxs[ip * ci + ch] += dxv.abs();
                    let dwv = dy[op * k + o] as f64 * x[ip * ci + ch] as f64;
                    dw[(o * taps + t) * ci + ch] += dwv;
                    dws[(o * taps + t) * ci + ch] += dwv.abs();
                }
            }
        }
        for tiles in [Tiles::AmxEmulated, Tiles::DotEmulated] {
            let (gy, gdx, gdw, gy_res) = run_all(tiles, &c);
            check(&format!("{tiles:?} case {i} y"), &bf(&gy), &y, &ys, taps * ci, true);
            // The residual is one more term of the same sum, rounded once.
            let plus =
                |a: &[f64], f: fn(f64) -> f64| a.iter().zip(&dy).map(|(a, &r)| a + f(r as f64)).collect::<Vec<_>>();
            let (y_res, ys_res) = (plus(&y, |r| r), plus(&ys, f64::abs));
            check(&format!("{tiles:?} case {i} y + residual"), &bf(&gy_res), &y_res, &ys_res, taps * ci + 1, true);
            check(&format!("{tiles:?} case {i} dx"), &bf(&gdx), &dx, &dxs, taps * k, true);
            check(&format!("{tiles:?} case {i} dw"), &gdw, &dw, &dws, g.batch * g.p(), false);
        }
    }
}

#[test]
fn hardware_matches_the_emulation_bit_for_bit() {
    let all = Tiles::all_hardware();
    if all.is_empty() {
        eprintln!("skipped: this CPU runs neither tdpbf16ps nor vdpbf16ps (no AMX-BF16 or AVX512-BF16, or BITGRAD_CPU_ISA is lower)");
    }
    for hw in all {
        for i in 0..cases().len() {
            let c = case(i);
            let (ey, edx, edw, ey_res) = run_all(hw.emulation(), &c);
            let (hy, hdx, hdw, hy_res) = run_all(hw, &c);
            assert_eq!(ey, hy, "{hw:?} case {i}: y");
            assert_eq!(ey_res, hy_res, "{hw:?} case {i}: y + residual");
            assert_eq!(edx, hdx, "{hw:?} case {i}: dx");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&edw), bits(&hdw), "{hw:?} case {i}: dw");
        }
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut all = Tiles::all_hardware();
    all.extend([Tiles::AmxEmulated, Tiles::DotEmulated]);
    let c = case(0);
    for tiles in all {
        let many = run_all(tiles, &c);
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| run_all(tiles, &c));
        assert!(
            many.0 == one.0 && many.1 == one.1 && many.3 == one.3,
            "{tiles:?}: y or dx differ between 1 and {} threads",
            rayon::current_num_threads()
        );
        assert!(many.2.iter().zip(&one.2).all(|(a, b)| a.to_bits() == b.to_bits()), "{tiles:?}: dw differs");
    }
}

#[test]
fn weight_gradient_chunks_carry_the_sums() {
    // A pixel count above one chunk (4096 pixels: the 256 KiB panel bound): 2 × 48 × 50 = 4800.
    let (xd, wd, p) = ([2, 32, 48, 50], [32, 32, 3, 3], Conv2dParams::new(1, 1));
    let g = Geom::new(&xd, &wd, &p).unwrap();
    assert!(!wgrad_transposed(&g) && wgrad_chunk(&g, g.o) < g.batch * g.p(), "the test needs two chunks");
    let Some(tiles) = Tiles::hardware() else {
        eprintln!("skipped: the emulations are too slow for {} pixels without AMX or AVX512-BF16", g.batch * g.p());
        return;
    };
    let x = rand_bf16(g.batch * g.hw() * g.c, 5);
    let dy = rand_bf16(g.batch * g.p() * g.o, 6);
    let dw = wgrad(tiles, &dy, &x, &g).krsc();
    // One output element in f64.
    let (o, t, ch) = (7, 4, 19);
    let (mut want, mut scale) = (0.0f64, 0.0f64);
    for (op, ip, tap) in connections(&g) {
        if tap == t {
            let v = from_bf16(dy[op * g.o + o]) as f64 * from_bf16(x[ip * g.c + ch]) as f64;
            want += v;
            scale += v.abs();
        }
    }
    check("dw", &[dw[(o * 9 + t) * g.c + ch]], &[want], &[scale], g.batch * g.p(), false);
}

#[test]
fn takes_dense_convolutions_with_channels_in_32s() {
    let geom = |c: usize, k: usize, groups: usize| {
        Geom::new(&[1, c, 8, 8], &[k, c / groups, 3, 3], &Conv2dParams::new(1, 1).with_groups(groups)).unwrap()
    };
    assert!(takes(&geom(64, 32, 1)));
    assert!(!takes(&geom(3 * 32, 48, 1)), "48 output channels");
    assert!(!takes(&geom(64, 64, 2)), "grouped");
    let stem = Geom::new(&[1, 3, 8, 8], &[64, 3, 7, 7], &Conv2dParams::new(2, 3)).unwrap();
    assert!(!takes(&stem), "the 3-channel stem");
}
