//! What a node knows of its own reachability: listen, observed and relayed addresses and
//! what AutoNAT concluded ([`crate::Handle::addresses`]).

use std::sync::{Arc, Mutex};

use echo_proto::Multiaddr;

#[cfg(feature = "swarm")]
/// Observed addresses kept (the most recent; peers report them, so they are bounded).
pub(crate) const MAX_OBSERVED: usize = 8;

/// What AutoNAT concluded about this node's reachability.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Nat {
    /// Not known yet (or no AutoNAT: the direct drivers never probe).
    #[default]
    Unknown,
    /// Peers reached this node on the address given: it is publicly reachable.
    Public(Multiaddr),
    /// Peers could not reach this node: it is behind a NAT or firewall; a relay
    /// reservation ([`crate::swarm::SwarmOptions::relays`]) makes it reachable.
    Private,
}

/// A node's addresses, for a `/addrs` view ([`crate::Handle::addresses`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Addresses {
    /// Where the node listens (as bound, each ending in `/p2p/<id>`).
    pub listen: Vec<Multiaddr>,
    /// Where peers saw this node connect from (identify), most recent last; not
    /// necessarily reachable.
    pub observed: Vec<Multiaddr>,
    /// External addresses confirmed reachable (AutoNAT).
    pub external: Vec<Multiaddr>,
    /// `…/p2p-circuit/p2p/<id>` addresses of the current relay reservations.
    pub relayed: Vec<Multiaddr>,
    /// What AutoNAT concluded.
    pub nat: Nat,
}

/// Shared between the swarm task (writer) and the handles (readers).
pub(crate) type SharedAddresses = Arc<Mutex<Addresses>>;

#[cfg(feature = "swarm")]
impl Addresses {
    /// Adds `a` to `list` if new; a full list drops its oldest entry.
    pub(crate) fn push(list: &mut Vec<Multiaddr>, a: Multiaddr, max: usize) -> bool {
        if list.contains(&a) {
            return false;
        }
        if list.len() >= max {
            list.remove(0);
        }
        list.push(a);
        true
    }
}

#[cfg(all(test, feature = "swarm"))]
mod tests {
    use super::*;

    /// Peers report observed addresses at will: the list keeps the latest, bounded.
    #[test]
    fn observed_addresses_are_bounded() {
        let mut a = Addresses::default();
        for port in 0..1_000u16 {
            let addr: Multiaddr = format!("/ip4/198.51.100.7/tcp/{port}").parse().unwrap();
            Addresses::push(&mut a.observed, addr.clone(), MAX_OBSERVED);
            assert!(!Addresses::push(&mut a.observed, addr, MAX_OBSERVED));
        }
        assert_eq!(a.observed.len(), MAX_OBSERVED);
        let last: Multiaddr = "/ip4/198.51.100.7/tcp/999".parse().unwrap();
        assert_eq!(a.observed.last(), Some(&last));
    }
}
