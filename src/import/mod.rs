//! Importers: other formats to GameEvent JSON lines.
//!
//! - [`nfl`]: NFL.com GameCenter JSON (the nflgame archive) to an interleaved live feed.
//! - [`soccer`]: StatsBomb open-data events (shipped in the kloppy wheel).
//! - [`betfair`]: a Betfair Exchange odds stream joined with its cricket score stream.
//! - [`feed`]: what they (and the simulator) share.

pub mod betfair;
pub mod feed;
pub mod nfl;
pub mod soccer;
