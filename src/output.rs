//! The Kafka output of deltas: `[[output]] kind = "kafka"` in a pipeline file.
//!
//! Each delta is one record: key the game id (a game's deltas stay in order on one
//! partition), value the delta's JSON (the same object WebSocket subscribers get), headers
//! `sideline.pipeline` and `sideline.seq`. The producer is idempotent; writes are
//! asynchronous and never block the dataflow beyond librdkafka's queue; failures are counted in
//! `sideline_output_failures_total` and logged.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::config::KafkaConfig;
use crate::delta::Delta;

/// Counts and logs failed deliveries.
pub struct OutputContext;

impl ClientContext for OutputContext {}

impl ProducerContext for OutputContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            metrics::counter!("sideline_output_failures_total").increment(1);
            tracing::error!(error = %e, "a delta could not be written to its Kafka output");
        }
    }
}

/// How long a record waits for room in librdkafka's queue (a broker that is down fills it)
/// before it is counted as failed and logged: the publisher, and so the dataflow, waits
/// meanwhile.
const QUEUE_FULL_WAIT: Duration = Duration::from_secs(10);

/// Writes deltas to Kafka topics.
pub struct KafkaOutput {
    producer: ThreadedProducer<OutputContext>,
}

impl KafkaOutput {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, rdkafka::error::KafkaError> {
        let mut cc = ClientConfig::new();
        for (k, v) in &cfg.options {
            cc.set(k, v);
        }
        cc.set("bootstrap.servers", &cfg.brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5");
        Ok(KafkaOutput {
            producer: cc.create_with_context(OutputContext)?,
        })
    }

    pub fn send(&self, topic: &str, deltas: &[Delta]) {
        for d in deltas {
            let payload = match serde_json::to_vec(d) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "encoding a delta failed");
                    continue;
                }
            };
            let seq = d.seq.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "sideline.pipeline",
                    value: Some(&d.pipeline),
                })
                .insert(Header {
                    key: "sideline.seq",
                    value: Some(&seq),
                });
            self.produce(topic, d.game_id.as_bytes(), &payload, headers, d.seq);
        }
    }

    fn produce(&self, topic: &str, key: &[u8], payload: &[u8], headers: OwnedHeaders, seq: u64) {
        let deadline = std::time::Instant::now() + QUEUE_FULL_WAIT;
        let mut record = Some(
            BaseRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(headers),
        );
        while let Some(r) = record.take() {
            match self.producer.send(r) {
                Ok(()) => {}
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) if std::time::Instant::now() < deadline => {
                    // Full queue: wait a little for deliveries rather than drop a record, but
                    // not without bound: the publisher (and so the dataflow) waits meanwhile.
                    std::thread::sleep(Duration::from_millis(1));
                    record = Some(r);
                }
                Err((e, _)) => {
                    metrics::counter!("sideline_output_failures_total").increment(1);
                    tracing::error!(error = %e, topic, seq, "a record could not be queued for its Kafka output");
                }
            }
        }
    }

    /// Writes alert changes, one record per change keyed by game, headers as for deltas.
    pub fn send_alerts(&self, topic: &str, alerts: &[crate::alert::Alert]) {
        for a in alerts {
            let payload = match serde_json::to_vec(a) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "encoding an alert failed");
                    continue;
                }
            };
            let seq = a.seq.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "sideline.pipeline",
                    value: Some(&a.pipeline),
                })
                .insert(Header {
                    key: "sideline.seq",
                    value: Some(&seq),
                })
                .insert(Header {
                    key: "sideline.alert-id",
                    value: Some(&a.id),
                });
            self.produce(topic, a.game_id.as_bytes(), &payload, headers, a.seq);
        }
    }

    /// Writes an alert a webhook could not take to the dead-letter topic: the alert's JSON,
    /// with `sideline.reason` (`webhook_<code>`), `sideline.detail` (the last error),
    /// `sideline.endpoint` and `sideline.attempts`.
    pub fn send_dead_webhook(&self, topic: &str, dead: &crate::alert::webhook::DeadWebhook) {
        let payload = match serde_json::to_vec(&dead.alert) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "encoding an alert failed");
                return;
            }
        };
        let reason = format!("webhook_{}", dead.reason.code());
        let attempts = dead.attempts.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "sideline.reason",
                value: Some(&reason),
            })
            .insert(Header {
                key: "sideline.detail",
                value: Some(&dead.last_error),
            })
            .insert(Header {
                key: "sideline.endpoint",
                value: Some(&dead.endpoint),
            })
            .insert(Header {
                key: "sideline.attempts",
                value: Some(&attempts),
            })
            .insert(Header {
                key: "sideline.pipeline",
                value: Some(&dead.alert.pipeline),
            });
        self.produce(
            topic,
            dead.alert.game_id.as_bytes(),
            &payload,
            headers,
            dead.alert.seq,
        );
    }

    /// Waits for outstanding writes.
    pub fn flush(&self) {
        if let Err(e) = self.producer.flush(Duration::from_secs(30)) {
            tracing::error!(error = %e, "Kafka output writes unconfirmed at shutdown");
        }
    }
}
