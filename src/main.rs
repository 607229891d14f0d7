//! The `roomguard` binary: parse the command line, set up logging, dispatch to the library.

use std::process::ExitCode;

use clap::Parser;
use roomguard::{
    cli::{self, Cli, EXIT_BAD_INPUT, LogFormat},
    logging,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = cli.log.as_deref().unwrap_or(roomguard::logging::DEFAULT_LOG);
    if let Err(e) = logging::init(filter, matches!(cli.log_format, LogFormat::Json)) {
        eprintln!("error: --log (or ROOMGUARD_LOG): {e}");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}
