//! Weight I/O: timm safetensors and the original BiT `.npz`, both read into a [`StateDict`]
//! under timm's names in OIHW layout.
//!
//! [`load_weights`] recognises the format from the file's first bytes (a zip is a `.npz`, else
//! safetensors), [`save_weights`] picks it from the extension; together they are `bitgrad
//! convert`. The per-format modules are public for callers that want one format or raw `.npz`
//! keys. Every loader validates before it allocates and returns errors, never panics, on
//! corrupt or truncated files; every writer is atomic (temp file, fsync, rename).

mod atomic;
pub mod bit_npz;
mod bytes;
mod model_only;
pub mod npy;
pub mod npz;
mod options;
pub mod safetensors;
mod state_dict;

use std::fs::File;
use std::io::Read;
use std::path::Path;

pub use bit_npz::{npz_to_timm, timm_to_npz};
pub use model_only::{
    add_num_batches_tracked, class_names, model_only, CLASSES_KEY, NUM_BATCHES_TRACKED, OPTIM_PREFIX, TRAIN_CLASSES_KEY,
};
pub use npz::{load as load_npz, save as save_npz};
pub use options::LoadOptions;
pub use safetensors::{load as load_safetensors, save as save_safetensors};
pub use state_dict::StateDict;

use crate::{Error, Result};

/// The first bytes of a zip archive: a local file header, or the end record of an empty one.
const ZIP_MAGICS: [&[u8; 4]; 2] = [b"PK\x03\x04", b"PK\x05\x06"];

/// Loads BiT weights from a safetensors file or an original `.npz` (told apart by content, not
/// by extension), under timm's names and layout. For a `.npz` the raw arrays are read on the
/// CPU, renamed and transposed, then converted/moved per `opts` one tensor at a time.
pub fn load_weights(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<StateDict> {
    let path = path.as_ref();
    opts.check()?;
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut head = Vec::with_capacity(9);
    f.by_ref().take(9).read_to_end(&mut head).map_err(|e| Error::io(path, e))?;
    if len == 0 {
        return Err(Error::format(path, "weights", "the file is empty"));
    }
    if ZIP_MAGICS.iter().any(|m| head.starts_with(&m[..])) {
        let raw = npz::from_reader(f, len, path, &LoadOptions::default())?;
        let mut timm = npz_to_timm(raw)?;
        let mut out = StateDict::new();
        *out.metadata_mut() = timm.metadata().clone();
        // Taking tensors out one by one frees each CPU copy as soon as it is converted/moved.
        let names: Vec<String> = timm.names().map(str::to_string).collect();
        for name in names {
            let t = timm.remove(&name).expect("name just listed");
            out.insert(name, opts.apply(t)?);
        }
        return Ok(out);
    }
    // A safetensors header is a JSON object right after the 8-byte length.
    if head.len() == 9 && head[8] == b'{' {
        return safetensors::from_reader(f, len, path, opts);
    }
    Err(Error::format(
        path,
        "weights",
        format!(
            "{len} bytes that are neither safetensors (an 8-byte length, then a JSON header) nor a .npz (a zip archive){}",
            if len < 9 { ": too short for either" } else { "" }
        ),
    ))
}

/// [`load_weights`] keeping only the model's tensors: a training checkpoint's optimizer state
/// and PyTorch's `num_batches_tracked` counters are dropped ([`model_only`]), so any of our
/// checkpoints or a PyTorch BatchNorm state dict loads as a model.
pub fn load_model_weights(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<StateDict> {
    let path = path.as_ref();
    model_only(load_weights(path, opts)?).map_err(|e| Error::Msg(format!("{}: {e}", path.display())))
}

/// Saves timm-named weights: `.safetensors` as they are, `.npz` in the original BiT names and
/// HWIO layout (so `convert a.npz b.safetensors` and back gives the original keys).
pub fn save_weights(path: impl AsRef<Path>, sd: &StateDict) -> Result<()> {
    let path = path.as_ref();
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("safetensors") => save_safetensors(path, sd),
        Some("npz") => save_npz(path, &timm_to_npz(sd)?),
        _ => Err(Error::Msg(format!(
            "{}: cannot tell the weight format from the extension: use .safetensors or .npz",
            path.display()
        ))),
    }
}
