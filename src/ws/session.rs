//! One client connection's protocol logic, generic over the message `Sink` and `Stream` so it
//! can be driven by a WebSocket or, in tests, by channels.
//!
//! The session alternates between reading one client message and writing what is pending:
//! replies first (so a snapshot always precedes its subscription's deltas or alerts), then up
//! to [`WRITE_BATCH`] frames per subscription, then a flush. While the client is not reading, the
//! session waits in the write and the hub's bounded queues absorb (then drop and resync) what
//! the engine publishes meanwhile.

use std::collections::VecDeque;
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::protocol::{self, ClientError, ClientMessage, ErrorCode, ServerMessage, SnapshotReason};
use crate::hub::{ChannelSnapshot, Hub, Start, SubscribeError, Subscription, Work};

/// Frames (deltas or alert changes) taken from one subscription's queue per write pass.
pub const WRITE_BATCH: usize = 64;

/// The limits a session enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Subscriptions one connection may hold at once.
    pub max_subscriptions: usize,
    /// The largest snapshot frame sent; a bigger one drops the subscription with
    /// `snapshot_too_large`.
    pub max_snapshot_bytes: usize,
    /// A write pass that cannot complete within this time means the client is stuck: the
    /// connection is cut. `None` waits forever.
    pub write_timeout: Option<Duration>,
}

/// How a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    /// The client closed the connection (or its stream ended).
    #[error("client closed the connection")]
    ClientClosed,
    /// The client did not accept data within the write timeout.
    #[error("client stuck: no write progress within {0:?}")]
    Stuck(Duration),
    /// Reading or writing failed (external: the network or the client).
    #[error("transport error: {0}")]
    Transport(String),
}

/// What the pending writes concluded.
enum Pass {
    /// Everything pending was written.
    Done,
    /// Some subscription still has queued frames.
    More,
}

struct Session {
    hub: Arc<Hub>,
    cfg: SessionConfig,
    wake: Arc<Notify>,
    subscriptions: Vec<Subscription>,
    /// Replies and snapshots to write before any delta or alert.
    replies: VecDeque<Utf8Bytes>,
}

/// Runs one client session until the client leaves, fails or gets stuck.
pub async fn run<Si, St, E>(
    hub: Arc<Hub>,
    cfg: SessionConfig,
    mut sink: Si,
    mut stream: St,
) -> SessionEnd
where
    Si: Sink<Message> + Unpin,
    Si::Error: Display,
    St: Stream<Item = Result<Message, E>> + Unpin,
    E: Display,
{
    let mut session = Session {
        hub,
        cfg,
        wake: Arc::new(Notify::new()),
        subscriptions: Vec::new(),
        replies: VecDeque::new(),
    };
    let mut more = false;
    loop {
        let wake = Arc::clone(&session.wake);
        tokio::select! {
            biased;
            incoming = stream.next() => match incoming {
                None | Some(Ok(Message::Close(_))) => return SessionEnd::ClientClosed,
                Some(Err(e)) => return SessionEnd::Transport(e.to_string()),
                Some(Ok(Message::Text(text))) => session.handle_text(text.as_str()),
                Some(Ok(Message::Binary(_))) => session.reply_error(ClientError::new(
                    None,
                    ErrorCode::UnsupportedMessage,
                    "binary frames are not supported; send JSON text",
                )),
                // Pings are answered by the WebSocket layer.
                Some(Ok(_)) => continue,
            },
            _ = wake.notified() => {}
            _ = std::future::ready(()), if more => {}
        }
        let write_timeout = session.cfg.write_timeout;
        let pass = session.write_pass(&mut sink);
        let result = match write_timeout {
            Some(t) => match tokio::time::timeout(t, pass).await {
                Ok(r) => r,
                Err(_) => return SessionEnd::Stuck(t),
            },
            None => pass.await,
        };
        match result {
            Ok(Pass::Done) => more = false,
            Ok(Pass::More) => more = true,
            Err(e) => return e,
        }
    }
}

fn transport<E: Display>(e: E) -> SessionEnd {
    SessionEnd::Transport(e.to_string())
}

impl Session {
    fn reply(&mut self, msg: &ServerMessage) {
        self.replies.push_back(protocol::encode(msg).into());
    }

    fn reply_error(&mut self, e: ClientError) {
        metrics::counter!("sideline_ws_client_errors_total", "code" => e.code.as_str())
            .increment(1);
        tracing::debug!(code = e.code.as_str(), message = %e.message, "client error");
        self.reply(&e.to_message());
    }

    fn handle_text(&mut self, text: &str) {
        match protocol::parse_client_message(text) {
            Ok(msg) => self.handle(msg),
            Err(e) => self.reply_error(e),
        }
    }

    fn handle(&mut self, msg: ClientMessage) {
        match msg {
            ClientMessage::Ping { id } => self.reply(&ServerMessage::Pong { id }),
            ClientMessage::Unsubscribe { id, channel } => {
                match self
                    .subscriptions
                    .iter()
                    .position(|s| s.channel() == channel)
                {
                    Some(i) => {
                        self.subscriptions.swap_remove(i);
                        self.reply(&ServerMessage::Unsubscribed { id, channel });
                    }
                    None => self.reply_error(ClientError::new(
                        id,
                        ErrorCode::NotSubscribed,
                        format!("not subscribed to `{channel}`"),
                    )),
                }
            }
            ClientMessage::Subscribe {
                id,
                channel,
                filter,
                resume_from,
            } => {
                // Subscribing again replaces: drop the old one first, so none of its frames
                // can follow the new snapshot.
                let existing = self
                    .subscriptions
                    .iter()
                    .position(|s| s.channel() == channel);
                if let Some(i) = existing {
                    self.subscriptions.swap_remove(i);
                } else if self.subscriptions.len() >= self.cfg.max_subscriptions {
                    return self.reply_error(ClientError::new(
                        id,
                        ErrorCode::TooManySubscriptions,
                        format!(
                            "at most {} subscriptions per connection",
                            self.cfg.max_subscriptions
                        ),
                    ));
                }
                let filter = filter.unwrap_or_default().into();
                let wake = Arc::clone(&self.wake);
                match self.hub.subscribe(&channel, filter, resume_from, wake) {
                    Err(e @ SubscribeError::UnknownChannel(_)) => self.reply_error(
                        ClientError::new(id, ErrorCode::UnknownChannel, e.to_string()),
                    ),
                    Err(e @ SubscribeError::SeveritiesOnDeltas(_)) => {
                        self.reply_error(ClientError::new(id, ErrorCode::BadFilter, e.to_string()))
                    }
                    Ok((sub, start)) => {
                        let resumed_from = match &start {
                            Start::Resumed { from } => Some(*from),
                            Start::Snapshot(..) => None,
                        };
                        self.reply(&ServerMessage::Subscribed {
                            id: id.clone(),
                            channel: channel.clone(),
                            resumed_from,
                        });
                        if let Start::Snapshot(snapshot, reason) = start {
                            match self.snapshot_frame(&channel, snapshot, reason) {
                                Ok(frame) => self.replies.push_back(frame),
                                Err(e) => return self.reply_error(ClientError { id, ..e }),
                            }
                        }
                        self.subscriptions.push(sub);
                    }
                }
            }
        }
    }

    fn snapshot_frame(
        &self,
        channel: &str,
        snapshot: ChannelSnapshot,
        reason: SnapshotReason,
    ) -> Result<Utf8Bytes, ClientError> {
        let frame = protocol::encode(&snapshot.into_message(channel, reason));
        if frame.len() > self.cfg.max_snapshot_bytes {
            return Err(ClientError::new(
                None,
                ErrorCode::SnapshotTooLarge,
                format!(
                    "snapshot of `{channel}` is {} bytes, over the limit of {}; narrow the filter",
                    frame.len(),
                    self.cfg.max_snapshot_bytes
                ),
            ));
        }
        Ok(frame.into())
    }

    /// Writes pending replies, then a batch from each subscription, then flushes.
    async fn write_pass<Si>(&mut self, sink: &mut Si) -> Result<Pass, SessionEnd>
    where
        Si: Sink<Message> + Unpin,
        Si::Error: Display,
    {
        let mut sent = 0u64;
        let mut latencies = Vec::new();
        let mut more = false;
        let mut i = 0;
        loop {
            while let Some(frame) = self.replies.pop_front() {
                sink.feed(Message::Text(frame)).await.map_err(transport)?;
                sent += 1;
            }
            let Some(sub) = self.subscriptions.get(i) else {
                break;
            };
            match sub.take(WRITE_BATCH) {
                Work::Idle => {}
                Work::Frames {
                    frames,
                    progress,
                    more: m,
                } => {
                    more |= m;
                    for f in &frames {
                        sink.feed(Message::Text(f.frame().clone()))
                            .await
                            .map_err(transport)?;
                        latencies.extend(f.ingest_ms());
                    }
                    sent += frames.len() as u64;
                    if let Some(t) = progress {
                        let frame = protocol::progress_frame(sub.channel(), t);
                        sink.feed(Message::text(frame)).await.map_err(transport)?;
                        sent += 1;
                    }
                }
                Work::Resync => {
                    let (snapshot, progress) = sub.resync();
                    let channel = sub.channel().to_owned();
                    match self.snapshot_frame(&channel, snapshot, SnapshotReason::Resync) {
                        Ok(frame) => {
                            self.replies.push_back(frame);
                            if let Some(t) = progress {
                                self.replies
                                    .push_back(protocol::progress_frame(&channel, t).into());
                            }
                            more = true;
                        }
                        Err(e) => {
                            self.subscriptions.swap_remove(i);
                            self.reply_error(e);
                            continue;
                        }
                    }
                }
            }
            i += 1;
        }
        sink.flush().await.map_err(transport)?;
        for t in latencies {
            crate::metrics::observe_e2e_latency(t);
        }
        if sent > 0 {
            metrics::counter!("sideline_ws_messages_sent_total").increment(sent);
        }
        Ok(if more { Pass::More } else { Pass::Done })
    }
}
