//! Which fusions the models use: a switch per fusion, so that each can be compared with the
//! unfused ops it replaces (tests run both; `BITGRAD_FUSE` turns them off for a benchmark).
//!
//! A fusion is an op of its own (`conv2d_add`, `std_conv2d_add`, …) that is always available,
//! or a way an op's kernels work (WS folded into a packing); this switch decides whether model
//! code calls the fused op or the separate ones, or which way the op works. The fused and
//! unfused forms agree to the rounding stated on each fusion.
//!
//! The setting is `BITGRAD_FUSE` (read once: `all`, the default; `none`; or a comma-separated
//! list of the fusions to keep on, by [`Fusion::name`]), overridden on the calling thread by
//! [`with`] — thread-local, because model code runs on the caller's thread and tests that run
//! side by side must not see each other's choice.

use std::cell::Cell;
use std::sync::OnceLock;

/// One fusion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fusion {
    /// A residual unit's sum as the last convolution's initial accumulator (`std_conv2d_add`)
    /// instead of a convolution followed by an add.
    Residual,
    /// Weight standardization folded into the bf16 weight packing of the CPU's bf16
    /// convolutions: the raw weight is standardized as it is rounded, and the backward makes ŵ
    /// again from μ and r instead of keeping it (bit for bit the same results; one f32 copy of
    /// every convolution weight less, from the forward to the backward).
    WsPacking,
    /// The SGD update of a weight-standardized parameter run inside WS's backward, row by row
    /// as each row's gradient is finished (`crate::sgd::in_backward`): no full-size weight
    /// gradient is written, and the weight, its gradient row and its momentum row are touched
    /// once while in cache (bit for bit the same weights and buffers). Where training loops
    /// apply it, the update of a step happens during its last backward.
    WsSgd,
    /// A group norm (+ ReLU) applied as the next convolution copies its input
    /// (`crate::group_norm_conv2d`) instead of written as a tensor of its own: the normalized
    /// activation is neither written nor kept for the backward (bit for bit the same results).
    GnConv,
}

impl Fusion {
    pub const ALL: [Fusion; 4] = [Fusion::Residual, Fusion::WsPacking, Fusion::WsSgd, Fusion::GnConv];

    /// Its name in `BITGRAD_FUSE`.
    pub fn name(self) -> &'static str {
        match self {
            Fusion::Residual => "residual",
            Fusion::WsPacking => "ws-packing",
            Fusion::WsSgd => "ws-sgd",
            Fusion::GnConv => "gn-conv",
        }
    }

    fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// A set of fusions that are on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fusions(u32);

impl Fusions {
    pub const NONE: Fusions = Fusions(0);
    pub const ALL: Fusions = Fusions((1 << Fusion::ALL.len()) - 1);

    pub fn only(f: Fusion) -> Fusions {
        Fusions(f.bit())
    }
    /// This set with `f` off.
    pub fn without(self, f: Fusion) -> Fusions {
        Fusions(self.0 & !f.bit())
    }
    pub fn contains(self, f: Fusion) -> bool {
        self.0 & f.bit() != 0
    }

    /// A `BITGRAD_FUSE` value: `all`, `none`, or names separated by commas.
    pub fn parse(value: &str) -> Result<Fusions, String> {
        let v = value.trim().to_ascii_lowercase();
        match v.as_str() {
            "" | "all" | "1" => return Ok(Fusions::ALL),
            "none" | "0" => return Ok(Fusions::NONE),
            _ => {}
        }
        let mut set = Fusions::NONE;
        for name in v.split(',').map(str::trim) {
            let f = Fusion::ALL.into_iter().find(|f| f.name() == name).ok_or_else(|| {
                let names: Vec<&str> = Fusion::ALL.iter().map(|f| f.name()).collect();
                format!(
                    "BITGRAD_FUSE={value:?}: {name:?} is not a fusion; use all, none, or some of {}",
                    names.join(", ")
                )
            })?;
            set.0 |= f.bit();
        }
        Ok(set)
    }
}

impl std::fmt::Display for Fusions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on: Vec<&str> = Fusion::ALL.iter().filter(|x| self.contains(**x)).map(|x| x.name()).collect();
        if on.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "{}", on.join(", "))
        }
    }
}

/// What `BITGRAD_FUSE` asks for (all when unset), or why its value is not one; read once.
pub fn from_env() -> Result<Fusions, String> {
    static ENV: OnceLock<Result<Fusions, String>> = OnceLock::new();
    ENV.get_or_init(|| match std::env::var("BITGRAD_FUSE") {
        Ok(v) => Fusions::parse(&v),
        Err(_) => Ok(Fusions::ALL),
    })
    .clone()
}

thread_local! {
    static OVERRIDE: Cell<Option<Fusions>> = const { Cell::new(None) };
}

/// The fusions on for this thread: [`with`]'s, else `BITGRAD_FUSE`'s (all, when its value is not
/// valid: the CLI refuses such a value before any work).
pub fn current() -> Fusions {
    OVERRIDE.with(Cell::get).unwrap_or_else(|| from_env().unwrap_or(Fusions::ALL))
}

/// Whether `f` is on for this thread.
pub fn enabled(f: Fusion) -> bool {
    current().contains(f)
}

/// Runs `f` with `set` on for this thread, then restores the previous setting (also when `f`
/// panics).
pub fn with<R>(set: Fusions, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Fusions>);
    impl Drop for Restore {
        fn drop(&mut self) {
            OVERRIDE.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(OVERRIDE.with(|c| c.replace(Some(set))));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_and_bad_ones_are_named() {
        assert_eq!(Fusions::parse("all"), Ok(Fusions::ALL));
        assert_eq!(Fusions::parse(" None "), Ok(Fusions::NONE));
        assert_eq!(Fusions::parse("residual"), Ok(Fusions::only(Fusion::Residual)));
        let e = Fusions::parse("residual,wsx").unwrap_err();
        assert!(e.contains("\"wsx\" is not a fusion") && e.contains("residual"), "{e}");
        assert_eq!(Fusions::NONE.to_string(), "none");
        assert_eq!(Fusions::ALL.to_string(), "residual, ws-packing, ws-sgd, gn-conv");
        assert_eq!(Fusions::parse("gn-conv,ws-sgd,ws-packing,residual"), Ok(Fusions::ALL));
    }

    #[test]
    fn with_sets_this_thread_only_and_restores() {
        let before = current();
        with(Fusions::NONE, || {
            assert!(!enabled(Fusion::Residual));
            let other = std::thread::spawn(current).join().unwrap();
            assert_eq!(other, from_env().unwrap_or(Fusions::ALL), "another thread keeps the default");
            with(Fusions::ALL, || assert!(enabled(Fusion::Residual)));
            assert!(!enabled(Fusion::Residual), "the inner setting is undone");
        });
        assert_eq!(current(), before);
        let _ = std::panic::catch_unwind(|| with(Fusions::NONE, || panic!("inside")));
        assert_eq!(current(), before, "restored after a panic");
    }
}
