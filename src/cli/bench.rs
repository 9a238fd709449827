//! `bitgrad bench …`: benchmark programs (filled in by the engine benchmarks).

#[derive(clap::Args)]
pub struct BenchArgs {
    /// What to benchmark.
    pub what: String,
}

pub fn run(args: BenchArgs) -> bitgrad::Result<()> {
    Err(bitgrad::Error::Msg(format!("unknown benchmark `{}`", args.what)))
}
