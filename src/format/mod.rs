//! Formats: bytes to typed events, knowing nothing of where the bytes came from.

pub mod json;

use std::fmt;

/// Why a record was not accepted. The code is stable: dead-letter consumers and dashboards
/// match on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectCode {
    /// Larger than `kafka.max-record-bytes`.
    Oversized,
    /// Not UTF-8 or not JSON.
    MalformedJson,
    /// JSON, but not a GameEvent (missing or mistyped field, unknown field).
    SchemaViolation,
    /// `sport` is not one sideline knows.
    UnknownSport,
    /// `kind` is not one sideline knows.
    UnknownKind,
    /// A field is out of range (negative clock, empty game id, ...).
    InvalidValue,
    /// The same (game, seq) again with the same bytes: a producer's retry or re-send. Not a
    /// bad record: it is skipped without a dead letter (it counts as a duplicate for the
    /// feed-health detectors).
    Duplicate,
    /// The same (game, seq) again with different bytes: two events claim one id.
    Conflict,
    /// `seq` below the game's last accepted one.
    SequenceRegressed,
    /// Event time below the game's last accepted one.
    TimeRegressed,
    /// Behind the frontier, under the `dead-letter` late policy.
    Late,
    /// The game's events arrive on more than one partition.
    PartitionConflict,
    /// The game ended more than the pipeline's `retention` ago and its state was released.
    GameClosed,
}

impl RejectCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::Oversized => "oversized",
            RejectCode::MalformedJson => "malformed_json",
            RejectCode::SchemaViolation => "schema_violation",
            RejectCode::UnknownSport => "unknown_sport",
            RejectCode::UnknownKind => "unknown_kind",
            RejectCode::InvalidValue => "invalid_value",
            RejectCode::Duplicate => "duplicate",
            RejectCode::Conflict => "conflicting_resend",
            RejectCode::SequenceRegressed => "sequence_regressed",
            RejectCode::TimeRegressed => "time_regressed",
            RejectCode::Late => "late",
            RejectCode::PartitionConflict => "partition_conflict",
            RejectCode::GameClosed => "game_closed",
        }
    }
}

/// A rejected record's reason: a stable code and a sentence for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    pub code: RejectCode,
    pub detail: String,
}

impl Reject {
    pub fn new(code: RejectCode, detail: impl Into<String>) -> Self {
        Reject {
            code,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)
    }
}
