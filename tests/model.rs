//! The win-probability model: the embedded default loads and fits the NFL pipeline, scores do
//! not depend on batching (bit for bit), scores go the obvious way, training beats a constant,
//! the trainer's rows are what the engine feeds the model, files round-trip, and the held-out
//! season 2019 is refused.
//!
//! Model inputs are built the way the engine builds them: rows of window features through the
//! NFL pipeline's derived features (`dataflow::score::variables`), picked by the pipeline's
//! `[model]` and cast to f32.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use common::engine_values;
use proptest::prelude::*;
use sideline::dataflow::score::{variables, Row};
use sideline::dataflow::Valued;
use sideline::event::{EventKind, GameEvent, Sport};
use sideline::model::data::{
    game_rows, game_variables, pipeline_hash, read_games, rows_from_jsonl, DataError, LabeledRow,
    ModelInputs,
};
use sideline::model::matrix::{read_matrix, write_matrix};
use sideline::model::train::{evaluate, fit, FitOptions};
use sideline::model::{Manifest, ModelError, PipelineRef, WinProbModel};
use sideline::pipeline::plan::Plan;
use sideline::pipeline::window::{Entity, F64};
use sideline::pipeline::{Registry, DEFAULT_PIPELINE};

/// The importer's committed fixture (24 real 2018 games).
const FIXTURE: &str = "examples/data/nfl/games.jsonl";

/// The NFL pipeline, planned, and the model inputs its `[model]` reads.
struct Nfl {
    plan: Plan,
    inputs: ModelInputs,
}

fn nfl() -> Nfl {
    let plan = sideline::pipeline::plan::plan(
        DEFAULT_PIPELINE.0,
        DEFAULT_PIPELINE.1,
        &Registry::new(None),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let inputs = ModelInputs::of_plan(&plan).unwrap();
    Nfl { plan, inputs }
}

impl Nfl {
    /// The model inputs of a game whose window features hold these values (by feature name;
    /// the others at their defaults).
    fn inputs_of(&self, features: &[(&str, f64)]) -> Vec<f32> {
        let mut row: Row = features
            .iter()
            .map(|(name, v)| {
                let f = self
                    .plan
                    .features
                    .iter()
                    .position(|f| f.name == *name)
                    .unwrap_or_else(|| panic!("no feature `{name}`"));
                (Entity::Game, f as u32, F64::new(*v))
            })
            .collect();
        row.sort();
        self.inputs.pick(&variables(&self.plan, &row).0)
    }

    /// Home ahead by `diff` with `seconds` left, `possession` on first and ten at `ytg`.
    fn situation(&self, diff: i64, seconds: i64, possession: i64, ytg: i64) -> Vec<f32> {
        self.inputs_of(&[
            ("score_diff", diff as f64),
            ("seconds_remaining", seconds as f64),
            ("possession", possession as f64),
            ("down", 1.0),
            ("distance", 10.0),
            ("yards_to_goal", ytg as f64),
        ])
    }
}

fn score(model: &WinProbModel, rows: &[Vec<f32>]) -> Vec<f64> {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    model.score_inputs(flat, rows.len()).unwrap()
}

#[test]
fn embedded_model_loads_and_fits_the_nfl_pipeline() {
    let model = WinProbModel::embedded();
    assert_eq!(model.version(), "nfl_wp/v1");
    let m = model.manifest();
    assert_eq!(m.kind, "logistic_regression");
    // The pipeline feeds the model every input its manifest names, in its order.
    let nfl = nfl();
    assert_eq!(nfl.inputs.names, m.inputs);
    let pipeline = m.pipeline.as_ref().expect("trained on a pipeline");
    assert_eq!(pipeline.name, nfl.plan.name);
    assert_eq!(pipeline.version, nfl.plan.version);
    assert!(!m.train_seasons.contains(&2019) && !m.eval_seasons.contains(&2019));
    let eval = m
        .metrics
        .as_ref()
        .and_then(|m| m.eval.as_ref())
        .expect("the default model has eval metrics");
    assert!(eval.rows > 0 && eval.log_loss < eval.baseline_log_loss);
}

#[test]
fn scores_are_probabilities_and_go_the_obvious_way() {
    let model = WinProbModel::embedded();
    let nfl = nfl();
    let up = nfl.situation(14, 120, 1, 60);
    let down = nfl.situation(-14, 120, 1, 60);
    let even = nfl.situation(0, 3600, 0, 0);
    let p = score(&model, &[up, down, even]);
    assert!(p.iter().all(|p| *p > 0.0 && *p < 1.0), "{p:?}");
    assert!(p[0] > 0.95 && p[1] < 0.05, "{p:?}");
    assert!(p[2] > 0.4 && p[2] < 0.7, "{p:?}");

    // More lead is never worse, at any time and for either team with the ball.
    for seconds in [3600, 1800, 600, 120, 10, 0] {
        for pos in [-1, 0, 1] {
            let rows: Vec<_> = (-30..=30)
                .map(|d| nfl.situation(d, seconds, pos, 50))
                .collect();
            let p = score(&model, &rows);
            assert!(
                p.windows(2).all(|w| w[0] <= w[1]),
                "not monotone at {seconds}s, possession {pos}: {p:?}"
            );
        }
    }
    // The ball near the opponent's goal is worth more than near one's own, late in a tie.
    let p = score(
        &model,
        &[nfl.situation(0, 60, 1, 5), nfl.situation(0, 60, 1, 95)],
    );
    assert!(p[0] > p[1], "{p:?}");
    // Having the ball is worth something, and more so late.
    let p = score(
        &model,
        &[
            nfl.situation(0, 1800, 1, 50),
            nfl.situation(0, 1800, -1, 50),
            nfl.situation(-3, 30, 1, 20),
            nfl.situation(-3, 30, -1, 20),
        ],
    );
    assert!(p[0] > p[1] && p[2] > p[3], "{p:?}");
    assert!(p[2] - p[3] > p[0] - p[1], "{p:?}");
}

#[test]
fn probabilities_are_rounded_to_six_decimals() {
    let model = WinProbModel::embedded();
    let nfl = nfl();
    let rows: Vec<_> = (-20..20).map(|d| nfl.situation(d, 1000, 1, 40)).collect();
    for p in score(&model, &rows) {
        assert_eq!(p, (p * 1e6).round() / 1e6);
    }
    assert!(model.score_inputs(Vec::new(), 0).unwrap().is_empty());
    // A batch of the wrong width is an error, not a panic.
    let err = model.score_inputs(vec![0.0; 13], 1).unwrap_err();
    assert_eq!(err.code(), "model_inputs_invalid");
}

/// Window features of a random game state, by name.
fn any_state() -> impl Strategy<Value = Vec<(&'static str, f64)>> {
    (
        -50i64..50,
        0i64..3601,
        -1i64..2,
        0i64..5,
        0i64..40,
        0i64..100,
        (0i64..15, 0i64..15, 0i64..11, -40i64..150),
    )
        .prop_map(|(sd, s, pos, down, dist, ytg, (hp, ap, plays, yards))| {
            [
                ("score_diff", sd),
                ("seconds_remaining", s),
                ("possession", pos),
                ("down", down),
                ("distance", dist),
                ("yards_to_goal", ytg),
                ("home_points_5m", hp),
                ("away_points_5m", ap),
                ("plays_10", plays),
                ("yards_10", yards),
            ]
            .into_iter()
            .map(|(n, v)| (n, v as f64))
            .collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A row's probability is bit-identical whatever batch it is scored in.
    #[test]
    fn scores_do_not_depend_on_batching(
        states in prop::collection::vec(any_state(), 1..300),
        cuts in prop::collection::vec(0usize..300, 0..8),
    ) {
        let model = WinProbModel::embedded();
        let nfl = nfl();
        let rows: Vec<Vec<f32>> = states.iter().map(|s| nfl.inputs_of(s)).collect();
        let whole = score(&model, &rows);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % rows.len()).collect();
        cuts.push(0);
        cuts.push(rows.len());
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        for w in cuts.windows(2) {
            pieces.extend(score(&model, &rows[w[0]..w[1]]));
        }
        let single: Vec<f64> = rows
            .iter()
            .flat_map(|r| score(&model, std::slice::from_ref(r)))
            .collect();
        let bits = |v: &[f64]| v.iter().map(|p| p.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&whole), bits(&pieces));
        prop_assert_eq!(bits(&whole), bits(&single));
    }
}

#[test]
fn manifest_with_bad_inputs_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    WinProbModel::embedded().save(dir.path()).unwrap();
    let path = dir.path().join("manifest.json");
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let write = |m: &Manifest| std::fs::write(&path, serde_json::to_vec(m).unwrap()).unwrap();

    // An input named twice.
    let mut twice = manifest.clone();
    twice.inputs[1] = twice.inputs[0].clone();
    write(&twice);
    let err = WinProbModel::load(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::Inputs(_)), "{err}");
    assert_eq!(err.code(), "model_inputs_invalid");
    assert!(err.to_string().contains("twice"), "{err}");

    // One input fewer than the weights.
    let mut fewer = manifest.clone();
    fewer.inputs.pop();
    write(&fewer);
    let err = WinProbModel::load(dir.path()).unwrap_err();
    assert_eq!(err.code(), "model_weights_invalid", "{err}");

    // Reordered inputs are a different model, and valid: the pipeline maps them by name.
    let mut swapped = manifest.clone();
    swapped.inputs.swap(0, 1);
    write(&swapped);
    let loaded = WinProbModel::load(dir.path()).unwrap();
    let nfl = nfl();
    let by_name = ModelInputs::by_name(&nfl.plan, &loaded.manifest().inputs).unwrap();
    assert_eq!(by_name.vars[0], nfl.inputs.vars[1]);
    assert_eq!(by_name.vars[1], nfl.inputs.vars[0]);
    // An input the pipeline does not produce.
    let err = ModelInputs::by_name(&nfl.plan, &["no_such_feature".to_string()]).unwrap_err();
    assert!(err.to_string().contains("no_such_feature"), "{err}");
}

#[test]
fn missing_files_and_tensors_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = WinProbModel::load(dir.path()).unwrap_err();
    assert_eq!(err.code(), "model_io");
    let model = WinProbModel::embedded();
    model.save(dir.path()).unwrap();
    let manifest = std::fs::read(dir.path().join("manifest.json")).unwrap();
    let err = WinProbModel::from_bytes(&manifest, b"not safetensors").unwrap_err();
    assert_eq!(err.code(), "model_weights_invalid");
    // Non-finite weights are refused.
    let mut weights = model.weights().clone();
    weights.weight[0] = f32::NAN;
    let err = WinProbModel::new(model.manifest().clone(), weights).unwrap_err();
    assert_eq!(err.code(), "model_weights_invalid");
}

#[test]
fn safetensors_round_trip() {
    let model = WinProbModel::embedded();
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    let loaded = WinProbModel::load(dir.path()).unwrap();
    assert_eq!(loaded.weights(), model.weights());
    assert_eq!(loaded.manifest(), model.manifest());
    assert_eq!(loaded.version(), model.version());
    let nfl = nfl();
    let rows: Vec<_> = (-10..10).map(|d| nfl.situation(d, 300, -1, 30)).collect();
    assert_eq!(score(&loaded, &rows), score(&model, &rows));
    // The committed files are exactly what saving the embedded model writes.
    let committed = Path::new("models/nfl_wp/v1");
    for file in ["manifest.json", "model.safetensors"] {
        assert_eq!(
            std::fs::read(dir.path().join(file)).unwrap(),
            std::fs::read(committed.join(file)).unwrap(),
            "{file}"
        );
    }
}

// ---- training rows ----

/// The fixture's games, by id, each in seq order.
fn fixture_games() -> BTreeMap<String, Vec<GameEvent>> {
    read_games(Path::new(FIXTURE)).unwrap()
}

#[test]
fn trainer_rows_are_what_the_engine_feeds_the_model() {
    let nfl = nfl();
    let games = fixture_games();
    let events: Vec<GameEvent> = games.values().flatten().cloned().collect();
    let engine: HashMap<(String, u64), Valued> = engine_values(&nfl.plan, &events)
        .into_iter()
        .map(|v| ((v.game.game_id.clone(), v.time), v))
        .collect();
    let model = WinProbModel::embedded();
    let mut compared = 0;
    for (id, events) in &games {
        let rows = game_rows(&nfl.plan, &nfl.inputs, events).unwrap().unwrap();
        let vars = game_variables(&nfl.plan, events).unwrap();
        assert!(!rows.is_empty());
        let p = score(
            &model,
            &rows.iter().map(|r| r.inputs.clone()).collect::<Vec<_>>(),
        );
        for (row, p) in rows.iter().zip(p) {
            let v = engine
                .get(&(id.clone(), row.time_ms))
                .unwrap_or_else(|| panic!("the engine has no value for {id} at {}", row.time_ms));
            let (_, trainer_vars) = vars.iter().find(|(t, _)| *t == row.time_ms).unwrap();
            let bits = |x: &[f64]| x.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(trainer_vars), bits(&v.vars), "{id} at {}", row.time_ms);
            let fed: Vec<u32> = nfl
                .inputs
                .pick(&v.vars)
                .iter()
                .map(|x| x.to_bits())
                .collect();
            let trained: Vec<u32> = row.inputs.iter().map(|x| x.to_bits()).collect();
            assert_eq!(fed, trained, "{id} at {}", row.time_ms);
            assert_eq!(p.to_bits(), v.value.to_bits(), "{id} at {}", row.time_ms);
            compared += 1;
        }
    }
    assert!(compared > 5000, "{compared} rows compared");
}

/// A small deterministic pseudo-random generator (xorshift), so the games are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn ev(game_id: &str, seq: u64, seconds_elapsed: u64, kind: EventKind) -> GameEvent {
    let period = (seconds_elapsed / 900 + 1).min(4) as u32;
    let clock_ms = (period as u64 * 900 - seconds_elapsed) * 1000;
    GameEvent {
        sport: Sport::Nfl,
        game_id: game_id.to_string(),
        seq,
        event_time_ms: 1_536_000_000_000 + seconds_elapsed * 1000 + seq,
        period,
        clock_ms,
        kind,
        home: "HOM".into(),
        away: "AWY".into(),
        team: None,
        player: None,
        home_score: 0,
        away_score: 0,
        stats: BTreeMap::new(),
        odds: None,
        description: None,
    }
}

/// A made-up game: a play every 40 game seconds, the ball changing sides every 4 plays, the
/// stronger home team (by `edge`) scoring more often; `game_end` unless `unfinished`.
fn made_up_game(game_id: &str, rng: &mut Rng, edge: u64, unfinished: bool) -> Vec<GameEvent> {
    let (mut home, mut away) = (0u32, 0u32);
    let mut events = vec![ev(game_id, 1, 0, EventKind::GameStart)];
    let mut seq = 2;
    for play in 0..89u64 {
        let home_ball = (play / 4) % 2 == 0;
        let mut e = ev(game_id, seq, 40 + play * 40, EventKind::Play);
        let chance = if home_ball { 8 + edge } else { 8 };
        if rng.below(100) < chance {
            let points = if rng.below(2) == 0 { 7 } else { 3 };
            if home_ball {
                home += points;
            } else {
                away += points;
            }
        }
        e.team = Some(if home_ball { "HOM" } else { "AWY" }.into());
        e.home_score = home;
        e.away_score = away;
        for (k, v) in [
            ("down", (play % 4 + 1) as f64),
            ("distance", 10.0),
            ("yards_to_goal", (20 + rng.below(60)) as f64),
            ("yards_gained", rng.below(12) as f64),
        ] {
            e.stats.insert(k.into(), v);
        }
        events.push(e);
        seq += 1;
    }
    if !unfinished {
        let mut end = ev(game_id, seq, 3600, EventKind::GameEnd);
        end.home_score = home;
        end.away_score = away;
        events.push(end);
    }
    events
}

fn made_up_rows(nfl: &Nfl, games: usize) -> Vec<LabeledRow> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..games)
        .flat_map(|g| {
            let id = format!("2016{:02}{:02}{:02}", 9 + g / 28, 1 + g % 28, g % 100);
            let edge = rng.below(8);
            let events = made_up_game(&id, &mut rng, edge, false);
            game_rows(&nfl.plan, &nfl.inputs, &events).unwrap().unwrap()
        })
        .collect()
}

#[test]
fn training_beats_the_constant_predictor() {
    let nfl = nfl();
    let rows = rows_from_jsonl(&nfl.plan, &nfl.inputs, Path::new(FIXTURE))
        .unwrap()
        .rows;
    assert!(rows.len() > 1000, "{} rows", rows.len());
    let opts = FitOptions {
        epochs: 150,
        lr: 0.05,
    };
    let weights = fit(&rows, &opts).unwrap();
    let manifest = WinProbModel::embedded().manifest().clone();
    let model = WinProbModel::new(manifest, weights.clone()).unwrap();
    let m = evaluate(&model, &rows).unwrap();
    assert_eq!(m.rows, rows.len());
    assert!(m.log_loss < m.baseline_log_loss - 0.05, "{m:?}");
    assert!(m.brier < m.baseline_brier, "{m:?}");
    // Fitting is deterministic.
    assert_eq!(fit(&rows, &opts).unwrap(), weights);
}

#[test]
fn rows_follow_the_events_up_to_game_end() {
    let nfl = nfl();
    let mut rng = Rng(7);
    let mut events = made_up_game("2016091100", &mut rng, 20, false);
    let end = events.last().unwrap().clone();
    // Events after game_end are no part of the game's rows.
    let mut late = ev("2016091100", end.seq + 1, 3600, EventKind::Clock);
    late.event_time_ms = end.event_time_ms + 1000;
    events.push(late);
    let rows = game_rows(&nfl.plan, &nfl.inputs, &events).unwrap().unwrap();
    // One row per event, at its time.
    assert_eq!(rows.len(), events.len() - 1);
    assert!(rows
        .iter()
        .zip(&events)
        .all(|(r, e)| r.time_ms == e.event_time_ms));
    assert_eq!(rows.last().unwrap().time_ms, end.event_time_ms);
    assert!(rows
        .iter()
        .all(|r| r.inputs.len() == nfl.inputs.names.len()));
    let expected = match end.home_score.cmp(&end.away_score) {
        std::cmp::Ordering::Greater => 1.0,
        std::cmp::Ordering::Less => 0.0,
        std::cmp::Ordering::Equal => 0.5,
    };
    assert!(rows.iter().all(|r| r.label == expected));

    let unfinished = made_up_game("2016091101", &mut rng, 0, true);
    assert!(game_rows(&nfl.plan, &nfl.inputs, &unfinished)
        .unwrap()
        .is_none());

    let mut tie = vec![ev("2016091102", 1, 0, EventKind::GameStart)];
    tie.push(ev("2016091102", 2, 3600, EventKind::GameEnd));
    let rows = game_rows(&nfl.plan, &nfl.inputs, &tie).unwrap().unwrap();
    assert!(rows.iter().all(|r| r.label == 0.5));

    // A game whose event time goes backwards is refused, not guessed at.
    let mut back = made_up_game("2016091103", &mut rng, 0, false);
    back[5].event_time_ms = back[4].event_time_ms - 1;
    let err = game_rows(&nfl.plan, &nfl.inputs, &back).unwrap_err();
    assert!(matches!(err, DataError::Order { seq: 6, .. }), "{err}");
}

fn write_jsonl(path: &Path, events: &[GameEvent]) {
    let text: String = events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn held_out_season_2019_is_refused() {
    let nfl = nfl();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut rng = Rng(11);
    // A January 2019 game is season 2018: allowed. Unfinished games are counted, not rows.
    let mut events = made_up_game("2019010600", &mut rng, 5, false);
    events.extend(made_up_game("2018123000", &mut rng, 5, true));
    write_jsonl(&path, &events);
    let set = rows_from_jsonl(&nfl.plan, &nfl.inputs, &path).unwrap();
    assert_eq!((set.games, set.skipped_games), (1, 1));
    assert_eq!(set.seasons(), vec![2018]);

    for id in ["2019090500", "2019122900", "2020020200"] {
        let mut bad = events.clone();
        bad.extend(made_up_game(id, &mut rng, 5, false));
        write_jsonl(&path, &bad);
        let err = rows_from_jsonl(&nfl.plan, &nfl.inputs, &path).unwrap_err();
        assert!(
            matches!(err, DataError::HeldOutSeason { .. }),
            "{id}: {err}"
        );
        assert!(err.to_string().contains("held-out"), "{err}");
    }

    // The cached matrix is guarded too.
    let key = PipelineRef::of_plan(&nfl.plan);
    let mut rows = made_up_rows(&nfl, 2);
    rows[0].game_id = "2019091500".into();
    let arrow = dir.path().join("m.arrow");
    write_matrix(&arrow, &key, &nfl.inputs.names, &rows).unwrap();
    assert!(matches!(
        read_matrix(&arrow, &key, &nfl.inputs.names),
        Err(DataError::HeldOutSeason { .. })
    ));
}

#[test]
fn arrow_matrix_round_trip_keyed_by_the_pipeline_text() {
    let nfl = nfl();
    let rows = made_up_rows(&nfl, 3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.arrow");
    let key = PipelineRef::of_plan(&nfl.plan);
    assert_eq!(key.hash, pipeline_hash(DEFAULT_PIPELINE.1));
    write_matrix(&path, &key, &nfl.inputs.names, &rows).unwrap();
    assert_eq!(read_matrix(&path, &key, &nfl.inputs.names).unwrap(), rows);

    // Another pipeline text (even a changed comment) invalidates the matrix.
    let edited = format!("{}\n# edited\n", DEFAULT_PIPELINE.1);
    let other = PipelineRef {
        hash: pipeline_hash(&edited),
        ..key.clone()
    };
    assert_ne!(other.hash, key.hash);
    let err = read_matrix(&path, &other, &nfl.inputs.names).unwrap_err();
    assert!(err.to_string().contains("rebuild"), "{err}");
    // An input the matrix does not hold.
    let mut names = nfl.inputs.names.clone();
    names.push("no_such_input".into());
    let err = read_matrix(&path, &key, &names).unwrap_err();
    assert!(err.to_string().contains("no_such_input"), "{err}");
}
