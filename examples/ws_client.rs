//! Run with: cargo run --example ws_client -- ws://127.0.0.1:9480 [GAME_ID ...]
//!
//! A minimal subscriber: subscribes to the `predictions` channel (optionally filtered to some
//! games), keeps the current value per game from the snapshot and the deltas, and prints each
//! message as it applies it. Start `sideline demo` first.

use std::collections::BTreeMap;

use futures_util::{SinkExt, StreamExt};
use sideline::ws::protocol::ServerMessage;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:9480".into());
    let games: Vec<String> = args.collect();
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
    let filter = if games.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::json!({ "games": games })
    };
    let subscribe = serde_json::json!({"op": "subscribe", "id": "example", "channel": "predictions", "filter": filter});
    ws.send(Message::text(subscribe.to_string())).await?;
    let mut values: BTreeMap<String, f64> = BTreeMap::new();
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
            other => println!("{other:?}"),
        }
    }
    Ok(())
}
