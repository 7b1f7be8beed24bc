//! The WebSocket session logic driven over channels, without sockets.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::{Sink, Stream};
use sideline::alert::{Alert, AlertState, Evidence, Severity};
use sideline::delta::Delta;
use sideline::event::Sport;
use sideline::hub::{Hub, HubConfig};
use sideline::ws::protocol::{ErrorCode, ServerMessage, SnapshotReason};
use sideline::ws::session::{self, SessionConfig, SessionEnd};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

const CHANNEL: &str = "predictions";

fn delta(seq: u64) -> Delta {
    Delta {
        seq,
        id: format!("test/1/{seq}"),
        pipeline: "test".into(),
        version: 1,
        sport: Sport::Soccer,
        game_id: format!("m{}", seq % 3),
        event_time_ms: seq * 100,
        event_seq: seq,
        old: None,
        new: 0.25,
        model_version: "v1".into(),
        cause: sideline::delta::DeltaCause::Moved,
        changed: vec![],
        contributors: vec![],
        interval: None,
    }
}

fn publish(hub: &Hub, from: u64, to: u64) {
    let deltas: Vec<Delta> = (from..=to).map(delta).collect();
    hub.publish(CHANNEL, &deltas, &[]);
}

fn config() -> SessionConfig {
    SessionConfig {
        max_subscriptions: 1,
        max_snapshot_bytes: 1 << 20,
        write_timeout: None,
        keepalive: None,
        idle_timeout: None,
        rate_limit: None,
    }
}

/// A session whose socket is a pair of channels; `out_capacity` bounds the server -> client side.
struct Harness {
    to_server: mpsc::Sender<Message>,
    from_server: mpsc::Receiver<Message>,
    task: JoinHandle<SessionEnd>,
}

fn channel_sink(tx: mpsc::Sender<Message>) -> impl Sink<Message, Error = String> + Unpin {
    Box::pin(futures_util::sink::unfold(
        tx,
        |tx, m: Message| async move {
            tx.send(m).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(tx)
        },
    ))
}

fn channel_stream(
    rx: mpsc::Receiver<Message>,
) -> impl Stream<Item = Result<Message, Infallible>> + Unpin {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|m| (Ok(m), rx))
    }))
}

fn session(hub: &Arc<Hub>, cfg: SessionConfig, out_capacity: usize) -> Harness {
    let (to_server, server_in) = mpsc::channel(16);
    let (server_out, from_server) = mpsc::channel(out_capacity);
    let task = tokio::spawn(session::run(
        Arc::clone(hub),
        cfg,
        channel_sink(server_out),
        channel_stream(server_in),
    ));
    Harness {
        to_server,
        from_server,
        task,
    }
}

impl Harness {
    async fn send(&self, text: &str) -> Result<()> {
        self.to_server.send(Message::text(text)).await?;
        Ok(())
    }

    async fn recv(&mut self) -> Result<ServerMessage> {
        let msg = tokio::time::timeout(Duration::from_secs(60), self.from_server.recv())
            .await
            .context("no message within the guard time")?
            .context("session ended")?;
        match msg {
            Message::Text(t) => Ok(serde_json::from_str(t.as_str())?),
            other => bail!("unexpected frame {other:?}"),
        }
    }
}

fn hub() -> Arc<Hub> {
    let hub = Hub::new(HubConfig {
        queue_capacity: 8,
        history: 100,
        ..HubConfig::default()
    });
    hub.ensure_channel(CHANNEL);
    hub
}

#[tokio::test]
async fn resume_from_history_sends_missed_deltas_without_snapshot() -> Result<()> {
    let hub = hub();
    publish(&hub, 1, 20);
    let mut s = session(&hub, config(), 64);
    s.send(r#"{"op":"subscribe","id":"a","channel":"predictions","filter":{"games":["m1"]},"resume_from":14}"#)
        .await?;
    assert_eq!(
        s.recv().await?,
        ServerMessage::Subscribed {
            id: Some("a".into()),
            channel: CHANNEL.into(),
            resumed_from: Some(14)
        }
    );
    let mut seqs = Vec::new();
    for _ in 0..2 {
        match s.recv().await? {
            ServerMessage::Delta { delta, .. } => seqs.push(delta.seq),
            other => bail!("expected a delta, got {other:?}"),
        }
    }
    assert_eq!(seqs, vec![16, 19]);
    Ok(())
}

#[tokio::test]
async fn subscription_limits_and_resubscribe() -> Result<()> {
    let hub = hub();
    publish(&hub, 1, 5);
    let mut s = session(&hub, config(), 64);
    s.send(r#"{"op":"subscribe","id":"a","channel":"predictions"}"#)
        .await?;
    assert!(matches!(s.recv().await?, ServerMessage::Subscribed { .. }));
    assert!(matches!(
        s.recv().await?,
        ServerMessage::Snapshot { seq: 5, .. }
    ));
    hub.ensure_channel("alerts");
    s.send(r#"{"op":"subscribe","id":"b","channel":"alerts"}"#)
        .await?;
    assert!(matches!(
        s.recv().await?,
        ServerMessage::Error {
            code: ErrorCode::TooManySubscriptions,
            ..
        }
    ));
    // Subscribing again to the same channel replaces the subscription.
    s.send(r#"{"op":"subscribe","id":"c","channel":"predictions","filter":{"games":["m2"]}}"#)
        .await?;
    assert!(matches!(s.recv().await?, ServerMessage::Subscribed { .. }));
    match s.recv().await? {
        ServerMessage::Snapshot { seq: 5, values, .. } => assert_eq!(values.len(), 1),
        other => bail!("{other:?}"),
    }
    assert_eq!(hub.subscriber_count(), 1);
    drop(s.to_server);
    assert!(matches!(s.task.await?, SessionEnd::ClientClosed));
    assert_eq!(hub.subscriber_count(), 0);
    Ok(())
}

#[tokio::test]
async fn snapshot_over_the_limit_is_refused() -> Result<()> {
    let hub = hub();
    publish(&hub, 1, 5);
    let cfg = SessionConfig {
        max_snapshot_bytes: 100,
        ..config()
    };
    let mut s = session(&hub, cfg, 64);
    s.send(r#"{"op":"subscribe","id":"a","channel":"predictions"}"#)
        .await?;
    assert!(matches!(s.recv().await?, ServerMessage::Subscribed { .. }));
    match s.recv().await? {
        ServerMessage::Error { id, code, .. } => {
            assert_eq!(
                (id.as_deref(), code),
                (Some("a"), ErrorCode::SnapshotTooLarge)
            )
        }
        other => bail!("{other:?}"),
    }
    Ok(())
}

/// A client that stops reading overflows its queue; when it reads again it gets a resync
/// snapshot and then the deltas after it, in order.
#[tokio::test]
async fn slow_reader_gets_resync_snapshot() -> Result<()> {
    let hub = hub();
    let mut s = session(&hub, config(), 1);
    s.send(r#"{"op":"subscribe","channel":"predictions"}"#)
        .await?;
    assert!(matches!(s.recv().await?, ServerMessage::Subscribed { .. }));
    assert!(matches!(
        s.recv().await?,
        ServerMessage::Snapshot { seq: 0, .. }
    ));
    // The session blocks writing into the full channel; the queue (8) overflows.
    for seq in 1..=100 {
        publish(&hub, seq, seq);
        tokio::task::yield_now().await;
    }
    assert!(hub.resyncs() >= 1);
    assert!(hub.max_queued() <= 8);
    let mut last = 0;
    let mut resynced = false;
    while last < 100 {
        match s.recv().await? {
            ServerMessage::Delta { delta, .. } => {
                assert!(delta.seq > last);
                last = delta.seq;
            }
            ServerMessage::Snapshot {
                seq,
                reason: SnapshotReason::Resync,
                values,
                ..
            } => {
                assert!(seq >= last && values.len() == 3);
                resynced = true;
                last = seq;
            }
            other => bail!("{other:?}"),
        }
    }
    assert!(resynced);
    Ok(())
}

fn alert(seq: u64, game: u64, state: AlertState) -> Alert {
    Alert {
        seq,
        id: format!("test/jump/soccer/m{game}/0"),
        pipeline: "test".into(),
        version: 1,
        detector: "jump".into(),
        kind: "jump".into(),
        sport: Sport::Soccer,
        game_id: format!("m{game}"),
        state,
        severity: Severity::Warning,
        event_time_ms: seq * 100,
        opened_at_ms: 0,
        message: "jump".into(),
        evidence: Evidence {
            value: 1.0,
            threshold: 0.5,
            score: None,
            baseline: None,
            window: "last play".into(),
        },
    }
}

/// Issue 5: alerts are not conflated away. A client that stops reading an alerts channel
/// overflows its queue; when it reads again it gets an `alert_snapshot` with `reason: resync`
/// holding every open alert, then the alerts after it.
#[tokio::test]
async fn slow_alert_reader_gets_every_open_alert_in_its_resync() -> Result<()> {
    let hub = hub();
    hub.ensure_alert_channel("alerts");
    let mut s = session(&hub, config(), 1);
    s.send(r#"{"op":"subscribe","channel":"alerts"}"#).await?;
    assert!(matches!(s.recv().await?, ServerMessage::Subscribed { .. }));
    assert!(matches!(
        s.recv().await?,
        ServerMessage::AlertSnapshot { seq: 0, .. }
    ));
    // Sixty games open an alert (1..=60), then the first forty resolve (61..=100).
    for seq in 1..=100 {
        let a = if seq <= 60 {
            alert(seq, seq, AlertState::Open)
        } else {
            alert(seq, seq - 60, AlertState::Resolved)
        };
        hub.publish_alerts("alerts", &[a]);
        tokio::task::yield_now().await;
    }
    assert!(hub.resyncs() >= 1);
    let mut open = std::collections::BTreeMap::new();
    let mut last = 0;
    let mut resynced = false;
    while last < 100 {
        match s.recv().await? {
            ServerMessage::Alert { alert, .. } => {
                assert!(alert.seq > last);
                last = alert.seq;
                match alert.state {
                    AlertState::Open | AlertState::Escalated => {
                        open.insert(alert.id.clone(), alert)
                    }
                    AlertState::Resolved | AlertState::Retracted => open.remove(&alert.id),
                };
            }
            ServerMessage::AlertSnapshot {
                seq,
                reason: SnapshotReason::Resync,
                alerts,
                ..
            } => {
                assert!(seq >= last);
                open = alerts.into_iter().map(|a| (a.id.clone(), a)).collect();
                resynced = true;
                last = seq;
            }
            other => bail!("{other:?}"),
        }
    }
    assert!(resynced);
    // Games 41 to 60 are still open; the client has each, as the hub does.
    let open: Vec<Alert> = open.into_values().collect();
    assert_eq!(open.len(), 20);
    assert_eq!(open, hub.open_alerts("alerts"));
    Ok(())
}

#[tokio::test]
async fn stuck_writer_is_cut_off() -> Result<()> {
    let hub = hub();
    let cfg = SessionConfig {
        write_timeout: Some(Duration::from_millis(200)),
        ..config()
    };
    let s = session(&hub, cfg, 1);
    s.send(r#"{"op":"subscribe","channel":"predictions"}"#)
        .await?;
    publish(&hub, 1, 50);
    // Nobody reads `from_server`: the session must end by itself.
    let end = tokio::time::timeout(Duration::from_secs(60), s.task).await??;
    assert!(matches!(end, SessionEnd::Stuck(_)), "{end:?}");
    assert_eq!(hub.subscriber_count(), 0);
    Ok(())
}
