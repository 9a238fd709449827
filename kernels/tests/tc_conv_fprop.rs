//! `tc_conv_fprop_{f32,bf16}` and their 64-wide-tile variants `…_n64`
//! (kernels/cuda/tc_conv_fprop.cu, tc_conv_fprop_n64.cu) on the emulator: bit for bit equal to
//! the CPU twin below (the kernel's summation order), and within the stated bound of an f64
//! reference, on every shape of `common::conv::cases` and on BiT's stem (3 channels padded to 8
//! by `tc_conv::pad_channels`), with and without the fused residual, in every emulator mode the
//! tensor-core tests use.

mod common;

use bitgrad_kernels::emu::Modes;
use bitgrad_kernels::tc_conv::{self, ConvParams, ConvShape};
use common::conv::*;
use common::tc::Rng;
use common::*;

/// The CPU twin of y[n][p][q][k]: from +0 over the taps (r, s, c) in that order, one f32 rounding
/// per product added (taps in the padding are zero-filled in the kernel and add exact zeros, so
/// skipping them changes nothing), then + residual. Also the f64 sum for the error bound.
fn twin(sh: &ConvShape, x: &[u16], w: &[u16], residual: Option<&[u16]>) -> Vec<(f32, Exact)> {
    let mut out = Vec::with_capacity(sh.y_len());
    for n in 0..sh.n {
        for p in 0..sh.p {
            for q in 0..sh.q {
                for k in 0..sh.k {
                    let (mut acc, mut e) = (0f32, Exact::default());
                    for r in 0..sh.r {
                        for s in 0..sh.s {
                            let h = p * sh.stride_h - sh.pad_h + r * sh.dil_h;
                            let wc = q * sh.stride_w - sh.pad_w + s * sh.dil_w;
                            if h < 0 || h >= sh.h || wc < 0 || wc >= sh.w {
                                continue;
                            }
                            for c in 0..sh.c {
                                let a = bf(x[at([sh.n, sh.h, sh.w, sh.c], [n, h, wc, c])]);
                                let b = bf(w[at([sh.k, sh.r, sh.s, sh.c], [k, r, s, c])]);
                                acc += a * b;
                                e.add(a, b);
                            }
                        }
                    }
                    if let Some(res) = residual {
                        let v = bf(res[out.len()]);
                        acc += v;
                        e.add(v, 1.0);
                    }
                    out.push((acc, e));
                }
            }
        }
    }
    out
}

/// Runs the kernel `tc_conv::fprop` picks; the output as f32 (a bf16 output widened).
fn fprop(sh: &ConvShape, x: &[u16], w: &[u16], residual: Option<&[u16]>, f32_out: bool, modes: &Modes) -> Vec<f32> {
    fprop_on(tc_conv::fprop(sh, f32_out).unwrap(), sh, x, w, residual, f32_out, modes)
}

fn fprop_on(
    l: tc_conv::Launch,
    sh: &ConvShape,
    x: &[u16],
    w: &[u16],
    residual: Option<&[u16]>,
    f32_out: bool,
    modes: &Modes,
) -> Vec<f32> {
    let (xb, wb) = (upload(x, modes), upload(w, modes));
    let rb = residual.map(|r| upload(r, modes));
    let res_ptr = rb.as_ref().map_or(0u64.to_ne_bytes().to_vec(), ptr);
    let y = if f32_out { filled(sh.y_len(), f32::NAN, modes) } else { filled(sh.y_len(), 0x7FC0u16, modes) };
    run(l.kernel, l.grid, l.block, l.smem_bytes, &[ptr(&xb), ptr(&wb), res_ptr, ptr(&y), sh.bytes()], modes).unwrap();
    if f32_out {
        download::<f32>(&y)
    } else {
        download::<u16>(&y).into_iter().map(bf).collect()
    }
}

/// Compares a kernel's output with the twin (bit for bit, after the output rounding) and the
/// twin with the f64 reference.
fn check(what: &str, got: &[f32], want: &[(f32, Exact)], f32_out: bool) {
    assert_eq!(got.len(), want.len());
    for (i, (g, (t, e))) in got.iter().zip(want).enumerate() {
        let t = if f32_out { *t } else { bf(common::tc::Half::Bf16.round(*t)) };
        assert_eq!(g.to_bits(), t.to_bits(), "{what}: y[{i}] = {g} vs twin {t}");
        assert_close(*g, e, !f32_out, &|| format!("{what}: y[{i}]"));
    }
}

#[test]
fn fprop_equals_its_twin_and_meets_the_bound() {
    let mut rng = Rng(0xF0F0);
    for c in cases() {
        let sh = c.shape;
        let x = bf16_data(&mut rng, sh.x_len());
        let w = bf16_data(&mut rng, sh.w_len());
        let res = bf16_data(&mut rng, sh.y_len());
        let plain = twin(&sh, &x, &w, None);
        for modes in MODES {
            let got = fprop(&sh, &x, &w, None, true, &modes);
            check(&format!("{} f32 {modes:?}", c.name), &got, &plain, true);
        }
        // Both N tiles give the same bits (K ≤ 64 picks 64, above it 128).
        for tile in [64, 128] {
            let l = tc_conv::fprop_tile(&sh, true, tile).unwrap();
            let got = fprop_on(l, &sh, &x, &w, None, true, &Modes::CHECKED);
            check(&format!("{} f32 N tile {tile}", c.name), &got, &plain, true);
        }
        // The fused residual and the bf16 output: once per shape (the pipeline is the same).
        let with_res = twin(&sh, &x, &w, Some(&res));
        let got = fprop(&sh, &x, &w, Some(&res), false, &Modes::FAST);
        check(&format!("{} bf16 + residual", c.name), &got, &with_res, false);
        let got = fprop(&sh, &x, &w, Some(&res), true, &Modes::CHECKED);
        check(&format!("{} f32 + residual", c.name), &got, &with_res, true);
    }
}

#[test]
fn the_stem_padded_to_8_channels_equals_the_3_channel_convolution() {
    let mut rng = Rng(0x57E4);
    let ([n, h, w, c], [k, r, s]) = STEM;
    let cp = ConvParams::new(2, 3);
    let x3 = bf16_data(&mut rng, n * h * w * c);
    let w3 = bf16_data(&mut rng, k * r * s * c);
    assert!(ConvShape::new([n, h, w, c], [k, r, s], cp).is_err(), "3 channels are refused");
    let sh = ConvShape::new([n, h, w, 8], [k, r, s], cp).unwrap();
    let (x8, w8) = (tc_conv::pad_channels(&x3, 3, 8), tc_conv::pad_channels(&w3, 3, 8));
    // The twin and the bound on the unpadded 3 channels: the 5 zero channels add exact zeros.
    let sh3 = ConvShape { c: 3, ..sh };
    let want = twin(&sh3, &x3, &w3, None);
    assert_eq!((sh.p, sh.q), (7, 6));
    for modes in MODES {
        let got = fprop(&sh, &x8, &w8, None, true, &modes);
        check(&format!("stem {modes:?}"), &got, &want, true);
    }
}
