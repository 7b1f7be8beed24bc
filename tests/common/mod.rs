//! Shared by the end-to-end tests: the fixture, a Kafka cluster to run against, an engine
//! around it, a real WebSocket client, and the offline expectation.
#![allow(dead_code)]

mod alerts;
#[allow(unused_imports)] // not every test binary uses them
pub use alerts::*;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use sideline::app::App;
use sideline::config::Config;
use sideline::dataflow::score::{variables, Model};
use sideline::dataflow::{SinkMsg, Valued};
use sideline::delta::Delta;
use sideline::engine::EngineStats;
use sideline::event::{GameEvent, GameKey};
use sideline::pipeline::plan::Plan;
use sideline::pipeline::reference;
use sideline::pipeline::spec::GroupBy;
use sideline::pipeline::window::{
    Entity, GameAssigner, Updates, F64, META_AT, META_INGEST, META_SEQ,
};
use sideline::pipeline::Registry;
pub use sideline::produce::{self, Pace};
use sideline::ws::protocol::ServerMessage;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

pub const FIXTURE: &str = include_str!("../../examples/data/nfl/games.jsonl");

pub fn fixture_lines() -> Vec<String> {
    FIXTURE
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// The fixture `copies` times over, each copy's game ids suffixed `-k`: more games, same feed.
pub fn fixture_copies(copies: usize) -> Vec<String> {
    sideline::demo::replicate(&fixture_events(), copies, 0)
}

pub fn fixture_events() -> Vec<GameEvent> {
    fixture_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A Kafka cluster: librdkafka's in-process mock cluster (kept alive by this value; tests that
/// inject broker faults use `mock`).
pub struct Cluster {
    pub brokers: String,
    pub mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
}

impl Cluster {
    /// One broker, topics without replicas.
    pub fn mock(topics: &[(&str, i32)]) -> Cluster {
        Cluster::mock_with(1, 1, topics)
    }

    /// `brokers` brokers (ids 1..=brokers), every topic with `replication` replicas.
    pub fn mock_with(brokers: i32, replication: i32, topics: &[(&str, i32)]) -> Cluster {
        let mock = MockCluster::new(brokers).unwrap();
        for (t, p) in topics {
            mock.create_topic(t, *p, replication).unwrap();
        }
        Cluster {
            brokers: mock.bootstrap_servers(),
            mock,
        }
    }
}

/// A suffix for topic names on a real broker, which keeps its topics across runs: the time.
pub fn run_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Creates `{name}.{run}` with `partitions` and its dead-letter topic (1 partition) on a real
/// broker; returns the topic's name.
pub fn create_feed_topic(brokers: &str, name: &str, partitions: i32) -> String {
    let topic = format!("{name}.{}", run_id());
    let dlq = format!("{topic}.dead-letters");
    create_topics(brokers, &[(&topic, partitions), (&dlq, 1)]);
    topic
}

/// Creates topics on a real broker through the admin client, with the explicit retention
/// configs tansu wants.
pub fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, p)| {
            NewTopic::new(t, *p, TopicReplication::Fixed(1))
                .set("retention.ms", "-1")
                .set("retention.bytes", "-1")
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = rt
        .block_on(admin.create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
        ))
        .unwrap();
    for r in results {
        r.unwrap();
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over plain HTTP/1.1: the status code and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of the first Prometheus series starting with `series` in a `/metrics` body.
pub fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sum of every Prometheus series starting with `series` (all label values).
pub fn metric_sum(body: &str, series: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}

/// Polls `probe` every 100 ms until it returns `Some`, for at most `secs` seconds; panics
/// naming `what` when it never does.
pub fn wait_until<T>(what: &str, secs: u64, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn producer(brokers: &str) -> produce::FeedProducer {
    producer_with(brokers, &[])
}

/// A producer with these librdkafka options over the tests' defaults.
pub fn producer_with(brokers: &str, options: &[(&str, &str)]) -> produce::FeedProducer {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers).set("linger.ms", "1");
    for (k, v) in options {
        cc.set(*k, *v);
    }
    produce::create_producer(&cc).unwrap()
}

pub fn produce_all(brokers: &str, topic: &str, lines: &[String]) {
    produce_all_with(brokers, topic, lines, &[]);
}

/// [`produce_all`] with these producer options.
pub fn produce_all_with(brokers: &str, topic: &str, lines: &[String], options: &[(&str, &str)]) {
    let p = producer_with(brokers, options);
    produce::produce_lines(&p, topic, lines, Pace::Max, None).unwrap();
}

/// The channel of the NFL pipeline.
pub const CHANNEL: &str = "nfl.win_probability";

/// The shipped NFL pipeline file, reading `topics` instead of its own.
pub fn nfl_pipeline(topics: &[&str]) -> String {
    let text = sideline::pipeline::DEFAULT_PIPELINE.1;
    let list: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
    let out = text.replace(
        "topics = [\"nfl.events\"]",
        &format!("topics = [{}]", list.join(", ")),
    );
    assert_ne!(
        out, text,
        "the shipped pipeline names its topic as expected"
    );
    out
}

/// The NFL pipeline's plan.
pub fn nfl_plan() -> Plan {
    sideline::pipeline::plan::plan(
        "nfl.toml",
        &nfl_pipeline(&["t"]),
        &sideline::pipeline::Registry::new(None),
    )
    .unwrap()
}

/// Starts an app with these pipeline files deployed.
pub fn start(cfg: &Config, pipelines: &[String]) -> Arc<App> {
    let app = App::start(cfg).unwrap();
    for (i, text) in pipelines.iter().enumerate() {
        app.deploy(&format!("pipeline-{i}.toml"), text).unwrap();
    }
    app
}

/// Engine settings for a test: replay mode (stop at the end), ephemeral ports, no Prometheus,
/// no admin endpoint.
pub fn config(brokers: &str, topic: &str, workers: usize) -> Config {
    let mut cfg = Config::load(None).unwrap();
    cfg.kafka.brokers = brokers.to_string();
    cfg.kafka.dead_letter_topic = format!("{topic}.dead-letters");
    cfg.server.admin_listen = String::new();
    cfg.kafka.stop_at_end = true;
    cfg.engine.workers = workers;
    cfg.server.ws_listen = "127.0.0.1:0".into();
    cfg.server.metrics_listen = String::new();
    cfg
}

/// Runs the engine to the end of the topic; returns its stats and the delta log.
pub fn run_engine(app: &App) -> (EngineStats, Vec<Delta>) {
    let log: Arc<Mutex<Vec<Delta>>> = Arc::default();
    let log2 = log.clone();
    let stats = app
        .run_engine(move |d| log2.lock().unwrap().push(d.clone()))
        .unwrap();
    let deltas = log.lock().unwrap().clone();
    (stats, deltas)
}

/// The delta log as bytes: one JSON line per delta.
pub fn log_bytes(deltas: &[Delta]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in deltas {
        serde_json::to_writer(&mut out, d).unwrap();
        out.push(b'\n');
    }
    out
}

/// What the offline path predicts: for each game, the (event time, value) of every published
/// change, from the event file alone: brute-force features (`pipeline::reference`) at every
/// time anything can change, the same derived features and model, the publishing rule.
pub fn offline_deltas(plan: &Plan, events: &[GameEvent]) -> BTreeMap<GameKey, Vec<(u64, f64)>> {
    let model = Model::for_plan(plan, &sideline::pipeline::Registry::new(None)).unwrap();
    let mut games: BTreeMap<GameKey, Vec<GameEvent>> = BTreeMap::new();
    for e in events {
        games.entry(e.key()).or_default().push(e.clone());
    }
    let mut out = BTreeMap::new();
    for (key, mut evs) in games {
        evs.sort_by_key(|e| e.seq);
        let timed: Vec<(GameEvent, u64)> =
            evs.iter().map(|e| (e.clone(), e.event_time_ms)).collect();
        let times = reference::candidate_times(plan, &timed);
        let mut rows = Vec::new();
        for &t in &times {
            let mut row = Vec::new();
            for (i, f) in plan.features.iter().enumerate() {
                let entities: &[Entity] = match f.group {
                    GroupBy::Game => &[Entity::Game],
                    GroupBy::Team => &[Entity::Home, Entity::Away],
                    GroupBy::Player => &[],
                };
                for e in entities {
                    if let Some(v) = reference::slot_value(plan, i, e, &timed, t) {
                        row.push((e.clone(), i as u32, F64::new(v)));
                    }
                }
            }
            let _ = (META_AT, META_INGEST, META_SEQ);
            rows.push(variables(plan, &row).0);
        }
        let values = model.score(&rows).unwrap();
        let mut published: Vec<(u64, f64)> = Vec::new();
        let mut direction = 0.0f64;
        for (t, v) in times.iter().zip(values) {
            let publish = match published.last() {
                None => true,
                Some((_, old)) => {
                    let step = v - old;
                    let against = direction != 0.0 && step.signum() != direction;
                    let needed =
                        plan.delta.epsilon + if against { plan.delta.hysteresis } else { 0.0 };
                    step != 0.0 && step.abs() >= needed
                }
            };
            if publish {
                if let Some((_, old)) = published.last() {
                    direction = (v - old).signum();
                }
                published.push((*t, v));
            }
        }
        out.insert(key, published);
    }
    out
}

/// A WebSocket subscriber on its own runtime, collecting every server message.
pub struct Client {
    /// Frames read and not parsed yet: the reading thread only stores them, so that it keeps
    /// up with an engine replaying at full speed on the same 2 cores (parsing each frame
    /// there, and scanning every message under the lock it pushes through, let it fall past
    /// its queue bound and be resynchronised).
    frames: Arc<Mutex<Vec<Utf8Bytes>>>,
    /// Every message so far, parsed on the test's thread.
    parsed: Mutex<Vec<ServerMessage>>,
    runtime: tokio::runtime::Runtime,
    handle: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects and sends `subscribe` (raw JSON text, so tests can send anything).
    pub fn connect(addr: std::net::SocketAddr, subscribe: &str) -> Client {
        // Its own thread reads the socket all the time, whatever the test thread is doing.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let frames: Arc<Mutex<Vec<Utf8Bytes>>> = Arc::default();
        let (mut ws, _) = runtime
            .block_on(tokio_tungstenite::connect_async(format!("ws://{addr}")))
            .unwrap();
        runtime
            .block_on(ws.send(Message::text(subscribe.to_string())))
            .unwrap();
        let sink = frames.clone();
        let handle = runtime.spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    sink.lock().unwrap().push(t);
                }
            }
        });
        Client {
            frames,
            parsed: Mutex::default(),
            runtime,
            handle,
        }
    }

    /// Every message so far: the frames read since the last call parsed and added.
    fn parsed(&self) -> std::sync::MutexGuard<'_, Vec<ServerMessage>> {
        let new = std::mem::take(&mut *self.frames.lock().unwrap());
        let mut parsed = self.parsed.lock().unwrap();
        for t in new {
            let m: ServerMessage = serde_json::from_str(t.as_str()).expect("server message parses");
            parsed.push(m);
        }
        parsed
    }

    /// Waits until `pred` holds over the messages received (at most 120 s).
    pub fn wait_for(&self, what: &str, pred: impl Fn(&[ServerMessage]) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if pred(&self.parsed()) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the delta numbered `seq`.
    pub fn wait_for_seq(&self, seq: u64) {
        self.wait_for(&format!("delta {seq}"), |ms| {
            ms.iter()
                .any(|m| matches!(m, ServerMessage::Delta { delta, .. } if delta.seq >= seq))
        });
    }

    pub fn messages(&self) -> Vec<ServerMessage> {
        self.parsed().clone()
    }

    /// Whether the connection is still open: its reader ends when the server closes it.
    pub fn is_open(&self) -> bool {
        !self.handle.is_finished()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Per game: the (event time, value) history from deltas; per game: the final value; every
/// delta in order.
pub type Applied = (
    BTreeMap<GameKey, Vec<(u64, f64)>>,
    BTreeMap<GameKey, f64>,
    Vec<Delta>,
);

/// Applies snapshots and deltas in order; returns each game's value history (from deltas) and
/// final value.
pub fn apply(messages: &[ServerMessage]) -> Applied {
    let mut history: BTreeMap<GameKey, Vec<(u64, f64)>> = BTreeMap::new();
    let mut current: BTreeMap<GameKey, f64> = BTreeMap::new();
    let mut deltas = Vec::new();
    for m in messages {
        match m {
            ServerMessage::Snapshot {
                channel, values, ..
            } if channel == CHANNEL => {
                current.clear();
                for v in values {
                    current.insert(
                        GameKey {
                            sport: v.sport,
                            game_id: v.game_id.clone(),
                        },
                        v.value,
                    );
                }
            }
            ServerMessage::Delta { delta, .. } => {
                let key = GameKey {
                    sport: delta.sport,
                    game_id: delta.game_id.clone(),
                };
                if let Some(old) = delta.old {
                    assert_eq!(
                        current.get(&key).copied(),
                        Some(old),
                        "delta {} starts from the value held",
                        delta.seq
                    );
                }
                current.insert(key.clone(), delta.new);
                history
                    .entry(key)
                    .or_default()
                    .push((delta.event_time_ms, delta.new));
                deltas.push(delta.clone());
            }
            _ => {}
        }
    }
    (history, current, deltas)
}

/// A subscriber that subscribes and then reads nothing, over a socket with a small receive
/// buffer, until told to.
pub struct StuckClient {
    runtime: tokio::runtime::Runtime,
    ws: Option<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>>,
}

impl StuckClient {
    pub fn connect(addr: std::net::SocketAddr, subscribe: &str) -> StuckClient {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ws = runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            let stream = socket.connect(addr).await.unwrap();
            let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}"), stream)
                .await
                .unwrap();
            ws.send(Message::text(subscribe.to_string())).await.unwrap();
            ws
        });
        StuckClient {
            runtime,
            ws: Some(ws),
        }
    }

    /// Starts reading: returns every message up to the point where it holds channel seq `seq`.
    pub fn read_until_seq(mut self, seq: u64) -> Vec<ServerMessage> {
        let mut ws = self.ws.take().unwrap();
        self.runtime.block_on(async move {
            let mut out = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            loop {
                let msg = tokio::time::timeout_at(deadline, ws.next())
                    .await
                    .expect("timed out reading")
                    .unwrap()
                    .unwrap();
                if let Message::Text(t) = msg {
                    let m: ServerMessage = serde_json::from_str(t.as_str()).unwrap();
                    let done = match &m {
                        ServerMessage::Delta { delta, .. } => delta.seq >= seq,
                        ServerMessage::Snapshot { seq: s, .. } => *s >= seq,
                        _ => false,
                    };
                    out.push(m);
                    if done {
                        return out;
                    }
                }
            }
        })
    }
}

/// A hub with one delta channel and a WebSocket server on 127.0.0.1:0, on their own runtime.
pub struct WsServer {
    pub hub: Arc<sideline::hub::Hub>,
    pub addr: std::net::SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl WsServer {
    pub fn start(
        hub_cfg: sideline::hub::HubConfig,
        ws_cfg: sideline::ws::WsConfig,
        channel: &str,
    ) -> WsServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let hub = sideline::hub::Hub::new(hub_cfg);
        hub.ensure_channel(channel);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(sideline::ws::serve(listener, Arc::clone(&hub), ws_cfg));
        WsServer {
            hub,
            addr,
            _runtime: runtime,
        }
    }
}

/// One WebSocket frame as a [`RawClient`] reads it.
#[derive(Clone, Debug)]
pub struct RawFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

pub const OP_TEXT: u8 = 0x1;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;

/// A WebSocket client at the frame level over a blocking socket: it writes the frames it is
/// told to and reads frames as they come, and never answers a Ping by itself (tungstenite's
/// clients answer Pings whenever they read). The handshake is tungstenite's.
pub struct RawClient {
    tcp: std::net::TcpStream,
}

impl RawClient {
    pub fn connect(addr: std::net::SocketAddr) -> RawClient {
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        // A guard against hanging forever, not a timing assertion.
        tcp.set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        // The server says nothing after the handshake until asked, so tungstenite holds no
        // bytes of ours when its copy of the socket is dropped.
        let (ws, _) = tokio_tungstenite::tungstenite::client::client(format!("ws://{addr}/"), {
            tcp.try_clone().unwrap()
        })
        .unwrap();
        drop(ws);
        RawClient { tcp }
    }

    /// A second handle on the same socket, to write from another thread.
    pub fn try_clone(&self) -> RawClient {
        RawClient {
            tcp: self.tcp.try_clone().unwrap(),
        }
    }

    /// Sends one text message in one frame.
    pub fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        use std::io::Write;
        self.tcp
            .write_all(&frame_header(OP_TEXT, text.len() as u64))?;
        self.tcp.write_all(text.as_bytes())
    }

    /// Sends one text frame of `len` bytes (`a`s), in pieces; fails once the server drops the
    /// connection.
    pub fn send_big_text(&mut self, len: usize) -> std::io::Result<()> {
        use std::io::Write;
        self.tcp.write_all(&frame_header(OP_TEXT, len as u64))?;
        let chunk = vec![b'a'; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            self.tcp.write_all(&chunk[..n])?;
            left -= n;
        }
        Ok(())
    }

    /// Reads one frame; `None` at the end of the stream.
    pub fn read_frame(&mut self) -> std::io::Result<Option<RawFrame>> {
        use std::io::Read;
        let mut head = [0u8; 2];
        match self.tcp.read_exact(&mut head) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            r => r?,
        }
        assert_eq!(head[1] & 0x80, 0, "the server masks no frame");
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.tcp.read_exact(&mut b)?;
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                self.tcp.read_exact(&mut b)?;
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        self.tcp.read_exact(&mut payload)?;
        Ok(Some(RawFrame {
            opcode: head[0] & 0x0f,
            payload,
        }))
    }

    /// Reads frames up to a Close frame: the frames before it, and the Close frame's code and
    /// reason (`None` when the stream ends or fails without one).
    pub fn read_until_close(&mut self) -> (Vec<RawFrame>, Option<(u16, String)>) {
        let mut frames = Vec::new();
        loop {
            match self.read_frame() {
                Ok(Some(f)) if f.opcode == OP_CLOSE => {
                    assert!(f.payload.len() >= 2, "a Close frame without a code");
                    let code = u16::from_be_bytes([f.payload[0], f.payload[1]]);
                    let reason = String::from_utf8_lossy(&f.payload[2..]).into_owned();
                    return (frames, Some((code, reason)));
                }
                Ok(Some(f)) => frames.push(f),
                Ok(None) | Err(_) => return (frames, None),
            }
        }
    }
}

/// The header of a final, masked client frame; the mask key is zero, so the payload goes as it
/// is.
fn frame_header(opcode: u8, len: u64) -> Vec<u8> {
    let mut h = vec![0x80 | opcode];
    match len {
        0..=125 => h.push(0x80 | len as u8),
        126..=0xffff => {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
    }
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// A record read back from a topic.
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

/// Reads partitions `0..partitions` of `topic` from the beginning until `want` records have
/// arrived (at most 60 s), then until nothing more comes for a second, to catch any beyond
/// them.
pub fn read_topic(brokers: &str, topic: &str, partitions: i32, want: usize) -> Vec<ReadRecord> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "read-topic")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut quiet = 0;
    while std::time::Instant::now() < deadline && (out.len() < want || quiet < 4) {
        match consumer.poll(Duration::from_millis(250)) {
            Some(Ok(m)) => {
                quiet = 0;
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                let value = h.value.map(String::from_utf8_lossy);
                                (h.key.to_string(), value.unwrap_or_default().to_string())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(ReadRecord {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => quiet += 1,
        }
    }
    out
}

/// Runs the engine's dataflow (window assigner, aggregates, rows, derived features, model) on
/// one worker over `events`, each at its event time, and returns every value it computed.
pub fn engine_values(plan: &Plan, events: &[GameEvent]) -> Vec<Valued> {
    let plan = Arc::new(plan.clone());
    let model = Arc::new(Model::for_plan(&plan, &Registry::new(None)).unwrap());
    let mut events = events.to_vec();
    events.sort_by(|a, b| {
        (a.event_time_ms, &a.game_id, a.seq).cmp(&(b.event_time_ms, &b.game_id, b.seq))
    });
    let (tx, rx) = std::sync::mpsc::sync_channel(1 << 20);
    timely::execute_directly(move |worker| {
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            sideline::dataflow::build(
                scope,
                plan.clone(),
                model.clone(),
                None,
                0,
                Some(tx.clone()),
                Default::default(),
            )
        });
        let mut games: HashMap<GameKey, GameAssigner> = HashMap::new();
        let mut updates = Updates::default();
        for ev in &events {
            if *input.time() < ev.event_time_ms {
                input.advance_to(ev.event_time_ms);
            }
            games
                .entry(ev.key())
                .or_insert_with(|| GameAssigner::new(&plan, ev.key()))
                .apply(&plan, ev, ev.event_time_ms, 0, &mut updates);
            input.feed(&mut updates);
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    });
    fn values(m: SinkMsg) -> Vec<Valued> {
        match m {
            SinkMsg::Values { values, .. } => values,
            SinkMsg::Batch(msgs) => msgs.into_iter().flat_map(values).collect(),
            _ => Vec::new(),
        }
    }
    rx.try_iter().flat_map(values).collect()
}
