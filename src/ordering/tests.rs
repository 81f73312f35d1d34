//! Tests of the per-author chain: verification, gaps, voids, bounds (unit and quickcheck).
use super::*;
use crate::message::Message;
use libp2p_identity::Keypair;
use quickcheck::{quickcheck, Arbitrary, Gen};

/// A chain of `n` messages by a fresh author; messages in `signed` carry signatures.
fn chain_msgs(key: &Keypair, n: u64, signed: impl Fn(u64) -> bool) -> Vec<SharedMessage> {
    let mut prev = GENESIS;
    (1..=n)
        .map(|seq| {
            let m = msg_after(key, seq, prev, seq - 1, signed(seq));
            prev = m.hash;
            m
        })
        .collect()
}

/// Message `seq` of `key`'s chain naming `prev` (seq `prev_seq`) as its predecessor.
fn msg_after(key: &Keypair, seq: u64, prev: Hash, prev_seq: u64, sign: bool) -> SharedMessage {
    let mut m = Message::new_local(
        key.public().to_peer_id(),
        "r".into(),
        seq,
        seq,
        0,
        "a".into(),
        format!("t{seq}"),
        prev,
        prev_seq,
    );
    if sign {
        m.sign(key);
    }
    SharedMessage::new(m)
}

/// Offers `msgs[i]` for each `i` (each verified at once) with `take_ready` after each;
/// what was handed out is appended to `out`.
fn offer_verified(
    c: &mut Chain<u8>,
    key: &Keypair,
    msgs: &[SharedMessage],
    which: &[usize],
    max_buffer: usize,
    out: &mut Vec<SharedMessage>,
) {
    let t = Instant::now();
    for &i in which {
        let o = c.offer(msgs[i].clone(), 0, &key.public(), max_buffer, t);
        assert!(matches!(o, Offer::Verified(..)), "seq {}: {o:?}", msgs[i].seq);
        c.take_ready(out, t);
    }
}

fn seqs(v: &[SharedMessage]) -> Vec<u64> {
    v.iter().map(|m| m.seq).collect()
}

#[test]
fn burst_with_one_signature_verifies_all() {
    let key = crate::message::test_key();
    let msgs = chain_msgs(&key, 5, |s| s == 5);
    let t = Instant::now();
    let mut c: Chain<u8> = Chain::new();
    for m in &msgs[..4] {
        assert_eq!(c.offer(m.clone(), 0, &key.public(), 64, t), Offer::Pending);
    }
    match c.offer(msgs[4].clone(), 0, &key.public(), 64, t) {
        Offer::Verified(v, f) => {
            assert_eq!(seqs(&v), vec![1, 2, 3, 4, 5]);
            assert!(f.is_empty());
        }
        o => panic!("{o:?}"),
    }
    let mut out = Vec::new();
    c.take_ready(&mut out, t);
    assert_eq!(seqs(&out), vec![1, 2, 3, 4, 5]);
}

#[test]
fn forged_candidate_loses_to_verified_hash() {
    let key = crate::message::test_key();
    let msgs = chain_msgs(&key, 2, |s| s == 2);
    let mut fake = Message::clone(&msgs[0]);
    fake.text = "forged".into();
    fake.hash = fake.compute_hash();
    let fake = SharedMessage::new(fake);
    let t = Instant::now();
    let mut c: Chain<u8> = Chain::new();
    assert_eq!(c.offer(fake, 9, &key.public(), 64, t), Offer::Pending);
    assert_eq!(
        c.offer(msgs[0].clone(), 1, &key.public(), 64, t),
        Offer::Pending
    );
    match c.offer(msgs[1].clone(), 1, &key.public(), 64, t) {
        Offer::Verified(v, f) => {
            assert_eq!(seqs(&v), vec![1, 2]);
            assert_eq!(f, vec![9], "the forger is named");
        }
        o => panic!("{o:?}"),
    }
    // A forged copy arriving after verification is rejected by hash.
    let mut fake2 = Message::clone(&msgs[0]);
    fake2.text = "x".into();
    fake2.hash = fake2.compute_hash();
    let fake2 = SharedMessage::new(fake2);
    assert_eq!(c.offer(fake2, 7, &key.public(), 64, t), Offer::Duplicate);
}

#[test]
fn bad_signature_is_forged() {
    let key = crate::message::test_key();
    let mut m = Message::clone(&chain_msgs(&key, 1, |_| true)[0]);
    m.text = "changed".into();
    m.hash = m.compute_hash();
    let m = SharedMessage::new(m);
    let mut c: Chain<u8> = Chain::new();
    assert_eq!(
        c.offer(m, 3, &key.public(), 64, Instant::now()),
        Offer::Forged(vec![3])
    );
}

#[test]
fn gap_is_held_then_skipped_then_late_arrival_delivered_once() {
    let key = crate::message::test_key();
    let msgs = chain_msgs(&key, 4, |_| true);
    let t = Instant::now();
    let g = Duration::from_secs(1);
    let mut c: Chain<u8> = Chain::new();
    c.offer(msgs[0].clone(), 0, &key.public(), 64, t);
    c.offer(msgs[2].clone(), 0, &key.public(), 64, t);
    let mut out = Vec::new();
    c.take_ready(&mut out, t);
    assert_eq!(seqs(&out), vec![1]);
    assert_eq!(c.deadline(g, g), Some(t + g));
    assert_eq!(c.on_timeout(t, g, g, 1), None, "early call is harmless");
    assert_eq!(
        c.on_timeout(t + g, g, g, 1),
        Some(GapAction::Request {
            start: 2,
            end: 3,
            attempt: 1
        })
    );
    assert_eq!(
        c.deadline(g, g),
        Some(t + g + g),
        "repair restarts the clock"
    );
    assert_eq!(
        c.on_timeout(t + g + g, g, g, 1),
        Some(GapAction::Skipped { start: 2, end: 3 })
    );
    out.clear();
    c.take_ready(&mut out, t);
    assert_eq!(seqs(&out), vec![3]);
    c.offer(msgs[1].clone(), 0, &key.public(), 64, t);
    assert_eq!(
        c.offer(msgs[1].clone(), 0, &key.public(), 64, t),
        Offer::Duplicate
    );
    out.clear();
    c.take_ready(&mut out, t);
    assert_eq!(seqs(&out), vec![2]);
    assert!(c.is_known(2));
}

#[test]
fn buffer_bound_is_enforced() {
    let key = crate::message::test_key();
    let msgs = chain_msgs(&key, 10, |_| false);
    let mut c: Chain<u8> = Chain::new();
    let t = Instant::now();
    for m in &msgs[..3] {
        assert_eq!(c.offer(m.clone(), 0, &key.public(), 3, t), Offer::Pending);
    }
    assert_eq!(
        c.offer(msgs[3].clone(), 0, &key.public(), 3, t),
        Offer::Full
    );
    assert_eq!(c.buffered(), 3);
}

#[test]
fn full_of_held_messages_still_takes_the_one_that_opens_the_gap() {
    // Seq 1 delivered, 3..=5 verified and held behind the gap at 2: the buffer (3) is
    // full. Another held message is refused, but seq 2 is next in order and must not
    // be: it delivers the whole run at once.
    let key = crate::message::test_key();
    let msgs = chain_msgs(&key, 6, |_| true);
    let t = Instant::now();
    let mut c: Chain<u8> = Chain::new();
    let mut out = Vec::new();
    offer_verified(&mut c, &key, &msgs, &[0, 2, 3, 4], 3, &mut out);
    assert_eq!((seqs(&out), c.buffered()), (vec![1], 3));
    assert_eq!(
        c.offer(msgs[5].clone(), 0, &key.public(), 3, t),
        Offer::Full,
        "a held message past the gap is still refused"
    );
    assert!(matches!(
        c.offer(msgs[1].clone(), 0, &key.public(), 3, t),
        Offer::Verified(..)
    ));
    out.clear();
    c.take_ready(&mut out, t);
    assert_eq!((seqs(&out), c.buffered()), (vec![2, 3, 4, 5], 0));
    assert!(!c.has_gap());
}

#[test]
fn full_of_held_messages_takes_one_after_a_declared_void() {
    // The author restarted: seq 5 names seq 2 as its predecessor (3 and 4 unused).
    // With 6 and 7 held and the buffer full, seq 5 is deliverable at once (delivery
    // hops the void it declares) and is accepted.
    let key = crate::message::test_key();
    let mut msgs = chain_msgs(&key, 2, |_| true);
    for seq in 5..=7 {
        let (prev, prev_seq) = msgs.last().map(|m| (m.hash, m.seq)).unwrap();
        msgs.push(msg_after(&key, seq, prev, prev_seq, true));
    }
    let t = Instant::now();
    let mut c: Chain<u8> = Chain::new();
    let mut out = Vec::new();
    offer_verified(&mut c, &key, &msgs, &[0, 1, 3, 4], 2, &mut out);
    assert_eq!((seqs(&out), c.buffered()), (vec![1, 2], 2));
    assert!(matches!(
        c.offer(msgs[2].clone(), 0, &key.public(), 2, t),
        Offer::Verified(..)
    ));
    out.clear();
    c.take_ready(&mut out, t);
    assert_eq!((seqs(&out), c.buffered()), (vec![5, 6, 7], 0));
}

#[test]
fn a_void_that_starts_inside_a_skipped_range_covers_its_tail() {
    // The author's own connection brings seq 5 (prev 3: void [4, 5)) with a bad
    // signature: the run fails, the void stays. Later the author's genuine seq 6 names
    // 3 too (void [4, 6)): its tail [5, 6) must become a void although 4 already is,
    // or delivery stops at 5, where nothing will ever be. Seen through the buffer: with
    // 7..=9 held (full), 6 is deliverable at once, taken, and must empty the buffer.
    let key = crate::message::test_key();
    let wrong = crate::message::test_key();
    let mut msgs = chain_msgs(&key, 3, |_| true);
    let h3 = msgs[2].hash;
    let q = badly_signed(&msg_after(&key, 5, h3, 3, true), &wrong);
    for seq in [6, 7, 8, 9] {
        let (prev, prev_seq) = match seq {
            6 => (h3, 3),
            _ => (msgs.last().unwrap().hash, seq - 1),
        };
        msgs.push(msg_after(&key, seq, prev, prev_seq, true));
    }
    let t = Instant::now();
    let mut c: Chain<u8> = Chain::new();
    let mut out = Vec::new();
    offer_verified(&mut c, &key, &msgs, &[0], 3, &mut out);
    assert!(matches!(
        c.offer_from_author(q, 0, &key.public(), 3, t),
        Offer::Provisional(..)
    ));
    assert!(matches!(
        c.confirm(5, &key.public()),
        Some(Confirm::Failed(_))
    ));
    offer_verified(&mut c, &key, &msgs, &[1, 2, 4, 5, 6], 3, &mut out);
    assert_eq!((seqs(&out), c.buffered()), (vec![1, 2, 3], 3));
    offer_verified(&mut c, &key, &msgs, &[3], 3, &mut out);
    assert_eq!((seqs(&out), c.buffered()), (vec![1, 2, 3, 6, 7, 8, 9], 0));
}

#[test]
fn a_start_hint_after_held_messages_does_not_strand_them() {
    // Seqs 3 and 9 arrive on an unanchored chain (no hint yet: not deliverable), then a
    // neighbour reports holding from 5. The chain can start at 3 now; a gap timeout
    // must not skip from the hint (which would leave 3 held below `next` for ever).
    let key = crate::message::test_key();
    let msgs = chain_msgs(&key, 9, |_| true);
    let t = Instant::now();
    let g = Duration::from_secs(1);
    let mut c: Chain<u8> = Chain::new();
    let mut out = Vec::new();
    for i in [2, 8] {
        c.offer(msgs[i].clone(), 0, &key.public(), 64, t);
        c.take_ready(&mut out, t);
    }
    assert!(out.is_empty());
    c.hint_start(5);
    // No `take_ready` here (a caller that waits for the timer).
    for k in 1..=4 {
        let _ = c.on_timeout(t + g * k, g, g, 1);
    }
    c.take_ready(&mut out, t + g * 4);
    assert_eq!(seqs(&out)[0], 3, "delivery starts at the held message");
    assert!(c.next_seq().is_some_and(|n| n > 3));
    let mut later = t + g * 4;
    for _ in 0..6 {
        later += g;
        let _ = c.on_timeout(later, g, g, 1);
        c.take_ready(&mut out, later);
    }
    assert_eq!(seqs(&out), vec![3, 9], "after the skip 4..9, 9 too");
    assert_eq!(c.buffered(), 0);
}

#[derive(Debug, Clone)]
struct Schedule {
    /// (author index, seq index) deliveries, with duplicates, in arrival order.
    arrivals: Vec<(usize, usize)>,
    sign_every: u64,
}

impl Arbitrary for Schedule {
    fn arbitrary(g: &mut Gen) -> Self {
        let mut arrivals = Vec::new();
        for a in 0..3 {
            for s in 0..8 {
                for _ in 0..(1 + usize::arbitrary(g) % 2) {
                    arrivals.push((a, s));
                }
            }
        }
        // Shuffle with the generator.
        for i in (1..arrivals.len()).rev() {
            let j = usize::arbitrary(g) % (i + 1);
            arrivals.swap(i, j);
        }
        Schedule {
            arrivals,
            sign_every: 1 + u64::arbitrary(g) % 4,
        }
    }
}

quickcheck! {
    /// Any interleaving, duplication and delay of several authors' messages yields
    /// each message exactly once, in per-author order.
    fn exactly_once_in_author_order(s: Schedule) -> bool {
        let keys: Vec<Keypair> = (0..3).map(|_| crate::message::test_key()).collect();
        let chains: Vec<Vec<SharedMessage>> = keys
            .iter()
            .map(|k| chain_msgs(k, 8, |seq| seq % s.sign_every == 0 || seq == 8))
            .collect();
        let mut state: Vec<Chain<u8>> = (0..3).map(|_| Chain::new()).collect();
        let mut got: Vec<Vec<u64>> = vec![Vec::new(); 3];
        let t = Instant::now();
        for &(a, i) in &s.arrivals {
            state[a].offer(chains[a][i].clone(), 0, &keys[a].public(), 64, t);
            let mut out = Vec::new();
            state[a].take_ready(&mut out, t);
            got[a].extend(seqs(&out));
        }
        got.iter().all(|g| *g == (1..=8).collect::<Vec<_>>())
    }
}

mod segment_tests {
    use super::*;
    use crate::message::Message;

    #[test]
    fn own_old_segment_is_accepted_after_a_new_segment() {
        let key = crate::message::test_key();
        let me = key.public().to_peer_id();
        let mut prev = GENESIS;
        let old: Vec<SharedMessage> = (1..=4)
            .map(|seq| {
                let mut m = Message::new_local(
                    me,
                    "r".into(),
                    seq,
                    seq,
                    0,
                    "a".into(),
                    format!("o{seq}"),
                    prev,
                    seq - 1,
                );
                m.sign(&key);
                prev = m.hash;
                SharedMessage::new(m)
            })
            .collect();
        let mut new = Message::new_local(
            me,
            "r".into(),
            1001,
            10,
            0,
            "a".into(),
            "n".into(),
            GENESIS,
            0,
        );
        new.sign(&key);
        let t = Instant::now();
        let new = SharedMessage::new(new);
        // In order after the new segment, and with some arriving before it.
        for early in 0..=4 {
            let mut c: Chain<u8> = Chain::new();
            c.hint_start(1);
            let mut out = Vec::new();
            for m in old.iter().rev().take(early) {
                c.offer(m.clone(), 0, &key.public(), 64, t);
                c.take_ready(&mut out, t);
            }
            c.push_local(new.clone());
            c.take_ready(&mut out, t);
            for m in old.iter().rev().skip(early) {
                let o = c.offer(m.clone(), 0, &key.public(), 64, t);
                assert!(
                    matches!(o, Offer::Verified(..)),
                    "early {early} seq {}: {o:?}",
                    m.seq
                );
                c.take_ready(&mut out, t);
            }
            let mut seqs: Vec<u64> = out.iter().map(|m| m.seq).collect();
            seqs.sort();
            assert_eq!(seqs, vec![1, 2, 3, 4], "early {early}");
            assert_eq!(c.buffered(), 0);
        }
    }
}

/// A message re-signed by the wrong key (same hash, invalid signature).
fn badly_signed(m: &SharedMessage, wrong: &Keypair) -> SharedMessage {
    let mut b = Message::clone(m);
    b.sign(wrong);
    SharedMessage::new(b)
}

#[test]
fn provisional_run_is_not_served_until_confirmed() {
    let key = crate::message::test_key();
    let msgs = chain_msgs(&key, 3, |s| s == 3);
    let t = Instant::now();
    let mut c: Chain<u8> = Chain::new();
    for m in &msgs[..2] {
        assert_eq!(c.offer(m.clone(), 0, &key.public(), 64, t), Offer::Pending);
    }
    match c.offer_from_author(msgs[2].clone(), 0, &key.public(), 64, t) {
        Offer::Provisional(v, f, true) => {
            assert_eq!(seqs(&v), vec![1, 2, 3]);
            assert!(f.is_empty());
        }
        o => panic!("{o:?}"),
    }
    let mut out = Vec::new();
    c.take_ready(&mut out, t);
    assert_eq!(seqs(&out), vec![1, 2, 3], "delivered at once");
    assert_eq!(c.range(1, 4).count(), 0, "not served before the check");
    assert!(c.through_next_signature(0).is_empty());
    assert_eq!(c.confirm(3, &key.public()), Some(Confirm::Verified(1)));
    assert_eq!(seqs(&c.range(1, 4).cloned().collect::<Vec<_>>()), vec![1, 2, 3]);
    assert_eq!(c.confirm(3, &key.public()), None, "settled once");
}

#[test]
fn failed_provisional_run_leaves_the_chain_and_held_messages_can_come_again() {
    let key = crate::message::test_key();
    let wrong = crate::message::test_key();
    let msgs = chain_msgs(&key, 4, |s| s == 2 || s == 4);
    let t = Instant::now();
    let mut c: Chain<u8> = Chain::new();
    // 1..=2 delivered provisionally; 4 held behind the gap at 3, badly signed.
    let bad2 = badly_signed(&msgs[1], &wrong);
    assert_eq!(c.offer(msgs[0].clone(), 0, &key.public(), 64, t), Offer::Pending);
    assert!(matches!(
        c.offer_from_author(bad2, 0, &key.public(), 64, t),
        Offer::Provisional(_, _, true)
    ));
    let bad4 = badly_signed(&msgs[3], &wrong);
    assert!(matches!(
        c.offer_from_author(bad4, 0, &key.public(), 64, t),
        Offer::Provisional(_, _, true)
    ));
    let mut out = Vec::new();
    c.take_ready(&mut out, t);
    assert_eq!(seqs(&out), vec![1, 2]);
    assert_eq!(c.buffered(), 1);
    let failed = |c: Option<Confirm>| match c {
        Some(Confirm::Failed(run)) => seqs(&run),
        o => panic!("{o:?}"),
    };
    assert_eq!(failed(c.confirm(2, &key.public())), vec![1, 2]);
    assert_eq!(failed(c.confirm(4, &key.public())), vec![4]);
    assert_eq!(c.buffered(), 0, "the held message left the buffer count");
    assert_eq!(c.range(1, 5).count(), 0, "nothing failed is served");
    // Delivered ones stay known; the held one is accepted again, verified.
    assert_eq!(c.offer(msgs[1].clone(), 1, &key.public(), 64, t), Offer::Duplicate);
    assert_eq!(c.offer(msgs[2].clone(), 1, &key.public(), 64, t), Offer::Pending);
    match c.offer(msgs[3].clone(), 1, &key.public(), 64, t) {
        Offer::Verified(v, _) => assert_eq!(seqs(&v), vec![3, 4]),
        o => panic!("{o:?}"),
    }
    let mut out = Vec::new();
    c.take_ready(&mut out, t);
    assert_eq!(seqs(&out), vec![3, 4]);
}
