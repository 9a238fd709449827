//! BiT ResNet-v2: the configuration ([`ResNetV2Config`], the six BiT variants and small CPU
//! configs, analytic parameter counts, metadata, inference from a state dict) and the model
//! ([`ResNetV2`]: stem, pre-activation bottleneck units, final norm, pool, head). See docs/bit.md.

mod block;
mod config;
mod infer;
mod metadata;
mod model;

pub use block::{PreActBottleneck, Stem};
pub use config::{make_divisible, ResNetV2Config, BIT_NAMES};
pub use model::{Activations, ResNetV2};

#[cfg(test)]
mod norm_choice_tests;
#[cfg(test)]
mod tests;
