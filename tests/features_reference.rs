//! Every window/feature the engine keeps equals a brute-force recomputation, on random event
//! streams with games interleaved out of event-time order and late events, under both late
//! policies.
//!
//! The incremental side is the production chain: `Ingest` (order checks, late policy, window
//! assignment) into a differential `InputSession`, summed by `count_total`. The reference is
//! `features::offline::timeline`, which recomputes each game's features at every time from the
//! accepted events alone, by brute force.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use differential_dataflow::input::Input;
use differential_dataflow::operators::CountTotal;
use proptest::prelude::*;
use sideline::config::LatePolicy;
use sideline::event::{EventKind, GameEvent, GameKey, Sport};
use sideline::features::offline::{timeline, Timed};
use sideline::features::FeatureVec;
use sideline::source::ingest::{Ingest, Record};

/// One `count_total` output record.
type Update = ((GameKey, FeatureVec), u64, isize);

/// One step of a random feed: an event arrives, or the frontier advances.
#[derive(Clone, Debug)]
enum Step {
    Event(Box<GameEvent>),
    Advance(u64),
}

#[allow(clippy::too_many_arguments)]
fn event(
    game: usize,
    seq: u64,
    time: u64,
    home: u32,
    away: u32,
    kind: EventKind,
    stats: [i64; 4],
    team: bool,
) -> GameEvent {
    let mut s = BTreeMap::new();
    s.insert("down".to_string(), stats[0] as f64);
    s.insert("distance".to_string(), stats[1] as f64);
    s.insert("yards_to_goal".to_string(), stats[2] as f64);
    s.insert("yards_gained".to_string(), stats[3] as f64);
    GameEvent {
        sport: Sport::Nfl,
        game_id: format!("g{game}"),
        seq,
        event_time_ms: time,
        period: 1 + (seq % 5) as u32,
        clock_ms: (seq * 7919) % 900_000,
        kind,
        home: "HOM".into(),
        away: "AWY".into(),
        team: Some(if team { "HOM" } else { "AWY" }.into()),
        player: None,
        home_score: home,
        away_score: away,
        stats: s,
        odds: None,
        description: None,
    }
}

/// A game: events in seq order with non-decreasing times; scores mostly rise, sometimes fall
/// (a correction).
fn game_strategy(game: usize) -> impl Strategy<Value = Vec<GameEvent>> {
    let step = (
        1u64..3,                                                  // seq gap
        prop_oneof![Just(0u64), 1u64..5_000, 30_000u64..400_000], // time gap, incl. ties and window-sized jumps
        prop_oneof![4 => Just((0i32, 0i32)), 1 => Just((7, 0)), 1 => Just((0, 3)), 1 => Just((2, 0)), 1 => Just((-3, 0))],
        prop_oneof![3 => Just(EventKind::Play), 1 => Just(EventKind::Timeout), 1 => Just(EventKind::Clock)],
        (0i64..5, 0i64..20, 1i64..100, -10i64..40),
        any::<bool>(),
    );
    (0u64..2_000_000, prop::collection::vec(step, 0..35)).prop_map(move |(start, steps)| {
        let (mut seq, mut time, mut home, mut away) = (0u64, start, 0i32, 0i32);
        steps
            .into_iter()
            .map(|(gap, dt, (dh, da), kind, (d, dist, ytg, yds), team)| {
                seq += gap;
                time += dt;
                home = (home + dh).max(0);
                away = (away + da).max(0);
                event(
                    game,
                    seq,
                    time,
                    home as u32,
                    away as u32,
                    kind,
                    [d, dist, ytg, yds],
                    team,
                )
            })
            .collect()
    })
}

/// Games interleaved at random (each game keeps its order), with frontier advances between.
fn feed_strategy() -> impl Strategy<Value = Vec<Step>> {
    (1usize..5)
        .prop_flat_map(|n| (0..n).map(game_strategy).collect::<Vec<_>>())
        .prop_flat_map(|games| {
            let total: usize = games.iter().map(Vec::len).sum();
            (
                Just(games),
                prop::collection::vec(
                    (0usize..1000, prop::option::weighted(0.15, 0u64..600_000)),
                    total,
                ),
            )
        })
        .prop_map(|(games, picks)| {
            let mut cursors = vec![0usize; games.len()];
            let mut steps = Vec::new();
            let mut frontier = 0u64;
            for (pick, advance) in picks {
                let open: Vec<usize> = (0..games.len())
                    .filter(|g| cursors[*g] < games[*g].len())
                    .collect();
                let g = open[pick % open.len()];
                let ev = games[g][cursors[g]].clone();
                cursors[g] += 1;
                if let Some(a) = advance {
                    // Advance to somewhere around the latest event time: some later events fall behind.
                    frontier = frontier.max(ev.event_time_ms.saturating_sub(a));
                    steps.push(Step::Advance(frontier));
                }
                steps.push(Step::Event(Box::new(ev)));
            }
            steps
        })
}

/// The incremental path: Ingest -> InputSession -> count_total, on `workers` timely workers.
/// Returns each game's features after every time at which the output changed them.
fn incremental(
    steps: &[Step],
    policy: LatePolicy,
    lateness: u64,
    workers: usize,
) -> HashMap<GameKey, Vec<(u64, FeatureVec)>> {
    let out: Arc<Mutex<Vec<Update>>> = Arc::default();
    let steps = Arc::new(steps.to_vec());
    let out2 = out.clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let out = out2.clone();
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, coll) = scope.new_collection::<GameKey, FeatureVec>();
            let probe = timely::dataflow::ProbeHandle::new();
            use timely::dataflow::operators::Probe;
            coll.count_total()
                .inspect(move |x| out.lock().unwrap().push(x.clone()))
                .inner
                .probe_with(&probe);
            (input, probe)
        });
        // Worker 0 plays the feed; the others only step.
        if worker.index() == 0 {
            let mut ingest = Ingest::new(
                1 << 20,
                Duration::from_millis(lateness),
                Duration::from_secs(1),
                policy,
            );
            let mut updates = Vec::new();
            for (offset, step) in steps.iter().enumerate() {
                match step {
                    Step::Advance(f) => {
                        if *f > *input.time() {
                            input.advance_to(*f);
                        }
                    }
                    Step::Event(ev) => {
                        let payload = serde_json::to_vec(ev).unwrap();
                        let rec = Record {
                            topic: "t",
                            partition: 0,
                            offset: offset as i64,
                            timestamp_ms: None,
                            key: None,
                            payload: &payload,
                        };
                        let _ = ingest.accept(&rec, *input.time(), &mut updates);
                        for (g, t, u) in updates.drain(..) {
                            input.update_at(g, t, u);
                        }
                    }
                }
                input.flush();
                worker.step();
            }
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap();
    let mut by_game: HashMap<GameKey, BTreeMap<u64, FeatureVec>> = HashMap::new();
    let updates = out.lock().unwrap().clone();
    for ((game, v), t, diff) in &updates {
        let times = by_game.entry(game.clone()).or_default();
        if *diff > 0 {
            times.insert(*t, *v);
        } else {
            times.entry(*t).or_default();
        }
    }
    by_game
        .into_iter()
        .map(|(g, times)| {
            let mut line: Vec<(u64, FeatureVec)> = Vec::new();
            for (t, v) in times {
                if line.last().map(|l| l.1) != Some(v)
                    && !(line.is_empty() && v == FeatureVec::default())
                {
                    line.push((t, v));
                }
            }
            (g, line)
        })
        .filter(|(_, l)| !l.is_empty())
        .collect()
}

/// The reference: decide from the test's own frontier schedule and the partition's watermark
/// (the highest accepted event time minus the allowed lateness) which events are accepted and
/// at what time, then recompute every game's features from scratch.
fn reference(
    steps: &[Step],
    policy: LatePolicy,
    lateness: u64,
) -> HashMap<GameKey, Vec<(u64, FeatureVec)>> {
    let mut frontier = 0u64;
    let mut max_time: Option<u64> = None;
    let mut accepted: HashMap<GameKey, Vec<(GameEvent, u64)>> = HashMap::new();
    for step in steps {
        match step {
            Step::Advance(f) => frontier = frontier.max(*f),
            Step::Event(ev) => {
                let watermark = max_time.map_or(0, |m| m.saturating_sub(lateness));
                let floor = frontier.max(watermark);
                let time = match (ev.event_time_ms < floor, policy) {
                    (false, _) => ev.event_time_ms,
                    (true, LatePolicy::FoldIn) => floor,
                    (true, LatePolicy::DeadLetter) => continue,
                };
                max_time = max_time.max(Some(ev.event_time_ms));
                accepted
                    .entry(ev.key())
                    .or_default()
                    .push(((**ev).clone(), time));
            }
        }
    }
    accepted
        .into_iter()
        .map(|(g, evs)| {
            let timed: Vec<Timed<'_>> = evs
                .iter()
                .map(|(e, t)| Timed {
                    event: e,
                    time: *t,
                    ingest_ms: 0,
                })
                .collect();
            (g, timeline(&timed))
        })
        .filter(|(_, l)| !l.is_empty())
        .collect()
}

/// Allowed lateness: none, some, or more than any gap in the feeds.
fn lateness() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 1u64..200_000, Just(u64::MAX / 4)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn windows_match_brute_force_dead_letter(steps in feed_strategy(), lateness in lateness()) {
        prop_assert_eq!(incremental(&steps, LatePolicy::DeadLetter, lateness, 1), reference(&steps, LatePolicy::DeadLetter, lateness));
    }

    #[test]
    fn windows_match_brute_force_fold_in(steps in feed_strategy(), lateness in lateness()) {
        prop_assert_eq!(incremental(&steps, LatePolicy::FoldIn, lateness, 1), reference(&steps, LatePolicy::FoldIn, lateness));
    }

    #[test]
    fn windows_match_brute_force_on_two_workers(steps in feed_strategy(), lateness in lateness()) {
        prop_assert_eq!(incremental(&steps, LatePolicy::FoldIn, lateness, 2), reference(&steps, LatePolicy::FoldIn, lateness));
    }
}
