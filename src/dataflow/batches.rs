//! A container builder for streams whose times hold a few records each.
//!
//! timely's `CapacityContainerBuilder` allocates a container at its preferred capacity (8 KiB
//! of records) for the first record of a time. Most of this engine's times hold one event's
//! handful of updates, so each completed time cost an 8 KiB allocation per stage and per
//! exchange target, freed on another thread: in the replay profile, with event times that do
//! not coincide, that was ~15% of a worker, most of it the kernel zeroing fresh pages.
//! [`SmallBatches`] lets a container grow with what is pushed, and ships it at the same
//! preferred capacity.

use std::collections::VecDeque;

use timely::container::{ContainerBuilder, LengthPreservingContainerBuilder, PushInto};

/// As `CapacityContainerBuilder<Vec<T>>`, with containers that grow from empty.
pub struct SmallBatches<T> {
    current: Vec<T>,
    /// An emptied container handed back by the caller, reused for the next record.
    empty: Option<Vec<T>>,
    pending: VecDeque<Vec<T>>,
}

impl<T> Default for SmallBatches<T> {
    fn default() -> Self {
        SmallBatches {
            current: Vec::new(),
            empty: None,
            pending: VecDeque::new(),
        }
    }
}

impl<T> PushInto<T> for SmallBatches<T> {
    #[inline]
    fn push_into(&mut self, item: T) {
        if self.current.capacity() == 0 {
            if let Some(mut reused) = self.empty.take() {
                reused.clear();
                self.current = reused;
            }
        }
        self.current.push(item);
        if self.current.len() >= timely::container::buffer::default_capacity::<T>() {
            self.pending.push_back(std::mem::take(&mut self.current));
        }
    }
}

impl<T> ContainerBuilder for SmallBatches<T> {
    type Container = Vec<T>;

    #[inline]
    fn extract(&mut self) -> Option<&mut Vec<T>> {
        self.empty = Some(self.pending.pop_front()?);
        self.empty.as_mut()
    }

    #[inline]
    fn finish(&mut self) -> Option<&mut Vec<T>> {
        if !self.current.is_empty() {
            self.pending.push_back(std::mem::take(&mut self.current));
        }
        self.empty = self.pending.pop_front();
        self.empty.as_mut()
    }
}

impl<T> LengthPreservingContainerBuilder for SmallBatches<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record comes out once, in order, in containers of at most the preferred size.
    #[test]
    fn records_come_out_in_order_in_bounded_containers() {
        let preferred = timely::container::buffer::default_capacity::<u64>();
        let mut b = SmallBatches::default();
        let mut out = Vec::new();
        for i in 0..(2 * preferred as u64 + 3) {
            b.push_into(i);
            while let Some(c) = b.extract() {
                assert_eq!(c.len(), preferred);
                out.append(c);
            }
        }
        while let Some(c) = b.finish() {
            assert!(c.len() <= preferred);
            out.append(c);
        }
        assert_eq!(out, (0..(2 * preferred as u64 + 3)).collect::<Vec<_>>());
        // A few records stay a small container.
        let mut b = SmallBatches::default();
        b.push_into(7);
        let c = b.finish().expect("one container");
        assert_eq!(c.as_slice(), &[7]);
        assert!(c.capacity() < preferred, "capacity {}", c.capacity());
    }
}
