//! A set of chunk-group numbers stored as disjoint intervals.

use std::collections::BTreeMap;
use std::ops::Range;

/// A set of chunk groups as sorted, disjoint, non-adjacent intervals. Its size grows
/// with the number of holes, not with the number of groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupSet {
    /// start → end (exclusive).
    runs: BTreeMap<u64, u64>,
}

impl GroupSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the groups `r` (merging with neighbouring intervals).
    pub fn insert(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let (mut start, mut end) = (r.start, r.end);
        // Merge with a run that starts before and reaches `start`.
        if let Some((&s, &e)) = self.runs.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.runs.remove(&s);
            }
        }
        // Merge with every run starting inside [start, end].
        while let Some((&s, &e)) = self.runs.range(start..=end).next() {
            end = end.max(e);
            self.runs.remove(&s);
        }
        self.runs.insert(start, end);
    }

    /// Whether group `g` is in the set.
    pub fn contains(&self, g: u64) -> bool {
        self.runs
            .range(..=g)
            .next_back()
            .is_some_and(|(_, &e)| g < e)
    }

    /// Number of groups in the set.
    pub fn len(&self) -> u64 {
        self.runs.iter().map(|(s, e)| e - s).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Number of intervals.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// The intervals in order.
    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.runs.iter().map(|(&s, &e)| s..e)
    }

    /// The first interval of groups in `0..total` that is in neither `self` nor `other`,
    /// starting at or after `from`, at most `max` long.
    pub(crate) fn first_gap(
        &self,
        other: &GroupSet,
        from: u64,
        total: u64,
        max: u64,
    ) -> Option<Range<u64>> {
        let mut g = from;
        while g < total {
            let skip = |set: &GroupSet, g: u64| {
                set.runs
                    .range(..=g)
                    .next_back()
                    .filter(|(_, &e)| g < e)
                    .map(|(_, &e)| e)
            };
            if let Some(e) = skip(self, g).or_else(|| skip(other, g)) {
                g = e;
                continue;
            }
            let next =
                |set: &GroupSet| set.runs.range(g..).next().map(|(&s, _)| s).unwrap_or(total);
            let end = next(self)
                .min(next(other))
                .min(total)
                .min(g.saturating_add(max));
            return Some(g..end);
        }
        None
    }

    /// Removes the groups `r`.
    pub(crate) fn remove(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let overlapping: Vec<(u64, u64)> = self
            .runs
            .range(..r.end)
            .filter(|(_, &e)| e > r.start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in overlapping {
            self.runs.remove(&s);
            if s < r.start {
                self.runs.insert(s, r.start);
            }
            if e > r.end {
                self.runs.insert(r.end, e);
            }
        }
    }
}

impl FromIterator<Range<u64>> for GroupSet {
    fn from_iter<I: IntoIterator<Item = Range<u64>>>(iter: I) -> Self {
        let mut set = GroupSet::new();
        for r in iter {
            set.insert(r);
        }
        set
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_and_gaps_skip_both_sets() {
        let mut a: GroupSet = [0..2, 5..7, 2..3, 10..12, 6..11].into_iter().collect();
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![0..3, 5..12]);
        assert_eq!(a.len(), 10);
        assert!(a.contains(11) && !a.contains(12) && !a.contains(3));
        let b: GroupSet = [3..4].into_iter().collect();
        assert_eq!(a.first_gap(&b, 0, 20, 100), Some(4..5));
        assert_eq!(a.first_gap(&b, 0, 20, 1), Some(4..5));
        assert_eq!(a.first_gap(&b, 5, 20, 3), Some(12..15));
        assert_eq!(a.first_gap(&b, 0, 4, 3), None);
        a.remove(1..6);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![0..1, 6..12]);
    }
}
