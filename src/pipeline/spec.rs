//! The raw pipeline spec: a mirror of the TOML file, every value with its place in the file.
//! Nothing here checks meaning; [`super::plan`] does, and turns a spec into a plan.
//! `schemas/pipeline.schema.json` is generated from these types (`sideline schema --write`).

use std::borrow::Cow;
use std::ops::Range;

use schemars::transform::{RecursiveTransform, Transform};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

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

/// A sideline pipeline file (`pipelines/*.toml`): where events come from, the features kept
/// per game, the model scoring them, and where prediction deltas go.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(title = "sideline pipeline")]
pub struct PipelineSpec {
    /// What this pipeline is: name, version, sport.
    pub pipeline: Sp<Header>,
    /// Where events come from.
    pub source: Sp<SourceSpec>,
    /// Event time and disorder (defaults: 1s lateness, 2s idle timeout, dead-letter, 6h).
    #[serde(default)]
    pub time: Option<Sp<TimeSpec>>,
    /// Windowed features over the events, per game, team or player.
    #[serde(default, rename = "feature")]
    pub features: Vec<Sp<FeatureSpec>>,
    /// Features computed from other features.
    #[serde(default)]
    pub derived: Vec<Sp<DerivedSpec>>,
    /// The model whose output deltas carry.
    pub model: Sp<ModelSpec>,
    /// When a change is worth publishing (defaults: epsilon 0.005, hysteresis 0).
    #[serde(default)]
    pub delta: Option<Sp<DeltaSpec>>,
    /// Where deltas go; at least one.
    #[serde(rename = "output")]
    #[schemars(length(min = 1))]
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
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]*$"))]
    pub name: Sp<String>,
    /// Raised on every change; deltas carry it.
    #[schemars(range(min = 1))]
    pub version: Sp<u32>,
    /// Events of other sports on the same topics are ignored.
    pub sport: Sp<Sport>,
    /// What the pipeline computes, for people.
    #[serde(default)]
    pub description: Option<String>,
}

/// `[source]`: where events come from.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SourceSpec {
    /// Kafka topics, every partition of each.
    #[schemars(length(min = 1), inner(regex(pattern = r"^[A-Za-z0-9._-]{1,249}$")))]
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
    /// How far past the frontier (event time) a partition is read while the partition holding
    /// the frontier back still has records to read ("1m"). Records read ahead wait in memory
    /// until the frontier passes them.
    #[serde(default)]
    pub read_ahead: Option<Sp<String>>,
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
    /// How derived features, the model and deltas name it: lower-case letters, digits and
    /// underscores.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]*$"))]
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
    /// How the window's values combine (default `last`). `count` and `rate` need no `value`;
    /// `rate` is the sum per minute of a window with a length; `ewma` needs `alpha`.
    #[serde(default)]
    pub aggregate: Option<Sp<Aggregate>>,
    /// Smoothing factor of `ewma`, in (0, 1].
    #[serde(default)]
    #[schemars(extend("exclusiveMinimum" = 0), range(max = 1))]
    pub alpha: Option<Sp<f64>>,
    /// The value while the window is empty (default 0).
    #[serde(default)]
    pub default: Option<f64>,
    /// What the feature means, for people.
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
    /// `tumbling`, `hopping`, `sliding` (event time; `size`, and `slide` for hopping),
    /// `session` (`gap`), `game-clock` (`size` of game clock), `events` and `possessions`
    /// (the last `count`), `game` (the whole game so far).
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
    #[schemars(range(min = 1))]
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
    /// Lower-case letters, digits and underscores; unique among the pipeline's features.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]*$"))]
    pub name: Sp<String>,
    /// An expression over other features (team features as `name.home` / `name.away`), e.g.
    /// `score_diff / sqrt(seconds_left / 60 + 1)`.
    pub expr: Sp<String>,
    /// What the feature means, for people.
    #[serde(default)]
    pub description: Option<String>,
}

/// `[model]`: a registry model (`name`, `version`: `models/<name>/<version>/`) or a formula
/// (`expr`). Its output is the value deltas carry.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ModelSpec {
    /// A registry model: `<models>/<name>/<version>/`; with `version`.
    #[serde(default)]
    pub name: Option<Sp<String>>,
    /// The registry model's version, e.g. `v1`; with `name`.
    #[serde(default)]
    pub version: Option<Sp<String>>,
    /// A formula over the features instead of a registry model, e.g. `sigmoid(score_diff / 7)`.
    #[serde(default)]
    pub expr: Option<Sp<String>>,
    /// What the value means, for people reading deltas.
    #[serde(default)]
    pub output: Option<String>,
    /// A registry model scored beside this one on every row, e.g. `{ name = "nfl_wp_gbt",
    /// version = "v1" }`: its value goes to the archive (`shadow_value`), never to deltas.
    /// `sideline promote` makes it the model (and this one the shadow).
    #[serde(default)]
    pub shadow: Option<Sp<ShadowSpec>>,
}

/// `[model] shadow`: a registry model scored beside the pipeline's model, archived only.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ShadowSpec {
    /// `<models>/<name>/<version>/`; its inputs must be features of the pipeline.
    pub name: Sp<String>,
    /// The registry model's version, e.g. `v1`.
    pub version: Sp<String>,
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
    /// `websocket` (needs `channel`), `kafka` (needs `topic`), `webhook` (needs `url` and
    /// `secret-env`) or `archive` (needs `dir`).
    pub kind: Sp<OutputKind>,
    /// `websocket`: the channel subscribers ask for.
    #[serde(default)]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,249}$"))]
    pub channel: Option<Sp<String>>,
    /// `webhook`: where alerts are POSTed (`http://`).
    #[serde(default)]
    pub url: Option<Sp<String>>,
    /// `webhook`: the environment variable holding the HMAC-SHA256 signing secret (secrets
    /// stay out of pipeline files).
    #[serde(default)]
    pub secret_env: Option<Sp<String>>,
    /// `kafka`, `websocket`: what goes out: `deltas` (default) or `alerts` (the detectors').
    #[serde(default)]
    pub stream: Option<Sp<OutputStream>>,
    /// `kafka`: the topic deltas are written to, one JSON record per delta, keyed by game.
    #[serde(default)]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,249}$"))]
    pub topic: Option<Sp<String>>,
    /// `archive`: the directory the feature archive's Arrow IPC files go to.
    #[serde(default)]
    pub dir: Option<Sp<String>>,
    /// `archive`: rows per file before the next one is started (default 1,000,000).
    #[serde(default)]
    pub rows_per_file: Option<Sp<u64>>,
}

/// What a `kafka` output carries.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OutputStream {
    Deltas,
    Alerts,
}

#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OutputKind {
    Websocket,
    Kafka,
    Webhook,
    // Every value the pipeline computes, with its features, to rolling Arrow IPC files (a
    // plain comment: a doc comment would split the schema's enum).
    Archive,
}

/// `[[detector]]`: an anomaly detector over the prediction or a feature, per game.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DetectorSpec {
    /// The detector's name, unique in the pipeline; alerts carry it.
    pub name: Sp<String>,
    pub kind: Sp<DetectorKind>,
    /// What it watches: `prediction` (the model's value) or a game-level feature or derived
    /// feature (team ones as `name.home` / `name.away`).
    #[serde(default)]
    pub on: Option<Sp<String>>,
    /// `divergence`: what `on` is compared with (e.g. the market's implied probability).
    #[serde(default)]
    pub against: Option<Sp<String>>,
    /// `zscore`: EWMA smoothing factor in (0, 1].
    #[serde(default)]
    pub alpha: Option<Sp<f64>>,
    /// `zscore`, `robust`: the score at which the alert opens (warning) and escalates
    /// (critical).
    #[serde(default)]
    pub warn: Option<Sp<f64>>,
    #[serde(default)]
    pub crit: Option<Sp<f64>>,
    /// `robust`: how many past values the median and MAD are taken over.
    #[serde(default)]
    pub count: Option<Sp<u32>>,
    /// `jump`: the event-time window a swing is measured over ("2m").
    #[serde(default)]
    pub window: Option<Sp<String>>,
    /// `jump`, `divergence`: the size of swing or gap that opens the alert (twice it:
    /// critical).
    #[serde(default)]
    pub threshold: Option<Sp<f64>>,
    /// `cusum`: slack `k` and decision threshold `h`, in the watched value's units; `target`
    /// the in-control mean (default: learnt from the first `min-samples` values).
    #[serde(default)]
    pub k: Option<Sp<f64>>,
    #[serde(default)]
    pub h: Option<Sp<f64>>,
    #[serde(default)]
    pub target: Option<Sp<f64>>,
    /// Values seen before the detector may fire (default 10).
    #[serde(default)]
    pub min_samples: Option<Sp<u32>>,
    /// `staleness`: how long (wall clock) a live game may go without an event ("90s").
    #[serde(default)]
    pub gap: Option<Sp<String>>,
    /// After an alert resolves, a new one for the same game is suppressed this long (event
    /// time, default "0s").
    #[serde(default)]
    pub cooldown: Option<Sp<String>>,
}

/// What a detector looks for.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DetectorKind {
    /// An EWMA z-score of the value beyond `warn` / `crit`.
    Zscore,
    /// A median/MAD score over the last `count` values beyond `warn` / `crit`.
    Robust,
    /// Drift of the mean: two-sided CUSUM beyond `h`.
    Cusum,
    /// A swing of at least `threshold` within `window`.
    Jump,
    /// `on` and `against` at least `threshold` apart.
    Divergence,
    /// Feed health: sequence numbers skipped (warning) or repeated (info). Takes no `on`.
    Sequence,
    /// Feed health: a score went down (critical). Takes no `on`.
    Score,
    /// Feed health: no event for a game that has not ended for `gap` of **wall-clock** time
    /// (warning); resolved by its next event. Takes no `on`.
    Staleness,
}

/// The JSON Schema of pipeline files, as committed in `schemas/pipeline.schema.json`. TOML has
/// no null, so optional keys are simply not required (no `null` alternatives).
pub fn schema_json() -> String {
    let mut schema = schemars::schema_for!(PipelineSpec);
    RecursiveTransform(without_null).transform(&mut schema);
    let mut text = serde_json::to_string_pretty(&schema).expect("schema serialises");
    text.push('\n');
    text
}

/// Drops the `null` schemars adds for `Option` fields: `"type": [T, "null"]` becomes `T`,
/// `anyOf: [S, {"type": "null"}]` becomes `S`, and `"default": null` goes.
fn without_null(schema: &mut Schema) {
    let null = serde_json::json!({ "type": "null" });
    if let Some(Value::Array(types)) = schema.get("type") {
        let kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        let kept = match &kept[..] {
            [one] => one.clone(),
            _ => Value::Array(kept),
        };
        schema.insert("type".into(), kept);
    }
    if let Some(Value::Array(any)) = schema.get("anyOf") {
        let kept: Vec<Value> = any.iter().filter(|s| **s != null).cloned().collect();
        if let [Value::Object(only)] = &kept[..] {
            let only = only.clone();
            schema.remove("anyOf");
            for (k, v) in only {
                schema.insert(k, v);
            }
        }
    }
    if schema.get("default") == Some(&Value::Null) {
        schema.remove("default");
    }
}
