//! The `activemirror` binary: `start` (HTTP + gRPC server), `import`, `sql`, `export`, `bench`.
//! Errors are `anyhow` here at the edge; library crates use typed errors.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = server::cli::Cli::parse();
    server::cli::run(args)
}
