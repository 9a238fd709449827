//! The normalization study (issue 8): the same small model trained from scratch for every
//! (normalization, batch size, seed) of a grid, to measure how each normalization holds up as the
//! per-device batch shrinks — Wu & He 2018 (GroupNorm, Fig. 1), Qiao et al. 2019 (Weight
//! Standardization) and BiT §3.2 find that BatchNorm degrades at small batches and GN+WS does not.
//!
//! [`NormStudy`] is the grid and the recipe, [`NormStudy::run`] trains every cell and returns a
//! [`StudyResult`] (per-run top-1 and img/s, mean ± std over seeds per cell), which writes itself
//! as a markdown table, a CSV file and a PNG plot (accuracy against batch size, one colour per
//! normalization). The datasets are the caller's: the CLI (`bitgrad study norms`) uses the data
//! shipped in assets/demo so that the study runs on a fresh clone.

mod config;
mod plot;
mod report;
mod runner;

pub use self::config::{NormStudy, COLORS};
pub use self::report::StudyResult;
pub use self::runner::{CellResult, RunResult};
