//! One timer structure for the core (quinn-proto's `TimerTable` idea): a map that keeps
//! its values' deadlines in one ordered index, so the earliest deadline is found without
//! scanning every value and a timer call visits only the keys that are due.
//!
//! The index is kept lazily. Any mutable access to a value ([`TimedMap::get_mut`],
//! [`TimedMap::get_or_insert_with`], [`TimedMap::values_mut`], [`TimedMap::insert`])
//! only marks its key dirty, a flag check on the hot path; deadlines are recomputed in
//! [`TimedMap::flush`], which [`TimedMap::next`] and [`TimedMap::due`] run first. The
//! only `&mut V` handed out without marking its key comes from
//! [`TimedMap::get_mut_untimed`] (and [`TimedMap::update_untimed`]), for changes the
//! timer does not read; debug builds check at the next flush that its timer did not
//! move, so no deadline change can be missed.
//! A deadline may depend on a context fixed for the map's life (e.g. the
//! [`crate::Config`]), passed to the methods that flush.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// A value with a timer.
pub(crate) trait Timed {
    /// What the deadline depends on besides the value; the same on every call.
    type Ctx: ?Sized;
    /// When this value's timer fires (`None`: no timer).
    fn timer(&self, ctx: &Self::Ctx) -> Option<Instant>;
}

struct Slot<V> {
    value: V,
    /// Mutably borrowed since the last flush (its key is in `TimedMap::dirty`).
    dirty: bool,
    /// The deadline currently in the index.
    at: Option<Instant>,
}

/// A map whose values' deadlines are indexed: see the module docs.
pub(crate) struct TimedMap<K, V> {
    items: BTreeMap<K, Slot<V>>,
    index: BTreeSet<(Instant, K)>,
    /// Exactly the keys whose slot is dirty, each once (so never longer than the map).
    dirty: Vec<K>,
    /// Bumped by every mutable access (see [`TimedMap::changes`]).
    changes: u64,
    /// Debug builds: keys handed out by [`TimedMap::get_mut_untimed`] with their timer
    /// then, checked unchanged at the next flush.
    #[cfg(debug_assertions)]
    untimed: Vec<(K, Option<Instant>)>,
}

impl<K: Ord + Clone, V: Timed> TimedMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        TimedMap {
            items: BTreeMap::new(),
            index: BTreeSet::new(),
            dirty: Vec::new(),
            changes: 0,
            #[cfg(debug_assertions)]
            untimed: Vec::new(),
        }
    }

    /// Debug builds: every value handed out untimed since the last check, unless marked
    /// dirty since (a later `get_mut`), still has the timer it had then.
    #[cfg(debug_assertions)]
    fn check_untimed(&mut self, ctx: &V::Ctx) {
        for (key, before) in self.untimed.drain(..) {
            if let Some(slot) = self.items.get(&key) {
                debug_assert!(
                    slot.dirty || slot.value.timer(ctx) == before,
                    "get_mut_untimed: the timer changed"
                );
            }
        }
    }

    /// Re-indexes every dirty key.
    pub fn flush(&mut self, ctx: &V::Ctx) {
        #[cfg(debug_assertions)]
        self.check_untimed(ctx);
        let mut dirty = std::mem::take(&mut self.dirty);
        for key in dirty.drain(..) {
            let Some(slot) = self.items.get_mut(&key) else {
                continue;
            };
            slot.dirty = false;
            let new = slot.value.timer(ctx);
            if new == slot.at {
                continue;
            }
            if let Some(old) = slot.at {
                self.index.remove(&(old, key.clone()));
            }
            if let Some(new) = new {
                self.index.insert((new, key));
            }
            slot.at = new;
        }
        self.dirty = dirty; // keeps the allocation
    }

    /// The earliest deadline, if any.
    pub fn next(&mut self, ctx: &V::Ctx) -> Option<Instant> {
        self.flush(ctx);
        self.index.first().map(|(t, _)| *t)
    }

    /// Keys whose deadline is at or before `now`, in key order (the order a full scan
    /// visits them in).
    pub fn due(&mut self, now: Instant, ctx: &V::Ctx) -> Vec<K> {
        self.flush(ctx);
        let mut due: Vec<K> = self
            .index
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, k)| k.clone())
            .collect();
        due.sort();
        due
    }

    /// A counter that changes whenever the map may have: every insertion, removal and
    /// mutable access bumps it (wrapping), so a cache derived from the map's contents is
    /// stale exactly when this differs from the value it was built at.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Inserts (or replaces) a value; returns the old one.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.changes = self.changes.wrapping_add(1);
        match self.items.get_mut(&key) {
            Some(slot) => {
                mark(slot, &mut self.dirty, || key.clone());
                Some(std::mem::replace(&mut slot.value, value))
            }
            None => {
                self.dirty.push(key.clone());
                let slot = Slot {
                    value,
                    dirty: true,
                    at: None,
                };
                self.items.insert(key, slot);
                None
            }
        }
    }

    /// Removes a value and its timer.
    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let (key, slot) = self.items.remove_entry(key)?;
        self.changes = self.changes.wrapping_add(1);
        if let Some(at) = slot.at {
            self.index.remove(&(at, key.clone()));
        }
        if slot.dirty {
            self.dirty.retain(|k| *k != key);
        }
        Some(slot.value)
    }

    /// The value at `key`, to change (marks it dirty).
    pub fn get_mut<Q: Ord + ToOwned<Owned = K> + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        let slot = self.items.get_mut(key)?;
        self.changes = self.changes.wrapping_add(1);
        mark(slot, &mut self.dirty, || key.to_owned());
        Some(&mut slot.value)
    }

    /// Runs `f` on the value at `key` without marking it dirty, for changes to what its
    /// [`Timed::timer`] does not read (a connection's outbox or byte counts): the hot
    /// paths that only queue or acknowledge bytes then cost no re-indexing. Checked in
    /// debug builds as [`TimedMap::get_mut_untimed`] is.
    pub fn update_untimed<Q: Ord + ToOwned<Owned = K> + ?Sized, R>(
        &mut self,
        key: &Q,
        ctx: &V::Ctx,
        f: impl FnOnce(&mut V) -> R,
    ) -> Option<R>
    where
        K: Borrow<Q>,
    {
        self.get_mut_untimed(key, ctx).map(f)
    }

    /// The value at `key`, to change only in what its [`Timed::timer`] does not read
    /// (the form of [`TimedMap::update_untimed`] for a borrow that outlives a closure: the
    /// receive path's decoder and rate limit). Not marked dirty; debug builds check at
    /// the next flush that the timer is unchanged.
    pub fn get_mut_untimed<Q: Ord + ToOwned<Owned = K> + ?Sized>(
        &mut self,
        key: &Q,
        ctx: &V::Ctx,
    ) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        #[cfg(debug_assertions)]
        {
            if self.untimed.len() >= 256 {
                self.check_untimed(ctx);
            }
            if let Some(slot) = self.items.get(key) {
                let before = (!slot.dirty).then(|| slot.value.timer(ctx));
                if let Some(before) = before {
                    self.untimed.push((key.to_owned(), before));
                }
            }
        }
        let _ = ctx;
        let slot = self.items.get_mut(key)?;
        self.changes = self.changes.wrapping_add(1);
        Some(&mut slot.value)
    }

    /// The value at `key`, inserted with `make` if absent, to change (marks it dirty).
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        if !self.items.contains_key(&key) {
            self.insert(key.clone(), make());
        }
        self.get_mut(&key).expect("inserted above")
    }

    /// Every value in key order, to change (marks each dirty).
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> + '_ {
        self.changes = self.changes.wrapping_add(1);
        let dirty = &mut self.dirty;
        self.items.iter_mut().map(move |(k, slot)| {
            mark(slot, dirty, || k.clone());
            &mut slot.value
        })
    }

    /// The value at `key`.
    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.items.get(key).map(|s| &s.value)
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

    /// Keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator + '_ {
        self.items.keys()
    }

    /// Values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator + '_ {
        self.items.values().map(|s| &s.value)
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> + ExactSizeIterator + '_ {
        self.items.iter().map(|(k, s)| (k, &s.value))
    }

    /// Number of keys waiting for a flush (at most [`TimedMap::len`]).
    #[cfg(test)]
    pub fn dirty_len(&self) -> usize {
        self.dirty.len()
    }

    /// Number of keys with a timer in the index.
    #[cfg(test)]
    pub fn timed_len(&self) -> usize {
        self.index.len()
    }
}

/// Marks `slot` dirty, recording its key once.
fn mark<K, V>(slot: &mut Slot<V>, dirty: &mut Vec<K>, key: impl FnOnce() -> K) {
    if !slot.dirty {
        slot.dirty = true;
        dirty.push(key());
    }
}

impl<K: Ord + Clone, V: Timed> Default for TimedMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Borrow<Q>, Q: Ord + ?Sized, V> std::ops::Index<&Q> for TimedMap<K, V> {
    type Output = V;
    fn index(&self, key: &Q) -> &V {
        &self.items[key].value
    }
}

#[cfg(test)]
mod tests;
