//! [`TimedMap`] against a brute-force model that rescans every value.

use super::*;
use quickcheck::{quickcheck, Arbitrary, Gen};
use std::time::Duration;

/// A test value: its timer is `offset + ctx.1` seconds after `ctx.0`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct T(Option<u8>);

impl Timed for T {
    type Ctx = (Instant, u64);
    fn timer(&self, ctx: &Self::Ctx) -> Option<Instant> {
        self.0
            .map(|s| ctx.0 + Duration::from_secs(u64::from(s) + ctx.1))
    }
}

#[derive(Clone, Debug)]
enum Op {
    Insert(u8, Option<u8>),
    Remove(u8),
    /// `get_mut` and write.
    Set(u8, Option<u8>),
    /// `get_mut` and only read.
    Peek(u8),
    GetOrInsert(u8, Option<u8>, Option<u8>),
    /// `values_mut`, shifting every timer by this much.
    ShiftAll(u8),
    Next,
    Due(u8),
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        let k = u8::arbitrary(g) % 16;
        let d = Option::<u8>::arbitrary(g);
        match u8::arbitrary(g) % 8 {
            0 => Op::Insert(k, d),
            1 => Op::Remove(k),
            2 => Op::Set(k, d),
            3 => Op::Peek(k),
            4 => Op::GetOrInsert(k, d, Option::<u8>::arbitrary(g)),
            5 => Op::ShiftAll(u8::arbitrary(g) % 4),
            6 => Op::Next,
            _ => Op::Due(u8::arbitrary(g)),
        }
    }
}

type Model = BTreeMap<u8, T>;

fn model_next(m: &Model, ctx: &(Instant, u64)) -> Option<Instant> {
    m.values().filter_map(|v| v.timer(ctx)).min()
}

fn model_due(m: &Model, ctx: &(Instant, u64), now: Instant) -> Vec<u8> {
    m.iter()
        .filter(|(_, v)| v.timer(ctx).is_some_and(|t| t <= now))
        .map(|(k, _)| *k)
        .collect()
}

/// Runs `ops` on a map and on the model; false at the first disagreement.
fn agrees(ops: Vec<Op>) -> bool {
    let base = Instant::now();
    let ctx = (base, 5);
    let mut map: TimedMap<u8, T> = TimedMap::new();
    let mut model = Model::new();
    for op in ops {
        let same = match op {
            Op::Insert(k, d) => map.insert(k, T(d)) == model.insert(k, T(d)),
            Op::Remove(k) => map.remove(&k) == model.remove(&k),
            Op::Set(k, d) => {
                if let Some(v) = map.get_mut(&k) {
                    *v = T(d);
                }
                if let Some(v) = model.get_mut(&k) {
                    *v = T(d);
                }
                true
            }
            Op::Peek(k) => map.get_mut(&k).map(|v| *v) == model.get(&k).copied(),
            Op::GetOrInsert(k, d, write) => {
                let v = map.get_or_insert_with(k, || T(d));
                let m = model.entry(k).or_insert(T(d));
                let same = *v == *m;
                if let Some(w) = write {
                    *v = T(Some(w));
                    *m = T(Some(w));
                }
                same
            }
            Op::ShiftAll(s) => {
                let shift = |v: &mut T| v.0 = v.0.map(|x| x.saturating_add(s));
                map.values_mut().for_each(shift);
                model.values_mut().for_each(shift);
                true
            }
            Op::Next => {
                let same = map.next(&ctx) == model_next(&model, &ctx);
                let timed = model.values().filter(|v| v.0.is_some()).count();
                same && map.dirty_len() == 0 && map.timed_len() == timed
            }
            Op::Due(s) => {
                let now = base + Duration::from_secs(u64::from(s));
                map.due(now, &ctx) == model_due(&model, &ctx, now)
            }
        };
        let reads = map.len() == model.len()
            && map
                .iter()
                .map(|(k, v)| (*k, *v))
                .eq(model.iter().map(|(k, v)| (*k, *v)));
        if !same || !reads || map.dirty_len() > map.len() {
            return false;
        }
    }
    map.next(&ctx) == model_next(&model, &ctx)
}

#[test]
fn timed_map_agrees_with_a_full_scan() {
    quickcheck(agrees as fn(Vec<Op>) -> bool);
}

#[test]
fn a_write_through_get_mut_moves_the_timer() {
    let base = Instant::now();
    let ctx = (base, 0);
    let secs = |s| base + Duration::from_secs(s);
    let mut map: TimedMap<u8, T> = TimedMap::new();
    map.insert(1, T(Some(10)));
    map.insert(2, T(None));
    assert_eq!(map.next(&ctx), Some(secs(10)));
    *map.get_mut(&2).unwrap() = T(Some(3));
    assert_eq!(map.next(&ctx), Some(secs(3)));
    assert_eq!(map.due(secs(5), &ctx), vec![2]);
    *map.get_mut(&2).unwrap() = T(None);
    assert_eq!(map.due(secs(50), &ctx), vec![1]);
    map.remove(&1);
    assert_eq!(map.next(&ctx), None);
    assert_eq!(map.timed_len(), 0);
}

#[test]
fn churn_without_a_flush_keeps_the_dirty_list_within_the_map() {
    let ctx = (Instant::now(), 0);
    let mut map: TimedMap<u16, T> = TimedMap::new();
    for i in 0..10_000u16 {
        map.insert(i % 8, T(Some(1)));
        let _ = map.get_mut(&(i % 8));
        if i % 3 == 0 {
            map.remove(&(i % 8));
        }
        assert!(map.dirty_len() <= map.len());
    }
    assert!(map.len() <= 8);
    map.flush(&ctx);
    assert_eq!(map.dirty_len(), 0);
    assert_eq!(map.timed_len(), map.len());
}

/// A borrow that promised not to move the timer and moved it is caught at the next
/// flush (debug builds); one that kept its promise, or was followed by a `get_mut`,
/// is not.
#[test]
#[cfg(debug_assertions)]
fn an_untimed_borrow_that_moves_the_timer_is_caught() {
    let ctx = (Instant::now(), 0);
    let mut m: TimedMap<u8, T> = TimedMap::new();
    m.insert(1, T(Some(5)));
    assert!(m.next(&ctx).is_some());
    m.update_untimed(&1, &ctx, |v| v.0 = Some(5));
    m.get_mut_untimed(&1, &ctx).unwrap().0 = Some(7);
    m.get_mut(&1);
    assert_eq!(m.next(&ctx), Some(ctx.0 + Duration::from_secs(7)));
    m.get_mut_untimed(&1, &ctx).unwrap().0 = Some(9);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.next(&ctx)));
    assert!(caught.is_err(), "the moved timer went unnoticed");
}
