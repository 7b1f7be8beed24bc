//! Issue 4 item 6: an ensemble re-weighted online by its members' realised log loss, run
//! inline on the NFL fixture. Members: `nfl_wp/v1` and a deliberately bad logistic regression
//! (`tests/models/nfl_wp_contrarian`: the leader loses). The engine's values are checked
//! against a from-scratch recomputation of the definition (`sideline::model::online`) over the
//! archived rows; the delta logs of 1, 2 and 4 workers are byte-identical; the bad member loses
//! weight and the values move away from the static ensemble's.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt64Type};
use common::*;
use sideline::event::{EventKind, GameEvent};
use sideline::model::online::{game_loss_from_scratch, weights_from_scratch};
use sideline::model::Predictor;

const MODEL: &str = "nfl_wp_online";

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/models")
}

/// An archived row: game, time, event seq, model inputs, value.
struct Row {
    game: String,
    time: u64,
    seq: u64,
    inputs: Vec<f64>,
    value: f64,
}

fn run(cluster: &Cluster, topic: &str, workers: usize) -> (Vec<u8>, usize, Vec<Row>) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&cluster.brokers, topic, workers);
    cfg.engine.models = models().display().to_string();
    let text = nfl_pipeline(&[topic]).replace(
        "[model]\nname = \"nfl_wp\"",
        &format!("[model]\nname = \"{MODEL}\""),
    );
    let text = format!(
        "{text}\n[[output]]\nkind = \"archive\"\ndir = \"{}\"\n",
        dir.path().display()
    );
    let app = start(&cfg, &[text]);
    let (_, log) = run_engine(&app);
    app.shutdown();
    let explained = log.iter().filter(|d| !d.contributors.is_empty()).count();
    let model = Predictor::load(Some(&models()), MODEL, "v1").unwrap();
    let batches = sideline::archive::read(&sideline::archive::files(dir.path()).unwrap()).unwrap();
    let mut rows = Vec::new();
    for b in &batches {
        let inputs: Vec<_> = model
            .inputs()
            .iter()
            .map(|n| b.column_by_name(n).unwrap().as_primitive::<Float64Type>())
            .collect();
        let game = b.column_by_name("game_id").unwrap().as_string::<i32>();
        let time = b
            .column_by_name("event_time_ms")
            .unwrap()
            .as_primitive::<UInt64Type>();
        let seq = b
            .column_by_name("event_seq")
            .unwrap()
            .as_primitive::<UInt64Type>();
        let value = b
            .column_by_name("value")
            .unwrap()
            .as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            rows.push(Row {
                game: game.value(i).to_string(),
                time: time.value(i),
                seq: seq.value(i),
                inputs: inputs.iter().map(|c| c.value(i)).collect(),
                value: value.value(i),
            });
        }
    }
    assert!(log.len() > 100, "the games move the ensemble");
    (log_bytes(&log), explained, rows)
}

#[test]
fn online_weights_follow_realised_loss_identically_on_1_2_and_4_workers() {
    let topic = "online";
    let cluster = Cluster::mock(&[(topic, 4), ("online.dead-letters", 1)]);
    let lines = fixture_lines();
    produce_all(&cluster.brokers, topic, &lines);
    let (one, _, _) = run(&cluster, topic, 1);
    let (two, explained, rows) = run(&cluster, topic, 2);
    let (four, _, _) = run(&cluster, topic, 4);
    assert!(one == two, "1 and 2 workers give the same delta bytes");
    assert!(one == four, "1 and 4 workers give the same delta bytes");
    assert!(explained > 100, "re-weighted deltas name contributors");

    // Each game's result and the seq of its game_end, from the fixture.
    let mut ends: HashMap<String, (u64, f64)> = HashMap::new();
    for l in &lines {
        let ev: GameEvent = serde_json::from_str(l).unwrap();
        if ev.kind == EventKind::GameEnd {
            let result = match ev.home_score.cmp(&ev.away_score) {
                std::cmp::Ordering::Greater => 1.0,
                std::cmp::Ordering::Less => 0.0,
                std::cmp::Ordering::Equal => 0.5,
            };
            ends.entry(ev.game_id.clone()).or_insert((ev.seq, result));
        }
    }
    // From scratch: each game's member logits at its rows before the game_end, its loss, and
    // the order games finish in.
    let ensemble_model = Predictor::load(Some(&models()), MODEL, "v1").unwrap();
    let ensemble = ensemble_model.ensemble().unwrap();
    let spec = ensemble.online().unwrap().clone();
    let prior = ensemble.weights();
    let members: Vec<Predictor> = ["nfl_wp", "nfl_wp_contrarian"]
        .iter()
        .map(|n| Predictor::load(Some(&models()), n, "v1").unwrap())
        .collect();
    let inputs = ensemble_model.inputs();
    let logits_of = |r: &Row| -> Vec<f64> {
        members
            .iter()
            .map(|m| {
                let row: Vec<f64> = m
                    .inputs()
                    .iter()
                    .map(|n| r.inputs[inputs.iter().position(|i| i == n).unwrap()])
                    .collect();
                m.outputs(&[row]).unwrap()[0]
            })
            .collect()
    };
    let mut by_game: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in &rows {
        by_game.entry(&r.game).or_default().push(r);
    }
    let mut finished: Vec<(u64, String, Vec<f64>)> = Vec::new();
    for (game, game_rows) in &by_game {
        let (end_seq, result) = ends[*game];
        let Some(end) = game_rows.iter().find(|r| r.seq >= end_seq).map(|r| r.time) else {
            continue;
        };
        let before: Vec<Vec<f64>> = game_rows
            .iter()
            .filter(|r| r.time < end)
            .map(|r| logits_of(r))
            .collect();
        if let Some(loss) = game_loss_from_scratch(&before, result) {
            finished.push((end, game.to_string(), loss));
        }
    }
    finished.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    assert!(finished.len() > 20, "{} games finished", finished.len());

    let mut moved = 0;
    for r in &rows {
        let applied: Vec<Vec<f64>> = finished
            .iter()
            .filter(|g| g.0 < r.time)
            .map(|g| g.2.clone())
            .collect();
        let weights = weights_from_scratch(&spec, &prior, &applied);
        let z = logits_of(r);
        let expect = ensemble.value_with(&weights, &z);
        assert!(
            (r.value - expect).abs() <= 2e-6,
            "{} at {}: engine {} vs from scratch {} (weights {weights:?})",
            r.game,
            r.time,
            r.value,
            expect
        );
        if (r.value - ensemble.value_with(&prior, &z)).abs() > 0.01 {
            moved += 1;
        }
    }
    let all: Vec<Vec<f64>> = finished.iter().map(|g| g.2.clone()).collect();
    let last = weights_from_scratch(&spec, &prior, &all);
    println!(
        "{} rows, {} games finished, final weights {last:?}, {moved} values moved by > 0.01",
        rows.len(),
        finished.len()
    );
    assert!(
        last[1] < 0.2,
        "the contrarian member loses weight: {last:?}"
    );
    assert!(moved * 4 > rows.len(), "re-weighting moves the values");
}

/// The pipeline of [`run`], without the archive.
fn online_pipeline(topic: &str) -> String {
    nfl_pipeline(&[topic]).replace(
        "[model]\nname = \"nfl_wp\"",
        &format!("[model]\nname = \"{MODEL}\""),
    )
}

/// A cluster with `clean_topic` and `topic` (4 partitions each), and the delta log of the
/// whole fixture through `pipeline` on `clean_topic`, never stopped.
fn clean_run(
    clean_topic: &str,
    topic: &str,
    pipeline: impl Fn(&str) -> String,
) -> (Cluster, Vec<sideline::delta::Delta>) {
    let (clean_dlq, dlq) = (
        format!("{clean_topic}.dead-letters"),
        format!("{topic}.dead-letters"),
    );
    let cluster = Cluster::mock(&[(clean_topic, 4), (&clean_dlq, 1), (topic, 4), (&dlq, 1)]);
    produce_all(&cluster.brokers, clean_topic, &fixture_lines());
    let mut cfg = config(&cluster.brokers, clean_topic, 2);
    cfg.engine.models = models().display().to_string();
    let app = start(&cfg, &[pipeline(clean_topic)]);
    let (_, clean) = run_engine(&app);
    app.shutdown();
    (cluster, clean)
}

/// The stopped and restarted runs' settings: checkpoints in `dir`, and no released game held
/// (a new version is compared with none of them, so the games before their first rows may be
/// folded too).
fn checkpointed(cluster: &Cluster, topic: &str, dir: &std::path::Path) -> sideline::config::Config {
    let mut cfg = config(&cluster.brokers, topic, 2);
    cfg.engine.models = models().display().to_string();
    cfg.engine.checkpoint_dir = dir.display().to_string();
    cfg.server.released_games = 0;
    cfg
}

/// The restarted run's deltas (`before` the stop, then `after`) are the clean run's, with the
/// restarted run's topic in their ids.
fn assert_same_as_clean(
    before: Vec<sideline::delta::Delta>,
    after: Vec<sideline::delta::Delta>,
    clean: &[sideline::delta::Delta],
    (clean_topic, topic): (&str, &str),
    what: &str,
) {
    let renamed = |d: &[sideline::delta::Delta]| {
        String::from_utf8(log_bytes(d))
            .unwrap()
            .replace(clean_topic, topic)
    };
    let restarted: Vec<sideline::delta::Delta> = before.into_iter().chain(after).collect();
    assert_eq!(renamed(&restarted), renamed(clean), "{what}");
}

/// A restart from a checkpoint does not read the games that were over again: their losses
/// come from the checkpoint, so the weights, and the deltas, go on as in a run that never
/// stopped. The first week's games are read, the engine stops (its checkpoint written), the
/// second week is produced and a new engine resumes from the checkpoint.
#[test]
fn a_restart_from_a_checkpoint_keeps_the_weights() {
    let lines = fixture_lines();
    let week1 = |l: &String| {
        let ev: GameEvent = serde_json::from_str(l).unwrap();
        ev.game_id.as_str() < "2018091300"
    };
    let (first, rest): (Vec<String>, Vec<String>) = lines.iter().cloned().partition(week1);
    assert!(!first.is_empty() && !rest.is_empty());

    let (clean_topic, topic) = ("online-clean", "online-restart");
    let (cluster, clean) = clean_run(clean_topic, topic, online_pipeline);

    let checkpoints = tempfile::tempdir().unwrap();
    let cfg = checkpointed(&cluster, topic, checkpoints.path());
    produce_all(&cluster.brokers, topic, &first);
    let app = start(&cfg, &[online_pipeline(topic)]);
    let (_, before) = run_engine(&app);
    app.shutdown();
    let store = sideline::checkpoint::Store::open(checkpoints.path()).unwrap();
    let (cp, _) = store.load().unwrap().unwrap();
    // The games that ended before the first row a restart values again (the last game
    // still within `retention` of its end is read again) are folded; the rest kept one by one.
    let pipeline = cp.pipelines.values().next().unwrap();
    let folded = pipeline
        .folded_games
        .as_ref()
        .map_or(0, |f| f.state.games());
    let kept = pipeline.finished_games.len() as u64;
    assert!(
        folded >= 10,
        "the checkpoint folds the games no restart values a row before ({folded} folded, {kept} kept)"
    );
    assert!(
        kept < folded,
        "the games a restart may need one by one are few ({kept} kept, {folded} folded)"
    );

    produce_all(&cluster.brokers, topic, &rest);
    let app = start(&cfg, &[online_pipeline(topic)]);
    let (_, after) = run_engine(&app);
    app.shutdown();

    assert!(clean.len() > 100);
    assert_same_as_clean(
        before,
        after,
        &clean,
        (clean_topic, topic),
        "stopped and restarted from the checkpoint, the deltas are the clean run's",
    );
}

/// A restart in the middle of games reads them again from their first record, and values
/// their rows with the weights at those rows' times: a game that ended meanwhile must not be
/// folded into the weights a checkpoint keeps. Split where one game ended after three others
/// began, which are still on when the engine stops; they go on after the restart, and their
/// deltas then follow from what their rebuilt rows published.
#[test]
fn a_restart_in_the_middle_of_games_values_their_rows_as_before() {
    // 2018090908 ended at 1536527100001, after 2018090909-11 began (1536524700000); they end
    // at about 1536528300000.
    const SPLIT: u64 = 1_536_527_700_000;
    let lines = fixture_lines();
    let time = |l: &String| serde_json::from_str::<GameEvent>(l).unwrap().event_time_ms;
    let (first, rest): (Vec<String>, Vec<String>) =
        lines.iter().cloned().partition(|l| time(l) < SPLIT);
    let last_first = first.iter().map(time).max().unwrap();
    // A game's state is kept 1 h after its end: the games of the early afternoon are over at
    // the split (a restart does not read them again), 2018090908 is not.
    let pipeline = |topic: &str| {
        let text = online_pipeline(topic);
        assert!(text.contains("retention = \"6h\""));
        text.replace("retention = \"6h\"", "retention = \"1h\"")
    };

    let (clean_topic, topic) = ("online-mid-clean", "online-mid");
    let (cluster, clean) = clean_run(clean_topic, topic, pipeline);

    // Live, until everything read was delivered (the partitions go idle and release it),
    // then stopped: the games on at the split are open in the checkpoint.
    let checkpoints = tempfile::tempdir().unwrap();
    let mut cfg = checkpointed(&cluster, topic, checkpoints.path());
    cfg.engine.checkpoint_interval_ms = 100;
    cfg.kafka.stop_at_end = false;
    produce_all(&cluster.brokers, topic, &first);
    let app = start(&cfg, &[pipeline(topic)]);
    let log: std::sync::Arc<std::sync::Mutex<Vec<sideline::delta::Delta>>> = Default::default();
    let engine = {
        let (app, log) = (app.clone(), log.clone());
        std::thread::spawn(move || {
            app.run_engine(move |d| log.lock().unwrap().push(d.clone()))
                .unwrap()
        })
    };
    let store = sideline::checkpoint::Store::open(checkpoints.path()).unwrap();
    wait_until("a checkpoint through the last event read", 60, || {
        let (cp, _) = store.load().ok()??;
        let p = cp.pipelines.values().next()?;
        (p.done >= Some(last_first)).then_some(())
    });
    app.stop.stop();
    engine.join().unwrap();
    app.shutdown();
    // The one written at the stop, which the restart takes up.
    let cp = store
        .load()
        .unwrap()
        .unwrap()
        .0
        .pipelines
        .into_values()
        .next()
        .unwrap();
    let before = log.lock().unwrap().clone();
    let folded = cp.folded_games.as_ref().map_or(0, |f| f.state.games());
    let open: Vec<String> = cp
        .partitions
        .iter()
        .flat_map(|p| p.open.iter().map(|(g, _)| g.game_id.clone()))
        .collect();
    assert!(
        folded >= 9,
        "the games over before the split are folded ({folded})"
    );
    assert!(
        cp.finished_games
            .iter()
            .any(|g| g.game.game_id == "2018090908"),
        "the game that ended after open ones began is kept one by one"
    );
    for g in ["2018090909", "2018090910", "2018090911"] {
        assert!(open.contains(&g.to_string()), "{g} is read again: {open:?}");
    }

    produce_all(&cluster.brokers, topic, &rest);
    let mut cfg = cfg.clone();
    cfg.kafka.stop_at_end = true;
    let app = start(&cfg, &[pipeline(topic)]);
    let (_, after) = run_engine(&app);
    app.shutdown();

    assert_same_as_clean(
        before,
        after,
        &clean,
        (clean_topic, topic),
        "stopped in the middle of games and restarted, the deltas are the clean run's",
    );
}
