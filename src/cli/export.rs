//! `bitgrad export RUN/best.safetensors model.safetensors`: a training checkpoint (or any weight
//! file) as a model file for other frameworks — the model's tensors only, under timm's names and
//! in timm's order, BatchNorm's `num_batches_tracked` counters added as PyTorch writes them, the
//! class names and the config in the metadata. timm's strict `load_state_dict` takes the result
//! (`timm.create_model(arch, num_classes=K)`); `--to npz` writes Google's BiT layout instead.

use std::path::PathBuf;

use bitgrad::models::io::{self, LoadOptions, StateDict, CLASSES_KEY, NUM_BATCHES_TRACKED};
use bitgrad::models::{Error, ResNetV2Config, Result};

use super::common::{describe, parse_dtype};
use super::weights::WeightsSource;

#[derive(clap::Args)]
pub struct Args {
    /// A training checkpoint (last/best.safetensors), a weight file or a weight name.
    input: WeightsSource,
    /// The model file to write.
    output: PathBuf,
    /// safetensors: timm's names and OIHW layout; npz: BiT's names and HWIO layout (GN+WS models
    /// only, no metadata). Default: from the output's extension, else safetensors.
    #[arg(long, value_parser = ["safetensors", "npz"])]
    to: Option<String>,
    /// Convert float tensors to this dtype (f32, f16, bf16, f64).
    #[arg(long, value_parser = parse_dtype)]
    dtype: Option<bitgrad::DType>,
}

/// The value of PyTorch's counter for an exported BatchNorm: the input file's own counter when it
/// has one, else the training forward passes of a bitgrad run (steps × micro-batches per step),
/// else 0 (weights that never ran a training forward here).
pub(super) fn batches_tracked(sd: &StateDict) -> i64 {
    let carried = sd.iter().find(|(n, _)| n.ends_with(NUM_BATCHES_TRACKED)).and_then(|(_, t)| t.to_vec::<i64>().ok());
    if let Some(v) = carried.and_then(|v| v.first().copied()) {
        return v;
    }
    let meta = sd.metadata();
    let num = |k: &str| meta.get(k).and_then(|v| v.trim().parse::<i64>().ok());
    match (num("bitgrad.train.step"), num("bitgrad.train.batch_split")) {
        (Some(steps), Some(split)) => steps.saturating_mul(split),
        _ => 0,
    }
}

pub fn run(args: Args) -> Result<()> {
    let input = args.input.resolve()?;
    if input == args.output {
        return Err(Error::Msg("the output must be a different file from the input".into()));
    }
    let npz = match args.to.as_deref() {
        Some(to) => to == "npz",
        None => args.output.extension().is_some_and(|e| e.eq_ignore_ascii_case("npz")),
    };
    let mut opts = LoadOptions::new();
    if let Some(d) = args.dtype {
        opts = opts.dtype(d);
    }
    let full = io::load_weights(&input, &opts)?;
    let count = batches_tracked(&full);
    let model = io::model_only(full).map_err(|e| Error::Msg(format!("{}: {e}", input.display())))?;
    let config = ResNetV2Config::infer(&model)?;
    let classes = io::class_names(&model, config.num_classes);
    // Only the model's own description goes out: a run's state (`bitgrad.train.*`) stays behind.
    let mut out = StateDict::new();
    for (name, t) in model.iter() {
        out.insert(name, t.clone());
    }
    let meta = out.metadata_mut();
    meta.extend(config.to_metadata());
    if let Some(names) = &classes {
        meta.insert(CLASSES_KEY.into(), names.join("\n"));
    }
    if npz {
        io::save_npz(&args.output, &io::timm_to_npz(&out)?)?;
    } else {
        io::save_safetensors(&args.output, &io::add_num_batches_tracked(out, count)?)?;
    }
    println!(
        "{} → {} ({}): {} parameters, {}, {}",
        input.display(),
        args.output.display(),
        if npz { "BiT .npz" } else { "timm safetensors" },
        model.numel(),
        config.name().map_or_else(|| describe(&config), |n| format!("{n} with {} classes", config.num_classes)),
        match (&classes, npz) {
            (Some(c), false) => format!("{} class names in the metadata", c.len()),
            (Some(_), true) => "class names not kept (.npz has no metadata)".into(),
            (None, _) => "no class names".into(),
        }
    );
    Ok(())
}
