//! Three honest nodes in `echo_proto::sim::Sim`, fully connected, plus a hostile raw peer on
//! node 0 (and optionally a legacy raw peer on node 1). The input is a list of operations:
//! the raw peer sends arbitrary bytes or well-formed hostile frames (messages with
//! arbitrary fields or proper signed chains with gaps, replays and tampered copies of what
//! node 0 sent it, odd memberships, junk peer lists, goodbyes...), virtual time advances,
//! honest nodes send texts, join and leave side rooms, rename and send direct messages.
//!
//! At the end the network runs on for 20 s and then:
//! * nothing panicked;
//! * the three honest nodes are still connected to each other and never closed one
//!   another for misbehaviour;
//! * every text an honest node sent to "general" is in every honest node's
//!   `room_log("general")` exactly once (with the sender's hash), and the three logs are
//!   identical;
//! * every message in any honest log that claims an honest author is one that author
//!   really sent in that room (no impersonation);
//! * a text sent to a side room reaches every honest node that was in that room from
//!   well before the send until the end;
//! * every node's `Event::Message` stream delivers each (room, author, seq) at most once
//!   per room membership, in per-author order except across ranges reported by
//!   `Event::Gap`.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use arbitrary::Arbitrary;
use bytes::Bytes;
use echo_proto::codec::FrameDecoder;
use echo_proto::dm::envelope::Prekey;
use echo_proto::message::MAX_SEQ;
use echo_proto::sim::{keypair, Sim};
use echo_proto::wire::{self, Frame, Kind};
use echo_proto::{Config, Event, Message, Multiaddr, PeerId, Protocol};
use libfuzzer_sys::fuzz_target;
use libp2p_identity::Keypair;

const HONEST: usize = 3;
const SIDE_ROOMS: [&str; 2] = ["side", "other"];
/// A side-room send counts for receivers that joined at least this long before it.
const MARGIN: Duration = Duration::from_millis(100);
const MAX_OPS: usize = 64;
const MAX_RAW_BYTES: usize = 1024;
const MAX_RAW_CONNS: usize = 4;
/// Identities the hostile side holds keys for: the raw peer itself and a second author.
const RAW_KEYS: [u64; 2] = [50, 51];
const LEGACY_KEY: u64 = 52;

fn raw_keys() -> &'static [Keypair; 2] {
    static K: OnceLock<[Keypair; 2]> = OnceLock::new();
    K.get_or_init(|| [keypair(RAW_KEYS[0]), keypair(RAW_KEYS[1])])
}

// ----- the input -----------------------------------------------------------------------

#[derive(Debug, Arbitrary)]
enum RoomName {
    General,
    Side,
    Other,
    Odd(u8),
    Any(String),
}

impl RoomName {
    fn name(&self) -> String {
        match self {
            RoomName::General => "general".into(),
            RoomName::Side => "side".into(),
            RoomName::Other => "other".into(),
            RoomName::Odd(i) => match i % 9 {
                0 => String::new(),
                1 => " ".into(),
                2 => "a b".into(),
                3 => "x".repeat(64),
                4 => "x".repeat(65),
                5 => "line\nbreak".into(),
                6 => "général".into(),
                7 => "\u{0}".into(),
                _ => "r\u{200b}".into(),
            },
            RoomName::Any(s) => s.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Text {
    Short(u8),
    Any(String),
    /// Around the 16 KiB text limit.
    Huge(u8),
    Blank,
}

impl Text {
    fn text(&self) -> String {
        match self {
            Text::Short(i) => format!("hostile {i}"),
            Text::Any(s) => s.clone(),
            Text::Huge(i) => "h".repeat(16 * 1024 - 1 + (*i as usize % 3)),
            Text::Blank => " \t".into(),
        }
    }
}

/// A number, biased towards the edges.
#[derive(Debug, Arbitrary)]
enum Num {
    Small(u8),
    /// Around `MAX_SEQ` (2^62), the largest valid sequence number.
    NearMaxSeq(u8),
    /// `u64::MAX - k`.
    NearMax(u8),
    Any(u64),
}

impl Num {
    fn get(&self) -> u64 {
        match self {
            Num::Small(k) => u64::from(*k),
            Num::NearMaxSeq(k) => MAX_SEQ - 2 + u64::from(*k % 4),
            Num::NearMax(k) => u64::MAX - u64::from(*k % 4),
            Num::Any(v) => *v,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum PrevSel {
    Genesis,
    /// Hash of the hostile chain's message `seq - 1` (if the harness built one).
    Chain,
    Fixed([u8; 32]),
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum SigSel {
    None,
    /// A valid signature by the author when the hostile side has its key, else garbage.
    Valid,
    /// A valid signature by the wrong hostile key.
    WrongKey,
    Garbage(u8),
    Raw(Vec<u8>),
}

/// A well-formed room message frame with arbitrary fields.
#[derive(Debug, Arbitrary)]
struct MsgSpec {
    /// 0, 1: the hostile keys; 2..=4: honest node 0..2 (no valid signature possible);
    /// 5: raw author bytes.
    author: u8,
    author_raw: Vec<u8>,
    room: RoomName,
    seq: Num,
    /// Numbers before `seq` declared unused (`prev` names `seq - 1 - skipped`).
    skipped: Num,
    lamport: Num,
    sent_at_ms: u64,
    name: String,
    text: Text,
    prev: PrevSel,
    sig: SigSel,
}

#[derive(Debug, Arbitrary)]
enum IdSel {
    Honest(u8),
    Hostile(bool),
    Fresh(u8),
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum AddrSel {
    /// Listen address of honest node `n`, optionally with a `/p2p` suffix of some id.
    Honest(u8, Option<IdSel>),
    Fixed(u8),
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct PeerSpec {
    id: IdSel,
    addrs: Vec<AddrSel>,
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// Raw bytes on the latest raw connection.
    RawBytes(Vec<u8>),
    RawHello {
        major: u8,
        name: Text,
        rooms: Vec<RoomName>,
        addrs: Vec<AddrSel>,
        nonce: u64,
    },
    RawMessage(MsgSpec),
    /// The next message(s) of a proper hostile chain; `skip` of them are withheld (a gap).
    RawChain {
        author: bool,
        room: u8,
        signed: bool,
        skip: u8,
        void: u8,
        lamport_jump: u16,
    },
    /// Resend a message of a hostile chain (late arrival, duplicate, or tampered copy).
    RawResend {
        k: u8,
        strip_sig: bool,
        tamper: bool,
    },
    /// Send back a room message node 0 sent the raw peer, optionally altered.
    RawReplay {
        k: u8,
        strip_sig: bool,
        tamper: u8,
        room: Option<RoomName>,
    },
    RawMembership {
        room: RoomName,
        joined: bool,
    },
    RawPeers(Vec<PeerSpec>),
    RawPing(u64),
    RawPong(u64),
    RawGoodbye {
        code: u8,
        reason: String,
    },
    RawProfile {
        name: Text,
        author: IdSel,
        lamport: Num,
        sig: SigSel,
    },
    /// An anti-entropy summary: per author, a floor and flattened `[start, end)` ranges.
    RawSummary {
        room: RoomName,
        authors: Vec<(IdSel, Num, Vec<Num>)>,
        chunk: u8,
        more: bool,
    },
    /// A history request for `[start, end)` of an author.
    RawRequest {
        room: RoomName,
        author: IdSel,
        start: Num,
        end: Num,
    },
    RawDirect(Text),
    RawUnknownKind(u8, Vec<u8>),
    /// Another raw connection from the same hostile identity to node 0.
    RawReconnect {
        hello: bool,
    },
    /// Stop or resume reading what node 0 sends.
    RawReading(bool),
    LegacyBytes(Vec<u8>),
    Advance(u16),
    Send {
        node: u8,
        room: u8,
    },
    Join {
        node: u8,
        room: u8,
    },
    Leave {
        node: u8,
        room: u8,
    },
    /// Leave and at once rejoin a side room.
    Rejoin {
        node: u8,
        room: u8,
    },
    SetName {
        node: u8,
        name: u8,
    },
    Direct {
        node: u8,
        to: u8,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    /// Start the raw connection with a valid hello (reaches the deeper frame handlers).
    hello_first: bool,
    hello_rooms: u8,
    legacy_peer: bool,
    ops: Vec<Op>,
}

// ----- the harness's world -----------------------------------------------------------

struct Sent {
    node: usize,
    room: String,
    hash: [u8; 32],
    at: Instant,
}

struct World {
    sim: Sim,
    raws: Vec<u64>,
    legacy: Option<u64>,
    honest: [PeerId; HONEST],
    /// Proper hostile chains per (author, room): generated messages by seq, signed.
    chains: BTreeMap<(usize, String), BTreeMap<u64, wire::RoomMessage>>,
    /// All generated hostile chain messages, for `RawResend`.
    generated: Vec<wire::RoomMessage>,
    sent: Vec<Sent>,
    /// Membership intervals `[join, leave)` per honest node and side room.
    member: [[Vec<(Instant, Option<Instant>)>; SIDE_ROOMS.len()]; HONEST],
    counter: u64,
}

fn frame(kind: Kind) -> Bytes {
    Frame::new(kind).to_wire()
}

fn hash_of(w: &wire::RoomMessage) -> Option<[u8; 32]> {
    Message::from_wire(w.clone()).ok().map(|m| *m.hash())
}

/// The prekey a raw hello carries, chosen by `nonce` (see `Op::RawHello`).
fn hello_prekey(nonce: u64) -> (Vec<u8>, Vec<u8>) {
    match nonce % 4 {
        0 => (Vec::new(), Vec::new()),
        1 => {
            let p = Prekey::derive(&raw_keys()[0]);
            (p.public.to_vec(), p.signature)
        }
        2 => {
            let p = Prekey::derive(&raw_keys()[1]);
            (p.public.to_vec(), p.signature)
        }
        _ => {
            let p = Prekey::derive(&raw_keys()[0]);
            (p.public[..31].to_vec(), p.signature)
        }
    }
}

fn sign_wire(key: &Keypair, w: &mut wire::RoomMessage) {
    match Message::from_wire(w.clone()) {
        Ok(m) => {
            let mut b = b"echo/chat/2 signature\0".to_vec();
            b.extend_from_slice(m.hash());
            w.signature = Bytes::from(key.sign(&b).expect("ed25519 signing"));
        }
        Err(_) => w.signature = Bytes::from(vec![0x5a; 64]),
    }
}

fn tamper_text(t: &mut String, how: u8) {
    match how % 3 {
        0 => t.push('!'),
        1 => *t = "forged".into(),
        _ => t.clear(),
    }
}

impl World {
    fn new(input: &Input) -> World {
        let mut sim = Sim::new(0xec40);
        let cfg = |name: &str| Config::default().name(name);
        for i in 0..HONEST {
            sim.add_node(cfg(&format!("n{i}")));
        }
        sim.connect(0, 1);
        sim.connect(0, 2);
        sim.connect(1, 2);
        let all =
            |s: &Sim| (0..HONEST).all(|i| (0..HONEST).all(|j| i == j || s.is_connected(i, j)));
        assert!(
            sim.run_until(Duration::from_secs(2), all),
            "honest mesh did not form"
        );
        assert!(sim.settle(Duration::from_secs(2)));
        // Everyone is also in "side" from the start ("other" starts empty).
        let t0 = sim.now();
        for i in 0..HONEST {
            sim.with(i, |n, now| n.join(SIDE_ROOMS[0], now))
                .expect("join side");
        }
        sim.run_for(Duration::from_secs(1));
        let honest = [sim.peer_id(0), sim.peer_id(1), sim.peer_id(2)];
        let mut member: [[Vec<(Instant, Option<Instant>)>; SIDE_ROOMS.len()]; HONEST] =
            Default::default();
        for m in &mut member {
            m[0].push((t0, None));
        }
        let mut w = World {
            sim,
            raws: Vec::new(),
            legacy: None,
            honest,
            chains: BTreeMap::new(),
            generated: Vec::new(),
            sent: Vec::new(),
            member,
            counter: 0,
        };
        w.open_raw(input.hello_first, input.hello_rooms);
        if input.legacy_peer {
            w.legacy = Some(w.sim.open_raw(1, &keypair(LEGACY_KEY), Protocol::Legacy));
        }
        w
    }

    fn open_raw(&mut self, hello: bool, rooms: u8) {
        let h = self.sim.open_raw(0, &raw_keys()[0], Protocol::Chat);
        self.raws.push(h);
        if hello {
            let mut r = Vec::new();
            for (i, name) in ["general", "side", "other"].iter().enumerate() {
                if rooms & (1 << i) != 0 || i == 0 {
                    r.push(name.to_string());
                }
            }
            let f = frame(Kind::Hello(wire::Hello {
                version_major: wire::VERSION_MAJOR,
                version_minor: 7,
                name: "mallory".into(),
                rooms: r,
                nonce: u64::from(rooms),
                agent: "fuzz".into(),
                ..Default::default()
            }));
            self.sim.raw_send(h, &f);
        }
    }

    fn raw(&self) -> u64 {
        *self.raws.last().expect("a raw connection")
    }

    fn raw_send(&mut self, bytes: &[u8]) {
        let h = self.raw();
        self.sim.raw_send(h, bytes);
    }

    fn peer_id(&self, sel: &IdSel) -> Vec<u8> {
        match sel {
            IdSel::Honest(i) => self.honest[*i as usize % HONEST].to_bytes(),
            IdSel::Hostile(b) => raw_keys()[*b as usize].public().to_peer_id().to_bytes(),
            IdSel::Fresh(i) => keypair(200 + u64::from(*i % 8))
                .public()
                .to_peer_id()
                .to_bytes(),
            IdSel::Raw(b) => b.clone(),
        }
    }

    fn addr(&self, sel: &AddrSel) -> Vec<u8> {
        match sel {
            AddrSel::Honest(i, id) => {
                let mut a: Multiaddr = self.sim.sim_node(*i as usize % HONEST).addr.clone();
                if let Some(id) = id {
                    if let Ok(p) = PeerId::from_bytes(&self.peer_id(id)) {
                        a = format!("{a}/p2p/{p}").parse().expect("valid multiaddr");
                    }
                }
                a.to_vec()
            }
            AddrSel::Fixed(i) => {
                let s = match i % 7 {
                    0 => "/ip4/127.0.0.1/tcp/0",
                    1 => "/ip4/192.0.2.1/tcp/4001",
                    2 => "/ip6/::/tcp/7",
                    3 => "/ip4/0.0.0.0/tcp/10001",
                    4 => "/dns/example.invalid/tcp/1",
                    5 => "/ip4/127.0.0.1/udp/1",
                    _ => "/memory/5",
                };
                s.parse::<Multiaddr>()
                    .map(|a| a.to_vec())
                    .unwrap_or_default()
            }
            AddrSel::Raw(b) => b.clone(),
        }
    }

    fn honest_send(&mut self, node: usize, room: &str) {
        self.counter += 1;
        let text = format!("n{node} says {}", self.counter);
        // The simulated wall clock: the node's clock bounds what it accepts by it.
        let wall = self.sim.wall();
        let res = self.sim.with(node, |n, now| n.send(room, &text, wall, now));
        match res {
            Ok(m) => self.sent.push(Sent {
                node,
                room: room.into(),
                hash: *m.hash(),
                at: self.sim.now(),
            }),
            Err(e) => assert!(room != "general", "send to general refused: {e}"),
        }
    }

    fn room_msg(&mut self, spec: &MsgSpec) -> wire::RoomMessage {
        let room = spec.room.name();
        let sel = spec.author % 6;
        let author = match sel {
            0 | 1 => Bytes::from(raw_keys()[sel as usize].public().to_peer_id().to_bytes()),
            2..=4 => Bytes::from(self.honest[sel as usize - 2].to_bytes()),
            _ => Bytes::from(spec.author_raw.clone()),
        };
        let seq = spec.seq.get();
        let skipped = spec.skipped.get();
        let prev = match &spec.prev {
            PrevSel::Genesis => Bytes::from_static(&[0; 32]),
            PrevSel::Chain => {
                let chain = (sel < 2)
                    .then(|| self.chains.get(&(sel as usize, room.clone())))
                    .flatten();
                let pred = seq.checked_sub(1).and_then(|p| p.checked_sub(skipped));
                match chain.zip(pred).and_then(|(c, p)| c.get(&p)) {
                    Some(p) => Bytes::copy_from_slice(&hash_of(p).expect("built by us")),
                    None => Bytes::from_static(&[1; 32]),
                }
            }
            PrevSel::Fixed(h) => Bytes::copy_from_slice(h),
            PrevSel::Raw(b) => Bytes::from(b.clone()),
        };
        let mut w = wire::RoomMessage {
            author,
            room,
            seq,
            lamport: spec.lamport.get(),
            sent_at_ms: spec.sent_at_ms,
            name: spec.name.clone(),
            text: spec.text.text(),
            prev,
            signature: Bytes::new(),
            skipped,
        };
        match &spec.sig {
            SigSel::None => {}
            SigSel::Valid if sel < 2 => sign_wire(&raw_keys()[sel as usize], &mut w),
            SigSel::Valid | SigSel::WrongKey => {
                sign_wire(&raw_keys()[(sel as usize + 1) % 2], &mut w)
            }
            SigSel::Garbage(b) => w.signature = Bytes::from(vec![*b; 64]),
            SigSel::Raw(b) => w.signature = Bytes::from(b.clone()),
        }
        w
    }

    /// Extends a proper hostile chain by `1 + skip` messages (the first of them declaring
    /// `void` unused numbers before it, as after a restart); returns the last one.
    fn chain_next(
        &mut self,
        author: usize,
        room: &str,
        skip: u8,
        void: u8,
        lamport_jump: u16,
    ) -> wire::RoomMessage {
        let key = &raw_keys()[author];
        let chain = self.chains.entry((author, room.to_string())).or_default();
        let mut last = None;
        for i in 0..=(skip % 4) {
            let (prev_seq, prev, lamport) = match chain.last_key_value() {
                Some((&s, p)) => (
                    s,
                    Bytes::copy_from_slice(&hash_of(p).expect("built by us")),
                    p.lamport,
                ),
                None => (0, Bytes::from_static(&[0; 32]), 1),
            };
            let skipped = if i == 0 && prev_seq > 0 {
                u64::from(void % 4)
            } else {
                0
            };
            let seq = prev_seq + 1 + skipped;
            let mut w = wire::RoomMessage {
                author: Bytes::from(key.public().to_peer_id().to_bytes()),
                room: room.to_string(),
                seq,
                lamport: lamport + 1 + u64::from(lamport_jump),
                sent_at_ms: 1,
                name: format!("hostile{author}"),
                text: format!("chain {author} {room} #{seq}"),
                prev,
                signature: Bytes::new(),
                skipped,
            };
            sign_wire(key, &mut w);
            chain.insert(seq, w.clone());
            self.generated.push(w.clone());
            last = Some(w);
        }
        last.expect("at least one")
    }

    /// Room messages node 0 sent on the latest raw connection.
    fn received_messages(&self) -> Vec<wire::RoomMessage> {
        let mut d = FrameDecoder::new(1 << 20);
        d.extend(self.sim.raw_received(self.raw()));
        let mut out = Vec::new();
        while let Ok(Some(p)) = d.decode() {
            if let Ok(Frame {
                kind: Some(Kind::Message(m)),
                ..
            }) = Frame::decode_payload(&p)
            {
                out.push(m);
            }
        }
        out
    }

    fn side(room: u8) -> (usize, &'static str) {
        let i = room as usize % SIDE_ROOMS.len();
        (i, SIDE_ROOMS[i])
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::RawBytes(b) => {
                let b = &b[..b.len().min(MAX_RAW_BYTES)];
                self.raw_send(b);
            }
            Op::RawHello {
                major,
                name,
                rooms,
                addrs,
                nonce,
            } => {
                let f = frame(Kind::Hello(wire::Hello {
                    version_major: if *major < 200 { 2 } else { u32::from(*major) },
                    version_minor: 0,
                    name: name.text(),
                    rooms: rooms.iter().map(RoomName::name).collect(),
                    listen_addrs: addrs.iter().map(|a| self.addr(a)).collect(),
                    capabilities: vec!["chain-sig".into(), "??".into()],
                    nonce: *nonce,
                    agent: String::new(),
                    // From the nonce: 0 (not sent) or a new run each time, so reconnects
                    // also take the restarted-peer path (PROTOCOL.md 12.1).
                    session: *nonce >> 32,
                    // From the nonce too: no prekey, the raw peer's own (valid), another
                    // identity's (a violation), or a cut one (a violation).
                    prekey: hello_prekey(*nonce).0,
                    prekey_sig: hello_prekey(*nonce).1,
                }));
                self.raw_send(&f);
            }
            Op::RawMessage(spec) => {
                let w = self.room_msg(spec);
                self.raw_send(&frame(Kind::Message(w)));
            }
            Op::RawChain {
                author,
                room,
                signed,
                skip,
                void,
                lamport_jump,
            } => {
                let room = ["general", "side", "other"][*room as usize % 3];
                let mut w = self.chain_next(*author as usize, room, *skip, *void, *lamport_jump);
                if !signed {
                    w.signature = Bytes::new();
                }
                self.raw_send(&frame(Kind::Message(w)));
            }
            Op::RawResend {
                k,
                strip_sig,
                tamper,
            } => {
                if self.generated.is_empty() {
                    return;
                }
                let mut w = self.generated[*k as usize % self.generated.len()].clone();
                if *strip_sig {
                    w.signature = Bytes::new();
                }
                if *tamper {
                    w.text.push_str(" (altered)");
                }
                self.raw_send(&frame(Kind::Message(w)));
            }
            Op::RawReplay {
                k,
                strip_sig,
                tamper,
                room,
            } => {
                let got = self.received_messages();
                if got.is_empty() {
                    return;
                }
                let mut w = got[*k as usize % got.len()].clone();
                if *strip_sig {
                    w.signature = Bytes::new();
                }
                if *tamper % 4 != 0 {
                    tamper_text(&mut w.text, *tamper);
                }
                if let Some(r) = room {
                    w.room = r.name();
                }
                self.raw_send(&frame(Kind::Message(w)));
            }
            Op::RawMembership { room, joined } => {
                let f = frame(Kind::Membership(wire::Membership {
                    room: room.name(),
                    joined: *joined,
                }));
                self.raw_send(&f);
            }
            Op::RawPeers(list) => {
                let peers = list
                    .iter()
                    .take(40)
                    .map(|p| wire::PeerRecord {
                        peer_id: self.peer_id(&p.id),
                        addrs: p.addrs.iter().take(12).map(|a| self.addr(a)).collect(),
                    })
                    .collect();
                self.raw_send(&frame(Kind::Peers(wire::PeerList { peers })));
            }
            Op::RawPing(n) => self.raw_send(&frame(Kind::Ping(wire::Ping { nonce: *n }))),
            Op::RawPong(n) => self.raw_send(&frame(Kind::Pong(wire::Ping { nonce: *n }))),
            Op::RawGoodbye { code, reason } => {
                let f = frame(Kind::Goodbye(wire::Goodbye {
                    code: u32::from(*code % 8),
                    reason: reason.clone(),
                }));
                self.raw_send(&f);
            }
            Op::RawProfile {
                name,
                author,
                lamport,
                sig,
            } => {
                let author = self.peer_id(author);
                let (name, lamport) = (name.text(), lamport.get());
                let sign = |k: &Keypair| {
                    let mut b = b"echo/chat/2 profile\0".to_vec();
                    b.extend_from_slice(&(author.len() as u32).to_be_bytes());
                    b.extend_from_slice(&author);
                    b.extend_from_slice(&lamport.to_be_bytes());
                    b.extend_from_slice(&(name.len() as u32).to_be_bytes());
                    b.extend_from_slice(name.as_bytes());
                    k.sign(&b).expect("ed25519 signing")
                };
                let own = raw_keys()
                    .iter()
                    .find(|k| k.public().to_peer_id().to_bytes() == author);
                let signature = match (sig, own) {
                    (SigSel::None, _) => Vec::new(),
                    (SigSel::Valid, Some(k)) => sign(k),
                    (SigSel::Valid | SigSel::WrongKey, _) => sign(&raw_keys()[1]),
                    (SigSel::Garbage(b), _) => vec![*b; 64],
                    (SigSel::Raw(b), _) => b.clone(),
                };
                let f = frame(Kind::Profile(wire::Profile {
                    name,
                    author,
                    lamport,
                    signature,
                    ..Default::default()
                }));
                self.raw_send(&f);
            }
            Op::RawSummary {
                room,
                authors,
                chunk,
                more,
            } => {
                let authors = authors
                    .iter()
                    .take(300)
                    .map(|(id, floor, ranges)| wire::AuthorRanges {
                        author: self.peer_id(id),
                        floor: floor.get(),
                        ranges: ranges.iter().take(300).map(Num::get).collect(),
                    })
                    .collect();
                let f = frame(Kind::Summary(wire::Summary {
                    room: room.name(),
                    authors,
                    chunk: u32::from(*chunk % 4),
                    more: *more,
                }));
                self.raw_send(&f);
            }
            Op::RawRequest {
                room,
                author,
                start,
                end,
            } => {
                let f = frame(Kind::Request(wire::Request {
                    room: room.name(),
                    author: self.peer_id(author),
                    start: start.get(),
                    end: end.get(),
                }));
                self.raw_send(&f);
            }
            Op::RawDirect(t) => {
                let f = frame(Kind::Direct(wire::Direct {
                    text: t.text(),
                    sent_at_ms: 5,
                }));
                self.raw_send(&f);
            }
            Op::RawUnknownKind(tag, body) => {
                // A frame with an unknown (future) field number: length-delimited field.
                let tag = 10 + u64::from(*tag % 20);
                let mut payload = Vec::new();
                echo_proto::codec::put_varint(&mut payload, (tag << 3) | 2);
                let body = &body[..body.len().min(256)];
                echo_proto::codec::put_varint(&mut payload, body.len() as u64);
                payload.extend_from_slice(body);
                let mut f = bytes::BytesMut::new();
                echo_proto::codec::encode_frame(&mut f, &payload);
                self.raw_send(&f);
            }
            Op::RawReconnect { hello } => {
                if self.raws.len() < MAX_RAW_CONNS {
                    self.open_raw(*hello, 0);
                }
            }
            Op::RawReading(r) => {
                let h = self.raw();
                self.sim.raw_set_reading(h, *r);
            }
            Op::LegacyBytes(b) => {
                if let Some(h) = self.legacy {
                    let b = &b[..b.len().min(MAX_RAW_BYTES)];
                    self.sim.raw_send(h, b);
                }
            }
            Op::Advance(ms) => {
                let d = if ms % 16 == 15 {
                    Duration::from_secs(u64::from(*ms % 40))
                } else {
                    Duration::from_millis(u64::from(*ms % 3000))
                };
                self.sim.run_for(d);
            }
            Op::Send { node, room } => {
                let node = *node as usize % HONEST;
                let room = match room % 4 {
                    0 | 1 => "general",
                    r => SIDE_ROOMS[r as usize - 2],
                };
                self.honest_send(node, room);
            }
            Op::Join { node, room } => {
                let node = *node as usize % HONEST;
                let (i, room) = Self::side(*room);
                if self.sim.with(node, |n, now| n.join(room, now)).is_ok() {
                    let now = self.sim.now();
                    self.member[node][i].push((now, None));
                }
            }
            Op::Leave { node, room } => {
                let node = *node as usize % HONEST;
                let (i, room) = Self::side(*room);
                if self.sim.with(node, |n, now| n.leave(room, now)).is_ok() {
                    let now = self.sim.now();
                    let iv = self.member[node][i].last_mut().expect("was a member");
                    iv.1 = Some(now);
                }
            }
            Op::Rejoin { node, room } => {
                self.apply(&Op::Leave {
                    node: *node,
                    room: *room,
                });
                self.apply(&Op::Join {
                    node: *node,
                    room: *room,
                });
            }
            Op::SetName { node, name } => {
                let node = *node as usize % HONEST;
                let name = format!("n{node}-{name}");
                self.sim
                    .with(node, |n, now| n.set_name(&name, now))
                    .expect("valid name");
            }
            Op::Direct { node, to } => {
                let node = *node as usize % HONEST;
                let to = self.honest[*to as usize % HONEST];
                let _ = self.sim.with(node, |n, now| {
                    n.send_direct(&to, "psst", SystemTime::UNIX_EPOCH, now)
                });
            }
        }
    }

    /// Honest nodes that should hold a side-room message sent at `at` by `from`.
    fn side_receivers(&self, from: usize, ri: usize, at: Instant) -> Vec<usize> {
        (0..HONEST)
            .filter(|&b| b != from)
            .filter(|&b| {
                self.member[b][ri]
                    .last()
                    .is_some_and(|&(join, leave)| leave.is_none() && join + MARGIN <= at)
            })
            .collect()
    }

    /// Sizes of every honest room log.
    fn log_sizes(&self) -> Vec<(usize, String, usize)> {
        let mut v = Vec::new();
        for i in 0..HONEST {
            let n = self.sim.node(i);
            for r in n.rooms() {
                v.push((i, r.to_string(), n.room_log(r).map_or(0, |l| l.count())));
            }
        }
        v
    }

    /// Runs on until no honest log has changed for longer than a gap's whole repair
    /// cycle ((`max_repair_attempts` + 1) × `gap_timeout` = 8 s): a chain's gaps are
    /// handled one after another, so a hostile chain with many gaps needs far more than
    /// the fixed 20 s to drain.
    fn quiesce(&mut self) {
        let step = Duration::from_millis(2500);
        let mut last = self.log_sizes();
        let mut stable = 0;
        for _ in 0..400 {
            self.sim.run_for(step);
            let now = self.log_sizes();
            if now == last {
                stable += 1;
                if stable == 5 {
                    return;
                }
            } else {
                stable = 0;
                last = now;
            }
        }
        panic!("honest logs still changing after 1000 s more");
    }

    /// One line per entry of node `i`'s general log, for failure messages.
    fn describe_log(&self, i: usize) -> String {
        let node = self.sim.node(i);
        let who = |p: &PeerId| match self.honest.iter().position(|h| h == p) {
            Some(k) => format!("node{k}"),
            None => match raw_keys()
                .iter()
                .position(|k| k.public().to_peer_id() == *p)
            {
                Some(k) => format!("hostile{k}"),
                None => p.to_base58(),
            },
        };
        node.room_log("general")
            .expect("in general")
            .map(|m| {
                format!(
                    "  {} seq {} lamport {} {:?}",
                    who(&m.author()),
                    m.seq(),
                    m.lamport(),
                    m.text()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn check(&self) {
        let sim = &self.sim;
        // Still a full mesh, and no honest node punished another.
        for i in 0..HONEST {
            for j in 0..HONEST {
                if i != j {
                    assert!(sim.is_connected(i, j), "honest node {i} lost node {j}");
                }
            }
            for e in &sim.sim_node(i).events {
                if let Event::Misbehaved { peer, reason } = e {
                    assert!(
                        !self.honest.contains(peer),
                        "node {i} closed an honest peer as misbehaving: {reason}"
                    );
                }
            }
        }

        // The general logs: identical, each honest text exactly once.
        let logs: Vec<Vec<([u8; 32], PeerId, u64)>> = (0..HONEST)
            .map(|i| {
                sim.node(i)
                    .room_log("general")
                    .expect("in general")
                    .map(|m| (*m.hash(), m.author(), m.seq()))
                    .collect()
            })
            .collect();
        for s in self.sent.iter().filter(|s| s.room == "general") {
            for (i, log) in logs.iter().enumerate() {
                let n = log.iter().filter(|e| e.0 == s.hash).count();
                assert_eq!(
                    n, 1,
                    "node {i} has node {}'s general message {n} times",
                    s.node
                );
            }
        }
        for i in 1..HONEST {
            assert!(
                logs[i] == logs[0],
                "general logs of node 0 and node {i} differ:\n{}\nvs\n{}",
                self.describe_log(0),
                self.describe_log(i)
            );
        }

        // No impersonation: honest-authored entries are messages that author sent there.
        let sent: BTreeSet<(usize, &str, [u8; 32])> = self
            .sent
            .iter()
            .map(|s| (s.node, s.room.as_str(), s.hash))
            .collect();
        for i in 0..HONEST {
            let node = sim.node(i);
            for room in node.rooms() {
                for m in node.room_log(room).expect("joined") {
                    if let Some(a) = self.honest.iter().position(|h| *h == m.author()) {
                        assert!(
                            sent.contains(&(a, room, *m.hash())),
                            "node {i}'s log of {room} has a message of node {a} it never sent"
                        );
                    }
                }
            }
        }

        // Side rooms: members from well before a send until the end hold the message.
        for s in &self.sent {
            let Some(ri) = SIDE_ROOMS.iter().position(|r| *r == s.room) else {
                continue;
            };
            for b in self.side_receivers(s.node, ri, s.at) {
                let has = sim
                    .node(b)
                    .room_log(&s.room)
                    .expect("still a member")
                    .any(|m| *m.hash() == s.hash);
                assert!(
                    has,
                    "node {b} (in {} throughout) never got node {}'s message",
                    s.room, s.node
                );
            }
        }

        // Delivery events: once per membership, in chain order.
        for i in 0..HONEST {
            check_events(i, &sim.sim_node(i).events, &self.honest);
        }
    }
}

#[derive(Default)]
struct AuthorTrack {
    seen: BTreeSet<u64>,
    first: u64,
    high: u64,
    gaps: Vec<(u64, u64)>,
}

/// Whether every seq in `[from, to)` lies in one of `ranges`.
fn covered(ranges: &[(u64, u64)], from: u64, to: u64) -> bool {
    let mut g = ranges.to_vec();
    g.sort();
    let mut at = from;
    for (s, e) in g {
        if at >= to {
            break;
        }
        if s <= at && at < e {
            at = e;
        }
    }
    at >= to
}

/// Checks one node's event stream: each (room, author, seq) delivered at most once per
/// membership of the room; honest authors' messages in chain order, where a delivery
/// may pass over numbers its author declared unused (`prev_seq`), a new chain segment
/// (`prev_seq == 0`), or a range reported by `Event::Gap`, and may go back only for
/// backfill (below the first delivery) or into a reported gap.
fn check_events(node: usize, events: &[Event], honest: &[PeerId]) {
    let mut rooms: BTreeMap<String, BTreeMap<PeerId, AuthorTrack>> = BTreeMap::new();
    for e in events {
        match e {
            Event::Joined { room } | Event::Left { room } => {
                rooms.remove(room);
            }
            Event::Gap {
                room,
                author,
                missing,
            } => {
                assert!(missing.0 < missing.1, "node {node}: empty gap {missing:?}");
                let t = rooms
                    .entry(room.clone())
                    .or_default()
                    .entry(*author)
                    .or_default();
                for s in &t.seen {
                    assert!(
                        !(missing.0..missing.1).contains(s),
                        "node {node}: gap {missing:?} covers delivered seq {s}"
                    );
                }
                t.gaps.push(*missing);
            }
            Event::Message {
                msg,
                position: Some(_),
            } => {
                let t = rooms
                    .entry(msg.room().to_string())
                    .or_default()
                    .entry(msg.author())
                    .or_default();
                let seq = msg.seq();
                assert!(
                    t.seen.insert(seq),
                    "node {node} delivered {}'s seq {seq} in {} twice",
                    msg.author(),
                    msg.room()
                );
                if t.first == 0 {
                    (t.first, t.high) = (seq, seq);
                    continue;
                }
                if !honest.contains(&msg.author()) {
                    // A hostile author can declare numbers unused and then fill them.
                    t.high = t.high.max(seq);
                    continue;
                }
                let p = msg.prev_seq();
                if seq > t.high {
                    assert!(
                        p <= t.high || covered(&t.gaps, t.high + 1, p + 1),
                        "node {node}: {}'s messages in {} went from {} to {seq} (prev_seq {p}) \
                         without a gap event ({:?})",
                        msg.author(),
                        msg.room(),
                        t.high,
                        t.gaps
                    );
                    t.high = seq;
                } else {
                    assert!(
                        seq < t.first || t.gaps.iter().any(|&(s, e)| s <= seq && seq < e),
                        "node {node}: {}'s seq {seq} in {} delivered out of order (after {})",
                        msg.author(),
                        msg.room(),
                        t.high
                    );
                }
            }
            _ => {}
        }
    }
}

fuzz_target!(|input: Input| {
    let mut w = World::new(&input);
    for op in input.ops.iter().take(MAX_OPS) {
        w.apply(op);
    }
    w.sim.run_for(Duration::from_secs(20));
    w.quiesce();
    w.check();
});
