//! The WebSocket server: accepts connections and runs one [`session`] task per connection
//! against the [`Hub`](crate::hub::Hub). The wire format is in [`protocol`].
//!
//! tungstenite's limits are all set explicitly ([`WsConfig`]); its defaults (64 MiB messages,
//! 16 MiB frames, an unbounded write buffer, a 128 KiB read buffer per connection) do not suit a
//! server holding thousands of mostly idle connections.
//!
//! A client is cut off, with a Close frame whose code says why ([`SessionEnd::close_frame`]),
//! for a message over `max_message_bytes` (1009), a flood of messages (1008), no answer to a
//! Ping (1011), no subscription for the idle timeout (1000) or a socket that takes nothing
//! (1008). Every end of a connection is counted in `sideline_ws_disconnects_total{cause}`.

pub mod limits;
pub mod protocol;
pub mod session;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::config::ServerConfig;
use crate::hub::Hub;
use limits::{Keepalive, RateLimit};
use session::{SessionConfig, SessionEnd};

/// How long the server waits to hand a Close frame to the socket, and then for the client to
/// finish, before dropping a connection it cut off.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// WebSocket server settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsConfig {
    /// Largest message accepted from a client.
    pub max_message_bytes: usize,
    /// Largest frame accepted from a client.
    pub max_frame_bytes: usize,
    /// Outgoing bytes buffered before they are written to the socket.
    pub write_buffer_bytes: usize,
    /// Hard cap on the outgoing buffer; it also bounds the largest message sent (a snapshot),
    /// so must exceed `write_buffer_bytes` by the largest snapshot expected.
    pub max_write_buffer_bytes: usize,
    /// Read buffer per connection, allocated up front.
    pub read_buffer_bytes: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions_per_connection: usize,
    /// Time allowed for the WebSocket handshake.
    pub handshake_timeout: Duration,
    /// A subscriber whose socket accepts nothing for this long is cut off; `None` never cuts.
    pub write_timeout: Option<Duration>,
    /// WebSocket Pings after a quiet interval and the time allowed to answer; `None`: no Pings.
    pub keepalive: Option<Keepalive>,
    /// A connection without a subscription for this long is closed; `None` keeps it.
    pub idle_timeout: Option<Duration>,
    /// Messages a client may send; `None`: no limit.
    pub rate_limit: Option<RateLimit>,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            max_message_bytes: 64 * 1024,
            max_frame_bytes: 64 * 1024,
            write_buffer_bytes: 8 * 1024,
            max_write_buffer_bytes: 8 * 1024 * 1024,
            read_buffer_bytes: 4 * 1024,
            max_subscriptions_per_connection: 16,
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Some(Duration::from_secs(60)),
            keepalive: Some(Keepalive {
                interval: Duration::from_secs(30),
                timeout: Duration::from_secs(30),
            }),
            idle_timeout: Some(Duration::from_secs(60)),
            rate_limit: Some(RateLimit {
                per_second: 10,
                burst: 40,
            }),
        }
    }
}

impl From<&ServerConfig> for WsConfig {
    /// The `[server]` settings; a zero duration or rate turns its limit off.
    fn from(s: &ServerConfig) -> WsConfig {
        let nonzero = |d: Duration| Some(d).filter(|d| !d.is_zero());
        WsConfig {
            max_message_bytes: s.max_message_bytes,
            // A frame over the message limit can never be part of an acceptable message.
            max_frame_bytes: s.max_message_bytes,
            max_subscriptions_per_connection: s.max_subscriptions_per_connection,
            write_timeout: nonzero(s.write_timeout),
            keepalive: nonzero(s.ping_interval).map(|interval| Keepalive {
                interval,
                timeout: s.pong_timeout,
            }),
            idle_timeout: nonzero(s.idle_timeout),
            rate_limit: (s.client_messages_per_second > 0).then_some(RateLimit {
                per_second: s.client_messages_per_second,
                burst: s.client_message_burst,
            }),
            ..WsConfig::default()
        }
    }
}

impl WsConfig {
    /// The tungstenite configuration these settings give.
    pub fn tungstenite(&self) -> WebSocketConfig {
        let write_buffer = self.write_buffer_bytes;
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_bytes.max(1))
            .write_buffer_size(write_buffer)
            .max_write_buffer_size(self.max_write_buffer_bytes.max(write_buffer + 1))
            .max_message_size(Some(self.max_message_bytes))
            .max_frame_size(Some(self.max_frame_bytes))
    }

    /// The limits a session enforces.
    pub fn session(&self) -> SessionConfig {
        SessionConfig {
            max_subscriptions: self.max_subscriptions_per_connection,
            // A frame must fit in the write buffer beside what is already buffered; leave room
            // for the frame header.
            max_snapshot_bytes: self
                .max_write_buffer_bytes
                .saturating_sub(self.write_buffer_bytes + 16),
            write_timeout: self.write_timeout,
            keepalive: self.keepalive,
            idle_timeout: self.idle_timeout,
            rate_limit: self.rate_limit,
        }
    }
}

/// Accepts connections forever, one task per connection. Returns only on an accept error that
/// is not about one connection or a temporary shortage (those are logged and survived).
pub async fn serve(listener: TcpListener, hub: Arc<Hub>, cfg: WsConfig) -> io::Result<()> {
    let cfg = Arc::new(cfg);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) if is_resource_shortage(&e) => {
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "set TCP_NODELAY failed");
        }
        tokio::spawn(connection(stream, peer, Arc::clone(&hub), Arc::clone(&cfg)));
    }
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

fn is_resource_shortage(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

async fn connection(stream: TcpStream, peer: SocketAddr, hub: Arc<Hub>, cfg: Arc<WsConfig>) {
    let handshake = tokio_tungstenite::accept_async_with_config(stream, Some(cfg.tungstenite()));
    let ws = match tokio::time::timeout(cfg.handshake_timeout, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "WebSocket handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "WebSocket handshake timed out");
            return;
        }
    };
    metrics::gauge!("sideline_ws_connections").increment(1.0);
    let (mut sink, mut stream) = ws.split();
    let end = session::run(hub, cfg.session(), &mut sink, &mut stream).await;
    metrics::gauge!("sideline_ws_connections").decrement(1.0);
    metrics::counter!("sideline_ws_disconnects_total", "cause" => end.cause()).increment(1);
    match (&end, end.close_frame()) {
        (SessionEnd::ClientClosed, _) => {
            // Completes the closing handshake; a client that does not take it is not waited on.
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
            tracing::debug!(%peer, "client closed");
        }
        (_, Some(frame)) => {
            tracing::info!(%peer, cause = end.cause(), code = u16::from(frame.code), %end, "subscriber cut off");
            let sent = tokio::time::timeout(CLOSE_GRACE, sink.send(Message::Close(Some(frame))));
            if let Ok(Ok(())) = sent.await {
                if let Ok(ws) = sink.reunite(stream) {
                    linger(ws.into_inner()).await;
                }
            }
        }
        (_, None) => tracing::debug!(%peer, %end, "connection ended"),
    }
}

/// After a Close frame: ends our side of the TCP stream and discards what the client still
/// sends (the rest of an oversized message, say) until it closes, for at most [`CLOSE_GRACE`].
/// Closing a socket with unread data would reset the connection, and a reset can destroy the
/// Close frame before the client reads it.
async fn linger(mut tcp: TcpStream) {
    let drain = async {
        tcp.shutdown().await?;
        let mut buf = [0u8; 4096];
        while tcp.read(&mut buf).await? > 0 {}
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
}
