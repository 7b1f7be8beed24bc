//! Typed configuration: the embedded `config/default.toml`, then a file, then `SIDELINE_*`
//! environment variables.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

/// The defaults, compiled in.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub engine: EngineConfig,
    pub kafka: KafkaConfig,
    pub server: ServerConfig,
    pub demo: DemoConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EngineConfig {
    /// timely worker threads.
    pub workers: usize,
    /// Directory of pipeline files deployed at start; empty: the embedded
    /// `pipelines/nfl_win_probability.toml`.
    pub pipelines: String,
    /// Model registry directory (`<name>/<version>/`); models compiled in are found anyway.
    pub models: String,
    /// Where checkpoints are written; empty: none (a restart starts from the beginning).
    pub checkpoint_dir: String,
    /// How often a checkpoint is written, in milliseconds.
    pub checkpoint_interval_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaConfig {
    /// Bootstrap servers; empty means the in-process mock cluster (demo only).
    pub brokers: String,
    /// Consumer group id.
    pub group_id: String,
    /// Dead-letter topic.
    pub dead_letter_topic: String,
    /// Largest record accepted, in bytes.
    pub max_record_bytes: usize,
    /// Stop once every partition has been read to its end.
    pub stop_at_end: bool,
    /// librdkafka options for every client (consumers and producers), passed through.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// librdkafka options for the consumers only (`fetch.*`, `queued.*`, ...), set after
    /// `options`. A producer given a consumer's option logs a warning for it.
    #[serde(default)]
    pub consumer_options: BTreeMap<String, String>,
}

/// What happens to an event that arrives behind the frontier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LatePolicy {
    /// Rejected to the dead-letter topic with reason `late`.
    DeadLetter,
    /// Applied at the current frontier instead of its own time.
    FoldIn,
}

impl LatePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            LatePolicy::DeadLetter => "dead-letter",
            LatePolicy::FoldIn => "fold-in",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerConfig {
    /// WebSocket listen address (port 0 picks one).
    pub ws_listen: String,
    /// Prometheus listen address; empty disables it.
    pub metrics_listen: String,
    /// Admin HTTP listen address (deploy, list and remove pipelines).
    pub admin_listen: String,
    /// Threads of the network runtime (WebSocket fan-out, admin and metrics endpoints), beside
    /// the engine's workers.
    pub threads: usize,
    /// Per-subscriber queue length.
    pub queue_capacity: usize,
    /// Deltas kept per channel.
    pub history: usize,
    /// Released games whose last value a delta channel's snapshots (and the publisher, for a
    /// new pipeline version taking over) still hold, per channel; the earliest released is
    /// forgotten first. Open games are always held.
    pub released_games: usize,
    /// Largest message (and frame) a WebSocket client may send; more is closed with 1009.
    pub max_message_bytes: usize,
    /// Subscriptions one WebSocket connection may hold; one more is refused with an error.
    pub max_subscriptions_per_connection: usize,
    /// Messages a client may send per second on average; 0: no limit. Over it: close 1008.
    pub client_messages_per_second: u32,
    /// Messages a client may send at once (the token bucket's size).
    pub client_message_burst: u32,
    /// A WebSocket Ping goes out after this long without a frame from the client; 0s: none.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A client that sends no frame (its Pong, or anything) this long after a Ping is closed
    /// with 1011.
    #[serde(with = "humantime_serde")]
    pub pong_timeout: Duration,
    /// A connection without a subscription for this long is closed with 1000; 0s: never.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A subscriber whose socket takes nothing for this long is closed with 1008; 0s: never.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DemoConfig {
    /// Replay speed multiplier; 0 = as fast as possible.
    pub speed: f64,
    /// Partitions of the demo topic.
    pub partitions: i32,
}

/// librdkafka keys sideline sets itself; configuring them is refused.
pub const OWNED_KAFKA_KEYS: [&str; 5] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.partition.eof",
    "auto.offset.reset",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(Box<figment::Error>),
    #[error("configuration: kafka.{0}.\"{1}\" is set by sideline itself: {2}")]
    OwnedKey(&'static str, String, &'static str),
    #[error("configuration: {0}")]
    Value(String),
}

impl Config {
    /// Defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(f) = file {
            fig = fig.merge(Toml::file_exact(f));
        }
        fig = fig.merge(
            Env::prefixed("SIDELINE_")
                .map(|k| k.as_str().replace("__", ".").replace('_', "-").into()),
        );
        let cfg: Config = fig
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let options = [
            ("options", &self.kafka.options),
            ("consumer-options", &self.kafka.consumer_options),
        ];
        for (section, map) in options {
            for key in map.keys() {
                if let Some(owned) = OWNED_KAFKA_KEYS.iter().find(|k| **k == key.as_str()) {
                    let hint = match *owned {
                        "bootstrap.servers" => "use kafka.brokers instead",
                        "group.id" => "use kafka.group-id instead",
                        "enable.auto.commit" => {
                            "read positions are kept in checkpoints (engine.checkpoint-dir)"
                        }
                        "enable.partition.eof" => {
                            "the engine needs to know when a partition is read to its end"
                        }
                        _ => {
                            "partitions are read from a checkpoint's positions or from their start"
                        }
                    };
                    return Err(ConfigError::OwnedKey(section, key.clone(), hint));
                }
            }
        }
        let server = &self.server;
        if server.max_message_bytes == 0 {
            return Err(ConfigError::Value(
                "server.max-message-bytes must be at least 1".into(),
            ));
        }
        if !server.ping_interval.is_zero() && server.pong_timeout.is_zero() {
            return Err(ConfigError::Value(
                "server.pong-timeout must be above 0s when server.ping-interval is set".into(),
            ));
        }
        if server.client_messages_per_second > 0 && server.client_message_burst == 0 {
            return Err(ConfigError::Value(
                "server.client-message-burst must be at least 1 when \
                 server.client-messages-per-second is set"
                    .into(),
            ));
        }
        if server.threads == 0 {
            return Err(ConfigError::Value(
                "server.threads must be at least 1".into(),
            ));
        }
        if self.engine.workers == 0 {
            return Err(ConfigError::Value(
                "engine.workers must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn defaults_load() {
        // In a Jail: the other tests set environment variables, and Jails run one at a time.
        figment::Jail::expect_with(|_| {
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.engine.workers, 2);
            assert_eq!(c.engine.pipelines, "");
            // The WebSocket limits a server gets from the defaults are WsConfig's own.
            assert_eq!(
                crate::ws::WsConfig::from(&c.server),
                crate::ws::WsConfig::default()
            );
            Ok(())
        });
    }

    #[test]
    fn a_file_then_the_environment_override_the_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "over.toml",
                "[server]\nhistory = 5\n[engine]\nworkers = 3\n",
            )?;
            jail.set_env("SIDELINE_ENGINE__WORKERS", "4");
            jail.set_env("SIDELINE_SERVER__QUEUE_CAPACITY", "7");
            jail.set_env("SIDELINE_SERVER__PONG_TIMEOUT", "1m 30s");
            let c = Config::load(Some(Path::new("over.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.server.pong_timeout, Duration::from_secs(90));
            assert_eq!(c.server.history, 5);
            assert_eq!(c.engine.workers, 4);
            assert_eq!(c.server.queue_capacity, 7);
            Ok(())
        });
    }

    #[test]
    fn zero_durations_turn_websocket_limits_off_and_a_zero_pong_timeout_is_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "off.toml",
                "[server]\nping-interval = \"0s\"\nidle-timeout = \"0s\"\n\
                 write-timeout = \"0s\"\nclient-messages-per-second = 0\n",
            )?;
            let c = Config::load(Some(Path::new("off.toml"))).map_err(|e| e.to_string())?;
            let ws = crate::ws::WsConfig::from(&c.server);
            assert_eq!(
                (
                    ws.keepalive,
                    ws.idle_timeout,
                    ws.write_timeout,
                    ws.rate_limit
                ),
                (None, None, None, None)
            );
            jail.create_file("bad.toml", "[server]\npong-timeout = \"0s\"\n")?;
            let e = Config::load(Some(Path::new("bad.toml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("pong-timeout"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn zero_threads_or_workers_are_refused() {
        figment::Jail::expect_with(|jail| {
            for (file, text, key) in [
                ("net.toml", "[server]\nthreads = 0\n", "server.threads"),
                ("work.toml", "[engine]\nworkers = 0\n", "engine.workers"),
            ] {
                jail.create_file(file, text)?;
                let e = Config::load(Some(Path::new(file))).unwrap_err().to_string();
                assert!(e.contains(key), "{e}");
            }
            jail.set_env("SIDELINE_SERVER__THREADS", "3");
            assert_eq!(
                Config::load(None)
                    .map_err(|e| e.to_string())?
                    .server
                    .threads,
                3
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_owned_kafka_options_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "[server]\nhistroy = 1\n")?;
            let e = Config::load(Some(Path::new("typo.toml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("histroy"), "{e}");
            jail.create_file("owned.toml", "[kafka.options]\n\"group.id\" = \"x\"\n")?;
            let e = Config::load(Some(Path::new("owned.toml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("group.id") && e.contains("group-id"), "{e}");
            jail.create_file(
                "owned_consumer.toml",
                "[kafka.consumer-options]\n\"auto.offset.reset\" = \"latest\"\n",
            )?;
            let e = Config::load(Some(Path::new("owned_consumer.toml")))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("kafka.consumer-options.\"auto.offset.reset\""),
                "{e}"
            );
            Ok(())
        });
    }
}
