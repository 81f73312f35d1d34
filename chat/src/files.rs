//! Files in the chat: how an offer rides in a message's text, the offers seen and the
//! transfers running, for `/get`, `/files`, the progress bars and `--json`.
//!
//! An offer is an ordinary signed message (room or direct) whose whole text is
//! [`offer_text`]: a readable part for clients that know nothing of files, then the
//! marker `echo-offer:1:` and the canonical [`Offer`] bytes in unpadded base64url. Only
//! a text that is exactly what [`offer_text`] makes of the offer it carries is an offer:
//! the readable part cannot disagree with what `/get` fetches (no "cute.jpg" that
//! downloads as "setup.exe"), and anything else stays plain text.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use echo_proto::blob::{Offer, TransferId};
use echo_proto::PeerId;
use serde_json::{json, Value};

use crate::model::ViewId;
use crate::text::clean;

/// What precedes the encoded offer in a message's text.
pub const MARKER: &str = "echo-offer:1:";

/// Offers remembered (the oldest seen is forgotten first): each is a few hundred bytes.
pub const MAX_OFFERS: usize = 4_096;
/// Finished, failed or cancelled transfers kept for `/files`.
pub const MAX_FINISHED: usize = 64;
/// Digits of the hash a `/get` id needs at least.
pub const MIN_ID_LEN: usize = 8;

/// Bytes for people: `999 B`, `1.5 KiB`, `12.0 MiB`, `3.25 GiB`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    match u {
        0 => format!("{n} B"),
        _ if v < 10.0 => format!("{v:.2} {}", UNITS[u]),
        _ if v < 100.0 => format!("{v:.1} {}", UNITS[u]),
        _ => format!("{v:.0} {}", UNITS[u]),
    }
}

/// The message text that carries `offer`.
pub fn offer_text(offer: &Offer) -> Option<String> {
    let bytes = offer.encode().ok()?;
    Some(format!(
        "[file] {} ({}) /get {} {MARKER}{}",
        offer.name,
        human_size(offer.size),
        offer.short_id(),
        URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The offer a message's text carries, if it is exactly an offer's text.
pub fn parse_offer(text: &str) -> Option<Offer> {
    let at = text.rfind(MARKER)?;
    let encoded = &text[at + MARKER.len()..];
    // The longest offer encodes in well under 1 KiB: refuse to decode more.
    if encoded.len() > 1_024 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    let offer = Offer::decode(&bytes).ok()?;
    (offer_text(&offer)? == text).then_some(offer)
}

/// How an offer reads in the chat (`[file] name · 1.5 MiB · image/png · /get 1a2b3c4d`),
/// made safe for a terminal.
pub fn describe(offer: &Offer) -> String {
    let mime = if offer.mime.is_empty() {
        String::new()
    } else {
        format!(" · {}", clean(&offer.mime))
    };
    format!(
        "[file] {} · {}{mime} · /get {}",
        clean(&offer.name),
        human_size(offer.size),
        offer.short_id()
    )
}

/// The JSON form of an offer (in `message`, `direct`, `shared` and `files` events).
pub fn offer_json(offer: &Offer) -> Value {
    json!({"id": offer.short_id(), "hash": offer.hash.to_hex(), "name": offer.name,
           "size": offer.size, "mime": offer.mime})
}

/// An offer seen in a room or conversation.
#[derive(Debug, Clone)]
pub struct Seen {
    /// What is offered.
    pub offer: Offer,
    /// Who offered it (the first source to ask).
    pub from: PeerId,
    /// Where it was offered.
    pub view: ViewId,
    /// When it was seen (a counter: the oldest is forgotten first).
    order: u64,
}

/// Where a transfer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Fetching.
    Running,
    /// Finished: the file is here.
    Done(PathBuf),
    /// Gave up, with the reason.
    Failed(String),
    /// Cancelled by the user.
    Cancelled,
}

/// A download, as the UI shows it.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The runtime's id.
    pub id: TransferId,
    /// What is fetched.
    pub offer: Offer,
    /// Bytes verified so far.
    pub done: u64,
    /// Peers it is fetched from.
    pub sources: usize,
    /// Where it is.
    pub state: State,
    /// Recent (time, bytes done) samples, for the rate.
    samples: Vec<(Instant, u64)>,
}

/// How far back the rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(5);

impl Transfer {
    /// Bytes per second over the last few seconds (None until two samples exist).
    pub fn rate(&self) -> Option<f64> {
        let (t0, b0) = *self.samples.first()?;
        let (t1, b1) = *self.samples.last()?;
        let dt = t1.checked_duration_since(t0)?.as_secs_f64();
        (dt > 0.0).then(|| b1.saturating_sub(b0) as f64 / dt)
    }

    /// Time left at the current rate.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.rate().filter(|r| *r > 0.0)?;
        let left = self.offer.size.saturating_sub(self.done) as f64;
        Some(Duration::from_secs_f64((left / rate).min(1e7)))
    }

    /// Done fraction in 0..=1.
    pub fn ratio(&self) -> f64 {
        if self.offer.size == 0 {
            return 1.0;
        }
        (self.done as f64 / self.offer.size as f64).clamp(0.0, 1.0)
    }

    /// One line for the progress bar and `/files`: `45% 12.0 MiB of 100 MiB, 8.20
    /// MiB/s, 0:11 left, 2 sources`.
    pub fn status(&self) -> String {
        match &self.state {
            State::Running => {
                let mut s = format!(
                    "{:.0}% {} of {}",
                    self.ratio() * 100.0,
                    human_size(self.done),
                    human_size(self.offer.size)
                );
                if let Some(r) = self.rate() {
                    s.push_str(&format!(", {}/s", human_size(r as u64)));
                }
                if let Some(eta) = self.eta() {
                    let secs = eta.as_secs();
                    s.push_str(&format!(", {}:{:02} left", secs / 60, secs % 60));
                }
                let n = self.sources;
                s.push_str(&format!(", {n} source{}", if n == 1 { "" } else { "s" }));
                s
            }
            State::Done(path) => format!("done: {}", clean(&path.display().to_string())),
            State::Failed(why) => format!("failed: {}", clean(why)),
            State::Cancelled => "cancelled".into(),
        }
    }
}

/// Offers seen and transfers, bounded.
#[derive(Debug, Default)]
pub struct Files {
    offers: BTreeMap<[u8; 32], Seen>,
    order: u64,
    /// Downloads, oldest first.
    pub transfers: Vec<Transfer>,
}

impl Files {
    /// Remembers an offer (the first offerer of a hash stays its `from`).
    pub fn saw(&mut self, offer: Offer, from: PeerId, view: ViewId) {
        self.order += 1;
        let order = self.order;
        self.offers
            .entry(offer.hash.0)
            .and_modify(|s| s.order = order)
            .or_insert(Seen {
                offer,
                from,
                view,
                order,
            });
        while self.offers.len() > MAX_OFFERS {
            let oldest = self
                .offers
                .iter()
                .min_by_key(|(_, s)| s.order)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => self.offers.remove(&k),
                None => break,
            };
        }
    }

    /// Offers, the most recently seen last.
    pub fn offers(&self) -> Vec<&Seen> {
        let mut v: Vec<&Seen> = self.offers.values().collect();
        v.sort_by_key(|s| s.order);
        v
    }

    /// The offer a `/get` id names: a prefix of its hash in hex, at least
    /// [`MIN_ID_LEN`] digits, matching exactly one offer (a peer can make up an offer
    /// whose hash shares the first digits of another's: then more digits are needed).
    pub fn find(&self, id: &str) -> Result<&Seen, String> {
        let id = id.trim().to_ascii_lowercase();
        if id.len() < MIN_ID_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "a file id is {MIN_ID_LEN} or more hex digits (as in /get 1a2b3c4d); /files lists them"
            ));
        }
        let mut hits = self
            .offers
            .values()
            .filter(|s| s.offer.hash.to_hex().starts_with(&id));
        match (hits.next(), hits.next()) {
            (Some(s), None) => Ok(s),
            (None, _) => Err(format!("no file offer {id}; /files lists them")),
            (Some(_), Some(_)) => Err(format!(
                "{id} names more than one file: give more digits of its hash (/files)"
            )),
        }
    }

    /// A transfer by the id the user typed: a prefix of its hash (or its number).
    pub fn transfer_mut(&mut self, id: &str) -> Option<&mut Transfer> {
        let id = id.trim().to_ascii_lowercase();
        if id.is_empty() {
            return None;
        }
        let running = |t: &&mut Transfer| t.state == State::Running;
        self.transfers
            .iter_mut()
            .filter(running)
            .find(|t| t.offer.hash.to_hex().starts_with(&id))
    }

    /// The transfer running for this hash, if any.
    pub fn running(&self, hash: &[u8; 32]) -> Option<&Transfer> {
        self.transfers
            .iter()
            .find(|t| t.state == State::Running && &t.offer.hash.0 == hash)
    }

    /// A download started.
    pub fn started(&mut self, id: TransferId, offer: Offer, now: Instant) {
        self.transfers.push(Transfer {
            id,
            offer,
            done: 0,
            sources: 0,
            state: State::Running,
            samples: vec![(now, 0)],
        });
        self.trim();
    }

    /// Progress of a download.
    pub fn progress(&mut self, id: TransferId, done: u64, sources: usize, now: Instant) {
        if let Some(t) = self.get_mut(id) {
            t.done = done;
            t.sources = sources;
            t.samples.push((now, done));
            while t.samples.len() > 2
                && (t.samples.len() > 64 || now.duration_since(t.samples[0].0) > RATE_WINDOW)
            {
                t.samples.remove(0);
            }
        }
    }

    /// A download ended.
    pub fn ended(&mut self, id: TransferId, state: State) {
        if let Some(t) = self.get_mut(id) {
            if let State::Done(_) = state {
                t.done = t.offer.size;
            }
            t.state = state;
        }
        self.trim();
    }

    /// Downloads running now.
    pub fn active(&self) -> impl Iterator<Item = &Transfer> {
        self.transfers.iter().filter(|t| t.state == State::Running)
    }

    fn get_mut(&mut self, id: TransferId) -> Option<&mut Transfer> {
        self.transfers.iter_mut().rev().find(|t| t.id == id)
    }

    /// Forgets the oldest finished transfers beyond [`MAX_FINISHED`].
    fn trim(&mut self) {
        let finished = self
            .transfers
            .iter()
            .filter(|t| t.state != State::Running)
            .count();
        let mut excess = finished.saturating_sub(MAX_FINISHED);
        self.transfers.retain(|t| {
            if excess > 0 && t.state != State::Running {
                excess -= 1;
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests;
