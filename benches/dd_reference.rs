//! The engine's feature path against a hand-written differential-dataflow program computing the
//! same windows (issue 7, part 3): the ratio between the two is the engine's overhead to drive
//! down.
//!
//! Both sides read the same events, already decoded `GameEvent` structs in memory (the 32
//! bundled NFL games, replicated with shifted game ids): no Kafka, no JSON, no order checks, no
//! model, no deltas. Both feed one timely input the same way the engine does: every update at
//! its event's own time, and every `BATCH` events the input advanced to the latest event time
//! (the watermark: events arrive in time order), flushed, and the workers stepped until
//! caught up. With 1 and 2 workers
//! (games dealt to workers by game index, each worker owning its games' window state).
//!
//! - **Reference** (hand-written): the features of `pipelines/nfl_win_probability.toml` coded
//!   directly. The six "latest value" features (`score_diff`, `seconds_remaining`,
//!   `possession`, `down`, `distance`, `yards_to_goal`) plus the game's latest seq and time are
//!   one record per game, inserted at the event's time and the previous one retracted, then
//!   arranged by game. The windowed counts and sums (`home_points_5m`, `away_points_5m`:
//!   sliding 5 minutes; `plays_10`, `yards_10`: last 10 plays) carry `(count, sum)` in the
//!   difference type (insert at t, retract at t + 5 min or when the 11th play arrives) and are
//!   kept by `count_total`: O(1) per update. Games are interned to a `u32`.
//! - **Engine**: sideline's own path, `GameAssigner` (window assignment from the compiled
//!   plan: expressions interpreted, filters evaluated; windows that change only at events
//!   aggregated in place and sent as facts) and `slot_values` (a differential `reduce` over
//!   `(Slot, Member)` for the windows that also change with time, here the two sliding sums),
//!   exactly as `src/engine` runs them.
//!
//! What differs, honestly: the engine's keys are `Slot { game: u64, Entity, feature }`, the
//! reference's `(u32, u8)`; the engine sends one fact per changed value (each latest value, the
//! game's latest seq, Kafka time and effective time: about 14 updates per event) where the
//! reference sends one record per game; the engine's `reduce` revisits a slot's members and
//! handles any aggregate (mean, stddev, distinct, ...) where the reference can only count and
//! sum; the engine computes the `events` window's count and sum from the members it holds
//! (the reference: `count_total`); the engine evaluates its filters and value expressions
//! through an interpreter. Both compute the same numbers: a final check compares every game's
//! windowed and latest values.
//!
//! Run with: cargo bench --bench dd_reference [-- COPIES]   (default 20 copies = 117k events;
//! each side runs DD_REFERENCE_ROUNDS times, default 7, and the median is reported)

/// The binary's allocator (`src/main.rs`), so the figures are what it runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::operators::CountTotal;
use sideline::dataflow::features::slot_values;
use sideline::event::{EventKind, GameEvent};
use sideline::pipeline::plan::Plan;
use sideline::pipeline::window::{
    game_id, seconds_remaining, Entity, Fact, GameAssigner, Slot, Updates,
};
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::ProbeHandle;

/// Updates fed to the dataflow by each side (for the per-event figure).
static REFERENCE_UPDATES: AtomicUsize = AtomicUsize::new(0);
static ENGINE_UPDATES: AtomicUsize = AtomicUsize::new(0);

/// Events fed between two "flush and step until caught up".
const BATCH: usize = 1024;
/// The sliding window of `home_points_5m` / `away_points_5m`.
const FIVE_MINUTES: u64 = 5 * 60 * 1000;
/// The events window of `plays_10` / `yards_10`.
const LAST_PLAYS: usize = 10;

/// Window ids in the reference's `(game, window)` keys.
const HOME_POINTS: u8 = 0;
const AWAY_POINTS: u8 = 1;
const PLAYS: u8 = 2;

/// The latest-value features of one game, with its latest seq and time.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
struct Latest {
    score_diff: i64,
    seconds_remaining: i64,
    possession: i64,
    down: i64,
    distance: i64,
    yards_to_goal: i64,
    seq: u64,
    time: u64,
}

fn latest(ev: &GameEvent) -> Latest {
    let possession = match ev.team.as_deref() {
        Some(t) if t == ev.home => 1,
        Some(t) if t == ev.away => -1,
        _ => 0,
    };
    Latest {
        score_diff: ev.home_score as i64 - ev.away_score as i64,
        seconds_remaining: seconds_remaining(ev.sport, ev.period, ev.clock_ms),
        possession,
        down: ev.stat("down").round() as i64,
        distance: ev.stat("distance").round() as i64,
        yards_to_goal: ev.stat("yards_to_goal").round() as i64,
        seq: ev.seq,
        time: ev.event_time_ms,
    }
}

/// One game's state in the reference's input driver.
#[derive(Default)]
struct RefGame {
    latest: Option<Latest>,
    score: (u32, u32),
    /// Yards of the last plays, oldest first.
    plays: VecDeque<i64>,
}

/// Accumulated differences per record, as `inspect` sees them.
type Seen<D> = Rc<RefCell<HashMap<D, isize>>>;
/// The reference's two inputs: latest values per game, and `(count, sum)` per window.
type Inputs = (
    InputSession<u64, (u32, Latest), isize>,
    InputSession<u64, (u32, u8), (isize, i64)>,
);

/// Final values per game index: the latest record and `(count, sum)` per window id.
type Finals = HashMap<u32, (Option<Latest>, [(isize, i64); 3])>;

struct Run {
    events_per_s: f64,
}

/// The hand-written program. With `finals`, also collects every game's final values.
fn reference(
    events: Arc<Vec<(u32, GameEvent)>>,
    workers: usize,
    finals: Option<Arc<Mutex<Finals>>>,
) -> Run {
    let n = events.len();
    let start = Instant::now();
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let probe = ProbeHandle::new();
        let out_latest: Seen<(u32, Latest)> = Rc::default();
        let out_windows: Seen<((u32, u8), (isize, i64))> = Rc::default();
        let collect = finals.is_some();
        let (mut latest_in, mut window_in): Inputs = worker.dataflow::<u64, _, _>(|scope| {
            let (latest_in, latest) = scope.new_collection::<(u32, Latest), isize>();
            let (window_in, windows) = scope.new_collection::<(u32, u8), (isize, i64)>();
            let arranged = latest.arrange_by_key();
            let totals = windows.count_total();
            if collect {
                let (l, w) = (Rc::clone(&out_latest), Rc::clone(&out_windows));
                arranged
                    .as_collection(|k, v| (*k, *v))
                    .inner
                    .inspect(move |(x, _, d)| *l.borrow_mut().entry(*x).or_insert(0) += d)
                    .probe_with(&probe);
                totals
                    .inner
                    .inspect(move |(x, _, d)| *w.borrow_mut().entry(*x).or_insert(0) += d)
                    .probe_with(&probe);
            } else {
                arranged.stream.probe_with(&probe);
                totals.inner.probe_with(&probe);
            }
            (latest_in, window_in)
        });
        let mut games: HashMap<u32, RefGame> = HashMap::new();
        let mut fed = 0usize;
        let mut fed_updates = 0usize;
        for (g, ev) in events.iter() {
            let t = ev.event_time_ms;
            if *g as usize % peers == index {
                let game = games.entry(*g).or_default();
                // Latest values: this event's record replaces the previous one.
                let now = latest(ev);
                if let Some(old) = game.latest.replace(now) {
                    latest_in.update_at((*g, old), t, -1);
                    fed_updates += 1;
                }
                latest_in.update_at((*g, now), t, 1);
                fed_updates += 1;
                // Points in the last 5 minutes (filter: points != 0).
                let (hp, ap) = (
                    ev.home_score as i64 - game.score.0 as i64,
                    ev.away_score as i64 - game.score.1 as i64,
                );
                game.score = (ev.home_score, ev.away_score);
                for (w, p) in [(HOME_POINTS, hp), (AWAY_POINTS, ap)] {
                    if p != 0 {
                        window_in.update_at((*g, w), t, (1, p));
                        window_in.update_at((*g, w), t + FIVE_MINUTES, (-1, -p));
                        fed_updates += 2;
                    }
                }
                // The last 10 plays: count and yards (filter: kind == 'play').
                if ev.kind == EventKind::Play {
                    let yards = ev.stat("yards_gained").round() as i64;
                    window_in.update_at((*g, PLAYS), t, (1, yards));
                    fed_updates += 1;
                    game.plays.push_back(yards);
                    if game.plays.len() > LAST_PLAYS {
                        let old = game.plays.pop_front().expect("over the window");
                        window_in.update_at((*g, PLAYS), t, (-1, -old));
                        fed_updates += 1;
                    }
                }
            }
            fed += 1;
            if fed.is_multiple_of(BATCH) {
                latest_in.advance_to(t);
                window_in.advance_to(t);
                latest_in.flush();
                window_in.flush();
                worker.step_while(|| probe.less_than(latest_in.time()));
            }
        }
        REFERENCE_UPDATES.fetch_add(fed_updates, Ordering::Relaxed);
        latest_in.close();
        window_in.close();
        while !probe.done() {
            worker.step();
        }
        if let Some(finals) = &finals {
            let mut f = finals.lock().unwrap();
            for ((g, v), d) in out_latest.borrow().iter() {
                if *d > 0 {
                    f.entry(*g).or_insert((None, [(0, 0); 3])).0 = Some(*v);
                }
            }
            for (((g, w), acc), d) in out_windows.borrow().iter() {
                if *d > 0 {
                    f.entry(*g).or_insert((None, [(0, 0); 3])).1[*w as usize] = *acc;
                }
            }
        }
    })
    .expect("timely runs");
    let elapsed = start.elapsed();
    Run {
        events_per_s: n as f64 / elapsed.as_secs_f64(),
    }
}

/// Final slot values of the engine: slot -> value, for slots present at the end.
type EngineFinals = HashMap<Slot, f64>;

/// sideline's own feature path. With `finals`, also collects every slot's final value.
fn engine(
    events: Arc<Vec<(u32, GameEvent)>>,
    plan: Arc<Plan>,
    workers: usize,
    finals: Option<Arc<Mutex<EngineFinals>>>,
) -> Run {
    let n = events.len();
    let start = Instant::now();
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let probe = ProbeHandle::new();
        let out: Rc<RefCell<HashMap<(Slot, u64), isize>>> = Rc::default();
        let collect = finals.is_some();
        let plan2 = Arc::clone(&plan);
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, slots) = slot_values(scope, &plan2);
            if collect {
                let o = Rc::clone(&out);
                slots
                    .inner
                    .inspect(move |(fact, _, d)| {
                        if let Fact::Value(slot, v) = fact {
                            *o.borrow_mut()
                                .entry((slot.clone(), v.0.to_bits()))
                                .or_insert(0) += d;
                        }
                    })
                    .probe_with(&probe);
            } else {
                slots.inner.probe_with(&probe);
            }
            input
        });
        let mut games: HashMap<u32, GameAssigner> = HashMap::new();
        let mut updates = Updates::default();
        let mut fed = 0usize;
        let mut fed_updates = 0usize;
        for (g, ev) in events.iter() {
            let t = ev.event_time_ms;
            if *g as usize % peers == index {
                games
                    .entry(*g)
                    .or_insert_with(|| GameAssigner::new(&plan, ev.key()))
                    .apply(&plan, ev, t, t, &mut updates);
                fed_updates += updates.members.len() + updates.facts.len();
                input.feed(&mut updates);
            }
            fed += 1;
            if fed.is_multiple_of(BATCH) {
                input.advance_to(t);
                input.flush();
                worker.step_while(|| probe.less_than(input.time()));
            }
        }
        ENGINE_UPDATES.fetch_add(fed_updates, Ordering::Relaxed);
        input.close();
        while !probe.done() {
            worker.step();
        }
        if let Some(finals) = &finals {
            let mut f = finals.lock().unwrap();
            for ((slot, bits), d) in out.borrow().iter() {
                if *d > 0 {
                    f.insert(slot.clone(), f64::from_bits(*bits));
                }
            }
        }
    })
    .expect("timely runs");
    let elapsed = start.elapsed();
    Run {
        events_per_s: n as f64 / elapsed.as_secs_f64(),
    }
}

/// Compares every game's final values on both sides; returns (values compared, mismatches).
fn compare(
    plan: &Plan,
    games: &[String],
    reference: &Finals,
    engine: &EngineFinals,
) -> (usize, Vec<String>) {
    let feature = |name: &str| {
        plan.features
            .iter()
            .position(|f| f.name == name)
            .unwrap_or_else(|| panic!("the NFL pipeline has feature {name}")) as u32
    };
    let mut compared = 0;
    let mut bad = Vec::new();
    for (g, (latest, windows)) in reference {
        let key = sideline::event::GameKey {
            sport: sideline::event::Sport::Nfl,
            game_id: games[*g as usize].clone(),
        };
        let value = |name: &str| {
            engine
                .get(&Slot {
                    game: game_id(&key),
                    entity: Entity::Game,
                    feature: feature(name),
                })
                .copied()
        };
        let l = latest.expect("every game has a latest event");
        let windowed = |acc: (isize, i64), sum: bool| match acc {
            (0, _) => None,
            (c, s) => Some(if sum { s as f64 } else { c as f64 }),
        };
        let checks = [
            ("score_diff", Some(l.score_diff as f64)),
            ("seconds_remaining", Some(l.seconds_remaining as f64)),
            ("possession", Some(l.possession as f64)),
            ("down", Some(l.down as f64)),
            ("distance", Some(l.distance as f64)),
            ("yards_to_goal", Some(l.yards_to_goal as f64)),
            (
                "home_points_5m",
                windowed(windows[HOME_POINTS as usize], true),
            ),
            (
                "away_points_5m",
                windowed(windows[AWAY_POINTS as usize], true),
            ),
            ("plays_10", windowed(windows[PLAYS as usize], false)),
            ("yards_10", windowed(windows[PLAYS as usize], true)),
        ];
        for (name, want) in checks {
            compared += 1;
            let got = value(name);
            if got != want {
                bad.push(format!(
                    "{}: {name} engine {got:?} reference {want:?}",
                    key.game_id
                ));
            }
        }
    }
    (compared, bad)
}

fn main() {
    let copies: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let lines = sideline::demo::replicate(&sideline::demo::fixture_events(), copies, 0);
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut names = Vec::new();
    let events: Vec<(u32, GameEvent)> = lines
        .iter()
        .map(|l| {
            let ev: GameEvent = serde_json::from_str(l).expect("replicated fixture decodes");
            let next = ids.len() as u32;
            let g = *ids.entry(ev.game_id.clone()).or_insert_with(|| {
                names.push(ev.game_id.clone());
                next
            });
            (g, ev)
        })
        .collect();
    let events = Arc::new(events);
    let plan = Arc::new(
        sideline::pipeline::plan::plan(
            "nfl_win_probability.toml",
            sideline::pipeline::DEFAULT_PIPELINE.1,
            &sideline::pipeline::Registry::new(None),
        )
        .expect("the shipped pipeline compiles"),
    );

    println!(
        "dd_reference: the NFL pipeline's {} windowed/latest features, {} events ({} games, \
         decoded in memory), batches of {BATCH} events; isolates window state upkeep only \
         (no Kafka, JSON, model or deltas)",
        plan.features.len(),
        events.len(),
        names.len()
    );

    // Same numbers on both sides (untimed, on the bundled games once).
    {
        let small: Arc<Vec<(u32, GameEvent)>> = Arc::new(
            events
                .iter()
                .filter(|(g, _)| names[*g as usize].ends_with("-0"))
                .cloned()
                .collect(),
        );
        let rf = Arc::new(Mutex::new(Finals::new()));
        let ef = Arc::new(Mutex::new(EngineFinals::new()));
        reference(Arc::clone(&small), 2, Some(Arc::clone(&rf)));
        engine(
            Arc::clone(&small),
            Arc::clone(&plan),
            2,
            Some(Arc::clone(&ef)),
        );
        println!(
            "  updates fed to the dataflow per event: reference {:.1}, engine {:.1}",
            REFERENCE_UPDATES.load(Ordering::Relaxed) as f64 / small.len() as f64,
            ENGINE_UPDATES.load(Ordering::Relaxed) as f64 / small.len() as f64
        );
        let (n, bad) = compare(&plan, &names, &rf.lock().unwrap(), &ef.lock().unwrap());
        println!(
            "  check: final values of {} games, {n} values compared, {} differ",
            rf.lock().unwrap().len(),
            bad.len()
        );
        for b in bad.iter().take(10) {
            println!("    {b}");
        }
    }

    println!(
        "  {:<34} {:>12} {:>22} {:>8}",
        "workers", "median ev/s", "range over rounds", "ratio"
    );
    // For profiling one side: DD_REFERENCE_SIDE=engine|reference, DD_REFERENCE_WORKERS=1.
    let side = std::env::var("DD_REFERENCE_SIDE").unwrap_or_default();
    let workers: Vec<usize> = std::env::var("DD_REFERENCE_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .map_or(vec![1, 2], |w| vec![w]);
    // Each side runs `rounds` times, alternating, and the median is reported: one run of this
    // size takes 50-120 ms, and a single one varied by a third between invocations.
    let rounds: usize = std::env::var("DD_REFERENCE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(7)
        .max(1);
    for workers in workers {
        let mut r = Vec::new();
        let mut e = Vec::new();
        for _ in 0..rounds {
            if side != "engine" {
                r.push(reference(Arc::clone(&events), workers, None).events_per_s);
            }
            if side != "reference" {
                e.push(engine(Arc::clone(&events), Arc::clone(&plan), workers, None).events_per_s);
            }
        }
        let r = median(&mut r);
        let e = median(&mut e);
        if let Some((mid, lo, hi)) = r {
            println!(
                "  {:<34} {:>12.0} {:>22}",
                format!("reference, {workers} worker(s)"),
                mid,
                format!("{lo:.0}-{hi:.0}")
            );
        }
        if let Some((mid, lo, hi)) = e {
            let ratio = r.map_or(String::from("-"), |r| format!("{:.3}", mid / r.0));
            println!(
                "  {:<34} {:>12.0} {:>22} {:>8}",
                format!("engine (assign + reduce), {workers}"),
                mid,
                format!("{lo:.0}-{hi:.0}"),
                ratio
            );
        }
    }
    println!("  ratio = engine median / reference median (1.00 = no overhead)");
}

/// The median, lowest and highest of `xs`; none when empty.
fn median(xs: &mut [f64]) -> Option<(f64, f64, f64)> {
    xs.sort_by(f64::total_cmp);
    let mid = *xs.get(xs.len() / 2)?;
    Some((mid, xs[0], xs[xs.len() - 1]))
}
