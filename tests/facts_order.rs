//! Facts at one time, applied net and in order by the scoring stage.
//!
//! A fact can change twice at one time: two events at the same effective time, the first
//! putting a member in a `possessions` window and the second (naming the other team) emptying
//! it. The scoring stage must apply the net change: the feature is back at its default, not
//! left at the first event's value, whatever order the two updates reach it in.
//!
//! A game's release can fall at a window's last change (a sliding window as long as the
//! retention, whose last member came with the game's last event): the change is published
//! before the game is forgotten.

mod common;

use std::sync::Arc;

use sideline::dataflow::Valued;
use sideline::event::{EventKind, GameEvent, Sport};
use sideline::pipeline::plan::Plan;
use sideline::pipeline::{Registry, DEFAULT_PIPELINE};

fn event(seq: u64, t: u64, team: &str, kind: EventKind, yards: f64) -> GameEvent {
    let line = serde_json::json!({
        "sport": "nfl", "game_id": "g", "seq": seq, "event_time_ms": t, "period": 1,
        "clock_ms": 600_000, "kind": "play", "home": "A", "away": "B", "team": team,
        "home_score": 0, "away_score": 0, "stats": {"yards_gained": yards}
    });
    let mut ev: GameEvent = serde_json::from_value(line).unwrap();
    ev.kind = kind;
    ev.sport = Sport::Nfl;
    ev
}

fn plan(text: &str) -> Arc<Plan> {
    Arc::new(sideline::pipeline::plan::plan("t.toml", text, &Registry::new(None)).unwrap())
}

#[test]
fn a_window_filled_and_emptied_at_one_time_takes_its_default() {
    let plan = plan(&format!(
        "{}\n[[feature]]\nname = \"drive_yards\"\nfilter = \"kind == 'play'\"\nvalue = \"stats.yards_gained\"\nwindow = {{ kind = \"possessions\", count = 1 }}\naggregate = \"sum\"\ndefault = -1\n",
        DEFAULT_PIPELINE.1
    ));
    let var = plan.vars.iter().position(|v| v == "drive_yards").unwrap();
    // At t = 2000: A's play puts 7 yards in the window; B's timeout, at the same time, starts
    // a possession and empties it.
    let events = vec![
        event(1, 1000, "A", EventKind::Play, 3.0),
        event(2, 2000, "A", EventKind::Play, 7.0),
        event(3, 2000, "B", EventKind::Timeout, 0.0),
    ];
    let values: Vec<Valued> = common::engine_values(&plan, &events)
        .into_iter()
        .filter(|v| !v.closed)
        .collect();
    let at = |t: u64| {
        values
            .iter()
            .find(|v| v.time == t)
            .unwrap_or_else(|| panic!("a value at {t}"))
            .vars[var]
    };
    assert_eq!(at(1000), 3.0);
    assert_eq!(at(2000), -1.0, "emptied at 2000: the default");
}

#[test]
fn a_release_at_a_windows_last_change_comes_after_it() {
    // The shipped pipeline's 5-minute sliding windows, and a 5-minute retention.
    let text = DEFAULT_PIPELINE
        .1
        .replace("retention = \"6h\"", "retention = \"5m\"");
    assert_ne!(text, DEFAULT_PIPELINE.1);
    let plan = plan(&text);
    let var = plan
        .vars
        .iter()
        .position(|v| v == "recent_points_diff")
        .unwrap();
    // A touchdown at 1000, then the game ends at 2000 on a field goal: its 3 points leave the
    // 5-minute window at 302,000, which is also 2000 + the retention.
    let mut td = event(1, 1000, "A", EventKind::Play, 0.0);
    td.home_score = 7;
    let mut end = event(2, 2000, "A", EventKind::GameEnd, 0.0);
    end.home_score = 10;
    let values = common::engine_values(&plan, &[td, end]);
    let last = values
        .iter()
        .filter(|v| !v.closed)
        .max_by_key(|v| v.time)
        .expect("values");
    assert_eq!(
        (last.time, last.vars[var]),
        (302_000, 0.0),
        "the field goal leaving the window is the game's last value"
    );
    let closed: Vec<u64> = values.iter().filter(|v| v.closed).map(|v| v.time).collect();
    assert_eq!(closed.len(), 1, "released once: {closed:?}");
    assert!(
        closed[0] > 302_000,
        "released at {} with its last change",
        closed[0]
    );
}
