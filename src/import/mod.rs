//! Importers: other formats to GameEvent JSON lines.
//!
//! - [`nfl`]: NFL.com GameCenter JSON (the nflgame archive) to an interleaved live feed.

pub mod nfl;
