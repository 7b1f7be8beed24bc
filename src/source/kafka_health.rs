//! Kafka connectivity as the engine's consumers see it (and the errors of its dead-letter
//! producer), for metrics and `GET /health`.
//!
//! librdkafka tells each client's context two things: errors (a broker connection failed, all
//! brokers are down, a fetch failed) and, every `statistics.interval.ms`, the state of every
//! broker it knows. [`observe_error`] counts the first in `sideline_kafka_errors_total{kind}`;
//! [`observe_stats`] keeps the second per client and publishes, over the clients that reported
//! in the last [`FRESH`]:
//!
//! - `sideline_kafka_brokers_up`: brokers some client is connected to and none has lost;
//! - `sideline_kafka_brokers_down`: brokers a client was, or is trying to get, connected to
//!   and is not, or that lead a partition it reads and it no longer lists (a client that never
//!   needed a broker does not count it either way);
//! - `sideline_kafka_partitions_unavailable`: partitions read whose leader is not connected;
//! - `sideline_kafka_broker_rtt_seconds{broker}`: the slowest client's mean round trip.
//!
//! [`status`] sums that up for the health endpoint. The state is per process, like the
//! `metrics` recorder: a process that runs several engines (tests) sees them together.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use serde::Serialize;

/// How long a client's last statistics count: a dropped consumer stops reporting, and is
/// forgotten after this.
pub const FRESH: Duration = Duration::from_secs(10);

/// One client's view of one broker.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Link {
    /// Connected (librdkafka `UP`, or `UPDATE` while it refreshes the connection).
    Up,
    /// Not needed yet (`INIT`): says nothing about the broker.
    Unused,
    /// Lost or connecting (`DOWN`, `TRY_CONNECT`, `CONNECT`, the handshakes).
    Down,
}

impl Link {
    fn of(state: &str) -> Link {
        match state {
            "UP" | "UPDATE" => Link::Up,
            "INIT" => Link::Unused,
            _ => Link::Down,
        }
    }
}

struct ClientView {
    at: Instant,
    /// Broker name (`host:port/id`) to link state and mean round trip in microseconds.
    brokers: Vec<(String, Link, Option<i64>)>,
    /// Partitions it reads whose leader it is not connected to.
    unavailable: Vec<(String, i32)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LastError {
    /// The librdkafka error code, snake case (`broker_transport_failure`).
    pub kind: String,
    pub message: String,
    /// Seconds since it happened.
    pub seconds_ago: f64,
}

#[derive(Default)]
struct State {
    clients: HashMap<String, ClientView>,
    errors: BTreeMap<String, u64>,
    last_error: Option<(String, String, Instant)>,
}

fn state() -> MutexGuard<'static, State> {
    static S: OnceLock<Mutex<State>> = OnceLock::new();
    S.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The error code's name in snake case: `BrokerTransportFailure` -> `broker_transport_failure`.
pub fn error_kind(error: &KafkaError) -> String {
    let name = match error.rdkafka_error_code() {
        Some(code) => format!("{code:?}"),
        None => return "other".into(),
    };
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Counts an error a Kafka client reported (`reason` is librdkafka's text).
pub fn observe_error(error: &KafkaError, reason: &str) {
    let kind = error_kind(error);
    metrics::counter!("sideline_kafka_errors_total", "kind" => kind.clone()).increment(1);
    let mut s = state();
    *s.errors.entry(kind.clone()).or_default() += 1;
    s.last_error = Some((kind, reason.to_string(), Instant::now()));
}

/// Takes a client's statistics and republishes the broker gauges.
pub fn observe_stats(stats: &Statistics) {
    let mut brokers: Vec<(String, Link, Option<i64>)> = stats
        .brokers
        .values()
        .filter(|b| b.nodeid >= 0)
        .map(|b| {
            (
                b.name.clone(),
                Link::of(&b.state),
                b.rtt.as_ref().map(|w| w.avg),
            )
        })
        .collect();
    if brokers.is_empty() {
        // No metadata yet: the bootstrap brokers are all there is to say.
        brokers = stats
            .brokers
            .values()
            .map(|b| (b.name.clone(), Link::of(&b.state), None))
            .collect();
    }
    let up: HashMap<i32, Link> = stats
        .brokers
        .values()
        .filter(|b| b.nodeid >= 0)
        .map(|b| (b.nodeid, Link::of(&b.state)))
        .collect();
    let mut unavailable = Vec::new();
    for t in stats.topics.values() {
        for p in t
            .partitions
            .values()
            .filter(|p| p.desired && p.partition >= 0)
        {
            match up.get(&p.leader) {
                Some(Link::Up) => {}
                Some(_) => unavailable.push((t.topic.clone(), p.partition)),
                None => {
                    unavailable.push((t.topic.clone(), p.partition));
                    // A leader the client no longer lists (it left the metadata, as a broker
                    // that went away does) is a broker it needs and does not have.
                    if p.leader >= 0 {
                        brokers.push((format!("unlisted/{}", p.leader), Link::Down, None));
                    }
                }
            }
        }
    }
    let mut s = state();
    let now = Instant::now();
    s.clients.insert(
        stats.name.clone(),
        ClientView {
            at: now,
            brokers,
            unavailable,
        },
    );
    s.clients.retain(|_, c| now.duration_since(c.at) < FRESH);
    let view = brokers_view(&s);
    drop(s);
    metrics::gauge!("sideline_kafka_brokers_up").set(view.up as f64);
    metrics::gauge!("sideline_kafka_brokers_down").set(view.down as f64);
    metrics::gauge!("sideline_kafka_partitions_unavailable").set(view.unavailable as f64);
    for (broker, rtt_us) in view.rtt_us {
        metrics::gauge!("sideline_kafka_broker_rtt_seconds", "broker" => broker)
            .set(rtt_us as f64 / 1e6);
    }
}

struct BrokersView {
    up: usize,
    down: usize,
    unavailable: usize,
    rtt_us: BTreeMap<String, i64>,
}

fn brokers_view(s: &State) -> BrokersView {
    let now = Instant::now();
    let mut links: BTreeMap<&str, Link> = BTreeMap::new();
    let mut rtt_us: BTreeMap<String, i64> = BTreeMap::new();
    let mut unavailable: std::collections::BTreeSet<&(String, i32)> = Default::default();
    for c in s.clients.values() {
        if now.duration_since(c.at) >= FRESH {
            continue;
        }
        unavailable.extend(&c.unavailable);
        for (name, link, rtt) in &c.brokers {
            let l = links.entry(name).or_insert(Link::Unused);
            *l = match (*l, *link) {
                (Link::Down, _) | (_, Link::Down) => Link::Down,
                (Link::Up, _) | (_, Link::Up) => Link::Up,
                _ => Link::Unused,
            };
            if let Some(r) = rtt.filter(|r| *r > 0) {
                let e = rtt_us.entry(name.clone()).or_default();
                *e = (*e).max(r);
            }
        }
    }
    BrokersView {
        up: links.values().filter(|l| **l == Link::Up).count(),
        down: links.values().filter(|l| **l == Link::Down).count(),
        unavailable: unavailable.len(),
        rtt_us,
    }
}

/// Kafka's part of `GET /health`.
#[derive(Clone, Debug, Serialize)]
pub struct KafkaStatus {
    /// `up`: every broker in use is connected; `degraded`: some are not (or a partition's
    /// leader is not); `down`: none is;
    /// `unknown`: no consumer has reported in the last [`FRESH`] (none running).
    pub status: &'static str,
    pub brokers_up: usize,
    pub brokers_down: usize,
    /// Partitions read whose leader is not connected: nothing comes from them meanwhile.
    pub partitions_unavailable: usize,
    /// Errors the clients reported since the process started, by kind.
    pub errors: BTreeMap<String, u64>,
    pub last_error: Option<LastError>,
}

/// What the consumers see now.
pub fn status() -> KafkaStatus {
    let s = state();
    let view = brokers_view(&s);
    let trouble = view.down + view.unavailable;
    let status = match (view.up, trouble) {
        (0, 0) => "unknown",
        (0, _) => "down",
        (_, 0) => "up",
        _ => "degraded",
    };
    KafkaStatus {
        status,
        brokers_up: view.up,
        brokers_down: view.down,
        partitions_unavailable: view.unavailable,
        errors: s.errors.clone(),
        last_error: s.last_error.as_ref().map(|(kind, message, at)| LastError {
            kind: kind.clone(),
            message: message.clone(),
            seconds_ago: at.elapsed().as_secs_f64(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_are_snake_case_codes() {
        let e = KafkaError::Global(rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure);
        assert_eq!(error_kind(&e), "broker_transport_failure");
        assert_eq!(error_kind(&KafkaError::Canceled), "other");
    }

    #[test]
    fn one_client_losing_a_broker_marks_it_down() {
        let mut s = State::default();
        let view = |name: &str, link| ClientView {
            at: Instant::now(),
            brokers: vec![(name.into(), link, None)],
            unavailable: vec![],
        };
        s.clients.insert("a".into(), view("b1", Link::Up));
        s.clients.insert("b".into(), view("b1", Link::Down));
        s.clients.insert("c".into(), view("b2", Link::Up));
        s.clients.insert("d".into(), view("b3", Link::Unused));
        let v = brokers_view(&s);
        assert_eq!((v.up, v.down), (1, 1));
    }
}
