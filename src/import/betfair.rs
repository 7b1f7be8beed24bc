//! A Betfair Exchange odds stream joined with the score stream of the same cricket match, to
//! [`GameEvent`] JSON lines (`sideline import betfair`): the producer-side join of two feeds.
//!
//! The input is two recordings shipped in the `flumine` 3.3.2 source archive
//! (`examples/data/fetch_betfair.sh` puts them in `data/betfair/`), one JSON message per line,
//! `pt` being the publish time in ms since the epoch:
//!
//! - `<market>` (default `1.200806927`): the Betfair stream's market changes (`op: "mcm"`) for
//!   the MATCH_ODDS market of Netherlands v Papua New Guinea, 3rd T20, 2022-07-11: market
//!   definitions (status, runners) and runner ladders (`atb`, available to back).
//! - `sportsdata/<market>`: Betfair's cricket score stream (`op: "ccm"`) for the same match:
//!   fixture info (teams, expected start, status) and match stats (runs, wickets, overs of
//!   each innings).
//!
//! The output is one game, `sport: cricket`, `game_id` the market id, events ordered by time
//! (`pt`), score-feed events before odds events at equal times, `seq` from 1.
//!
//! # Teams
//!
//! The market's runners, in `sortPriority` order from the first market definition: the first
//! runner is the **home** team, the second the away team. Their names come from the score
//! stream's `homeTeam`/`awayTeam` (`{name, selectionId}`); the importer checks that the score
//! stream's home team is the first runner (it is: Netherlands, selection 228749), and falls back
//! to `fixtureInfo.homeTeam`/`awayTeam` when no selection ids are published.
//!
//! # Odds events
//!
//! The ladders are rebuilt message by message (`img` replaces the cache; a level of size 0 is
//! removed). A runner's price is its **best back price**: the highest price on its `atb` ladder.
//! An `odds` event (`OddsQuote { source: "betfair", home_price, away_price, draw_price: None }`)
//! is emitted when, after a message,
//! - the market status is OPEN,
//! - both runners have a best back price,
//! - the book is formed: `1/home + 1/away <= 1.10` (this skips the placeholder books of the
//!   days before the match, such as 1.01/1.01),
//! - and the pair differs from the last emitted pair.
//!
//! The feed opens at the first score-stream message (about an hour before the start): the odds
//! stream's earlier history (six days of thin pre-match trading) is not emitted, except that
//! the book as it stands at the opening, if it qualifies, is emitted at the opening time.
//! Odds after `game_end` are not emitted. Odds events carry the current period and score,
//! `clock_ms` 0 and no team.
//!
//! # Score events
//!
//! From each score message with match stats, the current innings' entry (`currentInnings`,
//! `inningsStats`) gives a state: batting team, runs, wickets, balls (from `inningsOvers`,
//! `"19.4"` being 19 overs and 4 balls; `"20"` and `"20.0"` are the same). Entries whose batting
//! team is not one of the two teams (the `"0"` placeholder before the toss) are skipped.
//! - A state equal to the previous one is skipped (the stream repeats itself).
//! - **Corrections**: a state is dropped when a later state of the same innings has fewer
//!   runs, wickets or balls (the scorers corrected it: 37 runs at 7.1 overs became 35), so the
//!   published score never falls. The report counts them.
//! - Each remaining state with at least one ball, run or wicket is a `play` event; `team` is the
//!   batting team, `period` the innings, `clock_ms` 0 (cricket has no game clock).
//! - `home_score`/`away_score` are each team's runs (summed over its innings).
//! - A `period_end` closes an innings at the first state of the next innings, and the last
//!   innings at `game_end`: the first message whose fixture status is FINISHED (or the last
//!   state). `game_start` is at the opening (period 1, 0-0), with the fixture's description.
//!
//! Stats of `play` events: `innings` (1, 2, ...), `runs`, `wickets`, `balls` (legal balls of
//! the innings), `overs` (in cricket notation: 19.4 = 19 overs and 4 balls) and, from the
//! second innings on, `target` (the first innings' runs + 1).

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::feed::{read, set_stats, write_events, FeedError, GameFeed};
use crate::event::{EventKind, GameEvent, OddsQuote, Sport};

/// The market of the flumine recordings.
pub const MARKET_ID: &str = "1.200806927";
/// A quote is emitted only when `1/home + 1/away` is at most this.
pub const MAX_OVERROUND: f64 = 1.10;

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunnerDef {
    id: u64,
    status: String,
    #[serde(default)]
    sort_priority: u32,
}

#[derive(Clone, Debug, Deserialize)]
struct MarketDefinition {
    status: String,
    runners: Vec<RunnerDef>,
}

#[derive(Clone, Debug, Deserialize)]
struct RunnerChange {
    id: u64,
    #[serde(default)]
    atb: Vec<(f64, f64)>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MarketChange {
    id: String,
    #[serde(default)]
    img: bool,
    market_definition: Option<MarketDefinition>,
    #[serde(default)]
    rc: Vec<RunnerChange>,
}

#[derive(Clone, Debug, Deserialize)]
struct Mcm {
    op: String,
    pt: u64,
    #[serde(default)]
    mc: Vec<MarketChange>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TeamRef {
    name: String,
    selection_id: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FixtureInfo {
    home_team: Option<String>,
    away_team: Option<String>,
    fixture_status: Option<String>,
    event_description: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InningsStats {
    innings_num: u32,
    batting_team: Option<String>,
    #[serde(default)]
    innings_runs: u32,
    #[serde(default)]
    innings_overs: String,
    #[serde(default)]
    innings_wickets: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MatchStats {
    current_innings: u32,
    #[serde(default)]
    innings_stats: Vec<InningsStats>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CricketChange {
    market_id: Option<String>,
    fixture_info: Option<FixtureInfo>,
    match_stats: Option<MatchStats>,
    home_team: Option<TeamRef>,
    away_team: Option<TeamRef>,
}

#[derive(Clone, Debug, Deserialize)]
struct Ccm {
    op: String,
    pt: u64,
    #[serde(default)]
    cc: Vec<CricketChange>,
}

/// One innings' score at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Score {
    innings: u32,
    /// 0 home batting, 1 away batting.
    side: usize,
    runs: u32,
    wickets: u32,
    balls: u32,
}

/// What the import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BetfairReport {
    pub home: String,
    pub away: String,
    /// Final score `(home runs, away runs)`.
    pub score: (u32, u32),
    pub odds_messages: usize,
    pub score_messages: usize,
    /// Distinct score states read.
    pub states: usize,
    /// States dropped because a later state of the innings corrected them downwards.
    pub corrected: usize,
    pub odds_events: usize,
    pub play_events: usize,
    pub events: usize,
}

fn lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, FeedError> {
    let bytes = read(path)?;
    let mut out = Vec::new();
    for (i, line) in bytes.lines().enumerate() {
        let line = line.map_err(|source| FeedError::Io {
            path: path.to_owned(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let msg = serde_json::from_str(&line)
            .map_err(|e| FeedError::data(path, format!("line {}: {e}", i + 1)))?;
        out.push(msg);
    }
    Ok(out)
}

/// `"19.4"` (overs.balls) to legal balls; `"20"` is 20 overs.
pub fn parse_overs(text: &str) -> Option<u32> {
    let (overs, balls) = text.trim().split_once('.').unwrap_or((text.trim(), "0"));
    let (overs, balls): (u32, u32) = (overs.parse().ok()?, balls.parse().ok()?);
    (balls < 6).then_some(overs * 6 + balls)
}

fn overs_value(balls: u32) -> f64 {
    format!("{}.{}", balls / 6, balls % 6)
        .parse()
        .expect("a decimal number")
}

/// The ladders of a market, rebuilt from its `mcm` messages.
#[derive(Default)]
struct Book {
    status: String,
    /// Runner id to its `atb` ladder: price in hundredths to (price, size).
    atb: BTreeMap<u64, BTreeMap<u64, (f64, f64)>>,
}

impl Book {
    fn apply(&mut self, mc: &MarketChange) {
        if mc.img {
            self.atb.clear();
        }
        if let Some(def) = &mc.market_definition {
            self.status.clone_from(&def.status);
        }
        for rc in &mc.rc {
            let ladder = self.atb.entry(rc.id).or_default();
            for &(price, size) in &rc.atb {
                let key = (price * 100.0).round() as u64;
                if size == 0.0 {
                    ladder.remove(&key);
                } else {
                    ladder.insert(key, (price, size));
                }
            }
        }
    }

    fn best_back(&self, runner: u64) -> Option<f64> {
        self.atb
            .get(&runner)
            .and_then(|l| l.values().next_back())
            .map(|&(p, _)| p)
    }

    /// The quote the module page's rules allow now, if any.
    fn quote(&self, home: u64, away: u64) -> Option<(f64, f64)> {
        let (h, a) = (self.best_back(home)?, self.best_back(away)?);
        (self.status == "OPEN" && 1.0 / h + 1.0 / a <= MAX_OVERROUND).then_some((h, a))
    }
}

/// One item of the joined feed, before numbering.
enum Item {
    Score(Score),
    InningsEnd(u32),
    Odds(f64, f64),
}

/// Imports the market `market` of `dir` (holding `<market>` and `sportsdata/<market>`).
pub fn import_dir(dir: &Path, market: &str) -> Result<(Vec<GameEvent>, BetfairReport), FeedError> {
    let odds_path = dir.join(market);
    let score_path = dir.join("sportsdata").join(market);
    let mcm: Vec<Mcm> = lines(&odds_path)?;
    let ccm: Vec<Ccm> = lines(&score_path)?;
    let mut report = BetfairReport {
        odds_messages: mcm.len(),
        score_messages: ccm.len(),
        ..BetfairReport::default()
    };
    let changes = |m: &Mcm| -> Vec<MarketChange> {
        m.mc.iter().filter(|c| c.id == market).cloned().collect()
    };

    // Runners: first definition, by sortPriority; final statuses: last definition.
    let defs: Vec<MarketDefinition> = mcm
        .iter()
        .filter(|m| m.op == "mcm")
        .flat_map(changes)
        .filter_map(|c| c.market_definition)
        .collect();
    let (Some(first_def), Some(last_def)) = (defs.first(), defs.last()) else {
        return Err(FeedError::data(&odds_path, "no market definition"));
    };
    let mut runners = first_def.runners.clone();
    runners.sort_by_key(|r| r.sort_priority);
    let [home_id, away_id] = runners.iter().map(|r| r.id).collect::<Vec<_>>()[..] else {
        return Err(FeedError::data(&odds_path, "expected a two-runner market"));
    };

    // Team names from the score stream.
    let cc = || {
        ccm.iter()
            .filter(|m| m.op == "ccm")
            .flat_map(|m| m.cc.iter().map(move |c| (m.pt, c)))
            .filter(|(_, c)| c.market_id.as_deref().is_none_or(|id| id == market))
    };
    let mut names: BTreeMap<u64, String> = BTreeMap::new();
    let mut fixture_names = None;
    let mut description = None;
    for (_, c) in cc() {
        for (t, expected) in [(&c.home_team, home_id), (&c.away_team, away_id)] {
            if let Some(t) = t {
                if t.selection_id != expected {
                    return Err(FeedError::data(
                        &score_path,
                        format!(
                            "team {} is selection {}, runner order says {expected}",
                            t.name, t.selection_id
                        ),
                    ));
                }
                names.insert(t.selection_id, t.name.clone());
            }
        }
        if let Some(f) = &c.fixture_info {
            if let (Some(h), Some(a)) = (&f.home_team, &f.away_team) {
                fixture_names.get_or_insert((h.clone(), a.clone()));
            }
            if let Some(d) = &f.event_description {
                description.get_or_insert(d.clone());
            }
        }
    }
    let (home, away) = match (names.get(&home_id), names.get(&away_id), fixture_names) {
        (Some(h), Some(a), _) => (h.clone(), a.clone()),
        (_, _, Some(pair)) => pair,
        _ => return Err(FeedError::data(&score_path, "no team names")),
    };
    let side_of = |team: &str| [&home, &away].iter().position(|t| t.as_str() == team);

    // Score states, deduplicated, then corrections dropped.
    let mut states: Vec<(u64, Score)> = Vec::new();
    let mut finished = None;
    for (pt, c) in cc() {
        if let Some(ms) = &c.match_stats {
            let current = ms
                .innings_stats
                .iter()
                .find(|i| i.innings_num == ms.current_innings);
            let state = current.and_then(|i| {
                Some(Score {
                    innings: i.innings_num,
                    side: side_of(i.batting_team.as_deref()?)?,
                    runs: i.innings_runs,
                    wickets: i.innings_wickets,
                    balls: parse_overs(&i.innings_overs)?,
                })
            });
            if let Some(s) = state {
                if states.last().is_none_or(|(_, last)| *last != s) {
                    states.push((pt, s));
                }
            }
        }
        let done = c
            .fixture_info
            .as_ref()
            .and_then(|f| f.fixture_status.as_deref());
        if done == Some("FINISHED") && !states.is_empty() && finished.is_none() {
            finished = Some(pt);
        }
    }
    report.states = states.len();
    let mut keep = vec![true; states.len()];
    let mut mins: BTreeMap<u32, (u32, u32, u32)> = BTreeMap::new();
    for (i, (_, s)) in states.iter().enumerate().rev() {
        let m = mins
            .entry(s.innings)
            .or_insert((u32::MAX, u32::MAX, u32::MAX));
        keep[i] = s.runs <= m.0 && s.wickets <= m.1 && s.balls <= m.2;
        *m = (m.0.min(s.runs), m.1.min(s.wickets), m.2.min(s.balls));
    }
    report.corrected = keep.iter().filter(|k| !**k).count();
    let states: Vec<(u64, Score)> = states
        .into_iter()
        .zip(keep)
        .filter_map(|(s, k)| k.then_some(s))
        .collect();

    let open = ccm
        .first()
        .map(|m| m.pt)
        .ok_or_else(|| FeedError::data(&score_path, "empty score stream"))?;
    let end = finished
        .or(states.last().map(|(t, _)| *t))
        .unwrap_or(open)
        .max(states.last().map_or(open, |(t, _)| *t));

    // The joined timeline: (time, class, item), class 0 = score stream, 1 = odds.
    let mut items: Vec<(u64, u8, Item)> = Vec::new();
    let mut innings = 1;
    for &(t, s) in &states {
        if s.innings != innings {
            items.push((t, 0, Item::InningsEnd(innings)));
            innings = s.innings;
        }
        if s.runs + s.wickets + s.balls > 0 {
            items.push((t, 0, Item::Score(s)));
        }
    }
    let mut book = Book::default();
    let mut before_open = None;
    let mut last_quote = None;
    for m in mcm.iter().filter(|m| m.op == "mcm") {
        for c in changes(m) {
            book.apply(&c);
        }
        let quote = book.quote(home_id, away_id);
        if m.pt < open {
            before_open = quote;
            continue;
        }
        if let Some(q) = before_open.take() {
            last_quote = Some(q);
            items.push((open, 1, Item::Odds(q.0, q.1)));
        }
        if m.pt > end {
            break;
        }
        if let Some(q) = quote.filter(|q| Some(*q) != last_quote) {
            last_quote = Some(q);
            items.push((m.pt, 1, Item::Odds(q.0, q.1)));
        }
    }
    items.sort_by_key(|(t, class, _)| (*t, *class));

    let mut feed = GameFeed::new(Sport::Cricket, market, &home, &away);
    feed.push(EventKind::GameStart, open, 1, 0).description =
        Some(description.unwrap_or(format!("{home} v {away}")));
    let mut runs: BTreeMap<(u32, usize), u32> = BTreeMap::new();
    let mut last: BTreeMap<u32, Score> = BTreeMap::new();
    let mut period = 1;
    for (t, _, item) in items {
        match item {
            Item::InningsEnd(i) => {
                feed.push(EventKind::PeriodEnd, t, i, 0).description =
                    Some(format!("End of innings {i}"));
                period = i + 1;
            }
            Item::Odds(h, a) => {
                feed.push(EventKind::Odds, t, period, 0).odds = Some(OddsQuote {
                    source: "betfair".to_owned(),
                    home_price: h,
                    away_price: a,
                    draw_price: None,
                });
                report.odds_events += 1;
            }
            Item::Score(s) => {
                period = s.innings;
                runs.insert((s.innings, s.side), s.runs);
                let total = |side| -> u32 {
                    runs.iter()
                        .filter(|((_, sd), _)| *sd == side)
                        .map(|(_, r)| r)
                        .sum()
                };
                (feed.home_score, feed.away_score) = (total(0), total(1));
                let prev = last.get(&s.innings).copied();
                let what = match prev {
                    Some(p) if s.wickets > p.wickets => "wicket".to_owned(),
                    Some(p) if s.runs == p.runs + 1 => "1 run".to_owned(),
                    Some(p) if s.runs > p.runs => format!("{} runs", s.runs - p.runs),
                    None if s.runs == 1 => "1 run".to_owned(),
                    None if s.runs > 0 => format!("{} runs", s.runs),
                    _ => "no run".to_owned(),
                };
                last.insert(s.innings, s);
                let team = if s.side == 0 { &home } else { &away };
                let target = runs
                    .iter()
                    .filter(|((i, sd), _)| *i < s.innings && *sd != s.side)
                    .map(|(_, r)| *r)
                    .sum::<u32>();
                let ev = feed.push(EventKind::Play, t, s.innings, 0);
                ev.team = Some(team.clone());
                ev.description = Some(format!(
                    "{team} {}/{} ({} ov): {what}",
                    s.runs,
                    s.wickets,
                    overs_value(s.balls)
                ));
                set_stats(
                    ev,
                    &[
                        ("innings", f64::from(s.innings)),
                        ("runs", f64::from(s.runs)),
                        ("wickets", f64::from(s.wickets)),
                        ("balls", f64::from(s.balls)),
                        ("overs", overs_value(s.balls)),
                    ],
                );
                if s.innings > 1 {
                    ev.stats.insert("target".to_owned(), f64::from(target + 1));
                }
                report.play_events += 1;
            }
        }
    }
    feed.push(EventKind::PeriodEnd, end, period, 0).description =
        Some(format!("End of innings {period}"));
    let summary = |side: usize| {
        let team = if side == 0 { &home } else { &away };
        let inns: Vec<String> = last
            .values()
            .filter(|s| s.side == side)
            .map(|s| format!("{}/{} ({} ov)", s.runs, s.wickets, overs_value(s.balls)))
            .collect();
        format!("{team} {}", inns.join(" & "))
    };
    let settled: Vec<String> = [(home_id, &home), (away_id, &away)]
        .iter()
        .filter_map(|(id, name)| {
            let r = last_def.runners.iter().find(|r| r.id == *id)?;
            Some(format!("{name} {}", r.status))
        })
        .collect();
    feed.push(EventKind::GameEnd, end, period, 0).description = Some(format!(
        "Final: {}, {}; market {}: {}",
        summary(0),
        summary(1),
        last_def.status,
        settled.join(", ")
    ));
    report.home = home;
    report.away = away;
    report.score = (feed.home_score, feed.away_score);
    report.events = feed.events.len();
    Ok((feed.events, report))
}

/// `sideline import betfair`: a Betfair odds stream and its cricket score stream, joined.
#[derive(Clone, Debug, clap::Args)]
pub struct ImportBetfairArgs {
    /// The recordings unpacked by `examples/data/fetch_betfair.sh` (`<market>` and
    /// `sportsdata/<market>`).
    #[arg(long, value_name = "DIR", default_value = "data/betfair")]
    pub data: PathBuf,
    /// The market id (file name) to import.
    #[arg(long, default_value = MARKET_ID)]
    pub market: String,
    /// Output file; `-` or absent: stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Runs `sideline import betfair`: writes the events, then a summary on stderr.
pub fn run(args: ImportBetfairArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let (events, r) = import_dir(&args.data, &args.market)
        .with_context(|| format!("importing {}", args.data.display()))?;
    write_events(&events, args.out.as_deref())?;
    eprintln!(
        "{}: {} {} - {} {}; {} events ({} odds from {} messages, {} plays from {} score states, {} corrected states dropped)",
        args.market,
        r.home,
        r.score.0,
        r.score.1,
        r.away,
        r.events,
        r.odds_events,
        r.odds_messages,
        r.play_events,
        r.states,
        r.corrected
    );
    Ok(())
}
