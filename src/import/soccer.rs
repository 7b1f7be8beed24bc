//! StatsBomb event data to [`GameEvent`] JSON lines (`sideline import soccer`).
//!
//! The input is the three full matches of StatsBomb open data that ship as test files in the
//! `kloppy` 3.19.1 wheel (`examples/data/fetch_soccer.sh` puts them in `data/kloppy/`): one
//! `*_event.json` (every on-ball event) and one `*_lineup.json` per match. The output is one
//! `GameEvent` per line, the three matches interleaved by event time; it is deterministic.
//!
//! | game_id | files | match | result |
//! |---|---|---|---|
//! | `15946` | `statsbomb_event.json`, `statsbomb_lineup.json` | Barcelona v Deportivo Alavés, La Liga, 2018-08-18 | 3-0 |
//! | `15986` | `statsbomb_15986_*.json` | Barcelona v Girona, La Liga, 2018-09-23 | 2-2 |
//! | `3788741` | `statsbomb_3788741_*.json` | Turkey v Italy, Euro 2020, 2021-06-11 | 0-3 |
//!
//! The files carry neither match id nor date. `15946` is the StatsBomb id of the first file's
//! match (kloppy's default open-data match); the dates are those of the matches (public record,
//! consistent with the teams and goal minutes in the files).
//!
//! # Cleaning
//!
//! kloppy adds hand-made events to `statsbomb_event.json` for its own tests. They are dropped,
//! by two rules that real StatsBomb data never trips, and counted in the report:
//! - an event whose `id` is not a UUID (the "Own Goal For"/"Own Goal Against" pair at index
//!   4005-4006, which would otherwise give Alavés a goal the real match did not have);
//! - an event whose `index` was already seen (three copies of indexes 1501 and 1809 appended
//!   at the end of the file); the first one in file order is kept.
//!
//! Events are then taken in `index` order (StatsBomb's own order of play).
//!
//! # Events of one match
//!
//! - `sport` `soccer`; `home`/`away` are the StatsBomb team names, home being the team of the
//!   first "Starting XI" event (StatsBomb lists the home team first).
//! - `game_start` (period 1, clock 0, 0-0); then the selected events; a `period_end` after the
//!   last event of each period; `game_end` with the final score.
//! - **Plays** (`kind: play`): every Pass, Shot, Own Goal Against, Foul Committed, Bad Behaviour
//!   (cards), Interception, Ball Recovery, Dispossessed, Miscontrol, Clearance, Offside and Error;
//!   and the first on-ball event (the event's team is the possession team) of every new
//!   possession, whatever its type, so no change of possession is missed.
//! - **Stoppages** (`kind: timeout`): Substitution and Injury Stoppage.
//! - Everything else (Ball Receipt, Carry, Pressure, Duel, Goal Keeper, Starting XI, Half
//!   Start/End, Camera, Tactical Shift, Own Goal For, ...) is not emitted.
//! - `team` is the team performing the event (the passer's, shooter's, fouler's team), `player`
//!   the player's nickname from the lineup file (else the event's full name), `description` the
//!   StatsBomb type with its outcome (`"Shot: Goal, xG 0.76"`, `"Pass: Incomplete"`).
//!
//! # Score
//!
//! A Shot whose outcome is Goal adds one to its team; an Own Goal Against adds one to the
//! *other* team. `home_score`/`away_score` are the score after the event.
//!
//! # Stats
//!
//! Absent means 0 (`GameEvent::stat`). On every play:
//! - `possession_id`: StatsBomb's `possession` number (1, 2, ... within the match);
//! - `home_possession`: 1 when the home team is in possession (`possession_team`), else 0.
//!
//! By type:
//! - Pass: `pass` 1, `pass_complete` 1 when the pass has no outcome (StatsBomb's complete
//!   pass), else 0.
//! - Shot: `shot` 1, `xg` (`statsbomb_xg`), `on_target` (outcome Goal, Saved or Saved To Post:
//!   1, else 0), `goal` (1 on a goal, else 0), `penalty` (1 on a penalty kick, absent otherwise).
//! - Own Goal Against: `own_goal` 1 (the goal counts for the other team; `goal` is not set).
//! - Foul Committed: `foul` 1; with a card, `card` 1 and, for a red or second yellow,
//!   `red_card` 1. Bad Behaviour with a card: `card` (and `red_card`) the same way.
//!
//! # Clock and event time
//!
//! - `clock_ms` counts **up**: the ms played in the period (StatsBomb's `timestamp`), added time
//!   included; it is raised to the period's previous value when a timestamp runs backwards (a
//!   few Ball Receipts are stamped 00:00:01 at the end of a half).
//! - `event_time_ms = kickoff + period start + clock`. Kick-off is 19:00 UTC on the match date
//!   (the hour is a convention: the files have none). Period 1 starts at 0; each later period
//!   starts after the previous one's length (its Half End timestamp, else its last event) plus
//!   a break: 15 minutes after period 1 (half time), 5 minutes after later periods. So event
//!   time never falls; where it would (the clamped timestamps), it keeps the previous value.
//! - `period_end` carries the period's length as its clock; `game_end` the last event's time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::feed::{interleave, read_json, set_stats, utc_ms, write_events, FeedError, GameFeed};
use crate::event::{EventKind, GameEvent, Sport};

/// One match of the data set.
#[derive(Clone, Copy, Debug)]
pub struct MatchFile {
    pub game_id: &'static str,
    pub events: &'static str,
    pub lineup: &'static str,
    /// Match date `(year, month, day)`.
    pub date: (i32, u32, u32),
}

/// The three matches, as on the module page.
pub const MATCHES: [MatchFile; 3] = [
    MatchFile {
        game_id: "15946",
        events: "statsbomb_event.json",
        lineup: "statsbomb_lineup.json",
        date: (2018, 8, 18),
    },
    MatchFile {
        game_id: "15986",
        events: "statsbomb_15986_event.json",
        lineup: "statsbomb_15986_lineup.json",
        date: (2018, 9, 23),
    },
    MatchFile {
        game_id: "3788741",
        events: "statsbomb_3788741_event.json",
        lineup: "statsbomb_3788741_lineup.json",
        date: (2021, 6, 11),
    },
];

/// Kick-off hour (UTC) on the match date: a convention, see the module page.
pub const KICKOFF_HOUR_UTC: u32 = 19;
const MIN: u64 = 60_000;

#[derive(Clone, Debug, Deserialize)]
struct Named {
    #[serde(default)]
    id: u64,
    name: String,
}

#[derive(Clone, Debug, Deserialize)]
struct Card {
    card: Option<Named>,
}

#[derive(Clone, Debug, Deserialize)]
struct ShotDoc {
    statsbomb_xg: Option<f64>,
    outcome: Named,
    #[serde(rename = "type")]
    kind: Option<Named>,
}

#[derive(Clone, Debug, Deserialize)]
struct PassDoc {
    outcome: Option<Named>,
}

#[derive(Clone, Debug, Deserialize)]
struct SubstitutionDoc {
    replacement: Option<Named>,
}

/// The fields of a StatsBomb event that the importer reads.
#[derive(Clone, Debug, Deserialize)]
struct SbEvent {
    id: String,
    index: u64,
    period: u32,
    timestamp: String,
    #[serde(rename = "type")]
    kind: Named,
    #[serde(default)]
    possession: u64,
    possession_team: Option<Named>,
    team: Option<Named>,
    player: Option<Named>,
    shot: Option<ShotDoc>,
    pass: Option<PassDoc>,
    foul_committed: Option<Card>,
    bad_behaviour: Option<Card>,
    substitution: Option<SubstitutionDoc>,
}

#[derive(Clone, Debug, Deserialize)]
struct LineupPlayer {
    player_id: u64,
    player_name: String,
    player_nickname: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct LineupTeam {
    lineup: Vec<LineupPlayer>,
}

/// What the import of one match did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MatchReport {
    pub game_id: String,
    pub home: String,
    pub away: String,
    /// Final score `(home, away)`.
    pub score: (u32, u32),
    /// Events in the file.
    pub read: usize,
    /// Events dropped because their id is not a UUID.
    pub dropped_bad_id: usize,
    /// Events dropped because their index repeats an earlier one.
    pub dropped_repeated_index: usize,
    /// Events written.
    pub events: usize,
}

fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `"00:01:49.042"` to milliseconds.
pub fn parse_timestamp(ts: &str) -> Option<u64> {
    let mut parts = ts.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let frac_ms: u64 = match frac.len() {
        1..=3 => frac.parse::<u64>().ok()? * 10u64.pow(3 - frac.len() as u32),
        _ => frac.get(..3)?.parse().ok()?,
    };
    let (h, m, secs): (u64, u64, u64) = (h.parse().ok()?, m.parse().ok()?, secs.parse().ok()?);
    (m < 60 && secs < 60).then_some(((h * 60 + m) * 60 + secs) * 1000 + frac_ms)
}

/// The type of event a StatsBomb event becomes, if any (before the new-possession rule).
fn classify(type_name: &str) -> Option<EventKind> {
    match type_name {
        "Pass" | "Shot" | "Own Goal Against" | "Foul Committed" | "Bad Behaviour"
        | "Interception" | "Ball Recovery" | "Dispossessed" | "Miscontrol" | "Clearance"
        | "Offside" | "Error" => Some(EventKind::Play),
        "Substitution" | "Injury Stoppage" => Some(EventKind::Timeout),
        _ => None,
    }
}

/// Types never emitted, even when they open a possession.
const NEVER: [&str; 10] = [
    "Starting XI",
    "Half Start",
    "Half End",
    "Camera On",
    "Camera off",
    "Tactical Shift",
    "Player On",
    "Player Off",
    "Own Goal For",
    "Referee Ball-Drop",
];

fn card_stats(card: Option<&Card>) -> Vec<(&'static str, f64)> {
    match card.and_then(|c| c.card.as_ref()).map(|c| c.name.as_str()) {
        Some("Red Card" | "Second Yellow") => vec![("card", 1.0), ("red_card", 1.0)],
        Some(_) => vec![("card", 1.0)],
        None => vec![],
    }
}

fn ordinal_period(p: u32) -> String {
    match p {
        1 => "1st half".to_owned(),
        2 => "2nd half".to_owned(),
        3 => "extra time, 1st half".to_owned(),
        4 => "extra time, 2nd half".to_owned(),
        n => format!("period {n}"),
    }
}

/// Converts one match, by the rules of the module page.
pub fn import_match(dir: &Path, m: &MatchFile) -> Result<(Vec<GameEvent>, MatchReport), FeedError> {
    let path = dir.join(m.events);
    let mut raw: Vec<SbEvent> = read_json(&path)?;
    let lineup: Vec<LineupTeam> = read_json(&dir.join(m.lineup))?;
    let names: BTreeMap<u64, String> = lineup
        .iter()
        .flat_map(|t| &t.lineup)
        .map(|p| {
            let name = p.player_nickname.clone().unwrap_or(p.player_name.clone());
            (p.player_id, name)
        })
        .collect();

    let mut report = MatchReport {
        game_id: m.game_id.to_owned(),
        read: raw.len(),
        ..MatchReport::default()
    };
    let mut seen = BTreeSet::new();
    raw.retain(|e| {
        if !is_uuid(&e.id) {
            report.dropped_bad_id += 1;
            false
        } else if !seen.insert(e.index) {
            report.dropped_repeated_index += 1;
            false
        } else {
            true
        }
    });
    raw.sort_by_key(|e| e.index);

    let xi: Vec<&str> = raw
        .iter()
        .filter(|e| e.kind.name == "Starting XI")
        .filter_map(|e| e.team.as_ref().map(|t| t.name.as_str()))
        .collect();
    let [home, away] = xi[..] else {
        return Err(FeedError::data(&path, "expected two Starting XI events"));
    };
    let (home, away) = (home.to_owned(), away.to_owned());

    let mut times = Vec::with_capacity(raw.len());
    for e in &raw {
        let t = parse_timestamp(&e.timestamp).ok_or_else(|| {
            FeedError::data(
                &path,
                format!("index {}: timestamp {:?}", e.index, e.timestamp),
            )
        })?;
        times.push(t);
    }
    // Period lengths: the Half End timestamp, else the last event's.
    let mut length: BTreeMap<u32, u64> = BTreeMap::new();
    let mut half_end: BTreeMap<u32, u64> = BTreeMap::new();
    for (e, &t) in raw.iter().zip(&times) {
        let l = length.entry(e.period).or_insert(0);
        *l = (*l).max(t);
        if e.kind.name == "Half End" {
            let h = half_end.entry(e.period).or_insert(0);
            *h = (*h).max(t);
        }
    }
    for (p, t) in half_end {
        length.insert(p, t);
    }
    let mut start: BTreeMap<u32, u64> = BTreeMap::new();
    let mut next = 0;
    for (&p, &len) in &length {
        start.insert(p, next);
        next += len + if p == 1 { 15 * MIN } else { 5 * MIN };
    }

    let (y, mo, d) = m.date;
    let kickoff = utc_ms(y, mo, d, KICKOFF_HOUR_UTC, 0);
    let mut feed = GameFeed::new(Sport::Soccer, m.game_id, &home, &away);
    let first_period = raw.first().map_or(1, |e| e.period);
    feed.push(EventKind::GameStart, kickoff, first_period, 0)
        .description = Some(format!("{home} v {away}"));

    let period_end = |feed: &mut GameFeed, p: u32, clock: u64| {
        let clock = clock.max(length.get(&p).copied().unwrap_or(0));
        let t = kickoff + start.get(&p).copied().unwrap_or(0) + clock;
        feed.push(EventKind::PeriodEnd, t, p, clock).description =
            Some(format!("End of the {}", ordinal_period(p)));
    };

    let (mut period, mut clock) = (first_period, 0u64);
    let mut last_possession: Option<u64> = None;
    for (e, &ts) in raw.iter().zip(&times) {
        if e.period != period {
            period_end(&mut feed, period, clock);
            (period, clock) = (e.period, 0);
        }
        clock = clock.max(ts);
        let name = e.kind.name.as_str();
        let team = e.team.as_ref().map(|t| t.name.as_str());
        let poss_team = e.possession_team.as_ref().map(|t| t.name.as_str());
        let kind = match classify(name) {
            Some(k) => k,
            None if !NEVER.contains(&name)
                && team.is_some()
                && team == poss_team
                && last_possession != Some(e.possession) =>
            {
                EventKind::Play
            }
            None => continue,
        };
        let mut stats: Vec<(&str, f64)> = Vec::new();
        let mut text = name.to_owned();
        let is_home = team == Some(home.as_str());
        match (name, &e.shot, &e.pass) {
            ("Shot", Some(s), _) => {
                let outcome = s.outcome.name.as_str();
                let goal = outcome == "Goal";
                let on_target = matches!(outcome, "Goal" | "Saved" | "Saved To Post");
                let xg = s.statsbomb_xg.unwrap_or(0.0);
                stats.extend([
                    ("shot", 1.0),
                    ("xg", xg),
                    ("on_target", f64::from(u8::from(on_target))),
                    ("goal", f64::from(u8::from(goal))),
                ]);
                if s.kind.as_ref().is_some_and(|k| k.name == "Penalty") {
                    stats.push(("penalty", 1.0));
                }
                if goal {
                    if is_home {
                        feed.home_score += 1;
                    } else {
                        feed.away_score += 1;
                    }
                }
                text = format!("Shot: {outcome}, xG {xg:.2}");
            }
            ("Pass", _, Some(p)) => {
                stats.push(("pass", 1.0));
                stats.push(("pass_complete", f64::from(u8::from(p.outcome.is_none()))));
                if let Some(o) = &p.outcome {
                    text = format!("Pass: {}", o.name);
                }
            }
            ("Own Goal Against", _, _) => {
                stats.push(("own_goal", 1.0));
                if is_home {
                    feed.away_score += 1;
                } else {
                    feed.home_score += 1;
                }
            }
            ("Foul Committed", _, _) => {
                stats.push(("foul", 1.0));
                stats.extend(card_stats(e.foul_committed.as_ref()));
            }
            ("Bad Behaviour", _, _) => stats.extend(card_stats(e.bad_behaviour.as_ref())),
            _ => {}
        }
        let card = e
            .foul_committed
            .as_ref()
            .or(e.bad_behaviour.as_ref())
            .and_then(|c| c.card.as_ref());
        if let Some(c) = card {
            text = format!("{name}: {}", c.name);
        }
        let player = e
            .player
            .as_ref()
            .map(|p| names.get(&p.id).cloned().unwrap_or(p.name.clone()));
        if name == "Substitution" {
            let on = e
                .substitution
                .as_ref()
                .and_then(|s| s.replacement.as_ref())
                .map(|r| names.get(&r.id).cloned().unwrap_or(r.name.clone()));
            text = format!(
                "Substitution: {} off, {} on",
                player.as_deref().unwrap_or("?"),
                on.as_deref().unwrap_or("?")
            );
        }
        if kind == EventKind::Play {
            last_possession = Some(e.possession);
            stats.push(("possession_id", e.possession as f64));
            let home_poss = poss_team == Some(home.as_str());
            stats.push(("home_possession", f64::from(u8::from(home_poss))));
        }
        let start_p = start.get(&e.period).copied().unwrap_or(0);
        let ev = feed.push(kind, kickoff + start_p + clock, e.period, clock);
        ev.team = team.map(str::to_owned);
        ev.player = player;
        ev.description = Some(text);
        set_stats(ev, &stats);
    }
    period_end(&mut feed, period, clock);
    let last = feed.events.last().expect("period_end pushed").clone();
    let (hs, aws) = (feed.home_score, feed.away_score);
    feed.push(
        EventKind::GameEnd,
        last.event_time_ms,
        period,
        last.clock_ms,
    )
    .description = Some(format!("Final: {home} {hs}, {away} {aws}"));

    report.home = home;
    report.away = away;
    report.score = (hs, aws);
    report.events = feed.events.len();
    Ok((feed.events, report))
}

/// Imports the three matches of `dir` (`data/kloppy`), interleaved by event time.
pub fn import_dir(dir: &Path) -> Result<(Vec<GameEvent>, Vec<MatchReport>), FeedError> {
    let mut events = Vec::new();
    let mut reports = Vec::new();
    for m in &MATCHES {
        let (ev, report) = import_match(dir, m)?;
        events.extend(ev);
        reports.push(report);
    }
    interleave(&mut events);
    Ok((events, reports))
}

/// `sideline import soccer`: StatsBomb events (from the kloppy wheel) to GameEvent JSON lines.
#[derive(Clone, Debug, clap::Args)]
pub struct ImportSoccerArgs {
    /// The StatsBomb files unpacked by `examples/data/fetch_soccer.sh`.
    #[arg(long, value_name = "DIR", default_value = "data/kloppy")]
    pub data: PathBuf,
    /// Output file; `-` or absent: stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Runs `sideline import soccer`: writes the events, then one summary line per match on stderr.
pub fn run(args: ImportSoccerArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let (events, reports) =
        import_dir(&args.data).with_context(|| format!("importing {}", args.data.display()))?;
    write_events(&events, args.out.as_deref())?;
    for r in &reports {
        eprintln!(
            "{}: {} {}-{} {}; {} events from {} (dropped {} with a bad id, {} repeated indexes)",
            r.game_id,
            r.home,
            r.score.0,
            r.score.1,
            r.away,
            r.events,
            r.read,
            r.dropped_bad_id,
            r.dropped_repeated_index
        );
    }
    Ok(())
}
