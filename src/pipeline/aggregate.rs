//! Aggregates over a slot's window members, sorted by member (liveness markers first, then
//! values by event seq), each with its multiplicity: as the dataflow's `reduce` sees them, and
//! as the assigner holds the members of windows that change only at events.

use super::plan::Agg;
use super::window::Member;

/// The aggregate of `members`, or `None` when the window is empty, or, for a `session`
/// window, when no liveness marker is left (the session closed; its members are retracted
/// only when the next one starts): the feature then takes its default.
pub fn aggregate<'m, I>(agg: Agg, session: bool, members: I) -> Option<f64>
where
    I: DoubleEndedIterator<Item = (&'m Member, isize)> + Clone,
{
    let mut alive = 0isize;
    let mut n = 0isize;
    for (m, c) in members.clone() {
        match m {
            Member::Alive => alive += c,
            Member::Value { .. } => n += c,
        }
    }
    if n <= 0 || (session && alive <= 0) {
        return None;
    }
    // Values in event order, each repeated by its multiplicity.
    let values = members.filter_map(|(m, c)| match m {
        Member::Value { value, .. } => Some((value.0, c.max(0) as usize)),
        Member::Alive => None,
    });
    let count = n as f64;
    Some(match agg {
        Agg::Count => count,
        Agg::Sum => values.map(|(v, c)| v * c as f64).sum(),
        Agg::Rate { minutes } => values.map(|(v, c)| v * c as f64).sum::<f64>() / minutes,
        Agg::Mean => values.map(|(v, c)| v * c as f64).sum::<f64>() / count,
        Agg::Min => values.map(|(v, _)| v).fold(f64::INFINITY, f64::min),
        Agg::Max => values.map(|(v, _)| v).fold(f64::NEG_INFINITY, f64::max),
        Agg::First => values.map(|(v, _)| v).next().unwrap_or(0.0),
        Agg::Last => values.map(|(v, _)| v).next_back().unwrap_or(0.0),
        Agg::Stddev => {
            let vals: Vec<(f64, usize)> = values.collect();
            let mean = vals.iter().map(|(v, c)| v * *c as f64).sum::<f64>() / count;
            let var = vals
                .iter()
                .map(|(v, c)| (v - mean) * (v - mean) * *c as f64)
                .sum::<f64>()
                / count;
            var.sqrt()
        }
        Agg::Distinct => {
            let mut vals: Vec<u64> = values.map(|(v, _)| v.to_bits()).collect();
            vals.sort_unstable();
            vals.dedup();
            vals.len() as f64
        }
        Agg::Ewma { alpha } => {
            let mut acc: Option<f64> = None;
            for (v, c) in values {
                for _ in 0..c {
                    acc = Some(match acc {
                        None => v,
                        Some(a) => alpha * v + (1.0 - alpha) * a,
                    });
                }
            }
            acc.unwrap_or(0.0)
        }
    })
}
