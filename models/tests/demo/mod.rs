//! Helpers shared by the tests that run the demonstration's pre-trained tiny BiT model
//! (assets/demo/upstream.safetensors) on its Fashion-MNIST images (assets/demo): the model, a
//! batch at 16 px, and the comparisons.
#![allow(dead_code)] // each test file uses a different subset

use bitgrad_engine::{DType, Device, Tensor};
use bitgrad_models::data::{open_idx_dir, Dataset, Transform};
use bitgrad_models::schedule::Resolution;
use bitgrad_models::{load_weights, LoadOptions, ResNetV2};

/// The batches' image size.
pub const SIZE: u32 = 16;

pub fn values(t: &Tensor) -> Vec<f64> {
    t.to_device(Device::Cpu).unwrap().contiguous().unwrap().to_vec_f64().unwrap()
}

/// ‖got − want‖₂ / ‖want‖₂.
pub fn l2_rel(got: &[f64], want: &[f64]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(a, b)| (a - b).powi(2)).sum();
    let den: f64 = want.iter().map(|b| b * b).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

pub fn demo_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/demo")
}

/// The demonstration's upstream model (5 classes) on `device`.
pub fn upstream(device: Device) -> ResNetV2 {
    let sd = load_weights(demo_dir().join("upstream.safetensors"), &LoadOptions::new()).unwrap();
    ResNetV2::from_state_dict_in(&sd, DType::F32, device).unwrap()
}

/// `n` Fashion-MNIST training images from `first` on, center-cropped to 16 px, and their labels.
pub fn batch(n: usize, first: usize, device: Device) -> (Tensor, Tensor) {
    let ds = open_idx_dir(demo_dir(), true).unwrap();
    let t = Transform::eval(Resolution { precrop: SIZE + 2, crop: SIZE });
    let (mut x, mut labels) = (Vec::new(), Vec::new());
    for i in (first..first + n).map(|i| i * 7 % ds.len()) {
        x.extend(t.apply(&ds.load(i).unwrap(), 0, 0, i as u64).unwrap());
        labels.push(ds.label(i).unwrap() as i64);
    }
    let s = SIZE as usize;
    (Tensor::from_vec(x, [n, 3, s, s], device).unwrap(), Tensor::from_vec(labels, [n], device).unwrap())
}
