//! The node's clock: a hybrid logical clock (HLC) bounded by wall time.
//!
//! A clock value is one `u64`: the wall clock in milliseconds since the Unix epoch,
//! shifted left by [`LOGICAL_BITS`], plus a logical counter in the low bits. Sending takes
//! `max(value + 1, wall)`, so a node's timestamps follow its wall clock and still grow by
//! one per event; receiving adopts the sender's timestamp (Lamport's rule), so a reply
//! sorts after what it answers. Unlike a bare Lamport counter, a received timestamp can
//! be compared with the local wall clock, and that bounds what one message can do
//! (PROTOCOL.md section 8.3):
//!
//! * a timestamp more than `max_clock_skew` ahead of the local wall clock, or above
//!   [`MAX_CLOCK`], is **not accepted** (yet): the message or profile is dropped, without
//!   penalty, and accepted once the wall clock has caught up (anti-entropy offers it
//!   again);
//! * the clock never **adopts** more than `max_clock_skew / 2` ahead of the wall clock;
//!   accepted timestamps beyond that are clamped. Honest nodes whose wall clocks differ
//!   by less than half the skew therefore never refuse each other's messages, even
//!   right after an attacker pushed a clock to the edge.
//!
//! The clock only reads wall time the driver passes in (`Node::set_wall_clock`, the
//! `wall` argument of `Node::send`, `Restore::wall`), projected forward with the
//! monotonic `now` of each input. Until a wall time is known nothing is refused and
//! received timestamps are only remembered; they are adopted, clamped, once it is.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bits of a clock value that count events within one millisecond.
pub const LOGICAL_BITS: u32 = 16;

/// The largest clock value accepted or produced (2^62): far above any real wall time
/// (it is the year 4200), and below `i64::MAX`, so stores using signed 64-bit integers
/// never see a negative value.
pub const MAX_CLOCK: u64 = 1 << 62;

/// The clock value of a wall time in ms (its logical part 0), capped at [`MAX_CLOCK`].
pub fn from_wall_ms(ms: u64) -> u64 {
    ms.saturating_mul(1 << LOGICAL_BITS).min(MAX_CLOCK)
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A hybrid logical clock bounded by the wall clock (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    value: u64,
    /// Highest timestamp received while the wall clock was unknown.
    unadopted: u64,
    /// The latest wall reading: (when, ms since the epoch).
    wall: Option<(Instant, u64)>,
    skew_ms: u64,
}

impl Clock {
    /// A clock at 0 with the given `max_clock_skew`.
    pub fn new(max_skew: Duration) -> Self {
        Clock {
            value: 0,
            unadopted: 0,
            wall: None,
            skew_ms: millis(max_skew),
        }
    }

    /// The current value.
    pub fn value(&self) -> u64 {
        self.value
    }

    /// The wall clock at `now`, in ms, if known.
    fn wall_ms(&self, now: Instant) -> Option<u64> {
        let (at, ms) = self.wall?;
        Some(ms.saturating_add(millis(now.saturating_duration_since(at))))
    }

    /// A new wall reading (the latest one is the truth; the clock value never goes
    /// back). Adopts what was received while no wall time was known; returns whether
    /// that had to be clamped.
    pub fn set_wall(&mut self, wall: SystemTime, now: Instant) -> bool {
        self.wall = Some((now, unix_ms(wall)));
        let pending = std::mem::take(&mut self.unadopted);
        pending > 0 && self.adopt(pending, now)
    }

    /// The timestamp of a new local event (a message sent, a profile signed).
    pub fn tick(&mut self, now: Instant) -> u64 {
        let wall = self.wall_ms(now).map_or(0, from_wall_ms);
        self.value = self.value.saturating_add(1).max(wall).min(MAX_CLOCK);
        self.value
    }

    /// Whether a received timestamp may be accepted now: at most [`MAX_CLOCK`] and at
    /// most `max_clock_skew` ahead of the wall clock (when known).
    pub fn acceptable(&self, ts: u64, now: Instant) -> bool {
        ts <= MAX_CLOCK
            && self
                .wall_ms(now)
                .is_none_or(|w| ts <= from_wall_ms(w.saturating_add(self.skew_ms)))
    }

    /// Adopts a received (accepted) or restored timestamp, never past half the skew
    /// ahead of the wall clock. Returns whether it had to be clamped.
    pub fn adopt(&mut self, ts: u64, now: Instant) -> bool {
        let ts = ts.min(MAX_CLOCK);
        let Some(w) = self.wall_ms(now) else {
            self.unadopted = self.unadopted.max(ts);
            return false;
        };
        let cap = from_wall_ms(w.saturating_add(self.skew_ms / 2));
        let clamped = ts > cap && ts > self.value;
        self.value = self.value.max(ts.min(cap));
        clamped
    }

    /// Moves the clock forward by `n` (after a restart), within [`MAX_CLOCK`].
    pub fn jump(&mut self, n: u64) {
        self.value = self.value.saturating_add(n).min(MAX_CLOCK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn ticks_follow_the_wall_clock_and_count_within_a_millisecond() {
        let now = Instant::now();
        let mut c = Clock::new(MIN);
        c.set_wall(at(1_000), now);
        assert_eq!(c.tick(now), from_wall_ms(1_000));
        assert_eq!(c.tick(now), from_wall_ms(1_000) + 1);
        let later = now + Duration::from_millis(5);
        assert_eq!(c.tick(later), from_wall_ms(1_005));
        // A wall clock set back does not move the value back.
        c.set_wall(at(10), later);
        assert_eq!(c.tick(later), from_wall_ms(1_005) + 1);
    }

    #[test]
    fn one_timestamp_moves_the_clock_by_at_most_half_the_skew() {
        let now = Instant::now();
        let mut c = Clock::new(MIN);
        c.set_wall(at(1_000_000), now);
        assert!(!c.acceptable(u64::MAX, now));
        assert!(!c.acceptable(MAX_CLOCK, now));
        assert!(!c.acceptable(from_wall_ms(1_000_000 + 60_001), now));
        assert!(c.acceptable(from_wall_ms(1_000_000 + 60_000), now));
        assert!(c.adopt(from_wall_ms(1_000_000 + 50_000), now));
        assert_eq!(c.value(), from_wall_ms(1_000_000 + 30_000));
        assert!(!c.adopt(from_wall_ms(1_000_000 + 10_000), now));
        assert_eq!(c.value(), from_wall_ms(1_000_000 + 30_000));
        assert!(c.adopt(u64::MAX, now), "restored poison is clamped too");
        assert_eq!(c.value(), from_wall_ms(1_000_000 + 30_000));
    }

    #[test]
    fn without_a_wall_clock_timestamps_wait_to_be_adopted() {
        let now = Instant::now();
        let mut c = Clock::new(MIN);
        assert!(c.acceptable(5, now));
        assert!(!c.adopt(u64::MAX, now));
        assert_eq!(c.value(), 0);
        assert!(c.set_wall(at(2_000), now));
        assert_eq!(c.value(), from_wall_ms(32_000));
        // Extreme configurations do not overflow.
        let mut c = Clock::new(Duration::MAX);
        c.set_wall(at(u64::MAX), now);
        assert!(c.acceptable(MAX_CLOCK, now));
        assert_eq!(c.tick(now + Duration::from_secs(1)), MAX_CLOCK);
    }
}
