//! The `activemirror` binary: `start` (HTTP + gRPC server), `import`, `sql`, `export`, `bench`.
//! Errors are `anyhow` here at the edge; library crates use typed errors.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = server::cli::Cli::parse();
    match server::cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", server::cli::error_report(&e));
            ExitCode::FAILURE
        }
    }
}
