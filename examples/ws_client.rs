//! Run with: cargo run --example ws_client -- ws://127.0.0.1:9480 [--alerts CHANNEL] [GAME_ID ...]
//!
//! A minimal subscriber: subscribes to the `predictions` channel (optionally filtered to some
//! games), keeps the current value per game from the snapshot and the deltas, and prints each
//! message as it applies it. With `--alerts CHANNEL` it also subscribes to that alerts channel
//! (same games, warning and critical only), keeps the open alerts from the `alert_snapshot` and
//! the `alert` messages, and prints them. Start `sideline demo` first.

use std::collections::BTreeMap;

use futures_util::{SinkExt, StreamExt};
use sideline::alert::{Alert, AlertState, Severity};
use sideline::ws::protocol::ServerMessage;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:9480".into());
    let mut alerts_channel = None;
    let mut games = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "--alerts" {
            alerts_channel = Some(
                args.next()
                    .ok_or_else(|| anyhow::anyhow!("--alerts needs a channel name"))?,
            );
        } else {
            games.push(arg);
        }
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
    let filter = if games.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::json!({ "games": games })
    };
    let subscribe = serde_json::json!({"op": "subscribe", "id": "example", "channel": "predictions", "filter": filter});
    ws.send(Message::text(subscribe.to_string())).await?;
    if let Some(channel) = &alerts_channel {
        let mut filter = filter.clone();
        filter["severities"] = serde_json::json!(["warning", "critical"]);
        let subscribe = serde_json::json!({"op": "subscribe", "id": "alerts", "channel": channel, "filter": filter});
        ws.send(Message::text(subscribe.to_string())).await?;
    }
    let mut values: BTreeMap<String, f64> = BTreeMap::new();
    // Open alerts by id: the latest change of each, while it is open or escalated.
    let mut open: BTreeMap<String, Alert> = BTreeMap::new();
    while let Some(msg) = ws.next().await {
        let Message::Text(text) = msg? else { continue };
        match serde_json::from_str::<ServerMessage>(text.as_str())? {
            ServerMessage::Snapshot {
                seq,
                reason,
                values: v,
                ..
            } => {
                values = v.into_iter().map(|v| (v.game_id, v.value)).collect();
                println!("snapshot ({reason:?}) at seq {seq}: {} games", values.len());
            }
            ServerMessage::Delta { delta, .. } => {
                values.insert(delta.game_id.clone(), delta.new);
                println!(
                    "#{} {} {:?} -> {:.3}",
                    delta.seq, delta.game_id, delta.old, delta.new
                );
            }
            ServerMessage::Progress { event_time_ms, .. } => {
                eprintln!("progress: everything up to event time {event_time_ms} sent");
            }
            ServerMessage::AlertSnapshot {
                seq,
                reason,
                alerts,
                ..
            } => {
                open = alerts.into_iter().map(|a| (a.id.clone(), a)).collect();
                println!(
                    "alert snapshot ({reason:?}) at seq {seq}: {} open",
                    open.len()
                );
                for a in open.values() {
                    println!("  open {:?} {}", a.severity, a.message);
                }
            }
            ServerMessage::Alert { alert, .. } => {
                println!(
                    "alert #{} {:?} {:?} {}",
                    alert.seq, alert.state, alert.severity, alert.message
                );
                // Keep an alert while its latest change is open or escalated at a severity asked
                // for (the server also sends the change that takes an alert out of the set).
                let wanted = matches!(alert.severity, Severity::Warning | Severity::Critical);
                match alert.state {
                    AlertState::Open | AlertState::Escalated if wanted => {
                        open.insert(alert.id.clone(), alert);
                    }
                    _ => {
                        open.remove(&alert.id);
                    }
                }
                eprintln!("{} alerts open", open.len());
            }
            other => println!("{other:?}"),
        }
    }
    Ok(())
}
