//! The node's side of the bounded clock ([`crate::clock`]): the wall-clock input and
//! adopting received timestamps.

use std::time::{Instant, SystemTime};

use super::Node;

impl Node {
    /// Tells the node the wall clock (call at start and whenever convenient; the `wall`
    /// of [`Node::send`] counts too). The node projects it forward with the `now` of
    /// later inputs. It bounds what a received clock value may do (PROTOCOL.md
    /// section 8.3); until it is known, received values are accepted and adopted only
    /// once it is.
    pub fn set_wall_clock(&mut self, wall: SystemTime, now: Instant) {
        self.last_now = self.last_now.max(now);
        if self.clock.set_wall(wall, now) {
            self.stats.clock_clamped += 1;
        }
    }

    /// The node's clock: the `lamport` its next message would carry, minus one
    /// (a hybrid logical clock value, section 8.3).
    pub fn clock(&self) -> u64 {
        self.clock.value()
    }

    /// Adopts the clock value of a verified message or accepted profile, within the
    /// bound.
    pub(super) fn adopt_clock(&mut self, ts: u64, now: Instant) {
        if self.clock.adopt(ts, now) {
            self.stats.clock_clamped += 1;
        }
    }
}
