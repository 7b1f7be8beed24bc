//! Deploying a new version of a running pipeline (issue 3): subscribers stay connected, the
//! sequence has no gap, values switch to the new version at the swap, and the end state is
//! the new version's alone. A refused deploy changes nothing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use sideline::alert::{Alert, AlertState};
use sideline::app::{App, DeployError};
use sideline::delta::{Delta, DeltaCause};
use sideline::event::GameKey;
use sideline::ws::protocol::ServerMessage;

const SUBSCRIBE: &str = r#"{"op":"subscribe","id":"s","channel":"nfl.win_probability"}"#;

/// The NFL pipeline with an idle timeout longer than any pause of these tests: the feed
/// comes in two halves, and a partition idle between them would release event time past
/// events still to come (they would be late, and the comparison timing-dependent).
fn v1(topic: &str) -> String {
    let text = nfl_pipeline(&[topic]);
    let out = text.replace("idle-timeout = \"2s\"", "idle-timeout = \"10m\"");
    assert_ne!(out, text);
    out
}

/// Version 2 of the NFL pipeline: a 10-minute points window instead of 5.
fn v2(topic: &str) -> String {
    let text = v1(topic);
    let out = text
        .replace("version = 1", "version = 2")
        .replace("size = \"5m\"", "size = \"10m\"");
    assert_eq!(out.matches("size = \"10m\"").count(), 2);
    out
}

/// The delta log of one version running alone over the whole fixture.
fn alone(pipeline: impl Fn(&str) -> String, name: &str) -> Vec<Delta> {
    let topic = format!("nfl.alone.{name}");
    let cluster = Cluster::mock(&[(&topic, 4), (&format!("{topic}.dead-letters"), 1)]);
    produce_all(&cluster.brokers, &topic, &fixture_lines());
    let cfg = config(&cluster.brokers, &topic, 2);
    let app = start(&cfg, &[pipeline(&topic)]);
    let (_, log) = run_engine(&app);
    app.shutdown();
    log
}

fn finals(deltas: &[Delta]) -> std::collections::BTreeMap<GameKey, f64> {
    deltas
        .iter()
        .map(|d| {
            (
                GameKey {
                    sport: d.sport,
                    game_id: d.game_id.clone(),
                },
                d.new,
            )
        })
        .collect()
}

/// What a replay published: the delta log and the alert changes.
type Published = (Vec<Delta>, Vec<Alert>);

/// Replays the first half of the fixture through version 1 (with `detectors` appended), runs
/// `during` with the app while the engine runs, then replays the second half and drains.
/// Returns what was published and the subscriber.
fn replay_with(
    topic: &str,
    detectors: &str,
    during: impl FnOnce(&Arc<App>),
) -> (Published, Client, Arc<App>) {
    let cluster = Cluster::mock(&[(topic, 4), (&format!("{topic}.dead-letters"), 1)]);
    let lines = fixture_lines();
    let half = lines.len() / 2;
    produce_all(&cluster.brokers, topic, &lines[..half]);
    let mut cfg = config(&cluster.brokers, topic, 2);
    cfg.kafka.stop_at_end = false;
    let app = start(&cfg, &[format!("{}{detectors}", v1(topic))]);
    let client = Client::connect(app.ws_addr, SUBSCRIBE);
    client.wait_for("the first snapshot", |ms| {
        ms.iter()
            .any(|m| matches!(m, ServerMessage::Snapshot { .. }))
    });
    let capture = Capture::default();
    std::thread::scope(|s| {
        let engine = s.spawn(|| app.run_engine_with(Box::new(capture.clone())).unwrap());
        // Deltas are flowing before anything else happens.
        client.wait_for("deltas of the first half", |ms| {
            ms.iter()
                .filter(|m| matches!(m, ServerMessage::Delta { .. }))
                .count()
                > 500
        });
        during(&app);
        produce_all(&cluster.brokers, topic, &lines[half..]);
        app.stop.drain();
        engine.join().unwrap();
    });
    drop(cluster);
    let published = capture.0.lock().unwrap().clone();
    (published, client, app)
}

#[test]
fn a_new_version_takes_over_without_a_gap_and_ends_where_it_would_alone() {
    let v1_alone = alone(v1, "v1");
    let v2_alone = alone(v2, "v2");
    assert_ne!(finals(&v1_alone), finals(&v2_alone), "the versions differ");

    let topic = "nfl.redeploy";
    let ((log, _), client, app) = replay_with(topic, "", |app| {
        let d = app.deploy("v2.toml", &v2(topic)).unwrap();
        assert_eq!((d.version, d.state.as_str()), (2, "warming"));
    });
    let last = log.last().unwrap().seq;
    client.wait_for_seq(last);
    let messages = client.messages();
    assert!(
        !messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Error { .. })),
        "no error reached the subscriber"
    );
    let snapshots = messages
        .iter()
        .filter(|m| matches!(m, ServerMessage::Snapshot { .. }))
        .count();
    assert_eq!(
        snapshots, 1,
        "one snapshot: the subscription was never reset"
    );
    let (_, current, ws_deltas) = apply(&messages);
    assert_eq!(ws_deltas, log, "the subscriber saw the whole log");
    for (i, d) in log.iter().enumerate() {
        assert_eq!(d.seq, i as u64 + 1, "no gap, no duplicate");
    }

    // Version 1 until the swap, version 2 after it; the swap is a run of `version` deltas.
    let swap = log
        .iter()
        .position(|d| d.version == 2)
        .expect("version 2 went live");
    assert!(log[..swap]
        .iter()
        .all(|d| d.version == 1 && d.cause == DeltaCause::Moved));
    assert!(log[swap..].iter().all(|d| d.version == 2));
    let switched: Vec<&Delta> = log[swap..]
        .iter()
        .take_while(|d| d.cause == DeltaCause::Version)
        .collect();
    assert!(!switched.is_empty(), "some games changed value at the swap");
    let at = switched[0].event_time_ms;
    assert!(switched.iter().all(|d| d.event_time_ms == at));
    assert!(log[..swap].iter().all(|d| d.event_time_ms <= at));
    assert!(log[swap + switched.len()..]
        .iter()
        .all(|d| d.event_time_ms > at && d.cause == DeltaCause::Moved));

    // Before the swap: exactly what version 1 alone published up to then.
    let strip = |d: &Delta| (d.game_id.clone(), d.event_time_ms, d.old, d.new);
    let before: Vec<_> = log[..swap].iter().map(strip).collect();
    let v1_prefix: Vec<_> = v1_alone
        .iter()
        .filter(|d| d.event_time_ms <= at)
        .map(strip)
        .collect();
    assert_eq!(before, v1_prefix);
    // After it: exactly what version 2 alone published after then.
    let after: Vec<_> = log[swap + switched.len()..]
        .iter()
        .map(|d| (d.game_id.clone(), d.event_time_ms, d.new))
        .collect();
    let v2_suffix: Vec<_> = v2_alone
        .iter()
        .filter(|d| d.event_time_ms > at)
        .map(|d| (d.game_id.clone(), d.event_time_ms, d.new))
        .collect();
    assert_eq!(after, v2_suffix);
    // And the end state is version 2's alone.
    assert_eq!(current, finals(&v2_alone));
    assert_eq!(finals(&log), finals(&v2_alone));
    app.shutdown();
}

#[test]
fn a_refused_deploy_changes_nothing() {
    let v1_alone = alone(v1, "refused");
    let topic = "nfl.refused";
    let ((log, _), _client, app) = replay_with(topic, "", |app| {
        let broken = v2(topic).replace("aggregate = \"sum\"", "aggregate = \"summ\"");
        match app.deploy("broken.toml", &broken) {
            Err(DeployError::Invalid(e)) => {
                assert!(e.to_string().contains("broken.toml:"), "{e}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        match app.deploy("same.toml", &v1(topic)) {
            Err(DeployError::Conflict(e)) => assert!(e.contains("already deployed"), "{e}"),
            other => panic!("expected a conflict, got {other:?}"),
        }
    });
    if log_bytes(&log) != log_bytes(&v1_alone) {
        let first = log.iter().zip(&v1_alone).position(|(a, b)| a != b);
        panic!(
            "the output differs from a run without the refused deploys: {} vs {} deltas, first difference at {first:?}: {:?} vs {:?}",
            log.len(),
            v1_alone.len(),
            first.map(|i| &log[i]),
            first.map(|i| &v1_alone[i]),
        );
    }
    app.shutdown();
}

/// Removing a pipeline and deploying it again while a subscriber stays on its channel: the
/// new deployment numbers on from the channel's last delta, so nothing is dropped as a repeat
/// and the subscriber sees one gap-free sequence.
#[test]
fn a_pipeline_removed_and_deployed_again_numbers_on() {
    let topic = "nfl.again";
    let ((log, _), client, app) = replay_with(topic, "", |app| {
        assert!(app.remove("nfl_win_probability"));
        let d = app.deploy("again.toml", &v2(topic)).unwrap();
        assert_eq!(d.state, "live");
    });
    let last = log.last().unwrap().seq;
    client.wait_for_seq(last);
    let (_, _, ws_deltas) = apply(&client.messages());
    assert_eq!(
        ws_deltas, log,
        "the subscriber saw every delta of both deployments"
    );
    for (i, d) in log.iter().enumerate() {
        assert_eq!(
            d.seq,
            i as u64 + 1,
            "one gap-free sequence across the redeploy"
        );
    }
    assert!(log.iter().any(|d| d.version == 1) && log.iter().any(|d| d.version == 2));
    app.shutdown();
}

/// Version 1 watches for swings of the prediction; version 2 for wider ones, under another
/// name, so no alert of one is an alert of the other.
const SWING: &str = "\n[[detector]]\nname = \"swing\"\nkind = \"jump\"\non = \"prediction\"\nthreshold = 0.1\nwindow = \"3m\"\n";
const WIDE: &str = "\n[[detector]]\nname = \"wide_swing\"\nkind = \"jump\"\non = \"prediction\"\nthreshold = 0.15\nwindow = \"10m\"\n";

/// A new version with other detectors takes over while alerts are open: the old version's
/// open alerts end at the swap, the new version's open ones open there, and so every alert a
/// subscriber sees changes only after it opened and ends exactly once.
#[test]
fn alerts_open_at_a_swap_end_there_and_none_changes_unseen() {
    let topic = "nfl.redeploy.alerts";
    let ((log, alerts), _client, app) = replay_with(topic, SWING, |app| {
        let d = app.deploy("v2.toml", &format!("{}{WIDE}", v2(topic)));
        assert_eq!(d.unwrap().state, "warming");
        // Live before the second half is produced: the swap falls mid-game.
        wait_until("version 2 live", 120, || {
            let p = app.publisher.lock().unwrap();
            let live = p.pipelines().first().map(|(l, _)| l.version);
            (p.settled("nfl_win_probability") && live == Some(2)).then_some(())
        });
    });
    let at = log
        .iter()
        .find(|d| d.version == 2)
        .expect("version 2 went live")
        .event_time_ms;
    assert_lives(&alerts);
    let ended = alerts
        .iter()
        .filter(|a| a.version == 1 && a.event_time_ms == at && a.state == AlertState::Resolved)
        .count();
    let opened = alerts
        .iter()
        .filter(|a| a.version == 2 && a.event_time_ms == at && a.state == AlertState::Open)
        .count();
    println!(
        "{} alert changes; at the swap ({at}): {ended} of version 1 ended, {opened} of version 2 opened",
        alerts.len()
    );
    assert!(alerts.iter().any(|a| a.detector == "swing"));
    assert!(alerts.iter().any(|a| a.detector == "wide_swing"));
    assert!(
        alerts
            .iter()
            .all(|a| (a.detector == "swing") == (a.version == 1)),
        "each version raises only its own detector's alerts"
    );
    assert!(ended > 0, "some swing alert was open at the swap");
    app.shutdown();
}

/// A staleness detector of 1 s named `name`.
fn stale(name: &str) -> String {
    format!("\n[[detector]]\nname = \"{name}\"\nkind = \"staleness\"\ngap = \"1s\"\n")
}

/// Swaps versions while the feed is paused and the games in progress are stale under
/// version 1 (detector `stale`), to a version 2 whose staleness detector is named `v2_name`;
/// then resumes the feed. Returns the alert changes and the swap's event time.
fn swap_while_stale(topic: &str, v2_name: &str) -> (Vec<Alert>, u64) {
    let cluster = Cluster::mock(&[(topic, 4), (&format!("{topic}.dead-letters"), 1)]);
    let lines = fixture_lines();
    let half = lines.len() / 2;
    produce_all(&cluster.brokers, topic, &lines[..half]);
    let mut cfg = config(&cluster.brokers, topic, 2);
    cfg.kafka.stop_at_end = false;
    let app = start(&cfg, &[format!("{}{}", v1(topic), stale("stale"))]);
    let capture = Capture::default();
    std::thread::scope(|s| {
        let engine = s.spawn(|| app.run_engine_with(Box::new(capture.clone())).unwrap());
        wait_until("a staleness alert", 120, || {
            (!capture.0.lock().unwrap().1.is_empty()).then_some(())
        });
        // The other games in progress go stale within the same second.
        std::thread::sleep(Duration::from_millis(1500));
        let d = app.deploy("v2.toml", &format!("{}{}", v2(topic), stale(v2_name)));
        assert_eq!(d.unwrap().state, "warming");
        wait_until("version 2 live", 120, || {
            let p = app.publisher.lock().unwrap();
            let live = p.pipelines().first().map(|(l, _)| l.version);
            (p.settled("nfl_win_probability") && live == Some(2)).then_some(())
        });
        produce_all(&cluster.brokers, topic, &lines[half..]);
        app.stop.drain();
        engine.join().unwrap();
    });
    app.shutdown();
    let (log, alerts) = capture.0.lock().unwrap().clone();
    let at = log
        .iter()
        .find(|d| d.version == 2)
        .expect("version 2 went live")
        .event_time_ms;
    (alerts, at)
}

/// Each alert's life, in order: numbered without a gap, opened once, then changed or ended
/// only while open, and ended by the end of the feed (every game resumes, then ends).
fn assert_lives(alerts: &[Alert]) {
    let mut open = std::collections::BTreeSet::new();
    for (i, a) in alerts.iter().enumerate() {
        assert_eq!(a.seq, i as u64 + 1, "alerts numbered without a gap");
        let known = match a.state {
            AlertState::Open => open.insert(a.id.as_str()),
            AlertState::Escalated => open.contains(a.id.as_str()),
            AlertState::Resolved | AlertState::Retracted => open.remove(a.id.as_str()),
        };
        assert!(
            known,
            "{:?} of {} (version {}) out of its life",
            a.state, a.id, a.version
        );
    }
    assert!(open.is_empty(), "alerts that never ended: {open:?}");
}

/// Both versions judge the same games with a detector of the same name: an alert open at the
/// swap stays open (the same alert in both, or inherited if version 2 has not judged the game
/// yet), and the game's next event ends it under version 2.
#[test]
fn staleness_alerts_open_at_a_swap_stay_open_and_the_new_version_ends_them() {
    let (alerts, at) = swap_while_stale("nfl.redeploy.stale", "stale");
    assert_lives(&alerts);
    let open_at_swap: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.version == 1 && a.state == AlertState::Open)
        .collect();
    assert!(!open_at_swap.is_empty());
    for a in &open_at_swap {
        let end: Vec<&Alert> = alerts
            .iter()
            .filter(|e| e.id == a.id && e.seq > a.seq)
            .collect();
        // Ended once, by version 2, at the game's next event: not at the swap, whether or
        // not version 2 had judged the game stale yet when it took over.
        assert_eq!(end.len(), 1, "alert {}: {end:?}", a.id);
        let e = end[0];
        assert!(
            e.version == 2 && e.state == AlertState::Resolved && e.event_time_ms > a.opened_at_ms,
            "alert {} ended by version {} at {} (swap at {at})",
            a.id,
            e.version,
            e.event_time_ms
        );
    }
    println!(
        "{} stale alerts open at the swap ({at})",
        open_at_swap.len()
    );
}

/// The new version's staleness detector has another name: the old version's open alerts end
/// at the swap, the new version's open there, and the next events end those.
#[test]
fn staleness_alerts_of_another_detector_end_at_the_swap_and_the_new_ones_open_there() {
    let (alerts, at) = swap_while_stale("nfl.redeploy.quiet", "quiet");
    assert_lives(&alerts);
    let old: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.detector == "stale" && a.state == AlertState::Open)
        .collect();
    assert!(!old.is_empty());
    for a in &old {
        let ended = alerts
            .iter()
            .find(|e| e.id == a.id && e.state == AlertState::Resolved)
            .unwrap();
        // At the swap, or at the alert's last event if that is later (the slowest partition
        // holds the swap's time back).
        assert_eq!(
            (ended.version, ended.event_time_ms),
            (1, at.max(a.opened_at_ms)),
            "alert {} ends at the swap, as version 1's",
            a.id
        );
    }
    assert!(
        alerts
            .iter()
            .filter(|a| a.detector == "quiet")
            .all(|a| a.version == 2),
        "the new detector's alerts are version 2's"
    );
}
