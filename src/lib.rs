//! # sideline
//!
//! A streaming dataflow engine for live sports analytics: game feeds from Kafka in, prediction
//! deltas to WebSocket subscribers out.
//!
//! The path of a record, one module per stage:
//!
//! * [`source`]: Kafka partitions split across timely workers ([`source::kafka`]); each record
//!   decoded by [`format`], checked against its game, given a time by the late policy, and
//!   turned into feature updates ([`source::ingest`]); per-partition watermarks agreed across
//!   workers ([`source::frontier`]). Rejects go to a dead-letter topic.
//! * [`features`]: every feature of a game as one slot of an abelian-group vector, so windows
//!   are insert/retract updates; [`features::offline`] is the brute-force reference.
//! * [`dataflow`]: the differential dataflow: `count_total` per game, batched scoring, and a
//!   deterministic sequencer.
//! * [`model`]: the candle model and its trainer.
//! * [`hub`] and [`ws`]: snapshots, deltas and progress to WebSocket subscribers, each with a
//!   bounded queue.
//! * [`engine`] runs the workers; [`app`] wires the engine, the hub, the server and metrics.
//!
//! Computing one game's features by hand, the way the tests check the dataflow:
//!
//! ```
//! use sideline::event::{EventKind, GameEvent, Sport};
//! use sideline::features::{offline::timeline_of, Slot};
//!
//! let start: GameEvent = serde_json::from_str(r#"{"sport":"nfl","game_id":"g","seq":1,
//!     "event_time_ms":0,"period":1,"clock_ms":900000,"kind":"game_start",
//!     "home":"PHI","away":"ATL","home_score":0,"away_score":0}"#).unwrap();
//! let mut td = start.clone();
//! (td.seq, td.event_time_ms, td.kind, td.home_score) = (2, 60_000, EventKind::Play, 7);
//! let line = timeline_of(&[start, td]);
//! // The touchdown counts in the 5-minute window, then expires 5 minutes later.
//! assert_eq!(line[1].1.get(Slot::HomePoints5m), 7);
//! assert_eq!(line[2], (360_000, { let mut v = line[1].1; v.set(Slot::HomePoints5m, 0); v }));
//! assert_eq!(line[1].1.get(Slot::ScoreDiff), 7);
//! # let _ = Sport::Nfl;
//! ```

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod dataflow;
pub mod delta;
pub mod demo;
pub mod deploy_cli;
pub mod engine;
pub mod event;
pub mod features;
pub mod format;
pub mod hub;
pub mod import;
pub mod metrics;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod produce;
pub mod publish;
pub mod simulate;
pub mod source;
pub mod ws;
