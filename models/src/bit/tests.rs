//! Config tests: the analytic parameter counts against bit-spec's table, names, metadata round
//! trips, validation, and `infer` on state dicts of freshly built models.

use super::*;
use crate::nn::{Module, NormKind};
use crate::Error;

/// bit-spec §1.1: (name, params with a 1000-class head, with a 21843-class head).
const SPEC_COUNTS: [(&str, usize, usize); 6] = [
    ("resnetv2_50x1_bit", 25_549_352, 68_256_659),
    ("resnetv2_50x3_bit", 217_319_080, 345_399_315),
    ("resnetv2_101x1_bit", 44_541_480, 87_248_787),
    ("resnetv2_101x3_bit", 387_934_888, 516_015_123),
    ("resnetv2_152x2_bit", 236_335_208, 321_728_979),
    ("resnetv2_152x4_bit", 936_533_224, 1_107_299_923),
];

#[test]
fn param_counts_equal_bit_spec() {
    for (name, n1000, n21843) in SPEC_COUNTS {
        assert_eq!(ResNetV2Config::named(name, 1000).unwrap().param_count(), n1000, "{name}, 1000 classes");
        assert_eq!(ResNetV2Config::named(name, 21843).unwrap().param_count(), n21843, "{name}, 21843 classes");
    }
}

#[test]
fn param_count_equals_built_model() {
    for cfg in [
        ResNetV2Config::named("resnetv2_tiny_bit", 10).unwrap(),
        ResNetV2Config { norm: NormKind::batch(), ..ResNetV2Config::named("resnetv2_tiny_bit", 3).unwrap() },
        ResNetV2Config { norm: NormKind::None, ..ResNetV2Config::named("resnetv2_small_bit", 5).unwrap() },
    ] {
        let model = ResNetV2::new(&cfg, 1).unwrap();
        assert_eq!(model.num_parameters(), cfg.param_count(), "{cfg:?}");
    }
}

#[test]
fn names_round_trip() {
    for name in BIT_NAMES.iter().chain(&["resnetv2_tiny_bit", "resnetv2_small_bit"]) {
        let cfg = ResNetV2Config::named(name, 21843).unwrap();
        assert_eq!(cfg.name(), Some(*name));
        assert_eq!(cfg.clone().with_bit_ws_eps().name(), Some(*name), "ε does not change the architecture");
        let other = ResNetV2Config { layers: [3, 4, 5, 3], ..cfg.clone() };
        assert_eq!(other.name(), None);
        assert_eq!(ResNetV2Config { norm: NormKind::batch(), ..cfg }.name(), None);
    }
    assert!(matches!(ResNetV2Config::named("resnetv2_50x2_bit", 10), Err(Error::Config(_))));
    assert!(matches!(ResNetV2Config::named("resnet50", 10), Err(Error::Config(_))));
}

#[test]
fn bit_channel_rule() {
    let c = ResNetV2Config::named("resnetv2_152x4_bit", 1000).unwrap();
    assert_eq!((c.stem_chs, c.channels, c.layers), (256, [1024, 2048, 4096, 8192], [3, 8, 36, 3]));
    assert_eq!((0..4).map(|i| c.mid_chs(i)).collect::<Vec<_>>(), [256, 512, 1024, 2048]);
    assert_eq!(c.ws_eps, 1e-8);
    assert_eq!(c.with_bit_ws_eps().ws_eps, 1e-10);
}

#[test]
fn make_divisible_is_timms() {
    // timm: make_divisible(v, 8) = max(8, int(v + 4) // 8 * 8), + 8 when below 0.9·v.
    for (v, want) in [
        (64.0, 64),
        (3.0, 8),
        (12.0, 16),
        (11.9, 16),
        (20.0, 24),
        (19.9, 24),
        (8.8, 8),
        (17.0, 16),
        (100.0, 104),
        (36.0, 40),
    ] {
        assert_eq!(make_divisible(v), want, "make_divisible({v})");
    }
}

#[test]
fn metadata_round_trip() {
    let configs = [
        ResNetV2Config::named("resnetv2_101x3_bit", 21843).unwrap().with_bit_ws_eps(),
        ResNetV2Config { norm: NormKind::batch(), ws: false, ..ResNetV2Config::named("resnetv2_tiny_bit", 4).unwrap() },
        ResNetV2Config {
            norm: NormKind::layer(),
            in_chans: 1,
            ..ResNetV2Config::named("resnetv2_small_bit", 2).unwrap()
        },
        ResNetV2Config {
            norm: NormKind::None,
            bottle_ratio: 0.5,
            ..ResNetV2Config::named("resnetv2_tiny_bit", 4).unwrap()
        },
    ];
    for cfg in configs {
        let meta = cfg.to_metadata();
        assert_eq!(ResNetV2Config::from_metadata(&meta).unwrap(), Some(cfg.clone()), "{meta:?}");
    }
    assert_eq!(ResNetV2Config::from_metadata(&Default::default()).unwrap(), None);
    let mut meta = ResNetV2Config::named("resnetv2_50x1_bit", 10).unwrap().to_metadata();
    meta.insert("bitgrad.layers".into(), "3,4,6".into());
    assert!(matches!(ResNetV2Config::from_metadata(&meta), Err(Error::Config(m)) if m.contains("bitgrad.layers")));
    meta.insert("bitgrad.layers".into(), "3,4,6,x".into());
    assert!(matches!(ResNetV2Config::from_metadata(&meta), Err(Error::Config(_))));
}

#[test]
fn validation_errors() {
    let base = ResNetV2Config::named("resnetv2_tiny_bit", 10).unwrap();
    let bad = [
        ResNetV2Config { layers: [1, 0, 1, 1], ..base.clone() },
        ResNetV2Config { num_classes: 0, ..base.clone() },
        ResNetV2Config { norm: NormKind::group(32), ..base.clone() }, // mid width 8
        ResNetV2Config { norm: NormKind::group(0), ..base.clone() },
        ResNetV2Config { bottle_ratio: f64::NAN, ..base.clone() },
        ResNetV2Config { ws_eps: -1.0, ..base.clone() },
    ];
    for cfg in bad {
        assert!(matches!(cfg.validate(), Err(Error::Config(_))), "{cfg:?}");
        assert!(matches!(ResNetV2::new(&cfg, 0), Err(Error::Config(_))), "{cfg:?}");
    }
    base.validate().unwrap();
}

#[test]
fn infer_recovers_configs() {
    let tiny = ResNetV2Config::named("resnetv2_tiny_bit", 10).unwrap();
    let cases = [
        tiny.clone(),
        ResNetV2Config { layers: [2, 1, 3, 1], num_classes: 3, in_chans: 1, ..tiny.clone() },
        ResNetV2Config { norm: NormKind::batch(), ..tiny.clone() },
        ResNetV2Config { norm: NormKind::None, ..tiny.clone() },
        ResNetV2Config { norm: NormKind::layer(), ..tiny.clone() },
        ResNetV2Config { ws: false, ..tiny.clone() },
    ];
    for cfg in cases {
        let mut sd = ResNetV2::new(&cfg, 3).unwrap().state_dict();
        // What shapes cannot tell comes from the metadata hints.
        sd.metadata_mut().extend(cfg.to_metadata().into_iter().filter(|(k, _)| {
            k.starts_with("bitgrad.norm") || k.starts_with("bitgrad.bn") || k.starts_with("bitgrad.ws")
        }));
        assert_eq!(ResNetV2Config::infer(&sd).unwrap(), cfg);
    }
    // A BiT-sized GN model needs no metadata at all (GN 32, WS ε 1e-8: timm's files).
    let wide = ResNetV2Config {
        layers: [1, 2, 1, 1],
        stem_chs: 64,
        channels: [128, 256, 256, 256],
        ..ResNetV2Config::bit(50, 1, 6).unwrap()
    };
    let sd = ResNetV2::new(&wide, 0).unwrap().state_dict();
    assert!(sd.metadata().is_empty());
    assert_eq!(ResNetV2Config::infer(&sd).unwrap(), wide);
    // GN groups of a small model cannot be guessed.
    let sd = ResNetV2::new(&tiny, 0).unwrap().state_dict();
    assert!(matches!(ResNetV2Config::infer(&sd), Err(Error::Config(m)) if m.contains("groups")));
    // A full config in the metadata must agree with the shapes.
    let mut sd = ResNetV2::new(&tiny, 0).unwrap().state_dict();
    sd.metadata_mut().extend(ResNetV2Config { num_classes: 11, ..tiny.clone() }.to_metadata());
    assert!(matches!(ResNetV2Config::infer(&sd), Err(Error::Config(m)) if m.contains("disagrees")));
    // Not a ResNetV2 at all.
    assert!(matches!(ResNetV2Config::infer(&crate::StateDict::new()), Err(Error::Config(_))));
}

#[test]
fn skeleton_has_the_real_architecture_without_memory() {
    // Every BiT variant, even R152x4 (936M parameters), builds instantly: shapes only.
    for name in BIT_NAMES {
        let cfg = ResNetV2Config::named(name, 1000).unwrap();
        let model = ResNetV2::skeleton(&cfg).unwrap();
        assert_eq!(model.num_parameters(), cfg.param_count(), "{name}");
        let units: usize = model.stages.iter().map(Vec::len).sum();
        assert_eq!(units, cfg.layers.iter().sum::<usize>(), "{name}");
    }
    let cfg = ResNetV2Config::named("resnetv2_50x1_bit", 1000).unwrap();
    let m = ResNetV2::skeleton(&cfg).unwrap();
    assert_eq!(m.stem.conv.weight.dims(), &[64, 3, 7, 7]);
    assert_eq!(m.stem.conv.params.stride, [2, 2]);
    let b = &m.stages[1][0];
    assert_eq!(b.conv2.weight.dims(), &[128, 128, 3, 3]);
    assert_eq!(b.conv2.params.stride, [2, 2]);
    assert_eq!(b.downsample.as_ref().unwrap().weight.dims(), &[512, 256, 1, 1]);
    // A skeleton tensor is one broadcast zero: no storage per element.
    assert!(m.stages[3][2].conv2.weight.layout().strides().iter().all(|&s| s == 0));
}

#[test]
fn stem_pool_output_size() {
    // 224 px: conv 7×7/2 → 112, zero pad 1 → 114, VALID 3×3/2 → 56.
    assert_eq!(Stem::pool_output_hw(112, 112), Some((56, 56)));
    assert_eq!(Stem::pool_output_hw(16, 15), Some((8, 8)));
    assert_eq!(Stem::pool_output_hw(1, 1), Some((1, 1)));
}
