//! The tensor-core passes (`tc.rs`) on the GPU test device (Emu, or Cuda(0) on the CUDA shim
//! with `BITGRAD_GPU_TEST_DEVICE`) against conv2d's own f64 forward and autograd gradients on the
//! CPU (NCHW, reached through permutes of the channels-last data): BiT's stem (3 channels padded
//! to 8), a 3×3/2 with BiT's fixed padding, a 3×3/1, a 1×1/2 and a 3×3/2 padded only after, with
//! bf16 values. Each result is held to the f32 summation bound γₙ·Σ|aᵢbᵢ| (Σ|aᵢbᵢ| from the same
//! reference on absolute values), plus a bf16 rounding for the bf16 output with its fused
//! residual; and the errors for what the kernels do not take.

use bitgrad_engine::gpu::test_device;
use bitgrad_engine::{autograd, DType, Device, Rng, Tensor};
use bitgrad_kernels::tc_conv::pad_channels;

use super::{conv2d, tc_conv2d_dgrad, tc_conv2d_fprop, tc_conv2d_wgrad, Conv2dParams, Padding};

/// `len` normal values rounded to bf16 (as f64).
fn bf16_values(len: usize, seed: u64) -> Vec<f64> {
    let t = Tensor::randn(vec![len], 0.0, 1.0, DType::F64, Device::Cpu, &mut Rng::new(seed)).unwrap();
    t.to_dtype(DType::BF16).unwrap().to_vec_f64().unwrap()
}

/// conv2d in f64 on the CPU from channels-last data: [y (NPQK), dx (NHWC), dw (KRSC)] for
/// output gradient `gy` (NPQK).
fn reference(x: &[f64], xd: [usize; 4], w: &[f64], wd: [usize; 4], gy: &[f64], p: &Conv2dParams) -> [Vec<f64>; 3] {
    let leaf = |v: &[f64], d: [usize; 4]| {
        Tensor::from_f64_vec(v.to_vec(), d.to_vec(), DType::F64, Device::Cpu).unwrap().requires_grad_(true)
    };
    let (xl, wl) = (leaf(x, xd), leaf(w, wd));
    let nchw = [0, 3, 1, 2];
    let y = conv2d(&xl.permute(&nchw).unwrap(), &wl.permute(&nchw).unwrap(), None, p).unwrap();
    let yd = y.dims().to_vec(); // [n, k, p, q]
    let g = Tensor::from_f64_vec(gy.to_vec(), vec![yd[0], yd[2], yd[3], yd[1]], DType::F64, Device::Cpu).unwrap();
    let store = autograd::grad(&y, &g.permute(&nchw).unwrap().contiguous().unwrap()).unwrap();
    let y = y.permute(&[0, 2, 3, 1]).unwrap().contiguous().unwrap().to_vec_f64().unwrap();
    let grad = |l: &Tensor| store.get(l).expect("gradient reached the leaf").to_vec_f64().unwrap();
    [y, grad(&xl), grad(&wl)]
}

/// |got − want| ≤ γₙ·abs (+ a bf16 rounding of the result when `bf16`).
fn assert_within(what: &str, got: &[f64], want: &[f64], abs: &[f64], n: usize, bf16: bool) {
    assert_eq!((got.len(), want.len()), (abs.len(), abs.len()), "{what}");
    let nu = (n + 1) as f64 * 2f64.powi(-24);
    let gamma = nu / (1.0 - nu);
    for (i, ((g, w), a)) in got.iter().zip(want).zip(abs).enumerate() {
        let mut tol = gamma * a + 2f64.powi(-40) * a;
        if bf16 {
            tol += 2f64.powi(-8) * (w.abs() + tol);
        }
        assert!((g - w).abs() <= tol, "{what}[{i}]: {g} vs {w} (bound {tol:e})");
    }
}

struct Case {
    name: &'static str,
    x: [usize; 4],
    k: usize,
    rs: [usize; 2],
    p: Conv2dParams,
}

fn run(c: &Case) {
    let dev = test_device();
    let [n, h, w, ch] = c.x;
    let wd = [c.k, c.rs[0], c.rs[1], ch];
    let x = bf16_values(n * h * w * ch, 1);
    let wt = bf16_values(wd.iter().product(), 2);
    let [oh, ow] = c.p.output_size([h, w], c.rs).unwrap();
    let yd = [n, oh, ow, c.k];
    let gy = bf16_values(yd.iter().product(), 3);
    let res = bf16_values(yd.iter().product(), 4);
    let [ry, rdx, rdw] = reference(&x, c.x, &wt, wd, &gy, &c.p);
    let a = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let [ay, adx, adw] = reference(&a(&x), c.x, &a(&wt), wd, &a(&gy), &c.p);
    let t = |v: &[f64], d: [usize; 4]| Tensor::from_f64_vec(v.to_vec(), d.to_vec(), DType::BF16, dev).unwrap();
    let (xt, wtt, gyt) = (t(&x, c.x), t(&wt, wd), t(&gy, yd));
    let terms = (c.rs[0] * c.rs[1] * ch).max(c.rs[0] * c.rs[1] * c.k).max(n * oh * ow + 64);

    let y = tc_conv2d_fprop(&xt, &wtt, None, &c.p, DType::F32).unwrap();
    assert_eq!((y.dims(), y.dtype(), y.device()), (&yd[..], DType::F32, dev));
    assert_within(&format!("{} y", c.name), &y.to_vec_f64().unwrap(), &ry, &ay, terms, false);
    // bf16 output with the fused residual: the residual is one more term.
    let y = tc_conv2d_fprop(&xt, &wtt, Some(&t(&res, yd)), &c.p, DType::BF16).unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    let want: Vec<f64> = ry.iter().zip(&res).map(|(y, r)| y + r).collect();
    let abs: Vec<f64> = ay.iter().zip(&res).map(|(y, r)| y + r.abs()).collect();
    assert_within(&format!("{} y + residual", c.name), &y.to_vec_f64().unwrap(), &want, &abs, terms, true);

    let dx = tc_conv2d_dgrad(&gyt, &wtt, [h, w], &c.p, DType::F32).unwrap();
    assert_eq!(dx.dims(), &c.x[..]);
    assert_within(&format!("{} dx", c.name), &dx.to_vec_f64().unwrap(), &rdx, &adx, terms, false);
    let dw = tc_conv2d_wgrad(&gyt, &xt, c.rs, &c.p).unwrap();
    assert_eq!((dw.dims(), dw.dtype()), (&wd[..], DType::F32));
    assert_within(&format!("{} dw", c.name), &dw.to_vec_f64().unwrap(), &rdw, &adw, terms, false);
}

#[test]
fn tensor_core_passes_match_conv2d_in_f64() {
    let cases = [
        Case {
            name: "3x3/2 fixed",
            x: [2, 9, 9, 16],
            k: 24,
            rs: [3, 3],
            p: Conv2dParams::new(2, 0).with_padding_sides(1, 1, 1, 1),
        },
        Case { name: "3x3/1", x: [1, 7, 6, 8], k: 64, rs: [3, 3], p: Conv2dParams::new(1, 1) },
        Case { name: "1x1/2", x: [2, 7, 7, 24], k: 8, rs: [1, 1], p: Conv2dParams::new(2, 0) },
        Case {
            name: "3x3/2 after",
            x: [1, 8, 8, 8],
            k: 16,
            rs: [3, 3],
            p: Conv2dParams::new(2, 0).with_padding_sides(0, 1, 0, 1),
        },
    ];
    assert_eq!(Padding::fixed(3), Padding::PerSide([1, 1, 1, 1]));
    for c in &cases {
        run(c);
    }
}

#[test]
fn the_stem_runs_on_channels_padded_to_8() {
    let dev = test_device();
    let (xd, wd) = ([1, 12, 10, 3], [16, 7, 7, 3]);
    let p = Conv2dParams::new(2, 3);
    let x = bf16_values(xd.iter().product(), 5);
    let wt = bf16_values(wd.iter().product(), 6);
    let [oh, ow] = p.output_size([12, 10], [7, 7]).unwrap();
    let gy = vec![0.0; oh * ow * 16];
    let [ry, ..] = reference(&x, xd, &wt, wd, &gy, &p);
    let a = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let [ay, ..] = reference(&a(&x), xd, &a(&wt), wd, &gy, &p);
    let t = |v: Vec<f64>, d: [usize; 4]| Tensor::from_f64_vec(v, d.to_vec(), DType::BF16, dev).unwrap();
    let (x8, w8) = (t(pad_channels(&x, 3, 8), [1, 12, 10, 8]), t(pad_channels(&wt, 3, 8), [16, 7, 7, 8]));
    let y = tc_conv2d_fprop(&x8, &w8, None, &p, DType::F32).unwrap();
    assert_within("stem y", &y.to_vec_f64().unwrap(), &ry, &ay, 7 * 7 * 8, false);
}

#[test]
fn what_the_kernels_do_not_take_is_an_error() {
    let dev = test_device();
    let p = Conv2dParams::new(1, 1);
    let t = |d: [usize; 4], dtype, device| Tensor::zeros(d.to_vec(), dtype, device).unwrap();
    let w = t([8, 3, 3, 8], DType::BF16, dev);
    let err = |r: bitgrad_engine::Result<Tensor>| r.unwrap_err().to_string();
    assert!(err(tc_conv2d_fprop(&t([1, 4, 4, 8], DType::F32, dev), &w, None, &p, DType::F32)).contains("x is f32"));
    assert!(err(tc_conv2d_fprop(&t([1, 4, 4, 8], DType::BF16, Device::Cpu), &w, None, &p, DType::F32)).contains("GPU"));
    let w12 = t([8, 3, 3, 12], DType::BF16, dev);
    assert!(err(tc_conv2d_fprop(&t([1, 4, 4, 12], DType::BF16, dev), &w12, None, &p, DType::F32))
        .contains("multiples of 8"));
    assert!(err(tc_conv2d_fprop(&t([1, 4, 4, 16], DType::BF16, dev), &w, None, &p, DType::F32)).contains("channels"));
    let x = t([1, 4, 4, 8], DType::BF16, dev);
    assert!(err(tc_conv2d_fprop(&x, &w, None, &p.with_groups(2), DType::F32)).contains("groups"));
    assert!(err(tc_conv2d_fprop(&x, &w, None, &p, DType::F16)).contains("f16"));
    let bad_res = t([1, 4, 4, 16], DType::BF16, dev);
    assert!(err(tc_conv2d_fprop(&x, &w, Some(&bad_res), &p, DType::BF16)).contains("residual"));
    assert!(err(tc_conv2d_dgrad(&t([1, 3, 3, 8], DType::BF16, dev), &w, [4, 4], &p, DType::F32)).contains("dy"));
}
