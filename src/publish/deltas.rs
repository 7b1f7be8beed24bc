//! From a version's decided values to numbered deltas and alerts: what changed, from what,
//! to what, and which inputs moved the prediction most.

use super::*;

/// The live version's deltas for one completed time, numbered, each with the Kafka
/// timestamp of the event that caused it (none for a window expiring later).
pub(super) fn number(
    p: &mut PipelineOut,
    time: u64,
    cause: DeltaCause,
    values: Vec<Valued>,
) -> Numbered {
    let decided = p.live.decide(values);
    if p.delivered_through.is_some_and(|t| time <= t) {
        return Numbered::default();
    }
    let mut out = Numbered {
        deltas: Vec::with_capacity(decided.len()),
        ingest: Vec::with_capacity(decided.len()),
    };
    for (v, previous) in decided {
        p.seq += 1;
        debug_assert_eq!(v.time, time);
        out.ingest
            .push((v.event_at == time && v.ingest_ms > 0).then_some(v.ingest_ms));
        let (d, attributions) = delta(p.seq, &p.live, &v, previous.as_ref(), cause);
        out.deltas.push(d);
        // The next delta of this game explains this row again: keep what it would compute.
        if let Some(a) = attributions.filter(|_| v.weights.is_empty()) {
            if let Some(published) = p.live.published.get_mut(&v.game) {
                published.attributions = Some(a);
            }
        }
    }
    out
}

/// The delta from `previous` to `v`, with the model's attributions of `v` (when it explains
/// itself).
pub(super) fn delta(
    seq: u64,
    version: &Version,
    v: &Valued,
    previous: Option<&Published>,
    cause: DeltaCause,
) -> (Delta, Option<Vec<f64>>) {
    let changed = match previous {
        None => Vec::new(),
        Some(prev) => {
            // Published by this version (nearly always): the same names at the same places.
            let same = Arc::ptr_eq(&prev.names, &version.names);
            version
                .names
                .iter()
                .zip(&v.vars)
                .enumerate()
                .filter_map(|(i, (name, to))| {
                    let from = if same {
                        prev.vars.get(i).copied()
                    } else {
                        let at = prev.names.iter().position(|n| n == name);
                        at.map(|i| prev.vars[i])
                    };
                    (from != Some(*to)).then(|| FeatureChange {
                        feature: name.clone(),
                        from,
                        to: *to,
                    })
                })
                .collect()
        }
    };
    // A new version's first delta moved because the version changed: no contributors.
    let before = previous.filter(|_| cause == DeltaCause::Moved);
    let Explained {
        contributors,
        interval,
        attributions,
    } = explain(version, v, before);
    let delta = Delta {
        seq,
        id: crate::delta::delta_id(
            &version.plan.name,
            version.plan.version,
            v.game.sport,
            &v.game.game_id,
            v.time,
            seq,
        ),
        pipeline: version.plan.name.clone(),
        version: version.plan.version,
        sport: v.game.sport,
        game_id: v.game.game_id.clone(),
        event_time_ms: v.time,
        event_seq: v.event_seq,
        old: previous.map(|p| p.value),
        new: v.value,
        model_version: version.model_version.clone(),
        cause,
        changed,
        contributors,
        interval,
    };
    (delta, attributions)
}

/// How many contributors a delta names.
const CONTRIBUTORS: usize = 3;

/// What the model says of the move from `previous` to `v`: the inputs whose attribution moved
/// most (when both were computed by this version's features), the ensemble's interval, and
/// `v`'s attributions. An online ensemble explains both rows with the weights `v` was valued
/// with, so the attributions sum to `v`'s output and a move names the inputs, not the
/// re-weighting. Otherwise the previous row's attributions, when a delta computed them, are
/// not computed again (a row's attributions do not depend on its batch).
pub(super) fn explain(version: &Version, v: &Valued, previous: Option<&Published>) -> Explained {
    let comparable =
        previous.filter(|p| Arc::ptr_eq(&p.names, &version.names) || p.names == version.names);
    let known = comparable
        .filter(|_| v.weights.is_empty())
        .and_then(|p| p.attributions.as_deref());
    let rows: Vec<&[f64]> = match (comparable, known) {
        (Some(p), None) => vec![&p.vars, &v.vars],
        _ => vec![&v.vars],
    };
    let Some((mut explained, inputs)) = version.model.attribute(&rows, &v.weights) else {
        return Explained::default();
    };
    let now = explained.pop().expect("one per row");
    let interval = now.interval.filter(|(lo, hi)| lo != hi);
    let before = known.or(explained.first().map(|b| b.attributions.as_slice()));
    // Each input's move, by index: only the kept few get their name cloned.
    let mut moves: Vec<(usize, f64)> = match (comparable, before) {
        (Some(_), Some(before)) => before
            .iter()
            .zip(&now.attributions)
            .map(|(before, after)| ((after - before) * 1e6).round() / 1e6)
            .enumerate()
            .filter(|(_, by)| *by != 0.0)
            .collect(),
        _ => Vec::new(),
    };
    // Largest move first; ties by name, so the order never depends on anything else.
    moves.sort_by(|(i, a), (j, b)| {
        b.abs()
            .total_cmp(&a.abs())
            .then_with(|| inputs[*i].cmp(&inputs[*j]))
    });
    let contributors = moves
        .iter()
        .take(CONTRIBUTORS)
        .map(|(i, by)| crate::delta::Contributor {
            feature: Arc::from(inputs[*i].as_str()),
            by: *by,
        })
        .collect();
    Explained {
        contributors,
        interval,
        attributions: Some(now.attributions),
    }
}

/// What [`explain`] says of a delta, and the model's attributions of its row.
#[derive(Default)]
pub(super) struct Explained {
    contributors: Vec<crate::delta::Contributor>,
    interval: Option<(f64, f64)>,
    attributions: Option<Vec<f64>>,
}
