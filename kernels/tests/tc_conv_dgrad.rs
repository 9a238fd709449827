//! `tc_conv_dgrad_{f32,bf16}` (kernels/cuda/tc_conv_dgrad.cu) on the emulator: bit for bit equal
//! to the CPU twin below (the kernel's per-phase summation order), and within the stated bound of
//! an f64 reference, on every shape of `common::conv::cases` (stride 1 and 2, 3×3 and 1×1, a
//! dilated 3×3) and BiT's stem (7×7/2 on 8 channels), in every emulator mode the tensor-core tests
//! use. The reference is the transposed convolution written from the forward pass's definition
//! (every (output pixel, tap) pair scattered to the input pixel it read), so it checks the phase
//! decomposition rather than repeating it.

mod common;

use bitgrad_kernels::emu::Modes;
use bitgrad_kernels::tc_conv::{self, ConvParams, ConvShape};
use common::conv::*;
use common::tc::{Half, Rng};
use common::*;

/// The CPU twin of dx[n][h][w][c]: from +0 over the filter rows r that reach h (ascending), then
/// columns s, then output channels k, one f32 rounding per product added; taps whose output pixel
/// lies outside the output add zero-filled products and are skipped.
fn twin(sh: &ConvShape, dy: &[u16], w: &[u16]) -> Vec<f32> {
    let mut out = Vec::with_capacity(sh.x_len());
    // The output row that input row `i` receives from through tap `t`, if any.
    let src = |i: i32, t: i32, pad: i32, dil: i32, stride: i32, extent: i32| {
        let d = i + pad - t * dil;
        (d >= 0 && d % stride == 0 && d / stride < extent).then_some(d / stride)
    };
    for n in 0..sh.n {
        for h in 0..sh.h {
            for wc in 0..sh.w {
                for c in 0..sh.c {
                    let mut acc = 0f32;
                    for r in 0..sh.r {
                        // A tap of the phase whose output row is outside the output: zero fill.
                        let Some(p) = src(h, r, sh.pad_h, sh.dil_h, sh.stride_h, sh.p) else { continue };
                        for s in 0..sh.s {
                            let Some(q) = src(wc, s, sh.pad_w, sh.dil_w, sh.stride_w, sh.q) else { continue };
                            for k in 0..sh.k {
                                acc += bf(dy[at([sh.n, sh.p, sh.q, sh.k], [n, p, q, k])])
                                    * bf(w[at([sh.k, sh.r, sh.s, sh.c], [k, r, s, c])]);
                            }
                        }
                    }
                    out.push(acc);
                }
            }
        }
    }
    out
}

/// The f64 reference by scattering: every output pixel's gradient through every tap to the input
/// pixel the forward pass read there.
fn reference(sh: &ConvShape, dy: &[u16], w: &[u16]) -> Vec<Exact> {
    let mut dx = vec![Exact::default(); sh.x_len()];
    for n in 0..sh.n {
        for p in 0..sh.p {
            for q in 0..sh.q {
                for r in 0..sh.r {
                    for s in 0..sh.s {
                        let h = p * sh.stride_h - sh.pad_h + r * sh.dil_h;
                        let wc = q * sh.stride_w - sh.pad_w + s * sh.dil_w;
                        if h < 0 || h >= sh.h || wc < 0 || wc >= sh.w {
                            continue;
                        }
                        for c in 0..sh.c {
                            let e = &mut dx[at([sh.n, sh.h, sh.w, sh.c], [n, h, wc, c])];
                            for k in 0..sh.k {
                                e.add(
                                    bf(dy[at([sh.n, sh.p, sh.q, sh.k], [n, p, q, k])]),
                                    bf(w[at([sh.k, sh.r, sh.s, sh.c], [k, r, s, c])]),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}

fn dgrad(sh: &ConvShape, dy: &[u16], w: &[u16], f32_out: bool, modes: &Modes) -> Vec<f32> {
    let l = tc_conv::dgrad(sh, f32_out).unwrap();
    let (dyb, wb) = (upload(dy, modes), upload(w, modes));
    let dx = if f32_out { filled(sh.x_len(), f32::NAN, modes) } else { filled(sh.x_len(), 0x7FC0u16, modes) };
    run(l.kernel, l.grid, l.block, l.smem_bytes, &[ptr(&dyb), ptr(&wb), ptr(&dx), sh.bytes()], modes).unwrap();
    if f32_out {
        download::<f32>(&dx)
    } else {
        download::<u16>(&dx).into_iter().map(bf).collect()
    }
}

fn check(what: &str, sh: &ConvShape, dy: &[u16], w: &[u16], modes: &[Modes]) {
    let want = twin(sh, dy, w);
    let exact = reference(sh, dy, w);
    for (i, (t, e)) in want.iter().zip(&exact).enumerate() {
        assert_close(*t, e, false, &|| format!("{what}: twin dx[{i}]"));
    }
    for modes in modes {
        let got = dgrad(sh, dy, w, true, modes);
        for (i, (g, t)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), t.to_bits(), "{what} {modes:?}: dx[{i}] = {g} vs twin {t}");
        }
    }
    // The bf16 output: the twin's sums rounded once.
    let got = dgrad(sh, dy, w, false, &Modes::FAST);
    for (i, ((g, t), e)) in got.iter().zip(&want).zip(&exact).enumerate() {
        let t = bf(Half::Bf16.round(*t));
        assert_eq!(g.to_bits(), t.to_bits(), "{what} bf16: dx[{i}] = {g} vs twin {t}");
        assert_close(*g, e, true, &|| format!("{what} bf16: dx[{i}]"));
    }
}

#[test]
fn dgrad_equals_its_twin_and_meets_the_bound() {
    let mut rng = Rng(0xD6AD);
    for c in cases() {
        let sh = c.shape;
        let dy = bf16_data(&mut rng, sh.y_len());
        let w = bf16_data(&mut rng, sh.w_len());
        check(c.name, &sh, &dy, &w, &MODES);
    }
}

#[test]
fn dgrad_of_the_stem_shape() {
    let mut rng = Rng(0x57E5);
    let ([n, h, w, _], [k, r, s]) = STEM;
    let sh = ConvShape::new([n, h, w, 8], [k, r, s], ConvParams::new(2, 3)).unwrap();
    let dy = bf16_data(&mut rng, sh.y_len());
    let wt = bf16_data(&mut rng, sh.w_len());
    check("stem 7x7/2", &sh, &dy, &wt, &MODES[..2]);
}

#[test]
fn a_1x1_stride_2_gradient_is_zero_on_the_pixels_it_skips() {
    // Odd rows and columns feed no output: their phases have no taps (K = 0) and write zeros.
    let sh = ConvShape::new([1, 6, 5, 8], [8, 1, 1], ConvParams::new(2, 0)).unwrap();
    let mut rng = Rng(7);
    let dy = bf16_data(&mut rng, sh.y_len());
    let w = bf16_data(&mut rng, sh.w_len());
    let got = dgrad(&sh, &dy, &w, true, &Modes::CHECKED);
    for h in 0..6 {
        for wc in 0..5 {
            let v = &got[at([1, 6, 5, 8], [0, h, wc, 0])..][..8];
            if h % 2 == 1 || wc % 2 == 1 {
                assert!(v.iter().all(|&x| x.to_bits() == 0), "dx[{h}][{wc}] = {v:?}, want +0");
            } else {
                assert!(v.iter().any(|&x| x != 0.0), "dx[{h}][{wc}] = {v:?}");
            }
        }
    }
}
