//! Evaluation: top-1 / top-5 accuracy, mean cross-entropy and per-class accuracy over a
//! validation loader, without gradients and in eval mode (only BatchNorm models care).

use std::fmt::Write as _;

use bitgrad_engine::{no_grad, Tensor};
use bitgrad_ops::softmax_xent::{cross_entropy, Target};

use crate::data::{Loader, Position};
use crate::dist::{Collectives, ReduceOp};
use crate::{Error, Module, ResNetV2, Result};

/// One class's share of correct top-1 predictions.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassAccuracy {
    pub name: String,
    pub correct: usize,
    pub total: usize,
}

impl ClassAccuracy {
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// The result of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalResult {
    /// Examples evaluated (examples whose image failed to decode are not counted).
    pub examples: usize,
    pub top1: f64,
    pub top5: f64,
    /// Mean cross-entropy over the examples.
    pub loss: f64,
    pub per_class: Vec<ClassAccuracy>,
}

impl EvalResult {
    /// A plain-text table: class, correct / total, accuracy.
    pub fn class_table(&self) -> String {
        let width = self.per_class.iter().map(|c| c.name.chars().count()).max().unwrap_or(5).max(5);
        let mut s = format!("{:<width$}  {:>13}  {:>8}\n", "class", "correct/total", "accuracy");
        for c in &self.per_class {
            let frac = format!("{}/{}", c.correct, c.total);
            let _ = writeln!(s, "{:<width$}  {:>13}  {:>7.2}%", c.name, frac, 100.0 * c.accuracy());
        }
        s
    }
}

/// Evaluates `model` on every batch of `loader`'s epoch 0 (use a sequential eval loader).
pub fn evaluate(model: &mut ResNetV2, loader: &Loader) -> Result<EvalResult> {
    let was_training = model.is_training();
    model.set_training(false);
    let result = run(model, loader);
    model.set_training(was_training);
    result
}

/// [`evaluate`] of a data-parallel run: each rank evaluates its shard (an unpadded
/// [`Shard`](crate::data::Shard) of the validation set) and the counts are summed over the ranks,
/// so every rank gets the result of the whole set. The loss sum travels as f32 (about 7
/// significant digits).
pub fn evaluate_on_ranks(model: &mut ResNetV2, loader: &Loader, comm: &dyn Collectives) -> Result<EvalResult> {
    let mut r = evaluate(model, loader)?;
    if comm.backend() == "single" {
        return Ok(r);
    }
    let n = r.examples as f64;
    let mut sums =
        vec![r.examples as f32, (r.top1 * n).round() as f32, (r.top5 * n).round() as f32, (r.loss * n) as f32];
    sums.extend(r.per_class.iter().flat_map(|c| [c.correct as f32, c.total as f32]));
    comm.all_reduce(&mut sums, ReduceOp::Sum)?;
    let total = sums[0] as f64;
    let d = total.max(1.0);
    r.examples = sums[0] as usize;
    (r.top1, r.top5, r.loss) = (sums[1] as f64 / d, sums[2] as f64 / d, sums[3] as f64 / d);
    for (c, pair) in r.per_class.iter_mut().zip(sums[4..].chunks(2)) {
        (c.correct, c.total) = (pair[0] as usize, pair[1] as usize);
    }
    Ok(r)
}

fn run(model: &ResNetV2, loader: &Loader) -> Result<EvalResult> {
    let _no_grad = no_grad();
    let classes = loader.dataset().classes().to_vec();
    let k = model.config().num_classes;
    let mut per_class: Vec<ClassAccuracy> =
        classes.iter().map(|name| ClassAccuracy { name: name.clone(), correct: 0, total: 0 }).collect();
    let (mut n, mut top1, mut top5, mut loss_sum) = (0usize, 0usize, 0usize, 0.0f64);
    let end = Position { epoch: 1, batch: 0 };
    for batch in loader.iter(Position::default(), Some(end))? {
        let batch = batch?;
        let m = batch.labels.len();
        let x = batch.images.to_dtype(model.dtype())?.to_device(model.device())?;
        let logits = model.forward(&x)?;
        let labels = Tensor::from_vec(batch.labels.clone(), [m], model.device())?;
        loss_sum += cross_entropy(&logits, Target::Hard(&labels), 0.0)?.to_scalar()? * m as f64;
        if let Some(&bad) = batch.labels.iter().find(|&&l| l < 0 || l as usize >= k) {
            return Err(Error::Msg(format!("label {bad} is out of range for a head of {k} classes")));
        }
        let values = logits.to_vec_f64()?;
        for (row, &label) in values.chunks(k).zip(&batch.labels) {
            let target = row[label as usize];
            // Rank = how many classes score strictly higher (ties count in the label's favour,
            // except that NaN logits never do).
            let rank = row.iter().filter(|&&v| v > target || v.is_nan()).count();
            let hit1 = rank == 0 && !target.is_nan();
            top1 += hit1 as usize;
            top5 += (rank < 5 && !target.is_nan()) as usize;
            if let Some(c) = per_class.get_mut(label as usize) {
                c.total += 1;
                c.correct += hit1 as usize;
            }
        }
        n += m;
    }
    let d = n.max(1) as f64;
    Ok(EvalResult { examples: n, top1: top1 as f64 / d, top5: top5 as f64 / d, loss: loss_sum / d, per_class })
}
