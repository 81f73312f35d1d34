//! Admission of accepted TCP connections: a cap on handshakes in progress in total and
//! per remote address, so connections that never finish noise cannot pile up.

use std::collections::HashMap;
use std::net::IpAddr;

use echo_proto::ConnId;

/// The part of a remote address one party controls: the IPv4 address, or the IPv6 /64
/// (one host usually holds a whole /64).
fn source(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Inbound set-ups in progress (from accept until the connection is handed to the node).
#[derive(Debug)]
pub(crate) struct Admission {
    max_total: usize,
    max_per_source: usize,
    by_conn: HashMap<ConnId, IpAddr>,
    per_source: HashMap<IpAddr, usize>,
    /// Connections dropped at once because a cap was reached.
    pub refused: u64,
}

impl Admission {
    pub fn new(max_total: usize, max_per_source: usize) -> Self {
        Admission {
            max_total,
            max_per_source,
            by_conn: HashMap::new(),
            per_source: HashMap::new(),
            refused: 0,
        }
    }

    /// Whether a connection from `ip` may start its handshake as `conn`; if so it is
    /// counted until [`Admission::release`].
    pub fn admit(&mut self, conn: ConnId, ip: IpAddr) -> bool {
        let src = source(ip);
        let n = self.per_source.get(&src).copied().unwrap_or(0);
        if self.by_conn.len() >= self.max_total || n >= self.max_per_source {
            self.refused += 1;
            return false;
        }
        self.per_source.insert(src, n + 1);
        self.by_conn.insert(conn, src);
        true
    }

    /// `conn`'s set-up ended (up, failed or cancelled). Unknown ids are ignored.
    pub fn release(&mut self, conn: ConnId) {
        if let Some(src) = self.by_conn.remove(&conn) {
            if let Some(n) = self.per_source.get_mut(&src) {
                *n -= 1;
                if *n == 0 {
                    self.per_source.remove(&src);
                }
            }
        }
    }

    /// Handshakes in progress.
    pub fn pending(&self) -> usize {
        self.by_conn.len()
    }

    /// The most handshakes in progress from one source.
    pub fn max_from_one_source(&self) -> usize {
        self.per_source.values().copied().max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// 1,000 connections from one address hold at most the per-address cap; other
    /// addresses still get in up to the total cap; released slots are reusable.
    #[test]
    fn caps_per_source_and_total() {
        let mut a = Admission::new(10, 3);
        let mut id = 0;
        let mut next = || {
            id += 1;
            ConnId(id)
        };
        let flood: Vec<bool> = (0..1000).map(|_| a.admit(next(), ip("10.0.0.1"))).collect();
        assert_eq!(flood.iter().filter(|x| **x).count(), 3);
        assert_eq!(
            (a.pending(), a.max_from_one_source(), a.refused),
            (3, 3, 997)
        );
        // Another /64 of the same IPv6 host counts as one source.
        assert!(a.admit(next(), ip("2001:db8::1")));
        assert!(a.admit(next(), ip("2001:db8::2")));
        assert!(a.admit(next(), ip("2001:db8::ffff:1")));
        assert!(!a.admit(next(), ip("2001:db8::3")));
        assert!(a.admit(next(), ip("2001:db8:0:1::1")));
        // An IPv4-mapped address is its IPv4 address.
        assert!(!a.admit(next(), ip("::ffff:10.0.0.1")));
        for i in 2..=4 {
            assert!(a.admit(next(), ip(&format!("10.0.0.{i}"))));
        }
        assert_eq!(a.pending(), 10);
        assert!(!a.admit(next(), ip("10.0.0.9")), "total cap");
        a.release(ConnId(1));
        a.release(ConnId(1)); // twice: no effect
        assert_eq!(a.pending(), 9);
        assert!(a.admit(next(), ip("10.0.0.1")));
        assert!(!a.admit(next(), ip("10.0.0.1")));
    }
}
