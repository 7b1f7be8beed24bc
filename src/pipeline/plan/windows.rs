//! Windows and their aggregates: each window kind's required and forbidden keys, sizes
//! checked against the pipeline's retention.

use super::*;

impl Planner<'_> {
    pub(super) fn window(&mut self, w: &Sp<WindowSpec>, sport: Sport) -> Option<Window> {
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

    pub(super) fn aggregate(
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
