//! The `ssefs` command: parses arguments and runs one command, or, when called the way
//! mount(8) calls a helper (`ssefs STORE MOUNTPOINT -o OPTIONS`), mounts in the background.

use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let mut subcommands: Vec<String> = ssefs::cli::command()
        .get_subcommands()
        .flat_map(|c| std::iter::once(c.get_name()).chain(c.get_all_aliases()))
        .map(str::to_string)
        .collect();
    subcommands.push("help".to_string());
    if ssefs::cli::helper_mode::is_helper_invocation(&args, &subcommands) {
        let code = ssefs::cli::helper_mode::run(&args[1..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(ssefs::cli::exit::EXIT_FAILURE));
    }
    let cli = ssefs::cli::parse_from(args);
    ssefs::cli::exit::finish(ssefs::cli::run(cli))
}
