//! `echo_proto::ordering::Chain` driven by arbitrary offers, `take_ready`, timeouts, start
//! hints and retention trims.
//!
//! Two authors with fixed genuine chains, built through the public API
//! (`wire::RoomMessage` with correct `prev` links, hashed by `Message::decode`, signed over
//! `"echo/chat/2 signature\0" ‖ hash`):
//! * author 0: seqs 1, 2, 3, 4, 7, 8, where 7 declares 5 and 6 unused (`skipped = 2`,
//!   as after a restart);
//! * author 1: seqs 1..=6, plus two validly signed variants of seq `MAX_SEQ` (2^62): one
//!   continuing after 6 across a huge declared void, one detached (its predecessor never
//!   exists). The author equivocates; both count as genuine.
//!
//! An offer picks an author, a message, a source tag and a variant: the genuine message
//! with or without its signature, or a tampered copy (altered text) with the original
//! signature or none.
//!
//! Invariants, per author chain:
//! * `take_ready` hands out each seq at most once, and only genuine messages (a tampered
//!   message is never handed out, nor reported `Verified`);
//! * an in-order delivery moves past missing numbers only if they are covered by a range
//!   `on_timeout` reported `Skipped`, by a void that a verified message declared
//!   (`prev_seq + 1 .. seq`), below a start hint, or below the retention floor; a
//!   delivery at or below the last in-order one is a late arrival in a reported skipped
//!   range or a declared void, or backfill below the first in-order delivery;
//! * `Skipped` ranges are non-empty and never cover a seq already handed out;
//! * `Verified` lists ascending seqs, each verified once over the run, the offered one
//!   included; `Duplicate` exactly when the seq was known; a genuine offer is never
//!   `Forged`; forgers named (by `Forged` or `Verified`) are sources that sent tampered
//!   messages;
//! * `buffered()` never exceeds the `max_buffer` passed to `offer`, except by the one
//!   message an accepted offer added that the next `take_ready` hands out; an authentic
//!   message that is next in order (deliverable at once) is never refused as `Full`
//!   unless the buffer is already over the bound that way;
//! * at the end, once every genuine message has been offered signed and the repair and
//!   gap timeouts have passed, nothing stays buffered and every genuine seq at or above
//!   the first in-order delivery (and the floor) has been handed out (when `max_buffer`
//!   leaves room for all of them).
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use echo_proto::message::MAX_SEQ;
use echo_proto::ordering::{Chain, GapAction, Offer};
use echo_proto::sim::keypair;
use echo_proto::wire;
use echo_proto::{Message, SharedMessage};
use libfuzzer_sys::fuzz_target;
use libp2p_identity::Keypair;

const GAP: Duration = Duration::from_secs(2);
const VERIFY: Duration = Duration::from_secs(5);
/// Sources are arbitrary in `0..SOURCES`.
const SOURCES: u8 = 4;

struct Variants {
    signed: SharedMessage,
    unsigned: SharedMessage,
    tampered_signed: SharedMessage,
    tampered_unsigned: SharedMessage,
}

struct Author {
    key: Keypair,
    /// The genuine messages, ascending by seq (the main chain, then extra variants).
    msgs: Vec<Variants>,
    /// Genuine hashes per seq (several where the author equivocates).
    genuine: BTreeMap<u64, Vec<[u8; 32]>>,
    /// Seqs of the main chain (what the final flush offers).
    main: Vec<u64>,
}

fn sign(key: &Keypair, w: &mut wire::RoomMessage) {
    let h = *Message::from_wire(w.clone()).expect("well-formed").hash();
    let mut b = b"echo/chat/2 signature\0".to_vec();
    b.extend_from_slice(&h);
    w.signature = Bytes::from(key.sign(&b).expect("ed25519 signing"));
}

fn variants(key: &Keypair, w: wire::RoomMessage) -> Variants {
    let unsigned = Message::from_wire(w.clone()).expect("well-formed");
    let mut ws = w;
    sign(key, &mut ws);
    let signed = Message::from_wire(ws.clone()).expect("well-formed");
    assert!(signed.verify_signature());
    let mut wt = ws;
    wt.text.push_str(" (tampered)");
    let tampered_signed = Message::from_wire(wt.clone()).expect("well-formed");
    assert!(!tampered_signed.verify_signature());
    wt.signature = Bytes::new();
    let tampered_unsigned = Message::from_wire(wt).expect("well-formed");
    Variants {
        signed: signed.into(),
        unsigned: unsigned.into(),
        tampered_signed: tampered_signed.into(),
        tampered_unsigned: tampered_unsigned.into(),
    }
}

fn build_author(i: u64) -> Author {
    let key = keypair(100 + i);
    let author = Bytes::from(key.public().to_peer_id().to_bytes());
    let seqs: &[u64] = if i == 0 {
        &[1, 2, 3, 4, 7, 8]
    } else {
        &[1, 2, 3, 4, 5, 6]
    };
    let wire_msg = |seq: u64, prev_seq: u64, prev: &[u8; 32], text: String| wire::RoomMessage {
        author: author.clone(),
        room: "r".into(),
        seq,
        lamport: seq * 3 + i,
        sent_at_ms: 0,
        name: format!("author{i}"),
        text,
        prev: Bytes::copy_from_slice(prev),
        signature: Bytes::new(),
        skipped: seq - 1 - prev_seq,
    };
    let mut prev = [0u8; 32];
    let mut prev_seq = 0;
    let mut msgs = Vec::new();
    for &seq in seqs {
        let v = variants(&key, wire_msg(seq, prev_seq, &prev, format!("a{i} t{seq}")));
        assert_eq!(v.signed.prev_seq(), prev_seq);
        prev = *v.signed.hash();
        prev_seq = seq;
        msgs.push(v);
    }
    let main = seqs.to_vec();
    if i == 1 {
        // Continues after 6 across a declared void [7, MAX_SEQ).
        msgs.push(variants(
            &key,
            wire_msg(MAX_SEQ, prev_seq, &prev, "jump".into()),
        ));
        // Detached: names a predecessor MAX_SEQ - 1 that never exists.
        msgs.push(variants(
            &key,
            wire_msg(MAX_SEQ, MAX_SEQ - 1, &[7; 32], "far".into()),
        ));
    }
    let mut genuine: BTreeMap<u64, Vec<[u8; 32]>> = BTreeMap::new();
    for v in &msgs {
        genuine
            .entry(v.signed.seq())
            .or_default()
            .push(*v.signed.hash());
    }
    Author {
        key,
        msgs,
        genuine,
        main,
    }
}

fn fixture() -> &'static [Author; 2] {
    static F: OnceLock<[Author; 2]> = OnceLock::new();
    F.get_or_init(|| [build_author(0), build_author(1)])
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// Offer message `k` of an author from `source`; `variant` picks signed, unsigned or
    /// tampered (signed / unsigned).
    Offer {
        author: bool,
        k: u8,
        source: u8,
        variant: u8,
        /// Call `take_ready` right after, as the node always does.
        take: bool,
    },
    TakeReady {
        author: bool,
    },
    /// Advance virtual time, then run the chain's timeout.
    Timeout {
        author: bool,
        advance_ms: u16,
    },
    /// A neighbour claims to hold the chain from this seq on (then `take_ready`).
    Hint {
        author: bool,
        seq: u8,
    },
    /// Retention drops everything below `seq` (at most the next seq to deliver).
    Trim {
        author: bool,
        seq: u8,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    max_buffer: u8,
    max_repairs: u8,
    ops: Vec<Op>,
}

/// The harness's record of one chain.
struct Track {
    chain: Chain<u8>,
    max_buffer: usize,
    max_repairs: u32,
    /// Seqs handed out by `take_ready`.
    delivered: BTreeSet<u64>,
    /// First and highest seq handed out in order (0: none yet).
    first_in_order: u64,
    last_in_order: u64,
    /// Ranges `[start, end)` that delivery may pass over: reported `Skipped` ranges and
    /// voids declared by verified messages.
    excused: Vec<(u64, u64)>,
    /// Lowest start hint given while the chain was unanchored.
    hint: Option<u64>,
    /// Seqs reported `Verified`.
    verified: BTreeSet<u64>,
    /// Sources that offered a tampered message.
    tamperers: BTreeSet<u8>,
    /// An offer was accepted since the last `take_ready`: the buffer may exceed
    /// `max_buffer` by the one message that `take_ready` hands out at once.
    offered: bool,
}

impl Track {
    fn new(max_buffer: usize, max_repairs: u32) -> Self {
        Track {
            chain: Chain::new(),
            max_buffer,
            max_repairs,
            delivered: BTreeSet::new(),
            first_in_order: 0,
            last_in_order: 0,
            excused: Vec::new(),
            hint: None,
            offered: false,
            verified: BTreeSet::new(),
            tamperers: BTreeSet::new(),
        }
    }

    fn in_excused(&self, seq: u64) -> bool {
        self.excused.iter().any(|&(s, e)| s <= seq && seq < e)
    }

    /// Whether delivery may pass over every seq in `[from, to)`.
    fn may_pass(&self, from: u64, to: u64) -> bool {
        let mut ranges = self.excused.clone();
        if self.last_in_order == 0 {
            // Where a chain may start: below a start hint or the retention floor.
            if let Some(h) = self.hint {
                ranges.push((0, h));
            }
        }
        ranges.push((0, self.chain.floor()));
        ranges.sort();
        let mut at = from;
        for (s, e) in ranges {
            if at >= to {
                break;
            }
            if s <= at && at < e {
                at = e;
            }
        }
        at >= to
    }

    /// `buffered() <= max_buffer`, or one more between an offer of the message that is
    /// next in order and the `take_ready` that hands it out.
    fn check_bound(&self) {
        let b = self.chain.buffered();
        let slack = usize::from(self.offered);
        assert!(
            b <= self.max_buffer + slack,
            "buffered() = {b} exceeds max_buffer = {} (+{slack}; next: {:?})",
            self.max_buffer,
            self.chain.next_seq()
        );
    }

    /// After `take_ready`, whatever is buffered has a timer that will move it on (a gap
    /// or verify deadline), and no verified message waits at `next`.
    fn check_live(&self) {
        let b = self.chain.buffered();
        assert!(
            b == 0 || self.chain.deadline(GAP, VERIFY).is_some(),
            "{b} messages buffered but no deadline: the chain is stalled (next: {:?}, \
             hint: {:?})",
            self.chain.next_seq(),
            self.hint
        );
        // And `take_ready` took what it could: nothing verified waits at `next`.
        if let Some(n) = self.chain.next_seq() {
            assert!(
                self.chain.get(n).is_none(),
                "seq {n} is verified and next in order but was not handed out"
            );
        }
    }

    /// An offer taken over the bound is followed by `take_ready` before anything else
    /// reaches the chain, as `Room` does (it takes right after every offer): otherwise
    /// a lower start hint in between could make that message wait for a gap.
    fn settle_over(&mut self, a: &Author, now: Instant) {
        if self.offered && self.chain.buffered() > self.max_buffer {
            self.take_ready(a, now);
        }
    }

    fn take_ready(&mut self, a: &Author, now: Instant) {
        let mut out = Vec::new();
        self.chain.take_ready(&mut out, now);
        self.offered = false;
        for m in out {
            let seq = m.seq();
            assert!(
                a.genuine.get(&seq).is_some_and(|h| h.contains(m.hash())),
                "take_ready handed out a message that is not a genuine seq {seq}"
            );
            assert!(self.delivered.insert(seq), "seq {seq} handed out twice");
            if seq > self.last_in_order {
                assert!(
                    self.may_pass(self.last_in_order + 1, seq),
                    "in-order delivery jumped from {} to {seq} over numbers never reported \
                     skipped nor declared void (excused: {:?}, hint: {:?})",
                    self.last_in_order,
                    self.excused,
                    self.hint
                );
                if self.first_in_order == 0 {
                    self.first_in_order = seq;
                }
                self.last_in_order = seq;
            } else {
                assert!(
                    self.in_excused(seq) || seq < self.first_in_order,
                    "seq {seq} delivered after {} but was never reported skipped ({:?})",
                    self.last_in_order,
                    self.excused
                );
            }
        }
        self.check_bound();
        self.check_live();
    }

    fn on_timeout(&mut self, now: Instant) {
        match self.chain.on_timeout(now, GAP, VERIFY, self.max_repairs) {
            Some(GapAction::Skipped { start, end }) => {
                assert!(start < end, "empty skipped range {start}..{end}");
                for s in &self.delivered {
                    assert!(
                        !(start..end).contains(s),
                        "skipped range {start}..{end} covers delivered seq {s}"
                    );
                }
                self.excused.push((start, end));
            }
            Some(GapAction::Request {
                start,
                end,
                attempt,
            }) => {
                assert!(start < end, "empty repair request {start}..{end}");
                assert!(
                    (1..=self.max_repairs).contains(&attempt),
                    "repair attempt {attempt} of {}",
                    self.max_repairs
                );
            }
            None => {}
        }
        // Not `check_live`: a skip leaves the held message deliverable with no clock,
        // for the `take_ready` that callers run after `on_timeout` (as `Room` does).
        self.check_bound();
    }

    #[allow(clippy::too_many_arguments)]
    /// Offers a message and checks the outcome.
    fn offer(&mut self, a: &Author, msg: SharedMessage, source: u8, tampered: bool, now: Instant) {
        if tampered {
            self.tamperers.insert(source);
        }
        let seq = msg.seq();
        let signed = msg.signature().is_some();
        let was_known = self.chain.is_known(seq);
        // Already one over the bound (an earlier offer's message awaits `take_ready`):
        // the chain may refuse even the next in order until then.
        let over = self.chain.buffered() > self.max_buffer;
        // The message `take_ready` would hand out right away needs no buffer space.
        let next_in_order = match self.chain.next_seq() {
            // At `next`, or declaring every number from `next` up to it unused.
            Some(n) => n == seq || (msg.prev_seq() < n && n < seq),
            None => msg.prev_seq() == 0,
        };
        let res = self
            .chain
            .offer(msg, source, &a.key.public(), self.max_buffer, now);
        assert_eq!(
            matches!(res, Offer::Duplicate),
            was_known,
            "Duplicate iff the seq was known (seq {seq}): {res:?}"
        );
        match &res {
            Offer::Verified(v, forgers) => {
                assert!(!tampered, "a tampered message was verified");
                for s in forgers {
                    assert!(self.tamperers.contains(s), "honest source {s} named forger");
                }
                let mut last = 0;
                for m in v {
                    assert!(m.seq() > last, "Verified not ascending");
                    last = m.seq();
                    assert!(
                        a.genuine
                            .get(&m.seq())
                            .is_some_and(|h| h.contains(m.hash())),
                        "Verified a message that is not genuine"
                    );
                    assert!(
                        self.verified.insert(m.seq()),
                        "seq {} verified twice",
                        m.seq()
                    );
                    // The author declares the numbers between its predecessor and it
                    // unused (a restart): delivery may hop over them.
                    if m.prev_seq() + 1 < m.seq() {
                        self.excused.push((m.prev_seq() + 1, m.seq()));
                    }
                }
                assert!(
                    v.iter().any(|m| m.seq() == seq),
                    "offered message not in Verified"
                );
            }
            Offer::Forged(srcs) => {
                assert!(tampered, "a genuine message was reported forged");
                for s in srcs {
                    assert!(self.tamperers.contains(s), "honest source {s} named forger");
                }
            }
            Offer::Pending => assert!(!signed, "a signed message is pending"),
            Offer::Full => assert!(
                over || !(signed && !tampered && next_in_order),
                "the next message in order (seq {seq}, authentic) was refused as Full \
                 (buffered {} of {})",
                self.chain.buffered(),
                self.max_buffer
            ),
            Offer::Duplicate => {}
            Offer::Provisional(..) => panic!("offer (not offer_from_author) deferred a check"),
        }
        if matches!(res, Offer::Verified(..)) {
            self.offered = true;
        }
        self.check_bound();
    }
}

fuzz_target!(|input: Input| {
    let f = fixture();
    let max_buffer = 1 + input.max_buffer as usize % 12;
    let max_repairs = u32::from(input.max_repairs % 3);
    let mut now = Instant::now();
    let mut tracks = [
        Track::new(max_buffer, max_repairs),
        Track::new(max_buffer, max_repairs),
    ];
    let mut hinted_or_trimmed = false;

    for op in input.ops.iter().take(128) {
        match *op {
            Op::Offer {
                author,
                k,
                source,
                variant,
                take,
            } => {
                let ai = author as usize;
                let a = &f[ai];
                let v = &a.msgs[k as usize % a.msgs.len()];
                let (msg, tampered) = match variant % 4 {
                    0 => (v.signed.clone(), false),
                    1 => (v.unsigned.clone(), false),
                    2 => (v.tampered_signed.clone(), true),
                    _ => (v.tampered_unsigned.clone(), true),
                };
                let t = &mut tracks[ai];
                t.offer(a, msg, source % SOURCES, tampered, now);
                if take {
                    t.take_ready(a, now);
                }
            }
            Op::TakeReady { author } => {
                let ai = author as usize;
                tracks[ai].take_ready(&f[ai], now);
            }
            Op::Timeout { author, advance_ms } => {
                now += Duration::from_millis(u64::from(advance_ms % 4000));
                let ai = author as usize;
                tracks[ai].settle_over(&f[ai], now);
                tracks[ai].on_timeout(now);
            }
            Op::Hint { author, seq } => {
                let seq = match seq % 10 {
                    9 => MAX_SEQ,
                    s => u64::from(s) + 1,
                };
                let t = &mut tracks[author as usize];
                t.settle_over(&f[author as usize], now);
                if t.chain.next_seq().is_none() {
                    // Where an unanchored chain may start (the lowest hint). Once it has
                    // started, a lower hint only lets older messages in as late arrivals.
                    t.hint = Some(t.hint.map_or(seq, |h| h.min(seq)));
                }
                t.chain.hint_start(seq);
                // As the node does (`Room::compare` then `collect_all`): an unanchored
                // chain may start at once. Without this, an `on_timeout` right after the
                // hint skips to the hint past a held message below it, which then is
                // never handed out and stays counted in `buffered()`.
                t.take_ready(&f[author as usize], now);
                hinted_or_trimmed = true;
            }
            Op::Trim { author, seq } => {
                let t = &mut tracks[author as usize];
                t.settle_over(&f[author as usize], now);
                // Only delivered messages may be trimmed: stay at or below `next`.
                if let Some(n) = t.chain.next_seq() {
                    let seq = u64::from(seq % 10).min(n);
                    let floor = t.chain.floor();
                    t.chain.trim_below(seq);
                    assert!(t.chain.floor() >= floor, "floor went down");
                    hinted_or_trimmed = true;
                }
            }
        }
    }

    // Final flush, twice (the first round's timeouts drop stale candidates that may
    // fill the buffer): every genuine main-chain message, signed, in order; then past
    // every repair attempt and gap timeout.
    for (ai, t) in tracks.iter_mut().enumerate() {
        let a = &f[ai];
        t.take_ready(a, now);
        for _round in 0..2 {
            for v in a.msgs.iter().filter(|v| a.main.contains(&v.signed.seq())) {
                t.offer(a, v.signed.clone(), 0, false, now);
                t.take_ready(a, now);
            }
            // Each gap takes `max_repairs` requests and then a skip; a chain has a few.
            for _ in 0..8 * (max_repairs + 1) {
                now += VERIFY + GAP;
                t.on_timeout(now);
                t.take_ready(a, now);
            }
        }
        assert_eq!(
            t.chain.buffered(),
            0,
            "messages left buffered after the flush"
        );
        if max_buffer > a.msgs.len() {
            let from = t.first_in_order.max(t.chain.floor());
            for &s in &a.main {
                if s >= from || !hinted_or_trimmed {
                    assert!(
                        t.delivered.contains(&s),
                        "genuine seq {s} never handed out (delivered {:?})",
                        t.delivered
                    );
                }
            }
        }
    }
});
