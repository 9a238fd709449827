//! `tc_conv_wgrad_f32` and `tc_conv_wgrad_reduce` (kernels/cuda/tc_conv_wgrad.cu) on the emulator:
//! bit for bit equal to the CPU twin below (per split, the pixels in order; the partials added in
//! split order), and within the stated bound of an f64 reference, on every shape of
//! `common::conv::cases` and BiT's stem, with the split count the shape chooses and with forced
//! splits (one, several, more than there are k tiles), in every emulator mode the tensor-core
//! tests use.

mod common;

use bitgrad_kernels::emu::Modes;
use bitgrad_kernels::tc_conv::{self, ConvParams, ConvShape};
use common::conv::*;
use common::tc::Rng;
use common::*;

/// The CPU twin of dW[k][r][s][c] for pixel k tiles of `per` × 32 per split: each split from +0
/// over its output pixels in order (taps in the padding add zero-filled products and are skipped),
/// one f32 rounding per product added; then p0 + p1 + … in order. Also the f64 sum.
fn twin(sh: &ConvShape, dy: &[u16], x: &[u16], per: usize) -> Vec<(f32, Exact)> {
    let pixels = (sh.n * sh.p * sh.q) as usize;
    let split_len = per * 32;
    let mut out = Vec::with_capacity(sh.w_len());
    for k in 0..sh.k {
        for r in 0..sh.r {
            for s in 0..sh.s {
                for c in 0..sh.c {
                    let (mut total, mut e) = (None::<f32>, Exact::default());
                    for start in (0..pixels).step_by(split_len) {
                        let mut acc = 0f32;
                        for pix in start..(start + split_len).min(pixels) {
                            let pix = pix as i32;
                            let (n, p, q) = (pix / (sh.p * sh.q), pix / sh.q % sh.p, pix % sh.q);
                            let h = p * sh.stride_h - sh.pad_h + r * sh.dil_h;
                            let wc = q * sh.stride_w - sh.pad_w + s * sh.dil_w;
                            if h < 0 || h >= sh.h || wc < 0 || wc >= sh.w {
                                continue;
                            }
                            let a = bf(dy[at([sh.n, sh.p, sh.q, sh.k], [n, p, q, k])]);
                            let b = bf(x[at([sh.n, sh.h, sh.w, sh.c], [n, h, wc, c])]);
                            acc += a * b;
                            e.add(a, b);
                        }
                        total = Some(total.map_or(acc, |t| t + acc));
                        e.terms += 1; // the reduction's addition
                    }
                    out.push((total.unwrap(), e));
                }
            }
        }
    }
    out
}

/// Runs the plan (the tiled kernel, then the reduction if split); returns dW and the plan.
fn wgrad(sh: &ConvShape, dy: &[u16], x: &[u16], splits: Option<usize>, modes: &Modes) -> (Vec<f32>, tc_conv::Wgrad) {
    let plan = tc_conv::wgrad(sh, splits).unwrap();
    let (dyb, xb) = (upload(dy, modes), upload(x, modes));
    let dw = filled(sh.w_len(), f32::NAN, modes);
    let work = filled(plan.workspace.max(1), f32::NAN, modes);
    let l = &plan.launch;
    let target = if plan.reduce.is_some() { &work } else { &dw };
    let args = [ptr(&dyb), ptr(&xb), ptr(target), sh.bytes(), arg(&plan.tiles_per_split)];
    run(l.kernel, l.grid, l.block, l.smem_bytes, &args, modes).unwrap();
    if let Some(red) = &plan.reduce {
        let (count, splits) = (sh.w_len() as i64, plan.splits as i32);
        let args = [ptr(&work), ptr(&dw), arg(&count), arg(&splits)];
        run(red.kernel, red.grid, red.block, 0, &args, modes).unwrap();
    }
    (download::<f32>(&dw), plan)
}

fn check(what: &str, sh: &ConvShape, dy: &[u16], x: &[u16], splits: Option<usize>, modes: &[Modes]) -> usize {
    let mut used = 0;
    for m in modes {
        let (got, plan) = wgrad(sh, dy, x, splits, m);
        let want = twin(sh, dy, x, plan.tiles_per_split as usize);
        for (i, (g, (t, e))) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), t.to_bits(), "{what} {m:?} splits {}: dW[{i}] = {g} vs twin {t}", plan.splits);
            assert_close(*g, e, false, &|| format!("{what}: dW[{i}]"));
        }
        used = plan.splits;
    }
    used
}

#[test]
fn wgrad_equals_its_twin_and_meets_the_bound() {
    let mut rng = Rng(0x3CAD);
    for c in cases() {
        let sh = c.shape;
        let dy = bf16_data(&mut rng, sh.y_len());
        let x = bf16_data(&mut rng, sh.x_len());
        check(c.name, &sh, &dy, &x, None, &MODES);
        // Forced: one split (the kernel writes dW), and three (partials and the reduction).
        check(c.name, &sh, &dy, &x, Some(1), &MODES[..1]);
        check(c.name, &sh, &dy, &x, Some(3), &MODES[..2]);
    }
}

#[test]
fn wgrad_of_the_stem_and_split_counts() {
    let mut rng = Rng(0x57E6);
    let ([n, h, w, _], [k, r, s]) = STEM;
    // 2 images: 84 pixels, 3 k tiles.
    let sh = ConvShape::new([n + 1, h, w, 8], [k, r, s], ConvParams::new(2, 3)).unwrap();
    let dy = bf16_data(&mut rng, sh.y_len());
    let x = bf16_data(&mut rng, sh.x_len());
    check("stem", &sh, &dy, &x, None, &MODES[..2]);
    // More splits than k tiles: one tile each, no empty split.
    assert_eq!(check("stem", &sh, &dy, &x, Some(7), &MODES[..1]), 3);
    assert_eq!(check("stem", &sh, &dy, &x, Some(2), &MODES[..1]), 2);
    // A large pixel count with few CTAs splits on its own: 4·28·28 = 3136 pixels, 98 k tiles,
    // one CTA tile of dW.
    let big = ConvShape::new([4, 28, 28, 8], [8, 3, 3], ConvParams::new(1, 1)).unwrap();
    let plan = tc_conv::wgrad(&big, None).unwrap();
    assert!(plan.splits > 1 && plan.reduce.is_some(), "{plan:?}");
    let dy = bf16_data(&mut rng, big.y_len());
    let x = bf16_data(&mut rng, big.x_len());
    check("28x28 3x3/1 C8 K8", &big, &dy, &x, None, &MODES[..1]);
}
