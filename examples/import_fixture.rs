//! Run with: cargo run --release --example import_fixture -- [sideline import nfl options]
//!
//! Runs the NFL importer (`sideline import nfl`) on its own, with the same options. It is how
//! `examples/data/nfl/games.jsonl` was made (see `examples/data/nfl/LICENSE.md`):
//!
//! ```text
//! examples/data/fetch_nfl.sh
//! cargo run --release --example import_fixture -- --seasons 2018 --season-type reg \
//!     --weeks 1-2 --out examples/data/nfl/games.jsonl
//! ```

use clap::Parser;
use sideline::import::nfl::{run, ImportNflArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ImportNflArgs,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    run(Cli::parse().args)
}
