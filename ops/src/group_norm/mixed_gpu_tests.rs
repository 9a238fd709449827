//! group_norm with bf16 activations and f32 γ/β: on the GPU test device (Emu, or Cuda(0) under
//! the CUDA shim) the NHWC kernels through one autograd node, held to bf16 bounds against the
//! f64 op on the CPU; on the CPU, a channels-last input through the kernels' CPU twin (same
//! bounds), an NCHW one through the recorded f32 composition, bit for bit; mixed-up parameter
//! dtypes are errors.
//!
//! Tolerances (x and the output gradient are bf16 values, entering exactly; statistics in f32):
//! y: one bf16 rounding, |err| ≤ 2⁻⁸·|ref| + 10⁻⁵·(|γ·x̂| + |β| + 1);
//! dx: one bf16 rounding of a value that f32 arithmetic gets to ~10⁻⁶ of the group's scale,
//! ‖err‖₂ ≤ 2⁻⁸·‖ref‖₂; dγ and dβ (f32 sums of exact products): ‖err‖₂ ≤ 10⁻⁴·‖ref‖₂.

use bitgrad_engine::gpu::test_device;
use bitgrad_engine::{autograd, DType, Device, MemoryFormat, Tensor};

use crate::testing::{l2_rel, randn_as};

use super::{group_norm, Activation, GN_EPS};

fn v(t: &Tensor) -> Vec<f64> {
    t.to_device(Device::Cpu).unwrap().contiguous().unwrap().to_vec_f64().unwrap()
}

fn run_on(dev: Device, dims: [usize; 4], groups: usize, act: Activation, channels_last: bool) {
    let what = format!("{dims:?} in {groups} groups, {act:?}, channels_last {channels_last}");
    let c = dims[1];
    let x16 = randn_as(&dims, DType::BF16, 1);
    let (g32, b32) = (randn_as(&[c], DType::F32, 2), randn_as(&[c], DType::F32, 3));
    let x = x16.to_device(dev).unwrap();
    let x = if channels_last { x.to_memory_format(MemoryFormat::ChannelsLast).unwrap() } else { x };
    let x = x.requires_grad_(true);
    let (g, b) = (g32.to_device(dev).unwrap().requires_grad_(true), b32.to_device(dev).unwrap().requires_grad_(true));
    let y = group_norm(&x, groups, Some(&g), Some(&b), GN_EPS, act).unwrap();
    assert_eq!((y.dims(), y.dtype()), (&dims[..], DType::BF16), "{what}");
    assert!(y.is_channels_last(), "{what}: the NHWC kernels' output is channels-last");
    let gy = randn_as(&dims, DType::BF16, 4);
    let store = autograd::grad(&y, &gy.to_device(dev).unwrap()).unwrap();
    let (dx, dg, db) = (store.get(&x).unwrap(), store.get(&g).unwrap(), store.get(&b).unwrap());
    assert_eq!((dx.dtype(), dg.dtype(), db.dtype()), (DType::BF16, DType::F32, DType::F32), "{what}");

    let f64_leaf = |t: &Tensor| t.to_dtype(DType::F64).unwrap().requires_grad_(true);
    let (xl, gl, bl) = (f64_leaf(&x16), f64_leaf(&g32), f64_leaf(&b32));
    let ry = group_norm(&xl, groups, Some(&gl), Some(&bl), GN_EPS, act).unwrap();
    let rs = autograd::grad(&ry, &gy.to_dtype(DType::F64).unwrap()).unwrap();
    let (got, want) = (v(&y), v(&ry));
    // |γ·x̂| + |β| from the f64 op without the ReLU.
    let affine =
        v(&group_norm(&xl.detach(), groups, Some(&gl.detach().abs().unwrap()), None, GN_EPS, Activation::None)
            .unwrap()
            .abs()
            .unwrap());
    let beta_abs = v(&b32.abs().unwrap());
    let hw = dims[2] * dims[3];
    for (i, (a, w)) in got.iter().zip(&want).enumerate() {
        let ch = (i / hw) % c;
        let tol = 2f64.powi(-8) * w.abs() + 1e-5 * (affine[i] + beta_abs[ch] + 1.0);
        assert!((a - w).abs() <= tol, "{what}: y[{i}] {a} vs {w} (bound {tol:e})");
    }
    let e = l2_rel(&v(dx), &v(rs.get(&xl).unwrap()));
    assert!(e <= 2f64.powi(-8), "{what}: dx relative L2 error {e:e}");
    for (name, got, want) in [("dgamma", dg, &gl), ("dbeta", db, &bl)] {
        let e = l2_rel(&v(got), &v(rs.get(want).unwrap()));
        assert!(e <= 1e-4, "{what}: {name} relative L2 error {e:e}");
    }
}

#[test]
fn bf16_activations_with_f32_parameters_run_the_nhwc_kernels_within_bounds() {
    run_on(test_device(), [2, 64, 5, 7], 32, Activation::Relu, true);
    run_on(test_device(), [3, 32, 4, 4], 8, Activation::None, false);
    run_on(test_device(), [1, 16, 1, 1], 4, Activation::Relu, true);
}

#[test]
fn on_the_cpu_a_channels_last_input_runs_the_nhwc_twin_within_bounds() {
    run_on(Device::Cpu, [2, 64, 5, 7], 32, Activation::Relu, true);
    run_on(Device::Cpu, [3, 48, 4, 4], 3, Activation::None, true);
    run_on(Device::Cpu, [1, 16, 1, 1], 4, Activation::Relu, true);
}

#[test]
fn on_the_cpu_an_nchw_input_takes_the_recorded_f32_composition() {
    let x = randn_as(&[2, 8, 3, 5], DType::BF16, 5).requires_grad_(true);
    let (g, b) =
        (randn_as(&[8], DType::F32, 6).requires_grad_(true), randn_as(&[8], DType::F32, 7).requires_grad_(true));
    let y = group_norm(&x, 4, Some(&g), Some(&b), GN_EPS, Activation::Relu).unwrap();
    let (x2, g2, b2) =
        (x.detach().requires_grad_(true), g.detach().requires_grad_(true), b.detach().requires_grad_(true));
    let want = group_norm(&x2.to_dtype(DType::F32).unwrap(), 4, Some(&g2), Some(&b2), GN_EPS, Activation::Relu)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap();
    assert_eq!(v(&y), v(&want));
    let gy = randn_as(&[2, 8, 3, 5], DType::BF16, 8);
    let (s1, s2) = (autograd::grad(&y, &gy).unwrap(), autograd::grad(&want, &gy).unwrap());
    for (a, b) in [(&x, &x2), (&g, &g2), (&b, &b2)] {
        assert_eq!(v(s1.get(a).unwrap()), v(s2.get(b).unwrap()));
    }
    assert_eq!(s1.get(&g).unwrap().dtype(), DType::F32);
}

#[test]
fn a_bf16_input_takes_f32_parameters_only() {
    let x = randn_as(&[1, 8, 2, 2], DType::BF16, 9);
    let (g, b) = (randn_as(&[8], DType::F32, 10), randn_as(&[8], DType::F64, 11));
    let e = group_norm(&x, 2, Some(&g), Some(&b), GN_EPS, Activation::None).unwrap_err().to_string();
    assert!(e.contains("f32 beta"), "{e}");
}
