//! The training loop (BiT's `train.py`, bit-spec §4.4): for each step the HyperRule's lr (stop
//! at the schedule's end), `batch_split` micro-batches from an endless shuffled loader, one SGD
//! update; evaluation every `eval_every` steps and at the end; checkpoints (`last`, `best`),
//! metrics, progress and the chart in the output folder.
//!
//! Order of events per step `s`: check the stop flag / `stop_after` (write `last` and return),
//! run the step (a NaN/Inf loss returns an error before any weight changes, and nothing is
//! written, so the last checkpoint on disk stays the last good one), log, evaluate when due
//! (`best.safetensors` on a new best top-1), then write `last.safetensors` when due.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bitgrad_engine::rng::bits;
use bitgrad_engine::{DType, Tensor};
use bitgrad_ops::sgd::Sgd;

use super::chart;
use super::checkpoint::{Checkpoint, TrainState, MOMENTUM_PREFIX};
use super::config::{ModelSource, TrainConfig};
use super::eval::{evaluate, EvalResult};
use super::metrics::{EvalRecord, MetricsFile, StepRecord};
use super::progress::Progress;
use super::step::accumulate_step;
use crate::data::{Batch, Batches, Dataset, Loader, LoaderConfig, MixUp, Order, Skipped, Transform};
use crate::nn::ParamKind;
use crate::{Error, HeadInit, Module, ResNetV2, Result};

/// Keys MixUp's draws apart from the loader's (both are derived from the run's seed).
const MIXUP_STREAM: u64 = 0x004d_6978_5570;

/// What a run did.
pub struct Summary {
    /// The trained model (on the run's device).
    pub model: ResNetV2,
    /// Optimiser steps done in total (including those before a resume).
    pub steps: u64,
    /// The schedule's total.
    pub total_steps: u64,
    /// Steps done by this call.
    pub steps_this_run: u64,
    /// The last step's loss.
    pub last_loss: Option<f64>,
    /// The evaluation at the end (absent without a validation set or when interrupted).
    pub final_eval: Option<EvalResult>,
    /// The best validation top-1 and its step.
    pub best: Option<(f64, u64)>,
    /// Training throughput of this call (evaluation time excluded).
    pub images_per_second: f64,
    pub seconds: f64,
    /// Images left out (unreadable files), train and validation.
    pub skipped: Vec<Skipped>,
    /// True when the stop flag or `stop_after` ended the run before the schedule's end.
    pub interrupted: bool,
    pub last_checkpoint: Option<PathBuf>,
    pub best_checkpoint: Option<PathBuf>,
    pub chart: Option<PathBuf>,
}

impl Summary {
    /// A short human summary (the per-class table included when there was a final evaluation).
    pub fn report(&self) -> String {
        let mut s = format!(
            "{} {}/{} steps in {:.1} s ({:.1} img/s)",
            if self.interrupted { "stopped after" } else { "trained" },
            self.steps,
            self.total_steps,
            self.seconds,
            self.images_per_second
        );
        if let Some(l) = self.last_loss {
            s += &format!(", last loss {l:.4}");
        }
        s.push('\n');
        if let Some(e) = &self.final_eval {
            s += &format!(
                "validation ({} images): top-1 {:.2}%, top-5 {:.2}%, loss {:.4}\n",
                e.examples,
                100.0 * e.top1,
                100.0 * e.top5,
                e.loss
            );
            s += &e.class_table();
        }
        if let Some((acc, step)) = self.best {
            s += &format!("best top-1 {:.2}% after step {step}\n", 100.0 * acc);
        }
        s += &format!("skipped images: {}\n", self.skipped.len());
        for k in self.skipped.iter().take(20) {
            s += &format!("  {}: {}\n", k.item, k.reason);
        }
        for (what, p) in [
            ("last checkpoint", &self.last_checkpoint),
            ("best checkpoint", &self.best_checkpoint),
            ("chart", &self.chart),
        ] {
            if let Some(p) = p {
                s += &format!("{what}: {}\n", p.display());
            }
        }
        s
    }
}

/// The model, the run state and the momentum buffers (a resume) a run starts from.
fn start(cfg: &TrainConfig, classes: &[String]) -> Result<(ResNetV2, TrainState, Option<Checkpoint>)> {
    let n = classes.len();
    let fresh = |hyper| TrainState {
        step: 0,
        position: Default::default(),
        seed: cfg.seed,
        hyper,
        classes: classes.to_vec(),
        best: None,
    };
    match &cfg.model {
        ModelSource::Pretrained(sd) => {
            // A training checkpoint works as weights: its optimizer entries are left out.
            let mut weights = sd.clone();
            let optim: Vec<String> = sd.names().filter(|n| n.starts_with(MOMENTUM_PREFIX)).map(String::from).collect();
            for name in optim {
                weights.remove(&name);
            }
            let mut model = ResNetV2::from_state_dict_in(&weights, DType::F32, cfg.device)?;
            model.replace_head(n, HeadInit::Zero, cfg.seed)?;
            // Building shares storage with `weights` when no conversion was needed, and SGD
            // updates in place: train on copies, so the caller's weights stay as they were
            // (the demonstration starts many runs from one state dict).
            own_parameters(&mut model)?;
            Ok((model, fresh(cfg.hyper.clone()), None))
        }
        ModelSource::Scratch { config, zero_head } => {
            let config = crate::ResNetV2Config { num_classes: n, ..config.clone() };
            let mut model = ResNetV2::new_in(&config, cfg.seed, DType::F32, cfg.device)?;
            if *zero_head {
                model.replace_head(n, HeadInit::Zero, cfg.seed)?;
            }
            Ok((model, fresh(cfg.hyper.clone()), None))
        }
        ModelSource::Resume(path) => {
            let ck = Checkpoint::load(path)?;
            if ck.state.classes != classes {
                return Err(Error::Config(format!(
                    "the checkpoint {} was trained on classes [{}], the dataset has [{}]",
                    path.display(),
                    ck.state.classes.join(", "),
                    classes.join(", ")
                )));
            }
            // The config is the checkpoint's own (exact, unlike inference from shapes, which
            // cannot always tell the bottleneck ratio of narrow custom models).
            let mut model = ResNetV2::new_in(&ck.config, 0, DType::F32, cfg.device)?;
            model.load_state_dict(&ck.model, true)?;
            let state = ck.state.clone();
            Ok((model, state, Some(ck)))
        }
    }
}

/// Runs training on `train`, evaluating on `val` when given. See the module docs.
pub fn train(cfg: &TrainConfig, train: Arc<dyn Dataset>, val: Option<Arc<dyn Dataset>>) -> Result<Summary> {
    let t_start = Instant::now();
    let classes = train.classes().to_vec();
    if classes.len() < 2 {
        return Err(Error::Config(format!("training needs at least two classes, the dataset has {}", classes.len())));
    }
    if let Some(v) = &val {
        if v.classes() != classes.as_slice() {
            return Err(Error::Config("the validation set's classes differ from the training set's".into()));
        }
    }
    let (mut model, mut state, resumed) = start(cfg, &classes)?;
    let hyper = state.hyper.clone();
    let micro = hyper.micro_batch()?;
    let split = hyper.batch_split;
    let total = hyper.schedule.total_steps();
    model.set_training(true);
    let named = model.named_parameters();
    let params: Vec<Tensor> = named.iter().map(|(_, t)| t.clone()).collect();
    let mut sgd = Sgd::new(0.0, hyper.momentum, hyper.weight_decay, false)?;
    if let Some(ck) = &resumed {
        if let Some(extra) = ck.momentum.keys().find(|k| !named.iter().any(|(n, _)| n == *k)) {
            return Err(Error::Config(format!("the checkpoint has a momentum buffer for unknown parameter {extra}")));
        }
        let buffers: Vec<Option<Tensor>> = named.iter().map(|(n, _)| ck.momentum.get(n).cloned()).collect();
        sgd.load_state(&params, &buffers)?;
    }

    let workers = match cfg.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        w => w,
    };
    // BiT's train.py samples with replacement when a few-shot set is smaller than a micro-batch.
    let order = if micro > train.len() { Order::WithReplacement { samples: micro } } else { Order::Shuffle };
    let lcfg =
        LoaderConfig { batch_size: micro, order, drop_last: false, workers, prefetch: 2 * workers, seed: state.seed };
    let loader = Loader::new(train, Transform::train(hyper.resolution), lcfg)?;
    let eval_batch = if cfg.eval_batch == 0 { micro } else { cfg.eval_batch };
    let eval_loader = match val {
        Some(v) => {
            let ecfg = LoaderConfig { workers, prefetch: 2 * workers, ..LoaderConfig::eval(eval_batch) };
            Some(Loader::new(v, Transform::eval(hyper.resolution), ecfg)?)
        }
        None => None,
    };
    let mixup =
        (hyper.mixup_alpha > 0.0).then(|| MixUp { alpha: hyper.mixup_alpha, seed: bits(state.seed, MIXUP_STREAM) });

    let out = Output::open(cfg.out_dir.as_deref())?;
    let mut metrics = match &out {
        Some(o) => Some(MetricsFile::append(&o.metrics)?),
        None => None,
    };
    let progress = Progress::new(cfg.progress, state.step, total);
    let first_step = state.step;
    if let (Some(_), ModelSource::Resume(path), true) = (&resumed, &cfg.model, cfg.progress) {
        println!(
            "resuming {} at step {} (epoch {}, batch {}) with its HyperRule and seed {}",
            path.display(),
            state.step,
            state.position.epoch,
            state.position.batch,
            state.seed
        );
    }
    let (mut images, mut train_seconds, mut last_loss) = (0usize, 0.0f64, None);
    let mut last_written: Option<u64> = None;
    let mut final_eval = None;
    let mut interrupted = false;
    let mut batches = loader.iter(state.position, None)?;

    while let Some(lr) = hyper.lr(state.step) {
        if cfg.stop.load(Ordering::Relaxed) || cfg.stop_after.is_some_and(|k| state.step >= k) {
            interrupted = true;
            break;
        }
        let t0 = Instant::now();
        let micro_batches = next_batches(&mut batches, split)?;
        let outcome = accumulate_step(&model, &params, &mut sgd, &micro_batches, state.step, lr, mixup.as_ref())?;
        if !outcome.applied {
            progress.finish();
            let kept = match (&out, last_written) {
                (Some(o), Some(step)) => {
                    format!("the last good checkpoint {} (after step {step}) was kept", o.last.display())
                }
                (Some(o), None) if o.last.exists() => format!("{} was left as it was", o.last.display()),
                _ => "no checkpoint had been written".into(),
            };
            return Err(Error::Msg(format!(
                "training stopped at step {}: the loss is {} (lr {lr:e}); the weights before this step are unchanged and {kept}",
                state.step, outcome.loss
            )));
        }
        let dt = t0.elapsed().as_secs_f64();
        let record = StepRecord {
            step: state.step,
            lr,
            loss: outcome.loss,
            images_per_second: outcome.images as f64 / dt.max(1e-9),
            epoch: micro_batches[0].position.epoch,
        };
        (images, train_seconds, last_loss) = (images + outcome.images, train_seconds + dt, Some(outcome.loss));
        state.step += 1;
        state.position = batches.position();
        if let Some(m) = &mut metrics {
            m.step(&record)?;
        }
        progress.step(&record, total);

        let done = hyper.lr(state.step).is_none();
        if let Some(ev) = &eval_loader {
            if cfg.eval_every > 0 && state.step % cfg.eval_every == 0 && !done {
                let result = evaluate(&mut model, ev)?;
                note_eval(&result, &mut state, &model, &sgd, &named, &out, &mut metrics, &progress)?;
            }
        }
        if cfg.checkpoint_every > 0 && state.step % cfg.checkpoint_every == 0 && !done {
            if let Some(o) = &out {
                save(&o.last, &model, &sgd, &named, &state)?;
                last_written = Some(state.step);
            }
        }
    }
    drop(batches);
    if !interrupted {
        if let Some(ev) = &eval_loader {
            let result = evaluate(&mut model, ev)?;
            note_eval(&result, &mut state, &model, &sgd, &named, &out, &mut metrics, &progress)?;
            final_eval = Some(result);
        }
    }
    progress.finish();
    let mut chart_path = None;
    if let Some(o) = &out {
        save(&o.last, &model, &sgd, &named, &state)?;
        if !interrupted {
            let (losses, accs) = read_metrics(&o.metrics)?;
            chart::draw(&o.chart, &losses, &accs)?;
            chart_path = Some(o.chart.clone());
        }
    }
    let mut skipped = loader.skipped();
    if let Some(ev) = &eval_loader {
        skipped.extend(ev.skipped());
    }
    Ok(Summary {
        steps: state.step,
        total_steps: total,
        steps_this_run: state.step - first_step,
        last_loss,
        final_eval,
        best: state.best,
        images_per_second: images as f64 / train_seconds.max(1e-9),
        seconds: t_start.elapsed().as_secs_f64(),
        skipped,
        interrupted,
        last_checkpoint: out.as_ref().map(|o| o.last.clone()),
        best_checkpoint: out.as_ref().map(|o| o.best.clone()).filter(|p| p.exists()),
        chart: chart_path,
        model,
    })
}

/// The output folder's files.
struct Output {
    last: PathBuf,
    best: PathBuf,
    metrics: PathBuf,
    chart: PathBuf,
}

impl Output {
    fn open(dir: Option<&Path>) -> Result<Option<Output>> {
        let Some(dir) = dir else { return Ok(None) };
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(Some(Output {
            last: dir.join("last.safetensors"),
            best: dir.join("best.safetensors"),
            metrics: dir.join("metrics.jsonl"),
            chart: dir.join("chart.png"),
        }))
    }
}

fn next_batches(batches: &mut Batches, n: usize) -> Result<Vec<Batch>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        match batches.next() {
            Some(b) => out.push(b?),
            None => return Err(Error::Msg("the training loader ended unexpectedly".into())),
        }
    }
    Ok(out)
}

fn save(path: &Path, model: &ResNetV2, sgd: &Sgd, named: &[(String, Tensor)], state: &TrainState) -> Result<()> {
    let params: Vec<Tensor> = named.iter().map(|(_, t)| t.clone()).collect();
    let buffers = sgd.state(&params)?;
    let momentum: Vec<(String, Tensor)> =
        named.iter().zip(buffers).filter_map(|((n, _), b)| b.map(|b| (n.clone(), b))).collect();
    Checkpoint::save(path, &model.state_dict(), model.config(), &momentum, state)
}

#[allow(clippy::too_many_arguments)]
fn note_eval(
    result: &EvalResult,
    state: &mut TrainState,
    model: &ResNetV2,
    sgd: &Sgd,
    named: &[(String, Tensor)],
    out: &Option<Output>,
    metrics: &mut Option<MetricsFile>,
    progress: &Progress,
) -> Result<()> {
    let record = EvalRecord { step: state.step, top1: result.top1, top5: result.top5, loss: result.loss };
    if let Some(m) = metrics {
        m.eval(&record)?;
    }
    progress.eval(&record);
    if state.best.is_none_or(|(b, _)| result.top1 > b) {
        state.best = Some((result.top1, state.step));
        if let Some(o) = out {
            save(&o.best, model, sgd, named, state)?;
        }
    }
    Ok(())
}

/// (step, value) points for the chart.
type Series = Vec<(u64, f64)>;

/// The (step, loss) and (step, top-1) series of a metrics file (all runs appended to it).
fn read_metrics(path: &Path) -> Result<(Series, Series)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let (mut losses, mut accs) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let step = v["step"].as_u64().unwrap_or(0);
        match v["kind"].as_str() {
            // A step record's step is the index of the step, done when it is logged: plot at +1.
            Some("step") => losses.push((step + 1, v["loss"].as_f64().unwrap_or(f64::NAN))),
            Some("eval") => accs.push((step, v["top1"].as_f64().unwrap_or(0.0))),
            _ => {}
        }
    }
    Ok((losses, accs))
}

/// Gives every tensor of `model` that shares its storage with another handle a copy of its own.
fn own_parameters(model: &mut ResNetV2) -> Result<()> {
    let mut result = Ok(());
    model.visit_mut("", &mut |_, t, kind| {
        if result.is_ok() && t.storage_refcount() > 1 {
            match t.detach().copy() {
                Ok(c) => *t = c.requires_grad_(kind == ParamKind::Parameter),
                Err(e) => result = Err(e),
            }
        }
    });
    Ok(result?)
}
