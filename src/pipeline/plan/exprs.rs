//! Filters, values and derived features: parsed, type-checked against the event and the
//! features, and derived features ordered so each reads only those before it.

use super::*;

impl Planner<'_> {
    pub(super) fn event_expr(
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

    pub(super) fn feature_expr(
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
    pub(super) fn derived_order(
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
}

pub(super) fn unknown_feature(
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
