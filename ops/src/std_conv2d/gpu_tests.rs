//! std_conv2d: the same-dtype route is conv2d ∘ weight_std; the bf16-activation / f32-weight
//! route on the GPU test device (Emu, or Cuda(0) under the CUDA shim) runs the tensor-core node
//! and is held to bf16 bounds against the f64 composition on the CPU; the CPU route is the
//! recorded f32 composition, bit for bit; wrong dtype pairs are errors.
//!
//! Tolerances (x and the output gradient are bf16 values, so they enter exactly):
//! * y and dx: the bf16 weight ŵ (each product off by ≤ 2⁻⁹·|x·ŵ|) and one bf16 rounding of the
//!   result: |err| ≤ 2⁻⁸·(|ref| + Σ|x|·|ŵ|), twice the first-order bound;
//! * dW (f32 master gradient): wgrad sums exact bf16 products in f32 and WS's backward runs in
//!   f32, so only f32 rounding remains: ‖err‖₂ ≤ 10⁻⁴·‖ref‖₂.

use bitgrad_engine::gpu::test_device;
use bitgrad_engine::{autograd, DType, Device, MemoryFormat, Tensor};

use crate::testing::{l2_rel, randn_as};

use super::{std_conv2d, tc};
use crate::conv2d::{conv2d, Conv2dParams};
use crate::weight_std::weight_std;

pub(super) const WS_EPS: f64 = 1e-8;

/// [y, dx, dw] of `conv2d(x, WS(w))` in f64 on the CPU (NCHW), and y, dx on absolute values
/// (Σ|x|·|ŵ| and Σ|gy|·|ŵ|) for the bounds.
pub(super) fn reference(x: &Tensor, w: &Tensor, gy: &Tensor, ws: Option<f64>, p: &Conv2dParams) -> [Vec<f64>; 5] {
    let f64_leaf = |t: &Tensor| t.to_device(Device::Cpu).unwrap().to_dtype(DType::F64).unwrap().requires_grad_(true);
    let (xl, wl) = (f64_leaf(x), f64_leaf(w));
    let what = match ws {
        Some(eps) => weight_std(&wl, eps).unwrap(),
        None => wl.clone(),
    };
    let y = conv2d(&xl, &what, None, p).unwrap();
    let g = gy.to_device(Device::Cpu).unwrap().to_dtype(DType::F64).unwrap().contiguous().unwrap();
    let store = autograd::grad(&y, &g).unwrap();
    let v = |t: &Tensor| t.contiguous().unwrap().to_vec_f64().unwrap();
    let abs_w = what.detach().abs().unwrap();
    let ay = conv2d(&xl.detach().abs().unwrap(), &abs_w, None, p).unwrap();
    let wl2 = abs_w.requires_grad_(true);
    let xl2 = xl.detach().requires_grad_(true);
    let y2 = conv2d(&xl2, &wl2, None, p).unwrap();
    let adx = autograd::grad(&y2, &g.abs().unwrap()).unwrap();
    [v(&y), v(store.get(&xl).unwrap()), v(store.get(&wl).unwrap()), v(&ay), v(adx.get(&xl2).unwrap())]
}

pub(super) fn within(what: &str, got: &[f64], want: &[f64], abs: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, ((g, w), a)) in got.iter().zip(want).zip(abs).enumerate() {
        let tol = 2f64.powi(-8) * (w.abs() + a) + 1e-30;
        assert!((g - w).abs() <= tol, "{what}[{i}]: {g} vs {w} (bound {tol:e})");
    }
}

struct Case {
    name: &'static str,
    x: [usize; 4],
    k: usize,
    ks: usize,
    p: Conv2dParams,
    ws: Option<f64>,
    channels_last: bool,
}

fn run_on_gpu(c: &Case) {
    let dev = test_device();
    let [_, ch, ..] = c.x;
    let x16 = randn_as(&c.x, DType::BF16, 1);
    let w32 = randn_as(&[c.k, ch, c.ks, c.ks], DType::F32, 2);
    let x = x16.to_device(dev).unwrap();
    let x = if c.channels_last { x.to_memory_format(MemoryFormat::ChannelsLast).unwrap() } else { x };
    let x = x.requires_grad_(true);
    let w = w32.to_device(dev).unwrap().requires_grad_(true);
    assert!(tc::plan(&x, &w, &c.p).is_some(), "{}: the tensor-core kernels take it", c.name);
    let y = std_conv2d(&x, &w, c.ws, &c.p).unwrap();
    assert_eq!((y.dtype(), y.device()), (DType::BF16, dev), "{}", c.name);
    assert!(y.is_channels_last() || y.dims()[1] == 1, "{}: the output is channels-last", c.name);
    let gy = randn_as(y.dims(), DType::BF16, 3);
    let store = autograd::grad(&y, &gy.to_device(dev).unwrap()).unwrap();
    let (dx, dw) = (store.get(&x).unwrap(), store.get(&w).unwrap());
    assert_eq!((dx.dims(), dx.dtype()), (x.dims(), DType::BF16), "{}", c.name);
    assert_eq!((dw.dims(), dw.dtype(), dw.is_contiguous()), (w.dims(), DType::F32, true), "{}", c.name);

    let [ry, rdx, rdw, ay, adx] = reference(&x16, &w32, &gy, c.ws, &c.p);
    let v = |t: &Tensor| t.to_device(Device::Cpu).unwrap().contiguous().unwrap().to_vec_f64().unwrap();
    within(&format!("{} y", c.name), &v(&y), &ry, &ay);
    within(&format!("{} dx", c.name), &v(dx), &rdx, &adx);
    let e = l2_rel(&v(dw), &rdw);
    assert!(e <= 1e-4, "{} dw: relative L2 error {e:e} (bound 1e-4)", c.name);
}

#[test]
fn bf16_activations_run_the_tensor_core_node_within_bf16_bounds() {
    let cases = [
        // BiT's stem: 3 channels, zero-padded to 8 inside the op.
        Case {
            name: "stem 7x7/2",
            x: [2, 3, 15, 14],
            k: 16,
            ks: 7,
            p: Conv2dParams::new(2, 3),
            ws: Some(WS_EPS),
            channels_last: false,
        },
        Case {
            name: "3x3/2",
            x: [2, 16, 9, 9],
            k: 24,
            ks: 3,
            p: Conv2dParams::new(2, 1),
            ws: Some(WS_EPS),
            channels_last: true,
        },
        Case {
            name: "3x3/1",
            x: [1, 8, 7, 6],
            k: 32,
            ks: 3,
            p: Conv2dParams::new(1, 1),
            ws: Some(1e-10),
            channels_last: true,
        },
        Case {
            name: "1x1/2 projection",
            x: [2, 24, 7, 7],
            k: 8,
            ks: 1,
            p: Conv2dParams::new(2, 0),
            ws: Some(WS_EPS),
            channels_last: true,
        },
        Case {
            name: "1x1/1 no WS",
            x: [2, 16, 5, 5],
            k: 16,
            ks: 1,
            p: Conv2dParams::new(1, 0),
            ws: None,
            channels_last: false,
        },
    ];
    for c in &cases {
        run_on_gpu(c);
    }
}

/// `std_conv2d_add` on the tensor-core node: the residual in the fprop's epilogue (the checks
/// of `add_tests.rs`).
#[test]
fn the_tensor_core_node_starts_from_the_residual() {
    let dev = test_device();
    let x = randn_as(&[1, 32, 4, 4], DType::BF16, 1).to_device(dev).unwrap();
    let w = randn_as(&[64, 32, 1, 1], DType::F32, 2).to_device(dev).unwrap();
    assert!(tc::plan(&x, &w, &Conv2dParams::new(1, 0)).is_some(), "the case runs the tensor-core node");
    super::add_tests::check_route(super::add_tests::Route::Public(dev));
}

#[test]
fn shapes_the_kernels_refuse_fall_back_to_f32_arithmetic() {
    let dev = test_device();
    // 12 output channels: not a multiple of 8.
    let x = randn_as(&[1, 8, 6, 6], DType::BF16, 4).to_device(dev).unwrap();
    let w = randn_as(&[12, 8, 3, 3], DType::F32, 5).to_device(dev).unwrap().requires_grad_(true);
    let p = Conv2dParams::new(1, 1);
    assert!(tc::plan(&x, &w, &p).is_none());
    let y = std_conv2d(&x, &w, Some(WS_EPS), &p).unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    let want = conv2d(&x.to_dtype(DType::F32).unwrap(), &weight_std(&w, WS_EPS).unwrap(), None, &p).unwrap();
    let (g, r) = (y.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    for (a, b) in g.iter().zip(&r) {
        assert!((a - b).abs() <= 2f64.powi(-8) * b.abs(), "{a} vs {b}");
    }
    let store = autograd::grad(&y, &Tensor::ones_like(&y).unwrap()).unwrap();
    assert_eq!(store.get(&w).unwrap().dtype(), DType::F32);
}

#[test]
fn on_the_cpu_the_bf16_route_is_the_recorded_f32_composition() {
    let p = Conv2dParams::new(2, 1);
    let x = randn_as(&[2, 3, 9, 8], DType::BF16, 6).requires_grad_(true);
    let w = randn_as(&[8, 3, 3, 3], DType::F32, 7).requires_grad_(true);
    let y = std_conv2d(&x, &w, Some(WS_EPS), &p).unwrap();
    let x2 = x.detach().requires_grad_(true);
    let w2 = w.detach().requires_grad_(true);
    let want = conv2d(&x2.to_dtype(DType::F32).unwrap(), &weight_std(&w2, WS_EPS).unwrap(), None, &p)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap();
    assert_eq!(y.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    let gy = randn_as(y.dims(), DType::BF16, 8);
    let (a, b) = (autograd::grad(&y, &gy).unwrap(), autograd::grad(&want, &gy).unwrap());
    assert_eq!(a.get(&x).unwrap().to_vec_f64().unwrap(), b.get(&x2).unwrap().to_vec_f64().unwrap());
    let dw = a.get(&w).unwrap();
    assert_eq!(dw.dtype(), DType::F32);
    assert_eq!(dw.to_vec_f64().unwrap(), b.get(&w2).unwrap().to_vec_f64().unwrap());
}

#[test]
fn same_dtypes_are_conv2d_of_weight_std_bit_for_bit() {
    let p = Conv2dParams::new(1, 1);
    let x = randn_as(&[2, 4, 6, 5], DType::F32, 9);
    let w = randn_as(&[6, 4, 3, 3], DType::F32, 10);
    let got = std_conv2d(&x, &w, Some(WS_EPS), &p).unwrap().to_vec_f64().unwrap();
    let want = conv2d(&x, &weight_std(&w, WS_EPS).unwrap(), None, &p).unwrap().to_vec_f64().unwrap();
    assert_eq!(got, want);
    let plain = std_conv2d(&x, &w, None, &p).unwrap().to_vec_f64().unwrap();
    assert_eq!(plain, conv2d(&x, &w, None, &p).unwrap().to_vec_f64().unwrap());
}

#[test]
fn other_dtype_pairs_are_errors() {
    let p = Conv2dParams::new(1, 0);
    let x = randn_as(&[1, 8, 4, 4], DType::F32, 11);
    let w = randn_as(&[8, 8, 1, 1], DType::BF16, 12);
    let e = std_conv2d(&x, &w, None, &p).unwrap_err().to_string();
    assert!(e.contains("bf16 activations with an f32 master weight"), "{e}");
    let e = std_conv2d(&x.to_dtype(DType::BF16).unwrap(), &w.to_dtype(DType::F64).unwrap(), None, &p).unwrap_err();
    assert!(e.to_string().contains("f64"), "{e}");
}
