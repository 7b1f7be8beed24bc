//! Detectors in a pipeline file (issue 5, first part): alerts from the real NFL games through
//! Kafka, the same on every replay, delivered to a Kafka alerts topic.

mod common;

use std::time::Duration;

use common::*;
use sideline::alert::{Alert, AlertState};
use sideline::delta::Delta;

fn replay(run: usize) -> (Vec<Delta>, Vec<Alert>, Vec<Alert>) {
    let input = format!("nfl.alerts.{run}");
    let alerts_topic = format!("nfl.alerts.{run}.out");
    let cluster = Cluster::mock(&[
        (&input, 4),
        (&alerts_topic, 1),
        (&format!("{input}.dead-letters"), 1),
    ]);
    produce_all(&cluster.brokers, &input, &fixture_lines());
    let text = format!(
        "{}\n{NFL_DETECTORS}\n[[output]]\nkind = \"kafka\"\nstream = \"alerts\"\ntopic = \"{alerts_topic}\"\n\n[[output]]\nkind = \"websocket\"\nstream = \"alerts\"\nchannel = \"nfl.alerts\"\n",
        nfl_pipeline(&[&input])
    );
    let cfg = config(&cluster.brokers, &input, 2);
    let app = start(&cfg, &[text]);
    let capture = Capture::default();
    app.run_engine_with(Box::new(capture.clone())).unwrap();
    app.shutdown();
    let (deltas, alerts) = capture.0.lock().unwrap().clone();

    let topic = read_topic(&cluster.brokers, &alerts_topic, 1, alerts.len())
        .iter()
        .map(|r| serde_json::from_slice::<Alert>(&r.payload).unwrap())
        .collect();
    (deltas, alerts, topic)
}

#[test]
fn detectors_alert_deterministically_and_reach_the_alerts_topic() {
    let (deltas, alerts, topic) = replay(0);
    assert!(!deltas.is_empty());
    let opened = alerts
        .iter()
        .filter(|a| a.state == AlertState::Open)
        .count();
    println!(
        "{} alert changes ({opened} opened) over {} deltas; by detector: swing {}, shock {}",
        alerts.len(),
        deltas.len(),
        alerts.iter().filter(|a| a.detector == "swing").count(),
        alerts.iter().filter(|a| a.detector == "shock").count()
    );
    assert!(opened > 0, "the real games have swings");
    for (i, a) in alerts.iter().enumerate() {
        assert_eq!(a.seq, i as u64 + 1, "alerts numbered without a gap");
        assert!(a.evidence.value.is_finite() && a.evidence.threshold > 0.0);
        // Both detectors compare a score with the threshold, and the message says so (a
        // resolve without a score, such as at the game's release, names the value).
        let compared = match a.evidence.score {
            Some(score) => format!("score {score:.4} against threshold"),
            None => format!("value {:.4} against threshold", a.evidence.value),
        };
        assert!(a.message.contains(&compared), "{}", a.message);
        assert!(a.evidence.score.is_some() || a.state != AlertState::Open);
    }
    // Every alert that resolves or escalates was opened before, under the same id.
    for a in alerts.iter().filter(|a| a.state != AlertState::Open) {
        assert!(
            alerts
                .iter()
                .any(|o| o.id == a.id && o.state == AlertState::Open && o.seq < a.seq),
            "alert {} changes without having opened",
            a.id
        );
    }
    // A swing alert points at a real swing of the published prediction.
    assert_eq!(topic, alerts, "the alerts topic holds every alert change");

    let (deltas2, alerts2, _) = replay(1);
    assert!(
        serde_json::to_string(&alerts).unwrap() == serde_json::to_string(&alerts2).unwrap(),
        "two replays give identical alerts"
    );
    assert_eq!(log_bytes(&deltas), log_bytes(&deltas2));
}

const HEALTH: &str = r#"
[[detector]]
name = "feed_seq"
kind = "sequence"

[[detector]]
name = "feed_score"
kind = "score"
"#;

/// The fixture with `lines` as given, through the NFL pipeline plus the feed-health
/// detectors; returns the alert changes.
fn health_replay(name: &str, lines: &[String]) -> Vec<Alert> {
    let input = format!("nfl.health.{name}");
    let cluster = Cluster::mock(&[(&input, 4), (&format!("{input}.dead-letters"), 1)]);
    produce_all(&cluster.brokers, &input, lines);
    let text = format!("{}\n{HEALTH}", nfl_pipeline(&[&input]));
    let cfg = config(&cluster.brokers, &input, 2);
    let app = start(&cfg, &[text]);
    let capture = Capture::default();
    app.run_engine_with(Box::new(capture.clone())).unwrap();
    app.shutdown();
    let alerts = capture.0.lock().unwrap().1.clone();
    alerts
}

/// Feed-health detectors on the real games: silent on the clean feed; on a feed with a
/// skipped seq in one game, a repeated record in another and a score going down in a third,
/// exactly those three games alert, each with its severity.
#[test]
fn feed_health_detectors_find_exactly_the_injected_faults() {
    let clean = fixture_lines();
    let alerts = health_replay("clean", &clean);
    assert!(
        alerts.is_empty(),
        "the clean feed raises nothing: {alerts:?}"
    );

    let events = fixture_events();
    let games: Vec<String> = {
        let mut g: Vec<String> = events.iter().map(|e| e.game_id.clone()).collect();
        g.dedup();
        g.sort();
        g.dedup();
        g
    };
    let (skip_game, dup_game, drop_game, fixed_game) = (&games[0], &games[1], &games[2], &games[3]);
    let mut lines = Vec::new();
    let mut seen: std::collections::BTreeMap<&str, usize> = Default::default();
    for (line, e) in clean.iter().zip(&events) {
        let n = seen.entry(e.game_id.as_str()).or_default();
        *n += 1;
        if e.game_id == *skip_game && *n == 50 {
            continue; // a skipped seq
        }
        lines.push(line.clone());
        if e.game_id == *dup_game && *n == 60 {
            lines.push(line.clone()); // the same record again
        }
    }
    // A score going down: one event of the third game reports a lower home score than the
    // event before it, after the home team has scored.
    let drop_at = events
        .iter()
        .position(|e| e.game_id == *drop_game && e.home_score >= 3 && e.seq > 100)
        .expect("the home team scores");
    let mut bad = events[drop_at].clone();
    bad.home_score -= 3;
    let target = serde_json::to_string(&events[drop_at]).unwrap();
    let pos = lines.iter().position(|l| *l == target).unwrap();
    lines[pos] = serde_json::to_string(&bad).unwrap();
    // In a fourth game the feed lowers the score and then sends a correction confirming the
    // lower score: the alert is retracted, not resolved.
    let fix_at = events
        .iter()
        .position(|e| e.game_id == *fixed_game && e.home_score >= 3 && e.seq > 100)
        .expect("the home team scores");
    let next = events[fix_at + 1..]
        .iter()
        .position(|e| e.game_id == *fixed_game)
        .map(|i| fix_at + 1 + i)
        .unwrap();
    let mut lowered = events[fix_at].clone();
    lowered.home_score -= 3;
    let mut correction = events[next].clone();
    correction.kind = sideline::event::EventKind::Correction;
    correction.home_score = lowered.home_score;
    correction.away_score = lowered.away_score;
    for (i, replacement) in [(fix_at, lowered), (next, correction)] {
        let target = serde_json::to_string(&events[i]).unwrap();
        let pos = lines.iter().position(|l| *l == target).unwrap();
        lines[pos] = serde_json::to_string(&replacement).unwrap();
    }

    let alerts = health_replay("faulty", &lines);
    let opened: Vec<(&str, &str, sideline::alert::Severity)> = alerts
        .iter()
        .filter(|a| a.state == AlertState::Open)
        .map(|a| (a.game_id.as_str(), a.detector.as_str(), a.severity))
        .collect();
    use sideline::alert::Severity::*;
    let want = [
        (skip_game.as_str(), "feed_seq", Warning),
        (dup_game.as_str(), "feed_seq", Info),
        (drop_game.as_str(), "feed_score", Critical),
        (fixed_game.as_str(), "feed_score", Critical),
    ];
    let hits = want.iter().filter(|w| opened.contains(w)).count();
    println!(
        "feed health: {} injected faults, {} alerts opened, {hits} of them right: precision {:.2}, recall {:.2}",
        want.len(),
        opened.len(),
        hits as f64 / opened.len().max(1) as f64,
        hits as f64 / want.len() as f64
    );
    let mut sorted = opened.clone();
    sorted.sort();
    let mut expected = want.to_vec();
    expected.sort();
    assert_eq!(
        sorted, expected,
        "exactly the injected faults alert (precision and recall 1)"
    );
    // Each alert resolves at the game's next event, except the corrected one: retracted.
    for a in alerts.iter().filter(|a| a.state == AlertState::Open) {
        let end = if a.game_id == *fixed_game {
            AlertState::Retracted
        } else {
            AlertState::Resolved
        };
        assert!(
            alerts.iter().any(|r| r.id == a.id && r.state == end),
            "alert {} ends {end:?}",
            a.id
        );
    }
}

/// The NFL pipeline reading `input`, with a staleness detector of `gap` and partitions that
/// do not go idle while the feed is paused.
fn stale_pipeline(input: &str, gap: &str) -> String {
    format!(
        "{}\n[[detector]]\nname = \"stale\"\nkind = \"staleness\"\ngap = \"{gap}\"\n",
        nfl_pipeline(&[input]).replace("idle-timeout = \"2s\"", "idle-timeout = \"10m\"")
    )
}

/// A staleness alert open when the engine stops ends after the restart, at the game's next new
/// event: the worker state that judged it is gone, so the checkpoint keeps the open ones and
/// the workers take them up. Nothing opens twice.
#[test]
fn a_staleness_alert_open_at_a_restart_resolves_after_it() {
    use std::collections::BTreeSet;
    let input = "nfl.stale.restart";
    let cluster = Cluster::mock(&[(input, 4), ("nfl.stale.restart.dead-letters", 1)]);
    let lines = fixture_lines();
    let half = lines.len() / 2;
    produce_all(&cluster.brokers, input, &lines[..half]);
    let text = stale_pipeline(input, "1s");
    let checkpoints = tempfile::tempdir().unwrap();
    let mut cfg = config(&cluster.brokers, input, 2);
    cfg.kafka.stop_at_end = false;
    cfg.engine.checkpoint_dir = checkpoints.path().display().to_string();

    // Up to the pause, until the games in progress go stale; then stopped.
    let app = start(&cfg, std::slice::from_ref(&text));
    let before = Capture::default();
    std::thread::scope(|s| {
        let c = before.clone();
        let engine = s.spawn(|| app.run_engine_with(Box::new(c)).unwrap());
        wait_until("a staleness alert", 120, || {
            (!before.0.lock().unwrap().1.is_empty()).then_some(())
        });
        // The other games in progress go stale within the same second.
        std::thread::sleep(Duration::from_millis(1500));
        app.stop.stop();
        engine.join().unwrap();
    });
    app.shutdown();
    let before = before.0.lock().unwrap().1.clone();
    let opened: BTreeSet<&str> = before
        .iter()
        .filter(|a| a.state == AlertState::Open)
        .map(|a| a.id.as_str())
        .collect();
    assert!(!opened.is_empty());
    assert!(
        before.iter().all(|a| a.state == AlertState::Open),
        "nothing resumed yet"
    );
    let store = sideline::checkpoint::Store::open(checkpoints.path()).unwrap();
    let (cp, _) = store.load().unwrap().unwrap();
    let kept = &cp.pipelines.values().next().unwrap().open_staleness;
    assert_eq!(
        kept.len(),
        opened.len(),
        "the checkpoint keeps the open ones"
    );

    // The rest of the feed, read by a restarted engine.
    produce_all(&cluster.brokers, input, &lines[half..]);
    cfg.kafka.stop_at_end = true;
    let app = start(&cfg, &[text]);
    let after = Capture::default();
    app.run_engine_with(Box::new(after.clone())).unwrap();
    app.shutdown();
    let after = after.0.lock().unwrap().1.clone();
    let last = before.iter().map(|a| a.seq).max().unwrap();
    assert!(
        after.iter().all(|a| a.seq > last),
        "alert seqs go on from the checkpoint's"
    );
    for id in &opened {
        let changes: Vec<&Alert> = after.iter().filter(|a| a.id == *id).collect();
        assert_eq!(
            changes.iter().map(|a| a.state).collect::<Vec<_>>(),
            vec![AlertState::Resolved],
            "alert {id}, open at the restart: its changes after it"
        );
        // At a new event: the restart reads the game's events before the pause again, and
        // those are not news.
        assert!(
            changes[0].event_time_ms > changes[0].opened_at_ms,
            "alert {id} resolved at {}, not after its last event ({})",
            changes[0].event_time_ms,
            changes[0].opened_at_ms
        );
    }
}

/// Staleness is judged by the wall clock: a live game whose feed stops for longer than the
/// gap alerts, a game that has ended does not, and the next event resolves the alert.
#[test]
fn a_stalled_feed_alerts_by_the_wall_clock_and_resolves_when_it_resumes() {
    let input = "nfl.stale";
    let cluster = Cluster::mock(&[(input, 4), ("nfl.stale.dead-letters", 1)]);
    let lines = fixture_lines();
    let events = fixture_events();
    let half = lines.len() / 2;
    produce_all(&cluster.brokers, input, &lines[..half]);
    let text = stale_pipeline(input, "3s");
    let mut cfg = config(&cluster.brokers, input, 2);
    cfg.kafka.stop_at_end = false;
    let app = start(&cfg, &[text]);
    let capture = Capture::default();
    let alerts = std::thread::scope(|s| {
        let c2 = capture.clone();
        let engine = s.spawn(|| app.run_engine_with(Box::new(c2)).unwrap());
        // Wait for the stalled games' alerts (the feed is paused: no events arrive).
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let opened = capture.0.lock().unwrap().1.len();
            if opened > 0 {
                std::thread::sleep(Duration::from_millis(1500));
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no staleness alert");
            std::thread::sleep(Duration::from_millis(100));
        }
        produce_all(&cluster.brokers, input, &lines[half..]);
        app.stop.drain();
        engine.join().unwrap();
        capture.0.lock().unwrap().1.clone()
    });
    app.shutdown();
    // The games in progress at the pause: started in the first half, ended in the second.
    let first: std::collections::BTreeSet<&str> =
        events[..half].iter().map(|e| e.game_id.as_str()).collect();
    let ended_early: std::collections::BTreeSet<&str> = events[..half]
        .iter()
        .filter(|e| e.kind == sideline::event::EventKind::GameEnd)
        .map(|e| e.game_id.as_str())
        .collect();
    let in_progress: std::collections::BTreeSet<&str> =
        first.difference(&ended_early).copied().collect();
    let opened: std::collections::BTreeSet<&str> = alerts
        .iter()
        .filter(|a| a.state == AlertState::Open)
        .map(|a| a.game_id.as_str())
        .collect();
    println!(
        "{} games in progress at the pause, {} ended before it; {} stale alerts opened",
        in_progress.len(),
        ended_early.len(),
        opened.len()
    );
    assert_eq!(
        opened, in_progress,
        "exactly the games in progress go stale"
    );
    for a in alerts.iter().filter(|a| a.state == AlertState::Open) {
        assert!(
            alerts
                .iter()
                .any(|r| r.id == a.id && r.state == AlertState::Resolved),
            "game {} resumed, so its alert resolves",
            a.game_id
        );
    }
}
