//! The `activemirror` binary: `start` (the HTTP server), `import`, `sql`, `export`.
//! Errors are `anyhow` here at the edge; library crates use typed errors.

mod cli;
mod http;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = cli::Cli::parse();
    cli::run(args)
}
