//! A multi-threaded, deterministic batch loader.
//!
//! Batch `k` of a run (counted from the start position) is built by worker `k mod W` and sent on
//! that worker's bounded channel; the consumer receives from the channels in turn, so batches
//! come out in order, at most `prefetch` are decoded ahead of the model, and no batch's content
//! depends on which worker made it or when: an epoch's order is a seeded shuffle of that epoch
//! alone, and each example's random crop/flip is keyed by (seed, epoch, position in the epoch).
//! A run can start at any [`Position`] (epoch, batch), which is what a resumed training run needs.
//! Dropping the iterator stops the workers (they notice a closed channel or the stop flag) and
//! joins them.
//!
//! A data-parallel run gives each rank a [`Shard`] of every epoch, as PyTorch's
//! `DistributedSampler` does: the epoch's order (the same on every rank) is padded by repeating
//! its head to a multiple of the world size (training) or left as it is (evaluation), and rank
//! `r` takes the positions `r, r + W, r + 2W, …`. Each example's crop/flip stays keyed by its
//! position in the whole epoch, so W ranks with batches of b see exactly the examples and
//! augmentations of one process with batches of W·b.
//!
//! Examples whose image fails to decode are left out of their batch and reported by
//! [`Loader::skipped`]; a batch whose every example failed is skipped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use bitgrad_engine::rng::bits;
use bitgrad_engine::{Device, Rng, Tensor};

use super::dataset::{shuffle, Dataset, Skipped};
use super::transform::Transform;
use crate::{Error, Result};

/// The order of examples within an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Dataset order (evaluation).
    Sequential,
    /// A seeded permutation per epoch (training).
    Shuffle,
    /// `samples` draws with replacement per epoch — PyTorch's `RandomSampler(replacement=True)`,
    /// which BiT's `train.py` uses when the micro-batch exceeds a few-shot training set.
    WithReplacement { samples: usize },
}

/// Loader settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub order: Order,
    /// Drop an epoch's last, short batch.
    pub drop_last: bool,
    /// Worker threads decoding and transforming.
    pub workers: usize,
    /// Batches prepared ahead of the consumer (at least one per worker).
    pub prefetch: usize,
    pub seed: u64,
}

impl LoaderConfig {
    /// Training defaults: shuffled, short last batch kept (as BiT's `train.py`), workers = the
    /// available cores, two batches per worker ahead.
    pub fn train(batch_size: usize, seed: u64) -> Self {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        LoaderConfig { batch_size, order: Order::Shuffle, drop_last: false, workers, prefetch: 2 * workers, seed }
    }
    /// Evaluation: dataset order, every example.
    pub fn eval(batch_size: usize) -> Self {
        LoaderConfig { order: Order::Sequential, ..LoaderConfig::train(batch_size, 0) }
    }
}

/// Where a run is: the epoch and the index of the next batch within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Position {
    pub epoch: u64,
    pub batch: usize,
}

/// A batch: NCHW f32 in [−1, 1] on the CPU, labels, the dataset indices, and where it sits.
#[derive(Debug)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Vec<i64>,
    pub indices: Vec<usize>,
    pub position: Position,
}

/// One rank's share of every epoch (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
    /// Pad the epoch to a multiple of `world` by repeating its head (every rank gets the same
    /// number of examples; training), or not (evaluation: every example exactly once).
    pub pad: bool,
}

/// Builds batches of a dataset (see the module docs).
#[derive(Clone)]
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    transform: Transform,
    cfg: LoaderConfig,
    shard: Option<Shard>,
    skipped: Arc<Mutex<BTreeMap<usize, Skipped>>>,
}

impl Loader {
    pub fn new(dataset: Arc<dyn Dataset>, transform: Transform, cfg: LoaderConfig) -> Result<Self> {
        if cfg.batch_size == 0 || cfg.workers == 0 {
            return Err(Error::Config("the batch size and the worker count must be positive".into()));
        }
        if dataset.is_empty() {
            return Err(Error::Msg("the dataset has no examples".into()));
        }
        Loader { dataset, transform, cfg, shard: None, skipped: Arc::default() }.checked()
    }

    /// This loader restricted to `shard` of every epoch.
    pub fn sharded(mut self, shard: Shard) -> Result<Self> {
        if shard.world == 0 || shard.rank >= shard.world {
            return Err(Error::Config(format!("rank {} in a world of {}", shard.rank, shard.world)));
        }
        self.shard = (shard.world > 1).then_some(shard);
        self.checked()
    }

    pub fn shard(&self) -> Option<Shard> {
        self.shard
    }

    fn checked(self) -> Result<Self> {
        if self.epoch_len() == 0 {
            return Err(Error::Config(format!(
                "an epoch of {} examples leaves none to rank {} of {}",
                self.full_epoch_len(),
                self.shard.map_or(0, |s| s.rank),
                self.shard.map_or(1, |s| s.world)
            )));
        }
        if self.batches_per_epoch() == 0 {
            return Err(Error::Config(format!(
                "drop_last with a batch of {} leaves no batch of an epoch of {} examples",
                self.cfg.batch_size,
                self.epoch_len()
            )));
        }
        Ok(self)
    }

    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }
    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Examples per epoch of all ranks together (the dataset size, or the with-replacement
    /// sample count).
    pub fn full_epoch_len(&self) -> usize {
        match self.cfg.order {
            Order::WithReplacement { samples } => samples,
            _ => self.dataset.len(),
        }
    }

    /// Examples per epoch of this loader (its shard's).
    pub fn epoch_len(&self) -> usize {
        let n = self.full_epoch_len();
        match self.shard {
            None => n,
            Some(Shard { world, pad: true, .. }) => n.div_ceil(world),
            Some(Shard { rank, world, pad: false }) => (n + world - 1 - rank) / world,
        }
    }

    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.epoch_len(), self.cfg.batch_size);
        if self.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The dataset indices of epoch `epoch`, in order (this shard's).
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order = epoch_order(self.dataset.len(), self.cfg.order, self.cfg.seed, epoch);
        let Some(Shard { rank, world, pad }) = self.shard else { return order };
        if pad {
            // DistributedSampler: repeat the head (as often as needed) up to a multiple of W.
            let target = order.len().div_ceil(world) * world;
            let mut i = 0;
            while order.len() < target {
                order.push(order[i]);
                i += 1;
            }
        }
        order.into_iter().skip(rank).step_by(world).collect()
    }

    /// The position in the whole epoch of this shard's `k`-th example: what keys its random
    /// crop and flip, so that they do not depend on the number of ranks.
    fn global_position(&self, k: usize) -> u64 {
        match self.shard {
            Some(s) => (s.rank + k * s.world) as u64,
            None => k as u64,
        }
    }

    /// The position `batches` batches after `pos`.
    pub fn advance(&self, pos: Position, batches: u64) -> Position {
        let bpe = self.batches_per_epoch() as u64;
        let flat = pos.batch as u64 + batches;
        Position { epoch: pos.epoch + flat / bpe, batch: (flat % bpe) as usize }
    }

    /// Examples found unusable: the dataset's own report plus decoding failures seen so far.
    pub fn skipped(&self) -> Vec<Skipped> {
        let mut out = self.dataset.skipped();
        out.extend(self.skipped.lock().map(|m| m.values().cloned().collect::<Vec<_>>()).unwrap_or_default());
        out
    }

    /// Batches from `start` on, endlessly (epoch after epoch), or until `end` (exclusive).
    pub fn iter(&self, start: Position, end: Option<Position>) -> Result<Batches> {
        if start.batch >= self.batches_per_epoch() {
            return Err(Error::Msg(format!(
                "batch {} is past the end of an epoch of {} batches",
                start.batch,
                self.batches_per_epoch()
            )));
        }
        let workers = self.cfg.workers;
        let depth = self.cfg.prefetch.div_ceil(workers).max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel(depth);
            let job =
                Worker { loader: self.clone(), start, first: w as u64, stride: workers as u64, stop: stop.clone() };
            let handle = std::thread::Builder::new()
                .name(format!("bitgrad-loader-{w}"))
                .spawn(move || job.run(tx))
                .map_err(|e| Error::Msg(format!("cannot start a loader thread: {e}")))?;
            receivers.push(rx);
            handles.push(handle);
        }
        Ok(Batches { loader: self.clone(), receivers, handles, stop, next: 0, start, end })
    }

    /// One epoch, from its first batch.
    pub fn epoch(&self, epoch: u64) -> Result<Batches> {
        self.iter(Position { epoch, batch: 0 }, Some(Position { epoch: epoch + 1, batch: 0 }))
    }

    /// Builds the batch at `pos` on this thread; `Ok(None)` if every example failed to decode.
    pub fn build(&self, pos: Position, order: &[usize]) -> Result<Option<Batch>> {
        let b = self.cfg.batch_size;
        let lo = pos.batch * b;
        let hi = (lo + b).min(order.len());
        let size = self.transform.output_size() as usize;
        let per = 3 * size * size;
        let mut data = vec![0.0f32; (hi - lo) * per];
        let (mut labels, mut indices) = (Vec::new(), Vec::new());
        for (k, &i) in order.iter().enumerate().take(hi).skip(lo) {
            let img = match self.dataset.load(i) {
                Ok(img) => img,
                Err(e) => {
                    let item = self.dataset.describe(i);
                    if let Ok(mut m) = self.skipped.lock() {
                        m.entry(i).or_insert(Skipped { item, reason: e.to_string() });
                    }
                    continue;
                }
            };
            let n = labels.len();
            // The random crop/flip is keyed by the position in the epoch, unique even when
            // sampling with replacement repeats an example.
            let key = self.global_position(k);
            self.transform.apply_into(&img, self.cfg.seed, pos.epoch, key, &mut data[n * per..(n + 1) * per])?;
            labels.push(self.dataset.label(i)? as i64);
            indices.push(i);
        }
        if labels.is_empty() {
            return Ok(None);
        }
        data.truncate(labels.len() * per);
        let images = Tensor::from_vec(data, [labels.len(), 3, size, size], Device::Cpu)?;
        Ok(Some(Batch { images, labels, indices, position: pos }))
    }
}

/// Epoch `epoch`'s indices: a pure function of (n, order, seed, epoch).
fn epoch_order(n: usize, order: Order, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = Rng::new(bits(seed, epoch));
    match order {
        Order::Sequential => (0..n).collect(),
        Order::Shuffle => {
            let mut v: Vec<usize> = (0..n).collect();
            shuffle(&mut v, &mut rng);
            v
        }
        Order::WithReplacement { samples } => (0..samples).map(|_| rng.below(n as u64) as usize).collect(),
    }
}

type Item = Result<Option<Batch>>;

/// One worker's share: batches `first, first + stride, …` of the run.
struct Worker {
    loader: Loader,
    start: Position,
    first: u64,
    stride: u64,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn run(self, tx: SyncSender<Item>) {
        let mut cached: Option<(u64, Vec<usize>)> = None;
        let mut k = self.first;
        while !self.stop.load(Ordering::Relaxed) {
            let pos = self.loader.advance(self.start, k);
            if cached.as_ref().is_none_or(|(e, _)| *e != pos.epoch) {
                cached = Some((pos.epoch, self.loader.epoch_order(pos.epoch)));
            }
            let order = &cached.as_ref().expect("just filled").1;
            let item = self.loader.build(pos, order);
            let failed = item.is_err();
            // A closed channel means the consumer is gone: stop.
            if tx.send(item).is_err() || failed {
                return;
            }
            k += self.stride;
        }
    }
}

/// The batches of a run, in order; dropping it stops the workers.
pub struct Batches {
    loader: Loader,
    receivers: Vec<Receiver<Item>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    next: u64,
    start: Position,
    end: Option<Position>,
}

impl Batches {
    /// The position of the next batch this iterator will yield (what a checkpoint saves).
    pub fn position(&self) -> Position {
        self.loader.advance(self.start, self.next)
    }
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        loop {
            if self.end.is_some_and(|end| Batches::position(self) >= end) || self.receivers.is_empty() {
                return None;
            }
            let w = (self.next % self.receivers.len() as u64) as usize;
            match self.receivers[w].recv() {
                Ok(Ok(Some(batch))) => {
                    self.next += 1;
                    return Some(Ok(batch));
                }
                Ok(Ok(None)) => self.next += 1, // every example failed: skip the batch
                Ok(Err(e)) => {
                    self.receivers.clear();
                    return Some(Err(e));
                }
                Err(_) => {
                    self.receivers.clear();
                    return Some(Err(Error::Msg("a loader worker thread died".into())));
                }
            }
        }
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Closing the channels unblocks workers waiting to send.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Loader-only throughput.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoaderBench {
    pub batches: usize,
    pub images: usize,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// Measures how fast `loader` delivers `batches` batches (decode + transform + stacking, workers
/// started inside the timing, nothing else done with the batches).
pub fn bench_loader(loader: &Loader, batches: usize) -> Result<LoaderBench> {
    let t0 = Instant::now();
    let mut images = 0;
    let mut got = 0;
    for batch in loader.iter(Position::default(), None)?.take(batches) {
        images += batch?.labels.len();
        got += 1;
    }
    let seconds = t0.elapsed().as_secs_f64();
    Ok(LoaderBench { batches: got, images, seconds, images_per_second: images as f64 / seconds.max(1e-9) })
}
