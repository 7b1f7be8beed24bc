//! One client connection's protocol logic, generic over the message `Sink` and `Stream` so it
//! can be driven by a WebSocket or, in tests, by channels.
//!
//! The session alternates between reading one client message and writing what is pending:
//! replies first (so a snapshot always precedes its subscription's deltas or alerts), then up
//! to [`WRITE_BATCH`] frames per subscription, then a flush. While the client is not reading, the
//! session waits in the write and the hub's bounded queues absorb (then drop and resync) what
//! the engine publishes meanwhile.
//!
//! The session also cuts a client off (see [`SessionEnd`] for the close code of each cause): a
//! message over the size limit, messages faster than the [`RateLimit`], no frame within the
//! [`Keepalive`] timeout of a Ping, no subscription for the idle timeout, or no write progress
//! within the write timeout. Sending the Close frame is the caller's part
//! ([`SessionEnd::close_frame`]), since it owns the socket.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Bytes, Message, Utf8Bytes};

use super::limits::{Due, IdleClock, Keepalive, Liveness, RateLimit, TokenBucket};
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
    /// WebSocket Ping after a quiet interval, and the time allowed to answer; `None`: no Pings.
    pub keepalive: Option<Keepalive>,
    /// A connection without a subscription for this long is closed; `None` keeps it.
    pub idle_timeout: Option<Duration>,
    /// Messages (text, binary, Ping) a client may send; `None`: no limit.
    pub rate_limit: Option<RateLimit>,
}

/// What a read error means to the session: the stream's error type says whether the client sent
/// a message over the size limit.
pub trait ReadError: Display {
    /// The client sent a message or frame over the size limit.
    fn is_too_big(&self) -> bool;
}

impl ReadError for tungstenite::Error {
    fn is_too_big(&self) -> bool {
        matches!(
            self,
            tungstenite::Error::Capacity(CapacityError::MessageTooLong { .. })
        )
    }
}

impl ReadError for Infallible {
    fn is_too_big(&self) -> bool {
        match *self {}
    }
}

/// How a session ended. Every variant but `ClientClosed` and `Transport` is a cut-off by the
/// server, with a Close frame ([`SessionEnd::close_frame`]).
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    /// The client closed the connection (or its stream ended).
    #[error("client closed the connection")]
    ClientClosed,
    /// The client did not accept data within the write timeout (close code 1008: the client
    /// broke the server's policy that subscribers read; the frame rarely gets through).
    #[error("client stuck: no write progress within {0:?}")]
    Stuck(Duration),
    /// Reading or writing failed (external: the network or the client).
    #[error("transport error: {0}")]
    Transport(String),
    /// The client sent a message or frame over the size limit (close code 1009).
    #[error("message too big: {0}")]
    TooBig(String),
    /// The client sent messages faster than its rate limit (close code 1008).
    #[error("more than {} messages/s (burst {})", .0.per_second, .0.burst)]
    Flood(RateLimit),
    /// The client sent no frame within this long of a Ping (close code 1011).
    #[error("no pong within {0:?} of a ping")]
    PongTimeout(Duration),
    /// The connection held no subscription for this long (close code 1000).
    #[error("no subscription for {0:?}")]
    Idle(Duration),
}

impl SessionEnd {
    /// The `cause` label of `sideline_ws_disconnects_total`.
    pub fn cause(&self) -> &'static str {
        match self {
            SessionEnd::ClientClosed => "client_closed",
            SessionEnd::Transport(_) => "transport",
            SessionEnd::Stuck(_) => "slow_consumer",
            SessionEnd::TooBig(_) => "message_too_big",
            SessionEnd::Flood(_) => "flood",
            SessionEnd::PongTimeout(_) => "pong_timeout",
            SessionEnd::Idle(_) => "idle",
        }
    }

    /// The Close frame the server sends for a cut-off; `None` when the client left by itself.
    ///
    /// Codes (RFC 6455 section 7.4.1): 1009 for a message too big, as the RFC defines it. 1008
    /// (policy violation) for a flood and for a slow consumer: both are the client breaking
    /// the server's rules, and 1013 would blame an overloaded server instead. 1011 for a
    /// missing pong: nothing the client sent broke a policy (not 1008), and the server is not
    /// going away (not 1001); an unexpected condition, the client falling silent, keeps the
    /// server from serving it (the code Python's `websockets` uses for a keepalive timeout).
    /// 1000 for idle: a connection with nothing to carry is done, normally.
    pub fn close_frame(&self) -> Option<CloseFrame> {
        let (code, reason) = match self {
            SessionEnd::ClientClosed | SessionEnd::Transport(_) => return None,
            SessionEnd::TooBig(_) => (CloseCode::Size, "message too big".to_string()),
            SessionEnd::Stuck(_) => (CloseCode::Policy, "slow consumer".to_string()),
            SessionEnd::Flood(limit) => (
                CloseCode::Policy,
                format!(
                    "rate limit: more than {} messages/s (burst {})",
                    limit.per_second, limit.burst
                ),
            ),
            SessionEnd::PongTimeout(_) => (CloseCode::Error, "ping timeout".to_string()),
            SessionEnd::Idle(_) => (CloseCode::Normal, "idle: no subscription".to_string()),
        };
        Some(CloseFrame {
            code,
            reason: reason.into(),
        })
    }

    /// Whether the server ended the session (a cut-off), as opposed to the client or network.
    pub fn is_cut_off(&self) -> bool {
        self.close_frame().is_some()
    }
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
    /// A WebSocket Ping to write first.
    ping_due: bool,
}

/// Runs one client session until the client leaves, fails, gets stuck or is cut off.
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
    E: ReadError,
{
    let now = Instant::now();
    let keepalive = cfg.keepalive;
    let mut liveness = Liveness::new(keepalive, now);
    let mut idle = IdleClock::new(cfg.idle_timeout, now);
    let mut bucket = cfg.rate_limit.map(|limit| TokenBucket::new(limit, now));
    let mut session = Session {
        hub,
        cfg,
        wake: Arc::new(Notify::new()),
        subscriptions: Vec::new(),
        replies: VecDeque::new(),
        ping_due: false,
    };
    let timer = tokio::time::sleep_until(now);
    tokio::pin!(timer);
    let mut armed = None;
    let mut more = false;
    loop {
        idle.update(!session.subscriptions.is_empty(), Instant::now());
        let deadline = match (liveness.deadline(), idle.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(d) = deadline.filter(|d| armed != Some(*d)) {
            timer.as_mut().reset(d);
        }
        armed = deadline;
        let wake = Arc::clone(&session.wake);
        tokio::select! {
            biased;
            incoming = stream.next() => {
                let now = Instant::now();
                let msg = match incoming {
                    None => return SessionEnd::ClientClosed,
                    Some(Err(e)) if e.is_too_big() => return SessionEnd::TooBig(e.to_string()),
                    Some(Err(e)) => return SessionEnd::Transport(e.to_string()),
                    Some(Ok(msg)) => msg,
                };
                // Any frame shows the client is there; whether it reads fast enough is the
                // write timeout's business.
                liveness.heard(keepalive, now);
                if let (Message::Text(_) | Message::Binary(_) | Message::Ping(_), Some(b)) =
                    (&msg, bucket.as_mut())
                {
                    if !b.take(now) {
                        return SessionEnd::Flood(b.limit());
                    }
                }
                match msg {
                    Message::Close(_) => return SessionEnd::ClientClosed,
                    Message::Text(text) => session.handle_text(text.as_str()),
                    Message::Binary(_) => session.reply_error(ClientError::new(
                        None,
                        ErrorCode::UnsupportedMessage,
                        "binary frames are not supported; send JSON text",
                    )),
                    // Pings are answered by the WebSocket layer; Pongs only count as a sign
                    // of life.
                    _ => continue,
                }
            },
            _ = wake.notified() => {}
            _ = std::future::ready(()), if more => {}
            _ = &mut timer, if deadline.is_some() => {
                // Fired: re-arm next time round even if the deadline did not move.
                armed = None;
                let now = Instant::now();
                if let (Some(d), Some(t)) = (idle.deadline(), session.cfg.idle_timeout) {
                    if now >= d {
                        return SessionEnd::Idle(t);
                    }
                }
                match liveness.due(keepalive, now) {
                    Due::Nothing => {}
                    Due::Ping => session.ping_due = true,
                    Due::TimedOut => {
                        return SessionEnd::PongTimeout(keepalive.map_or(Duration::ZERO, |k| k.timeout))
                    }
                }
            }
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
        if std::mem::take(&mut self.ping_due) {
            sink.feed(Message::Ping(Bytes::new()))
                .await
                .map_err(transport)?;
        }
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
