//! Token bucket driven by the caller's `now`.

use std::time::Instant;

/// A token bucket: `rate` tokens per second, at most `burst` stored.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes `n` tokens; returns `false` (taking none) if there are not enough.
    pub fn take(&mut self, n: f64, now: Instant) -> bool {
        if now > self.last {
            let dt = (now - self.last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
            self.last = now;
        }
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refills_at_rate_and_caps_at_burst() {
        let t = Instant::now();
        let mut b = TokenBucket::new(10.0, 5.0, t);
        for _ in 0..5 {
            assert!(b.take(1.0, t));
        }
        assert!(!b.take(1.0, t));
        assert!(b.take(1.0, t + Duration::from_millis(100)));
        assert!(!b.take(1.0, t + Duration::from_millis(100)));
        let later = t + Duration::from_secs(100);
        for _ in 0..5 {
            assert!(b.take(1.0, later));
        }
        assert!(!b.take(1.0, later));
        // A clock that goes backwards does not mint tokens.
        assert!(!b.take(1.0, t));
    }
}
