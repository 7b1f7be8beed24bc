//! `Ingest`: order, lateness, ownership, closing and restarts, one record at a time.

use super::*;

/// An `Ingest` taking records up to 4 KiB.
fn ingest(lateness: Duration, idle: Duration, policy: LatePolicy) -> Ingest {
    Ingest::new(4096, lateness, idle, policy)
}

fn nfl(game: &str) -> GameKey {
    GameKey {
        sport: crate::event::Sport::Nfl,
        game_id: game.into(),
    }
}

fn line(game: &str, seq: u64, t: u64) -> Vec<u8> {
    format!(r#"{{"sport":"nfl","game_id":"{game}","seq":{seq},"event_time_ms":{t},"period":1,"clock_ms":600000,"kind":"play","home":"A","away":"B","home_score":0,"away_score":0}}"#).into_bytes()
}

fn rec<'a>(partition: i32, payload: &'a [u8]) -> Record<'a> {
    Record {
        topic: "t",
        partition,
        offset: 0,
        timestamp_ms: Some(5),
        key: None,
        payload,
    }
}

#[test]
fn watermark_is_max_event_time_minus_lateness_per_partition() {
    let mut ing = ingest(
        Duration::from_millis(100),
        Duration::from_secs(60),
        LatePolicy::DeadLetter,
    );
    ing.add_partition("t", 0);
    ing.add_partition("t", 1);
    let now = Instant::now();
    assert!(ing.mark(now).blocked, "partition 1 has no watermark yet");
    ing.accept(&rec(0, &line("g", 1, 1_000)), 0).unwrap();
    ing.accept(&rec(1, &line("h", 1, 5_000)), 0).unwrap();
    ing.accept(&rec(1, &line("h", 2, 4_000)), 0).unwrap_err(); // time regressed
    let m = ing.mark(now);
    assert_eq!(
        (m.blocked, m.active_min, m.idle_release),
        (false, Some(900), None)
    );
}

#[test]
fn a_closed_game_forgets_its_order_and_refuses_later_records() {
    let mut ing = ingest(
        Duration::ZERO,
        Duration::from_secs(60),
        LatePolicy::DeadLetter,
    );
    ing.add_partition("t", 0);
    ing.accept(&rec(0, &line("g", 1, 1_000)), 0).unwrap();
    ing.accept(&rec(0, &line("h", 1, 1_000)), 0).unwrap();
    let g = nfl("g");
    ing.close_game(&g);
    let r = ing.accept(&rec(0, &line("g", 2, 2_000)), 0).unwrap_err();
    assert_eq!(r.code, RejectCode::GameClosed);
    assert!(r.to_string().contains("game g ended"), "{r}");
    // Other games go on.
    ing.accept(&rec(0, &line("h", 2, 2_000)), 0).unwrap();
    // An ended game's events at or after its release time are refused even before its
    // state is released, so which ones count does not depend on when that happens.
    let h = GameKey {
        game_id: "h".into(),
        ..g
    };
    ing.set_closes_at(&h, Some(5_000), 600);
    ing.accept(&rec(0, &line("h", 3, 4_999)), 0).unwrap();
    let r = ing.accept(&rec(0, &line("h", 4, 5_000)), 0).unwrap_err();
    assert_eq!(r.code, RejectCode::GameClosed);
    assert!(r.to_string().contains("released at 5000"), "{r}");
}

/// The input closes a game `retention` after its end, but the checkpoints' `done` (what
/// was delivered) can be far behind it then: a checkpoint taken before the game's last
/// values are delivered must still have a restart read it again. Dropping it from the
/// marks at close lost the rest of a game in tests/e2e_recovery.rs.
#[test]
fn a_closed_game_stays_in_the_marks_until_a_checkpoint_counts_it_over() {
    let mut ing = ingest(
        Duration::ZERO,
        Duration::from_secs(60),
        LatePolicy::DeadLetter,
    );
    ing.add_partition("t", 0);
    let at = |offset: i64, payload: Vec<u8>| -> Record<'static> {
        Record {
            offset,
            ..rec(0, payload.leak())
        }
    };
    let end = String::from_utf8(line("g", 2, 2_000))
        .unwrap()
        .replace(r#""kind":"play""#, r#""kind":"game_end""#)
        .into_bytes();
    ing.accept(&at(7, line("g", 1, 1_000)), 0).unwrap();
    ing.accept(&at(8, end), 0).unwrap();
    ing.accept(&at(9, line("h", 1, 2_500)), 0).unwrap();
    let g = nfl("g");
    let retention = 600;
    // The input passed 2_000 + 600; nothing was delivered past 1_500 yet.
    ing.close_game(&g);
    let mark = ing.marks(Instant::now(), 0).remove(0);
    assert!(mark.games.contains(&(g.clone(), 7, Some(2_000), 1_000)));
    assert_eq!(
        (
            mark.fresh_from,
            ing.marks(Instant::now(), 3_000)[0].fresh_from
        ),
        (2_500, 3_000),
        "records read anew are valued at the watermark or the input's time, the later"
    );
    assert_eq!(
        (
            mark.earliest_row(Some(1_500), retention),
            mark.earliest_row(Some(2_600), retention)
        ),
        (1_000, 2_500),
        "g's rows count until a checkpoint counts it over"
    );
    let cp = crate::checkpoint::PartitionCheckpoint::from_mark(&mark, Some(1_500), retention);
    assert!(
        cp.open.contains(&(g.clone(), 7)),
        "not delivered through its end: read again after a restart"
    );
    let cp = crate::checkpoint::PartitionCheckpoint::from_mark(&mark, Some(2_600), retention);
    assert!(!cp.open.iter().any(|(k, _)| *k == g), "over");
    // Kept until a checkpoint counts it over; then gone for good.
    ing.forget_closed(2_599, retention);
    assert!(ing.marks(Instant::now(), 0)[0]
        .games
        .iter()
        .any(|(k, ..)| *k == g));
    ing.forget_closed(2_600, retention);
    let marked: Vec<String> = ing.marks(Instant::now(), 0)[0]
        .games
        .iter()
        .map(|(k, ..)| k.game_id.clone())
        .collect();
    assert_eq!(marked, ["h"]);
}

/// A game a restart reads again and closes is not reported open again from the restart's
/// list once it leaves the marks.
#[test]
fn a_rebuilt_game_once_closed_is_not_reopened_by_its_restart() {
    let mut ing = ingest(
        Duration::ZERO,
        Duration::from_secs(60),
        LatePolicy::DeadLetter,
    );
    ing.add_partition("t", 0);
    let g = nfl("g");
    ing.resume(
        "t",
        0,
        Resume {
            below: 10,
            open: [(g.clone(), 0)].into_iter().collect(),
            max_time: Some(1_000),
            caught_up_ms: None,
        },
    );
    let end = String::from_utf8(line("g", 1, 1_000))
        .unwrap()
        .replace(r#""kind":"play""#, r#""kind":"game_end""#)
        .into_bytes();
    let end = end.leak();
    assert_eq!(ing.replay(&rec(0, end)), Replay::Again);
    ing.accept(&rec(0, end), 0).unwrap();
    ing.close_game(&g);
    ing.forget_closed(u64::MAX, 0);
    assert_eq!(ing.marks(Instant::now(), 0)[0].games, vec![]);
}

#[test]
fn caught_up_partition_goes_idle_after_the_timeout() {
    let mut ing = ingest(
        Duration::ZERO,
        Duration::from_millis(10),
        LatePolicy::DeadLetter,
    );
    ing.add_partition("t", 0);
    let t0 = Instant::now();
    ing.caught_up("t", 0, t0);
    assert!(ing.mark(t0).blocked);
    assert!(!ing.mark(t0 + Duration::from_millis(10)).blocked);
    // Once it has data and goes idle, it releases everything it read.
    ing.accept(&rec(0, &line("g", 1, 1_000)), 0).unwrap();
    ing.caught_up("t", 0, t0);
    let m = ing.mark(t0 + Duration::from_millis(10));
    assert_eq!((m.active_min, m.idle_release), (None, Some(1_001)));
}

/// A failed fetch of one partition makes that one forget it was read to its end, not the
/// others: they go idle as before, it holds the frontier.
#[test]
fn a_failed_fetch_forgets_only_its_partition_s_end() {
    let mut ing = ingest(
        Duration::ZERO,
        Duration::from_millis(10),
        LatePolicy::FoldIn,
    );
    ing.add_partition("t", 0);
    ing.add_partition("t", 1);
    ing.accept(&rec(0, &line("a", 1, 1_000)), 0).unwrap();
    ing.accept(&rec(1, &line("b", 1, 5_000)), 0).unwrap();
    let t0 = Instant::now();
    ing.caught_up("t", 0, t0);
    ing.caught_up("t", 1, t0);
    assert!(ing.forget_caught_up_of("t", 0), "it was read to its end");
    assert!(
        !ing.forget_caught_up_of("t", 0),
        "forgotten already: the transport was asked once to say it again"
    );
    let m = ing.mark(t0 + Duration::from_millis(10));
    assert_eq!((m.active_min, m.idle_release), (Some(1_000), Some(5_001)));
    assert_eq!(
        m.waiting_at, None,
        "partition 0 may have records it cannot see"
    );
}

/// The consumer lost sight of the broker: every partition forgets it was read to its end,
/// and the ones that were are named, for the transport to be asked to say so again.
#[test]
fn an_outage_names_the_partitions_that_forgot_their_end() {
    let mut ing = ingest(Duration::ZERO, Duration::from_secs(60), LatePolicy::FoldIn);
    for p in 0..3 {
        ing.add_partition("t", p);
    }
    let t0 = Instant::now();
    ing.caught_up("t", 0, t0);
    ing.caught_up("t", 2, t0);
    assert_eq!(
        ing.forget_caught_up(),
        vec![("t".to_string(), 0), ("t".to_string(), 2)]
    );
    assert!(!ing.all_caught_up());
    assert_eq!(ing.forget_caught_up(), Vec::<(String, i32)>::new());
    ing.caught_up("t", 0, t0);
    ing.caught_up("t", 1, t0);
    ing.caught_up("t", 2, t0);
    assert!(ing.all_caught_up());
}

#[test]
fn late_events_follow_the_policy() {
    let mut dl = ingest(
        Duration::ZERO,
        Duration::from_secs(1),
        LatePolicy::DeadLetter,
    );
    let r = dl.accept(&rec(0, &line("g", 1, 1_000)), 2_000).unwrap_err();
    assert_eq!(r.code, RejectCode::Late);
    let mut fold = ingest(Duration::ZERO, Duration::from_secs(1), LatePolicy::FoldIn);
    let a = fold.accept(&rec(0, &line("g", 1, 1_000)), 2_000).unwrap();
    assert!(a.late);
    assert_eq!(a.time, 2_000, "folded in at the frontier");
}

#[test]
fn lateness_is_judged_against_the_partition_watermark() {
    let mut ing = ingest(
        Duration::from_millis(100),
        Duration::from_secs(1),
        LatePolicy::DeadLetter,
    );
    ing.accept(&rec(0, &line("a", 1, 10_000)), 0).unwrap();
    // Another game on the same partition, within the allowed lateness: on time.
    ing.accept(&rec(0, &line("b", 1, 9_950)), 0).unwrap();
    // Beyond it: late, although the frontier is still 0.
    let r = ing.accept(&rec(0, &line("c", 1, 9_850)), 0).unwrap_err();
    assert_eq!(r.code, RejectCode::Late);
    // Another partition has its own watermark.
    ing.accept(&rec(1, &line("d", 1, 9_850)), 0).unwrap();
}

#[test]
fn a_game_on_two_partitions_is_a_conflict_across_workers() {
    let owners = Arc::new(GameOwners::default());
    let new = || {
        ingest(Duration::ZERO, Duration::from_secs(1), LatePolicy::FoldIn)
            .with_owners(owners.clone())
    };
    let (mut w0, mut w1) = (new(), new());
    w0.accept(&rec(0, &line("g", 1, 1_000)), 0).unwrap();
    // The same game on another partition, whichever worker reads it.
    let r = w1.accept(&rec(1, &line("g", 2, 2_000)), 0).unwrap_err();
    assert_eq!(r.code, RejectCode::PartitionConflict);
    let r = w0.accept(&rec(1, &line("g", 3, 3_000)), 0).unwrap_err();
    assert_eq!(r.code, RejectCode::PartitionConflict);
    // Its own partition goes on as before.
    w0.accept(&rec(0, &line("g", 2, 2_000)), 0).unwrap();
}

#[test]
fn duplicates_and_regressions_are_named() {
    let mut ing = ingest(
        Duration::ZERO,
        Duration::from_secs(1),
        LatePolicy::DeadLetter,
    );
    ing.accept(&rec(0, &line("g", 5, 1_000)), 0).unwrap();
    assert_eq!(
        ing.accept(&rec(0, &line("g", 5, 1_000)), 0)
            .unwrap_err()
            .code,
        RejectCode::Duplicate
    );
    assert_eq!(
        ing.accept(&rec(0, &line("g", 4, 1_000)), 0)
            .unwrap_err()
            .code,
        RejectCode::SequenceRegressed
    );
    assert_eq!(
        ing.accept(&rec(0, &line("g", 6, 999)), 0).unwrap_err().code,
        RejectCode::TimeRegressed
    );
    assert!(ing.accept(&rec(0, &line("g", 6, 1_000)), 0).is_ok());
}

#[test]
fn a_resend_is_a_duplicate_and_another_event_under_the_same_id_a_conflict() {
    let mut ing = ingest(
        Duration::ZERO,
        Duration::from_secs(1),
        LatePolicy::DeadLetter,
    );
    ing.accept(&rec(0, &line("g", 1, 1_000)), 0).unwrap();
    ing.accept(&rec(0, &line("g", 2, 2_000)), 0).unwrap();
    // An earlier event sent again, byte for byte: a re-send, whatever came since.
    let r = ing.accept(&rec(0, &line("g", 1, 1_000)), 0).unwrap_err();
    assert_eq!(r.code, RejectCode::Duplicate);
    // The same id with other content.
    let r = ing.accept(&rec(0, &line("g", 1, 1_500)), 0).unwrap_err();
    assert_eq!(r.code, RejectCode::Conflict);
    assert!(r.detail.contains("different content"), "{}", r.detail);
    // An id never seen, below the last: out of order, as before.
    let r = ing.accept(&rec(0, &line("g", 0, 2_000)), 0).unwrap_err();
    assert_eq!(r.code, RejectCode::SequenceRegressed);
}

#[test]
fn a_restarted_partition_reads_again_only_the_open_games() {
    let mut ing = ingest(
        Duration::ZERO,
        Duration::from_secs(1),
        LatePolicy::DeadLetter,
    );
    ing.add_partition("t", 0);
    let open = nfl("open");
    ing.resume(
        "t",
        0,
        Resume {
            below: 10,
            open: [(open.clone(), 4)].into_iter().collect(),
            max_time: Some(5_000),
            caught_up_ms: None,
        },
    );
    let at = |offset: i64, payload: &'static [u8]| Record {
        offset,
        ..rec(0, payload)
    };
    let (over, live, bad) = (
        line("over", 3, 1_000),
        line("open", 1, 2_000),
        b"not json".to_vec(),
    );
    let (over, live, bad) = (over.leak(), live.leak(), bad.leak());
    assert_eq!(ing.replay(&at(3, over)), Replay::Skip);
    assert_eq!(ing.replay(&at(5, live)), Replay::Again);
    assert_eq!(
        ing.replay(&at(6, bad)),
        Replay::Skip,
        "dead-lettered before"
    );
    assert_eq!(ing.replay(&at(10, over)), Replay::Fresh);
    // A checkpoint taken now still holds the restart's position and open game.
    let m = &ing.marks(Instant::now(), 0)[0];
    assert_eq!(m.next_offset, 10);
    assert_eq!(
        m.games,
        vec![(open, 4, None, 0)],
        "its first row's time is not known until it is read again"
    );
}
