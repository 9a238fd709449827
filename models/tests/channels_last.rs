//! A ResNetV2 run channels-last gives the NCHW model's logits and gradients bit for bit (the
//! tolerance is zero: every op computes the same numbers in the same order, only the storage
//! order of the activations differs), and its activations really are channels-last.

use bitgrad_engine::{DType, Device, MemoryFormat, Rng, Tensor};
use bitgrad_models::ops::softmax_xent::{cross_entropy, Target};
use bitgrad_models::{Module, ResNetV2, ResNetV2Config};

fn bits(t: &Tensor) -> Vec<u64> {
    t.to_vec_f64().unwrap().iter().map(|v| v.to_bits()).collect()
}

fn input(seed: u64) -> Tensor {
    Tensor::randn([2, 3, 32, 32], 0.0, 1.0, DType::F32, Device::Cpu, &mut Rng::new(seed)).unwrap()
}

/// Forward + backward of `config` in NCHW and channels-last from the same seed; everything equal.
fn same_in_both_formats(config: &ResNetV2Config, what: &str) {
    let labels = Tensor::from_vec(vec![1i64, 3], [2], Device::Cpu).unwrap();
    let run = |channels_last: bool| {
        let mut model = ResNetV2::new(config, 7).unwrap();
        if channels_last {
            model.to_channels_last();
            assert_eq!(model.memory_format(), MemoryFormat::ChannelsLast);
        }
        let x = input(8).requires_grad_(true);
        let acts = model.forward_with_activations(&x).unwrap();
        let loss = cross_entropy(&acts.logits, Target::Hard(&labels), 0.0).unwrap();
        loss.backward().unwrap();
        (model, x, acts, loss)
    };
    let (mn, xn, an, ln) = run(false);
    let (ml, xl, al, ll) = run(true);
    // The activations are channels-last from the stem to the features.
    for (i, t) in [&al.stem].into_iter().chain(&al.stages).chain([&al.features]).enumerate() {
        // The last stage is 1×1 at this input size: both formats then describe the same layout.
        let both = t.dims()[2] * t.dims()[3] == 1;
        assert!(
            t.is_channels_last() && (both || !t.is_contiguous()),
            "{what}: activation {i} has strides {:?}",
            t.layout().strides()
        );
    }
    assert!(an.features.is_contiguous());
    assert_eq!(bits(&al.features), bits(&an.features), "{what}: features");
    assert_eq!(bits(&al.logits), bits(&an.logits), "{what}: logits");
    assert_eq!(bits(&ll), bits(&ln), "{what}: loss");
    // The input (NCHW, as a loader gives it) gets an NCHW gradient either way.
    let (gn, gl) = (xn.grad().unwrap(), xl.grad().unwrap());
    assert!(gl.is_contiguous());
    assert_eq!(bits(&gl), bits(&gn), "{what}: input gradient");
    // Parameters keep their formats (conv weights OIHW) and get the same gradients.
    let (pn, pl) = (mn.named_parameters(), ml.named_parameters());
    assert_eq!(pn.len(), pl.len());
    for ((name, a), (_, b)) in pn.iter().zip(&pl) {
        assert!(b.is_contiguous(), "{what}: {name} is no longer contiguous");
        let (ga, gb) = (a.grad().unwrap(), b.grad().unwrap());
        assert!(gb.is_contiguous(), "{what}: gradient of {name} has strides {:?}", gb.layout().strides());
        assert_eq!(bits(&gb), bits(&ga), "{what}: gradient of {name}");
    }
}

#[test]
fn channels_last_model_matches_nchw_with_group_norm() {
    let config = ResNetV2Config::named("resnetv2_tiny_bit", 5).unwrap();
    same_in_both_formats(&config, "tiny gn_ws");
}

#[test]
fn channels_last_model_matches_nchw_with_batch_norm() {
    let config = ResNetV2Config::named("resnetv2_tiny_bit", 5).unwrap().with_norm("bn").unwrap();
    same_in_both_formats(&config, "tiny bn");
}

#[test]
fn a_channels_last_input_needs_no_conversion() {
    let mut model = ResNetV2::new(&ResNetV2Config::named("resnetv2_tiny_bit", 5).unwrap(), 3).unwrap();
    let x = input(9);
    let want = model.forward(&x).unwrap();
    // An NCHW model given a channels-last batch still gives the same logits (its ops accept
    // both formats), and a channels-last model takes it without converting it again.
    let xl = x.to_memory_format(MemoryFormat::ChannelsLast).unwrap();
    assert_eq!(bits(&model.forward(&xl).unwrap()), bits(&want));
    model.to_channels_last();
    let f = model.forward_features(&xl).unwrap();
    assert!(f.is_channels_last());
    assert_eq!(bits(&model.forward(&xl).unwrap()), bits(&want));
    // And back.
    model.to_memory_format(MemoryFormat::Contiguous);
    assert!(model.forward_features(&x).unwrap().is_contiguous());
}

/// The same on the emulator (the GPU kernels read NCHW too, behind the same op boundary).
#[test]
fn channels_last_model_on_the_emulator() {
    let config = ResNetV2Config::named("resnetv2_tiny_bit", 5).unwrap();
    let labels = Tensor::from_vec(vec![4i64, 0], [2], Device::Emu).unwrap();
    let run = |channels_last: bool| {
        let mut model = ResNetV2::new_in(&config, 7, DType::F32, Device::Emu).unwrap();
        if channels_last {
            model.to_channels_last();
        }
        let x = input(10).to_device(Device::Emu).unwrap();
        let feats = model.forward_features(&x).unwrap();
        assert_eq!(feats.is_channels_last(), channels_last || feats.dims()[2] * feats.dims()[3] == 1);
        let logits = model.forward(&x).unwrap();
        cross_entropy(&logits, Target::Hard(&labels), 0.0).unwrap().backward().unwrap();
        let grads: Vec<Vec<u64>> = model.parameters().iter().map(|p| bits(&p.grad().unwrap())).collect();
        (bits(&logits), grads)
    };
    let (ln, gn) = run(false);
    let (ll, gl) = run(true);
    assert_eq!(ll, ln, "emu logits");
    for (k, (a, b)) in gl.iter().zip(&gn).enumerate() {
        assert_eq!(a, b, "emu gradient of parameter {k}");
    }
}
