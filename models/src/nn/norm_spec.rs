//! Normalization choices as one short, parseable spec — what `--norm`, the study runner and
//! [`ResNetV2Config::with_norm`](crate::ResNetV2Config::with_norm) take:
//!
//! | spec | norm | WS |
//! |---|---|---|
//! | `gn_ws` | GroupNorm, 32 groups (BiT's default) | yes |
//! | `gn` | GroupNorm, 32 groups | no |
//! | `gnK_ws`, `gnK` (e.g. `gn8_ws`) | GroupNorm, K groups | yes / no |
//! | `bn_ws`, `bn` | BatchNorm (momentum 0.1, running stats) | yes / no |
//! | `ln_ws`, `ln` | LayerNorm over (C, H, W) = GroupNorm, 1 group | yes / no |
//! | `in_ws`, `in` | InstanceNorm = GroupNorm, C groups | yes / no |
//! | `ws` | none (ReLU only) | yes |
//! | `none` | none (ReLU only) | no |
//!
//! All ε are 1e-5. [`norm_spec`] is the inverse (for labels and messages).

use super::NormKind;
use crate::error::{Error, Result};
use bitgrad_ops::group_norm::BIT_GROUPS;

/// Every spec form, for help texts and error messages.
pub const NORM_SPECS: &str = "gn_ws, gn, gnK_ws, gnK (K groups), bn_ws, bn, ln_ws, ln, in_ws, in, ws, none";

/// The norm and whether weight standardization is on, for a spec of the module's table
/// (case-insensitive, surrounding spaces ignored).
pub fn parse_norm(spec: &str) -> Result<(NormKind, bool)> {
    let s = spec.trim().to_ascii_lowercase();
    let bad = |why: &str| Error::Config(format!("unknown normalization {spec:?}{why}; choose one of: {NORM_SPECS}"));
    if s == "ws" {
        return Ok((NormKind::None, true));
    }
    let (base, ws) = match s.strip_suffix("_ws") {
        Some(b) => (b, true),
        None => (s.as_str(), false),
    };
    let norm = match base {
        "gn" => NormKind::bit_group_norm(),
        "bn" => NormKind::batch(),
        "ln" => NormKind::layer(),
        "in" => NormKind::instance(),
        "none" if !ws => NormKind::None,
        _ => match base.strip_prefix("gn").map(str::parse::<usize>) {
            Some(Ok(0)) => return Err(bad(" (GroupNorm needs at least one group)")),
            Some(Ok(k)) => NormKind::group(k),
            _ => return Err(bad("")),
        },
    };
    Ok((norm, ws))
}

/// The spec of a built-in norm with WS on or off: `gn_ws` for 32 groups, `gn8` for 8 without
/// WS, …; `None` for a custom norm (it has no spec).
pub fn norm_spec(norm: &NormKind, ws: bool) -> Option<String> {
    let base = match norm {
        NormKind::Group { groups, .. } if *groups == BIT_GROUPS => "gn".to_string(),
        NormKind::Group { groups, .. } => format!("gn{groups}"),
        NormKind::Batch { .. } => "bn".into(),
        NormKind::Layer { .. } => "ln".into(),
        NormKind::Instance { .. } => "in".into(),
        NormKind::None => return Some(if ws { "ws" } else { "none" }.into()),
        NormKind::Custom(_) => return None,
    };
    Some(if ws { format!("{base}_ws") } else { base })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_parses_and_round_trips() {
        let cases = [
            ("gn_ws", NormKind::group(32), true),
            ("gn", NormKind::group(32), false),
            ("gn8_ws", NormKind::group(8), true),
            ("GN4", NormKind::group(4), false),
            ("bn", NormKind::batch(), false),
            ("bn_ws", NormKind::batch(), true),
            ("ln", NormKind::layer(), false),
            ("ln_ws", NormKind::layer(), true),
            ("in", NormKind::instance(), false),
            (" in_ws ", NormKind::instance(), true),
            ("ws", NormKind::None, true),
            ("none", NormKind::None, false),
        ];
        for (spec, norm, ws) in cases {
            let (n, w) = parse_norm(spec).unwrap();
            assert_eq!((&n, w), (&norm, ws), "{spec}");
            let back = norm_spec(&n, w).unwrap();
            assert_eq!(back, spec.trim().to_ascii_lowercase(), "{spec}");
        }
        assert_eq!(NormKind::instance().name(), "instance_norm");
    }

    #[test]
    fn bad_specs_are_errors_naming_the_choices() {
        for spec in ["", "gn0", "gnx", "bn_ws_ws", "none_ws", "batch", "gn-8", "in8"] {
            let err = parse_norm(spec).err().unwrap_or_else(|| panic!("{spec:?} must fail")).to_string();
            assert!(err.contains("gn_ws") && err.contains(&format!("{spec:?}")), "{err}");
        }
    }
}
