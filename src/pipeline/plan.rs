//! From a raw spec to a validated plan: every name resolved, every expression type-checked,
//! every window complete, derived features ordered. All errors carry file:line:column; nothing
//! here panics on user input, and nothing is built until the whole file is valid.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::time::Duration;

use super::diag::{closest, Diagnostic, Invalid, Source};
use super::expr::{self, Ast, Expr, ExprError, Type};
use super::spec::{
    Aggregate, DetectorKind, DetectorSpec, GroupBy, OutputKind, PipelineSpec, Sp, WindowKind,
    WindowSpec,
};
use crate::config::LatePolicy;
use crate::event::Sport;

mod detectors;
mod exprs;
mod models;
mod windows;

/// Numeric event fields filters and values read (besides `stats.NAME`).
pub const EVENT_NUMBERS: [(&str, &str); 17] = [
    ("seq", "the event's sequence number"),
    ("time", "event time, ms since the epoch"),
    ("period", "period (quarter, half, inning)"),
    (
        "clock",
        "game clock in seconds (count-down sports: left in the period)",
    ),
    ("home_score", "home score after the event"),
    ("away_score", "away score after the event"),
    (
        "home_points",
        "home points scored by this event (score change since the game's previous event)",
    ),
    ("away_points", "away points scored by this event"),
    (
        "elapsed",
        "game seconds played (the game clock; stops at stoppages)",
    ),
    (
        "seconds_remaining",
        "game seconds left in regulation (overtime: in the period)",
    ),
    ("side", "1 when the event's team is home, -1 away, 0 none"),
    ("odds.home_price", "decimal home price, 0 without a quote"),
    ("odds.away_price", "decimal away price"),
    ("odds.draw_price", "decimal draw price"),
    (
        "odds.home_prob",
        "implied home probability, overround removed",
    ),
    ("odds.away_prob", "implied away probability"),
    ("odds.draw_prob", "implied draw probability"),
];

/// String event fields (compare with `==` / `!=`).
pub const EVENT_STRINGS: [&str; 6] = ["kind", "team", "player", "home", "away", "sport"];

/// A validated pipeline, ready to build.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub version: u32,
    pub sport: Sport,
    pub description: String,
    pub topics: Vec<String>,
    pub time: TimePlan,
    pub features: Vec<FeaturePlan>,
    /// Derived features in evaluation order.
    pub derived: Vec<DerivedPlan>,
    /// `stats.NAME` fields read by features, in variable order after [`EVENT_NUMBERS`].
    pub stats: Vec<String>,
    /// Names of the feature-context variables, in order: window features (team ones as
    /// `name.home`, `name.away`), then derived features.
    pub vars: Vec<String>,
    pub model: ModelPlan,
    /// `[model] shadow`: scored beside the model, archived, never published.
    pub shadow: Option<ShadowPlan>,
    pub delta: DeltaPlan,
    pub outputs: Vec<Output>,
    pub detectors: Vec<DetectorPlan>,
    /// The file's text, as deployed.
    pub source: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TimePlan {
    pub allowed_lateness: Duration,
    pub idle_timeout: Duration,
    pub read_ahead: Duration,
    pub late_policy: LatePolicy,
    pub retention: Duration,
}

#[derive(Clone, Debug)]
pub struct FeaturePlan {
    pub name: String,
    pub group: GroupBy,
    pub filter: Option<Expr>,
    pub value: Expr,
    pub window: Window,
    pub aggregate: Agg,
    pub default: f64,
    /// First feature-context variable (team features take two: home, away); none for players.
    pub var: Option<usize>,
}

/// A window, in milliseconds of event time (or game time for `GameClock`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    Tumbling { size: u64 },
    Hopping { size: u64, slide: u64 },
    Sliding { size: u64 },
    Session { gap: u64 },
    GameClock { size: u64 },
    Events { count: u32 },
    Possessions { count: u32 },
    Game,
}

impl Window {
    /// The window's length in ms, where it has one.
    pub fn length_ms(&self) -> Option<u64> {
        match self {
            Window::Tumbling { size }
            | Window::Hopping { size, .. }
            | Window::Sliding { size }
            | Window::GameClock { size } => Some(*size),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Agg {
    Count,
    Sum,
    Mean,
    Min,
    Max,
    First,
    Last,
    Stddev,
    Distinct,
    Ewma {
        alpha: f64,
    },
    /// Sum per minute of window length.
    Rate {
        minutes: f64,
    },
}

#[derive(Clone, Debug)]
pub struct DerivedPlan {
    pub name: String,
    pub expr: Expr,
    pub var: usize,
}

#[derive(Clone, Debug)]
pub enum ModelPlan {
    /// `models/<name>/<version>/`; `inputs[i]` is the variable feeding the model's input i.
    Registry {
        name: String,
        version: String,
        inputs: Vec<usize>,
    },
    /// A formula over the features.
    Formula { expr: Expr },
}

/// A shadow model: a registry model scored on the same rows as the pipeline's model; its
/// values go to the archive, not to deltas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowPlan {
    pub name: String,
    pub version: String,
    /// `inputs[i]` is the variable feeding the model's input i.
    pub inputs: Vec<usize>,
}

/// A detector, per game.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorPlan {
    pub name: String,
    pub rule: DetectorRule,
    /// What it watches.
    pub on: Watch,
    /// Event-time ms during which a resolved alert does not reopen.
    pub cooldown_ms: u64,
    pub min_samples: u32,
}

/// A detector's input: the model's value or a feature-context variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watch {
    Prediction,
    Var(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub enum DetectorRule {
    Zscore {
        alpha: f64,
        warn: f64,
        crit: f64,
    },
    Robust {
        count: u32,
        warn: f64,
        crit: f64,
    },
    Cusum {
        target: Option<f64>,
        k: f64,
        h: f64,
    },
    Jump {
        threshold: f64,
        window_ms: u64,
    },
    Divergence {
        threshold: f64,
        against: Watch,
    },
    /// Feed health: seq numbers skipped or repeated.
    Sequence,
    /// Feed health: a score went down.
    Score,
    /// Feed health: no event for `gap_ms` of wall-clock time in a game that has not ended.
    Staleness {
        gap_ms: u64,
    },
}

impl DetectorRule {
    /// Whether its threshold applies to the score's magnitude (the statistical detectors) rather
    /// than to the value (the feed-health ones).
    pub fn thresholds_score(&self) -> bool {
        !matches!(
            self,
            DetectorRule::Sequence | DetectorRule::Score | DetectorRule::Staleness { .. }
        )
    }

    pub fn kind(&self) -> &'static str {
        match self {
            DetectorRule::Zscore { .. } => "zscore",
            DetectorRule::Robust { .. } => "robust",
            DetectorRule::Cusum { .. } => "cusum",
            DetectorRule::Jump { .. } => "jump",
            DetectorRule::Divergence { .. } => "divergence",
            DetectorRule::Sequence => "sequence",
            DetectorRule::Score => "score",
            DetectorRule::Staleness { .. } => "staleness",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeltaPlan {
    pub epsilon: f64,
    pub hysteresis: f64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    WebSocket {
        channel: String,
    },
    /// The detectors' alerts to a WebSocket alerts channel.
    WebSocketAlerts {
        channel: String,
    },
    /// Deltas to a Kafka topic.
    Kafka {
        topic: String,
    },
    /// The detectors' alerts to a Kafka topic.
    KafkaAlerts {
        topic: String,
    },
    /// The detectors' alerts POSTed to a URL, signed with the secret in `secret_env`.
    Webhook {
        url: String,
        secret_env: String,
    },
    /// Every computed value with its features, to Arrow IPC files in `dir`.
    Archive {
        dir: String,
        rows_per_file: u64,
    },
}

/// What the planner needs to know about models: the input names of a registry model.
pub trait ModelCatalog {
    fn inputs(&self, name: &str, version: &str) -> Result<Vec<String>, String>;
}

/// Parses and validates a pipeline file. `file` is how errors name it.
pub fn plan(file: &str, text: &str, models: &dyn ModelCatalog) -> Result<Plan, Invalid> {
    let src = Source::new(file, text);
    let spec: PipelineSpec = toml::from_str(text).map_err(|e| {
        Invalid(vec![
            src.toml_error(&e, &["pipeline", "source", "model", "output"])
        ])
    })?;
    let mut p = Planner {
        src,
        errors: Vec::new(),
    };
    let plan = p.plan(&spec, models);
    if p.errors.is_empty() {
        Ok(plan)
    } else {
        p.errors.sort_by_key(|d| (d.line, d.column));
        Err(Invalid(p.errors))
    }
}

struct Planner<'a> {
    src: Source<'a>,
    errors: Vec<Diagnostic>,
}

fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase())
        && c.all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == '_')
}

/// Kafka's rule: 1-249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn valid_topic(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 249
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Planner<'_> {
    fn err(&mut self, span: Range<usize>, msg: impl Into<String>) {
        let d = self.src.error(span, msg);
        self.errors.push(d);
    }

    fn err_hint(&mut self, span: Range<usize>, msg: impl Into<String>, hint: impl Into<String>) {
        let d = self.src.error_hint(span, msg, hint);
        self.errors.push(d);
    }

    /// The file span of `inner`, a byte range of the expression held by the string value at
    /// `literal`.
    fn in_string(&self, literal: &Range<usize>, inner: &Range<usize>) -> Range<usize> {
        self.src.in_string(literal, inner.start)..self.src.in_string(literal, inner.end)
    }

    fn expr_err(&mut self, at: &Range<usize>, e: ExprError) {
        let span = self.in_string(at, &e.span);
        let mut d = self.src.error(span, e.message);
        d.hint = e.hint;
        self.errors.push(d);
    }

    fn parse_expr(&mut self, s: &Sp<String>) -> Option<Ast> {
        match expr::parse(s.get()) {
            Ok(a) => Some(a),
            Err(e) => {
                self.expr_err(&s.span(), e);
                None
            }
        }
    }

    fn duration(&mut self, s: &Sp<String>, what: &str) -> Option<Duration> {
        match humantime::parse_duration(s.get()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err_hint(
                    s.span(),
                    format!("{what}: `{}` is not a duration ({e})", s.get()),
                    "write durations like \"500ms\", \"30s\", \"5m\", \"2h\"",
                );
                None
            }
        }
    }

    fn positive_ms(
        &mut self,
        s: &Option<Sp<String>>,
        what: &str,
        at: &Range<usize>,
    ) -> Option<u64> {
        let Some(s) = s else {
            self.err(at.clone(), format!("this window needs `{what}`"));
            return None;
        };
        let d = self.duration(s, what)?;
        if d.as_millis() == 0 {
            self.err(s.span(), format!("`{what}` must be longer than 0"));
            return None;
        }
        Some(d.as_millis() as u64)
    }

    fn plan(&mut self, spec: &PipelineSpec, models: &dyn ModelCatalog) -> Plan {
        let header = spec.pipeline.get();
        if !valid_name(header.name.get()) {
            self.err_hint(
                header.name.span(),
                format!("invalid pipeline name `{}`", header.name.get()),
                "use lower-case letters, digits and underscores, starting with a letter",
            );
        }
        if *header.version.get() == 0 {
            self.err(header.version.span(), "`version` starts at 1");
        }
        let sport = *header.sport.get();

        // Source.
        let source = spec.source.get();
        if source.topics.is_empty() {
            self.err(
                source.topics.span(),
                "`topics` is empty: name at least one Kafka topic",
            );
        }
        let mut topics = Vec::new();
        for t in source.topics.iter() {
            if !valid_topic(t.get()) {
                self.err_hint(
                    t.span(),
                    format!("invalid topic name `{}`", t.get()),
                    "Kafka topic names are 1 to 249 characters of letters, digits, `.`, `_` and `-`",
                );
            } else if topics.contains(t.get()) {
                self.err(t.span(), format!("topic `{}` is listed twice", t.get()));
            } else {
                topics.push(t.get().clone());
            }
        }

        // Time.
        let mut time = TimePlan {
            allowed_lateness: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(2),
            read_ahead: Duration::from_secs(60),
            late_policy: LatePolicy::DeadLetter,
            retention: Duration::from_secs(6 * 3600),
        };
        if let Some(t) = &spec.time {
            if let Some(d) = &t.allowed_lateness {
                time.allowed_lateness = self.duration(d, "allowed-lateness").unwrap_or_default();
            }
            if let Some(d) = &t.idle_timeout {
                time.idle_timeout = self
                    .duration(d, "idle-timeout")
                    .unwrap_or(time.idle_timeout);
                if time.idle_timeout.is_zero() {
                    self.err(d.span(), "`idle-timeout` must be longer than 0");
                }
            }
            if let Some(d) = &t.read_ahead {
                time.read_ahead = self.duration(d, "read-ahead").unwrap_or(time.read_ahead);
            }
            if let Some(p) = &t.late_policy {
                time.late_policy = *p.get();
            }
            if let Some(d) = &t.retention {
                time.retention = self.duration(d, "retention").unwrap_or(time.retention);
                if time.retention.as_millis() == 0 {
                    self.err_hint(
                        d.span(),
                        "`retention` must be at least 1ms (event time counts milliseconds)",
                        "an ended game's state is released this long after its last event",
                    );
                }
            }
        }

        // Window features.
        let mut stats: Vec<String> = Vec::new();
        let mut names: HashMap<String, Range<usize>> = HashMap::new();
        let mut vars: Vec<String> = Vec::new();
        let mut features = Vec::new();
        let mut groups: HashMap<String, GroupBy> = HashMap::new();
        for f in &spec.features {
            let fs = f.get();
            let name = fs.name.get().clone();
            self.check_new_name(&fs.name, &mut names);
            let group = fs.group_by.as_ref().map_or(GroupBy::Game, |g| *g.get());
            groups.insert(name.clone(), group);
            let window = match &fs.window {
                None => Some(Window::Events { count: 1 }),
                Some(w) => self.window(w, sport),
            };
            if let (Some(w), Some(ws)) = (window, &fs.window) {
                if let Some(len) = w.length_ms() {
                    if len > time.retention.as_millis() as u64 {
                        self.err_hint(
                            ws.size.as_ref().map_or(ws.span(), |s| s.span()),
                            format!(
                                "this window ({}) is longer than the pipeline's retention ({})",
                                humantime::format_duration(Duration::from_millis(len)),
                                humantime::format_duration(time.retention)
                            ),
                            "shorten the window or raise `retention` in [time]",
                        );
                    }
                }
            }
            let aggregate = match &fs.aggregate {
                None => Some(Agg::Last),
                Some(a) => self.aggregate(a, &fs.alpha, window),
            };
            if fs.alpha.is_some()
                && fs
                    .aggregate
                    .as_ref()
                    .is_none_or(|a| *a.get() != Aggregate::Ewma)
            {
                let span = fs.alpha.as_ref().map(|a| a.span()).unwrap_or_default();
                self.err(span, "`alpha` only applies to `aggregate = \"ewma\"`");
            }
            let value = match &fs.value {
                None => Some(Expr::Num(1.0)),
                Some(v) => self.event_expr(v, &mut stats, false),
            };
            if fs.value.is_none()
                && !matches!(aggregate, Some(Agg::Count) | Some(Agg::Rate { .. }) | None)
            {
                self.err_hint(
                    fs.aggregate.as_ref().map_or(fs.name.span(), |a| a.span()),
                    format!("feature `{name}` needs a `value` for this aggregate"),
                    "only `count` and `rate` count events without a value",
                );
            }
            let filter = match &fs.filter {
                None => None,
                Some(v) => self.event_expr(v, &mut stats, true),
            };
            let var = match group {
                GroupBy::Game => {
                    vars.push(name.clone());
                    Some(vars.len() - 1)
                }
                GroupBy::Team => {
                    vars.push(format!("{name}.home"));
                    vars.push(format!("{name}.away"));
                    Some(vars.len() - 2)
                }
                GroupBy::Player => None,
            };
            if let (Some(window), Some(aggregate), Some(value)) = (window, aggregate, value) {
                features.push(FeaturePlan {
                    name,
                    group,
                    filter: fs.filter.as_ref().and(filter),
                    value,
                    window,
                    aggregate,
                    default: fs.default.unwrap_or(0.0),
                    var,
                });
            }
        }

        // Derived features: names first, so they may refer to each other in any order.
        let mut asts = Vec::new();
        for d in &spec.derived {
            self.check_new_name(&d.name, &mut names);
            asts.push(self.parse_expr(&d.expr));
        }
        let derived_names: Vec<String> =
            spec.derived.iter().map(|d| d.name.get().clone()).collect();
        let order = self.derived_order(spec, &asts, &derived_names, &groups);
        let mut derived = Vec::new();
        let mut var_of: HashMap<String, usize> = vars
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        for i in order {
            let d = &spec.derived[i];
            let Some(ast) = &asts[i] else { continue };
            let var = vars.len();
            vars.push(d.name.get().clone());
            if let Some(e) = self.feature_expr(&d.expr, ast, &var_of, &groups, &derived_names) {
                derived.push(DerivedPlan {
                    name: d.name.get().clone(),
                    expr: e,
                    var,
                });
            }
            var_of.insert(d.name.get().clone(), var);
        }

        let model = self.model(spec, models, &var_of, &groups, &derived_names);
        let shadow = self.shadow(spec, models, &var_of, &groups, &derived_names);

        // Delta settings.
        let mut delta = DeltaPlan {
            epsilon: 0.005,
            hysteresis: 0.0,
        };
        if let Some(d) = &spec.delta {
            if let Some(e) = &d.epsilon {
                if !(0.0..1.0).contains(e.get()) {
                    self.err(e.span(), "`epsilon` must be in [0, 1)");
                }
                delta.epsilon = *e.get();
            }
            if let Some(h) = &d.hysteresis {
                if !(*h.get() >= 0.0 && h.get().is_finite()) {
                    self.err(h.span(), "`hysteresis` must be 0 or more");
                }
                delta.hysteresis = *h.get();
            }
        }

        // Outputs.
        let mut outputs = Vec::new();
        if spec.outputs.is_empty() {
            self.err(
                self.src.table_header(spec.pipeline.span()),
                "a pipeline needs at least one [[output]]",
            );
        }
        for o in &spec.outputs {
            let os = o.get();
            match os.kind.get() {
                OutputKind::Websocket => match &os.channel {
                    None => self.err(os.kind.span(), "a `websocket` output needs a `channel`"),
                    Some(c) if !valid_topic(c.get()) => self.err_hint(
                        c.span(),
                        format!("invalid channel name `{}`", c.get()),
                        "channel names are letters, digits, `.`, `_` and `-`",
                    ),
                    Some(c) => {
                        let channel = c.get().clone();
                        let out = match os.stream.as_ref().map(|s| *s.get()) {
                            Some(super::spec::OutputStream::Alerts) => {
                                Output::WebSocketAlerts { channel }
                            }
                            _ => Output::WebSocket { channel },
                        };
                        let taken = outputs.iter().any(|o| match (o, &out) {
                            (
                                Output::WebSocket { channel: a } | Output::WebSocketAlerts { channel: a },
                                Output::WebSocket { channel: b } | Output::WebSocketAlerts { channel: b },
                            ) => a == b,
                            _ => false,
                        });
                        if taken {
                            self.err(c.span(), format!("channel `{}` is listed twice", c.get()));
                        }
                        outputs.push(out);
                    }
                },
                OutputKind::Webhook => match (&os.url, &os.secret_env) {
                    (Some(u), _) if !u.get().starts_with("http://") => self.err_hint(
                        u.span(),
                        format!("unsupported webhook URL `{}`", u.get()),
                        "only http:// endpoints are supported in this build (put a TLS proxy in front)",
                    ),
                    (Some(u), Some(e)) => outputs.push(Output::Webhook {
                        url: u.get().clone(),
                        secret_env: e.get().clone(),
                    }),
                    (None, _) => self.err(os.kind.span(), "a `webhook` output needs a `url`"),
                    (_, None) => self.err_hint(
                        os.kind.span(),
                        "a `webhook` output needs `secret-env`",
                        "the name of the environment variable that holds the signing secret",
                    ),
                },
                OutputKind::Archive => match &os.dir {
                    None => self.err(os.kind.span(), "an `archive` output needs a `dir`"),
                    Some(d) if d.get().trim().is_empty() => {
                        self.err(d.span(), "`dir` must name a directory")
                    }
                    Some(_) if outputs.iter().any(|o| matches!(o, Output::Archive { .. })) => {
                        self.err(os.kind.span(), "a pipeline has at most one `archive` output")
                    }
                    Some(d) => {
                        let rows = os.rows_per_file.as_ref().map_or(1_000_000, |r| *r.get());
                        if rows == 0 {
                            let span = os.rows_per_file.as_ref().map(|r| r.span());
                            self.err(span.unwrap_or(os.kind.span()), "`rows-per-file` must be at least 1");
                        }
                        outputs.push(Output::Archive {
                            dir: d.get().clone(),
                            rows_per_file: rows.max(1),
                        });
                    }
                },
                OutputKind::Kafka => match &os.topic {
                    None => self.err(os.kind.span(), "a `kafka` output needs a `topic`"),
                    Some(t) if !valid_topic(t.get()) => self.err_hint(
                        t.span(),
                        format!("invalid topic name `{}`", t.get()),
                        "Kafka topic names are 1 to 249 characters of letters, digits, `.`, `_` and `-`",
                    ),
                    Some(t) if topics.contains(t.get()) => self.err_hint(
                        t.span(),
                        format!("output topic `{}` is also an input topic of this pipeline", t.get()),
                        "the pipeline would read its own deltas as events; write them to another topic",
                    ),
                    Some(t) => outputs.push(match os.stream.as_ref().map(|s| *s.get()) {
                        Some(super::spec::OutputStream::Alerts) => Output::KafkaAlerts {
                            topic: t.get().clone(),
                        },
                        _ => Output::Kafka {
                            topic: t.get().clone(),
                        },
                    }),
                },
            }
        }
        let mut detectors: Vec<DetectorPlan> = Vec::new();
        for d in &spec.detectors {
            if detectors.iter().any(|x| x.name == *d.name.get()) {
                self.err(
                    d.name.span(),
                    format!("detector `{}` is defined twice", d.name.get()),
                );
                continue;
            }
            if !valid_name(d.name.get()) {
                self.err_hint(
                    d.name.span(),
                    format!("invalid detector name `{}`", d.name.get()),
                    "use lower-case letters, digits and underscores, starting with a letter",
                );
                continue;
            }
            if let Some(p) = self.detector(d.get(), &var_of) {
                detectors.push(p);
            }
        }

        Plan {
            name: header.name.get().clone(),
            version: *header.version.get(),
            sport,
            description: header.description.clone().unwrap_or_default(),
            topics,
            time,
            features,
            derived,
            stats,
            vars,
            model: model.unwrap_or(ModelPlan::Formula {
                expr: Expr::Num(0.0),
            }),
            shadow,
            delta,
            outputs,
            detectors,
            source: self.src.text.to_string(),
        }
    }

    fn check_new_name(&mut self, name: &Sp<String>, names: &mut HashMap<String, Range<usize>>) {
        let n = name.get();
        if !valid_name(n) {
            self.err_hint(
                name.span(),
                format!("invalid feature name `{n}`"),
                "use lower-case letters, digits and underscores, starting with a letter",
            );
        } else if let Some(first) = names.get(n) {
            let (line, _) = self.src.line_col(first.start);
            self.err_hint(
                name.span(),
                format!("feature `{n}` is defined twice"),
                format!("the first definition is on line {line}"),
            );
        } else if expr::Func::names().any(|f| f == n) {
            self.err(name.span(), format!("`{n}` is a function name"));
        } else if crate::archive::OWN_COLUMNS.contains(&n.as_str()) {
            self.err_hint(
                name.span(),
                format!("`{n}` is a column of the feature archive"),
                format!(
                    "the archive names its own columns {}: choose another name",
                    crate::archive::OWN_COLUMNS.join(", ")
                ),
            );
        } else {
            names.insert(n.clone(), name.span());
        }
    }
}
