//! The Kafka output of deltas: `[[output]] kind = "kafka"` in a pipeline file.
//!
//! Each delta is one record: key the game id (a game's deltas stay in order on one
//! partition), value the delta's JSON (the same object WebSocket subscribers get), headers
//! `sideline.pipeline`, `sideline.seq` and `sideline.id` (the delta's stable id). The producer
//! is idempotent; writes are asynchronous and never block the dataflow beyond librdkafka's
//! queue; failures are counted in `sideline_output_failures_total` and logged.
//!
//! With checkpoints on, the producer is transactional (`transactional.id` =
//! `<group-id>.<pipeline>.v<version>`, the same after a restart): each checkpoint commits what
//! was written since the last one before the checkpoint file is written, and a restarted
//! engine's producer fences the killed one and aborts its open transaction. A `read_committed`
//! consumer of a real Kafka cluster then sees every delta once; deltas written after the last
//! checkpoint are written again after a restart with the same ids, so a consumer that does not
//! read committed (or a broker that does not hide aborted records: librdkafka's mock cluster,
//! tansu) drops repeats by `sideline.id`.

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

/// How long a transaction may take to start or commit.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes deltas to Kafka topics.
pub struct KafkaOutput {
    producer: ThreadedProducer<OutputContext>,
    transactional: bool,
}

impl KafkaOutput {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, rdkafka::error::KafkaError> {
        Self::create(cfg, None)
    }

    /// A transactional producer: writes become visible to `read_committed` consumers at each
    /// [`KafkaOutput::commit`].
    pub fn transactional(cfg: &KafkaConfig, id: &str) -> Result<Self, rdkafka::error::KafkaError> {
        Self::create(cfg, Some(id))
    }

    fn create(cfg: &KafkaConfig, id: Option<&str>) -> Result<Self, rdkafka::error::KafkaError> {
        let mut cc = ClientConfig::new();
        for (k, v) in &cfg.options {
            cc.set(k, v);
        }
        cc.set("bootstrap.servers", &cfg.brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5");
        if let Some(id) = id {
            cc.set("transactional.id", id);
        }
        let producer: ThreadedProducer<OutputContext> = cc.create_with_context(OutputContext)?;
        if id.is_some() {
            // Fences a previous producer with this id (a killed engine) and aborts its open
            // transaction.
            producer.init_transactions(TRANSACTION_TIMEOUT)?;
            producer.begin_transaction()?;
        }
        Ok(KafkaOutput {
            producer,
            transactional: id.is_some(),
        })
    }

    /// Commits the writes since the last commit and begins the next transaction (nothing for a
    /// producer that is not transactional). On an error the transaction is aborted and a new
    /// one begun: the caller must not record the writes as delivered.
    pub fn commit(&self) -> Result<(), rdkafka::error::KafkaError> {
        if !self.transactional {
            return Ok(());
        }
        let committed = self.producer.commit_transaction(TRANSACTION_TIMEOUT);
        if let Err(e) = &committed {
            tracing::error!(error = %e, "Kafka output transaction not committed: aborting it");
            metrics::counter!("sideline_output_transaction_failures_total").increment(1);
            let _ = self.producer.abort_transaction(TRANSACTION_TIMEOUT);
        }
        self.producer.begin_transaction()?;
        committed
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
                })
                .insert(Header {
                    key: "sideline.id",
                    value: Some(&d.id),
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

    /// Waits for outstanding writes (a transactional producer commits them).
    pub fn flush(&self) {
        if self.transactional {
            let _ = self.commit();
            return;
        }
        if let Err(e) = self.producer.flush(Duration::from_secs(30)) {
            tracing::error!(error = %e, "Kafka output writes unconfirmed at shutdown");
        }
    }
}
