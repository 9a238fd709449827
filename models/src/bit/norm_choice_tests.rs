//! `with_norm`: every spec builds a model whose config survives the metadata round trip and
//! `infer` from the saved state dict (BN files carry running stats, IN needs its metadata);
//! GN group counts that do not fit the widths are clear errors.

use super::*;
use crate::nn::{Module, NormKind};
use crate::Error;

const SPECS: [&str; 12] = ["gn_ws", "gn", "gn4_ws", "gn2", "bn", "bn_ws", "ln", "ln_ws", "in", "in_ws", "ws", "none"];

#[test]
fn every_spec_round_trips_through_metadata_and_infer() {
    let tiny = ResNetV2Config::named("resnetv2_tiny_bit", 3).unwrap();
    for spec in SPECS {
        let cfg = tiny.clone().with_norm(spec).unwrap();
        // Bare GN resolves to the tiny model's 8 groups; the spec of the result says so.
        let want = match spec {
            "gn_ws" => "gn8_ws",
            "gn" => "gn8",
            s => s,
        };
        assert_eq!(crate::norm_spec(&cfg.norm, cfg.ws).as_deref(), Some(want));
        let meta = cfg.to_metadata();
        assert_eq!(meta["bitgrad.norm"], cfg.norm.name(), "{spec}");
        assert_eq!(ResNetV2Config::from_metadata(&meta).unwrap(), Some(cfg.clone()), "{spec}: {meta:?}");
        let mut sd = ResNetV2::new(&cfg, 1).unwrap().state_dict();
        assert_eq!(sd.contains("stages.0.blocks.0.norm1.running_mean"), spec.starts_with("bn"), "{spec}");
        assert_eq!(sd.contains("norm.weight"), !matches!(spec, "ws" | "none"), "{spec}");
        sd.metadata_mut().extend(meta);
        assert_eq!(ResNetV2Config::infer(&sd).unwrap(), cfg, "{spec}");
        assert_eq!(ResNetV2::new(&cfg, 1).unwrap().num_parameters(), cfg.param_count(), "{spec}");
    }
}

#[test]
fn with_norm_sets_the_norm_and_ws() {
    let bit = ResNetV2Config::named("resnetv2_50x1_bit", 10).unwrap();
    assert_eq!(bit.clone().with_norm("gn_ws").unwrap(), bit, "gn_ws is BiT's own choice");
    let c = bit.clone().with_norm("bn").unwrap();
    assert_eq!((c.norm, c.ws), (NormKind::batch(), false));
    let c = bit.clone().with_norm("ws").unwrap();
    assert_eq!((c.norm, c.ws), (NormKind::None, true));
    let c = bit.with_norm("in_ws").unwrap();
    assert_eq!((c.norm, c.ws), (NormKind::instance(), true));
    // Bare GN on the tiny model (stem 16, bottleneck widths from 8): the largest count that fits.
    let tiny = ResNetV2Config::named("resnetv2_tiny_bit", 3).unwrap();
    assert_eq!(tiny.clone().with_norm("gn_ws").unwrap().norm, NormKind::group(8));
}

#[test]
fn group_counts_that_do_not_fit_are_clear_errors() {
    let tiny = ResNetV2Config::named("resnetv2_tiny_bit", 3).unwrap();
    for spec in ["gn32_ws", "gn16", "gn3"] {
        let err = tiny.clone().with_norm(spec).err().unwrap_or_else(|| panic!("{spec} must fail"));
        let msg = err.to_string();
        assert!(matches!(err, Error::Config(_)) && msg.contains(spec) && msg.contains("not divisible"), "{msg}");
    }
    assert!(tiny.clone().with_norm("gn8_ws").is_ok());
    assert!(matches!(tiny.with_norm("batchnorm"), Err(Error::Config(m)) if m.contains("gn_ws")));
}
