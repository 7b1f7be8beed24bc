//! A fact can change twice at one time: two events at the same effective time, the first
//! putting a member in a `possessions` window and the second (naming the other team) emptying
//! it. The scoring stage must apply the net change: the feature is back at its default, not
//! left at the first event's value, whatever order the two updates reach it in.

use std::sync::Arc;

use sideline::dataflow::{Model, SinkMsg, Valued};
use sideline::event::{EventKind, GameEvent, Sport};
use sideline::pipeline::window::{GameAssigner, Updates};
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

#[test]
fn a_window_filled_and_emptied_at_one_time_takes_its_default() {
    let text = format!(
        "{}\n[[feature]]\nname = \"drive_yards\"\nfilter = \"kind == 'play'\"\nvalue = \"stats.yards_gained\"\nwindow = {{ kind = \"possessions\", count = 1 }}\naggregate = \"sum\"\ndefault = -1\n",
        DEFAULT_PIPELINE.1
    );
    let plan =
        Arc::new(sideline::pipeline::plan::plan("t.toml", &text, &Registry::new(None)).unwrap());
    let var = plan.vars.iter().position(|v| v == "drive_yards").unwrap();
    let model = Arc::new(Model::for_plan(&plan, &Registry::new(None)).unwrap());
    // At t = 2000: A's play puts 7 yards in the window; B's timeout, at the same time, starts
    // a possession and empties it.
    let events = [
        event(1, 1000, "A", EventKind::Play, 3.0),
        event(2, 2000, "A", EventKind::Play, 7.0),
        event(3, 2000, "B", EventKind::Timeout, 0.0),
    ];
    let (tx, rx) = std::sync::mpsc::sync_channel(1 << 16);
    let plan2 = plan.clone();
    timely::execute_directly(move |worker| {
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            sideline::dataflow::build(scope, plan2.clone(), model, None, 0, Some(tx), Vec::new())
        });
        let mut game = GameAssigner::new(&plan2, events[0].key());
        let mut updates = Updates::default();
        for ev in &events {
            if *input.time() < ev.event_time_ms {
                input.advance_to(ev.event_time_ms);
            }
            game.apply(&plan2, ev, ev.event_time_ms, 0, &mut updates);
            input.feed(&mut updates);
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    });
    let values: Vec<Valued> = rx
        .try_iter()
        .flat_map(|m| match m {
            SinkMsg::Values { values, .. } => values,
            _ => Vec::new(),
        })
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
