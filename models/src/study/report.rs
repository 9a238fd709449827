//! The study's output: a markdown table, a CSV file (one row per cell, and one per run) and the
//! PNG plot, written into one folder.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

use super::config::{NormStudy, COLORS};
use super::plot;
use super::runner::{aggregate, CellResult, RunResult};

/// Everything a study measured.
#[derive(Debug, Clone)]
pub struct StudyResult {
    pub study: NormStudy,
    pub runs: Vec<RunResult>,
    /// Mean ± std over seeds per (norm, batch), in grid order.
    pub cells: Vec<CellResult>,
}

/// The CSV header of [`StudyResult::csv`].
pub const CSV_HEADER: &str = "norm,batch,steps,lr,seeds,top1_mean,top1_std,images_per_second";

impl StudyResult {
    pub fn new(study: NormStudy, runs: Vec<RunResult>) -> Self {
        let cells = aggregate(&study, &runs);
        StudyResult { study, runs, cells }
    }

    /// The plot colour of the i-th norm of the grid.
    pub fn color_of(i: usize) -> (&'static str, (u8, u8, u8)) {
        COLORS[i % COLORS.len()]
    }

    fn cell(&self, norm: &str, batch: usize) -> Option<&CellResult> {
        self.cells.iter().find(|c| c.norm == norm && c.batch == batch)
    }

    /// Two markdown tables: top-1 (mean ± std, %) per norm × batch size with each norm's plot
    /// colour, then img/s per norm × batch size.
    pub fn markdown(&self) -> String {
        let s = &self.study;
        let mut out = String::new();
        let head: String = s.batch_sizes.iter().map(|b| format!(" batch {b} |")).collect();
        let rule: String = s.batch_sizes.iter().map(|_| "---:|").collect();
        let _ = writeln!(out, "| norm | colour |{head}\n|---|---|{rule}");
        for (i, norm) in s.norms.iter().enumerate() {
            let _ = write!(out, "| {norm} | {} |", Self::color_of(i).0);
            for &b in &s.batch_sizes {
                match self.cell(norm, b) {
                    Some(c) => write!(out, " {:.1} ± {:.1} |", c.top1_mean * 100.0, c.top1_std * 100.0),
                    None => write!(out, " – |"),
                }
                .ok();
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "\nTop-1 % on the test set, mean ± std over {} seed(s). Steps per batch size: {}; peak lr: {}.\n",
            s.seeds,
            s.batch_sizes.iter().map(|&b| format!("{b}: {}", s.steps_for(b))).collect::<Vec<_>>().join(", "),
            s.batch_sizes.iter().map(|&b| format!("{b}: {}", s.lr_for(b))).collect::<Vec<_>>().join(", "),
        );
        let (lo, hi) = plot::y_range(self);
        let _ = writeln!(
            out,
            "accuracy.png: x = batch size (log scale), y = top-1 from {:.0} % to {:.0} % (grey lines every \
             10 %), one line per norm in the colour above (named in the legend), bars = ± 1 std.\n",
            lo * 100.0,
            hi * 100.0
        );
        let _ = writeln!(out, "| img/s (training) |{head}\n|---|{rule}");
        for norm in &s.norms {
            let _ = write!(out, "| {norm} |");
            for &b in &s.batch_sizes {
                let _ = match self.cell(norm, b) {
                    Some(c) => write!(out, " {:.0} |", c.images_per_second),
                    None => write!(out, " – |"),
                };
            }
            out.push('\n');
        }
        out
    }

    /// One row per (norm, batch) cell under [`CSV_HEADER`]; accuracies as fractions.
    pub fn csv(&self) -> String {
        let mut out = format!("{CSV_HEADER}\n");
        for c in &self.cells {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{:.6},{:.6},{:.1}",
                c.norm, c.batch, c.steps, c.lr, c.seeds, c.top1_mean, c.top1_std, c.images_per_second
            );
        }
        out
    }

    /// One row per training run.
    pub fn runs_csv(&self) -> String {
        let mut out = "norm,batch,seed,steps,lr,top1,images_per_second,seconds\n".to_string();
        for r in &self.runs {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{:.6},{:.1},{:.2}",
                r.norm, r.batch, r.seed, r.steps, r.lr, r.top1, r.images_per_second, r.seconds
            );
        }
        out
    }

    /// Writes `table.md`, `table.csv`, `runs.csv` and `accuracy.png` into `dir` (created), and
    /// returns their paths in that order.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut paths = Vec::new();
        for (name, text) in [("table.md", self.markdown()), ("table.csv", self.csv()), ("runs.csv", self.runs_csv())] {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
            paths.push(path);
        }
        let png = dir.join("accuracy.png");
        plot::draw(&png, self)?;
        paths.push(png);
        Ok(paths)
    }
}
