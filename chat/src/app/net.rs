//! The network as the user sees it (swarm transport): relay reservations kept and lost,
//! hole punches, what AutoNAT concluded, each peer's link (direct or through a relay),
//! and `/addrs`.

use echo_proto::{display_name, Link, Multiaddr, PeerId};
use echo_runtime::{Nat, RuntimeEvent};
use serde_json::{json, Value};

use super::App;

/// Relay addresses kept in `/addrs` and `/copy` (reservations are bounded by the
/// runtime too).
const MAX_RELAYED: usize = 32;

/// `"direct"` or `"relayed"`, as JSON and `/peers` say it.
pub fn link_name(link: Link) -> &'static str {
    match link {
        Link::Relayed => "relayed",
        _ => "direct",
    }
}

/// AutoNAT's verdict: `public` (with the address), `private` or `unknown`.
fn nat_parts(nat: &Nat) -> (&'static str, Option<String>) {
    match nat {
        Nat::Public(a) => ("public", Some(a.to_string())),
        Nat::Private => ("private", None),
        _ => ("unknown", None),
    }
}

fn nat_json(nat: &Nat) -> Value {
    let (status, addr) = nat_parts(nat);
    json!({"status": status, "addr": addr})
}

fn nat_text(nat: &Nat) -> String {
    match nat {
        Nat::Public(a) => format!("AutoNAT: reachable from the internet at {a}"),
        Nat::Private => "AutoNAT: not reachable from the internet (behind a NAT or \
                         firewall): peers need a relay address (--relay)"
            .to_string(),
        _ => "AutoNAT: reachability not known yet".to_string(),
    }
}

impl App {
    /// A network notice of the runtime.
    pub(super) fn on_net(&mut self, e: RuntimeEvent) {
        match e {
            RuntimeEvent::RelayReserved { addr } => {
                let a = addr.to_string();
                self.emit(json!({"event": "relay_reserved", "addr": a}), None);
                if !self.model.addrs.contains(&addr) && self.model.addrs.len() < MAX_RELAYED {
                    self.model.addrs.push(addr);
                }
                self.info(format!(
                    "Relay reservation accepted: peers reach you at {a}"
                ));
            }
            RuntimeEvent::RelayLost {
                relay,
                retry_in,
                reason,
            } => {
                let retry_ms = retry_in.as_millis() as u64;
                self.emit(
                    json!({"event": "relay_lost", "relay": relay.to_string(),
                           "retry_in_ms": retry_ms, "reason": reason}),
                    None,
                );
                // Its circuit addresses are gone until it takes us again.
                let prefix = relay.to_string() + "/p2p-circuit";
                self.model
                    .addrs
                    .retain(|a| !a.to_string().starts_with(&prefix));
                self.info(format!(
                    "Relay {relay} lost ({reason}); trying again in {:.0} s",
                    retry_in.as_secs_f64().ceil()
                ));
            }
            RuntimeEvent::LinkUpgraded { peer } => {
                let disp = self.display_of(&peer);
                self.emit(
                    json!({"event": "hole_punched", "peer": peer.to_base58(), "display": disp}),
                    None,
                );
                self.info(format!("Hole punching made a direct connection to {disp}"));
            }
            RuntimeEvent::NatStatus { nat } => {
                let (status, addr) = nat_parts(&nat);
                self.emit(
                    json!({"event": "nat_status", "status": status, "addr": addr}),
                    None,
                );
                if nat != Nat::Unknown {
                    self.info(nat_text(&nat));
                }
            }
            _ => {}
        }
    }

    fn display_of(&self, peer: &PeerId) -> String {
        let name = self
            .model
            .peers
            .get(peer)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        display_name(&name, peer)
    }

    /// The connection in use to `peer` changed kind.
    pub(super) fn on_link_changed(&mut self, peer: PeerId, link: Link) {
        if let Some(p) = self.model.peers.get_mut(&peer) {
            p.relayed = link == Link::Relayed;
        }
        let disp = self.display_of(&peer);
        let name = link_name(link);
        self.emit(
            json!({"event": "link_changed", "peer": peer.to_base58(), "display": disp,
                   "link": name}),
            None,
        );
        let how = match link {
            Link::Relayed => "now through a relay",
            _ => "now direct",
        };
        self.info(format!("Link to {disp}: {how}"));
    }

    /// `/addrs`: where we listen (dialable), where peers saw us, confirmed external
    /// and relay addresses, and what AutoNAT concluded.
    pub(super) fn show_addrs(&mut self) {
        let net = self.handle.addresses();
        let strings =
            |v: &[Multiaddr]| -> Vec<String> { v.iter().map(|a| a.to_string()).collect() };
        let addrs = strings(&self.model.addrs);
        let relayed = strings(&net.relayed);
        let observed = strings(&net.observed);
        let external = strings(&net.external);
        self.emit(
            json!({"event": "addrs", "peer_id": self.model.me.to_base58(), "addrs": addrs,
                   "observed": observed, "external": external, "relayed": relayed,
                   "nat": nat_json(&net.nat)}),
            None,
        );
        let title = format!("You are {}; your addresses:", self.model.me_display());
        let mut extra: Vec<String> = Vec::new();
        for (what, list) in [
            ("seen by peers at", &observed),
            ("confirmed reachable at", &external),
            ("through a relay", &relayed),
        ] {
            extra.extend(list.iter().map(|a| format!("  {what}: {a}")));
        }
        extra.push(format!("  {}", nat_text(&net.nat)));
        if self.headless() {
            let mut lines: Vec<String> = addrs.iter().map(|a| format!("  {a}")).collect();
            lines.extend(extra);
            self.text_block(&title, lines);
        } else {
            self.model.info(title);
            for a in addrs {
                self.model.address(a);
            }
            for l in extra {
                self.model.info(l);
            }
        }
    }
}
