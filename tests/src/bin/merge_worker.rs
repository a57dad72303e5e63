//! Child process for the crash tests: opens a data directory with the engine's defaults, so
//! that its background threads compact and merge whatever segments are there, prints `OPEN`,
//! and waits to be killed.

use std::io::Write;
use std::time::Duration;

use engine::{Engine, EngineConfig};

fn main() -> anyhow::Result<()> {
    let dir = std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: merge-worker DIR"))?;
    let (_engine, _) = Engine::open(&dir, EngineConfig::default())?;
    let mut out = std::io::stdout();
    writeln!(out, "OPEN")?;
    out.flush()?;
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}
