//! The JSONL metrics file: one JSON object per line — `{"kind":"step", step, lr, loss,
//! images_per_second, …}` for every optimiser step and `{"kind":"eval", step, top1, top5, loss}`
//! for every evaluation — flushed per line, so a crashed or interrupted run keeps what it logged.
//! A resumed run appends to the same file.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::{Error, Result};

/// One optimiser step, as logged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepRecord {
    /// The step's index (0-based, as the schedule counts).
    pub step: u64,
    pub lr: f64,
    pub loss: f64,
    /// Training images per second over this step (forward, backward, update; loader waits
    /// included).
    pub images_per_second: f64,
    pub epoch: u64,
}

/// One evaluation, as logged (after `step` optimiser steps).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalRecord {
    pub step: u64,
    pub top1: f64,
    pub top5: f64,
    pub loss: f64,
}

/// An append-only JSONL writer.
pub struct MetricsFile {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsFile {
    /// Opens `path` for appending (created if absent).
    pub fn append(path: &Path) -> Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
        Ok(MetricsFile { path: path.to_path_buf(), out: BufWriter::new(file) })
    }

    pub fn step(&mut self, r: &StepRecord) -> Result<()> {
        self.line(json!({
            "kind": "step", "step": r.step, "epoch": r.epoch, "lr": r.lr,
            "loss": finite_or_null(r.loss), "images_per_second": r.images_per_second,
        }))
    }

    pub fn eval(&mut self, r: &EvalRecord) -> Result<()> {
        self.line(json!({
            "kind": "eval", "step": r.step, "top1": r.top1, "top5": r.top5, "loss": finite_or_null(r.loss),
        }))
    }

    fn line(&mut self, v: serde_json::Value) -> Result<()> {
        let r = writeln!(self.out, "{v}").and_then(|_| self.out.flush());
        r.map_err(|e| Error::io(&self.path, e))
    }
}

/// JSON has no NaN/Inf: those are written as `null`.
fn finite_or_null(v: f64) -> serde_json::Value {
    if v.is_finite() {
        json!(v)
    } else {
        serde_json::Value::Null
    }
}
