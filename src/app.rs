//! Wiring: the hub and WebSocket server, the admin endpoint and Prometheus on a tokio runtime;
//! deployment of pipeline files; the sink thread that turns the engine's values into deltas;
//! around [`crate::engine::run`].

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::checkpoint::{PipelineCheckpoint, Store};
use crate::config::Config;
use crate::dataflow::{Model, SinkMsg};
use crate::delta::Delta;
use crate::engine::{self, Control, EngineError, EngineStats, StopSignal};
use crate::hub::{Hub, HubConfig};
use crate::pipeline::plan::Output;
use crate::pipeline::{self, Invalid, Plan, Registry};
use crate::publish::{DeltaSink, Publisher, SharedPublisher};
use crate::ws::{self, WsConfig};

/// Values buffered between the dataflow and the publisher; the dataflow waits when it is full.
const SINK_BOUND: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("server: {0}")]
    Server(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
}

/// Why a pipeline file was not deployed. The running pipelines are untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The file is invalid (bad input: the file).
    #[error("{0}")]
    Invalid(Invalid),
    /// It is valid but cannot run next to what runs (bad input: the request).
    #[error("{0}")]
    Conflict(String),
    /// Kafka or the model registry failed (external; a retry may help).
    #[error("{0}")]
    Unavailable(String),
    /// No such pipeline, or no earlier version of it to roll back to (bad input: the request).
    #[error("{0}")]
    NotFound(String),
    /// sideline failed at its own work (a bug: report it).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Definitions kept per pipeline for `rollback`.
pub const HISTORY_KEPT: usize = 16;

impl DeployError {
    /// Stable code for the admin API.
    pub fn code(&self) -> &'static str {
        match self {
            DeployError::Invalid(_) => "invalid_pipeline",
            DeployError::Conflict(_) => "conflict",
            DeployError::Unavailable(_) => "unavailable",
            DeployError::NotFound(_) => "not_found",
            DeployError::Internal(_) => "internal",
        }
    }
}

/// What a deploy did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deployed {
    pub pipeline: String,
    pub version: u32,
    /// `live` (a new pipeline) or `warming` (a new version catching up before it takes over).
    pub state: String,
}

/// A running sideline: network side up, pipelines deployed, engine started by
/// [`App::run_engine`].
pub struct App {
    pub cfg: Config,
    pub hub: Arc<Hub>,
    pub ws_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub stop: Arc<StopSignal>,
    pub control: Arc<Control>,
    pub publisher: SharedPublisher,
    pub registry: Registry,
    /// Where checkpoints go, when configured.
    pub checkpoints: Option<Store>,
    /// What the checkpoint found at start says of each pipeline, until it is deployed.
    recovered: Mutex<BTreeMap<String, PipelineCheckpoint>>,
    /// Per pipeline, the definitions deployed since it was (last) deployed new, oldest first,
    /// the last [`HISTORY_KEPT`]: what `promote` and `rollback` start from. A warming candidate
    /// replaced before it went live leaves it. In memory only.
    history: Mutex<BTreeMap<String, Vec<Arc<Plan>>>>,
    /// Held by every deploy, promote, rollback and removal from start to end: promote and
    /// rollback read the history and deploy what they made of it as one step.
    changing: Mutex<()>,
    runtime: tokio::runtime::Runtime,
}

impl App {
    /// Starts the hub, the WebSocket server, metrics and the admin endpoint (when
    /// `server.admin-listen` is set). Pipelines are deployed with [`App::deploy`].
    pub fn start(cfg: &Config) -> Result<Arc<App>, AppError> {
        // Read first: a damaged checkpoint refuses the start before anything listens.
        let (checkpoints, recovered) = match cfg.engine.checkpoint_dir.as_str() {
            "" => (None, BTreeMap::new()),
            dir => {
                let store = Store::open(dir)
                    .map_err(|e| AppError::Server(format!("checkpoint directory {dir}: {e}")))?;
                let recovered = match store.load()? {
                    Some((cp, file)) => {
                        tracing::info!(file = %file.display(), pipelines = cp.pipelines.len(), "resuming from checkpoint");
                        cp.pipelines
                    }
                    None => BTreeMap::new(),
                };
                (Some(store), recovered)
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.server.threads)
            .thread_name("sideline-net")
            .enable_all()
            .build()
            .map_err(|e| AppError::Server(e.to_string()))?;
        let hub = Hub::new(HubConfig {
            queue_capacity: cfg.server.queue_capacity,
            history: cfg.server.history,
            released_games: cfg.server.released_games,
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(&cfg.server.ws_listen))
            .map_err(|e| AppError::Server(format!("binding {}: {e}", cfg.server.ws_listen)))?;
        let ws_addr = listener
            .local_addr()
            .map_err(|e| AppError::Server(e.to_string()))?;
        {
            let _guard = runtime.enter();
            crate::metrics::install_prometheus(&cfg.server.metrics_listen)
                .map_err(AppError::Server)?;
        }
        let hub2 = hub.clone();
        let ws_cfg = WsConfig::from(&cfg.server);
        runtime.spawn(async move {
            if let Err(e) = ws::serve(listener, hub2, ws_cfg).await {
                tracing::error!(error = %e, "WebSocket server stopped");
            }
        });
        let stop = StopSignal::new();
        let stop2 = stop.clone();
        runtime.spawn(async move {
            // Ctrl-C or SIGTERM (a service manager, a container runtime) stop the engine.
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let terminated = async {
                match term.as_mut() {
                    Some(t) => t.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = tokio::signal::ctrl_c() => if r.is_err() { return },
                _ = terminated => {}
            }
            tracing::info!("interrupted: stopping");
            stop2.stop();
        });
        let control = Control::new(cfg.engine.workers);
        let publisher = Publisher::new(hub.clone(), control.clone(), Box::new(|_: &Delta| {}));
        let admin = match cfg.server.admin_listen.as_str() {
            "" => None,
            addr => Some(
                runtime
                    .block_on(tokio::net::TcpListener::bind(addr))
                    .map_err(|e| AppError::Server(format!("binding {addr}: {e}")))?,
            ),
        };
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        let app = Arc::new(App {
            cfg: cfg.clone(),
            hub,
            ws_addr,
            admin_addr,
            stop,
            control,
            publisher,
            registry: registry(cfg),
            checkpoints,
            recovered: Mutex::new(recovered),
            history: Mutex::default(),
            changing: Mutex::default(),
            runtime,
        });
        if let Some(listener) = admin {
            let weak = Arc::downgrade(&app);
            app.runtime.spawn(crate::admin::serve(listener, weak));
        }
        Ok(app)
    }

    /// Deploys the pipelines the configuration names: every `*.toml` of `engine.pipelines`, or
    /// the embedded NFL pipeline.
    ///
    /// After a restart, a pipeline whose checkpointed live version is higher than its file's
    /// (deployed while running: promoted, rolled back, or sent by `sideline deploy`) goes on
    /// with the checkpoint's definition; the file wins when its version is the same or higher.
    pub fn deploy_configured(&self) -> Result<Vec<Deployed>, DeployError> {
        // Validate every file before deploying any.
        configured_plans(&self.cfg, &self.registry)?
            .into_iter()
            .map(|p| {
                let p = self.checkpointed_or(p);
                self.deploy_plan(p)
            })
            .collect()
    }

    /// The checkpoint's definition of `plan`'s pipeline when its version is higher and it is
    /// still valid (its models may have left the registry), else `plan`.
    fn checkpointed_or(&self, plan: Plan) -> Plan {
        let recovered = lock(&self.recovered);
        let Some((version, text)) = recovered
            .get(&plan.name)
            .filter(|cp| cp.version > plan.version)
            .and_then(|cp| cp.definition.as_ref().map(|d| (cp.version, d)))
        else {
            return plan;
        };
        let file = format!("{}.toml (checkpoint v{version})", plan.name);
        match pipeline::plan::plan(&file, text, &self.registry) {
            Ok(newer) if newer.name == plan.name => {
                tracing::info!(
                    pipeline = plan.name,
                    file_version = plan.version,
                    version,
                    "the checkpoint's live version is newer than the file: it goes on"
                );
                newer
            }
            Ok(_) => plan,
            Err(e) => {
                tracing::warn!(pipeline = plan.name, version, error = %e, "the checkpoint's definition is no longer valid: the file is deployed");
                plan
            }
        }
    }

    /// Validates a pipeline file and deploys it: a new pipeline goes live; a new version of a
    /// running one warms up from Kafka and then takes over. Nothing changes on error.
    pub fn deploy(&self, file: &str, text: &str) -> Result<Deployed, DeployError> {
        let plan =
            pipeline::plan::plan(file, text, &self.registry).map_err(DeployError::Invalid)?;
        self.deploy_plan(plan)
    }

    fn deploy_plan(&self, plan: Plan) -> Result<Deployed, DeployError> {
        let model = Model::for_plan(&plan, &self.registry)
            .map_err(|e| DeployError::Unavailable(format!("model: {e}")))?;
        self.deploy_with(plan, model)
    }

    /// Deploys a validated plan with the model it runs (a program embedding sideline may
    /// bring its own, [`Model::Custom`]).
    pub fn deploy_with(&self, plan: Plan, model: Model) -> Result<Deployed, DeployError> {
        let _one = lock(&self.changing);
        self.deploy_held(plan, model)
    }

    /// [`Self::deploy_with`], `changing` held by the caller.
    fn deploy_held(&self, plan: Plan, model: Model) -> Result<Deployed, DeployError> {
        // Checked before and again after the slow part (Kafka metadata, producers, webhook
        // threads), which runs without the publisher's lock: the sink thread keeps publishing.
        self.check_conflicts(&lock(&self.publisher), &plan)?;
        // Loaded here, not in the caller: a program bringing its own model may still name a
        // registry shadow.
        let shadow = Model::shadow_for_plan(&plan, &self.registry)
            .map_err(|e| DeployError::Unavailable(format!("shadow model: {e}")))?
            .map(Arc::new);
        let partitions = crate::source::kafka::partitions(&self.cfg.kafka, &plan.topics)
            .map_err(|e| DeployError::Unavailable(e.to_string()))?;
        let outputs = crate::publish::VersionOutputs::start(
            &plan,
            &self.cfg.kafka,
            self.checkpoints.is_some(),
        )
        .map_err(DeployError::Unavailable)?;
        let mut publisher = lock(&self.publisher);
        self.check_conflicts(&publisher, &plan)?;
        let running = publisher.pipelines();
        let live = running.iter().all(|(p, _)| p.name != plan.name);
        // `register` replaces a version still warming up.
        let replaced_candidate = running
            .iter()
            .any(|(p, warming)| p.name == plan.name && warming.is_some());
        let model = Arc::new(model);
        let plan = Arc::new(plan);
        // A pipeline the checkpoint knows goes on where it left off.
        let resumed = match live {
            true => lock(&self.recovered).remove(&plan.name),
            false => None,
        };
        if let Some(cp) = &resumed {
            let source = crate::source::ingest::fingerprint(plan.source.as_bytes());
            if cp.version != plan.version || cp.source != source {
                tracing::warn!(
                    pipeline = plan.name,
                    checkpointed = cp.version,
                    deployed = plan.version,
                    "the pipeline file changed since the checkpoint: its deltas go on from the checkpoint's numbering, computed by the new file"
                );
            }
        }
        let resume = resumed
            .iter()
            .flat_map(|cp| &cp.partitions)
            .map(|p| ((p.topic.clone(), p.partition), p.resume()))
            .collect();
        // Registered before the workers can see it, so its first values find their pipeline.
        let id = self.control.reserve_id();
        publisher.register(id, plan.clone(), model.clone(), outputs);
        if let Some(cp) = &resumed {
            publisher.resume(&plan.name, cp);
        }
        // An online ensemble's weights go on: from the checkpoint's finished games, or from
        // those of the version this one replaces (when it runs the same model).
        let known_games = match &resumed {
            Some(cp) => crate::dataflow::KnownGames {
                folded: cp.folded_games.clone(),
                games: cp.finished_games.clone(),
            },
            None => publisher.finished_games(&plan.name, &model.version()),
        };
        publisher.seed_games(&plan.name, id, known_games.clone());
        self.control.start_resumed(
            id,
            plan.clone(),
            model,
            shadow,
            partitions,
            crate::engine::control::Resumed {
                partitions: resume,
                known_games,
                open_staleness: resumed
                    .as_ref()
                    .map(|cp| cp.open_staleness.clone())
                    .unwrap_or_default(),
            },
        );
        let mut history = lock(&self.history);
        let deployed = history.entry(plan.name.clone()).or_default();
        if live {
            deployed.clear();
        } else if replaced_candidate {
            // It never went live: rolling back must not return to it.
            deployed.pop();
        }
        deployed.push(plan.clone());
        if deployed.len() > HISTORY_KEPT {
            deployed.drain(..deployed.len() - HISTORY_KEPT);
        }
        drop(history);
        drop(publisher);
        tracing::info!(
            pipeline = plan.name,
            version = plan.version,
            live,
            "deployed"
        );
        Ok(Deployed {
            pipeline: plan.name.clone(),
            version: plan.version,
            state: if live { "live" } else { "warming" }.into(),
        })
    }

    /// A version already deployed, or an output another pipeline (live or warming) owns.
    fn check_conflicts(&self, publisher: &Publisher, plan: &Plan) -> Result<(), DeployError> {
        for (running, candidate) in publisher.pipelines() {
            if running.name == plan.name {
                if running.version == plan.version
                    || candidate
                        .as_ref()
                        .is_some_and(|c| c.version == plan.version)
                {
                    return Err(DeployError::Conflict(format!(
                        "pipeline {} version {} is already deployed; raise `version` in [pipeline]",
                        plan.name, plan.version
                    )));
                }
                continue;
            }
            for other in std::iter::once(&running).chain(candidate.as_ref()) {
                for o in &plan.outputs {
                    if other.outputs.contains(o) {
                        let what = match o {
                            Output::WebSocket { channel } | Output::WebSocketAlerts { channel } => {
                                format!("channel {channel}")
                            }
                            Output::Kafka { topic } | Output::KafkaAlerts { topic } => {
                                format!("topic {topic}")
                            }
                            // Several pipelines may alert the same endpoint; archive files are
                            // named by pipeline.
                            Output::Webhook { .. } | Output::Archive { .. } => continue,
                        };
                        return Err(DeployError::Conflict(format!(
                            "{what} is already an output of pipeline {}",
                            running.name
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes a pipeline and forgets its history; its channels keep their last values.
    pub fn remove(&self, name: &str) -> bool {
        let _one = lock(&self.changing);
        lock(&self.history).remove(name);
        lock(&self.publisher).remove(name)
    }

    /// The definitions of pipeline `name` deployed since it went live, oldest first (the
    /// last one is live or warming up).
    pub fn history(&self, name: &str) -> Vec<Arc<Plan>> {
        lock(&self.history).get(name).cloned().unwrap_or_default()
    }

    /// Promotes the shadow model of pipeline `name`: its latest definition is deployed again
    /// as a new version, with the shadow as the model and the model as the shadow.
    pub fn promote(&self, name: &str) -> Result<Deployed, DeployError> {
        let _one = lock(&self.changing);
        let (latest, version) = self.latest(name)?;
        let text = pipeline::rewrite::promoted(&latest.source, version).map_err(|e| match e {
            pipeline::rewrite::RewriteError::NoShadow => DeployError::Conflict(format!(
                "pipeline {name} version {} has no shadow model to promote: deploy one with `shadow` in [model]",
                latest.version
            )),
            other => DeployError::Internal(other.to_string()),
        })?;
        self.deploy_text_held(
            &format!("{name}.toml (promoted v{})", latest.version),
            &text,
        )
    }

    /// Rolls pipeline `name` back: the definition deployed before its latest one is deployed
    /// again as a new version. Rolling back twice returns to where it was.
    pub fn rollback(&self, name: &str) -> Result<Deployed, DeployError> {
        let _one = lock(&self.changing);
        let (latest, version) = self.latest(name)?;
        let history = self.history(name);
        let Some(previous) = history.len().checked_sub(2).map(|i| history[i].clone()) else {
            return Err(DeployError::NotFound(format!(
                "pipeline {name} has no version before {} to roll back to",
                latest.version
            )));
        };
        let text = pipeline::rewrite::with_version(&previous.source, version)
            .map_err(|e| DeployError::Internal(e.to_string()))?;
        self.deploy_text_held(&format!("{name}.toml (v{} again)", previous.version), &text)
    }

    /// Plans `text` with the registry model it names and deploys it, `changing` held.
    fn deploy_text_held(&self, file: &str, text: &str) -> Result<Deployed, DeployError> {
        let plan =
            pipeline::plan::plan(file, text, &self.registry).map_err(DeployError::Invalid)?;
        let model = Model::for_plan(&plan, &self.registry)
            .map_err(|e| DeployError::Unavailable(format!("model: {e}")))?;
        self.deploy_held(plan, model)
    }

    /// The latest deployed definition of a running pipeline, and the version a new one gets:
    /// one above every version deployed since it went live.
    fn latest(&self, name: &str) -> Result<(Arc<Plan>, u32), DeployError> {
        let running = lock(&self.publisher)
            .pipelines()
            .into_iter()
            .find(|(p, _)| p.name == name)
            .map(|(live, warming)| warming.unwrap_or(live));
        let history = self.history(name);
        let (Some(_), Some(latest)) = (running, history.last().cloned()) else {
            return Err(DeployError::NotFound(format!("no pipeline named {name}")));
        };
        let top = history.iter().map(|p| p.version).max().unwrap_or(0);
        let next = top.checked_add(1).ok_or_else(|| {
            DeployError::Conflict(format!("pipeline {name} is at the highest version"))
        })?;
        Ok((latest, next))
    }

    /// Runs the engine until it stops, publishing to the hub. `on_delta` sees each delta in
    /// order (the demo prints it; `--delta-log` writes it).
    pub fn run_engine(
        &self,
        on_delta: impl FnMut(&Delta) + Send + 'static,
    ) -> Result<EngineStats, AppError> {
        self.run_engine_with(Box::new(on_delta))
    }

    pub fn run_engine_with(&self, sink: Box<dyn DeltaSink>) -> Result<EngineStats, AppError> {
        lock(&self.publisher).set_sink(sink);
        let (tx, rx) = mpsc::sync_channel::<SinkMsg>(SINK_BOUND);
        let publisher = self.publisher.clone();
        let store = self.checkpoints.clone();
        let interval = Duration::from_millis(self.cfg.engine.checkpoint_interval_ms.max(1));
        let pump = thread::Builder::new()
            .name("sideline-sink".into())
            .spawn(move || {
                let mut last = Instant::now();
                loop {
                    match rx.recv_timeout(interval) {
                        Ok(msg) => lock(&publisher).handle(msg),
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                    if last.elapsed() >= interval {
                        last = Instant::now();
                        match store.as_ref() {
                            Some(store) => write_checkpoint(&publisher, store),
                            None => lock(&publisher).fold_finished_games(),
                        }
                    }
                }
                engine::thread_cpu()
            })
            .map_err(|e| AppError::Server(e.to_string()))?;
        let result = engine::run(&self.cfg, self.control.clone(), tx, self.stop.clone());
        let publisher_cpu = pump.join().unwrap_or_default();
        lock(&self.publisher).flush();
        if let Some(store) = &self.checkpoints {
            write_checkpoint(&self.publisher, store);
        }
        Ok(EngineStats {
            publisher_cpu,
            ..result?
        })
    }

    /// Stops the network side.
    pub fn shutdown(self: Arc<Self>) {
        match Arc::try_unwrap(self) {
            Ok(app) => app
                .runtime
                .shutdown_timeout(std::time::Duration::from_secs(1)),
            Err(_) => tracing::debug!("app still shared at shutdown; the runtime stops on drop"),
        }
    }
}

/// Takes a checkpoint under the publisher's lock and writes it without it. A failed write is
/// logged and counted; the previous checkpoint stays.
fn write_checkpoint(publisher: &SharedPublisher, store: &Store) {
    let cp = {
        let mut p = lock(publisher);
        p.fold_finished_games();
        let cp = p.checkpoint();
        // The Kafka outputs' writes up to this checkpoint are committed first: a checkpoint
        // never claims a delivery a transaction did not make.
        if let Err(e) = p.commit_outputs() {
            tracing::error!(error = %e, "checkpoint skipped: a Kafka output did not commit");
            metrics::counter!("sideline_checkpoint_failures_total").increment(1);
            return;
        }
        cp
    };
    match store.write(&cp) {
        Ok(()) => metrics::counter!("sideline_checkpoints_written_total").increment(1),
        Err(e) => {
            tracing::error!(dir = %store.dir().display(), error = %e, "checkpoint not written");
            metrics::counter!("sideline_checkpoint_failures_total").increment(1);
        }
    }
}

/// The pipeline files the configuration names, as (file, text): every `*.toml` of
/// `engine.pipelines`, or the embedded NFL pipeline when it is empty.
pub fn configured_files(cfg: &Config) -> Result<Vec<(String, String)>, DeployError> {
    match cfg.engine.pipelines.as_str() {
        "" => Ok(vec![(
            pipeline::DEFAULT_PIPELINE.0.to_string(),
            pipeline::DEFAULT_PIPELINE.1.to_string(),
        )]),
        dir => pipeline::files_in(Path::new(dir))
            .map_err(|e| DeployError::Unavailable(format!("reading {dir}: {e}")))?
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    DeployError::Unavailable(format!("reading {}: {e}", p.display()))
                })?;
                Ok((p.display().to_string(), text))
            })
            .collect(),
    }
}

/// Validates the configured pipeline files, all of them, before anything runs.
pub fn configured_plans(cfg: &Config, registry: &Registry) -> Result<Vec<Plan>, DeployError> {
    let files = configured_files(cfg)?;
    let mut errors = Vec::new();
    let mut plans = Vec::new();
    for (f, t) in &files {
        match pipeline::plan::plan(f, t, registry) {
            Ok(p) => plans.push(p),
            Err(Invalid(mut e)) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(plans)
    } else {
        Err(DeployError::Invalid(Invalid(errors)))
    }
}

/// The registry the configuration names.
pub fn registry(cfg: &Config) -> Registry {
    Registry::new(match cfg.engine.models.as_str() {
        "" => None,
        dir => Some(dir.into()),
    })
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes deltas as JSON lines: the byte-comparable delta log.
pub fn delta_logger(path: &Path) -> std::io::Result<impl FnMut(&Delta) + Send> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    Ok(move |d: &Delta| {
        let _ = serde_json::to_writer(&mut file, d);
        let _ = file.write_all(b"\n");
        let _ = file.flush();
    })
}
