//! The bf16 weight standardization (`bf16.rs`) on the GPU test device against the f32
//! weight_std op and its autograd backward on the CPU on the same KRSC values: ŵ within one bf16
//! rounding (μ and r are the f32 op's up to f32 rounding), dw within f32 rounding; on BiT's stem
//! (C = 3), a 1×1 of 13 channels and a 3×3; and the errors.

use bitgrad_engine::gpu::test_device;
use bitgrad_engine::{autograd, DType, Device, Rng, Tensor};

use super::{weight_std, weight_std_bf16, weight_std_bf16_backward, WS_EPS_BIT};

fn randn(dims: &[usize], scale: f64, seed: u64) -> Tensor {
    Tensor::randn(dims.to_vec(), 0.0, scale, DType::F32, Device::Cpu, &mut Rng::new(seed)).unwrap()
}

#[test]
fn bf16_weight_std_matches_the_f32_op() {
    let dev = test_device();
    for (i, dims) in [[8, 7, 7, 3], [24, 1, 1, 13], [16, 3, 3, 40]].into_iter().enumerate() {
        let w = randn(&dims, 0.01, i as u64).add_scalar(0.002).unwrap();
        let g = randn(&dims, 1.0, 50 + i as u64);
        let wl = w.clone().requires_grad_(true);
        let what = weight_std(&wl, WS_EPS_BIT).unwrap();
        let store = autograd::grad(&what, &g).unwrap();
        let (want, want_dw) = (what.to_vec_f64().unwrap(), store.get(&wl).unwrap().to_vec_f64().unwrap());

        let f = weight_std_bf16(&w.to_device(dev).unwrap(), WS_EPS_BIT).unwrap();
        assert_eq!((f.w_hat.dtype(), f.w_hat.dims()), (DType::BF16, &dims[..]));
        let got = f.w_hat.to_vec_f64().unwrap();
        for (j, (a, b)) in got.iter().zip(&want).enumerate() {
            // Half a bf16 ulp (2⁻⁹ relative) plus the f32 differences of μ and r.
            assert!((a - b).abs() <= b.abs() / 256.0 + 1e-5, "{dims:?}: ŵ[{j}] {a} vs f32 op {b}");
        }
        let dw = weight_std_bf16_backward(&g.to_device(dev).unwrap(), &w.to_device(dev).unwrap(), &f.mean, &f.rstd)
            .unwrap()
            .to_vec_f64()
            .unwrap();
        let scale = want_dw.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        for (j, (a, b)) in dw.iter().zip(&want_dw).enumerate() {
            assert!((a - b).abs() <= 1e-5 * scale, "{dims:?}: dw[{j}] {a} vs f32 op {b} (max {scale})");
        }
    }
}

#[test]
fn bf16_weight_std_errors() {
    let dev = test_device();
    let w = Tensor::zeros(vec![4, 3, 3, 8], DType::F32, dev).unwrap();
    let e = |r: bitgrad_engine::Result<super::WsBf16>| r.unwrap_err().to_string();
    assert!(e(weight_std_bf16(&w.to_dtype(DType::BF16).unwrap(), 1e-5)).contains("f32"));
    assert!(e(weight_std_bf16(&w.reshape(vec![4, 72]).unwrap(), 1e-5)).contains("rank 4"));
    assert!(e(weight_std_bf16(&w.to_device(Device::Cpu).unwrap(), 1e-5)).contains("GPU"));
    assert!(e(weight_std_bf16(&w, -1.0)).contains("eps"));
    let f = weight_std_bf16(&w, 1e-5).unwrap();
    let g = Tensor::zeros(vec![4, 3, 3, 4], DType::F32, dev).unwrap();
    assert!(weight_std_bf16_backward(&g, &w, &f.mean, &f.rstd).unwrap_err().to_string().contains("shape"));
}
