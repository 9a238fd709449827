//! The `bitgrad` command-line tool. One file per subcommand under `cli/`.

mod cli;

fn main() {
    if let Err(e) = cli::run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
