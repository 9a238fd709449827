//! Pieces the model subcommands share: loading a model from a weight file or name (with an
//! optional `--arch` assertion, and the class names the file carries), writing named tensors to
//! a safetensors file, reading a tensor batch.

use std::path::Path;

use bitgrad::models::io::{self, LoadOptions};
use bitgrad::models::{Error, ResNetV2, ResNetV2Config, Result, StateDict};
use bitgrad::{DType, Device, Tensor};

use super::weights::WeightsSource;

/// `--weights` and `--arch`, shared by every subcommand that loads a model.
#[derive(clap::Args, Clone, Debug)]
pub struct WeightArgs {
    /// Weight file (timm's safetensors or a BiT .npz, recognised by content), a BiT release name
    /// (BiT-M-R50x1) or hf-hub:timm/NAME — names are downloaded once into a cache.
    #[arg(long, short = 'w')]
    pub weights: WeightsSource,
    /// Assert the architecture (e.g. resnetv2_50x1_bit); it is always inferred from the file.
    #[arg(long)]
    pub arch: Option<String>,
}

/// Reads the weights (the model's tensors only: a training checkpoint works too), infers the
/// architecture (checking `--arch`), and builds the model on `device` in f32.
pub fn load_model(args: &WeightArgs, device: Device) -> Result<ResNetV2> {
    load_model_and_classes(args, device).map(|(m, _)| m)
}

/// [`load_model`] and the class names the file carries (an export's or a checkpoint's).
pub fn load_model_and_classes(args: &WeightArgs, device: Device) -> Result<(ResNetV2, Option<Vec<String>>)> {
    device.check_available()?;
    let path = args.weights.resolve()?;
    let sd = io::load_model_weights(&path, &LoadOptions::new())?;
    let config = ResNetV2Config::infer(&sd)?;
    check_arch(&config, args.arch.as_deref(), &path)?;
    check_implied_arch(&config, &args.weights, &path)?;
    let classes = io::class_names(&sd, config.num_classes);
    Ok((ResNetV2::from_state_dict_in(&sd, DType::F32, device)?, classes))
}

/// A float dtype by name (`--dtype`).
pub fn parse_dtype(s: &str) -> std::result::Result<DType, String> {
    match s {
        "f32" => Ok(DType::F32),
        "f64" => Ok(DType::F64),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        _ => Err(format!("`{s}` is not a float dtype (f32, f16, bf16, f64)")),
    }
}

/// `--arch` is an assertion: the file's architecture must be the named one (any head size).
pub fn check_arch(config: &ResNetV2Config, arch: Option<&str>, path: &Path) -> Result<()> {
    let Some(want) = arch else { return Ok(()) };
    // Validate the name itself first, so a typo is reported as such.
    ResNetV2Config::named(want, config.num_classes)?;
    match config.name() {
        Some(have) if have == want => Ok(()),
        have => Err(Error::Config(format!(
            "--arch {want}, but {} holds {}",
            path.display(),
            have.map_or_else(|| describe(config), str::to_string)
        ))),
    }
}

/// A `hf-hub:timm/<arch>.<tag>` name promises timm's architecture `<arch>`: the file must hold it.
pub fn check_implied_arch(config: &ResNetV2Config, source: &WeightsSource, path: &Path) -> Result<()> {
    let Some(arch) = source.implied_arch() else { return Ok(()) };
    check_arch(config, Some(&arch), path)
        .map_err(|e| Error::Config(format!("{} names timm's architecture {arch}: {e}", source.0)))
}

/// A one-line description of an architecture that has no name.
pub fn describe(c: &ResNetV2Config) -> String {
    format!(
        "a ResNetV2 with layers {:?}, stem {}, widths {:?}, {} classes, norm {}, WS {}",
        c.layers,
        c.stem_chs,
        c.channels,
        c.num_classes,
        c.norm.name(),
        if c.ws { "on" } else { "off" }
    )
}

/// Writes named tensors (copied to the CPU by the writer) to a safetensors file (whatever the
/// extension), atomically.
pub fn save_tensors(path: &Path, tensors: Vec<(String, Tensor)>, meta: &[(&str, String)]) -> Result<()> {
    let mut sd: StateDict = tensors.into_iter().collect();
    for (k, v) in meta {
        sd.metadata_mut().insert((*k).to_string(), v.clone());
    }
    io::safetensors::save(path, &sd)
}

/// Reads a tensor batch file: the float tensor "input" (NCHW, already normalised) converted to
/// f32 on `device`, and the i64 "labels" when present.
pub fn read_batch(path: &Path, device: Device) -> Result<(Tensor, Option<Tensor>)> {
    let mut sd = io::safetensors::load(path, &LoadOptions::new())?;
    let Some(input) = sd.remove("input") else {
        return Err(Error::Msg(format!(
            "{}: no tensor named \"input\" (found: {}); store the batch as input [N, 3, H, W]",
            path.display(),
            sd.names().collect::<Vec<_>>().join(", ")
        )));
    };
    if input.rank() != 4 || !input.dtype().is_float() {
        return Err(Error::Msg(format!(
            "{}: \"input\" must be a float NCHW tensor, got {:?} {}",
            path.display(),
            input.dtype(),
            input.shape()
        )));
    }
    let input = input.to_dtype(DType::F32)?.to_device(device)?;
    let labels = sd.remove("labels");
    Ok((input, labels))
}
