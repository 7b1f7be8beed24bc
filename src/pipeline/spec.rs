//! The raw pipeline spec: a mirror of the TOML file, every value with its place in the file.
//! Nothing here checks meaning; [`super::plan`] does, and turns a spec into a plan.
//! `schemas/pipeline.schema.json` is generated from these types (`sideline schema --write`).

use std::borrow::Cow;
use std::ops::Range;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};

use crate::event::Sport;

/// A value and the byte range it came from.
#[derive(Clone, Debug)]
pub struct Sp<T>(toml::Spanned<T>);

impl<T> Sp<T> {
    pub fn span(&self) -> Range<usize> {
        self.0.span()
    }
    pub fn get(&self) -> &T {
        self.0.get_ref()
    }
}

impl<T> std::ops::Deref for Sp<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.get_ref()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sp<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        toml::Spanned::<T>::deserialize(d).map(Sp)
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// A pipeline file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PipelineSpec {
    pub pipeline: Sp<Header>,
    pub source: Sp<SourceSpec>,
    #[serde(default)]
    pub time: Option<Sp<TimeSpec>>,
    /// Windowed features over the events, per game, team or player.
    #[serde(default, rename = "feature")]
    pub features: Vec<Sp<FeatureSpec>>,
    /// Features computed from other features.
    #[serde(default)]
    pub derived: Vec<Sp<DerivedSpec>>,
    pub model: Sp<ModelSpec>,
    #[serde(default)]
    pub delta: Option<Sp<DeltaSpec>>,
    #[serde(rename = "output")]
    pub outputs: Vec<Sp<OutputSpec>>,
    /// Anomaly detectors (reserved: no detector kinds are available yet).
    #[serde(default, rename = "detector")]
    pub detectors: Vec<Sp<DetectorSpec>>,
}

/// `[pipeline]`: what this is.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Header {
    /// Lower-case letters, digits and underscores; unique in an engine.
    pub name: Sp<String>,
    /// Raised on every change; deltas carry it.
    pub version: Sp<u32>,
    /// Events of other sports on the same topics are ignored.
    pub sport: Sp<Sport>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `[source]`: where events come from.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SourceSpec {
    /// Kafka topics, every partition of each.
    pub topics: Sp<Vec<Sp<String>>>,
    /// Record format: `json`, sideline's event schema (schemas/game_event.schema.json).
    #[serde(default)]
    pub format: Option<Sp<Format>>,
    /// What records are keyed by: `game` (every event of a game on one partition).
    #[serde(default)]
    pub key: Option<Sp<SourceKey>>,
}

#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Json,
}

#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKey {
    Game,
}

/// `[time]`: event time and disorder.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TimeSpec {
    /// The event field windows and watermarks run on: `event_time_ms`.
    #[serde(default)]
    pub event_time: Option<Sp<EventTimeField>>,
    /// An event older than its partition's highest event time minus this is late ("1s").
    #[serde(default)]
    pub allowed_lateness: Option<Sp<String>>,
    /// A partition with nothing new for this long (wall time) stops holding time back ("2s").
    #[serde(default)]
    pub idle_timeout: Option<Sp<String>>,
    /// `dead-letter` or `fold-in`.
    #[serde(default)]
    pub late_policy: Option<Sp<crate::config::LatePolicy>>,
    /// The longest window the pipeline may keep ("6h").
    #[serde(default)]
    pub retention: Option<Sp<String>>,
}

#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EventTimeField {
    EventTimeMs,
}

/// `[[feature]]`: an aggregate of an event value over a window, per group.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FeatureSpec {
    pub name: Sp<String>,
    /// `game` (default), `team` (read as `name.home` / `name.away`) or `player`.
    #[serde(default)]
    pub group_by: Option<Sp<GroupBy>>,
    /// Only events for which this is true (non-zero) count, e.g. `kind == 'play'`.
    #[serde(default)]
    pub filter: Option<Sp<String>>,
    /// The value each event contributes (default 1).
    #[serde(default)]
    pub value: Option<Sp<String>>,
    /// Default: the latest event (`{ kind = "events", count = 1 }`).
    #[serde(default)]
    pub window: Option<Sp<WindowSpec>>,
    /// Default `last`.
    #[serde(default)]
    pub aggregate: Option<Sp<Aggregate>>,
    /// Smoothing factor of `ewma`, in (0, 1].
    #[serde(default)]
    pub alpha: Option<Sp<f64>>,
    /// The value while the window is empty (default 0).
    #[serde(default)]
    pub default: Option<f64>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum GroupBy {
    Game,
    Team,
    Player,
}

/// A window. Time windows run on event time; `game-clock` on the game clock, which stops
/// during stoppages.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WindowSpec {
    pub kind: Sp<WindowKind>,
    /// Length: `tumbling`, `hopping`, `sliding`, `game-clock` ("5m").
    #[serde(default)]
    pub size: Option<Sp<String>>,
    /// Step of a `hopping` window.
    #[serde(default)]
    pub slide: Option<Sp<String>>,
    /// Inactivity that closes a `session`.
    #[serde(default)]
    pub gap: Option<Sp<String>>,
    /// How many: `events` (last N events that pass the filter), `possessions` (last N).
    #[serde(default)]
    pub count: Option<Sp<u32>>,
}

#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WindowKind {
    Tumbling,
    Hopping,
    Sliding,
    Session,
    GameClock,
    Events,
    Possessions,
    Game,
}

#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregate {
    Count,
    Sum,
    Mean,
    Min,
    Max,
    First,
    Last,
    Stddev,
    Distinct,
    Ewma,
    Rate,
}

/// `[[derived]]`: a feature computed from other features.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DerivedSpec {
    pub name: Sp<String>,
    pub expr: Sp<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `[model]`: a registry model (`name`, `version`: models/<name>/<version>/) or a formula
/// (`expr`). Its output is the value deltas carry.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ModelSpec {
    #[serde(default)]
    pub name: Option<Sp<String>>,
    #[serde(default)]
    pub version: Option<Sp<String>>,
    #[serde(default)]
    pub expr: Option<Sp<String>>,
    /// What the value means, for people reading deltas.
    #[serde(default)]
    pub output: Option<String>,
}

/// `[delta]`: when a change is worth publishing.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeltaSpec {
    /// Publish when the value moved at least this far from the last published one.
    #[serde(default)]
    pub epsilon: Option<Sp<f64>>,
    /// A move against the direction of the last published one needs `epsilon + hysteresis`.
    #[serde(default)]
    pub hysteresis: Option<Sp<f64>>,
}

/// `[[output]]`: where deltas go.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OutputSpec {
    pub kind: Sp<OutputKind>,
    /// `websocket`: the channel subscribers ask for.
    #[serde(default)]
    pub channel: Option<Sp<String>>,
    /// `kafka`: the topic deltas are written to, one JSON record per delta, keyed by game.
    #[serde(default)]
    pub topic: Option<Sp<String>>,
}

#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OutputKind {
    Websocket,
    Kafka,
}

/// `[[detector]]`: reserved for anomaly detectors.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct DetectorSpec {
    pub name: Sp<String>,
    pub kind: Sp<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub params: toml::Table,
}

/// The JSON Schema of pipeline files, as committed in `schemas/pipeline.schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(PipelineSpec);
    let mut text = serde_json::to_string_pretty(&schema).expect("schema serialises");
    text.push('\n');
    text
}
