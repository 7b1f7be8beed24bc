//! The hub and the WebSocket server over real sockets on 127.0.0.1, with a real
//! tokio-tungstenite client.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use sideline::delta::{Delta, FeatureChange};
use sideline::event::Sport;
use sideline::hub::{Hub, HubConfig};
use sideline::ws::protocol::{ErrorCode, ServerMessage, SnapshotReason, SnapshotValue};
use sideline::ws::{serve, WsConfig};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const CHANNEL: &str = "predictions";
/// A guard against hanging forever, not a timing assertion.
const GUARD: Duration = Duration::from_secs(120);

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;
type State = BTreeMap<(Sport, String), SnapshotValue>;

fn game(i: usize) -> (Sport, String) {
    let sport = if i.is_multiple_of(2) {
        Sport::Nfl
    } else {
        Sport::Nba
    };
    (sport, format!("20180906{i:02}"))
}

fn delta(seq: u64, games: usize) -> Delta {
    let (sport, game_id) = game((seq as usize * 7) % games);
    Delta {
        seq,
        id: format!("test/1/{seq}"),
        pipeline: "test".into(),
        version: 1,
        sport,
        game_id,
        event_time_ms: 1_536_278_400_000 + seq * 10,
        event_seq: seq,
        old: Some(0.5),
        new: ((seq * 7919) % 1000) as f64 / 999.0,
        model_version: "wp-test-1".into(),
        cause: sideline::delta::DeltaCause::Moved,
        changed: vec![FeatureChange {
            feature: "score_diff".into(),
            from: Some((seq % 5) as f64),
            to: (seq % 7) as f64,
        }],
        contributors: vec![],
        interval: None,
    }
}

fn event_time(seq: u64) -> u64 {
    1_536_278_400_000 + seq * 10
}

/// Publishes seqs `from..=to` with progress after them.
fn publish(hub: &Hub, from: u64, to: u64, games: usize) {
    let deltas: Vec<Delta> = (from..=to).map(|s| delta(s, games)).collect();
    let ingest: Vec<Option<u64>> = deltas.iter().map(|d| Some(d.event_time_ms)).collect();
    hub.publish(CHANNEL, &deltas, &ingest);
    hub.progress(CHANNEL, event_time(to));
}

async fn start(hub_cfg: HubConfig, ws_cfg: WsConfig) -> Result<(Arc<Hub>, SocketAddr)> {
    let hub = Hub::new(hub_cfg);
    hub.ensure_channel(CHANNEL);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener, Arc::clone(&hub), ws_cfg));
    Ok((hub, addr))
}

async fn connect(addr: SocketAddr) -> Result<Client> {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await?;
    Ok(ws)
}

async fn send(ws: &mut Client, text: &str) -> Result<()> {
    ws.send(Message::text(text)).await?;
    Ok(())
}

async fn recv(ws: &mut Client) -> Result<ServerMessage> {
    loop {
        let msg = tokio::time::timeout(GUARD, ws.next())
            .await
            .context("no message within the guard time")?
            .context("connection closed")??;
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).with_context(|| format!("bad frame {t}"));
        }
    }
}

/// A client's view of the channel, built from snapshots and deltas.
#[derive(Default)]
struct Mirror {
    state: State,
    /// The newest seq covered (from a snapshot or a delta).
    last_seq: u64,
    snapshots: Vec<SnapshotReason>,
    deltas: u64,
    progress: Option<u64>,
}

impl Mirror {
    /// Applies one message; checks seqs rise strictly and, with `gap_free`, by exactly one.
    fn apply(&mut self, msg: ServerMessage, gap_free: bool) -> Result<()> {
        match msg {
            ServerMessage::Snapshot {
                seq,
                reason,
                values,
                ..
            } => {
                self.state = values
                    .into_iter()
                    .map(|v| ((v.sport, v.game_id.clone()), v))
                    .collect();
                self.last_seq = seq;
                self.snapshots.push(reason);
            }
            ServerMessage::Delta { delta, .. } => {
                if delta.seq <= self.last_seq || (gap_free && delta.seq != self.last_seq + 1) {
                    bail!("delta seq {} after {}", delta.seq, self.last_seq);
                }
                self.last_seq = delta.seq;
                self.deltas += 1;
                self.state
                    .entry((delta.sport, delta.game_id.clone()))
                    .and_modify(|v| v.apply(&delta))
                    .or_insert_with(|| SnapshotValue::from_delta(&delta));
            }
            ServerMessage::Progress { event_time_ms, .. } => self.progress = Some(event_time_ms),
            other => bail!("unexpected {other:?}"),
        }
        Ok(())
    }
}

/// The hub's values as a client decodes them (through JSON, like the client's copy).
fn hub_state(hub: &Hub, keep: impl Fn(&SnapshotValue) -> bool) -> State {
    let values: Vec<SnapshotValue> = hub.snapshot(CHANNEL).into_iter().filter(keep).collect();
    let values: Vec<SnapshotValue> =
        serde_json::from_str(&serde_json::to_string(&values).unwrap()).unwrap();
    values
        .into_iter()
        .map(|v| ((v.sport, v.game_id.clone()), v))
        .collect()
}

async fn expect_subscribed(ws: &mut Client, id: &str) -> Result<()> {
    match recv(ws).await? {
        ServerMessage::Subscribed {
            id: Some(got),
            channel,
            resumed_from: None,
        } if got == id && channel == CHANNEL => Ok(()),
        other => bail!("expected subscribed {id}, got {other:?}"),
    }
}

#[tokio::test]
async fn filtered_subscription_gets_snapshot_then_matching_deltas() -> Result<()> {
    let (hub, addr) = start(HubConfig::default(), WsConfig::default()).await?;
    publish(&hub, 1, 300, 5);
    let (sport, wanted) = game(3);

    let mut ws = connect(addr).await?;
    send(
        &mut ws,
        &format!(
            r#"{{"op":"subscribe","id":"r1","channel":"predictions","filter":{{"games":["{wanted}"]}}}}"#
        ),
    )
    .await?;
    expect_subscribed(&mut ws, "r1").await?;
    let mut mirror = Mirror::default();
    match recv(&mut ws).await? {
        msg @ ServerMessage::Snapshot {
            seq: 300,
            reason: SnapshotReason::Subscribe,
            ..
        } => mirror.apply(msg, false)?,
        other => bail!("expected the snapshot at 300, got {other:?}"),
    }
    assert_eq!(mirror.state.len(), 1);

    publish(&hub, 301, 1000, 5);
    let end = event_time(1000);
    while mirror.progress != Some(end) {
        let msg = recv(&mut ws).await?;
        if let ServerMessage::Delta { delta, .. } = &msg {
            assert_eq!((delta.sport, &delta.game_id), (sport, &wanted));
        }
        mirror.apply(msg, false)?;
    }
    assert_eq!(mirror.deltas, 140, "one delta in five is for the game");
    assert_eq!(
        mirror.state,
        hub_state(&hub, |v| v.game_id == wanted && v.sport == sport)
    );
    Ok(())
}

#[tokio::test]
async fn bad_client_messages_get_stable_error_codes() -> Result<()> {
    let (hub, addr) = start(HubConfig::default(), WsConfig::default()).await?;
    publish(&hub, 1, 10, 3);
    let mut ws = connect(addr).await?;
    let cases = [
        ("this is not json", None, ErrorCode::BadJson),
        (
            r#"{"op":"dance","id":"a"}"#,
            Some("a"),
            ErrorCode::UnknownOp,
        ),
        (
            r#"{"op":"subscribe","id":"b","channel":"nope"}"#,
            Some("b"),
            ErrorCode::UnknownChannel,
        ),
        (
            r#"{"op":"subscribe","id":"c","channel":"predictions","filter":{"sports":"nfl"}}"#,
            Some("c"),
            ErrorCode::BadFilter,
        ),
        (
            r#"{"op":"subscribe","id":"d","channel":"predictions","filter":{"teams":["NE"]}}"#,
            Some("d"),
            ErrorCode::BadFilter,
        ),
        (
            r#"{"op":"subscribe","id":"e"}"#,
            Some("e"),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"op":"unsubscribe","id":"f","channel":"predictions"}"#,
            Some("f"),
            ErrorCode::NotSubscribed,
        ),
    ];
    for (text, want_id, want_code) in cases {
        send(&mut ws, text).await?;
        match recv(&mut ws).await? {
            ServerMessage::Error { id, code, .. } => {
                assert_eq!((id.as_deref(), code), (want_id, want_code), "{text}")
            }
            other => bail!("expected an error for {text}, got {other:?}"),
        }
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await?;
    assert!(matches!(
        recv(&mut ws).await?,
        ServerMessage::Error {
            code: ErrorCode::UnsupportedMessage,
            ..
        }
    ));

    // The connection is still fine.
    send(&mut ws, r#"{"op":"ping","id":"p"}"#).await?;
    assert_eq!(
        recv(&mut ws).await?,
        ServerMessage::Pong {
            id: Some("p".into())
        }
    );
    send(
        &mut ws,
        r#"{"op":"subscribe","id":"ok","channel":"predictions","filter":{"sports":["nfl"]}}"#,
    )
    .await?;
    expect_subscribed(&mut ws, "ok").await?;
    match recv(&mut ws).await? {
        ServerMessage::Snapshot { seq, values, .. } => {
            assert_eq!(seq, 10);
            assert!(!values.is_empty() && values.iter().all(|v| v.sport == Sport::Nfl));
        }
        other => bail!("expected a snapshot, got {other:?}"),
    }
    send(
        &mut ws,
        r#"{"op":"unsubscribe","id":"u","channel":"predictions"}"#,
    )
    .await?;
    loop {
        match recv(&mut ws).await? {
            ServerMessage::Unsubscribed { id, .. } => {
                assert_eq!(id.as_deref(), Some("u"));
                break;
            }
            ServerMessage::Progress { .. } => {}
            other => bail!("expected unsubscribed, got {other:?}"),
        }
    }
    Ok(())
}

/// A client that reads nothing: a real WebSocket client that is never polled, over a socket with
/// a small receive buffer so the server's writes block early.
async fn stuck_client(addr: SocketAddr) -> Result<Client> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let stream = socket.connect(addr).await?;
    let (ws, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/"), MaybeTlsStream::Plain(stream))
            .await?;
    Ok(ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_subscriber_is_resynced_without_hurting_others() -> Result<()> {
    const TOTAL: u64 = 200_000;
    const BATCH: u64 = 100;
    const GAMES: usize = 20;
    let capacity = 1024;
    // The stuck client neither reads nor answers Pings: no limit may cut it off.
    let ws_cfg = WsConfig {
        write_timeout: None,
        keepalive: None,
        ..WsConfig::default()
    };
    let (hub, addr) = start(
        HubConfig {
            queue_capacity: capacity,
            history: 10_000,
            ..HubConfig::default()
        },
        ws_cfg,
    )
    .await?;

    let subscribe = r#"{"op":"subscribe","id":"s","channel":"predictions"}"#;
    let mut stuck = stuck_client(addr).await?;
    send(&mut stuck, subscribe).await?;
    expect_subscribed(&mut stuck, "s").await?;
    let mut stuck_mirror = Mirror::default();
    stuck_mirror.apply(recv(&mut stuck).await?, true)?;

    let mut reader = connect(addr).await?;
    send(&mut reader, subscribe).await?;
    expect_subscribed(&mut reader, "s").await?;
    let reader_seq = Arc::new(AtomicU64::new(0));
    let reader_task = {
        let reader_seq = Arc::clone(&reader_seq);
        tokio::spawn(async move {
            let mut mirror = Mirror::default();
            while mirror.last_seq < TOTAL {
                mirror.apply(recv(&mut reader).await?, true)?;
                reader_seq.store(mirror.last_seq, Ordering::Release);
            }
            anyhow::Ok((mirror, reader))
        })
    };

    // The engine: a plain thread, kept at most half a queue ahead of the reading subscriber
    // (flow control of the test, so that only the stuck one overflows).
    let failed = Arc::new(AtomicBool::new(false));
    let publisher = {
        let hub = Arc::clone(&hub);
        let reader_seq = Arc::clone(&reader_seq);
        let failed = Arc::clone(&failed);
        std::thread::spawn(move || {
            let deadline = Instant::now() + GUARD;
            let mut max_queued = 0;
            let mut from = 1;
            while from <= TOTAL {
                let to = from + BATCH - 1;
                while to - reader_seq.load(Ordering::Acquire) > capacity as u64 / 2 {
                    if Instant::now() > deadline || failed.load(Ordering::Relaxed) {
                        return Err(anyhow::anyhow!(
                            "reader stopped at {}",
                            reader_seq.load(Ordering::Relaxed)
                        ));
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                publish(&hub, from, to, GAMES);
                max_queued = max_queued.max(hub.max_queued());
                from = to + 1;
            }
            Ok(max_queued)
        })
    };
    let reader_result = reader_task.await?;
    if reader_result.is_err() {
        failed.store(true, Ordering::Relaxed);
    }
    let max_queued = publisher.join().expect("publisher panicked")?;
    let (reader_mirror, _reader) = reader_result?;

    // The reader got every delta, in order, without gap (checked by `apply`).
    assert_eq!(reader_mirror.deltas, TOTAL);
    assert_eq!(reader_mirror.snapshots, vec![SnapshotReason::Subscribe]);
    let expected = hub_state(&hub, |_| true);
    assert_eq!(expected.len(), GAMES);
    assert_eq!(reader_mirror.state, expected);

    // The stuck one overflowed, and its queue never held more than its capacity.
    assert!(hub.resyncs() >= 1, "the stuck subscriber never overflowed");
    assert!(max_queued <= capacity, "queue reached {max_queued}");
    assert!(hub.max_queued() <= capacity);

    // It reads again: what was already in flight, then a resync snapshot, and ends in step.
    while stuck_mirror.last_seq < TOTAL {
        stuck_mirror.apply(recv(&mut stuck).await?, false)?;
    }
    assert!(stuck_mirror.snapshots.contains(&SnapshotReason::Resync));
    assert!(stuck_mirror.deltas < TOTAL);
    assert_eq!(stuck_mirror.state, expected);
    assert_eq!(hub.subscriber_count(), 2);
    Ok(())
}
