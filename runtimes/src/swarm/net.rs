//! The ready-made swarm's network watch, on the swarm's task: relay reservations kept
//! (asked again with exponential backoff when a relay goes away), the addresses and NAT
//! status behind [`crate::Handle::addresses`], and the notices for the app
//! ([`RuntimeEvent::RelayReserved`], [`RuntimeEvent::RelayLost`],
//! [`RuntimeEvent::LinkUpgraded`], [`RuntimeEvent::NatStatus`]).

use std::time::{Duration, Instant};

use echo_proto::{Multiaddr, PeerId};
use libp2p::core::transport::ListenerId;
use libp2p::swarm::SwarmEvent;
use libp2p::{autonat, dcutr, identify, Swarm};
use multiaddr::Protocol as Ma;

use super::build::{Behaviour, BehaviourEvent};
use crate::net::{Addresses, SharedAddresses, MAX_OBSERVED};
use crate::{Nat, RuntimeEvent};

/// Relays a swarm reserves on, at most.
pub const MAX_RELAYS: usize = 8;
/// First wait before asking a lost relay again; doubled per failure ...
pub const RELAY_BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// ... up to this.
pub const RELAY_BACKOFF_MAX: Duration = Duration::from_secs(60);

struct Relay {
    /// As configured, ending in `/p2p/<relay id>`.
    addr: Multiaddr,
    peer: Option<PeerId>,
    /// The circuit listener, while one is up or being set up.
    listener: Option<ListenerId>,
    /// Its reservation addresses, while it holds one.
    reserved: Vec<Multiaddr>,
    /// Identify ran with the relay (the observed address DCUtR offers is known).
    identified: bool,
    /// Reservations lost or refused in a row.
    failures: u32,
    retry_at: Option<Instant>,
}

/// See the module docs.
pub(super) struct Watch {
    me: PeerId,
    relays: Vec<Relay>,
    net: SharedAddresses,
}

/// `2^(failures-1)` times the first backoff, capped.
pub(super) fn backoff(failures: u32) -> Duration {
    let steps = failures.saturating_sub(1).min(16);
    (RELAY_BACKOFF_FIRST * 2u32.pow(steps)).min(RELAY_BACKOFF_MAX)
}

/// An observed address worth keeping: an IP address, not a relayed one (identify on a
/// relayed connection reports junk such as `/p2p/<id>` or `/p2p-circuit`).
fn plausible(a: &Multiaddr) -> bool {
    matches!(a.iter().next(), Some(Ma::Ip4(_) | Ma::Ip6(_)))
        && !a.iter().any(|p| p == Ma::P2pCircuit)
}

impl Watch {
    pub fn new(me: PeerId, net: SharedAddresses) -> Self {
        Watch {
            me,
            relays: Vec::new(),
            net,
        }
    }

    /// Asks `relay` for a reservation (now, and again whenever it is lost).
    pub fn reserve(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        relay: Multiaddr,
    ) -> Result<(), String> {
        let peer = match relay.iter().last() {
            Some(Ma::P2p(p)) => Some(p),
            _ => None,
        };
        let mut r = Relay {
            addr: relay,
            peer,
            listener: None,
            reserved: Vec::new(),
            identified: false,
            failures: 0,
            retry_at: None,
        };
        Self::listen(swarm, &mut r)?;
        self.relays.push(r);
        Ok(())
    }

    fn listen(swarm: &mut Swarm<Behaviour>, r: &mut Relay) -> Result<(), String> {
        let a = r.addr.clone().with(Ma::P2pCircuit);
        let id = swarm
            .listen_on(a.clone())
            .map_err(|e| format!("cannot reserve on {a}: {e}"))?;
        r.listener = Some(id);
        r.retry_at = None;
        Ok(())
    }

    /// Every relay holds a reservation, and identify ran with it.
    pub fn settled(&self) -> (bool, bool) {
        let reserved = self.relays.iter().all(|r| !r.reserved.is_empty());
        (reserved, self.relays.iter().all(|r| r.identified))
    }

    /// The reservation addresses, each ending in `/p2p/<own id>`.
    pub fn circuits(&self) -> Vec<Multiaddr> {
        self.relays
            .iter()
            .flat_map(|r| r.reserved.clone())
            .collect()
    }

    /// A relay listener that closed, with why (while [`super::start`] waits, a failure).
    pub fn relay_of(&self, id: ListenerId) -> Option<&Multiaddr> {
        let r = self.relays.iter().find(|r| r.listener == Some(id))?;
        Some(&r.addr)
    }

    /// When the next lost relay is asked again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.relays.iter().filter_map(|r| r.retry_at).min()
    }

    /// Asks the relays whose backoff ended again.
    pub fn retry(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant) {
        for i in 0..self.relays.len() {
            if self.relays[i].retry_at.is_some_and(|t| t <= now) {
                if let Err(e) = Self::listen(swarm, &mut self.relays[i]) {
                    self.lost(swarm, i, e, now);
                }
            }
        }
    }

    fn lost(&mut self, swarm: &mut Swarm<Behaviour>, i: usize, reason: String, now: Instant) {
        let r = &mut self.relays[i];
        r.listener = None;
        r.failures += 1;
        let retry_in = backoff(r.failures);
        r.retry_at = Some(now + retry_in);
        let gone = std::mem::take(&mut r.reserved);
        let relay = r.addr.clone();
        self.update(|a| a.relayed.retain(|x| !gone.contains(x)));
        swarm.behaviour().echo.notify(RuntimeEvent::RelayLost {
            relay,
            retry_in,
            reason,
        });
    }

    fn update(&self, f: impl FnOnce(&mut Addresses)) {
        if let Ok(mut a) = self.net.lock() {
            f(&mut a);
        }
    }

    /// Takes one swarm event.
    pub fn on_event(&mut self, swarm: &mut Swarm<Behaviour>, e: &SwarmEvent<BehaviourEvent>) {
        let now = Instant::now();
        let relay = |id: &ListenerId| self.relays.iter().position(|r| r.listener == Some(*id));
        match e {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                let Some(i) = relay(listener_id) else {
                    return;
                };
                let addr = match address.iter().last() {
                    Some(Ma::P2p(_)) => address.clone(),
                    _ => address.clone().with(Ma::P2p(self.me)),
                };
                let r = &mut self.relays[i];
                r.failures = 0;
                if !r.reserved.contains(&addr) {
                    r.reserved.push(addr.clone());
                }
                let a2 = addr.clone();
                self.update(|a| {
                    Addresses::push(&mut a.relayed, a2, MAX_RELAYS * 4);
                });
                swarm
                    .behaviour()
                    .echo
                    .notify(RuntimeEvent::RelayReserved { addr });
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(i) = relay(listener_id) {
                    let why = match reason {
                        Err(e) => e.to_string(),
                        Ok(()) => "the relay connection closed".to_string(),
                    };
                    self.lost(swarm, i, why, now);
                }
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                let a2 = address.clone();
                self.update(|a| {
                    Addresses::push(&mut a.external, a2, MAX_OBSERVED);
                });
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                self.update(|a| a.external.retain(|x| x != address));
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for r in self.relays.iter_mut().filter(|r| r.peer == Some(*peer_id)) {
                    r.identified = true;
                }
                if plausible(&info.observed_addr) {
                    let o = info.observed_addr.clone();
                    self.update(|a| {
                        Addresses::push(&mut a.observed, o, MAX_OBSERVED);
                    });
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result: Ok(_),
            })) => {
                let peer = *remote_peer_id;
                swarm
                    .behaviour()
                    .echo
                    .notify(RuntimeEvent::LinkUpgraded { peer });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::Event::StatusChanged {
                new,
                ..
            })) => {
                let nat = match new {
                    autonat::NatStatus::Public(a) => Nat::Public(a.clone()),
                    autonat::NatStatus::Private => Nat::Private,
                    autonat::NatStatus::Unknown => Nat::Unknown,
                };
                let n2 = nat.clone();
                self.update(|a| a.nat = n2);
                swarm
                    .behaviour()
                    .echo
                    .notify(RuntimeEvent::NatStatus { nat });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), RELAY_BACKOFF_FIRST);
        assert_eq!(backoff(2), 2 * RELAY_BACKOFF_FIRST);
        assert_eq!(backoff(4), 8 * RELAY_BACKOFF_FIRST);
        assert_eq!(backoff(u32::MAX), RELAY_BACKOFF_MAX);
    }

    #[test]
    fn junk_observed_addresses_are_dropped() {
        let ok: Multiaddr = "/ip4/198.51.100.7/tcp/4001".parse().unwrap();
        let circuit: Multiaddr = "/ip4/198.51.100.7/tcp/4001/p2p-circuit".parse().unwrap();
        let bare: Multiaddr = "/p2p-circuit".parse().unwrap();
        assert!(plausible(&ok));
        assert!(!plausible(&circuit) && !plausible(&bare));
    }
}
