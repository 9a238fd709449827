//! Training every cell of the grid and aggregating over seeds.

use std::sync::Arc;

use crate::data::Dataset;
use crate::schedule::{HyperRule, Schedule};
use crate::train::{train, TrainConfig};
use crate::{Error, Result};

use super::config::NormStudy;
use super::report::StudyResult;

/// One training run of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    pub norm: String,
    pub batch: usize,
    pub seed: u64,
    pub steps: u64,
    pub lr: f64,
    /// Top-1 on the test set after the last step.
    pub top1: f64,
    /// Training throughput (the trainer's img/s: steps × batch over the training time).
    pub images_per_second: f64,
    pub seconds: f64,
}

/// One (norm, batch size) cell: the runs' mean and sample standard deviation over seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct CellResult {
    pub norm: String,
    pub batch: usize,
    pub steps: u64,
    pub lr: f64,
    pub seeds: usize,
    pub top1_mean: f64,
    /// Sample standard deviation (n − 1); 0 with one seed.
    pub top1_std: f64,
    pub images_per_second: f64,
}

impl NormStudy {
    /// Trains every (norm, batch size, seed) on `train_set`, evaluates each run on `test_set`, and
    /// calls `on_run(done, total, run)` after each (progress). Runs are in grid order: norms,
    /// then batch sizes, then seeds.
    pub fn run(
        &self,
        train_set: Arc<dyn Dataset>,
        test_set: Arc<dyn Dataset>,
        mut on_run: impl FnMut(usize, usize, &RunResult),
    ) -> Result<StudyResult> {
        let num_classes = train_set.classes().len();
        self.validate(num_classes)?;
        self.device.check_available()?;
        let total = self.norms.len() * self.batch_sizes.len() * self.seeds as usize;
        let mut runs = Vec::with_capacity(total);
        for spec in &self.norms {
            let config = self.model_config(spec, num_classes)?;
            for &batch in &self.batch_sizes {
                for seed in 0..self.seeds {
                    let mut cfg = TrainConfig::pretrain(config.clone(), self.hyper(train_set.len(), batch)?);
                    cfg.seed = seed;
                    cfg.device = self.device;
                    cfg.workers = self.workers;
                    cfg.eval_batch = 250;
                    let s = train(&cfg, train_set.clone(), Some(test_set.clone()))?;
                    let eval = s.final_eval.as_ref().ok_or_else(|| {
                        Error::Msg(format!("the {spec} run at batch {batch} has no final evaluation"))
                    })?;
                    let run = RunResult {
                        norm: spec.clone(),
                        batch,
                        seed,
                        steps: s.steps,
                        lr: self.lr_for(batch),
                        top1: eval.top1,
                        images_per_second: s.images_per_second,
                        seconds: s.seconds,
                    };
                    runs.push(run);
                    on_run(runs.len(), total, runs.last().unwrap());
                }
            }
        }
        Ok(StudyResult::new(self.clone(), runs))
    }

    /// The recipe of one run: BiT's schedule shape over `steps_for(batch)` steps at the linearly
    /// scaled lr, the study's resolution, no MixUp (BiT: none below 20 000 examples), one
    /// micro-batch per step (BN must see the whole batch), momentum 0.9, no weight decay.
    fn hyper(&self, examples: usize, batch: usize) -> Result<HyperRule> {
        let t = self.steps_for(batch);
        let mut h = HyperRule::for_dataset(examples, self.resolution.crop, self.resolution.crop);
        h.resolution = self.resolution;
        h.mixup_alpha = 0.0;
        h.schedule = Schedule::new(vec![t / 10, t * 3 / 10, t * 6 / 10, t * 9 / 10, t], self.lr_for(batch))?;
        h.batch = batch;
        h.batch_split = 1;
        h.validate()?;
        Ok(h)
    }
}

/// Mean and sample standard deviation of every (norm, batch) cell, in grid order.
pub(super) fn aggregate(study: &NormStudy, runs: &[RunResult]) -> Vec<CellResult> {
    let mut cells = Vec::new();
    for spec in &study.norms {
        for &batch in &study.batch_sizes {
            let cell: Vec<&RunResult> = runs.iter().filter(|r| &r.norm == spec && r.batch == batch).collect();
            if cell.is_empty() {
                continue;
            }
            let n = cell.len() as f64;
            let mean = cell.iter().map(|r| r.top1).sum::<f64>() / n;
            let var = cell.iter().map(|r| (r.top1 - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
            cells.push(CellResult {
                norm: spec.clone(),
                batch,
                steps: cell[0].steps,
                lr: cell[0].lr,
                seeds: cell.len(),
                top1_mean: mean,
                top1_std: var.sqrt(),
                images_per_second: cell.iter().map(|r| r.images_per_second).sum::<f64>() / n,
            });
        }
    }
    cells
}
