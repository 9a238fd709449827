//! `std_conv2d_add`: the residual fused into the convolution on every route, against the
//! unfused `std_conv2d` + `add`.
//!
//! * bf16 nodes (the CPU's bf16 tiles on both emulations and on the instructions where present;
//!   the tensor cores on the GPU test device, from `gpu_tests.rs`): y = bf16(residual + conv) is within the bf16 bounds
//!   of `gpu_tests.rs` against the f64 `conv + residual` (the residual one more exact term), dx
//!   and dW are the unfused node's bit for bit, and the residual's gradient is dy;
//! * same dtypes: `conv2d_add(x, WS(w))` bit for bit;
//! * the f32 fallback of shapes no bf16 kernel takes: `conv2d_add` in f32, rounded once;
//! * a residual that does not have the output's shape: exactly `std_conv2d(..)` + `add`.

use bitgrad_engine::{autograd, DType, Device, MemoryFormat, Tensor};

use super::gpu_tests::{reference, within, WS_EPS};
use super::{cpu_bf16, std_conv2d, std_conv2d_add};
use crate::conv2d::bf16_tiles::Tiles;
use crate::conv2d::{conv2d_add, Conv2dParams};
use crate::testing::randn_as;
use crate::weight_std::weight_std;

/// How a case's node is made: through the public op, or on the CPU with given tiles.
#[derive(Clone, Copy, Debug)]
pub(super) enum Route {
    Public(Device),
    CpuTiles(Tiles),
}

fn forward(route: Route, x: &Tensor, w: &Tensor, p: &Conv2dParams, r: Option<&Tensor>) -> Tensor {
    match (route, r) {
        (Route::Public(_), Some(r)) => std_conv2d_add(x, w, Some(WS_EPS), p, r).unwrap(),
        (Route::Public(_), None) => std_conv2d(x, w, Some(WS_EPS), p).unwrap(),
        (Route::CpuTiles(t), r) => cpu_bf16::plan_with(x, w, p, t).unwrap().forward(x, w, Some(WS_EPS), r).unwrap(),
    }
}

/// Fused against the f64 reference and against the unfused node's gradients.
pub(super) fn check(route: Route, xd: [usize; 4], k: usize, ks: usize, p: Conv2dParams) {
    let dev = match route {
        Route::Public(d) => d,
        Route::CpuTiles(_) => Device::Cpu,
    };
    let x16 = randn_as(&xd, DType::BF16, 21);
    let w32 = randn_as(&[k, xd[1], ks, ks], DType::F32, 22);
    let x = x16.to_device(dev).unwrap().to_memory_format(MemoryFormat::ChannelsLast).unwrap().requires_grad_(true);
    let w = w32.to_device(dev).unwrap().requires_grad_(true);
    let y0 = forward(route, &x, &w, &p, None);
    let r16 = randn_as(y0.dims(), DType::BF16, 23);
    let r = r16.to_device(dev).unwrap().requires_grad_(true);
    let y = forward(route, &x, &w, &p, Some(&r));
    assert_eq!((y.dtype(), y.dims()), (DType::BF16, y0.dims()), "{route:?}");
    let gy = randn_as(y.dims(), DType::BF16, 24);
    let (fused, plain) = (
        autograd::grad(&y, &gy.to_device(dev).unwrap()).unwrap(),
        autograd::grad(&y0, &gy.to_device(dev).unwrap()).unwrap(),
    );
    let v = |t: &Tensor| t.to_device(Device::Cpu).unwrap().contiguous().unwrap().to_vec_f64().unwrap();
    let [ry, _, _, ay, _] = reference(&x16, &w32, &gy, Some(WS_EPS), &p);
    let rv = v(&r16);
    let want: Vec<f64> = ry.iter().zip(&rv).map(|(a, b)| a + b).collect();
    let scale: Vec<f64> = ay.iter().zip(&rv).map(|(a, b)| a + b.abs()).collect();
    within(&format!("{route:?} y + residual"), &v(&y), &want, &scale);
    for (leaf, what) in [(&x, "dx"), (&w, "dw")] {
        assert_eq!(v(fused.get(leaf).unwrap()), v(plain.get(leaf).unwrap()), "{route:?} {what}: the unfused node's");
    }
    assert_eq!(v(fused.get(&r).unwrap()), v(&gy), "{route:?}: the residual's gradient is dy");
}

/// BiT's conv3 (1×1 expanding) and a 3×3, with channels in 32s for the CPU's tiles.
pub(super) fn check_route(route: Route) {
    check(route, [2, 32, 4, 4], 64, 1, Conv2dParams::new(1, 0));
    check(route, [1, 32, 5, 5], 32, 3, Conv2dParams::new(1, 1));
}

/// The tensor-core node's case is in `gpu_tests.rs` (it runs under the CUDA shim too).
#[test]
fn the_cpu_bf16_node_starts_from_the_residual() {
    let mut routes = vec![Route::CpuTiles(Tiles::AmxEmulated), Route::CpuTiles(Tiles::DotEmulated)];
    routes.extend(Tiles::all_hardware().into_iter().map(Route::CpuTiles));
    for route in routes {
        check_route(route);
    }
}

#[test]
fn same_dtypes_are_conv2d_add_of_weight_std_bit_for_bit() {
    let p = Conv2dParams::new(1, 0);
    let x = randn_as(&[2, 8, 5, 5], DType::F32, 31);
    let w = randn_as(&[16, 8, 1, 1], DType::F32, 32);
    let r = randn_as(&[2, 16, 5, 5], DType::F32, 33);
    let got = std_conv2d_add(&x, &w, Some(WS_EPS), &p, &r).unwrap().to_vec_f64().unwrap();
    let want = conv2d_add(&x, &weight_std(&w, WS_EPS).unwrap(), None, &p, &r).unwrap().to_vec_f64().unwrap();
    assert_eq!(got, want);
}

#[test]
fn the_f32_fallback_adds_the_residual_before_its_one_rounding() {
    // 12 output channels: neither the tensor cores' multiple of 8 nor the CPU tiles' 32.
    let p = Conv2dParams::new(1, 1);
    let x = randn_as(&[1, 8, 6, 6], DType::BF16, 41);
    let w = randn_as(&[12, 8, 3, 3], DType::F32, 42);
    let r = randn_as(&[1, 12, 6, 6], DType::BF16, 43);
    let got = std_conv2d_add(&x, &w, Some(WS_EPS), &p, &r).unwrap();
    let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    let want = conv2d_add(&f32(&x), &weight_std(&w, WS_EPS).unwrap(), None, &p, &f32(&r)).unwrap();
    assert_eq!(got.to_vec_f64().unwrap(), want.to_dtype(DType::BF16).unwrap().to_vec_f64().unwrap());
}

#[test]
fn a_residual_of_another_shape_is_std_conv2d_then_add() {
    let p = Conv2dParams::new(1, 1);
    // A broadcast residual, on a shape the bf16 kernels take and on one they do not.
    for (xd, k) in [([1, 32, 4, 4], 32), ([1, 8, 6, 6], 12)] {
        let x = randn_as(&xd, DType::BF16, 41);
        let w = randn_as(&[k, xd[1], 3, 3], DType::F32, 42);
        let r = randn_as(&[1, k, 1, 1], DType::BF16, 43);
        let got = std_conv2d_add(&x, &w, Some(WS_EPS), &p, &r).unwrap();
        let want = std_conv2d(&x, &w, Some(WS_EPS), &p).unwrap().add(&r).unwrap();
        assert_eq!(got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap(), "{xd:?} → {k}");
    }
}
