//! What one connection's peer asked of us: history sync jobs, bounded, plus the budget
//! for requests that name nothing we hold (PROTOCOL.md section 9.4).

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use libp2p_identity::PeerId;

use crate::rate::TokenBucket;
use crate::rooms::union;

/// Ranges kept per job; a more fragmented ask keeps its lowest ranges (the rest is
/// asked again by the next summary or request).
pub(crate) const MAX_JOB_RANGES: usize = 128;
/// Requests naming nothing held that a connection may send at once ...
pub(crate) const REFUSED_BURST: f64 = 1_000.0;
/// ... and per second after that, before it is closed as a protocol violation.
pub(crate) const REFUSED_PER_SEC: f64 = 100.0;

/// A (room, author) job key.
pub(crate) type JobKey = (String, PeerId);

/// Sync jobs in the order they were queued, one per (room, author), each a list of
/// ascending `[start, end)` ranges. Lookup and insertion are `O(log n)`.
pub(crate) struct SyncQueue {
    jobs: BTreeMap<JobKey, VecDeque<(u64, u64)>>,
    order: VecDeque<JobKey>,
    ranges: usize,
    refused: TokenBucket,
}

impl SyncQueue {
    pub fn new(now: Instant) -> Self {
        SyncQueue {
            jobs: BTreeMap::new(),
            order: VecDeque::new(),
            ranges: 0,
            refused: TokenBucket::new(REFUSED_PER_SEC, REFUSED_BURST, now),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Jobs queued.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Ranges queued over all jobs.
    pub fn ranges(&self) -> usize {
        self.ranges
    }

    /// Adds ranges of an author, merging them into its queued job. Returns `false` if
    /// something was left out: the queue already holds `max_jobs` jobs (or
    /// `2 · max_jobs` ranges), or the job would hold more than [`MAX_JOB_RANGES`].
    pub fn push(
        &mut self,
        room: &str,
        author: PeerId,
        ranges: &[(u64, u64)],
        max_jobs: usize,
    ) -> bool {
        let key = (room.to_string(), author);
        let room_left = (2 * max_jobs.max(1)).saturating_sub(self.ranges);
        let old = match self.jobs.remove(&key) {
            Some(job) => job,
            None if self.jobs.len() >= max_jobs.max(1) || room_left == 0 => return false,
            None => {
                self.order.push_back(key.clone());
                VecDeque::new()
            }
        };
        let before = old.len();
        let mut merged = union(old.into(), ranges);
        let cap = MAX_JOB_RANGES.min(before + room_left);
        let complete = merged.len() <= cap;
        merged.truncate(cap);
        self.ranges = self.ranges - before + merged.len();
        self.jobs.insert(key, merged.into());
        complete
    }

    /// The first job and its first range (`None`: the job is empty).
    pub fn front(&self) -> Option<(&JobKey, Option<(u64, u64)>)> {
        let key = self.order.front()?;
        let first = self.jobs.get(key).and_then(|r| r.front().copied());
        Some((key, first))
    }

    /// Drops the first job.
    pub fn pop_job(&mut self) {
        if let Some(key) = self.order.pop_front() {
            if let Some(r) = self.jobs.remove(&key) {
                self.ranges -= r.len();
            }
        }
    }

    /// Marks the first job's numbers below `next` as sent (dropping ranges that are
    /// done, and the job when it is empty).
    pub fn sent_below(&mut self, next: u64) {
        let Some(key) = self.order.front() else {
            return;
        };
        let Some(job) = self.jobs.get_mut(key) else {
            return;
        };
        while let Some(r) = job.front_mut() {
            if r.1 <= next {
                job.pop_front();
                self.ranges -= 1;
            } else {
                r.0 = r.0.max(next);
                break;
            }
        }
        if job.is_empty() {
            self.pop_job();
        }
    }

    /// Charges one request that named nothing held; `false` past the budget.
    pub fn charge_refusal(&mut self, now: Instant) -> bool {
        self.refused.take(1.0, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_per_author_and_bounds_jobs_and_ranges() {
        let now = Instant::now();
        let mut q = SyncQueue::new(now);
        let a = crate::message::test_key().public().to_peer_id();
        let b = crate::message::test_key().public().to_peer_id();
        assert!(q.push("r", a, &[(1, 5)], 2));
        assert!(q.push("r", a, &[(3, 9), (20, 21)], 2));
        assert_eq!((q.len(), q.ranges()), (1, 2));
        assert!(q.push("r", b, &[(1, 2)], 2));
        assert!(!q.push("s", b, &[(1, 2)], 2), "a third job is refused");
        assert_eq!(q.len(), 2);
        // Fragments: at most MAX_JOB_RANGES per job (and 2 · max_jobs in all).
        for k in 0..1_000 {
            q.push("r", a, &[(100 + 2 * k, 101 + 2 * k)], 1_000);
        }
        assert_eq!(q.ranges(), MAX_JOB_RANGES + 1);
        assert_eq!(q.front().unwrap().1, Some((1, 9)));
        q.sent_below(21);
        assert_eq!(q.front().unwrap().1, Some((100, 101)));
        assert_eq!(q.ranges(), MAX_JOB_RANGES - 1);
        q.pop_job();
        assert_eq!(q.front().unwrap().0 .1, b);
        q.sent_below(2);
        assert!(q.is_empty() && q.ranges() == 0);
    }
}
