//! The multi-sport feeds: soccer (StatsBomb), cricket with Betfair odds, and the simulated NBA,
//! NHL and MLB games.
//!
//! - Every committed fixture line decodes with the engine's own decoder, and every game keeps the
//!   per-game invariants (seq from 1 without gaps, event time never falling, scores never
//!   falling, `game_start` first and `game_end` last).
//! - The importers reproduce their fixtures byte for byte when the source data is present
//!   (`data/` is not in git: run `examples/data/fetch_soccer.sh` and `fetch_betfair.sh`);
//!   otherwise those checks are skipped with a message.
//! - The simulator always runs: its fixtures are reproduced, it is deterministic, and its games
//!   are plausible.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sideline::event::{EventKind, GameEvent, Sport};
use sideline::format::json::decode;
use sideline::import::feed::to_jsonl;
use sideline::import::{betfair, soccer};
use sideline::simulate::{self, SimSport};

/// The engine's default `kafka.max-record-bytes`.
const MAX_RECORD: usize = 65_536;
const SIM_SEED: u64 = 2024;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn decode_all(bytes: &[u8]) -> Vec<GameEvent> {
    let text = std::str::from_utf8(bytes).expect("UTF-8");
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            decode(line.as_bytes(), MAX_RECORD).unwrap_or_else(|r| panic!("line {}: {r}", i + 1))
        })
        .collect()
}

/// Checks the per-game invariants; returns the events by game.
fn check_feed(events: &[GameEvent], sport: Sport) -> BTreeMap<String, Vec<GameEvent>> {
    let mut games: BTreeMap<String, Vec<GameEvent>> = BTreeMap::new();
    for e in events {
        assert_eq!(e.sport, sport, "{} seq {}", e.game_id, e.seq);
        games.entry(e.game_id.clone()).or_default().push(e.clone());
    }
    for (id, g) in &games {
        assert_eq!(
            g[0].kind,
            EventKind::GameStart,
            "{id}: starts with game_start"
        );
        assert_eq!(
            g.last().unwrap().kind,
            EventKind::GameEnd,
            "{id}: ends with game_end"
        );
        assert_eq!(
            g.iter().filter(|e| e.kind == EventKind::GameEnd).count(),
            1,
            "{id}: one game_end"
        );
        assert_eq!(
            (g[0].home_score, g[0].away_score),
            (0, 0),
            "{id}: starts 0-0"
        );
        for (i, e) in g.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1, "{id}: seq from 1 without gaps");
            assert_eq!((&e.home, &e.away), (&g[0].home, &g[0].away), "{id}: teams");
            if let Some(t) = &e.team {
                assert!(*t == e.home || *t == e.away, "{id} seq {}: team {t}", e.seq);
            }
            match sport {
                Sport::Mlb | Sport::Cricket => assert_eq!(e.clock_ms, 0, "{id}: no clock"),
                Sport::Nba => assert!(e.clock_ms <= 12 * 60_000),
                Sport::Nhl => assert!(e.clock_ms <= 20 * 60_000),
                _ => {}
            }
            assert_eq!(
                e.kind == EventKind::Odds,
                e.odds.is_some(),
                "{id} seq {}",
                e.seq
            );
            if let Some(o) = &e.odds {
                assert!(o.home_price > 1.0 && o.away_price > 1.0);
            }
            if i > 0 {
                let p = &g[i - 1];
                assert!(
                    e.event_time_ms >= p.event_time_ms,
                    "{id} seq {}: time",
                    e.seq
                );
                assert!(
                    e.home_score >= p.home_score && e.away_score >= p.away_score,
                    "{id} seq {}: score fell",
                    e.seq
                );
                if sport == Sport::Soccer && e.period == p.period {
                    assert!(e.clock_ms >= p.clock_ms, "{id} seq {}: soccer clock", e.seq);
                }
            }
        }
    }
    games
}

fn final_score(g: &[GameEvent]) -> (u32, u32) {
    let end = g.last().unwrap();
    (end.home_score, end.away_score)
}

#[test]
fn soccer_fixture_is_valid_and_has_the_real_results() {
    let events = decode_all(&fixture("examples/data/soccer/games.jsonl"));
    let games = check_feed(&events, Sport::Soccer);
    // The real results of the three matches.
    let real = [
        ("15946", "Barcelona", "Deportivo Alavés", (3, 0)),
        ("15986", "Barcelona", "Girona", (2, 2)),
        ("3788741", "Turkey", "Italy", (0, 3)),
    ];
    assert_eq!(games.len(), real.len());
    for (id, home, away, score) in real {
        let g = &games[id];
        assert_eq!((g[0].home.as_str(), g[0].away.as_str()), (home, away));
        // Goals counted from the events' stats agree with the score line.
        let mut counted = (0, 0);
        for e in g {
            let for_home = e.team.as_deref() == Some(home);
            if e.stat("goal") == 1.0 {
                *if for_home {
                    &mut counted.0
                } else {
                    &mut counted.1
                } += 1;
            }
            if e.stat("own_goal") == 1.0 {
                *if for_home {
                    &mut counted.1
                } else {
                    &mut counted.0
                } += 1;
            }
        }
        println!(
            "soccer {id}: {home} {}-{} {away} (real {}-{}), {} events",
            final_score(g).0,
            final_score(g).1,
            score.0,
            score.1,
            g.len()
        );
        assert_eq!(final_score(g), score, "{id}");
        assert_eq!(counted, score, "{id}: goals in the stats");
        assert!(g.iter().any(|e| e.stat("xg") > 0.0));
        assert!(g
            .iter()
            .any(|e| e.kind == EventKind::PeriodEnd && e.period == 2));
    }
}

/// Goals per team straight from the StatsBomb JSON: Shot outcomes "Goal", plus "Own Goal
/// Against" events for the other team; kloppy's hand-made events (ids that are not UUIDs) left
/// out.
fn raw_goals(dir: &Path, m: &soccer::MatchFile) -> BTreeMap<String, u32> {
    let text = std::fs::read(dir.join(m.events)).unwrap();
    let events: Vec<serde_json::Value> = serde_json::from_slice(&text).unwrap();
    let teams: Vec<String> = events
        .iter()
        .filter(|e| e["type"]["name"] == "Starting XI")
        .map(|e| e["team"]["name"].as_str().unwrap().to_owned())
        .collect();
    let mut goals: BTreeMap<String, u32> = teams.iter().map(|t| (t.clone(), 0)).collect();
    for e in &events {
        if e["id"].as_str().unwrap().len() != 36 {
            continue;
        }
        let team = e["team"]["name"].as_str().unwrap_or_default().to_owned();
        if e["type"]["name"] == "Shot" && e["shot"]["outcome"]["name"] == "Goal" {
            *goals.get_mut(&team).unwrap() += 1;
        }
        if e["type"]["name"] == "Own Goal Against" {
            let other = teams.iter().find(|t| **t != team).unwrap();
            *goals.get_mut(other).unwrap() += 1;
        }
    }
    goals
}

#[test]
fn soccer_import_reproduces_the_fixture() {
    let dir = root().join("data/kloppy");
    if !dir.join(soccer::MATCHES[0].events).exists() {
        println!(
            "skipped: {} absent (run examples/data/fetch_soccer.sh)",
            dir.display()
        );
        return;
    }
    let (events, reports) = soccer::import_dir(&dir).unwrap();
    let bytes = to_jsonl(&events);
    assert!(
        bytes == fixture("examples/data/soccer/games.jsonl"),
        "regenerate: sideline import soccer --data data/kloppy --out examples/data/soccer/games.jsonl"
    );
    for (m, r) in soccer::MATCHES.iter().zip(&reports) {
        let raw = raw_goals(&dir, m);
        println!(
            "soccer {}: from the data {raw:?}; imported {:?}",
            m.game_id, r.score
        );
        assert_eq!((raw[&r.home], raw[&r.away]), r.score, "{}", m.game_id);
    }
    assert_eq!(reports[0].dropped_bad_id, 2);
    assert_eq!(reports[0].dropped_repeated_index, 3);
}

#[test]
fn soccer_timestamps() {
    assert_eq!(soccer::parse_timestamp("00:01:49.042"), Some(109_042));
    assert_eq!(soccer::parse_timestamp("00:48:08.184"), Some(2_888_184));
    assert_eq!(soccer::parse_timestamp("01:00:00.5"), Some(3_600_500));
    assert_eq!(soccer::parse_timestamp("00:61:00.000"), None);
    assert_eq!(soccer::parse_timestamp("12:00"), None);
}

#[test]
fn cricket_fixture_joins_odds_and_score() {
    let events = decode_all(&fixture("examples/data/cricket/games.jsonl"));
    let games = check_feed(&events, Sport::Cricket);
    let g = &games[betfair::MARKET_ID];
    assert_eq!(
        (g[0].home.as_str(), g[0].away.as_str()),
        ("Netherlands", "Papua New Guinea")
    );
    assert_eq!(final_score(g), (163, 111));
    let odds: Vec<&GameEvent> = g.iter().filter(|e| e.kind == EventKind::Odds).collect();
    let plays: Vec<&GameEvent> = g.iter().filter(|e| e.kind == EventKind::Play).collect();
    println!(
        "cricket: {} events, {} odds, {} plays",
        g.len(),
        odds.len(),
        plays.len()
    );
    assert!(odds.len() > 100 && plays.len() > 100);
    for o in &odds {
        let q = o.odds.as_ref().unwrap();
        assert_eq!((q.source.as_str(), q.draw_price), ("betfair", None));
        assert!(1.0 / q.home_price + 1.0 / q.away_price <= betfair::MAX_OVERROUND + 1e-9);
    }
    // The odds feed and the score feed interleave in one game.
    let first_play = g.iter().position(|e| e.kind == EventKind::Play).unwrap();
    assert!(g[first_play..].iter().any(|e| e.kind == EventKind::Odds));
    for p in &plays {
        let batting_home = p.team.as_deref() == Some("Netherlands");
        let runs = if batting_home {
            p.home_score
        } else {
            p.away_score
        };
        assert_eq!(p.stat("runs"), f64::from(runs), "seq {}", p.seq);
        assert_eq!(p.stat("innings"), f64::from(p.period));
        assert!(p.stat("wickets") <= 10.0 && p.stat("balls") <= 120.0);
    }
    // The last quote before the end favours the winner (Netherlands, home).
    let last = odds.last().unwrap().odds.as_ref().unwrap();
    assert!(last.home_price < last.away_price);
}

#[test]
fn betfair_import_reproduces_the_fixture() {
    let dir = root().join("data/betfair");
    if !dir.join(betfair::MARKET_ID).exists() {
        println!(
            "skipped: {} absent (run examples/data/fetch_betfair.sh)",
            dir.display()
        );
        return;
    }
    let (events, report) = betfair::import_dir(&dir, betfair::MARKET_ID).unwrap();
    println!("betfair: {report:?}");
    assert!(
        to_jsonl(&events) == fixture("examples/data/cricket/games.jsonl"),
        "regenerate: sideline import betfair --data data/betfair --out examples/data/cricket/games.jsonl"
    );
}

#[test]
fn overs_parsing() {
    assert_eq!(betfair::parse_overs("19.4"), Some(118));
    assert_eq!(betfair::parse_overs("20"), Some(120));
    assert_eq!(betfair::parse_overs("20.0"), Some(120));
    assert_eq!(betfair::parse_overs("0.0"), Some(0));
    assert_eq!(betfair::parse_overs("3.6"), None);
    assert_eq!(betfair::parse_overs(""), None);
}

const SIMULATED: [(SimSport, Sport, &str); 3] = [
    (SimSport::Nba, Sport::Nba, "examples/data/nba/games.jsonl"),
    (SimSport::Nhl, Sport::Nhl, "examples/data/nhl/games.jsonl"),
    (SimSport::Mlb, Sport::Mlb, "examples/data/mlb/games.jsonl"),
];

#[test]
fn simulated_fixtures_are_valid_and_reproduced() {
    for (sim, sport, path) in SIMULATED {
        let bytes = fixture(path);
        let games = check_feed(&decode_all(&bytes), sport);
        assert_eq!(games.len(), 8, "{path}");
        assert!(
            to_jsonl(&simulate::simulate(sim, 8, SIM_SEED)) == bytes,
            "regenerate: sideline simulate --sport {sport} --games 8 --seed {SIM_SEED} --out {path}"
        );
    }
}

fn finals(games: &[Vec<GameEvent>]) -> Vec<(String, String, u32, u32)> {
    games
        .iter()
        .map(|g| {
            let e = g.last().unwrap();
            (e.home.clone(), e.away.clone(), e.home_score, e.away_score)
        })
        .collect()
}

#[test]
fn simulator_is_deterministic() {
    for (sim, _, _) in SIMULATED {
        let a = to_jsonl(&simulate::simulate(sim, 6, 7));
        let b = to_jsonl(&simulate::simulate(sim, 6, 7));
        assert!(a == b, "{sim:?}: same seed, same bytes");
        let c = to_jsonl(&simulate::simulate(sim, 6, 8));
        assert!(a != c, "{sim:?}: another seed, other bytes");
        // Not only the ids: the games themselves differ.
        assert_ne!(
            finals(&simulate::simulate_games(sim, 6, 7)),
            finals(&simulate::simulate_games(sim, 6, 8))
        );
        // A game does not depend on how many follow it.
        let few = simulate::simulate_games(sim, 3, 7);
        assert_eq!(few[..], simulate::simulate_games(sim, 6, 7)[..3]);
    }
}

#[test]
fn simulated_games_are_plausible() {
    // Means over the first 50 games; home share and strength over 200 (less sampling noise).
    const N: usize = 50;
    const MANY: usize = 200;
    let bounds = [
        (SimSport::Nba, Sport::Nba, 180.0, 260.0),
        (SimSport::Nhl, Sport::Nhl, 3.0, 9.0),
        (SimSport::Mlb, Sport::Mlb, 4.0, 14.0),
    ];
    let (mut stronger_won, mut decided) = (0, 0);
    for (sim, sport, lo, hi) in bounds {
        let many = simulate::simulate_games(sim, MANY, 11);
        let games = &many[..N];
        let all: Vec<GameEvent> = many.iter().flatten().cloned().collect();
        check_feed(&all, sport);
        let strength = simulate::strengths(sim, 11);
        let finals = finals(&many);
        let mean_total = finals[..N]
            .iter()
            .map(|f| f64::from(f.2 + f.3))
            .sum::<f64>()
            / N as f64;
        let home_wins = finals.iter().filter(|f| f.2 > f.3).count();
        let ties = finals.iter().filter(|f| f.2 == f.3).count();
        let events = games.iter().map(Vec::len).sum::<usize>() as f64 / N as f64;
        let hours = games
            .iter()
            .map(|g| (g.last().unwrap().event_time_ms - g[0].event_time_ms) as f64 / 3.6e6)
            .sum::<f64>()
            / N as f64;
        let home_share = home_wins as f64 / MANY as f64;
        println!(
            "{sport}: mean total {mean_total:.1}, home wins {home_share:.2}, {events:.0} events and {hours:.2} h per game"
        );
        assert_eq!(ties, 0, "{sport}: no ties");
        assert!(
            (lo..=hi).contains(&mean_total),
            "{sport}: mean total {mean_total}"
        );
        assert!(
            (0.45..=0.7).contains(&home_share),
            "{sport}: home share {home_share}"
        );
        assert!((1.8..=3.5).contains(&hours), "{sport}: {hours} h");
        if sport == Sport::Nba {
            assert!(
                (150.0..=350.0).contains(&events),
                "NBA: {events} events per game"
            );
        }
        for (home, away, h, a) in &finals {
            let home_stronger = strength[home.as_str()] > strength[away.as_str()];
            stronger_won += usize::from(home_stronger == (h > a));
            decided += 1;
        }
    }
    let share = stronger_won as f64 / decided as f64;
    println!("the stronger team won {share:.2} of {decided} games");
    assert!(share > 0.55, "outcomes follow strength: {share}");
}
