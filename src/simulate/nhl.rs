//! Simulated NHL games (regular season rules).
//!
//! - Three 20-minute periods; if tied, a 5-minute sudden-death overtime (period 4, 3-on-3:
//!   more shots, better chances), then a shootout (period 5, clock 0). `clock_ms` counts
//!   **down**.
//! - Events arrive as a Poisson process of game time: shots on goal (about 30 per team) and
//!   minor penalties (about 4 per team, 2 minutes each). A shot belongs to the home team with
//!   probability `logistic(0.15 * (home - away strength) + 0.1)`, to the power-play team more
//!   often (+0.9 on that scale). A shot scores with probability `0.09 + 0.006 * (shooter -
//!   defender strength)` (+0.06 on the power play, 0.12 base in overtime), so about 3 goals per
//!   team. A power-play goal ends the penalty.
//! - Three TV timeouts per regulation period (`timeout` events, about 2 minutes each, near
//!   14, 10 and 6 minutes left).
//! - Shootout: three rounds, then sudden death, each attempt scoring with probability 0.32 +
//!   0.02 * strength difference. The winner is credited one goal on `game_end` (NHL
//!   convention: a 2-2 game won in the shootout ends 3-2).
//! - Stoppages (real time): a saved shot is frozen 55% of the time (20-40 s), goals 45-75 s,
//!   penalties 30-60 s, 18-minute intermissions (and before overtime 2 minutes).
//!
//! Stats (absent = 0): shots `shot` 1, `goal` 1/0, `power_play` 1 when the shooting team has
//! the man advantage; penalties `penalty` 1, `penalty_minutes` 2 (`team` is the penalised
//! team); shootout attempts `shootout` 1, `goal` 1/0 (the score does not move until
//! `game_end`). `team` is the shooting team on shots.

use super::{Matchup, Rng, MIN};
use crate::event::{EventKind, GameEvent, Sport};
use crate::import::feed::{set_stats, GameFeed};

const PERIOD: u64 = 20 * MIN;
const OVERTIME: u64 = 5 * MIN;
const MINOR: u64 = 2 * MIN;

fn logistic(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Simulates one game.
pub fn game(m: &Matchup, rng: &mut Rng) -> Vec<GameEvent> {
    let mut feed = GameFeed::new(Sport::Nhl, &m.game_id, m.home, m.away);
    let mut now = m.start_ms;
    let code = |home: bool| if home { m.home } else { m.away };
    let diff = m.home_strength - m.away_strength;
    feed.push(EventKind::GameStart, now, 1, PERIOD).description =
        Some(format!("{} at {}", m.away, m.home));

    let mut period = 1u32;
    while period <= 4 {
        let overtime = period == 4;
        let len = if overtime { OVERTIME } else { PERIOD };
        // Events per minute of game clock: shots (60 per 60 min) and penalties (8).
        let (shot_rate, pen_rate) = if overtime { (1.6, 0.05) } else { (1.0, 0.133) };
        let mut elapsed = 0u64;
        let mut tv = [6 * MIN, 10 * MIN, 14 * MIN].to_vec();
        // (penalised team is home, game time the penalty ends)
        let mut penalty: Option<(bool, u64)> = None;
        let mut decided = false;
        loop {
            let gap = (rng.exponential(MIN as f64 / (shot_rate + pen_rate)) as u64).max(1_000);
            let at = elapsed + gap;
            if !overtime {
                if let Some(&mark) = tv.first().filter(|&&mark| at >= mark && mark < len) {
                    tv.remove(0);
                    now += mark - elapsed;
                    elapsed = mark;
                    now += rng.secs(100, 140);
                    feed.push(EventKind::Timeout, now, period, len - elapsed)
                        .description = Some("TV timeout".to_owned());
                    continue;
                }
            }
            if at >= len {
                now += len - elapsed;
                break;
            }
            now += gap;
            elapsed = at;
            let clock = len - elapsed;
            if penalty.is_some_and(|(_, until)| elapsed >= until) {
                penalty = None;
            }
            if rng.chance(pen_rate / (shot_rate + pen_rate)) && penalty.is_none() {
                let home_pen = rng.chance(0.5);
                penalty = Some((home_pen, elapsed + MINOR));
                let ev = feed.push(EventKind::Play, now, period, clock);
                ev.team = Some(code(home_pen).to_owned());
                ev.description = Some(format!("{} minor penalty", code(home_pen)));
                set_stats(ev, &[("penalty", 1.0), ("penalty_minutes", 2.0)]);
                now += rng.secs(30, 60);
                continue;
            }
            let pp_home = penalty.map(|(home_pen, _)| !home_pen);
            let lean = match pp_home {
                Some(true) => 0.9,
                Some(false) => -0.9,
                None => 0.0,
            };
            let shooter_home = rng.chance(logistic(0.15 * diff + 0.1 + lean));
            let power_play = pp_home == Some(shooter_home);
            let edge = if shooter_home { diff } else { -diff };
            let base = if overtime { 0.12 } else { 0.09 };
            let p_goal =
                (base + 0.006 * edge + if power_play { 0.06 } else { 0.0 }).clamp(0.03, 0.3);
            let goal = rng.chance(p_goal);
            if goal {
                if shooter_home {
                    feed.home_score += 1;
                } else {
                    feed.away_score += 1;
                }
                if power_play {
                    penalty = None;
                }
            }
            let ev = feed.push(EventKind::Play, now, period, clock);
            ev.team = Some(code(shooter_home).to_owned());
            ev.description = Some(if goal { "goal" } else { "shot saved" }.to_owned());
            set_stats(ev, &[("shot", 1.0), ("goal", f64::from(u8::from(goal)))]);
            if power_play {
                ev.stats.insert("power_play".to_owned(), 1.0);
            }
            if goal {
                now += rng.secs(45, 75);
                if overtime {
                    decided = true;
                    break;
                }
            } else if rng.chance(0.55) {
                now += rng.secs(20, 40);
            }
        }
        let clock = if decided {
            feed.events.last().map_or(0, |e| e.clock_ms)
        } else {
            0
        };
        feed.push(EventKind::PeriodEnd, now, period, clock)
            .description = Some(format!("end of period {period}"));
        if period >= 3 && feed.home_score != feed.away_score {
            break;
        }
        now += if period == 3 { 2 * MIN } else { 18 * MIN };
        period += 1;
    }

    let mut text = String::new();
    if feed.home_score == feed.away_score {
        // Shootout.
        period = 5;
        now += 2 * MIN;
        let (mut h, mut a) = (0u32, 0u32);
        let mut round = 0;
        loop {
            round += 1;
            for shooter_home in [false, true] {
                let edge = if shooter_home { diff } else { -diff };
                let goal = rng.chance(0.32 + 0.02 * edge);
                now += rng.secs(40, 70);
                if goal {
                    *if shooter_home { &mut h } else { &mut a } += 1;
                }
                let ev = feed.push(EventKind::Play, now, 5, 0);
                ev.team = Some(code(shooter_home).to_owned());
                ev.description = Some(format!(
                    "shootout round {round}: {}",
                    if goal { "scores" } else { "stopped" }
                ));
                set_stats(
                    ev,
                    &[("shootout", 1.0), ("goal", f64::from(u8::from(goal)))],
                );
            }
            if round >= 3 && h != a {
                break;
            }
        }
        let home_won = h > a;
        feed.push(EventKind::PeriodEnd, now, 5, 0).description = Some("end of shootout".to_owned());
        if home_won {
            feed.home_score += 1;
        } else {
            feed.away_score += 1;
        }
        text = format!(
            " ({} wins the shootout {}-{})",
            code(home_won),
            h.max(a),
            h.min(a)
        );
    }
    let final_text = format!(
        "Final: {} {}, {} {}{text}",
        m.away, feed.away_score, m.home, feed.home_score
    );
    feed.push(EventKind::GameEnd, now, period, 0).description = Some(final_text);
    feed.events
}
