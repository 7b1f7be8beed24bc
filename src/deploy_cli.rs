//! The pipeline commands: `sideline validate` checks files locally; `deploy`, `pipelines`,
//! `remove`, `promote` and `rollback` are clients of a running engine's admin endpoint
//! ([`crate::admin`]).
//!
//! ```text
//! sideline validate pipelines/                    every *.toml of the directory
//! sideline deploy pipelines/nfl.toml              validate, then PUT /pipelines/<name>
//! sideline pipelines                              GET /pipelines
//! sideline remove nfl_win_probability             DELETE /pipelines/<name>
//! sideline promote nfl_win_probability            POST /pipelines/<name>/promote
//! sideline rollback nfl_win_probability           POST /pipelines/<name>/rollback
//! ```
//!
//! Diagnostics go to stderr as `file:line:column: error: message` (plus a `hint:` line), the
//! form editors and terminals turn into links; everything else goes to stdout.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::app::Deployed;
use crate::config::Config;
use crate::pipeline::plan::ModelPlan;
use crate::pipeline::{self, Diagnostic, ModelCatalog, Plan};

/// How long a request to the admin endpoint may take (a deploy asks Kafka for partitions).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Pipeline files, or directories whose `*.toml` files are all validated.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The engine's admin endpoint (default: `http://` + server.admin-listen).
    #[arg(long)]
    pub admin: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The pipeline file.
    pub file: PathBuf,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, clap::Args)]
pub struct NameArgs {
    /// The pipeline's name (`[pipeline] name`).
    pub name: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// The files `paths` name: files as they are, directories as their `*.toml` files.
pub fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let files =
                pipeline::files_in(p).with_context(|| format!("reading {}", p.display()))?;
            if files.is_empty() {
                bail!("{}: no *.toml files in this directory", p.display());
            }
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// One line about a valid plan: `pipeline NAME vN: X features, Y derived, model M` (and
/// ` (shadow S)` with a shadow model).
pub fn summary(plan: &Plan) -> String {
    let model = match &plan.model {
        ModelPlan::Registry { name, version, .. } => format!("{name}/{version}"),
        ModelPlan::Formula { .. } => "formula".to_string(),
    };
    let shadow = plan.shadow.as_ref().map_or(String::new(), |s| {
        format!(" (shadow {}/{})", s.name, s.version)
    });
    format!(
        "pipeline {} v{}: {} features, {} derived, model {model}{shadow}",
        plan.name,
        plan.version,
        plan.features.len(),
        plan.derived.len()
    )
}

/// Validates every file: diagnostics to `err`, `ok: FILE (...)` lines to `out`. Returns how
/// many files are invalid.
pub fn validate_files(
    files: &[PathBuf],
    models: &dyn ModelCatalog,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<usize> {
    let mut invalid = 0;
    for f in files {
        match pipeline::load(f, models) {
            Ok(plan) => writeln!(out, "ok: {} ({})", f.display(), summary(&plan))?,
            Err(e) => {
                invalid += 1;
                print_diagnostics(err, &e.0)?;
            }
        }
    }
    Ok(invalid)
}

fn print_diagnostics(err: &mut dyn Write, diagnostics: &[Diagnostic]) -> std::io::Result<()> {
    for d in diagnostics {
        writeln!(err, "{d}")?;
    }
    Ok(())
}

/// `sideline validate FILE...`
pub fn validate(args: ValidateArgs, cfg: &Config) -> anyhow::Result<()> {
    let files = expand(&args.files)?;
    let registry = crate::app::registry(cfg);
    let invalid = validate_files(
        &files,
        &registry,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )?;
    match invalid {
        0 => Ok(()),
        n => bail!("{n} of {} pipeline files are invalid", files.len()),
    }
}

/// The admin endpoint's base URL, without a trailing slash.
pub fn admin_url(args: &AdminArgs, cfg: &Config) -> anyhow::Result<String> {
    let url = match &args.admin {
        Some(u) => u.clone(),
        None => {
            let listen = cfg.server.admin_listen.as_str();
            if listen.is_empty() {
                bail!("server.admin-listen is empty: pass the engine's admin endpoint with --admin URL");
            }
            // A server listening on every interface is reached on loopback.
            listen
                .replace("0.0.0.0:", "127.0.0.1:")
                .replace("[::]:", "[::1]:")
        }
    };
    let url = if url.contains("://") {
        url
    } else {
        format!("http://{url}")
    };
    Ok(url.trim_end_matches('/').to_string())
}

/// The admin API's error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Debug, Deserialize)]
struct ErrorItem {
    file: String,
    line: usize,
    column: usize,
    message: String,
    #[serde(default)]
    hint: Option<String>,
}

/// One entry of `GET /pipelines`.
#[derive(Debug, Deserialize)]
struct PipelineInfo {
    name: String,
    version: u32,
    warming: Option<u32>,
    sport: String,
    topics: Vec<String>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    kafka_topics: Vec<String>,
    #[serde(default)]
    model: String,
    #[serde(default)]
    shadow: Option<String>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(ADMIN_TIMEOUT))
        .build()
        .into()
}

/// A response: status and body text.
fn answer(
    url: &str,
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> anyhow::Result<(u16, String)> {
    let mut resp = result.with_context(|| {
        format!("cannot reach the admin endpoint {url} (is the engine running? see --admin)")
    })?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading the answer of {url}"))?;
    Ok((status, body))
}

/// Turns an error answer into diagnostics on stderr and an error.
fn refused(what: &str, status: u16, body: &str) -> anyhow::Error {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(e) => {
            let mut err = std::io::stderr().lock();
            for i in e.errors {
                let d = Diagnostic {
                    file: i.file,
                    line: i.line,
                    column: i.column,
                    message: i.message,
                    hint: i.hint,
                };
                let _ = writeln!(err, "{d}");
            }
            anyhow::anyhow!("{what} refused ({status} {}): {}", e.code, e.message)
        }
        Err(_) => anyhow::anyhow!("{what} refused ({status}): {}", body.trim()),
    }
}

/// `sideline deploy FILE`: validates locally, then sends the file to the engine.
pub fn deploy(args: DeployArgs, cfg: &Config) -> anyhow::Result<()> {
    let registry = crate::app::registry(cfg);
    let plan = match pipeline::load(&args.file, &registry) {
        Ok(p) => p,
        Err(e) => {
            print_diagnostics(&mut std::io::stderr().lock(), &e.0)?;
            bail!("{} is invalid: not sent", args.file.display());
        }
    };
    println!("ok: {} ({})", args.file.display(), summary(&plan));
    let base = admin_url(&args.admin, cfg)?;
    let url = format!("{base}/pipelines/{}", plan.name);
    let file = args.file.display().to_string();
    let (status, body) = answer(
        &url,
        agent()
            .put(&url)
            .header("X-Sideline-File", &file)
            .header("Content-Type", "application/toml")
            .send(plan.source.as_str()),
    )?;
    if status != 200 {
        return Err(refused("deploy", status, &body));
    }
    let d: Deployed = serde_json::from_str(&body)
        .with_context(|| format!("unexpected answer from {url}: {body}"))?;
    println!("deployed {} v{}: {}", d.pipeline, d.version, d.state);
    Ok(())
}

/// `sideline pipelines`: what the engine runs.
pub fn list(args: AdminArgs, cfg: &Config) -> anyhow::Result<()> {
    let url = format!("{}/pipelines", admin_url(&args, cfg)?);
    let (status, body) = answer(&url, agent().get(&url).call())?;
    if status != 200 {
        return Err(refused("listing", status, &body));
    }
    let pipelines: Vec<PipelineInfo> = serde_json::from_str(&body)
        .with_context(|| format!("unexpected answer from {url}: {body}"))?;
    if pipelines.is_empty() {
        println!("no pipelines deployed");
    }
    for p in pipelines {
        let warming = p
            .warming
            .map_or(String::new(), |v| format!(" (v{v} warming)"));
        let outputs: Vec<String> = p
            .channels
            .iter()
            .map(|c| format!("ws:{c}"))
            .chain(p.kafka_topics.iter().map(|t| format!("kafka:{t}")))
            .collect();
        let shadow = p.shadow.map_or(String::new(), |s| format!(" (shadow {s})"));
        println!(
            "{} v{}{warming} {} [{}] -> [{}] model {}{shadow}",
            p.name,
            p.version,
            p.sport,
            p.topics.join(", "),
            outputs.join(", "),
            p.model
        );
    }
    Ok(())
}

/// `sideline remove NAME`: stops every version of a pipeline.
pub fn remove(args: NameArgs, cfg: &Config) -> anyhow::Result<()> {
    let url = format!("{}/pipelines/{}", admin_url(&args.admin, cfg)?, args.name);
    let (status, body) = answer(&url, agent().delete(&url).call())?;
    if status != 200 {
        return Err(refused("remove", status, &body));
    }
    println!("removed {}", args.name);
    Ok(())
}

/// What `sideline promote` and `rollback` ask for.
#[derive(Clone, Copy, Debug)]
pub enum Swap {
    Promote,
    Rollback,
}

/// `sideline promote NAME` / `sideline rollback NAME`: the engine builds the new definition
/// from the ones it deployed and deploys it as a new version.
pub fn swap(args: NameArgs, cfg: &Config, what: Swap) -> anyhow::Result<()> {
    let verb = match what {
        Swap::Promote => "promote",
        Swap::Rollback => "rollback",
    };
    let url = format!(
        "{}/pipelines/{}/{verb}",
        admin_url(&args.admin, cfg)?,
        args.name
    );
    let (status, body) = answer(&url, agent().post(&url).send_empty())?;
    if status != 200 {
        return Err(refused(verb, status, &body));
    }
    let d: Deployed = serde_json::from_str(&body)
        .with_context(|| format!("unexpected answer from {url}: {body}"))?;
    println!("deployed {} v{}: {}", d.pipeline, d.version, d.state);
    Ok(())
}
