//! Issue 5: the WebSocket alerts channel, over real sockets on 127.0.0.1 with a real
//! tokio-tungstenite client: severity and sport filters, the open alerts in a late subscriber's
//! snapshot, and resume without gap or duplicate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use sideline::alert::{Alert, AlertState, Evidence, Severity};
use sideline::event::Sport;
use sideline::hub::{Hub, HubConfig};
use sideline::ws::protocol::{ErrorCode, ServerMessage, SnapshotReason};
use sideline::ws::{serve, WsConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const CHANNEL: &str = "alerts";
/// A guard against hanging forever, not a timing assertion.
const GUARD: Duration = Duration::from_secs(60);

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One change of the alert of `detector` on `game` (one alert per pair in these tests).
fn alert(
    seq: u64,
    sport: Sport,
    game: &str,
    detector: &str,
    state: AlertState,
    severity: Severity,
) -> Alert {
    let opened_at_ms = 1_536_278_400_000;
    Alert {
        seq,
        id: format!("test/{detector}/{sport}/{game}/{opened_at_ms}"),
        pipeline: "test".into(),
        version: 1,
        detector: detector.into(),
        kind: "jump".into(),
        sport,
        game_id: game.into(),
        state,
        severity,
        event_time_ms: opened_at_ms + seq * 1000,
        opened_at_ms,
        message: format!("{detector} on {sport} {game}: {state:?}"),
        evidence: Evidence {
            value: 0.3,
            threshold: 0.2,
            score: Some(0.3),
            baseline: Some(0.5),
            window: "last 5 plays".into(),
        },
    }
}

/// A day of alerts on two NFL games and one NBA game.
fn day() -> Vec<Alert> {
    use AlertState::*;
    use Severity::*;
    use Sport::{Nba, Nfl};
    vec![
        alert(1, Nfl, "g1", "jump", Open, Warning),
        alert(2, Nba, "g2", "jump", Open, Critical),
        alert(3, Nfl, "g1", "ewma", Open, Info),
        alert(4, Nfl, "g3", "jump", Open, Critical),
        alert(5, Nfl, "g1", "jump", Escalated, Critical),
        alert(6, Nfl, "g1", "ewma", Escalated, Warning),
        alert(7, Nba, "g2", "jump", Resolved, Critical),
        alert(8, Nfl, "g3", "jump", Retracted, Critical),
        alert(9, Nfl, "g1", "cusum", Open, Info),
        alert(10, Nfl, "g3", "ewma", Open, Warning),
    ]
}

/// The seqs of `day()` a subscriber with sports `[nfl]` and severities `[warning, critical]`
/// receives: NFL changes at warning or critical (1, 4, 5, 6, 8, 10), not 3 or 9 (info), nor the
/// NBA ones.
const NFL_WARNING_OR_CRITICAL: [u64; 6] = [1, 4, 5, 6, 8, 10];

async fn start() -> Result<(Arc<Hub>, SocketAddr)> {
    let hub = Hub::new(HubConfig::default());
    hub.ensure_alert_channel(CHANNEL);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener, Arc::clone(&hub), WsConfig::default()));
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

async fn recv_alert(ws: &mut Client) -> Result<Alert> {
    match recv(ws).await? {
        ServerMessage::Alert { channel, alert } if channel == CHANNEL => Ok(alert),
        other => bail!("expected an alert, got {other:?}"),
    }
}

/// Subscribes and returns the `resumed_from` of the `subscribed` reply.
async fn subscribe(ws: &mut Client, request: &str) -> Result<Option<u64>> {
    send(ws, request).await?;
    match recv(ws).await? {
        ServerMessage::Subscribed {
            channel,
            resumed_from,
            ..
        } if channel == CHANNEL => Ok(resumed_from),
        other => bail!("expected subscribed, got {other:?}"),
    }
}

async fn recv_alert_snapshot(ws: &mut Client) -> Result<(u64, SnapshotReason, Vec<Alert>)> {
    match recv(ws).await? {
        ServerMessage::AlertSnapshot {
            channel,
            seq,
            reason,
            alerts,
        } if channel == CHANNEL => Ok((seq, reason, alerts)),
        other => bail!("expected an alert snapshot, got {other:?}"),
    }
}

#[tokio::test]
async fn filtered_subscriber_gets_exactly_the_matching_alerts_in_order() -> Result<()> {
    let (hub, addr) = start().await?;
    let mut ws = connect(addr).await?;
    let filtered = r#"{"op":"subscribe","id":"f","channel":"alerts","filter":{"sports":["nfl"],"severities":["warning","critical"]}}"#;
    assert_eq!(subscribe(&mut ws, filtered).await?, None);
    assert_eq!(
        recv_alert_snapshot(&mut ws).await?,
        (0, SnapshotReason::Subscribe, vec![])
    );

    let all = day();
    hub.publish_alerts(CHANNEL, &all[..4]);
    hub.publish_alerts(CHANNEL, &all[4..]);
    // A last matching alert marks the end: anything sent that should not have been would come
    // before it.
    let marker = alert(
        11,
        Sport::Nfl,
        "g4",
        "jump",
        AlertState::Open,
        Severity::Critical,
    );
    hub.publish_alerts(CHANNEL, std::slice::from_ref(&marker));
    let mut got = Vec::new();
    loop {
        let a = recv_alert(&mut ws).await?;
        let seq = a.seq;
        got.push(a);
        if seq == marker.seq {
            break;
        }
    }
    let mut expected: Vec<Alert> = all
        .into_iter()
        .filter(|a| NFL_WARNING_OR_CRITICAL.contains(&a.seq))
        .collect();
    expected.push(marker);
    assert_eq!(got, expected);

    // `severities` means nothing on a delta channel.
    hub.ensure_channel("predictions");
    send(
        &mut ws,
        r#"{"op":"subscribe","id":"d","channel":"predictions","filter":{"severities":["critical"]}}"#,
    )
    .await?;
    match recv(&mut ws).await? {
        ServerMessage::Error { id, code, .. } => {
            assert_eq!((id.as_deref(), code), (Some("d"), ErrorCode::BadFilter))
        }
        other => bail!("expected bad_filter, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn late_subscriber_gets_the_open_alerts_in_its_snapshot() -> Result<()> {
    let (hub, addr) = start().await?;
    hub.publish_alerts(CHANNEL, &day());

    let mut ws = connect(addr).await?;
    subscribe(
        &mut ws,
        r#"{"op":"subscribe","id":"late","channel":"alerts","filter":{"sports":["nfl"],"severities":["warning","critical"]}}"#,
    )
    .await?;
    let (seq, reason, alerts) = recv_alert_snapshot(&mut ws).await?;
    assert_eq!((seq, reason), (10, SnapshotReason::Subscribe));
    // Open in NFL at warning or critical, at their latest change: g1's jump (escalated to
    // critical, 5), g1's ewma (escalated to warning, 6) and g3's ewma (10); g3's jump was
    // retracted, g1's cusum is info. Ordered by sport, game, then alert id.
    let got: Vec<(u64, &str, AlertState)> = alerts
        .iter()
        .map(|a| (a.seq, a.detector.as_str(), a.state))
        .collect();
    assert_eq!(
        got,
        vec![
            (6, "ewma", AlertState::Escalated),
            (5, "jump", AlertState::Escalated),
            (10, "ewma", AlertState::Open),
        ]
    );
    assert_eq!(&alerts[1], &day()[4]);

    // Without a filter: every open alert, the NBA one resolved.
    let mut all = connect(addr).await?;
    subscribe(&mut all, r#"{"op":"subscribe","channel":"alerts"}"#).await?;
    let (_, _, alerts) = recv_alert_snapshot(&mut all).await?;
    assert_eq!(alerts, hub.open_alerts(CHANNEL));
    assert_eq!(alerts.len(), 4);
    Ok(())
}

#[tokio::test]
async fn resumed_subscriber_gets_no_gap_and_no_duplicate() -> Result<()> {
    let (hub, addr) = start().await?;
    let all = day();
    hub.publish_alerts(CHANNEL, &all[..3]);

    // A first connection reads up to alert 5, then goes away.
    let mut first = connect(addr).await?;
    subscribe(&mut first, r#"{"op":"subscribe","channel":"alerts"}"#).await?;
    let (seq, _, _) = recv_alert_snapshot(&mut first).await?;
    assert_eq!(seq, 3);
    hub.publish_alerts(CHANNEL, &all[3..5]);
    assert_eq!(recv_alert(&mut first).await?.seq, 4);
    assert_eq!(recv_alert(&mut first).await?.seq, 5);
    first.close(None).await?;
    drop(first);

    // Meanwhile alerts 6 to 8; the client comes back resuming after 5.
    hub.publish_alerts(CHANNEL, &all[5..8]);
    let mut again = connect(addr).await?;
    let resumed = subscribe(
        &mut again,
        r#"{"op":"subscribe","id":"again","channel":"alerts","resume_from":5}"#,
    )
    .await?;
    assert_eq!(resumed, Some(5));
    hub.publish_alerts(CHANNEL, &all[8..]);
    // No snapshot: the missed alerts, then the live ones, each exactly once and in order.
    let mut got = Vec::new();
    while got.last().is_none_or(|a: &Alert| a.seq < 10) {
        got.push(recv_alert(&mut again).await?);
    }
    assert_eq!(got, all[5..].to_vec());

    // What comes next is the next alert published, not a repeat.
    let next = alert(
        11,
        Sport::Nba,
        "g2",
        "ewma",
        AlertState::Open,
        Severity::Info,
    );
    hub.publish_alerts(CHANNEL, std::slice::from_ref(&next));
    assert_eq!(recv_alert(&mut again).await?, next);
    Ok(())
}
