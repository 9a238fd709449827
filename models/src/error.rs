//! The models crate's error: the engine's errors plus what loading files, configs and data can
//! go wrong with. Every variant says what was wrong and, where it helps, what to do.

use std::path::PathBuf;

/// A mis-shaped parameter: the name, the shape the model expects, the shape the file has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeProblem {
    pub name: String,
    pub expected: Vec<usize>,
    pub found: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Engine(#[from] bitgrad_engine::Error),

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    /// The bytes of a file are not what its format promises (truncated, corrupt, lying header).
    #[error("{path}: not a valid {format} file: {msg}")]
    Format { path: PathBuf, format: &'static str, msg: String },

    /// Strict loading: every problem between a file's names/shapes and the model's, at once.
    #[error("{}", keys_message(.missing, .unexpected, .mismatched))]
    Keys { missing: Vec<String>, unexpected: Vec<String>, mismatched: Vec<ShapeProblem> },

    /// A configuration that cannot be built (e.g. a width not divisible by the GN groups), or a
    /// file whose architecture cannot be recognised or disagrees with `--arch`.
    #[error("config: {0}")]
    Config(String),

    #[error("{0}")]
    Msg(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub fn format(path: impl Into<PathBuf>, format: &'static str, msg: impl Into<String>) -> Self {
        Error::Format { path: path.into(), format, msg: msg.into() }
    }
}

/// At most this many names per list, then "… and N more": a 21843-class head mismatch or a
/// wrong architecture should give a readable message, not hundreds of lines.
const LIST_LIMIT: usize = 12;

fn keys_message(missing: &[String], unexpected: &[String], mismatched: &[ShapeProblem]) -> String {
    fn list<T>(out: &mut String, title: &str, items: &[T], show: impl Fn(&T) -> String) {
        if items.is_empty() {
            return;
        }
        out.push_str(&format!("\n  {} {title}:", items.len()));
        for it in items.iter().take(LIST_LIMIT) {
            out.push_str(&format!("\n    {}", show(it)));
        }
        if items.len() > LIST_LIMIT {
            out.push_str(&format!("\n    … and {} more", items.len() - LIST_LIMIT));
        }
    }
    let mut out = String::from("the weights do not fit the model");
    list(&mut out, "missing (the model has them, the file does not)", missing, |s| s.clone());
    list(&mut out, "unexpected (in the file, not in the model)", unexpected, |s| s.clone());
    list(&mut out, "with the wrong shape", mismatched, |p| {
        format!("{}: model {:?}, file {:?}", p.name, p.expected, p.found)
    });
    out
}
