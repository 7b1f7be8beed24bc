//! The win-probability model: the embedded default loads and fits this build, scores do not
//! depend on batching (bit for bit), scores go the obvious way, training beats a constant,
//! files round-trip, and the held-out season 2019 is refused.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use sideline::event::{EventKind, GameEvent, Sport};
use sideline::features::{FeatureVec, Slot, FEATURE_SLOTS};
use sideline::model::data::{game_rows, rows_from_jsonl, DataError, LabeledRow};
use sideline::model::matrix::{read_matrix, write_matrix};
use sideline::model::train::{evaluate, fit, FitOptions};
use sideline::model::{Manifest, ModelError, WinProbModel, INPUT_NAMES};

/// The importer's committed fixture (24 real 2018 games), when it is there.
const FIXTURE: &str = "examples/data/nfl/games.jsonl";

fn fv(pairs: &[(Slot, i64)]) -> FeatureVec {
    let mut v = FeatureVec::default();
    for (s, x) in pairs {
        v.set(*s, *x);
    }
    v
}

/// Home ahead by `diff` with `seconds` left, `possession` on first and ten at `ytg`.
fn situation(diff: i64, seconds: i64, possession: i64, ytg: i64) -> FeatureVec {
    fv(&[
        (Slot::ScoreDiff, diff),
        (Slot::SecondsRemaining, seconds),
        (Slot::Possession, possession),
        (Slot::Down, 1),
        (Slot::Distance, 10),
        (Slot::YardsToGoal, ytg),
    ])
}

#[test]
fn embedded_model_loads_and_matches_this_build() {
    let model = WinProbModel::embedded();
    assert_eq!(model.version(), "nfl_wp/v1");
    let m = model.manifest();
    assert_eq!(m.kind, "logistic_regression");
    assert!(m.inputs.iter().map(String::as_str).eq(INPUT_NAMES));
    assert!(!m.train_seasons.contains(&2019) && !m.eval_seasons.contains(&2019));
    let eval = m
        .metrics
        .eval
        .as_ref()
        .expect("the default model has eval metrics");
    assert!(eval.rows > 0 && eval.log_loss < eval.baseline_log_loss);
}

#[test]
fn scores_are_probabilities_and_go_the_obvious_way() {
    let model = WinProbModel::embedded();
    let up = situation(14, 120, 1, 60);
    let down = situation(-14, 120, 1, 60);
    let even = situation(0, 3600, 0, 0);
    let p = model.score_batch(&[up, down, even]).unwrap();
    assert!(p.iter().all(|p| *p > 0.0 && *p < 1.0), "{p:?}");
    assert!(p[0] > 0.95 && p[1] < 0.05, "{p:?}");
    assert!(p[2] > 0.4 && p[2] < 0.7, "{p:?}");

    // More lead is never worse, at any time and for either team with the ball.
    for seconds in [3600, 1800, 600, 120, 10, 0] {
        for pos in [-1, 0, 1] {
            let rows: Vec<_> = (-30..=30).map(|d| situation(d, seconds, pos, 50)).collect();
            let p = model.score_batch(&rows).unwrap();
            assert!(
                p.windows(2).all(|w| w[0] <= w[1]),
                "not monotone at {seconds}s, possession {pos}: {p:?}"
            );
        }
    }
    // The ball near the opponent's goal is worth more than near one's own, late in a tie.
    let p = model
        .score_batch(&[situation(0, 60, 1, 5), situation(0, 60, 1, 95)])
        .unwrap();
    assert!(p[0] > p[1], "{p:?}");
}

#[test]
fn probabilities_are_rounded_to_six_decimals() {
    let model = WinProbModel::embedded();
    let rows: Vec<_> = (-20..20).map(|d| situation(d, 1000, 1, 40)).collect();
    for p in model.score_batch(&rows).unwrap() {
        assert_eq!(p, (p * 1e6).round() / 1e6);
    }
    assert!(model.score_batch(&[]).unwrap().is_empty());
}

fn any_row() -> impl Strategy<Value = FeatureVec> {
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
            let mut v = FeatureVec::default();
            v.0[..10].copy_from_slice(&[sd, s, pos, down, dist, ytg, hp, ap, plays, yards]);
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A row's probability is bit-identical whatever batch it is scored in.
    #[test]
    fn scores_do_not_depend_on_batching(
        rows in prop::collection::vec(any_row(), 1..300),
        cuts in prop::collection::vec(0usize..300, 0..8),
    ) {
        let model = WinProbModel::embedded();
        let whole = model.score_batch(&rows).unwrap();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % rows.len()).collect();
        cuts.push(0);
        cuts.push(rows.len());
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        for w in cuts.windows(2) {
            pieces.extend(model.score_batch(&rows[w[0]..w[1]]).unwrap());
        }
        let single: Vec<f64> = rows
            .iter()
            .flat_map(|r| model.score_batch(std::slice::from_ref(r)).unwrap())
            .collect();
        let bits = |v: &[f64]| v.iter().map(|p| p.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&whole), bits(&pieces));
        prop_assert_eq!(bits(&whole), bits(&single));
    }
}

#[test]
fn manifest_with_other_inputs_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    WinProbModel::embedded().save(dir.path()).unwrap();
    let path = dir.path().join("manifest.json");
    let mut manifest: Manifest = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest.inputs.swap(0, 1);
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let err = WinProbModel::load(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::InputsMismatch { .. }), "{err}");
    assert_eq!(err.code(), "model_inputs_mismatch");
    assert!(err.to_string().contains("model inputs differ"), "{err}");

    manifest.inputs.pop();
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    assert!(matches!(
        WinProbModel::load(dir.path()),
        Err(ModelError::InputsMismatch { .. })
    ));
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
    let rows: Vec<_> = (-10..10).map(|d| situation(d, 300, -1, 30)).collect();
    assert_eq!(
        loaded.score_batch(&rows).unwrap(),
        model.score_batch(&rows).unwrap()
    );
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

// ---- training ----

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

fn made_up_rows(games: usize) -> Vec<LabeledRow> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..games)
        .flat_map(|g| {
            let id = format!("2016{:02}{:02}{:02}", 9 + g / 28, 1 + g % 28, g % 100);
            let edge = rng.below(8);
            game_rows(&made_up_game(&id, &mut rng, edge, false)).unwrap()
        })
        .collect()
}

/// The importer's fixture as rows, or made-up games when the fixture is not there.
fn smoke_rows() -> Vec<LabeledRow> {
    if Path::new(FIXTURE).exists() {
        rows_from_jsonl(Path::new(FIXTURE)).unwrap().rows
    } else {
        made_up_rows(60)
    }
}

#[test]
fn training_beats_the_constant_predictor() {
    let rows = smoke_rows();
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
fn rows_follow_the_timeline_up_to_game_end() {
    let mut rng = Rng(7);
    let events = made_up_game("2016091100", &mut rng, 20, false);
    let end = events.last().unwrap().clone();
    let rows = game_rows(&events).unwrap();
    assert!(rows.iter().all(|r| r.time_ms <= end.event_time_ms));
    assert_eq!(rows.last().unwrap().time_ms, end.event_time_ms);
    let expected = match end.home_score.cmp(&end.away_score) {
        std::cmp::Ordering::Greater => 1.0,
        std::cmp::Ordering::Less => 0.0,
        std::cmp::Ordering::Equal => 0.5,
    };
    assert!(rows.iter().all(|r| r.label == expected));

    let unfinished = made_up_game("2016091101", &mut rng, 0, true);
    assert!(game_rows(&unfinished).is_none());

    let mut tie = vec![ev("2016091102", 1, 0, EventKind::GameStart)];
    tie.push(ev("2016091102", 2, 3600, EventKind::GameEnd));
    assert!(game_rows(&tie).unwrap().iter().all(|r| r.label == 0.5));
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
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut rng = Rng(11);
    // A January 2019 game is season 2018: allowed. Unfinished games are counted, not rows.
    let mut events = made_up_game("2019010600", &mut rng, 5, false);
    events.extend(made_up_game("2018123000", &mut rng, 5, true));
    write_jsonl(&path, &events);
    let set = rows_from_jsonl(&path).unwrap();
    assert_eq!((set.games, set.skipped_games), (1, 1));
    assert_eq!(set.seasons(), vec![2018]);

    for id in ["2019090500", "2019122900", "2020020200"] {
        let mut bad = events.clone();
        bad.extend(made_up_game(id, &mut rng, 5, false));
        write_jsonl(&path, &bad);
        let err = rows_from_jsonl(&path).unwrap_err();
        assert!(
            matches!(err, DataError::HeldOutSeason { .. }),
            "{id}: {err}"
        );
        assert!(err.to_string().contains("held-out"), "{err}");
    }

    // The cached matrix is guarded too.
    let mut rows = made_up_rows(2);
    rows[0].game_id = "2019091500".into();
    let arrow = dir.path().join("m.arrow");
    write_matrix(&arrow, &rows).unwrap();
    assert!(matches!(
        read_matrix(&arrow),
        Err(DataError::HeldOutSeason { .. })
    ));
}

#[test]
fn arrow_matrix_round_trip() {
    let rows = made_up_rows(3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.arrow");
    write_matrix(&path, &rows).unwrap();
    assert_eq!(read_matrix(&path).unwrap(), rows);
    assert!(rows
        .iter()
        .all(|r| r.features.0[FEATURE_SLOTS..].iter().all(|x| *x == 0)));
}
