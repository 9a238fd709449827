//! The training loop (BiT's `train.py`, bit-spec §4.4): for each step the HyperRule's lr (stop
//! at the schedule's end), `batch_split` micro-batches from an endless shuffled loader, one SGD
//! update; evaluation every `eval_every` steps and at the end; checkpoints (`last`, `best`),
//! metrics, progress and the chart in the output folder.
//!
//! Order of events per step `s`: check the stop flag / `stop_after` (write `last` and return),
//! run the step (a NaN/Inf loss returns an error before any weight changes, and nothing is
//! written, so the last checkpoint on disk stays the last good one), log, evaluate when due
//! (`best.safetensors` on a new best top-1), then write `last.safetensors` when due.
//!
//! Data-parallel (`TrainConfig::dist` with more than one rank, docs/distributed.md): every rank
//! runs this loop on its shard of each batch; ranks first prove they were given the same run
//! and take rank 0's parameters, gradients are averaged by a [`Reducer`] during the last
//! micro-batch's backward, the loss, the stop flag and the evaluation are reduced over the
//! ranks so every decision is the same everywhere, ranks compare their weights and momentum
//! before each checkpoint, and only rank 0 writes files or prints.

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
use super::eval::{evaluate_on_ranks, EvalResult};
use super::metrics::{EvalRecord, MetricsFile, StepRecord};
use super::progress::Progress;
use super::step::accumulate_step_ddp;
use crate::data::{Batch, Batches, Dataset, Loader, LoaderConfig, MixUp, Order, Shard, Skipped, Transform};
use crate::dist::reducer::write_f32;
use crate::dist::verify::{agree, Hasher};
use crate::dist::{BucketPlan, Collectives, ReduceOp, Reducer, ReducerStats};
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
    /// Ranks the run was spread over, and the gradient all-reduce's measurements (`None` for a
    /// single process).
    pub world_size: usize,
    pub comm: Option<ReducerStats>,
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
        if let Some(c) = &self.comm {
            s += &format!(
                "identical weights and momentum on every rank: checked over the {} ranks before each checkpoint \
                 and at the end\n",
                self.world_size
            );
            s += &format!(
                "data-parallel over {} ranks: {} buckets, {:.2} MiB all-reduced per step, {:.1} ms of all-reduce per \
                 step, {:.0}% of it hidden behind backward, {:.1} ms per step waited for it after backward\n",
                self.world_size,
                c.buckets,
                c.bytes_per_step as f64 / (1 << 20) as f64,
                1e3 * c.comm_seconds / c.steps.max(1) as f64,
                100.0 * c.hidden_fraction(),
                1e3 * c.wait_seconds / c.steps.max(1) as f64
            );
        }
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
        world_size: cfg.dist.world_size(),
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
    model.set_precision(cfg.precision)?;
    let comm = cfg.dist.clone();
    let (rank, world) = (comm.rank(), comm.world_size());
    let lead = rank == 0;
    // The data-parallel path runs for any engine, also over one rank (a one-GPU NCCL check).
    let parallel = comm.backend() != "single";
    if let (Some(_), ModelSource::Resume(path)) = (&resumed, &cfg.model) {
        if state.world_size != world {
            return Err(Error::Config(format!(
                "{} was trained on {} rank(s) and this run has {world}: resume it on {} rank(s) (the loader \
                 position and the per-rank batch belong to that number)",
                path.display(),
                state.world_size,
                state.world_size
            )));
        }
    }
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

    if micro % world != 0 {
        return Err(Error::Config(format!(
            "the micro-batch of {micro} (batch {} / batch-split {split}) does not divide over {world} ranks: make \
             the batch a multiple of {}",
            hyper.batch,
            split * world
        )));
    }
    if parallel {
        let items = start_fingerprints(&state, &model, &sgd, &params, train.as_ref(), val.as_deref())?;
        agree(comm.as_ref(), "at the start", &items)?;
        broadcast_parameters(comm.as_ref(), &params)?;
    }
    let mut reducer = if parallel { Some(Reducer::new(comm.clone(), &params)?) } else { None };

    let workers = match cfg.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        w => w,
    };
    // BiT's train.py samples with replacement when a few-shot set is smaller than a micro-batch.
    let order = if micro > train.len() { Order::WithReplacement { samples: micro } } else { Order::Shuffle };
    // Each rank loads 1/W of every micro-batch: its shard of the (padded) epoch.
    let local = micro / world;
    let lcfg =
        LoaderConfig { batch_size: local, order, drop_last: false, workers, prefetch: 2 * workers, seed: state.seed };
    let loader =
        Loader::new(train, Transform::train(hyper.resolution), lcfg)?.sharded(Shard { rank, world, pad: true })?;
    let eval_batch = if cfg.eval_batch == 0 { local } else { cfg.eval_batch };
    let eval_loader = match val {
        // Evaluation shards are not padded: every example is counted once over the ranks.
        Some(v) if v.len() >= world || world == 1 => {
            let ecfg = LoaderConfig { workers, prefetch: 2 * workers, ..LoaderConfig::eval(eval_batch) };
            Some(Loader::new(v, Transform::eval(hyper.resolution), ecfg)?.sharded(Shard { rank, world, pad: false })?)
        }
        Some(v) => {
            return Err(Error::Config(format!(
                "the validation set has {} examples, fewer than the {world} ranks that share it",
                v.len()
            )))
        }
        None => None,
    };
    let mixup =
        (hyper.mixup_alpha > 0.0).then(|| MixUp { alpha: hyper.mixup_alpha, seed: bits(state.seed, MIXUP_STREAM) });

    // Only rank 0 writes checkpoints, metrics and the chart, and prints.
    let out = if lead { Output::open(cfg.out_dir.as_deref())? } else { None };
    let show = cfg.progress && lead;
    let mut metrics = match &out {
        Some(o) => Some(MetricsFile::append(&o.metrics)?),
        None => None,
    };
    let progress = match parallel {
        true => Progress::plain(show, total),
        false => Progress::new(show, state.step, total),
    };
    let first_step = state.step;
    if let (Some(r), true) = (&reducer, show) {
        let plan = r.plan();
        println!(
            "data-parallel over {world} ranks ({}): {} examples per rank per micro-batch, {} gradient buckets, \
             {:.2} MiB all-reduced per step",
            comm.backend(),
            local,
            plan.buckets.len(),
            plan.bytes() as f64 / (1 << 20) as f64
        );
    }
    if let (Some(_), ModelSource::Resume(path), true) = (&resumed, &cfg.model, show) {
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
        let mut stop = cfg.stop.load(Ordering::Relaxed) || cfg.stop_after.is_some_and(|k| state.step >= k);
        if parallel {
            // A Ctrl-C reaches the ranks at different times: they stop at the same step.
            let mut flag = [stop as u8 as f32];
            comm.all_reduce(&mut flag, ReduceOp::Sum)?;
            stop = flag[0] > 0.0;
        }
        if stop {
            interrupted = true;
            break;
        }
        let t0 = Instant::now();
        let micro_batches = next_batches(&mut batches, split)?;
        let ddp = reducer.as_mut().map(|r| (r, comm.as_ref()));
        let outcome =
            accumulate_step_ddp(&model, &params, &mut sgd, &micro_batches, state.step, lr, mixup.as_ref(), ddp)?;
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
                let result = evaluate_on_ranks(&mut model, ev, comm.as_ref())?;
                note_eval(&result, &mut state, &model, &sgd, &named, &out, &mut metrics, &progress, comm.as_ref())?;
            }
        }
        if cfg.checkpoint_every > 0 && state.step % cfg.checkpoint_every == 0 && !done {
            same_state_on_every_rank(comm.as_ref(), &model, &sgd, &named, state.step)?;
            if let Some(o) = &out {
                save(&o.last, &model, &sgd, &named, &state)?;
                last_written = Some(state.step);
            }
        }
    }
    drop(batches);
    if !interrupted {
        if let Some(ev) = &eval_loader {
            let result = evaluate_on_ranks(&mut model, ev, comm.as_ref())?;
            note_eval(&result, &mut state, &model, &sgd, &named, &out, &mut metrics, &progress, comm.as_ref())?;
            final_eval = Some(result);
        }
    }
    progress.finish();
    let mut chart_path = None;
    same_state_on_every_rank(comm.as_ref(), &model, &sgd, &named, state.step)?;
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
        world_size: world,
        comm: reducer.as_ref().map(Reducer::stats),
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
    comm: &dyn Collectives,
) -> Result<()> {
    let record = EvalRecord { step: state.step, top1: result.top1, top5: result.top5, loss: result.loss };
    if let Some(m) = metrics {
        m.eval(&record)?;
    }
    progress.eval(&record);
    if state.best.is_none_or(|(b, _)| result.top1 > b) {
        state.best = Some((result.top1, state.step));
        same_state_on_every_rank(comm, model, sgd, named, state.step)?;
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

/// What every rank must have been given alike (see `dist::verify`): each run-state value (the
/// HyperRule, seed, step and loader position), the architecture, the training and validation
/// data (size, classes, every label), and the starting weights and momentum.
fn start_fingerprints(
    state: &TrainState,
    model: &ResNetV2,
    sgd: &Sgd,
    params: &[Tensor],
    train: &dyn Dataset,
    val: Option<&dyn Dataset>,
) -> Result<Vec<(String, u64)>> {
    let mut items = Vec::new();
    for (k, v) in super::checkpoint::state_metadata(state) {
        let what = k.trim_start_matches("bitgrad.train.").replace('_', " ");
        items.push((format!("the {what}"), Hasher::default().str(&v).finish()));
    }
    let mut arch = Hasher::default();
    for (k, v) in model.config().to_metadata() {
        arch.str(&k).str(&v);
    }
    items.push(("the architecture".into(), arch.finish()));
    for (what, ds) in [("the training data", Some(train)), ("the validation data", val)] {
        let mut h = Hasher::default();
        if let Some(ds) = ds {
            h.u64(ds.len() as u64);
            ds.classes().iter().for_each(|c| {
                h.str(c);
            });
            for i in 0..ds.len() {
                h.u64(ds.label(i)? as u64);
            }
        }
        items.push((what.into(), h.finish()));
    }
    items.extend(state_fingerprints(model, sgd, params)?);
    Ok(items)
}

/// Hashes of the model's tensors (parameters and buffers) and of the momentum buffers.
fn state_fingerprints(model: &ResNetV2, sgd: &Sgd, params: &[Tensor]) -> Result<Vec<(String, u64)>> {
    let mut weights = Hasher::default();
    for (name, t) in model.state_dict().iter() {
        weights.tensor(name, t)?;
    }
    let mut momentum = Hasher::default();
    for (i, b) in sgd.state(params)?.iter().enumerate() {
        match b {
            Some(b) => momentum.tensor(&i.to_string(), b)?,
            None => momentum.u64(i as u64),
        };
    }
    Ok(vec![("the weights".into(), weights.finish()), ("the momentum buffers".into(), momentum.finish())])
}

/// Before a checkpoint: proves every rank holds rank 0's weights and momentum (so the file rank 0
/// writes is every rank's state), or stops every rank naming what diverged.
fn same_state_on_every_rank(
    comm: &dyn Collectives,
    model: &ResNetV2,
    sgd: &Sgd,
    named: &[(String, Tensor)],
    step: u64,
) -> Result<()> {
    if comm.backend() == "single" {
        return Ok(());
    }
    let params: Vec<Tensor> = named.iter().map(|(_, t)| t.clone()).collect();
    agree(comm, &format!("after step {step}"), &state_fingerprints(model, sgd, &params)?)
}

/// Rank 0's parameters replace every other rank's (DDP's start), bucket by bucket.
fn broadcast_parameters(comm: &dyn Collectives, params: &[Tensor]) -> Result<()> {
    let sizes: Vec<usize> = params.iter().map(Tensor::numel).collect();
    let mut buf = Vec::new();
    for bucket in &BucketPlan::new(&sizes).buckets {
        buf.clear();
        for &i in &bucket.params {
            buf.extend(params[i].to_vec::<f32>()?);
        }
        comm.broadcast(&mut buf, 0)?;
        let mut at = 0;
        for &i in &bucket.params {
            let n = params[i].numel();
            write_f32(&params[i], &buf[at..at + n])?;
            at += n;
        }
    }
    Ok(())
}
