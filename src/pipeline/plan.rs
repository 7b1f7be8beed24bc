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

    fn window(&mut self, w: &Sp<WindowSpec>, sport: Sport) -> Option<Window> {
        // Missing parameters are reported at the kind that needs them.
        let at = w.kind.span();
        let kind = *w.kind.get();
        let fields = [
            (w.size.is_some(), "size"),
            (w.slide.is_some(), "slide"),
            (w.gap.is_some(), "gap"),
            (w.count.is_some(), "count"),
        ];
        let wants: &[&str] = match kind {
            WindowKind::Tumbling | WindowKind::Sliding | WindowKind::GameClock => &["size"],
            WindowKind::Hopping => &["size", "slide"],
            WindowKind::Session => &["gap"],
            WindowKind::Events | WindowKind::Possessions => &["count"],
            WindowKind::Game => &[],
        };
        for (present, name) in fields {
            if present && !wants.contains(&name) {
                let span = match name {
                    "size" => w.size.as_ref().map(|s| s.span()),
                    "slide" => w.slide.as_ref().map(|s| s.span()),
                    "gap" => w.gap.as_ref().map(|s| s.span()),
                    _ => w.count.as_ref().map(|s| s.span()),
                }
                .unwrap_or(at.clone());
                self.err_hint(
                    span,
                    format!("a `{}` window has no `{name}`", kind_name(kind)),
                    match wants.is_empty() {
                        true => "it takes no parameters".to_string(),
                        false => format!("it takes: {}", wants.join(", ")),
                    },
                );
            }
        }
        let count = |p: &mut Self| match &w.count {
            None => {
                p.err(at.clone(), "this window needs `count`");
                None
            }
            Some(c) if *c.get() == 0 => {
                p.err(c.span(), "`count` must be at least 1");
                None
            }
            Some(c) => Some(*c.get()),
        };
        Some(match kind {
            WindowKind::Tumbling => Window::Tumbling {
                size: self.positive_ms(&w.size, "size", &at)?,
            },
            WindowKind::Sliding => Window::Sliding {
                size: self.positive_ms(&w.size, "size", &at)?,
            },
            WindowKind::Hopping => {
                let size = self.positive_ms(&w.size, "size", &at);
                let slide = self.positive_ms(&w.slide, "slide", &at);
                let (size, slide) = (size?, slide?);
                if slide > size {
                    let span = w.slide.as_ref().map_or(at.clone(), |s| s.span());
                    self.err_hint(
                        span,
                        "a hopping window's `slide` cannot be longer than its `size`",
                        "events between windows would be lost",
                    );
                    return None;
                }
                Window::Hopping { size, slide }
            }
            WindowKind::Session => Window::Session {
                gap: self.positive_ms(&w.gap, "gap", &at)?,
            },
            WindowKind::GameClock => {
                if matches!(sport, Sport::Mlb | Sport::Cricket) {
                    self.err_hint(
                        w.kind.span(),
                        format!("{sport} has no game clock, so a `game-clock` window never moves"),
                        "use an `events` window (last N events) instead",
                    );
                    return None;
                }
                Window::GameClock {
                    size: self.positive_ms(&w.size, "size", &at)?,
                }
            }
            WindowKind::Events => Window::Events {
                count: count(self)?,
            },
            WindowKind::Possessions => Window::Possessions {
                count: count(self)?,
            },
            WindowKind::Game => Window::Game,
        })
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
            if let Some(p) = &t.late_policy {
                time.late_policy = *p.get();
            }
            if let Some(d) = &t.retention {
                time.retention = self.duration(d, "retention").unwrap_or(time.retention);
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

    fn aggregate(
        &mut self,
        a: &Sp<Aggregate>,
        alpha: &Option<Sp<f64>>,
        w: Option<Window>,
    ) -> Option<Agg> {
        Some(match a.get() {
            Aggregate::Count => Agg::Count,
            Aggregate::Sum => Agg::Sum,
            Aggregate::Mean => Agg::Mean,
            Aggregate::Min => Agg::Min,
            Aggregate::Max => Agg::Max,
            Aggregate::First => Agg::First,
            Aggregate::Last => Agg::Last,
            Aggregate::Stddev => Agg::Stddev,
            Aggregate::Distinct => Agg::Distinct,
            Aggregate::Ewma => match alpha {
                None => {
                    self.err_hint(
                        a.span(),
                        "`ewma` needs `alpha`, the smoothing factor in (0, 1]",
                        "add alpha = 0.2 to the feature: the larger, the more the latest events weigh",
                    );
                    return None;
                }
                Some(x) if !(*x.get() > 0.0 && *x.get() <= 1.0) => {
                    self.err(x.span(), "`alpha` must be in (0, 1]");
                    return None;
                }
                Some(x) => Agg::Ewma { alpha: *x.get() },
            },
            Aggregate::Rate => match w.and_then(|w| w.length_ms()) {
                Some(ms) => Agg::Rate {
                    minutes: ms as f64 / 60_000.0,
                },
                None => {
                    if w.is_some() {
                        self.err_hint(
                            a.span(),
                            "`rate` needs a window with a length",
                            "use a tumbling, hopping, sliding or game-clock window",
                        );
                    }
                    return None;
                }
            },
        })
    }

    fn event_expr(
        &mut self,
        s: &Sp<String>,
        stats: &mut Vec<String>,
        boolean: bool,
    ) -> Option<Expr> {
        let ast = self.parse_expr(s)?;
        let mut lookup = |name: &str, span: &Range<usize>| -> Result<(usize, Type), ExprError> {
            if let Some(i) = EVENT_NUMBERS.iter().position(|(n, _)| *n == name) {
                return Ok((i, Type::Num));
            }
            if let Some(i) = EVENT_STRINGS.iter().position(|n| *n == name) {
                return Ok((i, Type::Str));
            }
            if let Some(stat) = name.strip_prefix("stats.") {
                if !stat.is_empty() && !stat.contains('.') {
                    let i = match stats.iter().position(|s| s == stat) {
                        Some(i) => i,
                        None => {
                            stats.push(stat.to_string());
                            stats.len() - 1
                        }
                    };
                    return Ok((EVENT_NUMBERS.len() + i, Type::Num));
                }
            }
            let all = EVENT_NUMBERS.iter().map(|(n, _)| *n).chain(EVENT_STRINGS);
            Err(ExprError {
                span: span.clone(),
                message: format!("unknown event field `{name}`"),
                hint: Some(match closest(name, all) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => "event fields are seq, time, period, clock, kind, team, player, home, away, home_score, away_score, home_points, away_points, elapsed, seconds_remaining, side, odds.*, stats.NAME".into(),
                }),
            })
        };
        match expr::resolve(&ast, &mut lookup) {
            Ok((e, Type::Num)) => Some(e),
            Ok((_, Type::Str)) => {
                let what = if boolean { "a condition" } else { "a number" };
                let at = self.in_string(&s.span(), &(0..0));
                self.err_hint(
                    at,
                    format!("expected {what}, found a string"),
                    "compare strings with `==` or `!=`: kind == 'play'",
                );
                None
            }
            Err(e) => {
                self.expr_err(&s.span(), e);
                None
            }
        }
    }

    fn feature_expr(
        &mut self,
        s: &Sp<String>,
        ast: &Ast,
        var_of: &HashMap<String, usize>,
        groups: &HashMap<String, GroupBy>,
        derived: &[String],
    ) -> Option<Expr> {
        let mut lookup = |name: &str, span: &Range<usize>| -> Result<(usize, Type), ExprError> {
            if let Some(i) = var_of.get(name) {
                return Ok((*i, Type::Num));
            }
            Err(unknown_feature(name, span, var_of, groups, derived))
        };
        match expr::resolve(ast, &mut lookup) {
            Ok((e, Type::Num)) => Some(e),
            Ok((_, Type::Str)) => {
                let at = self.in_string(&s.span(), &(0..0));
                self.err(at, "expected a number, found a string");
                None
            }
            Err(e) => {
                self.expr_err(&s.span(), e);
                None
            }
        }
    }

    /// Derived features in an order where each comes after what it reads; a cycle is an error.
    fn derived_order(
        &mut self,
        spec: &PipelineSpec,
        asts: &[Option<Ast>],
        names: &[String],
        _groups: &HashMap<String, GroupBy>,
    ) -> Vec<usize> {
        let index: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let deps: Vec<Vec<(usize, Range<usize>)>> = asts
            .iter()
            .map(|a| {
                let mut refs = Vec::new();
                if let Some(a) = a {
                    a.names(&mut refs);
                }
                refs.into_iter()
                    .filter_map(|(n, s)| index.get(n.as_str()).map(|i| (*i, s)))
                    .collect()
            })
            .collect();
        // 0 = unvisited, 1 = on the stack, 2 = done.
        let mut state = vec![0u8; names.len()];
        let mut order = Vec::new();
        let mut reported = false;
        fn visit(
            i: usize,
            deps: &[Vec<(usize, Range<usize>)>],
            state: &mut [u8],
            order: &mut Vec<usize>,
            stack: &mut Vec<usize>,
        ) -> Option<Vec<usize>> {
            if state[i] == 2 {
                return None;
            }
            if state[i] == 1 {
                let from = stack.iter().position(|x| *x == i).unwrap_or(0);
                return Some(stack[from..].to_vec());
            }
            state[i] = 1;
            stack.push(i);
            for (d, _) in &deps[i] {
                if let Some(c) = visit(*d, deps, state, order, stack) {
                    return Some(c);
                }
            }
            stack.pop();
            state[i] = 2;
            order.push(i);
            None
        }
        for i in 0..names.len() {
            let mut stack = Vec::new();
            if let Some(cycle) = visit(i, &deps, &mut state, &mut order, &mut stack) {
                if !reported {
                    reported = true;
                    let first = cycle[0];
                    let mut path: Vec<&str> = cycle.iter().map(|c| names[*c].as_str()).collect();
                    path.push(&names[first]);
                    let span = deps[first]
                        .iter()
                        .find(|(d, _)| cycle.contains(d))
                        .map(|(_, s)| s.clone())
                        .unwrap_or(0..0);
                    let span = self.in_string(&spec.derived[first].expr.span(), &span);
                    self.err_hint(
                        span,
                        format!("derived features form a cycle: {}", path.join(" -> ")),
                        "a derived feature cannot depend on itself, directly or through others",
                    );
                }
                for c in cycle {
                    state[c] = 2;
                }
            }
        }
        order
    }

    fn model(
        &mut self,
        spec: &PipelineSpec,
        models: &dyn ModelCatalog,
        var_of: &HashMap<String, usize>,
        groups: &HashMap<String, GroupBy>,
        derived: &[String],
    ) -> Option<ModelPlan> {
        let m = spec.model.get();
        match (&m.name, &m.version, &m.expr) {
            (Some(name), Some(version), None) => {
                let inputs =
                    self.registry_inputs("model", name, version, models, var_of, groups, derived)?;
                Some(ModelPlan::Registry {
                    name: name.get().clone(),
                    version: version.get().clone(),
                    inputs,
                })
            }
            (None, None, Some(e)) => {
                let ast = self.parse_expr(e)?;
                self.feature_expr(e, &ast, var_of, groups, derived)
                    .map(|expr| ModelPlan::Formula { expr })
            }
            (Some(n), None, None) => {
                self.err(n.span(), "a registry model needs `version` beside `name`");
                None
            }
            (None, Some(v), None) => {
                self.err(v.span(), "a registry model needs `name` beside `version`");
                None
            }
            (None, None, None) => {
                self.err_hint(
                    self.src.table_header(spec.model.span()),
                    "[model] needs a registry model (`name`, `version`) or a formula (`expr`)",
                    "for example name = \"nfl_wp\", version = \"v1\"",
                );
                None
            }
            (_, _, Some(e)) => {
                self.err(
                    e.span(),
                    "[model] takes either `expr` or `name`/`version`, not both",
                );
                None
            }
        }
    }

    /// The variables feeding registry model `name/version`'s inputs, in its order; an error
    /// (about the `what`: "model", "shadow model") when it cannot load or reads a feature the
    /// pipeline does not produce.
    #[allow(clippy::too_many_arguments)]
    fn registry_inputs(
        &mut self,
        what: &str,
        name: &Sp<String>,
        version: &Sp<String>,
        models: &dyn ModelCatalog,
        var_of: &HashMap<String, usize>,
        groups: &HashMap<String, GroupBy>,
        derived: &[String],
    ) -> Option<Vec<usize>> {
        let wanted =
            match models.inputs(name.get(), version.get()) {
                Ok(w) => w,
                Err(e) => {
                    self.err_hint(
                    name.span(),
                    format!("{what} `{}/{}` cannot be loaded: {e}", name.get(), version.get()),
                    "models live in models/<name>/<version>/ (manifest.json, model.safetensors)",
                );
                    return None;
                }
            };
        let mut inputs = Vec::new();
        let mut missing = Vec::new();
        for w in &wanted {
            match var_of.get(w) {
                Some(i) => inputs.push(*i),
                None => missing.push(w.as_str()),
            }
        }
        let model = format!("{}/{}", name.get(), version.get());
        match missing[..] {
            [] => {}
            [w] => {
                let e = unknown_feature(w, &(0..0), var_of, groups, derived);
                self.err_hint(
                    name.span(),
                    format!("{what} `{model}` expects feature `{w}`, which this pipeline does not produce"),
                    e.hint.unwrap_or_else(|| "add a [[feature]] or [[derived]] with that name".into()),
                );
            }
            _ => self.err_hint(
                name.span(),
                format!(
                    "this pipeline does not produce {} of the {} features {what} `{model}` expects: {}",
                    missing.len(),
                    wanted.len(),
                    missing.iter().map(|w| format!("`{w}`")).collect::<Vec<_>>().join(", ")
                ),
                "add a [[feature]] or [[derived]] for each; the model's manifest.json lists its inputs",
            ),
        }
        Some(inputs)
    }

    /// `[model] shadow`: validated like a registry model, and not the model itself.
    fn shadow(
        &mut self,
        spec: &PipelineSpec,
        models: &dyn ModelCatalog,
        var_of: &HashMap<String, usize>,
        groups: &HashMap<String, GroupBy>,
        derived: &[String],
    ) -> Option<ShadowPlan> {
        let m = spec.model.get();
        let s = m.shadow.as_ref()?.get();
        let same = m.name.as_ref().is_some_and(|n| n.get() == s.name.get())
            && m.version
                .as_ref()
                .is_some_and(|v| v.get() == s.version.get());
        if same {
            self.err_hint(
                s.name.span(),
                format!(
                    "the shadow model `{}/{}` is the pipeline's model",
                    s.name.get(),
                    s.version.get()
                ),
                "a shadow is another model scored beside this one; name a different one",
            );
            return None;
        }
        let inputs = self.registry_inputs(
            "shadow model",
            &s.name,
            &s.version,
            models,
            var_of,
            groups,
            derived,
        )?;
        Some(ShadowPlan {
            name: s.name.get().clone(),
            version: s.version.get().clone(),
            inputs,
        })
    }
}

impl Planner<'_> {
    fn watch(&mut self, s: &Sp<String>, var_of: &HashMap<String, usize>) -> Option<Watch> {
        if s.get() == "prediction" {
            return Some(Watch::Prediction);
        }
        match var_of.get(s.get()) {
            Some(i) => Some(Watch::Var(*i)),
            None => {
                let mut sorted: Vec<&str> = var_of.keys().map(String::as_str).collect();
                sorted.sort_unstable();
                let names = sorted.into_iter().chain(["prediction"]);
                let hint = match closest(s.get(), names) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => "`prediction`, or a game-level feature or derived feature".into(),
                };
                self.err_hint(
                    s.span(),
                    format!(
                        "a detector watches `{}`, which this pipeline does not produce",
                        s.get()
                    ),
                    hint,
                );
                None
            }
        }
    }

    fn required(&mut self, d: &DetectorSpec, v: &Option<Sp<f64>>, key: &str) -> Option<f64> {
        match v {
            Some(x) if x.get().is_finite() && *x.get() > 0.0 => Some(*x.get()),
            Some(x) => {
                self.err(x.span(), format!("`{key}` must be a positive number"));
                None
            }
            None => {
                self.err(
                    d.kind.span(),
                    format!(
                        "a `{}` detector needs `{key}`",
                        detector_kind_name(*d.kind.get())
                    ),
                );
                None
            }
        }
    }

    /// `crit` must not be below `warn`.
    fn ordered(&mut self, d: &DetectorSpec, warn: Option<f64>, crit: Option<f64>) -> Option<()> {
        if let (Some(w), Some(c), Some(at)) = (warn, crit, d.crit.as_ref()) {
            if c < w {
                self.err(at.span(), format!("`crit` ({c}) is below `warn` ({w})"));
                return None;
            }
        }
        Some(())
    }

    fn detector(
        &mut self,
        d: &DetectorSpec,
        var_of: &HashMap<String, usize>,
    ) -> Option<DetectorPlan> {
        let health = matches!(
            d.kind.get(),
            DetectorKind::Sequence | DetectorKind::Score | DetectorKind::Staleness
        );
        let on = match &d.on {
            Some(s) if health => {
                self.err(
                    s.span(),
                    format!(
                        "a `{}` detector watches the feed itself and takes no `on`",
                        detector_kind_name(*d.kind.get())
                    ),
                );
                None
            }
            None if health => Some(Watch::Prediction),
            Some(s) => self.watch(s, var_of),
            None => {
                self.err_hint(
                    d.kind.span(),
                    "a detector needs `on`: what it watches",
                    "on = \"prediction\", or a feature's name",
                );
                None
            }
        };
        let rule = match d.kind.get() {
            DetectorKind::Zscore => {
                let alpha = match &d.alpha {
                    None => Some(0.1),
                    Some(a) if *a.get() > 0.0 && *a.get() <= 1.0 => Some(*a.get()),
                    Some(a) => {
                        self.err(a.span(), "`alpha` must be in (0, 1]");
                        None
                    }
                };
                let warn = self.required(d, &d.warn, "warn");
                let crit = self.required(d, &d.crit, "crit");
                self.ordered(d, warn, crit)?;
                Some(DetectorRule::Zscore {
                    alpha: alpha?,
                    warn: warn?,
                    crit: crit?,
                })
            }
            DetectorKind::Robust => {
                let count = match &d.count {
                    Some(c) if *c.get() >= 3 => *c.get(),
                    Some(c) => {
                        self.err(c.span(), "`count` must be at least 3");
                        return None;
                    }
                    None => 20,
                };
                let warn = self.required(d, &d.warn, "warn");
                let crit = self.required(d, &d.crit, "crit");
                self.ordered(d, warn, crit)?;
                Some(DetectorRule::Robust {
                    count,
                    warn: warn?,
                    crit: crit?,
                })
            }
            DetectorKind::Cusum => {
                let k = self.required(d, &d.k, "k");
                let h = self.required(d, &d.h, "h");
                Some(DetectorRule::Cusum {
                    target: d.target.as_ref().map(|t| *t.get()),
                    k: k?,
                    h: h?,
                })
            }
            DetectorKind::Jump => {
                let threshold = self.required(d, &d.threshold, "threshold");
                let window_ms = match &d.window {
                    Some(w) => self.duration(w, "window").map(|x| x.as_millis() as u64),
                    None => {
                        self.err(d.kind.span(), "a `jump` detector needs `window`");
                        None
                    }
                };
                Some(DetectorRule::Jump {
                    threshold: threshold?,
                    window_ms: window_ms?,
                })
            }
            DetectorKind::Divergence => {
                let threshold = self.required(d, &d.threshold, "threshold");
                let against = match &d.against {
                    Some(s) => self.watch(s, var_of),
                    None => {
                        self.err(d.kind.span(), "a `divergence` detector needs `against`");
                        None
                    }
                };
                Some(DetectorRule::Divergence {
                    threshold: threshold?,
                    against: against?,
                })
            }
            DetectorKind::Sequence => Some(DetectorRule::Sequence),
            DetectorKind::Score => Some(DetectorRule::Score),
            DetectorKind::Staleness => match &d.gap {
                Some(g) => self.duration(g, "gap").map(|g| DetectorRule::Staleness {
                    gap_ms: (g.as_millis() as u64).max(1),
                }),
                None => {
                    self.err(
                        d.kind.span(),
                        "a `staleness` detector needs `gap` (wall clock)",
                    );
                    None
                }
            },
        };
        let cooldown_ms = match &d.cooldown {
            Some(c) => self.duration(c, "cooldown")?.as_millis() as u64,
            None => 0,
        };
        Some(DetectorPlan {
            name: d.name.get().clone(),
            rule: rule?,
            on: on?,
            cooldown_ms,
            min_samples: d.min_samples.as_ref().map_or(10, |m| *m.get()),
        })
    }
}

fn detector_kind_name(k: DetectorKind) -> &'static str {
    match k {
        DetectorKind::Zscore => "zscore",
        DetectorKind::Robust => "robust",
        DetectorKind::Cusum => "cusum",
        DetectorKind::Jump => "jump",
        DetectorKind::Divergence => "divergence",
        DetectorKind::Sequence => "sequence",
        DetectorKind::Score => "score",
        DetectorKind::Staleness => "staleness",
    }
}

fn kind_name(k: WindowKind) -> &'static str {
    match k {
        WindowKind::Tumbling => "tumbling",
        WindowKind::Hopping => "hopping",
        WindowKind::Sliding => "sliding",
        WindowKind::Session => "session",
        WindowKind::GameClock => "game-clock",
        WindowKind::Events => "events",
        WindowKind::Possessions => "possessions",
        WindowKind::Game => "game",
    }
}

fn unknown_feature(
    name: &str,
    span: &Range<usize>,
    var_of: &HashMap<String, usize>,
    groups: &HashMap<String, GroupBy>,
    derived: &[String],
) -> ExprError {
    let (message, hint) = match groups.get(name) {
        Some(GroupBy::Team) => (
            format!("`{name}` is grouped by team: read `{name}.home` or `{name}.away`"),
            None,
        ),
        Some(GroupBy::Player) => (
            format!("`{name}` is grouped by player and cannot feed game-level features"),
            Some("aggregate over the game or a team instead".to_string()),
        ),
        _ if derived.iter().any(|d| d == name) => (
            format!("derived feature `{name}` could not be computed (see its own error)"),
            None,
        ),
        _ => {
            let all: BTreeMap<&str, ()> = var_of.keys().map(|k| (k.as_str(), ())).collect();
            (
                format!("unknown feature `{name}`"),
                Some(match closest(name, all.keys().copied()) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => "features are declared with [[feature]] or [[derived]]".into(),
                }),
            )
        }
    };
    ExprError {
        span: span.clone(),
        message,
        hint,
    }
}
