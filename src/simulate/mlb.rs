//! Simulated MLB games.
//!
//! - Nine innings, the away team batting in the top half, the home team in the bottom; the
//!   bottom of the 9th (or later) is not played when the home team leads, and ends as soon as
//!   the home team goes ahead (walk-off). Tied after nine: extra innings, each half starting
//!   with a runner on second (MLB's rule since 2020). `period` is the inning; there is no game
//!   clock (`clock_ms` 0).
//! - One `play` event per plate appearance. Outcome probabilities (league-like): strikeout
//!   0.225, walk 0.085, hit by pitch 0.011, single 0.142, double 0.045, triple 0.004, home run
//!   0.031, otherwise an out in play. Hits and home runs rise (and strikeouts fall) by
//!   `0.012 * (batting - pitching strength)`, plus 0.004 at home (0.004 less away).
//! - Runners: walks force; a single scores a runner from third, from second 60% of the time,
//!   takes a runner from first to third 28% of the time; a double scores runners from second and
//!   third and from first 40% of the time; triples and home runs clear the bases. An out in play
//!   with a runner on first and fewer than two outs is a double play 12% of the time; with fewer
//!   than two outs after it, a runner on third scores 35% of the time (sacrifice fly, ground
//!   out).
//! - The count at the end of the plate appearance: 3 strikes on a strikeout, 4 balls on a walk,
//!   otherwise 0-3 balls and 0-2 strikes.
//! - Real time: each pitch 16-22 s (the count's pitches, up to two fouls, and the ball in play),
//!   15-25 s between batters, 2 min 5 s between half innings, pitching changes (`timeout`
//!   events, from the 6th inning on, 10% of half innings and 3% of plate appearances) 2-3 min.
//!
//! Events: `game_start`, one `play` per plate appearance, `timeout` for pitching changes,
//! `period_end` after each complete inning (and after the last half played), `game_end`.
//! `team` is the batting team.
//!
//! Stats of a plate appearance (absent = 0): `balls`, `strikes` (the final count), `outs`
//! (outs in the half inning after the play), `runs` (scored on the play), `hit` 1 on a hit,
//! `home_run`, `strikeout`, `walk` (walks and hit by pitch) 1, `on_first`, `on_second`,
//! `on_third` (1 when the base is occupied after the play), `bottom` (1 in the bottom half).

use super::{Matchup, Rng, SEC};
use crate::event::{EventKind, GameEvent, Sport};
use crate::import::feed::{set_stats, GameFeed};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Strikeout,
    Walk,
    HitByPitch,
    Single,
    Double,
    Triple,
    HomeRun,
    Out,
}

fn outcome(rng: &mut Rng, adj: f64) -> Outcome {
    let table = [
        (Outcome::Strikeout, 0.225 - adj),
        (Outcome::Walk, 0.085),
        (Outcome::HitByPitch, 0.011),
        (Outcome::Single, 0.142 + 0.5 * adj),
        (Outcome::Double, 0.045 + 0.25 * adj),
        (Outcome::Triple, 0.004),
        (Outcome::HomeRun, 0.031 + 0.25 * adj),
    ];
    let mut r = rng.uniform();
    for (o, p) in table {
        if r < p {
            return o;
        }
        r -= p;
    }
    Outcome::Out
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Simulates one game.
pub fn game(m: &Matchup, rng: &mut Rng) -> Vec<GameEvent> {
    let mut feed = GameFeed::new(Sport::Mlb, &m.game_id, m.home, m.away);
    let mut now = m.start_ms;
    let start = feed.push(EventKind::GameStart, now, 1, 0);
    start.team = Some(m.away.to_owned());
    start.description = Some(format!("{} at {}", m.away, m.home));

    let mut inning = 1u32;
    let mut over = false;
    loop {
        for bottom in [false, true] {
            if bottom && inning >= 9 && feed.home_score > feed.away_score {
                over = true;
                break;
            }
            let (bat, bat_s, pitch_s) = if bottom {
                (m.home, m.home_strength, m.away_strength)
            } else {
                (m.away, m.away_strength, m.home_strength)
            };
            let adj = 0.012 * (bat_s - pitch_s) + if bottom { 0.004 } else { -0.004 };
            let mut bases = [false, inning > 9, false];
            let mut outs = 0u32;
            if inning >= 6 && rng.chance(0.10) {
                now += rng.secs(120, 180);
                feed.push(EventKind::Timeout, now, inning, 0).description =
                    Some("pitching change".to_owned());
            }
            while outs < 3 {
                let o = outcome(rng, adj);
                let (balls, strikes) = match o {
                    Outcome::Strikeout => (rng.range(0, 3), 3),
                    Outcome::Walk => (4, rng.range(0, 2)),
                    _ => (rng.range(0, 3), rng.range(0, 2)),
                };
                let fouls = if strikes == 2 { rng.range(0, 2) } else { 0 };
                let in_play = u64::from(!matches!(
                    o,
                    Outcome::Strikeout | Outcome::Walk | Outcome::HitByPitch
                ));
                let pitches = balls + strikes + fouls + in_play;
                now += pitches * rng.range(16 * SEC, 22 * SEC) + rng.secs(15, 25);

                let mut runs = 0u32;
                let mut score = |on: &mut bool| {
                    if std::mem::take(on) {
                        runs += 1;
                    }
                };
                let [mut first, mut second, mut third] = bases;
                let text = match o {
                    Outcome::Strikeout => {
                        outs += 1;
                        "strikeout"
                    }
                    Outcome::Walk | Outcome::HitByPitch => {
                        if first {
                            if second {
                                if third {
                                    score(&mut third);
                                }
                                third = true;
                            }
                            second = true;
                        }
                        first = true;
                        if o == Outcome::Walk {
                            "walk"
                        } else {
                            "hit by pitch"
                        }
                    }
                    Outcome::Single => {
                        score(&mut third);
                        if second {
                            if rng.chance(0.6) {
                                score(&mut second);
                            } else {
                                second = false;
                                third = true;
                            }
                        }
                        if first {
                            if !third && rng.chance(0.28) {
                                third = true;
                            } else {
                                second = true;
                            }
                        }
                        first = true;
                        "single"
                    }
                    Outcome::Double => {
                        score(&mut third);
                        score(&mut second);
                        if first {
                            first = false;
                            if rng.chance(0.4) {
                                runs += 1;
                            } else {
                                third = true;
                            }
                        }
                        second = true;
                        "double"
                    }
                    Outcome::Triple | Outcome::HomeRun => {
                        score(&mut first);
                        score(&mut second);
                        score(&mut third);
                        if o == Outcome::Triple {
                            third = true;
                            "triple"
                        } else {
                            runs += 1;
                            "home run"
                        }
                    }
                    Outcome::Out => {
                        let double_play = first && outs < 2 && rng.chance(0.12);
                        outs += if double_play { 2 } else { 1 };
                        if double_play {
                            first = false;
                        }
                        if outs < 3 && third && rng.chance(0.35) {
                            score(&mut third);
                        }
                        if double_play {
                            "double play"
                        } else {
                            "out in play"
                        }
                    }
                };
                bases = [first, second, third];
                if bottom {
                    feed.home_score += runs;
                } else {
                    feed.away_score += runs;
                }
                let hit = matches!(
                    o,
                    Outcome::Single | Outcome::Double | Outcome::Triple | Outcome::HomeRun
                );
                let flag = |b: bool| f64::from(u8::from(b));
                let ev = feed.push(EventKind::Play, now, inning, 0);
                ev.team = Some(bat.to_owned());
                ev.description = Some(match runs {
                    0 => text.to_owned(),
                    1 => format!("{text}, 1 run scores"),
                    n => format!("{text}, {n} runs score"),
                });
                set_stats(
                    ev,
                    &[
                        ("balls", balls as f64),
                        ("strikes", strikes as f64),
                        ("outs", f64::from(outs)),
                        ("runs", f64::from(runs)),
                        ("hit", flag(hit)),
                        ("home_run", flag(o == Outcome::HomeRun)),
                        ("strikeout", flag(o == Outcome::Strikeout)),
                        (
                            "walk",
                            flag(matches!(o, Outcome::Walk | Outcome::HitByPitch)),
                        ),
                        ("on_first", flag(first)),
                        ("on_second", flag(second)),
                        ("on_third", flag(third)),
                        ("bottom", flag(bottom)),
                    ],
                );
                ev.stats.retain(|_, v| *v != 0.0);
                if bottom && inning >= 9 && feed.home_score > feed.away_score {
                    over = true;
                    break;
                }
                if outs < 3 && inning >= 6 && rng.chance(0.03) {
                    now += rng.secs(120, 180);
                    feed.push(EventKind::Timeout, now, inning, 0).description =
                        Some("pitching change".to_owned());
                }
            }
            if over {
                break;
            }
            if !bottom {
                now += 125 * SEC;
            }
        }
        feed.push(EventKind::PeriodEnd, now, inning, 0).description =
            Some(format!("end of the {} inning", ordinal(inning)));
        if over || (inning >= 9 && feed.home_score != feed.away_score) {
            break;
        }
        now += 125 * SEC;
        inning += 1;
    }
    let text = format!(
        "Final: {} {}, {} {}",
        m.away, feed.away_score, m.home, feed.home_score
    );
    feed.push(EventKind::GameEnd, now, inning, 0).description = Some(text);
    feed.events
}
