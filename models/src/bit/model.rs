//! `ResNetV2`: the BiT model (bit-spec §1.8) —
//! `head(mean_HW(relu(norm(stages(stem(x))))))` — with timm's parameter names and order.

use bitgrad_engine::{DType, Device, MemoryFormat, Tensor};
use bitgrad_ops::pool::global_avg_pool;

use super::block::{PreActBottleneck, Stem};
use super::config::ResNetV2Config;
use crate::error::{Error, Result};
use crate::io::StateDict;
use crate::nn::{join, Head, HeadInit, Init, Module, NormLayer, ParamKind};
use crate::precision::Precision;

/// The head std of timm's `_init_weights`.
const TIMM_HEAD_STD: f64 = 0.01;

pub struct ResNetV2 {
    config: ResNetV2Config,
    dtype: DType,
    device: Device,
    training: bool,
    /// The format activations run in (see [`ResNetV2::to_memory_format`]).
    memory_format: MemoryFormat,
    /// The activations' dtype (see [`ResNetV2::set_precision`]).
    precision: Precision,
    pub stem: Stem,
    /// `stages[i][j]` is timm's `stages.{i}.blocks.{j}`.
    pub stages: Vec<Vec<PreActBottleneck>>,
    /// The final norm + ReLU (timm `norm`).
    pub norm: Box<dyn NormLayer>,
    pub head: Head,
}

/// What [`ResNetV2::forward_with_activations`] returns, for checks against other frameworks.
pub struct Activations {
    /// After the stem's max-pool (timm `stem(x)`).
    pub stem: Tensor,
    /// The output of each stage (timm `stages[i]`), before the final norm.
    pub stages: Vec<Tensor>,
    /// After the final norm + ReLU (timm `forward_features`).
    pub features: Tensor,
    /// Globally pooled features `[N, C]` (timm `forward_head(pre_logits=True)`).
    pub pre_logits: Tensor,
    /// `[N, num_classes]`.
    pub logits: Tensor,
}

impl ResNetV2 {
    /// A freshly initialised model (timm's init: convs kaiming-normal fan-out, norms γ=1 β=0,
    /// head N(0, 0.01) with zero bias) in f32 on the CPU, from `seed`.
    pub fn new(config: &ResNetV2Config, seed: u64) -> Result<Self> {
        ResNetV2::new_in(config, seed, DType::F32, Device::Cpu)
    }

    /// [`ResNetV2::new`] with the parameters' dtype and device.
    pub fn new_in(config: &ResNetV2Config, seed: u64, dtype: DType, device: Device) -> Result<Self> {
        ResNetV2::build(config, &mut Init::random(seed, dtype, device))
    }

    /// The model `sd` holds: the architecture inferred from its names, shapes and metadata
    /// ([`ResNetV2Config::infer`]), loaded strictly, f32 on the CPU. The parameters share `sd`'s
    /// storage when it is already f32 on the CPU (no copy of a multi-GB model).
    pub fn from_state_dict(sd: &StateDict) -> Result<Self> {
        ResNetV2::from_state_dict_in(sd, DType::F32, Device::Cpu)
    }

    /// [`ResNetV2::from_state_dict`] converting to `dtype` on `device`.
    pub fn from_state_dict_in(sd: &StateDict, dtype: DType, device: Device) -> Result<Self> {
        let config = ResNetV2Config::infer(sd)?;
        let mut init = Init::from_state(sd, 0, dtype, device);
        let model = ResNetV2::build(&config, &mut init)?;
        init.finish(true)?;
        Ok(model)
    }

    /// The architecture of `config` built with [`Init::shapes_only`]: every layer and parameter
    /// shape of the real model, no memory behind the tensors (for planning and shape tools;
    /// its forward computes nothing useful).
    pub fn skeleton(config: &ResNetV2Config) -> Result<Self> {
        ResNetV2::build(config, &mut Init::shapes_only(DType::F32))
    }

    fn build(config: &ResNetV2Config, init: &mut Init) -> Result<Self> {
        config.validate()?;
        let stem = Stem::new(init, config)?;
        let mut stages = Vec::with_capacity(4);
        for i in 0..4 {
            let (cout, mid) = (config.channels[i], config.mid_chs(i));
            let mut blocks = Vec::with_capacity(config.layers[i]);
            for j in 0..config.layers[i] {
                let (cin, stride) = if j == 0 { (config.stage_in(i), if i == 0 { 1 } else { 2 }) } else { (cout, 1) };
                let prefix = format!("stages.{i}.blocks.{j}");
                blocks.push(PreActBottleneck::new(init, &prefix, config, cin, mid, cout, stride, j == 0)?);
            }
            stages.push(blocks);
        }
        let norm = config.norm.build(init, "norm", config.channels[3])?;
        let head =
            Head::new(init, "head", config.channels[3], config.num_classes, HeadInit::Normal { std: TIMM_HEAD_STD })?;
        let (dtype, device) = (init.dtype(), init.device());
        Ok(ResNetV2 {
            config: config.clone(),
            dtype,
            device,
            training: true,
            memory_format: MemoryFormat::Contiguous,
            precision: Precision::F32,
            stem,
            stages,
            norm,
            head,
        })
    }

    pub fn config(&self) -> &ResNetV2Config {
        &self.config
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn device(&self) -> Device {
        self.device
    }
    /// Train mode (the default, as in PyTorch) or eval mode; see [`Module::set_training`].
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// The format the activations run in: [`MemoryFormat::Contiguous`] (NCHW, the default) or
    /// [`MemoryFormat::ChannelsLast`] after [`ResNetV2::to_channels_last`].
    pub fn memory_format(&self) -> MemoryFormat {
        self.memory_format
    }

    /// Runs the activations channels-last from now on (PyTorch's
    /// `model.to(memory_format=torch.channels_last)`); see [`ResNetV2::to_memory_format`].
    pub fn to_channels_last(&mut self) {
        self.to_memory_format(MemoryFormat::ChannelsLast);
    }

    /// Makes the forward run its activations in `fmt`: the input batch (any format) is
    /// converted once, before the stem, and every op after it keeps the format (elementwise
    /// ops natively, the NN ops converting at their boundary where a kernel reads NCHW — see
    /// docs/architecture.md). Parameters are not touched: convolution weights stay OIHW,
    /// which is what the CPU kernels read, so nothing is converted per call on their side; the
    /// norm and head parameters are 1-d or 2-d and have no format. The logits and every
    /// gradient are the NCHW model's, bit for bit.
    pub fn to_memory_format(&mut self, fmt: MemoryFormat) {
        self.memory_format = fmt;
    }

    /// The activations' precision: [`Precision::F32`] (the default) or [`Precision::Bf16`].
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Runs the activations in `precision` from now on (crate::precision has the policy). bf16
    /// needs f32 parameters (they are the master weights); the parameters are not touched. On
    /// a GPU device bf16 activations also run channels-last (the tensor-core kernels' layout);
    /// asking for f32 again keeps whatever format was set.
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        if precision == Precision::Bf16 && self.dtype != DType::F32 {
            return Err(Error::Config(format!(
                "bf16 activations need f32 parameters (the master weights); this model's are {}",
                self.dtype
            )));
        }
        self.precision = precision;
        if precision == Precision::Bf16 && self.device.is_gpu() {
            self.to_channels_last();
        }
        Ok(())
    }

    /// The input batch in the model's activation dtype and format (itself for an f32 NCHW
    /// model, so its graph is unchanged).
    fn input(&self, x: &Tensor) -> Result<Tensor> {
        let x = match self.precision {
            Precision::F32 => x.clone(),
            p => x.to_dtype(p.activation_dtype())?,
        };
        Ok(match self.memory_format {
            MemoryFormat::Contiguous => x,
            fmt => x.to_memory_format(fmt)?,
        })
    }

    /// The head's input: the pooled features in the parameters' dtype (f32 after bf16
    /// activations, so the logits and the loss are f32).
    fn pooled(&self, features: &Tensor) -> Result<Tensor> {
        let p = global_avg_pool(features)?;
        Ok(if p.dtype() == self.dtype { p } else { p.to_dtype(self.dtype)? })
    }

    /// Logits `[N, num_classes]` of an NCHW batch in the model's dtype, on its device.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let f = self.forward_features(x)?;
        self.head.forward(&self.pooled(&f)?)
    }

    /// The features after the final norm + ReLU, `[N, C, H/32, W/32]`.
    pub fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.stem.forward(&self.input(x)?)?;
        for block in self.stages.iter().flatten() {
            h = block.forward(&h)?;
        }
        self.norm.forward(&h)
    }

    /// The forward pass keeping the stem output, each stage's output, the features, the pooled
    /// features and the logits (the same numbers as [`ResNetV2::forward`]).
    pub fn forward_with_activations(&self, x: &Tensor) -> Result<Activations> {
        let stem = self.stem.forward(&self.input(x)?)?;
        let mut stages = Vec::with_capacity(4);
        let mut h = stem.clone();
        for stage in &self.stages {
            for block in stage {
                h = block.forward(&h)?;
            }
            stages.push(h.clone());
        }
        let features = self.norm.forward(&h)?;
        let pre_logits = self.pooled(&features)?;
        let logits = self.head.forward(&pre_logits)?;
        Ok(Activations { stem, stages, features, pre_logits, logits })
    }

    /// Parameters (and buffers) under timm's names, in timm's order, detached but sharing
    /// storage with the model.
    pub fn state_dict(&self) -> StateDict {
        Module::state_dict(self)
    }

    /// Replaces the tensors by `sd`'s (converted to the model's dtype and device). Strict:
    /// missing, unexpected and mis-shaped names all reported in one `Error::Keys`; not strict:
    /// only mis-shaped ones. Nothing changes on error. See [`Module::load_tensors`].
    pub fn load_state_dict(&mut self, sd: &StateDict, strict: bool) -> Result<()> {
        let (dtype, device) = (self.dtype, self.device);
        self.load_tensors(sd, strict, dtype, device)
    }

    /// Moves and/or converts every tensor to `dtype` on `device` (gradients are dropped: the
    /// parameters are new leaves).
    pub fn to(&mut self, dtype: DType, device: Device) -> Result<()> {
        if self.precision == Precision::Bf16 && dtype != DType::F32 {
            return Err(Error::Config(format!(
                "the model runs bf16 activations, whose master weights are f32: set_precision(F32) before converting them to {dtype}"
            )));
        }
        let sd = Module::state_dict(self);
        self.load_tensors(&sd, true, dtype, device)?;
        (self.dtype, self.device) = (dtype, device);
        self.set_precision(self.precision)
    }

    /// A new head for `num_classes` classes (fine-tuning): zero weight and bias (BiT) or
    /// N(0, std²) weight and zero bias (timm), drawn from `seed`.
    pub fn replace_head(&mut self, num_classes: usize, how: HeadInit, seed: u64) -> Result<()> {
        let config = ResNetV2Config { num_classes, ..self.config.clone() };
        config.validate()?;
        let mut init = Init::random(seed, self.dtype, self.device);
        self.head = Head::new(&mut init, "head", config.channels[3], num_classes, how)?;
        self.config = config;
        Ok(())
    }
}

impl Module for ResNetV2 {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, ParamKind)) {
        self.stem.visit(&join(prefix, "stem"), f);
        for (i, stage) in self.stages.iter().enumerate() {
            for (j, block) in stage.iter().enumerate() {
                block.visit(&join(prefix, &format!("stages.{i}.blocks.{j}")), f);
            }
        }
        self.norm.visit(&join(prefix, "norm"), f);
        self.head.visit(&join(prefix, "head"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, ParamKind)) {
        self.stem.visit_mut(&join(prefix, "stem"), f);
        for (i, stage) in self.stages.iter_mut().enumerate() {
            for (j, block) in stage.iter_mut().enumerate() {
                block.visit_mut(&join(prefix, &format!("stages.{i}.blocks.{j}")), f);
            }
        }
        self.norm.visit_mut(&join(prefix, "norm"), f);
        self.head.visit_mut(&join(prefix, "head"), f);
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
        for block in self.stages.iter_mut().flatten() {
            block.set_training(training);
        }
        self.norm.set_training(training);
    }
}
