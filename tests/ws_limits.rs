//! Issue 6, subscriber limits, over real sockets on 127.0.0.1: a client that sends a message
//! over the size limit, floods messages, stops answering Pings or holds no subscription is cut
//! off with the Close code for its cause, while a well-behaved subscriber on the same server
//! keeps getting every delta.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Client, RawClient, RawFrame, WsServer, OP_PING, OP_TEXT};
use sideline::config::Config;
use sideline::delta::{Delta, DeltaCause};
use sideline::event::Sport;
use sideline::hub::{Hub, HubConfig};
use sideline::ws::protocol::ServerMessage;
use sideline::ws::WsConfig;

const CHANNEL: &str = "predictions";
const SUBSCRIBE: &str = r#"{"op":"subscribe","id":"s","channel":"predictions"}"#;

fn delta(seq: u64) -> Delta {
    Delta {
        seq,
        id: format!("test/1/{seq}"),
        pipeline: "test".into(),
        version: 1,
        sport: Sport::Nfl,
        game_id: format!("g{}", seq % 5),
        event_time_ms: seq * 100,
        event_seq: seq,
        old: None,
        new: (seq % 100) as f64 / 100.0,
        model_version: "v1".into(),
        cause: DeltaCause::Moved,
        changed: vec![],
        contributors: vec![],
        interval: None,
    }
}

/// The `[server]` section with short limits, through the same path as a config file.
fn server_limits(edit: impl FnOnce(&mut sideline::config::ServerConfig)) -> WsConfig {
    let mut cfg = Config::load(None).unwrap();
    let s = &mut cfg.server;
    s.max_message_bytes = 64 * 1024;
    s.client_messages_per_second = 5;
    s.client_message_burst = 10;
    s.ping_interval = Duration::from_millis(200);
    s.pong_timeout = Duration::from_secs(1);
    s.idle_timeout = Duration::from_secs(1);
    s.write_timeout = Duration::from_secs(60);
    edit(s);
    WsConfig::from(&cfg.server)
}

/// A queue no test run can overflow, so a subscriber that reads gets every delta.
fn hub_config() -> HubConfig {
    HubConfig {
        queue_capacity: 1_000_000,
        history: 100,
        ..HubConfig::default()
    }
}

fn texts(frames: &[RawFrame]) -> Vec<ServerMessage> {
    frames
        .iter()
        .filter(|f| f.opcode == OP_TEXT)
        .map(|f| serde_json::from_slice(&f.payload).expect("server message parses"))
        .collect()
}

fn delta_seqs(messages: &[ServerMessage]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Delta { delta, .. } => Some(delta.seq),
            _ => None,
        })
        .collect()
}

/// Publishes deltas 1, 2, ... in small batches until `stop` is set; returns the last seq.
fn publish_until(hub: Arc<Hub>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut seq = 0;
        while !stop.load(Ordering::Acquire) {
            let batch: Vec<Delta> = (seq + 1..=seq + 10).map(delta).collect();
            hub.publish(CHANNEL, &batch, &[]);
            seq += 10;
            std::thread::sleep(Duration::from_millis(2));
        }
        seq
    })
}

#[test]
fn misbehaving_clients_are_cut_off_while_a_subscriber_gets_every_delta() {
    let server = WsServer::start(hub_config(), server_limits(|_| {}), CHANNEL);
    let good = Client::connect(server.addr, SUBSCRIBE);
    good.wait_for("the subscription's snapshot", |ms| {
        ms.iter()
            .any(|m| matches!(m, ServerMessage::Snapshot { seq: 0, .. }))
    });
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = publish_until(Arc::clone(&server.hub), Arc::clone(&stop));

    // (1) A 10 MB text frame, against a 64 KiB limit: Close 1009. The sender writes from its
    // own thread, since the server stops reading it.
    let mut big = RawClient::connect(server.addr);
    let sender = {
        let mut w = big.try_clone();
        std::thread::spawn(move || w.send_big_text(10 * 1024 * 1024))
    };
    let (_, close) = big.read_until_close();
    assert_eq!(close.map(|(code, _)| code), Some(1009), "oversized message");
    // Nothing follows the Close frame: the server ended the connection.
    assert!(
        !matches!(big.read_frame(), Ok(Some(_))),
        "a frame after Close"
    );
    // The server may have taken (and discarded) the rest of the frame, or reset the connection.
    let _ = sender.join().unwrap();

    // (2) 100 subscribe messages at once, against 5/s with a burst of 10: Close 1008 with a
    // reason. Sends may fail once the server has cut it off.
    let mut flood = RawClient::connect(server.addr);
    for _ in 0..100 {
        if flood.send_text(SUBSCRIBE).is_err() {
            break;
        }
    }
    let (frames, close) = flood.read_until_close();
    let (code, reason) = close.expect("the flooding client gets a Close frame");
    assert_eq!(code, 1008, "flood");
    assert!(reason.contains("rate limit"), "reason: {reason}");
    let replies = texts(&frames);
    let subscribed = replies
        .iter()
        .filter(|m| matches!(m, ServerMessage::Subscribed { .. }))
        .count();
    // Cut short: the burst was answered, not the flood.
    assert!(
        (1..100).contains(&subscribed),
        "{subscribed} of 100 subscribes answered"
    );

    // (3) A subscriber that reads but never answers a Ping: pinged, then Close 1011.
    let mut dead = RawClient::connect(server.addr);
    dead.send_text(SUBSCRIBE).unwrap();
    let (frames, close) = dead.read_until_close();
    assert!(
        frames.iter().any(|f| f.opcode == OP_PING),
        "the server never pinged"
    );
    assert_eq!(close.map(|(code, _)| code), Some(1011), "no pong");
    // It did get deltas meanwhile, so it was cut off for its silence, not for lack of data.
    assert!(!delta_seqs(&texts(&frames)).is_empty());

    // (4) The well-behaved subscriber got every delta, without a gap, and is still there.
    stop.store(true, Ordering::Release);
    let last = publisher.join().unwrap();
    good.wait_for_seq(last);
    let messages = good.messages();
    assert_eq!(delta_seqs(&messages), (1..=last).collect::<Vec<_>>());
    assert!(
        !messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Error { .. })),
        "the subscriber got an error"
    );
    assert_eq!(server.hub.subscriber_count(), 1);
}

#[test]
fn a_connection_without_a_subscription_is_closed_when_idle() {
    let ws_cfg = server_limits(|s| {
        s.idle_timeout = Duration::from_millis(300);
        s.ping_interval = Duration::ZERO;
    });
    assert_eq!(ws_cfg.keepalive, None);
    let server = WsServer::start(hub_config(), ws_cfg, CHANNEL);
    let good = Client::connect(server.addr, SUBSCRIBE);

    // (5) Never subscribes: Close 1000.
    let mut never = RawClient::connect(server.addr);
    let (frames, close) = never.read_until_close();
    assert!(frames.is_empty());
    let (code, reason) = close.expect("the idle client gets a Close frame");
    assert_eq!(code, 1000, "idle");
    assert!(reason.contains("idle"), "reason: {reason}");

    // Subscribes, then unsubscribes: idle from then on.
    let mut left = RawClient::connect(server.addr);
    left.send_text(SUBSCRIBE).unwrap();
    left.send_text(r#"{"op":"unsubscribe","id":"u","channel":"predictions"}"#)
        .unwrap();
    let (frames, close) = left.read_until_close();
    assert!(texts(&frames)
        .iter()
        .any(|m| matches!(m, ServerMessage::Unsubscribed { .. })));
    assert_eq!(
        close.map(|(code, _)| code),
        Some(1000),
        "idle after leaving"
    );

    // The subscriber connected before both is not idle: it is still there and gets a delta.
    assert_eq!(server.hub.subscriber_count(), 1);
    server.hub.publish(CHANNEL, &[delta(1)], &[]);
    good.wait_for_seq(1);
}
