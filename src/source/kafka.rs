//! Kafka transport: reads the partitions a worker owns, and writes rejects to the dead-letter
//! topic. Knows bytes, offsets and partitions; knows nothing of JSON.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::ingest::Record;
use crate::config::KafkaConfig;
use crate::format::Reject;

/// Failures of the Kafka transport. All are the external system's; most are worth a retry.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: KafkaError,
    },
    #[error("kafka: topic {0} does not exist or has no partitions")]
    NoSuchTopic(String),
    #[error("kafka: the dead-letter topic {0} does not exist; create it (sideline creates no topics) or set kafka.dead-letter-topic")]
    NoDeadLetterTopic(String),
}

fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> SourceError {
    let context = context.into();
    move |source| SourceError::Kafka { context, source }
}

/// The consumers' librdkafka configuration: sideline's defaults, the user's options over them,
/// then the keys sideline owns.
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("statistics.interval.ms", "1000");
    // librdkafka's default is 500 ms. A broker answers a waiting fetch as soon as records
    // arrive, so this bounds only how often an idle consumer asks; brokers that hold the fetch
    // for the whole wait (librdkafka's mock cluster, which `sideline demo` sets to 1 ms) add
    // it to latency (p50 50 ms -> 420 ms in benches/replay.rs at 500 ms). Overridable.
    cc.set("fetch.wait.max.ms", "10");
    // Asking about a topic must not create it.
    cc.set("allow.auto.create.topics", "false");
    for (k, v) in cfg.options.iter().chain(&cfg.consumer_options) {
        cc.set(k, v);
    }
    cc.set("bootstrap.servers", &cfg.brokers)
        .set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    cc
}

/// Publishes librdkafka's per-partition consumer lag as a gauge, and what the consumer sees of
/// the brokers (errors, connections) through [`super::kafka_health`]. Counts the errors, so the
/// reader knows its partitions' "read to the end" may be stale (see [`KafkaReader::errors`]).
#[derive(Default)]
pub struct LagContext {
    errors: Arc<std::sync::atomic::AtomicU64>,
}

impl ClientContext for LagContext {
    /// Reaching the end of a partition is news, not an error (the partition queues report it).
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(
            error,
            KafkaError::PartitionEOF(_)
                | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        );
        if !eof {
            tracing::warn!(%error, reason, "kafka client error");
            super::kafka_health::observe_error(&error, reason);
            self.errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn stats(&self, stats: Statistics) {
        super::kafka_health::observe_stats(&stats);
        for (topic, t) in stats.topics {
            for (partition, p) in t.partitions {
                if partition >= 0 && p.consumer_lag >= 0 {
                    metrics::gauge!("sideline_consumer_lag", "topic" => topic.clone(), "partition" => partition.to_string())
                        .set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for LagContext {}

/// Every (topic, partition) of `topics`, sorted: the list workers split by index.
pub fn partitions(cfg: &KafkaConfig, topics: &[String]) -> Result<Vec<(String, i32)>, SourceError> {
    let consumer: BaseConsumer = client_config(cfg)
        .create()
        .map_err(kafka("creating a metadata client"))?;
    let mut out = Vec::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(kafka(format!("metadata of {topic}")))?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .ok_or_else(|| SourceError::NoSuchTopic(topic.clone()))?;
        out.extend(t.partitions().iter().map(|p| (topic.clone(), p.id())));
    }
    out.sort();
    Ok(out)
}

/// What a poll found.
pub enum Polled<'a> {
    Record(Record<'a>),
    /// The partition is read to its end.
    End {
        topic: &'a str,
        partition: i32,
    },
    /// A fetch of the partition failed (logged and counted): it may have records the consumer
    /// cannot see.
    Failed {
        topic: &'a str,
        partition: i32,
    },
}

/// Reads the partitions one worker owns, each through its own queue.
pub struct KafkaReader {
    consumer: Arc<BaseConsumer<LagContext>>,
    errors: Arc<std::sync::atomic::AtomicU64>,
    queues: Vec<(
        String,
        i32,
        rdkafka::consumer::base_consumer::PartitionQueue<LagContext>,
    )>,
    /// Of `errors`, those that came on a partition's own queue ([`Polled::Failed`]).
    partition_errors: std::cell::Cell<u64>,
    /// Per queue, the offset after the last record handed over (before any, where it was
    /// assigned from): where [`KafkaReader::rearm_end`] seeks.
    next: Vec<std::cell::Cell<i64>>,
}

impl KafkaReader {
    /// Assigns `owned`, each from its offset in `starts` or else from its beginning.
    pub fn new(
        cfg: &KafkaConfig,
        owned: &[(String, i32)],
        starts: &std::collections::BTreeMap<(String, i32), i64>,
    ) -> Result<Self, SourceError> {
        let context = LagContext::default();
        let errors = context.errors.clone();
        let consumer: Arc<BaseConsumer<LagContext>> = Arc::new(
            client_config(cfg)
                .create_with_context(context)
                .map_err(kafka("creating a consumer"))?,
        );
        let mut tpl = TopicPartitionList::new();
        for (t, p) in owned {
            // From the beginning is offset 0, not `Offset::Beginning`: librdkafka asks the
            // broker where a logical offset is, and asked before it knows the partition's
            // leader (always, right after `assign`) it waits a fixed 500 ms
            // (`rd_kafka_toppar_offset_request`). Where the log no longer starts at 0,
            // `auto.offset.reset = earliest` moves the fetch to its start.
            let start = starts
                .get(&(t.clone(), *p))
                .map_or(Offset::Offset(0), |o| Offset::Offset(*o));
            tpl.add_partition_offset(t, *p, start)
                .map_err(kafka("assigning"))?;
        }
        consumer.assign(&tpl).map_err(kafka("assigning"))?;
        let mut queues = Vec::new();
        let mut next = Vec::new();
        for (t, p) in owned {
            next.push(std::cell::Cell::new(
                starts.get(&(t.clone(), *p)).copied().unwrap_or(0),
            ));
            let q = consumer
                .split_partition_queue(t, *p)
                .ok_or_else(|| SourceError::NoSuchTopic(t.clone()))?;
            queues.push((t.clone(), *p, q));
        }
        Ok(KafkaReader {
            consumer,
            errors,
            queues,
            partition_errors: std::cell::Cell::new(0),
            next,
        })
    }

    /// How many client errors (a broker down, a failed fetch, ...) the consumer has seen. While
    /// the broker is out of reach a partition that was read to its end may have records the
    /// consumer cannot see, so after an error it no longer counts as read to its end (nor as
    /// idle) until the broker says so again.
    ///
    /// An error that comes on one partition's queue (a failed fetch) is that partition's alone
    /// ([`Polled::Failed`]), and not counted here. It may come long after the fetch: a partition
    /// held back for `read-ahead` is not read, and neither is its error. Counted here, such an
    /// error once made every partition read to its end forget it, and since librdkafka says a
    /// partition is at its end once per end offset, a drain with nothing new to read never
    /// finished.
    pub fn errors(&self) -> u64 {
        self.errors
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(self.partition_errors.get())
    }

    /// Asks librdkafka to say again when the partition is read to its end ([`Polled::End`]):
    /// for one that was when the consumer lost sight of the broker, and for every partition
    /// when a drain begins. librdkafka says it once per end offset, so with nothing new since,
    /// a partition that forgot it would never go idle (holding the frontier back) and a drain
    /// would never end. A seek to the next unread
    /// offset restarts the partition's fetch, and with it that count: the first fetch answer
    /// at the end says so again, which is the fresh word from the broker the partition waits
    /// for. Records fetched and not yet handed over are dropped by the seek and fetched again.
    pub fn rearm_end(&self, topic: &str, partition: i32) {
        let Some(i) = self
            .queues
            .iter()
            .position(|(t, p, _)| t == topic && *p == partition)
        else {
            return;
        };
        let offset = self.next[i].get();
        // Without a wait: librdkafka carries the seek out when the broker answers.
        if let Err(e) = self
            .consumer
            .seek(topic, partition, Offset::Offset(offset), Duration::ZERO)
        {
            tracing::warn!(%topic, partition, offset, error = %e, "kafka seek to re-read the end failed");
        }
    }

    /// The owned partitions, in the order [`KafkaReader::poll`] takes `held` in.
    pub fn owned(&self) -> impl Iterator<Item = (&str, i32)> {
        self.queues.iter().map(|(t, p, _)| (t.as_str(), *p))
    }

    /// Hands up to `max` records per partition to `f`, except from the partitions `held` says
    /// (by [`KafkaReader::owned`] position; their records wait in librdkafka's queue, which
    /// stops fetching at `queued.max.messages.kbytes`), and serves librdkafka's events.
    /// Returns how many records it handed over.
    ///
    /// Records fetched between `assign` and `split_partition_queue` stay on the consumer's
    /// main queue (rdkafka's docs say so). All of them are there before the first poll, and
    /// each precedes every record of its partition on the partition's own queue, so the main
    /// queue is drained first: they are handed over in their partition's order, never lost.
    pub fn poll(&self, max: usize, held: &[bool], mut f: impl FnMut(Polled<'_>)) -> usize {
        let mut n = 0;
        while let Some(event) = self.consumer.poll(Duration::ZERO) {
            match event {
                Ok(m) => {
                    let Some((i, (topic, partition, _))) = self
                        .queues
                        .iter()
                        .enumerate()
                        .find(|(_, (t, p, _))| t == m.topic() && *p == m.partition())
                    else {
                        tracing::error!(
                            topic = m.topic(),
                            partition = m.partition(),
                            offset = m.offset(),
                            "record of a partition this reader does not own: not processed"
                        );
                        continue;
                    };
                    n += 1;
                    self.next[i].set(m.offset() + 1);
                    f(Polled::Record(Record {
                        topic,
                        partition: *partition,
                        offset: m.offset(),
                        timestamp_ms: m.timestamp().to_millis(),
                        key: m.key(),
                        payload: m.payload().unwrap_or(&[]),
                    }));
                }
                Err(KafkaError::PartitionEOF(p)) => {
                    // Only the partition number: unambiguous when one topic has it.
                    let mut owners = self.queues.iter().filter(|(_, q, _)| *q == p);
                    if let (Some((topic, partition, _)), None) = (owners.next(), owners.next()) {
                        f(Polled::End {
                            topic,
                            partition: *partition,
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "kafka consumer error"),
            }
        }
        for (i, (topic, partition, queue)) in self.queues.iter().enumerate() {
            if held.get(i).copied().unwrap_or(false) {
                continue;
            }
            for _ in 0..max {
                match queue.poll(Duration::ZERO) {
                    None => break,
                    Some(Ok(m)) => {
                        n += 1;
                        self.next[i].set(m.offset() + 1);
                        f(Polled::Record(Record {
                            topic,
                            partition: *partition,
                            offset: m.offset(),
                            timestamp_ms: m.timestamp().to_millis(),
                            key: m.key(),
                            payload: m.payload().unwrap_or(&[]),
                        }));
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) => {
                        f(Polled::End {
                            topic,
                            partition: *partition,
                        });
                        break;
                    }
                    Some(Err(e)) => {
                        // `LagContext::error` counted it, as the consumer's.
                        self.partition_errors.set(self.partition_errors.get() + 1);
                        tracing::warn!(%topic, partition, error = %e, "kafka read error");
                        f(Polled::Failed {
                            topic,
                            partition: *partition,
                        });
                        break;
                    }
                }
            }
        }
        n
    }
}

/// Counts and logs dead-letter writes the broker did not confirm: a reject is never lost
/// without a trace.
pub struct DeadLetterContext;

impl ClientContext for DeadLetterContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka dead-letter producer error");
        super::kafka_health::observe_error(&error, reason);
    }
}

impl ProducerContext for DeadLetterContext {
    /// Where the rejected record came from, for the log line if its write fails.
    type DeliveryOpaque = Box<String>;

    fn delivery(&self, result: &DeliveryResult<'_>, source: Self::DeliveryOpaque) {
        if let Err((e, _)) = result {
            metrics::counter!("sideline_dead_letter_failures_total").increment(1);
            tracing::error!(error = %e, record = %source, "dead-letter write failed");
        }
    }
}

/// How long a dead-letter write waits for room in librdkafka's queue before giving up (and
/// logging the record instead).
const DEAD_LETTER_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// The dead-letter writer: a rejected record's original bytes and key, with its source and
/// reason in headers (`sideline.topic`, `sideline.partition`, `sideline.offset`,
/// `sideline.reason`, `sideline.detail`). Writes are asynchronous; failures are counted in
/// `sideline_dead_letter_failures_total` and logged with the record's source.
pub struct DeadLetters {
    producer: ThreadedProducer<DeadLetterContext>,
    topic: String,
}

impl DeadLetters {
    /// Fails when the dead-letter topic does not exist: sideline never creates topics, and a
    /// reject with nowhere to go would be lost.
    pub fn new(cfg: &KafkaConfig) -> Result<Self, SourceError> {
        let mut cc = ClientConfig::new();
        for (k, v) in &cfg.options {
            cc.set(k, v);
        }
        cc.set("bootstrap.servers", &cfg.brokers)
            .set("enable.idempotence", "true");
        let producer: ThreadedProducer<DeadLetterContext> = cc
            .create_with_context(DeadLetterContext)
            .map_err(kafka("creating the dead-letter producer"))?;
        let md = producer
            .client()
            .fetch_metadata(Some(&cfg.dead_letter_topic), Duration::from_secs(10))
            .map_err(kafka(format!("metadata of {}", cfg.dead_letter_topic)))?;
        let exists = md.topics().iter().any(|t| {
            t.name() == cfg.dead_letter_topic && t.error().is_none() && !t.partitions().is_empty()
        });
        if !exists {
            return Err(SourceError::NoDeadLetterTopic(
                cfg.dead_letter_topic.clone(),
            ));
        }
        Ok(DeadLetters {
            producer,
            topic: cfg.dead_letter_topic.clone(),
        })
    }

    /// Writes a rejected record with why, and which pipeline refused it.
    pub fn send(&self, pipeline: &str, rec: &Record<'_>, reject: &Reject) {
        let partition = rec.partition.to_string();
        let offset = rec.offset.to_string();
        let source = format!("{}/{}@{} ({reject})", rec.topic, rec.partition, rec.offset);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "sideline.topic",
                value: Some(rec.topic),
            })
            .insert(Header {
                key: "sideline.partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "sideline.offset",
                value: Some(&offset),
            })
            .insert(Header {
                key: "sideline.reason",
                value: Some(reject.code.as_str()),
            })
            .insert(Header {
                key: "sideline.detail",
                value: Some(&reject.detail),
            })
            .insert(Header {
                key: "sideline.pipeline",
                value: Some(pipeline),
            });
        let mut record =
            BaseRecord::<[u8], [u8], Box<String>>::with_opaque_to(&self.topic, Box::new(source))
                .payload(rec.payload)
                .headers(headers);
        if let Some(k) = rec.key {
            record = record.key(k);
        }
        let deadline = std::time::Instant::now() + DEAD_LETTER_QUEUE_WAIT;
        let mut record = Some(record);
        while let Some(r) = record.take() {
            match self.producer.send(r) {
                Ok(()) => {}
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                    record = Some(r);
                }
                Err((e, r)) => {
                    metrics::counter!("sideline_dead_letter_failures_total").increment(1);
                    tracing::error!(error = %e, record = %r.delivery_opaque, "dead-letter write failed");
                }
            }
        }
    }

    /// Waits for outstanding dead-letter writes; what is still unconfirmed is logged.
    pub fn flush(&self) {
        if let Err(e) = self.producer.flush(Duration::from_secs(30)) {
            tracing::error!(error = %e, pending = self.producer.in_flight_count(), "dead-letter writes unconfirmed at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Consumer options reach the consumers after the common ones; sideline's own keys win.
    #[test]
    fn consumer_options_override_the_common_ones_for_consumers() {
        let mut cfg = crate::config::Config::load(None).unwrap().kafka;
        cfg.options.insert("fetch.wait.max.ms".into(), "50".into());
        cfg.options.insert("client.id".into(), "common".into());
        cfg.consumer_options
            .insert("fetch.wait.max.ms".into(), "3".into());
        let cc = client_config(&cfg);
        assert_eq!(cc.get("fetch.wait.max.ms"), Some("3"));
        assert_eq!(cc.get("client.id"), Some("common"));
        assert_eq!(cc.get("auto.offset.reset"), Some("earliest"));
    }
}
