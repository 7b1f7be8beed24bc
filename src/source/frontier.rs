//! How the workers of one process agree on the frontier.
//!
//! Each worker posts its [`LocalMark`]; the frontier is the lowest watermark among non-idle
//! partitions of all workers, or, when every partition is idle, the highest watermark. A
//! partition whose watermark is still unknown blocks any advance until it is idle.

use std::sync::Mutex;

use super::ingest::LocalMark;

/// Shared by the workers of one process.
pub struct FrontierBoard {
    marks: Mutex<Vec<Option<LocalMark>>>,
}

impl FrontierBoard {
    pub fn new(workers: usize) -> Self {
        FrontierBoard {
            marks: Mutex::new(vec![Some(LocalMark::default()); workers]),
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
            .or_else(|| live.iter().filter_map(|m| m.max).max())
    }
}
