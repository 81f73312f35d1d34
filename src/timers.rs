//! One timer structure for the core (quinn-proto's `TimerTable` idea): a map that keeps
//! every value's deadline indexed, so the earliest deadline is found in O(log n) and a
//! timer call visits only the keys that are due.
//!
//! Correct by construction: every mutation of a value goes through a method that
//! re-indexes it ([`TimedMap::insert`], [`TimedMap::remove`], the [`TimedMut`] guard
//! returned by [`TimedMap::get_mut`], [`TimedMap::retain`], [`TimedMap::for_each_mut`]),
//! so no deadline can be missed by a forgotten index update. A deadline may depend on a
//! context fixed at creation (e.g. the [`crate::Config`]).

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Deref, DerefMut};
use std::time::Instant;

/// A value's deadline, given the map's context.
pub(crate) type DeadlineFn<V, C> = fn(&V, &C) -> Option<Instant>;

/// A map whose values' deadlines are kept indexed: see the module docs.
pub(crate) struct TimedMap<K: Ord + Clone, V, C = ()> {
    items: BTreeMap<K, V>,
    /// The deadline currently indexed per key.
    at: BTreeMap<K, Instant>,
    index: BTreeSet<(Instant, K)>,
    deadline: DeadlineFn<V, C>,
    ctx: C,
}

impl<K: Ord + Clone, V, C> TimedMap<K, V, C> {
    /// An empty map whose values' deadlines are `deadline(value, &ctx)`.
    pub fn new(deadline: DeadlineFn<V, C>, ctx: C) -> Self {
        TimedMap {
            items: BTreeMap::new(),
            at: BTreeMap::new(),
            index: BTreeSet::new(),
            deadline,
            ctx,
        }
    }

    fn reindex(&mut self, key: K) {
        let new = self
            .items
            .get(&key)
            .and_then(|v| (self.deadline)(v, &self.ctx));
        let old = match new {
            Some(d) => self.at.insert(key.clone(), d),
            None => self.at.remove(&key),
        };
        if old != new {
            if let Some(o) = old {
                self.index.remove(&(o, key.clone()));
            }
            if let Some(n) = new {
                self.index.insert((n, key));
            }
        }
    }

    /// Inserts (or replaces) a value; returns the old one.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let old = self.items.insert(key.clone(), value);
        self.reindex(key);
        old
    }

    /// Removes a value and its timer.
    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let (k, old) = self.items.remove_entry(key)?;
        self.reindex(k);
        Some(old)
    }

    /// A guard to change a value: its deadline is re-indexed when the guard drops.
    pub fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<TimedMut<'_, K, V, C>>
    where
        K: Borrow<Q>,
    {
        let key = self.items.get_key_value(key)?.0.clone();
        Some(TimedMut { map: self, key })
    }

    /// The value at `key`, inserted with `make` if absent, behind a guard.
    pub fn get_or_insert_with(
        &mut self,
        key: K,
        make: impl FnOnce() -> V,
    ) -> TimedMut<'_, K, V, C> {
        if !self.items.contains_key(&key) {
            self.items.insert(key.clone(), make());
        }
        TimedMut { map: self, key }
    }

    /// Keeps the values for which `keep` returns true (it may change them).
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        let keys: Vec<K> = self.items.keys().cloned().collect();
        for k in keys {
            let Some(v) = self.items.get_mut(&k) else {
                continue;
            };
            if !keep(&k, v) {
                self.items.remove(&k);
            }
            self.reindex(k);
        }
    }

    /// Calls `f` on every value, re-indexing each.
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&K, &mut V)) {
        self.retain(|k, v| {
            f(k, v);
            true
        });
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<Instant> {
        self.index.first().map(|(t, _)| *t)
    }

    /// Keys whose deadline is at or before `now`, in key order (the order a full scan
    /// visited them in).
    pub fn due(&self, now: Instant) -> Vec<K> {
        let mut due: Vec<K> = self
            .index
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, k)| k.clone())
            .collect();
        due.sort();
        due
    }

    /// Whether `key`'s indexed deadline is at or before `now`.
    #[cfg(test)]
    pub fn is_due(&self, key: &K, now: Instant) -> bool {
        self.at.get(key).is_some_and(|t| *t <= now)
    }

    /// The value at `key`.
    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.items.get(key)
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.items.contains_key(key)
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the map holds nothing.
    #[allow(dead_code)]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Keys in order.
    pub fn keys(&self) -> std::collections::btree_map::Keys<'_, K, V> {
        self.items.keys()
    }

    /// Values in key order.
    pub fn values(&self) -> std::collections::btree_map::Values<'_, K, V> {
        self.items.values()
    }

    /// Entries in key order.
    pub fn iter(&self) -> std::collections::btree_map::Iter<'_, K, V> {
        self.items.iter()
    }

    /// Number of keys with a timer (for tests and gauges).
    #[allow(dead_code)]
    pub fn timed_len(&self) -> usize {
        self.index.len()
    }
}

impl<K: Ord + Clone + Borrow<Q>, Q: Ord + ?Sized, V, C> std::ops::Index<&Q> for TimedMap<K, V, C> {
    type Output = V;
    fn index(&self, key: &Q) -> &V {
        &self.items[key]
    }
}

impl<'a, K: Ord + Clone, V, C> IntoIterator for &'a TimedMap<K, V, C> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::collections::btree_map::Iter<'a, K, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

/// Mutable access to one value of a [`TimedMap`]; re-indexes its deadline on drop.
pub(crate) struct TimedMut<'a, K: Ord + Clone, V, C> {
    map: &'a mut TimedMap<K, V, C>,
    key: K,
}

impl<K: Ord + Clone, V, C> Deref for TimedMut<'_, K, V, C> {
    type Target = V;
    fn deref(&self) -> &V {
        self.map.items.get(&self.key).expect("guarded key exists")
    }
}

impl<K: Ord + Clone, V, C> DerefMut for TimedMut<'_, K, V, C> {
    fn deref_mut(&mut self) -> &mut V {
        self.map
            .items
            .get_mut(&self.key)
            .expect("guarded key exists")
    }
}

impl<K: Ord + Clone, V, C> Drop for TimedMut<'_, K, V, C> {
    fn drop(&mut self) {
        self.map.reindex(self.key.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::{quickcheck, Arbitrary, Gen};
    use std::time::Duration;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u8, Option<u8>),
        Remove(u8),
        Set(u8, Option<u8>),
        Retain(u8),
        ShiftAll(u8),
        Due(u8),
    }

    impl Arbitrary for Op {
        fn arbitrary(g: &mut Gen) -> Self {
            let k = u8::arbitrary(g) % 16;
            let d = Option::<u8>::arbitrary(g);
            match u8::arbitrary(g) % 6 {
                0 => Op::Insert(k, d),
                1 => Op::Remove(k),
                2 => Op::Set(k, d),
                3 => Op::Retain(k),
                4 => Op::ShiftAll(u8::arbitrary(g) % 4),
                _ => Op::Due(u8::arbitrary(g)),
            }
        }
    }

    /// A value's deadline is `base + offset + ctx` seconds (the context shifts all).
    fn deadline(v: &Option<u8>, ctx: &(Instant, u64)) -> Option<Instant> {
        v.map(|s| ctx.0 + Duration::from_secs(u64::from(s) + ctx.1))
    }

    fn model_next(m: &BTreeMap<u8, Option<u8>>, ctx: &(Instant, u64)) -> Option<Instant> {
        m.values().filter_map(|v| deadline(v, ctx)).min()
    }

    fn model_due(m: &BTreeMap<u8, Option<u8>>, ctx: &(Instant, u64), now: Instant) -> Vec<u8> {
        m.iter()
            .filter(|(_, v)| deadline(v, ctx).is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect()
    }

    fn agrees(ops: Vec<Op>) -> bool {
        let base = Instant::now();
        let ctx = (base, 5);
        let mut map: TimedMap<u8, Option<u8>, (Instant, u64)> = TimedMap::new(deadline, ctx);
        let mut model: BTreeMap<u8, Option<u8>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Insert(k, d) => {
                    if map.insert(k, d) != model.insert(k, d) {
                        return false;
                    }
                }
                Op::Remove(k) => {
                    if map.remove(&k) != model.remove(&k) {
                        return false;
                    }
                }
                Op::Set(k, d) => {
                    if let Some(mut g) = map.get_mut(&k) {
                        *g = d;
                    }
                    if let Some(v) = model.get_mut(&k) {
                        *v = d;
                    }
                }
                Op::Retain(k) => {
                    map.retain(|key, _| *key % 3 != k % 3);
                    model.retain(|key, _| *key % 3 != k % 3);
                }
                Op::ShiftAll(s) => {
                    let shift = |v: &mut Option<u8>| *v = v.map(|x| x.saturating_add(s));
                    map.for_each_mut(|_, v| shift(v));
                    model.values_mut().for_each(shift);
                }
                Op::Due(s) => {
                    let now = base + Duration::from_secs(u64::from(s));
                    let due = map.due(now);
                    if due != model_due(&model, &ctx, now) {
                        return false;
                    }
                    if due.iter().any(|k| !map.is_due(k, now)) {
                        return false;
                    }
                }
            }
            if map.next() != model_next(&model, &ctx) || map.len() != model.len() {
                return false;
            }
            let timed = model.values().filter(|v| v.is_some()).count();
            if map.timed_len() != timed || map.at.len() != timed {
                return false;
            }
        }
        true
    }

    #[test]
    fn timed_map_agrees_with_a_full_scan() {
        quickcheck(agrees as fn(Vec<Op>) -> bool);
    }

    #[test]
    fn a_guard_reindexes_on_drop() {
        let base = Instant::now();
        let mut map: TimedMap<u8, Option<u8>, (Instant, u64)> = TimedMap::new(deadline, (base, 0));
        map.insert(1, Some(10));
        map.insert(2, None);
        assert_eq!(map.next(), Some(base + Duration::from_secs(10)));
        *map.get_mut(&2).unwrap() = Some(3);
        assert_eq!(map.next(), Some(base + Duration::from_secs(3)));
        assert_eq!(map.due(base + Duration::from_secs(5)), vec![2]);
        *map.get_mut(&2).unwrap() = None;
        assert_eq!(map.due(base + Duration::from_secs(50)), vec![1]);
        map.remove(&1);
        assert_eq!(map.next(), None);
    }
}
