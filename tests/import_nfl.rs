//! The NFL importer: the parsing rules on hand-worked examples, one small hand-made game, and the
//! invariants of the committed fixture `examples/data/nfl/games.jsonl` (no full data set needed).

use std::collections::BTreeMap;

use sideline::event::{EventKind, GameEvent, Sport};
use sideline::import::nfl::{
    elapsed_ms, import_game, overtime_ms, parse_clock, parse_number_list, score_correction,
    yards_to_goal, GameDoc, ScheduleEntry, SeasonType,
};

const MIN: u64 = 60_000;

fn fixture_lines() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/nfl/games.jsonl");
    let text = std::fs::read_to_string(path).expect("fixture present");
    text.lines().map(str::to_owned).collect()
}

fn entry(eid: &str, time: &str, meridiem: Option<&str>, season_type: SeasonType) -> ScheduleEntry {
    ScheduleEntry {
        eid: eid.to_owned(),
        season: 2018,
        week: 1,
        season_type,
        month: eid[4..6].parse().unwrap(),
        day: eid[6..8].parse().unwrap(),
        time: time.to_owned(),
        meridiem: meridiem.map(str::to_owned),
        home: "PHI".to_owned(),
        away: "ATL".to_owned(),
    }
}

#[test]
fn clock_parsing() {
    assert_eq!(parse_clock("15:00"), Some(15 * MIN));
    assert_eq!(parse_clock("04:41"), Some(4 * MIN + 41_000));
    assert_eq!(parse_clock("4:41"), Some(4 * MIN + 41_000));
    assert_eq!(parse_clock(":07"), Some(7_000));
    assert_eq!(parse_clock("00:00"), Some(0));
    assert_eq!(parse_clock(""), None);
    assert_eq!(parse_clock("14:60"), None);
    assert_eq!(parse_clock("1:5"), None);
    assert_eq!(parse_clock("END"), None);
}

#[test]
fn yard_line_parsing() {
    // "GB 25": 25 yards from GB's own goal line.
    assert_eq!(yards_to_goal("GB 25", "GB"), Some(75));
    assert_eq!(yards_to_goal("GB 25", "CHI"), Some(25));
    assert_eq!(yards_to_goal("50", "GB"), Some(50));
    assert_eq!(yards_to_goal("CHI 1", "GB"), Some(1));
    assert_eq!(yards_to_goal("GB 1", "GB"), Some(99));
    // Before a kickoff from PHI 35 the receiving team (ATL) is 35 yards from its goal.
    assert_eq!(yards_to_goal("PHI 35", "ATL"), Some(35));
    assert_eq!(yards_to_goal("GB 0", "GB"), None);
    assert_eq!(yards_to_goal("", "GB"), None);
    assert_eq!(yards_to_goal("GB", "GB"), None);
}

#[test]
fn event_time_rule() {
    let reg = SeasonType::Reg;
    assert_eq!(overtime_ms(2016, reg), 15 * MIN);
    assert_eq!(overtime_ms(2017, reg), 10 * MIN);
    assert_eq!(overtime_ms(2018, SeasonType::Post), 15 * MIN);
    assert_eq!(overtime_ms(2018, SeasonType::Pre), 15 * MIN);
    let ot = 10 * MIN;
    assert_eq!(elapsed_ms(1, 15 * MIN, ot), 0);
    assert_eq!(elapsed_ms(1, 14 * MIN + 22_000, ot), 38_000);
    assert_eq!(elapsed_ms(2, 0, ot), 30 * MIN);
    assert_eq!(elapsed_ms(4, 2 * MIN, ot), 58 * MIN);
    assert_eq!(elapsed_ms(5, 10 * MIN, ot), 60 * MIN);
    assert_eq!(elapsed_ms(5, 0, ot), 70 * MIN);
    assert_eq!(elapsed_ms(6, 15 * MIN, 15 * MIN), 75 * MIN);
}

#[test]
fn kickoff_times() {
    let reg = SeasonType::Reg;
    // Thu 2018-09-06 8:20 p.m. EDT = 2018-09-07 00:20 UTC.
    let k = entry("2018090600", "8:20", Some("PM"), reg).kickoff_utc_ms();
    assert_eq!(k.unwrap(), 1_536_279_600_000);
    // Null meridiem is p.m.: 2009-08-09 8:00 p.m. EDT = 2009-08-10 00:00 UTC.
    let k = entry("2009080950", "8:00", None, SeasonType::Pre).kickoff_utc_ms();
    assert_eq!(k.unwrap(), 1_249_862_400_000);
    // "8:00 AM" preseason is 8 p.m. too.
    let k = entry("2018081651", "8:00", Some("AM"), SeasonType::Pre).kickoff_utc_ms();
    assert_eq!(k.unwrap(), 1_534_464_000_000); // 2018-08-17 00:00 UTC
                                               // Thanksgiving "12:30 AM" is 12:30 p.m. EST = 17:30 UTC.
    let k = entry("2018112200", "12:30", Some("AM"), reg).kickoff_utc_ms();
    assert_eq!(k.unwrap(), 1_542_907_800_000);
    // London, 9:30 a.m. EDT on 2018-10-28 (DST ends 2018-11-04) = 13:30 UTC.
    let k = entry("2018102800", "9:30", Some("AM"), reg).kickoff_utc_ms();
    assert_eq!(k.unwrap(), 1_540_733_400_000);
    // Sunday 2018-11-04, the first day of EST: 1:00 p.m. EST = 18:00 UTC.
    let k = entry("2018110400", "1:00", Some("PM"), reg).kickoff_utc_ms();
    assert_eq!(k.unwrap(), 1_541_354_400_000);
    // A January game of season 2018: the date comes from the eid.
    let k = entry("2018123000", "1:00", Some("PM"), reg).kickoff_utc_ms();
    assert_eq!(k.unwrap(), 1_546_192_800_000); // 2018-12-30 18:00 UTC
    assert!(entry("2018123000", "25:00", None, reg)
        .kickoff_utc_ms()
        .is_err());
}

#[test]
fn number_lists() {
    let set = parse_number_list("2009-2011,2015").unwrap();
    assert_eq!(
        set.into_iter().collect::<Vec<_>>(),
        [2009, 2010, 2011, 2015]
    );
    assert!(parse_number_list("2012-2010").is_err());
    assert!(parse_number_list("x").is_err());
}

/// A hand-made half: opening kickoff, a drive ending in a field goal, a timeout, a kickoff,
/// the end of quarter 1, a touchdown (listed under a play id lower than the ones before it),
/// the extra point, and the end of the half.
const MINI_GAME: &str = r#"{"2018090600": {
  "home": {"abbr": "PHI", "score": {"1": 0, "2": 7, "3": 0, "4": 0, "5": 0, "T": 7}},
  "away": {"abbr": "ATL", "score": {"1": 3, "2": 0, "3": 0, "4": 0, "5": 0, "T": 3}},
  "drives": {
    "1": {"plays": {
      "37": {"sp": 0, "qtr": 1, "down": 0, "time": "15:00", "yrdln": "PHI 35", "ydstogo": 0,
             "ydsnet": 40, "posteam": "PHI", "note": "KICKOFF", "players": {},
             "desc": "J.Elliott kicks 65 yards from PHI 35 to end zone, Touchback."},
      "52": {"sp": 0, "qtr": 1, "down": 1, "time": "15:00", "yrdln": "ATL 25", "ydstogo": 10,
             "ydsnet": 40, "posteam": "ATL", "note": null,
             "desc": "(15:00) M.Ryan pass short right to J.Jones to ATL 35 for 10 yards.",
             "players": {"00-1": [{"sequence": 2, "clubcode": "ATL", "playerName": "M.Ryan",
                                   "statId": 15, "yards": 10}],
                         "00-2": [{"sequence": 3, "clubcode": "ATL", "playerName": "J.Jones",
                                   "statId": 21, "yards": 10}]}},
      "60": {"sp": 0, "qtr": 1, "down": 0, "time": "14:30", "yrdln": "", "ydstogo": 0,
             "ydsnet": 40, "posteam": "", "note": "TIMEOUT", "players": {},
             "desc": "Timeout #1 by PHI at 14:30."},
      "75": {"sp": 1, "qtr": 1, "down": 4, "time": "14:00", "yrdln": "PHI 32", "ydstogo": 5,
             "ydsnet": 40, "posteam": "ATL", "note": "FG", "players": {},
             "desc": "(14:00) M.Bryant 50 yard field goal is GOOD."}}},
    "2": {"plays": {
      "100": {"sp": 0, "qtr": 1, "down": 0, "time": "13:55", "yrdln": "ATL 35", "ydstogo": 0,
              "ydsnet": 75, "posteam": "ATL", "note": "KICKOFF", "players": {},
              "desc": "M.Bosher kicks 65 yards from ATL 35 to end zone, Touchback."},
      "120": {"sp": 0, "qtr": 1, "down": 0, "time": "", "yrdln": "", "ydstogo": 0,
              "ydsnet": 75, "posteam": "", "note": null, "players": {},
              "desc": "END QUARTER 1"},
      "9": {"sp": 1, "qtr": 2, "down": 1, "time": "15:00", "yrdln": "PHI 25", "ydstogo": 10,
            "ydsnet": 75, "posteam": "PHI", "note": "TD",
            "desc": "(15:00) J.Ajayi left guard for 75 yards, TOUCHDOWN.",
            "players": {"00-3": [{"sequence": 1, "clubcode": "PHI", "playerName": "J.Ajayi",
                                  "statId": 11, "yards": 75}]}},
      "140": {"sp": 1, "qtr": 2, "down": 0, "time": "14:49", "yrdln": "ATL 15", "ydstogo": 0,
              "ydsnet": 75, "posteam": "PHI", "note": "XP", "players": {},
              "desc": "J.Elliott extra point is GOOD."},
      "150": {"sp": 0, "qtr": 2, "down": 0, "time": "", "yrdln": "", "ydstogo": 0,
              "ydsnet": 75, "posteam": "", "note": null, "players": {},
              "desc": "END QUARTER 2"}}},
    "crntdrv": 2},
  "scrsummary": {
    "75": {"type": "FG", "desc": "M.Bryant 50 yd. Field Goal Drive: 2 plays, 8 yards in 1:00",
           "qtr": 1, "team": "ATL", "players": {}},
    "9": {"type": "TD",
          "desc": "J.Ajayi 75 yd. run (J.Elliott kick is good) Drive: 1 plays, 75 yards in 0:11",
          "qtr": 2, "team": "PHI", "players": {}}}},
  "nextupdate": 1}"#;

#[test]
fn hand_made_game() {
    let doc = GameDoc::from_slice(MINI_GAME.as_bytes()).unwrap();
    let sched = entry("2018090600", "8:20", Some("PM"), SeasonType::Reg);
    let events = import_game(&doc, &sched).unwrap();
    let k = 1_536_279_600_000u64;
    let stats = |e: &GameEvent| {
        (
            e.stat("down"),
            e.stat("distance"),
            e.stats.get("yards_to_goal").copied(),
        )
    };
    fn row(e: &GameEvent, k: u64) -> (u64, EventKind, u64, u32, u64, Option<&str>, u32, u32) {
        (
            e.seq,
            e.kind,
            e.event_time_ms - k,
            e.period,
            e.clock_ms,
            e.team.as_deref(),
            e.home_score,
            e.away_score,
        )
    }
    use EventKind::*;
    let want = [
        // game_start: ATL receives the opening kickoff from PHI 35.
        (
            1,
            GameStart,
            0,
            1,
            15 * MIN,
            Some("ATL"),
            0,
            0,
            (0.0, 0.0, Some(35.0)),
        ),
        // the kickoff: computed 0 ms, bumped to previous + 1.
        (
            2,
            Play,
            1,
            1,
            15 * MIN,
            Some("ATL"),
            0,
            0,
            (1.0, 10.0, Some(75.0)),
        ),
        (
            3,
            Play,
            2,
            1,
            15 * MIN,
            Some("ATL"),
            0,
            0,
            (4.0, 5.0, Some(32.0)),
        ),
        (
            4,
            Timeout,
            30_000,
            1,
            14 * MIN + 30_000,
            Some("ATL"),
            0,
            0,
            (4.0, 5.0, Some(32.0)),
        ),
        // the field goal; then ATL kicks off, so PHI is the team after it.
        (
            5,
            Play,
            MIN,
            1,
            14 * MIN,
            Some("PHI"),
            0,
            3,
            (0.0, 0.0, Some(35.0)),
        ),
        (
            6,
            Play,
            MIN + 5_000,
            1,
            13 * MIN + 55_000,
            Some("PHI"),
            0,
            3,
            (1.0, 10.0, Some(75.0)),
        ),
        (
            7,
            PeriodEnd,
            15 * MIN,
            1,
            0,
            Some("PHI"),
            0,
            3,
            (1.0, 10.0, Some(75.0)),
        ),
        // the touchdown counts 6; the extra point counts on its own row.
        (
            8,
            Play,
            15 * MIN + 1,
            2,
            15 * MIN,
            Some("PHI"),
            6,
            3,
            (0.0, 0.0, Some(15.0)),
        ),
        (
            9,
            Play,
            15 * MIN + 11_000,
            2,
            14 * MIN + 49_000,
            None,
            7,
            3,
            (0.0, 0.0, Some(0.0)),
        ),
        (
            10,
            PeriodEnd,
            30 * MIN,
            2,
            0,
            None,
            7,
            3,
            (0.0, 0.0, Some(0.0)),
        ),
        (
            11,
            GameEnd,
            30 * MIN + 1,
            2,
            0,
            None,
            7,
            3,
            (0.0, 0.0, Some(0.0)),
        ),
    ];
    assert_eq!(events.len(), want.len());
    for (e, w) in events.iter().zip(want) {
        let (seq, kind, dt, period, clock, team, h, a, st) = w;
        assert_eq!(
            row(e, k),
            (seq, kind, dt, period, clock, team, h, a),
            "event {seq}"
        );
        assert_eq!(stats(e), st, "stats of event {seq}");
    }
    // yards_gained and player only on plays; the first named player by sequence.
    assert_eq!(events[2].player.as_deref(), Some("M.Ryan"));
    assert_eq!(events[2].stats.get("yards_gained"), Some(&10.0));
    assert_eq!(events[7].stats.get("yards_gained"), Some(&75.0));
    assert_eq!(events[1].stats.get("yards_gained"), Some(&0.0));
    assert_eq!(events[3].stats.get("yards_gained"), None);
    assert_eq!(score_correction(&events), None);
}

#[test]
fn official_final_corrects_at_game_end() {
    // Drop the extra point from the summary: the rebuilt score is 6-3, the official 7-3.
    let text = MINI_GAME.replace("(J.Elliott kick is good)", "(kick failed, wr)");
    let doc = GameDoc::from_slice(text.as_bytes()).unwrap();
    let sched = entry("2018090600", "8:20", Some("PM"), SeasonType::Reg);
    let events = import_game(&doc, &sched).unwrap();
    assert_eq!(score_correction(&events), Some(((6, 3), (7, 3))));
    let end = events.last().unwrap();
    assert_eq!(
        (end.kind, end.home_score, end.away_score),
        (EventKind::GameEnd, 7, 3)
    );
    assert!(end
        .description
        .as_deref()
        .unwrap()
        .contains("official final"));
}

#[test]
fn fixture_lines_round_trip_and_validate() {
    let lines = fixture_lines();
    assert!(lines.len() > 1000);
    let mut prev = None;
    for (n, line) in lines.iter().enumerate() {
        let e: GameEvent =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("line {n}: {err}"));
        assert_eq!(
            &serde_json::to_string(&e).unwrap(),
            line,
            "line {n} round-trips"
        );
        assert_eq!(e.sport, Sport::Nfl);
        assert!(
            e.game_id.starts_with("201809") && e.game_id.len() == 10,
            "line {n}"
        );
        assert!(!e.home.is_empty() && !e.away.is_empty() && e.home != e.away);
        assert!((1..=5).contains(&e.period), "line {n}: period");
        assert!(e.clock_ms <= 15 * MIN, "line {n}: clock");
        assert!(e.odds.is_none());
        if let Some(team) = &e.team {
            assert!(team == &e.home || team == &e.away, "line {n}: team {team}");
            let ytg = e.stats["yards_to_goal"];
            assert!((1.0..=99.0).contains(&ytg), "line {n}: yards_to_goal {ytg}");
        }
        for (k, v) in &e.stats {
            let known = ["down", "distance", "yards_to_goal", "yards_gained"];
            assert!(known.contains(&k.as_str()), "line {n}: stat {k}");
            assert!(v.is_finite() && v.fract() == 0.0, "line {n}: {k} = {v}");
        }
        assert!((0.0..=4.0).contains(&e.stat("down")), "line {n}: down");
        assert_eq!(
            e.stats.contains_key("yards_gained"),
            e.kind == EventKind::Play
        );
        // The feed is interleaved by (event_time_ms, game_id, seq).
        let key = (e.event_time_ms, e.game_id.clone(), e.seq);
        if let Some(p) = prev.replace(key.clone()) {
            assert!(p < key, "line {n}: feed out of order");
        }
    }
}

#[test]
fn fixture_games_are_consistent() {
    let mut games: BTreeMap<String, Vec<GameEvent>> = BTreeMap::new();
    for line in fixture_lines() {
        let e: GameEvent = serde_json::from_str(&line).unwrap();
        games.entry(e.game_id.clone()).or_default().push(e);
    }
    assert!(games.len() >= 24, "{} games", games.len());
    let mut kinds = BTreeMap::new();
    for (id, events) in &games {
        let first = &events[0];
        assert_eq!(first.kind, EventKind::GameStart, "{id}");
        assert_eq!(
            (first.seq, first.period, first.clock_ms),
            (1, 1, 15 * MIN),
            "{id}"
        );
        assert_eq!((first.home_score, first.away_score), (0, 0), "{id}");
        assert!(first.team.is_some(), "{id}: receiving team");
        let last = events.last().unwrap();
        assert_eq!(last.kind, EventKind::GameEnd, "{id}");
        for w in events.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            assert_eq!(b.seq, a.seq + 1, "{id}: seq");
            assert!(
                b.event_time_ms > a.event_time_ms,
                "{id}: time at seq {}",
                b.seq
            );
            if b.kind != EventKind::GameEnd {
                assert!(b.home_score >= a.home_score, "{id}: home score falls");
                assert!(b.away_score >= a.away_score, "{id}: away score falls");
            }
        }
        // The final is the highest score reached, or a correction that says so.
        let max_home = events.iter().map(|e| e.home_score).max().unwrap();
        let max_away = events.iter().map(|e| e.away_score).max().unwrap();
        match score_correction(events) {
            None => assert_eq!(
                (last.home_score, last.away_score),
                (max_home, max_away),
                "{id}"
            ),
            Some(_) => {
                assert!(last
                    .description
                    .as_deref()
                    .unwrap()
                    .contains("official final"));
            }
        }
        // A regulation game lasts 60 minutes of event time, overtime up to 70 (2018), plus a few
        // 1-ms tie breaks.
        let span = last.event_time_ms - first.event_time_ms;
        let limit = if last.period > 4 { 70 * MIN } else { 60 * MIN };
        assert!(span <= limit + 100, "{id}: lasts {span} ms");
        for e in events {
            *kinds.entry(e.kind).or_insert(0) += 1;
        }
    }
    for kind in [EventKind::Timeout, EventKind::PeriodEnd, EventKind::Clock] {
        assert!(
            kinds.get(&kind).copied().unwrap_or(0) > 0,
            "no {kind:?} events"
        );
    }
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: sideline::import::nfl::ImportNflArgs,
}

#[test]
fn command_line() {
    use clap::Parser;
    let cli = Cli::try_parse_from([
        "nfl",
        "--seasons",
        "2009-2010,2018",
        "--season-type",
        "reg",
        "--weeks",
        "1-2",
        "--games",
        "2018090600,2018090900",
        "--limit",
        "3",
        "--out",
        "x.jsonl",
    ])
    .unwrap();
    let sel = cli.args.selection();
    let seasons: Vec<u32> = sel.seasons.unwrap().into_iter().collect();
    assert_eq!(seasons, [2009, 2010, 2018]);
    assert_eq!(
        sel.season_types.into_iter().collect::<Vec<_>>(),
        [SeasonType::Reg]
    );
    assert_eq!(sel.weeks.unwrap().len(), 2);
    assert_eq!(sel.games.unwrap().len(), 2);
    assert_eq!(sel.limit, Some(3));

    let defaults = Cli::try_parse_from(["nfl"]).unwrap().args;
    assert_eq!(defaults.data, std::path::Path::new("data/nflgame"));
    assert_eq!(defaults.season_type, [SeasonType::Reg, SeasonType::Post]);
    assert!(defaults.seasons.is_none() && defaults.out.is_none());
    assert!(Cli::try_parse_from(["nfl", "--season-type", "playoffs"]).is_err());
}
