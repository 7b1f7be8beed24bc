//! Simulated NBA games.
//!
//! - Four 12-minute quarters, then 5-minute overtimes while tied; `period` 1-4, overtime 5, 6,
//!   ...; `clock_ms` counts **down** (ms left in the period).
//! - Possessions alternate. Each lasts 4 to 22 seconds of game clock and ends in a turnover
//!   (13%), a shooting foul (free throws, 9%) or a field-goal attempt: a three with probability
//!   0.39 (makes 36.5%), else a two (makes 54%). A missed shot is rebounded by the offence 25% of
//!   the time (the same team shoots again). The team with the first possession of quarters 2 and
//!   3 is the one without it in quarter 1, as after a jump ball.
//! - Strength: every make probability (free throws included) rises by 0.018 per unit of
//!   strength difference between offence and defence, and by 0.01 at home (0.01 less away).
//!   Scores end near 110 per team.
//! - Stoppages (real time, no game clock): free throws 25-45 s, a dead ball after 25% of
//!   possessions 10-30 s, made baskets 2-6 s, timeouts (`timeout` events, 6% of possessions)
//!   75-150 s, 130 s between quarters, 15 minutes at half time.
//!
//! Events: `game_start` (team: the first offence), one `play` per possession outcome, `timeout`,
//! `period_end` per period, `game_end`. `team` is the offence (the shooting team); the
//! possession after the event goes to the other team unless `offensive_rebound` is 1.
//!
//! Stats (absent = 0): field goals `shot` 1, `three_point` 1 for a three, `made` 1/0,
//! `points`; free throws `free_throws` (attempts, 2 or 3), `free_throws_made`, `points`;
//! `turnover` 1; `offensive_rebound` 1 on a missed shot that the offence rebounded.

use super::{Matchup, Rng, MIN};
use crate::event::{EventKind, GameEvent, Sport};
use crate::import::feed::{set_stats, GameFeed};

const QUARTER: u64 = 12 * MIN;
const OVERTIME: u64 = 5 * MIN;

/// Simulates one game.
pub fn game(m: &Matchup, rng: &mut Rng) -> Vec<GameEvent> {
    let mut feed = GameFeed::new(Sport::Nba, &m.game_id, m.home, m.away);
    let mut now = m.start_ms;
    let tip_home = rng.chance(0.5);
    let team_code = |home: bool| if home { m.home } else { m.away };
    let start = feed.push(EventKind::GameStart, now, 1, QUARTER);
    start.team = Some(team_code(tip_home).to_owned());
    start.description = Some(format!("{} at {}", m.away, m.home));

    // Make-probability shift of an offence.
    let edge = |home: bool| {
        let (own, opp) = if home {
            (m.home_strength, m.away_strength)
        } else {
            (m.away_strength, m.home_strength)
        };
        0.018 * (own - opp) + if home { 0.01 } else { -0.01 }
    };

    let mut period = 1u32;
    loop {
        let len = if period <= 4 { QUARTER } else { OVERTIME };
        let mut clock = len;
        let mut offence_home = match period {
            1 | 4 => tip_home,
            2 | 3 => !tip_home,
            _ => rng.chance(0.5),
        };
        while clock > 0 {
            let used = rng.secs(4, 22).min(clock);
            clock -= used;
            now += used;
            let team = team_code(offence_home);
            let q = edge(offence_home);
            let r = rng.uniform();
            let mut keep_ball = false;
            let mut stoppage = 0;
            let (stats, text): (Vec<(&str, f64)>, String) = if r < 0.13 {
                (vec![("turnover", 1.0)], "turnover".to_owned())
            } else if r < 0.22 {
                let attempts = if rng.chance(0.1) { 3 } else { 2 };
                let made = (0..attempts)
                    .filter(|_| rng.chance((0.77 + q).min(0.95)))
                    .count() as u32;
                stoppage += rng.secs(25, 45);
                if offence_home {
                    feed.home_score += made;
                } else {
                    feed.away_score += made;
                }
                (
                    vec![
                        ("free_throws", f64::from(attempts)),
                        ("free_throws_made", f64::from(made)),
                        ("points", f64::from(made)),
                    ],
                    format!("free throws {made} of {attempts}"),
                )
            } else {
                let three = rng.chance(0.39);
                let made = rng.chance(if three { 0.365 } else { 0.54 } + q);
                let points = match (made, three) {
                    (false, _) => 0,
                    (true, true) => 3,
                    (true, false) => 2,
                };
                let mut stats = vec![
                    ("shot", 1.0),
                    ("three_point", f64::from(u8::from(three))),
                    ("made", f64::from(u8::from(made))),
                    ("points", f64::from(points)),
                ];
                if made {
                    stoppage += rng.secs(2, 6);
                } else if rng.chance(0.25) {
                    keep_ball = true;
                    stats.push(("offensive_rebound", 1.0));
                }
                if offence_home {
                    feed.home_score += points;
                } else {
                    feed.away_score += points;
                }
                let what = if three { "3-pt shot" } else { "2-pt shot" };
                let how = if made { "made" } else { "missed" };
                (stats, format!("{what} {how}"))
            };
            let ev = feed.push(EventKind::Play, now, period, clock);
            ev.team = Some(team.to_owned());
            ev.description = Some(text);
            set_stats(ev, &stats);
            if rng.chance(0.25) {
                stoppage += rng.secs(10, 30);
            }
            now += stoppage;
            if clock > 0 && rng.chance(0.06) {
                now += rng.secs(75, 150);
                let by_home = rng.chance(0.5);
                let ev = feed.push(EventKind::Timeout, now, period, clock);
                ev.team = Some(team_code(by_home).to_owned());
                ev.description = Some(format!("timeout {}", team_code(by_home)));
            }
            if !keep_ball {
                offence_home = !offence_home;
            }
        }
        feed.push(EventKind::PeriodEnd, now, period, 0).description =
            Some(format!("end of period {period}"));
        if period >= 4 && feed.home_score != feed.away_score {
            break;
        }
        now += if period == 2 { 15 * MIN } else { 130_000 };
        period += 1;
    }
    let text = format!(
        "Final: {} {}, {} {}",
        m.away, feed.away_score, m.home, feed.home_score
    );
    feed.push(EventKind::GameEnd, now, period, 0).description = Some(text);
    feed.events
}
