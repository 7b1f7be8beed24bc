//! # sideline
//!
//! A streaming dataflow engine for live sports analytics: game feeds from Kafka in, prediction
//! deltas to WebSocket subscribers out.
//!
//! The path of a record, one module per stage:
//!
//! * [`pipeline`]: pipeline files (`pipelines/*.toml`): the features kept per game, their
//!   windows, derived features and the model, checked and resolved into a [`pipeline::Plan`];
//!   [`pipeline::window`] assigns a game's events to window members and
//!   [`pipeline::reference`] recomputes every feature by brute force, for the tests and the
//!   trainer.
//! * [`source`]: Kafka partitions split across timely workers ([`source::kafka`]); each record
//!   decoded by [`format`](mod@format), checked against its game, given a time by the late policy, and
//!   turned into window-member updates ([`source::ingest`]); per-partition watermarks agreed
//!   across workers ([`source::frontier`]). Rejects go to a dead-letter topic.
//! * [`dataflow`]: the differential dataflow: window aggregates per game, entity and feature,
//!   each game's row of features, derived features and batched scoring.
//! * [`model`]: the models a pipeline scores (logistic regression, MLP, XGBoost trees,
//!   ensembles of them, behind [`model::Predictor`], with per-row intervals and attributions)
//!   and the trainer, which computes its rows with the pipeline.
//! * [`alert`]: detectors (in the dataflow, per game, in event time; staleness by the wall
//!   clock), the alert lifecycle, webhook delivery.
//! * [`hub`] and [`ws`]: snapshots, deltas, alerts and progress to WebSocket subscribers, each
//!   with a bounded queue.
//! * [`engine`] runs the workers and, in them, every deployed pipeline version, started and
//!   stopped while it runs ([`engine::control`]); [`publish`] turns each version's values into
//!   numbered deltas (epsilon, hysteresis, the swap to a new version) for the hub and the
//!   Kafka outputs ([`output`]).
//! * [`app`] wires the engine, the hub, the servers, metrics and the admin endpoint
//!   ([`admin`]) through which pipelines are deployed; promoting a shadow model and rolling
//!   back are deploys too, of definitions [`pipeline::rewrite`] derives from deployed ones.
//!
//! Computing one game's features by hand, the way the tests check the dataflow:
//!
//! ```
//! use sideline::dataflow::score::variables;
//! use sideline::event::{EventKind, GameEvent};
//! use sideline::model::data::row_at;
//! use sideline::pipeline::{plan::plan, reference::Evaluated, window::Entity, Registry};
//!
//! let text = r#"
//! [pipeline]
//! name = "points"
//! version = 1
//! sport = "nfl"
//! [source]
//! topics = ["nfl.events"]
//! [[feature]]
//! name = "home_points_5m"
//! filter = "home_points != 0"
//! value = "home_points"
//! window = { kind = "sliding", size = "5m" }
//! aggregate = "sum"
//! [[derived]]
//! name = "lead_5m"
//! expr = "home_points_5m / 7"
//! [model]
//! expr = "sigmoid(lead_5m)"
//! [[output]]
//! kind = "websocket"
//! channel = "points"
//! "#;
//! let plan = plan("points.toml", text, &Registry::new(None)).unwrap();
//!
//! let start: GameEvent = serde_json::from_str(r#"{"sport":"nfl","game_id":"g","seq":1,
//!     "event_time_ms":0,"period":1,"clock_ms":900000,"kind":"game_start",
//!     "home":"PHI","away":"ATL","home_score":0,"away_score":0}"#).unwrap();
//! let mut td = start.clone();
//! (td.seq, td.event_time_ms, td.kind, td.home_score) = (2, 60_000, EventKind::Play, 7);
//! let game = Evaluated::new(&plan, &[(start, 0), (td, 60_000)]);
//!
//! // The touchdown counts in the 5-minute window, then expires 5 minutes later.
//! assert_eq!(game.feature_value(0, &Entity::Game, 60_000), 7.0);
//! assert_eq!(game.feature_value(0, &Entity::Game, 359_999), 7.0);
//! assert_eq!(game.feature_value(0, &Entity::Game, 360_000), 0.0);
//! // The engine's variables at a time: window features, then derived ones.
//! let (vars, _) = variables(&plan, &row_at(&game, &plan, 60_000));
//! assert_eq!(plan.vars, ["home_points_5m", "lead_5m"]);
//! assert_eq!(vars, [7.0, 1.0]);
//! ```

pub mod admin;
pub mod alert;
pub mod app;
pub mod archive;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod dataflow;
pub mod delta;
pub mod demo;
pub mod deploy_cli;
pub mod engine;
pub mod event;
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
