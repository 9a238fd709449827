//! `bitgrad info`: what this machine offers bitgrad.

pub fn run() -> bitgrad::Result<()> {
    println!("bitgrad {}", env!("CARGO_PKG_VERSION"));
    print!("{}", bitgrad::engine::info::machine_report());
    Ok(())
}
