//! Ended games release their state `retention` after their last event, and that changes no
//! delta: the NFL fixture (32 games over 11 days of event time) through the engine with a
//! 10-minute retention, where most games close during the replay, gives the same delta log,
//! byte for byte, as with a retention nothing reaches. The channel's snapshot keeps every
//! game's last value either way.

mod common;

use common::*;

fn run_with_retention(retention: &str) -> (sideline::engine::EngineStats, Vec<u8>, usize) {
    let topic = "nfl.close";
    let dead = format!("{topic}.dead-letters");
    let cluster = Cluster::mock(&[(topic, 3), (&dead, 1)]);
    let lines = fixture_lines();
    produce_all(&cluster.brokers, topic, &lines);
    let text = nfl_pipeline(&[topic]);
    let changed = text.replace(
        "retention = \"6h\"",
        &format!("retention = \"{retention}\""),
    );
    assert_ne!(changed, text, "the shipped pipeline sets its retention");
    let app = start(&config(&cluster.brokers, topic, 2), &[changed]);
    let (stats, log) = run_engine(&app);
    let snapshot = app.hub.snapshot(CHANNEL).len();
    app.shutdown();
    assert_eq!(stats.accepted as usize, lines.len());
    (stats, log_bytes(&log), snapshot)
}

#[test]
fn closing_ended_games_changes_no_delta() {
    let (kept, kept_log, kept_snapshot) = run_with_retention("1000h");
    let (closed, closed_log, closed_snapshot) = run_with_retention("10m");
    assert_eq!(kept.games_closed, 0, "nothing is 1000 h past its end");
    assert_eq!((kept_snapshot, closed_snapshot), (32, 32));
    // The watermark is the slowest partition's: when the feed ends it has passed week 1 (16
    // games, followed a week later by week 2 on every partition), not necessarily the last
    // days' games (24 of 32 closed in the runs seen).
    assert!(
        closed.games_closed >= 16,
        "only {} of 32 games closed",
        closed.games_closed
    );
    assert!(!kept_log.is_empty());
    assert!(
        kept_log == closed_log,
        "closing games changed the delta log ({} vs {} bytes)",
        kept_log.len(),
        closed_log.len()
    );
}
