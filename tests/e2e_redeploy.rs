//! Deploying a new version of a running pipeline (issue 3): subscribers stay connected, the
//! sequence has no gap, values switch to the new version at the swap, and the end state is
//! the new version's alone. A refused deploy changes nothing.

mod common;

use std::sync::Arc;

use common::*;
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

/// Replays the first half of the fixture, runs `during` with the app while the engine runs,
/// then replays the second half and drains. Returns the delta log and the subscriber.
fn replay_with(topic: &str, during: impl FnOnce(&Arc<App>)) -> (Vec<Delta>, Client, Arc<App>) {
    let cluster = Cluster::mock(&[(topic, 4), (&format!("{topic}.dead-letters"), 1)]);
    let lines = fixture_lines();
    let half = lines.len() / 2;
    produce_all(&cluster.brokers, topic, &lines[..half]);
    let mut cfg = config(&cluster.brokers, topic, 2);
    cfg.kafka.stop_at_end = false;
    let app = start(&cfg, &[v1(topic)]);
    let client = Client::connect(app.ws_addr, SUBSCRIBE);
    client.wait_for("the first snapshot", |ms| {
        ms.iter()
            .any(|m| matches!(m, ServerMessage::Snapshot { .. }))
    });
    let log = std::thread::scope(|s| {
        let engine = s.spawn(|| run_engine(&app).1);
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
        engine.join().unwrap()
    });
    drop(cluster);
    (log, client, app)
}

#[test]
fn a_new_version_takes_over_without_a_gap_and_ends_where_it_would_alone() {
    let v1_alone = alone(v1, "v1");
    let v2_alone = alone(v2, "v2");
    assert_ne!(finals(&v1_alone), finals(&v2_alone), "the versions differ");

    let topic = "nfl.redeploy";
    let (log, client, app) = replay_with(topic, |app| {
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
    let (log, _client, app) = replay_with(topic, |app| {
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
    let (log, client, app) = replay_with(topic, |app| {
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
