//! The `ssefs` command: parses arguments and runs one command.

use clap::Parser;

fn main() {
    let cli = ssefs::cli::Cli::parse();
    if let Err(e) = ssefs::cli::run(cli) {
        eprintln!("ssefs: {e}");
        std::process::exit(1);
    }
}
