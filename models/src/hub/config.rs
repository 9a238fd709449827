//! Where downloads come from and go to, read once from the environment so that a test (or a
//! program) can also build one by hand:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `XDG_CACHE_HOME` | the BiT `.npz` cache is `$XDG_CACHE_HOME/bitgrad/bit_models/` | `~/.cache` |
//! | `HF_HOME` | the hub cache is `$HF_HOME/hub` (huggingface_hub's layout, shared with timm) | `$XDG_CACHE_HOME/huggingface` |
//! | `HF_HUB_CACHE` | the hub cache itself (wins over `HF_HOME`) | |
//! | `HF_ENDPOINT` | the hub's address | `https://huggingface.co` |
//! | `HF_TOKEN` | sent as `Authorization: Bearer` to the hub (gated or private repositories) | |
//! | `HF_HUB_OFFLINE` | `1`/`true`/`yes`/`on`: no network for any download; cached files only | off |
//! | `BITGRAD_BIT_URL` | where the BiT files are | `https://storage.googleapis.com/bit_models` |

use std::path::PathBuf;

/// The download settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// bitgrad's own cache (BiT `.npz` files go to `bit_models/` inside).
    pub cache_dir: PathBuf,
    /// The hub cache (`models--org--name/…`).
    pub hub_cache: PathBuf,
    pub hub_endpoint: String,
    pub bit_base_url: String,
    pub token: Option<String>,
    pub offline: bool,
}

pub const DEFAULT_HUB_ENDPOINT: &str = "https://huggingface.co";
pub const DEFAULT_BIT_URL: &str = "https://storage.googleapis.com/bit_models";

impl HubConfig {
    /// The settings from the environment (see the module docs).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let home = var("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        let xdg = var("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".cache"));
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| xdg.join("huggingface"));
        let hub_cache = var("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| hf_home.join("hub"));
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| is_true(&v));
        HubConfig {
            cache_dir: xdg.join("bitgrad"),
            hub_cache,
            hub_endpoint: var("HF_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_HUB_ENDPOINT.into())
                .trim_end_matches('/')
                .into(),
            bit_base_url: var("BITGRAD_BIT_URL").unwrap_or_else(|| DEFAULT_BIT_URL.into()).trim_end_matches('/').into(),
            token: var("HF_TOKEN"),
            offline,
        }
    }
}

/// huggingface_hub's truthy values.
fn is_true(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}
