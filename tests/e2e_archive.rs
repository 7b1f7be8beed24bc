//! The feature archive: every value the engine computed, with its features, in rolling Arrow
//! IPC files; the same features the trainer computes for the same games (no train/serve
//! skew), the model gives each row's value from its archived features, and every published
//! delta is one of its rows.

mod common;

use std::collections::BTreeMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt64Type};
use arrow_array::RecordBatch;
use common::*;
use sideline::dataflow::score::Model;

/// One archived row: (sport, game, time) -> (event seq, value, features).
type Rows = BTreeMap<(String, String, u64), (u64, f64, Vec<f64>)>;

fn rows_of(batches: &[RecordBatch], vars: &[String]) -> (Rows, Vec<(String, String, u64)>) {
    let mut rows = Rows::new();
    let mut order = Vec::new();
    for b in batches {
        let col = |n: &str| b.column_by_name(n).unwrap_or_else(|| panic!("column {n}"));
        let sport = col("sport").as_string::<i32>();
        let game = col("game_id").as_string::<i32>();
        let time = col("event_time_ms").as_primitive::<UInt64Type>();
        let seq = col("event_seq").as_primitive::<UInt64Type>();
        let value = col("value").as_primitive::<Float64Type>();
        let features: Vec<_> = vars
            .iter()
            .map(|v| col(v).as_primitive::<Float64Type>())
            .collect();
        for i in 0..b.num_rows() {
            let key = (
                sport.value(i).to_string(),
                game.value(i).to_string(),
                time.value(i),
            );
            let f = features.iter().map(|c| c.value(i)).collect();
            assert!(
                rows.insert(key.clone(), (seq.value(i), value.value(i), f))
                    .is_none(),
                "row {key:?} archived twice"
            );
            order.push(key);
        }
    }
    (rows, order)
}

#[test]
fn the_archive_holds_what_the_engine_computed() {
    let topic = "archived";
    let cluster = Cluster::mock(&[(topic, 4), ("archived.dead-letters", 1)]);
    produce_all(&cluster.brokers, topic, &fixture_lines());
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n[[output]]\nkind = \"archive\"\ndir = \"{}\"\nrows-per-file = 2000\n",
        nfl_pipeline(&[topic]),
        dir.path().display()
    );
    let app = start(&config(&cluster.brokers, topic, 2), &[text]);
    let (_, log) = run_engine(&app);
    let plan = app.publisher.lock().unwrap().pipelines()[0].0.clone();
    app.shutdown();

    let files = sideline::archive::files(dir.path()).unwrap();
    let batches = sideline::archive::read(&files).unwrap();
    let (rows, order) = rows_of(&batches, &plan.vars);
    println!("{} rows in {} files", rows.len(), files.len());
    assert_eq!(
        files.len(),
        rows.len().div_ceil(2000),
        "rolled over every 2,000 rows"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")),
        "every file finished"
    );
    let meta = batches[0].schema().metadata().clone();
    assert_eq!(meta["sideline.pipeline"], plan.name);
    // Rows in the engine's order: event time, then game.
    let mut sorted = order.clone();
    sorted.sort_by(|a, b| (a.2, &a.0, &a.1).cmp(&(b.2, &b.0, &b.1)));
    assert!(order == sorted, "rows are in (time, game) order");

    // Every published delta is an archived row: same value, same changed features.
    for d in &log {
        let key = (d.sport.to_string(), d.game_id.clone(), d.event_time_ms);
        let (seq, value, features) = rows
            .get(&key)
            .unwrap_or_else(|| panic!("delta {} not archived", d.seq));
        assert_eq!((*seq, *value), (d.event_seq, d.new), "delta {}", d.seq);
        for c in &d.changed {
            let i = plan.vars.iter().position(|v| **v == *c.feature).unwrap();
            assert_eq!(
                features[i].to_bits(),
                c.to.to_bits(),
                "delta {} {}",
                d.seq,
                c.feature
            );
        }
    }

    // Each delta names the inputs that moved the prediction most: for the logistic model, input
    // i moved the logit by weight_i * (to - from) / scale_i, exactly.
    let m = sideline::model::WinProbModel::embedded();
    let (w, inputs) = (m.weights(), &m.manifest().inputs);
    let mut explained = 0;
    for d in log.iter().filter(|d| d.old.is_some()) {
        let mut want: Vec<(String, f64)> = d
            .changed
            .iter()
            .filter_map(|c| {
                let i = inputs.iter().position(|n| **n == *c.feature)?;
                let by = w.weight[i] as f64 * (c.to - c.from?) / w.input_scale[i] as f64;
                Some((c.feature.to_string(), by))
            })
            .filter(|(_, by)| (by * 1e6).round() != 0.0)
            .collect();
        want.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
        want.truncate(3);
        let got: Vec<&str> = d.contributors.iter().map(|c| &*c.feature).collect();
        let want_names: Vec<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(got, want_names, "delta {} contributors", d.seq);
        for (c, (_, by)) in d.contributors.iter().zip(&want) {
            assert!(
                (c.by - by).abs() < 1e-5,
                "delta {}: {} by {} not {by}",
                d.seq,
                c.feature,
                c.by
            );
        }
        explained += usize::from(!d.contributors.is_empty());
    }
    assert!(explained > 3_000, "deltas with contributors: {explained}");

    // The model gives each row's value from its archived features.
    let model = Model::for_plan(&plan, &sideline::pipeline::Registry::new(None)).unwrap();
    let all: Vec<Vec<f64>> = rows.values().map(|r| r.2.clone()).collect();
    let scored = model.score(&all).unwrap();
    for ((key, r), s) in rows.iter().zip(&scored) {
        assert_eq!(
            r.1.to_bits(),
            s.to_bits(),
            "value of {key:?} from its features"
        );
    }

    // The trainer computes the same features at every event time of every game, bit for bit.
    let mut games: BTreeMap<String, Vec<sideline::event::GameEvent>> = BTreeMap::new();
    for e in fixture_events() {
        games.entry(e.game_id.clone()).or_default().push(e);
    }
    let mut compared = 0;
    for (game, events) in &games {
        for (t, vars) in sideline::model::data::game_variables(&plan, events).unwrap() {
            let key = ("nfl".to_string(), game.clone(), t);
            let (_, _, archived) = rows
                .get(&key)
                .unwrap_or_else(|| panic!("{key:?} not archived"));
            let same = archived
                .iter()
                .zip(&vars)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "features of {key:?} differ from the trainer's");
            compared += 1;
        }
    }
    println!(
        "{compared} rows equal the trainer's, {} deltas found",
        log.len()
    );
    assert!(compared > 5_000);

    // `sideline train --archive` / `evaluate --archive`: the archive's rows labelled by the
    // feed's results hold every row the trainer computes from the events, inputs and label
    // bit for bit, and nothing after a game's end.
    let feed = dir.path().join("feed.jsonl");
    std::fs::write(&feed, fixture_lines().join("\n")).unwrap();
    let inputs = sideline::model::data::ModelInputs::of_plan(&plan).unwrap();
    let from_archive =
        sideline::model::archive_rows::load(dir.path(), &feed, &plan, &inputs).unwrap();
    let from_events = sideline::model::data::rows_from_jsonl(&plan, &inputs, &feed).unwrap();
    let archived: BTreeMap<(&str, u64), &sideline::model::data::LabeledRow> = from_archive
        .rows
        .iter()
        .map(|r| ((r.game_id.as_str(), r.time_ms), r))
        .collect();
    assert_eq!(
        archived.len(),
        from_archive.rows.len(),
        "one row per (game, time)"
    );
    for r in &from_events.rows {
        let a = archived
            .get(&(r.game_id.as_str(), r.time_ms))
            .unwrap_or_else(|| {
                panic!("trainer row {} {} not in the archive", r.game_id, r.time_ms)
            });
        assert_eq!(a.label, r.label, "label of {}", r.game_id);
        let same = a
            .inputs
            .iter()
            .zip(&r.inputs)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "inputs of {} at {}", r.game_id, r.time_ms);
    }
    assert_eq!(from_archive.games, from_events.games);
    let extra = from_archive.rows.len() - from_events.rows.len();
    println!(
        "archive: {} labelled rows of {} games ({extra} at window expiries between events)",
        from_archive.rows.len(),
        from_archive.games
    );
}
