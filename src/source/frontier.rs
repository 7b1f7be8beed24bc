//! How the workers of one process agree on the frontier.
//!
//! Each worker posts its [`LocalMark`]; the frontier is the lowest watermark among non-idle
//! partitions of all workers, or, when every partition is idle, just past the highest event
//! time seen (everything read is released; a later event older than that is late). A
//! partition whose watermark is still unknown blocks any advance until it is idle, and so
//! does a worker that has not posted yet.
//!
//! The board also says how far past the frontier partitions may be read
//! ([`FrontierBoard::read_limit`]): records read ahead of the frontier wait in the dataflow
//! until it passes them, so a backlog read at full speed would wait there whole.

use std::sync::Mutex;

use super::ingest::LocalMark;

/// Shared by the workers of one process.
pub struct FrontierBoard {
    marks: Mutex<Vec<Option<LocalMark>>>,
}

impl FrontierBoard {
    pub fn new(workers: usize) -> Self {
        FrontierBoard {
            marks: Mutex::new(vec![
                Some(LocalMark {
                    blocked: true,
                    ..LocalMark::default()
                });
                workers
            ]),
        }
    }

    /// Posts worker `index`'s mark (None once it has closed its input) and returns the frontier
    /// all may advance to, if any.
    pub fn post(&self, index: usize, mark: Option<LocalMark>) -> Option<u64> {
        let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        marks[index] = mark;
        let live: Vec<&LocalMark> = marks.iter().flatten().collect();
        if live.iter().any(|m| m.blocked) {
            return None;
        }
        live.iter()
            .filter_map(|m| m.active_min)
            .min()
            .or_else(|| live.iter().filter_map(|m| m.idle_release).max())
    }

    /// The watermark above which a partition is not read for now, with the frontier at
    /// `frontier`: `read_ahead` past it. None (read everything) while a partition read to its
    /// end holds the frontier within that reach: only new records or its idle timeout move
    /// the frontier then, and holding the others back would only delay them (and a drain).
    /// Whatever is at the frontier otherwise has records to read, so the frontier moves.
    pub fn read_limit(&self, frontier: u64, read_ahead: u64) -> Option<u64> {
        let limit = frontier.saturating_add(read_ahead);
        let marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        let waiting = marks
            .iter()
            .flatten()
            .any(|m| m.waiting_at.is_some_and(|w| w <= limit));
        (!waiting).then_some(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(
        blocked: bool,
        active_min: Option<u64>,
        idle_release: Option<u64>,
    ) -> Option<LocalMark> {
        Some(LocalMark {
            blocked,
            active_min,
            idle_release,
            waiting_at: None,
        })
    }

    #[test]
    fn partitions_ahead_are_held_while_the_frontier_has_records_to_read() {
        let b = FrontierBoard::new(2);
        b.post(0, mark(false, Some(100), None));
        b.post(1, mark(false, Some(900), None));
        assert_eq!(b.read_limit(100, 60), Some(160));
        // Worker 1's partition at 900 is read to its end: out of reach, it changes nothing.
        let waiting = |at| {
            Some(LocalMark {
                waiting_at: Some(at),
                ..mark(false, Some(100), None).unwrap()
            })
        };
        b.post(1, waiting(900));
        assert_eq!(b.read_limit(100, 60), Some(160));
        // At 150 it may hold the frontier below the limit until it idles: nothing is held.
        b.post(1, waiting(150));
        assert_eq!(b.read_limit(100, 60), None);
        b.post(1, None);
        assert_eq!(b.read_limit(100, 60), Some(160));
    }

    #[test]
    fn lowest_active_watermark_wins() {
        let b = FrontierBoard::new(2);
        b.post(1, mark(false, None, None));
        assert_eq!(
            b.post(0, mark(false, Some(100), Some(100))),
            None.or(Some(100))
        );
        assert_eq!(b.post(1, mark(false, Some(40), Some(90))), Some(40));
    }

    #[test]
    fn an_unknown_watermark_blocks_until_idle() {
        let b = FrontierBoard::new(2);
        b.post(1, mark(true, None, None));
        b.post(0, mark(false, Some(100), Some(100)));
        assert_eq!(b.post(1, mark(true, None, None)), None);
        // Idle now: no longer blocks, no longer counts.
        assert_eq!(b.post(1, mark(false, None, None)), Some(100));
    }

    #[test]
    fn a_worker_that_has_not_posted_blocks() {
        let b = FrontierBoard::new(2);
        assert_eq!(b.post(0, mark(false, Some(100), Some(100))), None);
    }

    #[test]
    fn all_idle_releases_everything_read() {
        let b = FrontierBoard::new(2);
        b.post(0, mark(false, None, Some(70)));
        assert_eq!(b.post(1, mark(false, None, Some(90))), Some(90));
    }

    #[test]
    fn a_closed_worker_stops_counting() {
        let b = FrontierBoard::new(2);
        b.post(1, mark(false, None, None));
        b.post(0, mark(false, Some(10), Some(10)));
        assert_eq!(b.post(1, mark(false, Some(50), Some(50))), Some(10));
        assert_eq!(b.post(0, None), Some(50));
    }
}
