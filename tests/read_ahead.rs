//! `[time] read-ahead`: a partition more than that far past the frontier waits while the
//! partition holding the frontier back still has records, so a backlog does not wait in
//! memory whole. Holding back changes no delta, and never waits for an idle timeout: the
//! runs below keep their partitions from ever going idle (`idle-timeout = "1h"`), so a
//! partition read to its end that held the others back would stop the run for an hour.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// Runs the fixture through 4 partitions with this `read-ahead`; the stats and the delta log.
fn run(read_ahead: &str, workers: usize) -> (sideline::engine::EngineStats, Vec<u8>) {
    let topic = format!("nfl.ahead.{}.{workers}", read_ahead.replace(' ', ""));
    let dead = format!("{topic}.dead-letters");
    let cluster = Cluster::mock(&[(&topic, 4), (&dead, 1)]);
    let lines = fixture_lines();
    produce_all(&cluster.brokers, &topic, &lines);
    let text = nfl_pipeline(&[&topic]);
    let idle = "idle-timeout = \"2s\"";
    assert!(
        text.contains(idle),
        "the shipped pipeline sets its idle timeout"
    );
    let text = text.replace(
        idle,
        &format!("idle-timeout = \"1h\"\nread-ahead = \"{read_ahead}\""),
    );
    let app = start(&config(&cluster.brokers, &topic, workers), &[text]);
    let (tx, rx) = mpsc::channel();
    let runner = app.clone();
    std::thread::spawn(move || {
        let _ = tx.send(run_engine(&runner));
    });
    let (stats, log) = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("read-ahead {read_ahead:?}: the replay did not finish in 2 minutes (waiting for a partition's idle timeout?)"));
    app.shutdown();
    assert_eq!(
        (stats.accepted as usize, stats.rejected, stats.late),
        (lines.len(), 0, 0)
    );
    (stats, log_bytes(&log))
}

#[test]
fn holding_partitions_back_changes_no_delta_and_never_waits_for_idle() {
    // 1,000,000 days past the frontier is past any of the fixture's event times, even with
    // the frontier still at 0 before every partition has an event.
    let (free, free_log) = run("1000000d", 2);
    assert_eq!(free.held, 0, "nothing is a million days ahead");
    assert!(!free_log.is_empty());
    for (ahead, workers) in [("1m", 2), ("0s", 1), ("0s", 2)] {
        let (held, log) = run(ahead, workers);
        assert!(
            held.held > 0,
            "read-ahead {ahead:?}, {workers} workers: no partition was ever held back"
        );
        assert!(
            log == free_log,
            "read-ahead {ahead:?}, {workers} workers: the delta log differs ({} vs {} bytes)",
            log.len(),
            free_log.len()
        );
    }
}
