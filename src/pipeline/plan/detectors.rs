//! Anomaly detectors: what each watches, its thresholds and their order.

use super::*;

impl Planner<'_> {
    pub(super) fn watch(
        &mut self,
        s: &Sp<String>,
        var_of: &HashMap<String, usize>,
    ) -> Option<Watch> {
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

    pub(super) fn required(
        &mut self,
        d: &DetectorSpec,
        v: &Option<Sp<f64>>,
        key: &str,
    ) -> Option<f64> {
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
    pub(super) fn ordered(
        &mut self,
        d: &DetectorSpec,
        warn: Option<f64>,
        crit: Option<f64>,
    ) -> Option<()> {
        if let (Some(w), Some(c), Some(at)) = (warn, crit, d.crit.as_ref()) {
            if c < w {
                self.err(at.span(), format!("`crit` ({c}) is below `warn` ({w})"));
                return None;
            }
        }
        Some(())
    }

    pub(super) fn detector(
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
