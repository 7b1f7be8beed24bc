use clap::Parser;

/// mimalloc: frees of what another thread allocated (the workers' values, freed by the
/// publisher) do not contend on glibc's arena locks.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "sideline=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match sideline::cli::run(sideline::cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
