//! `Init`: where a model's tensors come from when it is built — a seeded random initialisation
//! (timm's), or a state dict. Building straight from a state dict (instead of building at random
//! and copying over) means a 936M-parameter model is never held twice in memory.

use std::collections::HashSet;

use bitgrad_engine::{DType, Device, Rng, Tensor};

use crate::error::{Error, Result, ShapeProblem};
use crate::io::StateDict;
use crate::nn::module::{adopt, ParamKind};

/// How a tensor is filled when it is initialised at random.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fill {
    Zeros,
    Ones,
    /// N(0, std²).
    Normal {
        std: f64,
    },
    /// Kaiming-normal, mode `fan_out`, gain √2 (ReLU): N(0, 2 / (O·kh·kw)) for an OIHW weight —
    /// timm's `_init_weights` for every conv of ResNetV2 except the head.
    KaimingFanOut,
}

/// The source of a model's tensors while it is built. Layers ask it for each tensor by full
/// name, shape and random fill; problems with a state dict are collected, not returned at
/// once, so [`Init::finish`] can list them all together.
pub struct Init<'a> {
    dtype: DType,
    device: Device,
    rng: Rng,
    state: Option<&'a StateDict>,
    missing: Vec<String>,
    mismatched: Vec<ShapeProblem>,
    used: HashSet<String>,
    /// Shapes only: every tensor is one zero broadcast to its shape (no memory behind it).
    shapes_only: bool,
}

impl<'a> Init<'a> {
    /// Random tensors from `seed`, of `dtype` on `device`.
    pub fn random(seed: u64, dtype: DType, device: Device) -> Self {
        Init {
            dtype,
            device,
            rng: Rng::new(seed),
            state: None,
            missing: vec![],
            mismatched: vec![],
            used: HashSet::new(),
            shapes_only: false,
        }
    }

    /// Tensors of the right shapes with no memory behind them (one zero broadcast to each
    /// shape): for walking an architecture's layers — their shapes and strides — without
    /// allocating or drawing a 936M-parameter model (`bitgrad bench gpu --plan`). Such a model
    /// computes nothing useful.
    pub fn shapes_only(dtype: DType) -> Self {
        Init { shapes_only: true, ..Init::random(0, dtype, Device::Cpu) }
    }

    /// Tensors taken from `sd` (converted to `dtype`/`device`, no copy when they already fit);
    /// a missing or mis-shaped name is recorded and filled at random from `seed` instead.
    pub fn from_state(sd: &'a StateDict, seed: u64, dtype: DType, device: Device) -> Self {
        Init { state: Some(sd), ..Init::random(seed, dtype, device) }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn device(&self) -> Device {
        self.device
    }

    /// The tensor called `name` with shape `dims`: from the state dict, or filled by `fill`.
    pub fn tensor(&mut self, name: &str, dims: &[usize], fill: Fill, kind: ParamKind) -> Result<Tensor> {
        if let Some(sd) = self.state {
            match sd.get(name) {
                Some(t) if t.dims() == dims => {
                    self.used.insert(name.to_string());
                    return adopt(t, kind, self.dtype, self.device);
                }
                Some(t) => {
                    self.used.insert(name.to_string());
                    self.mismatched.push(ShapeProblem {
                        name: name.into(),
                        expected: dims.into(),
                        found: t.dims().into(),
                    });
                }
                None => self.missing.push(name.to_string()),
            }
        }
        self.draw(dims, fill, kind)
    }

    fn draw(&mut self, dims: &[usize], fill: Fill, kind: ParamKind) -> Result<Tensor> {
        let (dtype, device) = (self.dtype, self.device);
        if self.shapes_only {
            return Ok(Tensor::scalar(0.0, dtype, device)?.broadcast_to(dims.to_vec())?);
        }
        let t = match fill {
            Fill::Zeros => Tensor::zeros(dims.to_vec(), dtype, device)?,
            Fill::Ones => Tensor::ones(dims.to_vec(), dtype, device)?,
            Fill::Normal { std } => Tensor::randn(dims.to_vec(), 0.0, std, dtype, device, &mut self.rng)?,
            Fill::KaimingFanOut => {
                let fan_out: usize = dims.first().copied().unwrap_or(1) * dims.iter().skip(2).product::<usize>();
                let std = (2.0 / fan_out.max(1) as f64).sqrt();
                Tensor::randn(dims.to_vec(), 0.0, std, dtype, device, &mut self.rng)?
            }
        };
        Ok(t.requires_grad_(kind == ParamKind::Parameter))
    }

    /// Ends a build from a state dict: strict — missing, unexpected and mis-shaped names are all
    /// reported in one [`Error::Keys`]; not strict — only mis-shaped names are an error.
    pub fn finish(self, strict: bool) -> Result<()> {
        let Some(sd) = self.state else { return Ok(()) };
        let unexpected: Vec<String> =
            if strict { sd.names().filter(|n| !self.used.contains(*n)).map(String::from).collect() } else { vec![] };
        let missing = if strict { self.missing } else { vec![] };
        if missing.is_empty() && unexpected.is_empty() && self.mismatched.is_empty() {
            return Ok(());
        }
        Err(Error::Keys { missing, unexpected, mismatched: self.mismatched })
    }
}
