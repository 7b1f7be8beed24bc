//! The WebSocket server: accepts connections and runs one [`session`] task per connection
//! against the [`Hub`](crate::hub::Hub). The wire format is in [`protocol`].
//!
//! tungstenite's limits are all set explicitly ([`WsConfig`]); its defaults (64 MiB messages,
//! 16 MiB frames, an unbounded write buffer, a 128 KiB read buffer per connection) do not suit a
//! server holding thousands of mostly idle connections.

pub mod protocol;
pub mod session;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::hub::Hub;
use session::{SessionConfig, SessionEnd};

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
    let (mut sink, stream) = ws.split();
    let end = session::run(hub, cfg.session(), &mut sink, stream).await;
    metrics::gauge!("sideline_ws_connections").decrement(1.0);
    match &end {
        SessionEnd::ClientClosed => {
            // Completes the closing handshake; a client that does not take it is not waited on.
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
            tracing::debug!(%peer, "client closed");
        }
        SessionEnd::Stuck(_) => tracing::info!(%peer, %end, "subscriber cut off"),
        SessionEnd::Transport(_) => tracing::debug!(%peer, %end, "connection ended"),
    }
}
