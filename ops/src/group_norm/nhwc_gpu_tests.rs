//! The channels-last bf16 group norm (`nhwc.rs`) on the GPU test device against the existing f32
//! group_norm op and its autograd backward on the CPU (NCHW, reached through permutes of the same
//! bf16 values widened to f32): y and dx within bf16 rounding, dγ and dβ within f32 rounding; on
//! odd shapes (5 channels per group, one group, one channel per group, H·W = 1), ReLU fused or
//! not; and the errors for what the kernels do not take.

use bitgrad_engine::gpu::test_device;
use bitgrad_engine::{autograd, DType, Device, Rng, Tensor};

use super::{group_norm, group_norm_nhwc_bf16, group_norm_nhwc_bf16_backward, Activation, GN_EPS};

/// `dims` normal values (scaled, offset) rounded to bf16, as an f32 CPU tensor.
fn values(dims: &[usize], scale: f64, offset: f64, seed: u64) -> Tensor {
    Tensor::randn(dims.to_vec(), offset, scale, DType::F32, Device::Cpu, &mut Rng::new(seed))
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

/// |got − want| ≤ rel·|want| + abs·max|want|.
fn near(what: &str, got: &[f64], want: &[f64], rel: f64, abs: f64) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= rel * w.abs() + abs * scale, "{what}[{i}]: {g} vs f32 op {w} (max {scale})");
    }
}

#[test]
fn nhwc_bf16_group_norm_matches_the_f32_op() {
    matches_the_f32_op_on(test_device());
}

#[test]
fn the_cpu_twin_matches_the_f32_op() {
    matches_the_f32_op_on(Device::Cpu);
}

fn matches_the_f32_op_on(dev: Device) {
    let nchw = [0, 3, 1, 2];
    for (i, &([n, h, w, c], groups)) in
        [([2, 5, 3, 40], 8), ([1, 7, 7, 24], 1), ([3, 3, 5, 36], 36), ([3, 1, 1, 8], 2)].iter().enumerate()
    {
        for relu in [false, true] {
            let seed = 10 * i as u64 + relu as u64;
            let x = values(&[n, h, w, c], 1.0, 2.0, seed);
            let dy = values(&[n, h, w, c], 1.0, 0.0, seed + 100);
            let gamma = values(&[c], 0.3, 1.0, seed + 200);
            let beta = values(&[c], 0.3, 0.0, seed + 300);
            let what = format!("[{n}, {h}, {w}, {c}] G{groups} relu {relu}");

            // The f32 op on the CPU, NCHW, and its gradients of Σ y·dy.
            let leaf = |t: &Tensor| t.clone().requires_grad_(true);
            let (xl, gl, bl) = (leaf(&x.permute(&nchw).unwrap().contiguous().unwrap()), leaf(&gamma), leaf(&beta));
            let act = if relu { Activation::Relu } else { Activation::None };
            let y = group_norm(&xl, groups, Some(&gl), Some(&bl), GN_EPS, act).unwrap();
            let store = autograd::grad(&y, &dy.permute(&nchw).unwrap().contiguous().unwrap()).unwrap();
            let grad = |l: &Tensor| store.get(l).expect("gradient reached the leaf").clone();
            let nhwc = |t: &Tensor| t.permute(&[0, 2, 3, 1]).unwrap().contiguous().unwrap().to_vec_f64().unwrap();
            let (want_y, want_dx) = (nhwc(&y), nhwc(&grad(&xl)));
            let (want_dg, want_db) = (grad(&gl).to_vec_f64().unwrap(), grad(&bl).to_vec_f64().unwrap());

            let on = |t: &Tensor, dt: DType| t.to_dtype(dt).unwrap().to_device(dev).unwrap();
            let (xg, dyg, gg, bg) =
                (on(&x, DType::BF16), on(&dy, DType::BF16), on(&gamma, DType::F32), on(&beta, DType::F32));
            let f = group_norm_nhwc_bf16(&xg, groups, Some(&gg), Some(&bg), GN_EPS, relu).unwrap();
            let b = group_norm_nhwc_bf16_backward(&dyg, &xg, Some(&f.y), Some(&gg), (&f.mean, &f.rstd), groups, relu)
                .unwrap();
            let host = |t: &Tensor| t.to_vec_f64().unwrap();
            assert_eq!(f.y.dtype(), DType::BF16);
            assert_eq!((f.mean.dims(), b.dgamma.dtype()), (&[n, groups][..], DType::F32));
            // bf16 outputs: one bf16 ulp (2⁻⁸ relative) covers their rounding and the f32
            // differences; dx cancels (dy minus its group means), hence the term of its largest.
            near(&format!("{what} y"), &host(&f.y), &want_y, 1.0 / 256.0, 1e-6);
            near(&format!("{what} dx"), &host(&b.dx), &want_dx, 1.0 / 256.0, 1.0 / 512.0);
            near(&format!("{what} dgamma"), &host(&b.dgamma), &want_dg, 1e-4, 1e-5);
            near(&format!("{what} dbeta"), &host(&b.dbeta), &want_db, 1e-4, 1e-5);
        }
    }
}

#[test]
fn nhwc_bf16_group_norm_errors() {
    let dev = test_device();
    let x = Tensor::zeros(vec![2, 3, 3, 12], DType::BF16, dev).unwrap();
    let msg = |r: bitgrad_engine::Result<super::GnNhwcForward>| r.unwrap_err().to_string();
    assert!(msg(group_norm_nhwc_bf16(&x, 5, None, None, GN_EPS, false)).contains("multiple"));
    let x32 = Tensor::zeros(vec![2, 3, 3, 12], DType::F32, dev).unwrap();
    assert!(msg(group_norm_nhwc_bf16(&x32, 4, None, None, GN_EPS, false)).contains("bf16"));
    let cpu = Tensor::zeros(vec![2, 3, 3, 12], DType::BF16, Device::Cpu).unwrap();
    assert!(msg(group_norm_nhwc_bf16(&cpu, 5, None, None, GN_EPS, false)).contains("multiple"));
    let g12 = Tensor::zeros(vec![12], DType::F32, dev).unwrap();
    assert!(msg(group_norm_nhwc_bf16(&cpu, 4, Some(&g12), None, GN_EPS, false)).contains("is on"));
    let g = Tensor::zeros(vec![8], DType::F32, dev).unwrap();
    assert!(msg(group_norm_nhwc_bf16(&x, 4, Some(&g), None, GN_EPS, false)).contains("gamma"));
    let f = group_norm_nhwc_bf16(&x, 4, None, None, GN_EPS, true).unwrap();
    let e = group_norm_nhwc_bf16_backward(&x, &x, None, None, (&f.mean, &f.rstd), 4, true).unwrap_err();
    assert!(e.to_string().contains("mask"), "{e}");
}
