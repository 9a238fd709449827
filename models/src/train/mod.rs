//! Training: BiT fine-tuning (and the same loop for upstream pre-training) as the official
//! PyTorch `train.py` does it (bit-spec §4.4) — the HyperRule lr per step, SGD with momentum in
//! PyTorch's form, gradient accumulation over `batch_split` micro-batches, MixUp, periodic
//! evaluation — plus what a long CPU run needs: atomic checkpoints with exact resume, a stop flag
//! (Ctrl-C), NaN/Inf detection, a JSONL metrics file, a progress bar and a PNG chart.

pub mod chart;
pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod metrics;
pub mod progress;
pub mod step;
pub mod trainer;

pub use self::checkpoint::{Checkpoint, TrainState};
pub use self::config::{ModelSource, TrainConfig};
pub use self::eval::{evaluate, evaluate_on_ranks, ClassAccuracy, EvalResult};
pub use self::metrics::{EvalRecord, StepRecord};
pub use self::step::{accumulate_step, accumulate_step_ddp, micro_step, StepOutcome};
pub use self::trainer::{train, Summary};
