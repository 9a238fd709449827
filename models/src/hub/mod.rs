//! Weights by name: `--weights BiT-M-R50x1` (Google's `.npz` from the `bit_models` bucket) or
//! `--weights hf-hub:timm/resnetv2_50x1_bit.goog_in21k` (the hub repository's
//! `model.safetensors`), downloaded once into a cache and found there afterwards.
//!
//! `names` knows the names, `config` reads the environment (`HF_HOME`, `HF_ENDPOINT`,
//! `HF_HUB_OFFLINE`, `HF_TOKEN`, `XDG_CACHE_HOME`), `download` moves the bytes (resume,
//! progress, size and SHA-256 checks, atomic placement), `hf` keeps the hub's cache layout and
//! `bit` bitgrad's. A small client of our own rather than the `hf-hub` crate: see
//! docs/architecture.md ("Downloads").

mod bit;
mod config;
mod download;
mod hf;
mod names;

use std::path::PathBuf;

pub use config::{HubConfig, DEFAULT_BIT_URL, DEFAULT_HUB_ENDPOINT};
pub use download::sha256_file;
pub use names::{timm_arch, BitRelease, WeightSpec, BIT_RELEASES, HUB_FILE};

use crate::Result;

/// The local file a `--weights` value names: the path itself, or the cached download of a
/// name (fetched now when not cached), with the settings of the environment.
pub fn resolve(spec: &str) -> Result<PathBuf> {
    resolve_with(&HubConfig::from_env(), spec)
}

/// [`resolve`] with explicit settings.
pub fn resolve_with(cfg: &HubConfig, spec: &str) -> Result<PathBuf> {
    match WeightSpec::parse(spec)? {
        WeightSpec::File(p) => Ok(p),
        WeightSpec::Bit(r) => bit::get(cfg, &r),
        WeightSpec::Hub { repo, revision } => hf::get(cfg, &repo, &revision, HUB_FILE),
    }
}

/// Where a name's file is in the cache, if it is there (no network).
pub fn cached(cfg: &HubConfig, spec: &WeightSpec) -> Option<PathBuf> {
    match spec {
        WeightSpec::File(p) => p.is_file().then(|| p.clone()),
        WeightSpec::Bit(r) => Some(bit::cache_path(cfg, r)).filter(|p| p.is_file()),
        WeightSpec::Hub { repo, revision } => hf::cached(cfg, repo, revision, HUB_FILE),
    }
}

/// The URL a name is fetched from (`None` for files).
pub fn url(cfg: &HubConfig, spec: &WeightSpec) -> Option<String> {
    match spec {
        WeightSpec::File(_) => None,
        WeightSpec::Bit(r) => Some(bit::url(cfg, r)),
        WeightSpec::Hub { repo, revision } => Some(hf::file_url(cfg, repo, revision, HUB_FILE)),
    }
}
