//! Progress display: an indicatif bar (step, lr, loss, img/s, ETA) when stdout is a terminal,
//! plain lines otherwise (logs, CI), nothing when disabled.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use super::metrics::{EvalRecord, StepRecord};

pub enum Progress {
    Bar(ProgressBar),
    /// Plain lines, one every `every` steps.
    Lines {
        every: u64,
    },
    Quiet,
}

impl Progress {
    /// A bar over `total` steps starting at `done`, or plain lines, or nothing (`enabled` false).
    pub fn new(enabled: bool, done: u64, total: u64) -> Self {
        if !enabled {
            return Progress::Quiet;
        }
        if std::io::stdout().is_terminal() {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template("step {pos}/{len} {bar:30} {msg} ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_position(done);
            return Progress::Bar(bar);
        }
        Progress::Lines { every: (total / 50).max(1) }
    }

    /// Plain lines even on a terminal: under a launcher (mpirun gives ranks a pseudo-terminal)
    /// a bar would be redrawn through the launcher's forwarding.
    pub fn plain(enabled: bool, total: u64) -> Self {
        match enabled {
            true => Progress::Lines { every: (total / 50).max(1) },
            false => Progress::Quiet,
        }
    }

    pub fn step(&self, r: &StepRecord, total: u64) {
        let msg = format!("lr {:.2e} loss {:.4} {:.1} img/s", r.lr, r.loss, r.images_per_second);
        match self {
            Progress::Bar(bar) => {
                bar.set_message(msg);
                bar.set_position(r.step + 1);
            }
            Progress::Lines { every } if (r.step + 1).is_multiple_of(*every) || r.step + 1 == total => {
                println!("step {}/{total} {msg}", r.step + 1);
            }
            _ => {}
        }
    }

    pub fn eval(&self, r: &EvalRecord) {
        let line = format!(
            "eval after step {}: top-1 {:.2}% top-5 {:.2}% loss {:.4}",
            r.step,
            100.0 * r.top1,
            100.0 * r.top5,
            r.loss
        );
        match self {
            Progress::Bar(bar) => bar.println(line),
            Progress::Lines { .. } => println!("{line}"),
            Progress::Quiet => {}
        }
    }

    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish();
        }
    }
}
