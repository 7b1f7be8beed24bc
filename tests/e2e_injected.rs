//! Detection quality on real games (issue 5): the 32 bundled NFL games with anomalies injected
//! at known places, through the engine on librdkafka's mock cluster, scored by precision and
//! recall per detector.
//!
//! * **Swings** (detector `swing`: `jump` on the prediction, threshold 0.2, window 3m): in
//!   the even-numbered games (sorted by id), a `timeout` event 1 ms after a play of the 2nd
//!   or 3rd quarter gives the home team 14 points without a play, and the home team keeps
//!   them for the rest of the game (its later events carry the score + 14). The place is
//!   chosen where a swing of the size can show: the model (the deltas of a run of the clean
//!   fixture) is between 0.1 and 0.7 and has moved less than 0.15 in the 3 minutes before,
//!   so no swing alert of the game is open. 12 of the 16 games have such a place (the others
//!   are led by the home team far all along) and get a swing.
//! * **Diverging odds** (detector `market`: `divergence` of the prediction against
//!   `market_prob`, the latest `odds` quote's implied home probability, threshold 0.3).
//!   The fixture has no odds, so this test makes the market up, and the construction decides
//!   what precision can mean: every game gets a quote at kickoff and after every event at
//!   whose time the model published a change, quoting the model's own value (the deltas of a
//!   run of the swung feed without odds) plus seeded noise of at most ±0.03. That market
//!   disagrees with the model by the noise plus the publishing epsilon (plus, until the next
//!   quote, what a window expiring between events moves it), far under the threshold. In each odd-numbered game, one quote (in the 2nd to 4th quarter, where
//!   the model is at least 0.75 or at most 0.25) is replaced by the opposite, `1 - p`: the
//!   market disagrees by at least 0.5 until the next quote. So the divergence figures check
//!   that the feature pipes the quotes through and that the detector fires at each
//!   disagreement and nowhere else; they say nothing about real markets.
//!
//! Each inserted event clones the game's event before it (team, clock, down and distance) so
//! that only its kind, score or quote differ, and takes the next seq (the game's later seqs
//! move up by one; event time never falls).
//!
//! An injection is **found** when the detector opens an alert for its game with an opening
//! event time in `[t, t + TOLERANCE_MS]`, `t` the injected event's time; an opened alert is a
//! **hit** when it is such an alert for some injection. Precision = hits / alerts opened,
//! recall = injections found / injections.
//!
//! The swing detector's raw precision is bounded by the real games' own swings (the clean
//! feed opens 88 swing alerts, against 12 injections, so about 0.15): it is printed and only
//! floored at 0.1. The asserted precision (1.0) is restricted to the alerts the real games
//! do not explain: set aside are the alerts the clean feed also opens (same game, opened
//! within `TOLERANCE_MS`) and those in a swing game after its injection (beyond the
//! tolerance), since keeping the +14 makes the rest of that game another game. Every alert
//! left must be at an injection: the inserted events raise nothing anywhere else.

mod common;

use std::collections::BTreeMap;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sideline::alert::{Alert, AlertState};
use sideline::delta::Delta;
use sideline::event::{EventKind, GameEvent, OddsQuote};

/// An alert counts for an injection when it opens this long after it at most (event time).
const TOLERANCE_MS: u64 = 60_000;
/// Points the home team gets from nothing.
const SWING_POINTS: u32 = 14;
/// Half-width of the noise of the made-up market around the model.
const NOISE: f64 = 0.03;
const SEED: u64 = 5;

const DETECTORS: &str = r#"
[[feature]]
name = "market_prob"
filter = "kind == 'odds'"
value = "odds.home_prob"
aggregate = "last"
window = { kind = "events", count = 1 }

[[detector]]
name = "swing"
kind = "jump"
on = "prediction"
threshold = 0.2
window = "3m"

[[detector]]
name = "market"
kind = "divergence"
on = "prediction"
against = "market_prob"
threshold = 0.3
"#;

/// An injected anomaly: its game and event time.
#[derive(Clone, Debug)]
struct Injection {
    game: String,
    at: u64,
}

/// The fixture's events per game, in seq order.
fn by_game(events: &[GameEvent]) -> BTreeMap<String, Vec<GameEvent>> {
    let mut games: BTreeMap<String, Vec<GameEvent>> = BTreeMap::new();
    for e in events {
        games.entry(e.game_id.clone()).or_default().push(e.clone());
    }
    for evs in games.values_mut() {
        evs.sort_by_key(|e| e.seq);
    }
    games
}

/// Every game's events as one feed in event-time order, each game's seqs renumbered from its
/// first without a gap (inserted events took the seq after the one they follow).
fn feed(games: &BTreeMap<String, Vec<GameEvent>>) -> Vec<GameEvent> {
    let mut all = Vec::new();
    for evs in games.values() {
        let first = evs[0].seq;
        for (i, e) in evs.iter().enumerate() {
            let mut e = e.clone();
            e.seq = first + i as u64;
            all.push(e);
        }
    }
    // Stable: a game's events keep their order at equal times.
    all.sort_by_key(|e| e.event_time_ms);
    all
}

/// The model's published values per game (event time, value), from the deltas of a run.
fn model_values(deltas: &[Delta]) -> BTreeMap<String, Vec<(u64, f64)>> {
    let mut values: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    for d in deltas {
        values
            .entry(d.game_id.clone())
            .or_default()
            .push((d.event_time_ms, d.new));
    }
    values
}

/// The last published value at or before `t`.
fn value_at(values: &[(u64, f64)], t: u64) -> Option<f64> {
    values
        .iter()
        .take_while(|(at, _)| *at <= t)
        .last()
        .map(|v| v.1)
}

/// Where a swing goes in a game: after a play of the 2nd or 3rd quarter, followed by a gap
/// of at least 2 ms, with the model in [0.1, 0.7] (room to rise) and calm (moved < 0.15, under the
/// detector's 0.2) over the detector's 3-minute window before; of those, the one nearest the
/// middle of the game. The event's index.
fn swing_place(evs: &[GameEvent], values: &[(u64, f64)]) -> Option<usize> {
    let mid = evs[0].event_time_ms + 30 * 60_000;
    (0..evs.len() - 1)
        .filter(|&i| {
            let (e, next) = (&evs[i], &evs[i + 1]);
            let t = e.event_time_ms;
            let recent: Vec<f64> = values
                .iter()
                .filter(|(at, _)| *at + 3 * 60_000 >= t && *at <= t)
                .map(|v| v.1)
                .chain(value_at(values, t.saturating_sub(3 * 60_000)))
                .collect();
            let lo = recent.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = recent.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            e.kind == EventKind::Play
                && (2..=3).contains(&e.period)
                && next.event_time_ms >= t + 2
                && value_at(values, t).is_some_and(|v| (0.1..=0.7).contains(&v))
                && hi - lo < 0.15
        })
        .min_by_key(|&i| evs[i].event_time_ms.abs_diff(mid))
}

/// An `odds` event after `after` (a clone of it: same time, team, clock and stats) quoting
/// home probability `q` with a 5% overround.
fn quote(after: &GameEvent, q: f64) -> GameEvent {
    let mut e = after.clone();
    e.kind = EventKind::Odds;
    e.odds = Some(OddsQuote {
        source: "test-book".into(),
        home_price: 1.0 / (q * 1.05),
        away_price: 1.0 / ((1.0 - q) * 1.05),
        draw_price: None,
    });
    e.description = Some(format!("odds: home {q:.3}"));
    e
}

/// The injected feed and where the swings and the diverging quotes are; `clean` is the
/// deltas of the fixture.
fn injected(clean: &[Delta]) -> (Vec<GameEvent>, Vec<Injection>, Vec<Injection>) {
    let mut games = by_game(&fixture_events());
    let ids: Vec<String> = games.keys().cloned().collect();

    // 1. Swings, in the even-numbered games.
    let values = model_values(clean);
    let mut swings = Vec::new();
    for id in ids.iter().step_by(2) {
        let evs = games.get_mut(id).unwrap();
        // A game the home team leads by far all along has no room: it gets no swing.
        let Some(i) = swing_place(evs, &values[id]) else {
            continue;
        };
        let mut timeout = evs[i].clone();
        timeout.kind = EventKind::Timeout;
        timeout.event_time_ms += 1;
        timeout.description = Some(format!("injected: home +{SWING_POINTS} without a play"));
        evs.insert(i + 1, timeout);
        for e in &mut evs[i + 1..] {
            e.home_score += SWING_POINTS;
        }
        swings.push(Injection {
            game: id.clone(),
            at: evs[i + 1].event_time_ms,
        });
    }

    // 2. The market: the model (of the swung feed) plus noise, after each published change;
    // one opposite quote in each odd-numbered game.
    let (swung, _) = run("swung", &feed(&games));
    let values = model_values(&swung);
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut divergences = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let evs = &games[id];
        let vals = &values[id];
        let opposite_at = (n % 2 == 1)
            .then(|| {
                let mid = evs[0].event_time_ms + 40 * 60_000;
                vals.iter()
                    .filter(|(t, v)| {
                        let e = evs.iter().rev().find(|e| e.event_time_ms <= *t).unwrap();
                        (2..=4).contains(&e.period) && (*v >= 0.75 || *v <= 0.25)
                    })
                    .min_by_key(|(t, _)| t.abs_diff(mid))
                    .map(|(t, _)| *t)
            })
            .flatten();
        let mut out = Vec::with_capacity(evs.len() + vals.len());
        let mut k = 0;
        for (j, e) in evs.iter().enumerate() {
            out.push(e.clone());
            let last_at_time = evs
                .get(j + 1)
                .is_none_or(|next| next.event_time_ms > e.event_time_ms);
            if !last_at_time {
                continue;
            }
            while k < vals.len() && vals[k].0 < e.event_time_ms {
                k += 1;
            }
            if let Some(&(t, v)) = vals.get(k).filter(|(t, _)| *t == e.event_time_ms) {
                let q = if opposite_at == Some(t) {
                    divergences.push(Injection {
                        game: id.clone(),
                        at: t,
                    });
                    1.0 - v
                } else {
                    v + rng.random_range(-NOISE..=NOISE)
                };
                out.push(quote(e, q.clamp(0.01, 0.99)));
            }
        }
        games.insert(id.clone(), out);
    }
    (feed(&games), swings, divergences)
}

/// The feed through the NFL pipeline with the market feature and both detectors: the deltas
/// and alert changes.
fn run(name: &str, events: &[GameEvent]) -> (Vec<Delta>, Vec<Alert>) {
    let input = format!("nfl.injected.{name}");
    let cluster = Cluster::mock(&[(&input, 4), (&format!("{input}.dead-letters"), 1)]);
    let lines: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    produce_all(&cluster.brokers, &input, &lines);
    let text = format!("{}\n{DETECTORS}", nfl_pipeline(&[&input]));
    let cfg = config(&cluster.brokers, &input, 2);
    let app = start(&cfg, &[text]);
    let capture = Capture::default();
    let stats = app.run_engine_with(Box::new(capture.clone())).unwrap();
    app.shutdown();
    assert_eq!(stats.records, lines.len() as u64, "every event read");
    let out = capture.0.lock().unwrap().clone();
    out
}

/// The alerts `detector` opened.
fn opened<'a>(alerts: &'a [Alert], detector: &str) -> Vec<&'a Alert> {
    alerts
        .iter()
        .filter(|a| a.detector == detector && a.state == AlertState::Open)
        .collect()
}

fn matches(a: &Alert, i: &Injection) -> bool {
    a.game_id == i.game && a.opened_at_ms >= i.at && a.opened_at_ms <= i.at + TOLERANCE_MS
}

/// (alerts opened, of them hits, injections found).
fn score(opened: &[&Alert], injections: &[Injection]) -> (usize, usize, usize) {
    let hits = opened
        .iter()
        .filter(|a| injections.iter().any(|i| matches(a, i)))
        .count();
    let found = injections
        .iter()
        .filter(|i| opened.iter().any(|a| matches(a, i)))
        .count();
    (opened.len(), hits, found)
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

#[test]
fn injected_swings_and_diverging_odds_are_found() {
    // The clean feed: the model's values, and the real games' own swings.
    let (clean_deltas, clean) = run("clean", &fixture_events());
    let natural = opened(&clean, "swing");
    let (events, swings, divergences) = injected(&clean_deltas);
    assert!(
        swings.len() >= 12,
        "a swing in most even-numbered games: {}",
        swings.len()
    );
    assert!(
        divergences.len() >= 12,
        "an opposite quote in most odd-numbered games: {}",
        divergences.len()
    );
    let quotes = events.iter().filter(|e| e.kind == EventKind::Odds).count();
    let (_, alerts) = run("injected", &events);
    // Every alert ends: resolved or retracted by the feed, or resolved when its game is
    // released (`retention` after its end; at the end of a replay every game is). One left
    // open at a game's last event stayed open for good before.
    for both in [&clean, &alerts] {
        for a in both.iter().filter(|a| a.state == AlertState::Open) {
            let ends = both.iter().filter(|e| {
                e.id == a.id && matches!(e.state, AlertState::Resolved | AlertState::Retracted)
            });
            assert_eq!(ends.count(), 1, "alert {} ends once", a.id);
        }
    }
    let at_release = alerts
        .iter()
        .filter(|a| a.evidence.window.contains("game was released"))
        .count();
    println!("{at_release} alerts resolved at their game's release");

    let swing_opened = opened(&alerts, "swing");
    let (n, hits, found) = score(&swing_opened, &swings);
    let (precision, recall) = (ratio(hits, n), ratio(found, swings.len()));
    // Restricted: set aside the alerts the real games explain, those the clean feed also
    // opens (same game, within the tolerance), and those in a swing game after its injection
    // (beyond the tolerance): keeping the +14 made the rest of that game another game. What
    // is left is at an injection or spurious.
    let explained = |a: &Alert| {
        natural.iter().any(|c| {
            c.game_id == a.game_id && c.opened_at_ms.abs_diff(a.opened_at_ms) <= TOLERANCE_MS
        }) || swings
            .iter()
            .any(|i| i.game == a.game_id && a.opened_at_ms > i.at + TOLERANCE_MS)
    };
    let restricted: Vec<&Alert> = swing_opened
        .iter()
        .copied()
        .filter(|a| swings.iter().any(|i| matches(a, i)) || !explained(a))
        .collect();
    let (n_restricted, hits_restricted, _) = score(&restricted, &swings);
    let precision_restricted = ratio(hits_restricted, n_restricted);
    println!(
        "{} events ({} injected swings, {quotes} odds quotes of which {} opposite)",
        events.len(),
        swings.len(),
        divergences.len()
    );
    println!(
        "swing (jump 0.2 / 3m): {n} opened, {hits} at injections, {found}/{} injections found: precision {precision:.2}, recall {recall:.2}",
        swings.len()
    );
    println!(
        "  the clean feed opens {} swing alerts; restricted to alerts the real games do not explain: {n_restricted} opened, {hits_restricted} at injections: precision {precision_restricted:.2}",
        natural.len()
    );
    for a in restricted
        .iter()
        .filter(|a| !swings.iter().any(|i| matches(a, i)))
    {
        println!("  spurious swing alert: {}", a.message);
    }

    let market_opened = opened(&alerts, "market");
    let (m, m_hits, m_found) = score(&market_opened, &divergences);
    let (m_precision, m_recall) = (ratio(m_hits, m), ratio(m_found, divergences.len()));
    println!(
        "market (divergence 0.3): {m} opened, {m_hits} at injections, {m_found}/{} injections found: precision {m_precision:.2}, recall {m_recall:.2}",
        divergences.len()
    );
    for a in market_opened
        .iter()
        .filter(|a| !divergences.iter().any(|i| matches(a, i)))
    {
        println!("  false divergence alert: {}", a.message);
    }

    assert_eq!(recall, 1.0, "every 14-point swing raises a swing alert");
    assert!(
        precision >= 0.1,
        "raw swing precision {precision:.2}: the injections drown in natural swings"
    );
    assert_eq!(
        precision_restricted, 1.0,
        "no swing alert the real games do not explain, but at the injections"
    );
    assert_eq!(
        m_recall, 1.0,
        "every opposite quote raises a divergence alert"
    );
    assert_eq!(
        m_precision, 1.0,
        "a market within noise of the model raises nothing"
    );
}
