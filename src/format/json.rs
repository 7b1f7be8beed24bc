//! GameEvent from JSON bytes, with limits and reasons.

use super::{Reject, RejectCode};
use crate::event::GameEvent;

/// Largest game clock accepted (a period longer than an hour is a feed error).
const MAX_CLOCK_MS: u64 = 60 * 60 * 1000;
/// Longest game id accepted.
const MAX_GAME_ID: usize = 64;
/// Latest event time accepted: 2100-01-01T00:00:00Z. Later is a unit error (microseconds,
/// nanoseconds) that would drag the watermark into the far future and make every later event
/// late.
pub const MAX_EVENT_TIME_MS: u64 = 4_102_444_800_000;
/// Largest magnitude of a stat: features are integers and sums of them.
pub const MAX_STAT: f64 = 1e9;
/// Longest team code, player name or stat name accepted.
const MAX_NAME: usize = 128;
/// Longest description accepted.
const MAX_DESCRIPTION: usize = 4096;
/// Deepest JSON nesting accepted (serde_json's own limit is 128).
const MAX_DEPTH: usize = 16;

/// Decodes one record's payload.
pub fn decode(bytes: &[u8], max_bytes: usize) -> Result<GameEvent, Reject> {
    if bytes.len() > max_bytes {
        return Err(Reject::new(
            RejectCode::Oversized,
            format!("record is {} bytes, the limit is {max_bytes}", bytes.len()),
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Reject::new(RejectCode::MalformedJson, format!("not UTF-8: {e}")))?;
    // No more opening brackets than the limit (those in strings included): the nesting cannot
    // exceed it, and this SIMD search stops at the first bracket over the limit where the
    // exact scan goes byte by byte.
    let over = memchr::memchr2_iter(b'{', b'[', bytes)
        .nth(MAX_DEPTH)
        .is_some();
    if over && nesting(text) > MAX_DEPTH {
        return Err(Reject::new(
            RejectCode::MalformedJson,
            format!("JSON nested deeper than {MAX_DEPTH}"),
        ));
    }
    let event: GameEvent = serde_json::from_str(text).map_err(reject)?;
    validate(&event)?;
    Ok(event)
}

fn reject(e: serde_json::Error) -> Reject {
    use serde_json::error::Category;
    let msg = e.to_string();
    let code = if matches!(
        e.classify(),
        Category::Syntax | Category::Eof | Category::Io
    ) {
        RejectCode::MalformedJson
    } else if msg.contains("unknown variant") && msg.contains("`nfl`") {
        RejectCode::UnknownSport
    } else if msg.contains("unknown variant") && msg.contains("`game_start`") {
        RejectCode::UnknownKind
    } else if msg.contains("invalid value: integer `-") {
        RejectCode::InvalidValue
    } else {
        RejectCode::SchemaViolation
    };
    Reject::new(code, msg)
}

/// Range checks the types cannot express.
pub fn validate(ev: &GameEvent) -> Result<(), Reject> {
    let bad = |m: String| Err(Reject::new(RejectCode::InvalidValue, m));
    if ev.game_id.is_empty() || ev.game_id.len() > MAX_GAME_ID {
        return bad(format!("game_id must have 1 to {MAX_GAME_ID} characters"));
    }
    let names = [&ev.home, &ev.away]
        .into_iter()
        .chain(ev.team.as_ref())
        .chain(ev.player.as_ref())
        .chain(ev.stats.keys());
    if let Some(long) = names.into_iter().find(|n| longer(n, MAX_NAME)) {
        let head: String = long.chars().take(16).collect();
        return bad(format!(
            "a name (team, player or stat) is longer than {MAX_NAME} characters: {head}..."
        ));
    }
    if ev
        .description
        .as_ref()
        .is_some_and(|d| longer(d, MAX_DESCRIPTION))
    {
        return bad(format!(
            "description is longer than {MAX_DESCRIPTION} characters"
        ));
    }
    if ev.clock_ms > MAX_CLOCK_MS {
        return bad(format!("clock_ms {} is over an hour", ev.clock_ms));
    }
    if ev.home.is_empty() || ev.away.is_empty() || ev.home == ev.away {
        return bad("home and away must be two different team codes".into());
    }
    if ev.event_time_ms > MAX_EVENT_TIME_MS {
        return bad(format!(
            "event_time_ms {} is after 2100 (milliseconds since the epoch expected)",
            ev.event_time_ms
        ));
    }
    if let Some((k, v)) = ev
        .stats
        .iter()
        .find(|(_, v)| !v.is_finite() || v.abs() > MAX_STAT)
    {
        return bad(format!("stat {k} is {v}, outside ±{MAX_STAT:e}"));
    }
    Ok(())
}

/// Whether `s` has more than `max` characters. A string of at most `max` bytes has at most
/// `max` characters, so most are not counted (counting was ~4% of decoding).
fn longer(s: &str, max: usize) -> bool {
    s.len() > max && s.chars().count() > max
}

/// Maximum nesting of arrays/objects, ignoring brackets inside strings.
fn nesting(text: &str) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_str {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"sport":"nfl","game_id":"g1","seq":1,"event_time_ms":1000,"period":1,"clock_ms":900000,"kind":"game_start","home":"PHI","away":"ATL","home_score":0,"away_score":0}"#;

    fn code(text: &str) -> RejectCode {
        decode(text.as_bytes(), 4096).unwrap_err().code
    }

    #[test]
    fn long_strings_are_refused() {
        let long = GOOD.replace("\"PHI\"", &format!("\"{}\"", "P".repeat(129)));
        assert_eq!(code(&long), RejectCode::InvalidValue);
        let described = GOOD.replace(
            "\"kind\"",
            &format!("\"description\":\"{}\",\"kind\"", "d".repeat(4097)),
        );
        assert_eq!(
            decode(described.as_bytes(), 65536).unwrap_err().code,
            RejectCode::InvalidValue
        );
    }

    /// The depth limit at its edge, with the bracket count's shortcut on both sides of it:
    /// brackets inside strings are not nesting, and 17 levels are refused wherever they are.
    #[test]
    fn nesting_is_counted_outside_strings_only() {
        let nested = |depth: usize| {
            let inner = format!("{}1{}", "[".repeat(depth - 1), "]".repeat(depth - 1));
            GOOD.replace("\"home\"", &format!("\"x\":{inner},\"home\""))
        };
        // 16 levels (the event's object and 15 arrays): not refused for nesting.
        assert_ne!(
            decode(nested(16).as_bytes(), 4096).err().map(|r| r.detail),
            Some(format!("JSON nested deeper than {MAX_DEPTH}"))
        );
        assert_eq!(
            decode(nested(17).as_bytes(), 4096).unwrap_err().detail,
            format!("JSON nested deeper than {MAX_DEPTH}")
        );
        let bracketed = GOOD.replace(
            "\"kind\"",
            &format!("\"description\":\"{}\",\"kind\"", "[{".repeat(40)),
        );
        assert_eq!(decode(bracketed.as_bytes(), 4096).unwrap().game_id, "g1");
    }

    #[test]
    fn accepts_a_good_event() {
        let ev = decode(GOOD.as_bytes(), 4096).unwrap();
        assert_eq!(ev.game_id, "g1");
    }

    #[test]
    fn names_each_reason() {
        assert_eq!(code("{not json"), RejectCode::MalformedJson);
        assert_eq!(
            code(&GOOD.replace("\"nfl\"", "\"curling\"")),
            RejectCode::UnknownSport
        );
        assert_eq!(
            code(&GOOD.replace("\"game_start\"", "\"huddle\"")),
            RejectCode::UnknownKind
        );
        assert_eq!(
            code(&GOOD.replace("900000", "-5")),
            RejectCode::InvalidValue
        );
        assert_eq!(
            code(&GOOD.replace("\"seq\":1,", "")),
            RejectCode::SchemaViolation
        );
        assert_eq!(
            code(&GOOD.replace("\"g1\"", "\"\"")),
            RejectCode::InvalidValue
        );
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert_eq!(code(&deep), RejectCode::MalformedJson);
        assert_eq!(
            code(&GOOD.replace(
                "\"event_time_ms\":1000",
                "\"event_time_ms\":1700000000000000"
            )),
            RejectCode::InvalidValue
        );
        assert_eq!(
            code(&GOOD.replace(
                "\"away_score\":0",
                "\"away_score\":0,\"stats\":{\"down\":1e300}"
            )),
            RejectCode::InvalidValue
        );
        let big = GOOD.replace("\"g1\"", &format!("\"{}\"", "x".repeat(5000)));
        assert_eq!(code(&big), RejectCode::Oversized);
    }
}
