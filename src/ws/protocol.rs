//! The WebSocket protocol: JSON text frames, one message per frame.
//!
//! A client sends [`ClientMessage`]s (`{"op": ...}`); the server sends [`ServerMessage`]s
//! (`{"type": ...}`). `schemas/ws_protocol.schema.json` is generated from these types by
//! [`schema_json`]; a test fails when the committed file differs.
//!
//! A channel carries either prediction deltas or alert changes.
//!
//! On a delta channel a subscription starts with `subscribed`, then either a `snapshot` (the
//! current value of every game the filter matches, consistent with channel sequence number
//! `seq`) or, when the client asked to resume and the hub still holds the deltas it missed,
//! nothing more: the missed deltas simply follow. Then `delta` messages with strictly increasing
//! `delta.seq`, each greater than the snapshot's `seq`, and `progress` messages. A subscriber
//! that falls more than its queue behind is sent a fresh `snapshot` with `reason: "resync"`;
//! deltas after it continue from its `seq`.
//!
//! An alerts channel works the same way with `alert_snapshot` (the alerts currently open) in
//! place of `snapshot` and `alert` (one change in an alert's life, numbered by `alert.seq`) in
//! place of `delta`; it sends no `progress`. Alerts are never conflated away: a subscriber that
//! falls behind gets an `alert_snapshot` with `reason: "resync"` holding every matching open
//! alert, so it may miss intermediate changes of alerts that have since resolved, never an open
//! one.
//!
//! Errors carry a stable [`ErrorCode`]; a bad client message never closes the connection.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::alert::{Alert, Severity};
use crate::delta::Delta;
use crate::event::Sport;

/// A message from a client. Unknown fields are ignored, except inside `filter`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Subscribe to a channel. Subscribing again to a channel already subscribed replaces the
    /// filter and starts over with a new snapshot.
    Subscribe {
        /// Echoed in the reply (`subscribed` or `error`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Channel name, e.g. `predictions`.
        channel: String,
        /// Which games (and alert severities) to receive; absent means all.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filter: Option<Filter>,
        /// The last `seq` the client saw on this channel (with the same filter), to resume without
        /// a snapshot: a delta's `seq` or, on an alerts channel, an alert's `seq`. If the hub no
        /// longer holds what followed it, a snapshot with `reason: "resume_unavailable"` is sent
        /// instead.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_from: Option<u64>,
    },
    /// Stop receiving a channel.
    Unsubscribe {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        channel: String,
    },
    /// Application-level ping; the server answers `pong` with the same id.
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
}

/// Which games (and, on an alerts channel, which severities) a subscription receives. Each field
/// that is present narrows the selection; an absent field matches everything. Lists must not be
/// empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Only these sports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sports: Option<Vec<Sport>>,
    /// Only these game ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub games: Option<Vec<String>>,
    /// Alerts channels only (`bad_filter` on a delta channel): the set of severities wanted,
    /// e.g. `["warning", "critical"]`. It is a set, not a minimum: `["critical"]` leaves out
    /// warnings. An alert change is sent when its severity is in the set, and also when the
    /// alert's previous change was (so a client learns that an alert it holds escalated out of
    /// the set, and can drop it). Keep an alert while its latest change is `open` or `escalated`
    /// with a severity in the set; that is exactly what `alert_snapshot` holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severities: Option<Vec<Severity>>,
}

/// A message from the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The subscription is registered. Unless `resumed_from` is present, a `snapshot` follows.
    Subscribed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        channel: String,
        /// Present when the subscription resumed: the deltas after this seq follow, no snapshot.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resumed_from: Option<u64>,
    },
    /// The subscription is gone; nothing more arrives for the channel.
    Unsubscribed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        channel: String,
    },
    /// Delta channels: the current value of every game the filter matches (newest per game,
    /// ordered by sport then game id). Replace everything held for the channel with it.
    Snapshot {
        channel: String,
        /// The channel seq the snapshot is consistent with: the deltas that follow have a greater
        /// seq, with no gap among those the filter matches.
        seq: u64,
        reason: SnapshotReason,
        values: Vec<SnapshotValue>,
    },
    /// One prediction moved.
    Delta { channel: String, delta: Delta },
    /// Alerts channels: every alert currently open (latest change `open` or `escalated`) that
    /// the filter matches, at its latest change, ordered by sport, game id, then alert id.
    /// Replace every alert held for the channel with these.
    AlertSnapshot {
        channel: String,
        /// The alert seq the snapshot is consistent with: the `alert` messages that follow have a
        /// greater `alert.seq`, with no gap among those the filter matches.
        seq: u64,
        reason: SnapshotReason,
        alerts: Vec<Alert>,
    },
    /// One change in an alert's life (alerts channels). `alert.id` is stable across the changes
    /// of one alert; a `resolved` or `retracted` change ends it.
    Alert { channel: String, alert: Alert },
    /// Everything on the channel up to this event time has been sent (coalesced: only the newest
    /// is sent to a subscriber that is behind).
    Progress { channel: String, event_time_ms: u64 },
    /// Answer to `ping`.
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// A request failed. The connection stays open.
    Error {
        /// The `id` of the request that failed, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        code: ErrorCode,
        /// For people; match on `code`.
        message: String,
    },
}

/// Why a snapshot was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotReason {
    /// The first message of a new subscription.
    Subscribe,
    /// The subscriber fell behind by more than its queue; the deltas (or alert changes) in
    /// between were dropped. On an alerts channel the snapshot still holds every open alert.
    Resync,
    /// The client asked to resume, but the hub no longer holds the deltas (or alert changes)
    /// after `resume_from`.
    ResumeUnavailable,
}

/// The latest value of one game on a channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotValue {
    pub sport: Sport,
    pub game_id: String,
    /// The newest published value (the `new` of the game's latest delta).
    pub value: f64,
    /// Event time (ms) of the game's latest delta.
    pub event_time_ms: u64,
    /// Event seq of the game's latest delta.
    pub event_seq: u64,
    /// Pipeline version of the game's latest delta.
    pub version: u32,
    pub model_version: String,
    /// Channel seq of the game's latest delta.
    pub seq: u64,
}

impl SnapshotValue {
    /// The value a delta leaves behind for its game.
    pub fn from_delta(d: &Delta) -> Self {
        SnapshotValue {
            sport: d.sport,
            game_id: d.game_id.clone(),
            value: d.new,
            event_time_ms: d.event_time_ms,
            event_seq: d.event_seq,
            version: d.version,
            model_version: d.model_version.clone(),
            seq: d.seq,
        }
    }

    /// Moves this value forward to `d` (same game).
    pub fn apply(&mut self, d: &Delta) {
        self.value = d.new;
        self.event_time_ms = d.event_time_ms;
        self.event_seq = d.event_seq;
        self.version = d.version;
        if self.model_version != d.model_version {
            self.model_version.clone_from(&d.model_version);
        }
        self.seq = d.seq;
    }
}

/// Stable error codes: clients match on these; the text in `message` may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The text frame is not a JSON object.
    BadJson,
    /// A JSON object without a string `op`, or with a missing or mistyped field.
    BadRequest,
    /// `op` names no known operation.
    UnknownOp,
    /// The channel does not exist.
    UnknownChannel,
    /// `filter` is malformed: wrong type, unknown sport, severity or field, an empty list, or
    /// `severities` on a channel that is not an alerts channel.
    BadFilter,
    /// The connection already has the maximum number of subscriptions.
    TooManySubscriptions,
    /// `unsubscribe` for a channel the connection is not subscribed to.
    NotSubscribed,
    /// A binary frame; the protocol is JSON text.
    UnsupportedMessage,
    /// The snapshot for this filter exceeds the server's message size limit; the subscription
    /// is dropped. Narrow the filter.
    SnapshotTooLarge,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::UnknownChannel => "unknown_channel",
            ErrorCode::BadFilter => "bad_filter",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::UnsupportedMessage => "unsupported_message",
            ErrorCode::SnapshotTooLarge => "snapshot_too_large",
        }
    }
}

/// A client message that could not be accepted: the bad input is the client's fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ClientError {
    /// The request's `id`, when one could be read.
    pub id: Option<String>,
    pub code: ErrorCode,
    pub message: String,
}

impl ClientError {
    pub fn new(id: Option<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        ClientError {
            id,
            code,
            message: message.into(),
        }
    }

    pub fn to_message(&self) -> ServerMessage {
        ServerMessage::Error {
            id: self.id.clone(),
            code: self.code,
            message: self.message.clone(),
        }
    }
}

/// Parses one text frame from a client, telling apart the error cases by stable code.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ClientError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ClientError::new(None, ErrorCode::BadJson, format!("not JSON: {e}")))?;
    let Value::Object(obj) = &value else {
        return Err(ClientError::new(
            None,
            ErrorCode::BadJson,
            "expected a JSON object",
        ));
    };
    let id = obj.get("id").and_then(Value::as_str).map(str::to_owned);
    let op = match obj.get("op") {
        Some(Value::String(op)) => op.as_str(),
        Some(_) => {
            return Err(ClientError::new(
                id,
                ErrorCode::BadRequest,
                "`op` must be a string",
            ))
        }
        None => return Err(ClientError::new(id, ErrorCode::BadRequest, "missing `op`")),
    };
    match op {
        "subscribe" => {
            if let Some(f) = obj.get("filter").filter(|f| !f.is_null()) {
                let filter = Filter::deserialize(f).map_err(|e| {
                    ClientError::new(id.clone(), ErrorCode::BadFilter, e.to_string())
                })?;
                filter
                    .validate()
                    .map_err(|e| ClientError::new(id.clone(), ErrorCode::BadFilter, e))?;
            }
        }
        "unsubscribe" | "ping" => {}
        other => {
            return Err(ClientError::new(
                id,
                ErrorCode::UnknownOp,
                format!("unknown op `{other}`; expected subscribe, unsubscribe or ping"),
            ))
        }
    }
    serde_json::from_value(value)
        .map_err(|e| ClientError::new(id, ErrorCode::BadRequest, e.to_string()))
}

impl Filter {
    /// Checks what serde cannot: lists must not be empty (omit the field to match all).
    pub fn validate(&self) -> Result<(), String> {
        if self.sports.as_ref().is_some_and(Vec::is_empty) {
            return Err("`sports` is empty; omit it to match all sports".into());
        }
        if self.games.as_ref().is_some_and(Vec::is_empty) {
            return Err("`games` is empty; omit it to match all games".into());
        }
        if self.severities.as_ref().is_some_and(Vec::is_empty) {
            return Err("`severities` is empty; omit it to match all severities".into());
        }
        Ok(())
    }
}

/// Encodes a server message as JSON text.
pub fn encode(msg: &ServerMessage) -> String {
    // Serialising these types cannot fail: string keys, no maps with non-string keys.
    serde_json::to_string(msg).unwrap_or_else(|e| {
        tracing::error!(error = %e, "encoding a server message failed");
        String::from(r#"{"type":"error","code":"bad_request","message":"internal encoding error"}"#)
    })
}

/// The bytes before a pre-encoded delta in a `delta` frame: `{"type":"delta","channel":"..","delta":`.
/// The frame is this prefix, the delta's JSON, and `}`; it is byte-identical to serialising
/// [`ServerMessage::Delta`].
pub fn delta_frame_prefix(channel: &str) -> String {
    let mut s = String::from(r#"{"type":"delta","channel":"#);
    s.push_str(&serde_json::to_string(channel).unwrap_or_else(|_| "\"\"".into()));
    s.push_str(r#","delta":"#);
    s
}

/// The bytes before a pre-encoded alert in an `alert` frame: `{"type":"alert","channel":"..","alert":`.
/// Like [`delta_frame_prefix`], the frame is byte-identical to serialising
/// [`ServerMessage::Alert`].
pub fn alert_frame_prefix(channel: &str) -> String {
    let mut s = String::from(r#"{"type":"alert","channel":"#);
    s.push_str(&serde_json::to_string(channel).unwrap_or_else(|_| "\"\"".into()));
    s.push_str(r#","alert":"#);
    s
}

/// A `progress` frame.
pub fn progress_frame(channel: &str, event_time_ms: u64) -> String {
    encode(&ServerMessage::Progress {
        channel: channel.to_owned(),
        event_time_ms,
    })
}

/// Documentation root for the schema: any message on a sideline WebSocket.
#[derive(JsonSchema)]
#[schemars(untagged)]
#[allow(dead_code)]
enum WsProtocol {
    /// Client to server.
    Client(ClientMessage),
    /// Server to client.
    Server(ServerMessage),
}

/// The JSON Schema of the protocol, as committed in `schemas/ws_protocol.schema.json`.
pub fn schema_json() -> String {
    let mut schema = schemars::schema_for!(WsProtocol);
    schema.insert(
        "title".into(),
        "sideline WebSocket protocol (client -> server: ClientMessage; server -> client: ServerMessage)".into(),
    );
    let mut text = serde_json::to_string_pretty(&schema).expect("schema serialises");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::FeatureChange;

    fn delta() -> Delta {
        Delta {
            id: "p/1/nfl/g/0/7".into(),
            seq: 7,
            pipeline: "test".into(),
            version: 1,
            sport: Sport::Nfl,
            game_id: "2018090600".into(),
            event_time_ms: 1_536_278_400_000,
            event_seq: 12,
            old: Some(0.5),
            new: 0.62,
            model_version: "wp-1".into(),
            cause: crate::delta::DeltaCause::Moved,
            changed: vec![FeatureChange {
                feature: "score_diff".into(),
                from: Some(0.0),
                to: 7.0,
            }],
            contributors: vec![],
            interval: None,
        }
    }

    #[test]
    fn spliced_delta_frame_equals_serialised_message() {
        let d = delta();
        let channel = "pred\"ictions";
        let spliced = format!(
            "{}{}}}",
            delta_frame_prefix(channel),
            serde_json::to_string(&d).unwrap()
        );
        let msg = ServerMessage::Delta {
            channel: channel.into(),
            delta: d,
        };
        assert_eq!(spliced, encode(&msg));
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&spliced).unwrap(),
            msg
        );
    }

    #[test]
    fn spliced_alert_frame_equals_serialised_message() {
        let alert = Alert {
            seq: 3,
            id: "test/jump/nfl/2018090600/1536278400000".into(),
            pipeline: "test".into(),
            version: 1,
            detector: "jump".into(),
            kind: "jump".into(),
            sport: Sport::Nfl,
            game_id: "2018090600".into(),
            state: crate::alert::AlertState::Escalated,
            severity: Severity::Critical,
            event_time_ms: 1_536_278_460_000,
            opened_at_ms: 1_536_278_400_000,
            message: "jump \"escalated\"".into(),
            evidence: crate::alert::Evidence {
                value: 0.31,
                threshold: 0.2,
                score: Some(0.31),
                baseline: None,
                window: "last 5 plays".into(),
            },
        };
        let channel = "nfl.alerts";
        let spliced = format!(
            "{}{}}}",
            alert_frame_prefix(channel),
            serde_json::to_string(&alert).unwrap()
        );
        let msg = ServerMessage::Alert {
            channel: channel.into(),
            alert,
        };
        assert_eq!(spliced, encode(&msg));
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&spliced).unwrap(),
            msg
        );
    }

    #[test]
    fn severities_filter_parses_as_a_set() {
        let ok = parse_client_message(
            r#"{"op":"subscribe","channel":"alerts","filter":{"severities":["warning","critical"]}}"#,
        )
        .unwrap();
        let ClientMessage::Subscribe {
            filter: Some(f), ..
        } = ok
        else {
            panic!("{ok:?}")
        };
        assert_eq!(
            f.severities,
            Some(vec![Severity::Warning, Severity::Critical])
        );
    }

    #[test]
    fn parse_errors_have_stable_codes() {
        let code = |t: &str| parse_client_message(t).unwrap_err().code;
        assert_eq!(code("nope"), ErrorCode::BadJson);
        assert_eq!(code("[1]"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"id":"a"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"op":3}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"op":"dance"}"#), ErrorCode::UnknownOp);
        assert_eq!(code(r#"{"op":"subscribe"}"#), ErrorCode::BadRequest);
        let bad_filters = [
            r#"{"sports":"nfl"}"#,
            r#"{"sports":["curling"]}"#,
            r#"{"games":[1]}"#,
            r#"{"teams":["NE"]}"#,
            r#"{"games":[]}"#,
            r#"{"severities":["fatal"]}"#,
            r#"{"severities":[]}"#,
            r#"{"severities":"critical"}"#,
            r#"7"#,
        ];
        for f in bad_filters {
            let t = format!(r#"{{"op":"subscribe","id":"x","channel":"p","filter":{f}}}"#);
            let e = parse_client_message(&t).unwrap_err();
            assert_eq!(
                (e.code, e.id.as_deref()),
                (ErrorCode::BadFilter, Some("x")),
                "{f}"
            );
        }
        let ok = parse_client_message(
            r#"{"op":"subscribe","id":"r1","channel":"predictions","filter":{"sports":["nfl"]},"extra":1}"#,
        )
        .unwrap();
        assert_eq!(
            ok,
            ClientMessage::Subscribe {
                id: Some("r1".into()),
                channel: "predictions".into(),
                filter: Some(Filter {
                    sports: Some(vec![Sport::Nfl]),
                    games: None,
                    severities: None,
                }),
                resume_from: None,
            }
        );
    }

    #[test]
    fn error_code_strings_match_serde() {
        for c in [
            ErrorCode::BadJson,
            ErrorCode::BadRequest,
            ErrorCode::UnknownOp,
            ErrorCode::UnknownChannel,
            ErrorCode::BadFilter,
            ErrorCode::TooManySubscriptions,
            ErrorCode::NotSubscribed,
            ErrorCode::UnsupportedMessage,
            ErrorCode::SnapshotTooLarge,
        ] {
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.as_str())
            );
        }
    }
}
