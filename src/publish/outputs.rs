//! A pipeline version's own outputs: its Kafka producer, webhook endpoints and archive.

use std::sync::Mutex;

use crate::alert::webhook::{DeadLetter, DeadWebhook, WebhookConfig, Webhooks};
use crate::config::KafkaConfig;
use crate::dataflow::Valued;
use crate::output::KafkaOutput;
use crate::pipeline::plan::Output;
use crate::pipeline::Plan;

/// A version's own output resources: a Kafka producer when it has Kafka outputs, and its
/// webhook endpoints. Started at deploy (without the publisher's lock), retired with the
/// version (flushed and dropped on a thread of their own).
#[derive(Default)]
pub struct VersionOutputs {
    pub(super) kafka: Option<KafkaOutput>,
    pub(super) webhooks: Option<Webhooks>,
    archive: Option<Mutex<crate::archive::Archive>>,
}

impl VersionOutputs {
    /// The outputs `plan` needs; webhook secrets are read from the environment now. With
    /// `transactional`, the Kafka output commits at each checkpoint.
    pub fn start(
        plan: &Plan,
        kafka_cfg: &KafkaConfig,
        transactional: bool,
    ) -> Result<VersionOutputs, String> {
        let wants = plan
            .outputs
            .iter()
            .any(|o| matches!(o, Output::Kafka { .. } | Output::KafkaAlerts { .. }));
        let kafka = match (wants, transactional) {
            (false, _) => None,
            (true, false) => Some(KafkaOutput::new(kafka_cfg)),
            (true, true) => Some(KafkaOutput::transactional(
                kafka_cfg,
                &format!("{}.{}.v{}", kafka_cfg.group_id, plan.name, plan.version),
            )),
        }
        .transpose()
        .map_err(|e| format!("kafka output: {e}"))?;
        let mut hooks = Vec::new();
        for o in &plan.outputs {
            if let Output::Webhook { url, secret_env } = o {
                let secret = std::env::var(secret_env).map_err(|_| {
                    format!("webhook {url}: the environment variable {secret_env} (its signing secret) is not set")
                })?;
                let name = format!("{}#{}", plan.name, hooks.len());
                hooks.push(WebhookConfig::new(name, url.clone(), secret));
            }
        }
        let webhooks = match hooks.is_empty() {
            true => None,
            false => {
                // An alert no endpoint took is kept: a record in the dead-letter topic.
                let producer = std::sync::Arc::new(
                    KafkaOutput::new(kafka_cfg)
                        .map_err(|e| format!("webhook dead letters: {e}"))?,
                );
                let topic = kafka_cfg.dead_letter_topic.clone();
                let pipeline = plan.name.clone();
                let dead: DeadLetter = Box::new(move |d: DeadWebhook| {
                    tracing::warn!(
                        pipeline,
                        endpoint = d.endpoint,
                        alert = d.alert.id,
                        attempts = d.attempts,
                        error = d.last_error,
                        "alert not delivered to its webhook: dead-lettered"
                    );
                    metrics::counter!("sideline_webhook_dead_letters_total", "reason" => d.reason.code())
                        .increment(1);
                    producer.send_dead_webhook(&topic, &d);
                });
                Some(Webhooks::start(hooks, dead))
            }
        };
        let archive = plan
            .outputs
            .iter()
            .find_map(|o| match o {
                Output::Archive { dir, rows_per_file } => Some(
                    crate::archive::Archive::open(plan, dir, *rows_per_file)
                        .map(Mutex::new)
                        .map_err(|e| format!("archive {dir}: {e}")),
                ),
                _ => None,
            })
            .transpose()?;
        Ok(VersionOutputs {
            kafka,
            webhooks,
            archive,
        })
    }

    /// Archives a completed time's rows (when the version has an archive). Release markers are not rows (they have no
    /// variables: a batch holding one would not write).
    pub(super) fn archive(&self, values: &[Valued], model_version: &str) {
        let Some(a) = &self.archive else {
            return;
        };
        let rows: std::borrow::Cow<'_, [Valued]> = if values.iter().any(|v| v.closed) {
            values.iter().filter(|v| !v.closed).cloned().collect()
        } else {
            values.into()
        };
        a.lock()
            .unwrap_or_else(|e| e.into_inner())
            .append(&rows, model_version);
    }

    pub(super) fn flush(&self) {
        if let Some(k) = &self.kafka {
            k.flush();
        }
        if let Some(a) = &self.archive {
            a.lock().unwrap_or_else(|e| e.into_inner()).flush();
        }
        if let Some(w) = &self.webhooks {
            w.flush(std::time::Duration::from_secs(30));
        }
    }

    /// Flushes and drops on another thread: never under the publisher's lock.
    pub(super) fn retire(self) {
        let _ = std::thread::Builder::new()
            .name("sideline-retire".into())
            .spawn(move || {
                self.flush();
                drop(self);
            });
    }
}
