//! Wiring: the hub and WebSocket server on a tokio runtime, Prometheus, and the engine's sink,
//! around [`crate::engine::run`].

use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use crate::config::Config;
use crate::dataflow::{Scorer, SinkMsg};
use crate::delta::Delta;
use crate::engine::{self, EngineError, EngineStats, StopSignal};
use crate::features::FeatureVec;
use crate::hub::{Hub, HubConfig};
use crate::model::WinProbModel;
use crate::ws::{self, WsConfig};

/// The channel prediction deltas are published on.
pub const PREDICTIONS: &str = "predictions";

/// Deltas buffered between the dataflow and the hub; the dataflow waits when it is full.
const SINK_BOUND: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("server: {0}")]
    Server(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("model: {0}")]
    Model(String),
}

impl Scorer for WinProbModel {
    fn version(&self) -> &str {
        WinProbModel::version(self)
    }

    fn score(&self, rows: &[FeatureVec]) -> Result<Vec<f64>, String> {
        self.score_batch(rows).map_err(|e| e.to_string())
    }
}

/// The model the config names, or the embedded default.
pub fn load_model(cfg: &Config) -> Result<Arc<dyn Scorer>, AppError> {
    let model = if cfg.model.path.is_empty() {
        WinProbModel::embedded()
    } else {
        WinProbModel::load(std::path::Path::new(&cfg.model.path))
            .map_err(|e| AppError::Model(e.to_string()))?
    };
    Ok(Arc::new(model))
}

/// The serving half: hub, WebSocket server and metrics, up before the engine starts.
pub struct Server {
    pub hub: Arc<Hub>,
    pub ws_addr: SocketAddr,
    pub stop: Arc<StopSignal>,
    runtime: tokio::runtime::Runtime,
}

impl Server {
    pub fn start(cfg: &Config) -> Result<Server, AppError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sideline-net")
            .enable_all()
            .build()
            .map_err(|e| AppError::Server(e.to_string()))?;
        let hub = Hub::new(HubConfig {
            queue_capacity: cfg.server.queue_capacity,
            history: cfg.server.history,
        });
        hub.ensure_channel(PREDICTIONS);
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
        runtime.spawn(async move {
            if let Err(e) = ws::serve(listener, hub2, WsConfig::default()).await {
                tracing::error!(error = %e, "WebSocket server stopped");
            }
        });
        let stop = StopSignal::new();
        let stop2 = stop.clone();
        runtime.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("interrupted: finishing");
                stop2.stop();
            }
        });
        Ok(Server {
            hub,
            ws_addr,
            stop,
            runtime,
        })
    }

    /// Runs the engine until it stops, publishing to the hub. `on_delta` sees each delta in
    /// order (the demo prints it; `--delta-log` writes it).
    pub fn run_engine(
        &self,
        cfg: &Config,
        scorer: Arc<dyn Scorer>,
        mut on_delta: impl FnMut(&Delta) + Send + 'static,
    ) -> Result<EngineStats, AppError> {
        let (tx, rx) = mpsc::sync_channel::<SinkMsg>(SINK_BOUND);
        let hub = self.hub.clone();
        let pump = thread::Builder::new()
            .name("sideline-sink".into())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        SinkMsg::Deltas { deltas, ingest_ms } => {
                            hub.publish(PREDICTIONS, &deltas, &ingest_ms);
                            deltas.iter().for_each(&mut on_delta);
                        }
                        SinkMsg::Progress(t) => hub.progress(PREDICTIONS, t),
                    }
                }
            })
            .map_err(|e| AppError::Server(e.to_string()))?;
        let result = engine::run(cfg, scorer, tx, self.stop.clone());
        let _ = pump.join();
        Ok(result?)
    }

    /// Stops the network side.
    pub fn shutdown(self) {
        self.runtime
            .shutdown_timeout(std::time::Duration::from_secs(1));
    }
}

/// Writes deltas as JSON lines: the byte-comparable delta log.
pub fn delta_logger(path: &std::path::Path) -> std::io::Result<impl FnMut(&Delta) + Send> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    Ok(move |d: &Delta| {
        let _ = serde_json::to_writer(&mut file, d);
        let _ = file.write_all(b"\n");
    })
}
