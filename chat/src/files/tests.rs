use std::time::{Duration, Instant};

use echo_proto::blob::{BlobHash, Offer, TransferId};
use echo_proto::PeerId;

use super::*;
use crate::model::ViewId;

fn offer(first: u8, name: &str, size: u64) -> Offer {
    let mut h = [7u8; 32];
    h[0] = first;
    Offer {
        hash: BlobHash(h),
        size,
        name: name.into(),
        mime: if name.ends_with(".jpg") {
            "image/jpeg".into()
        } else {
            String::new()
        },
    }
}

#[test]
fn offer_text_round_trips_and_reads_well() {
    let o = offer(0x1a, "holiday photo.jpg", 3 << 20);
    let text = offer_text(&o).unwrap();
    assert!(
        text.starts_with("[file] holiday photo.jpg (3.00 MiB) /get 1a070707 echo-offer:1:"),
        "{text}"
    );
    assert_eq!(parse_offer(&text), Some(o.clone()));
    assert_eq!(
        describe(&o),
        "[file] holiday photo.jpg · 3.00 MiB · image/jpeg · /get 1a070707"
    );
}

#[test]
fn only_exact_offer_texts_are_offers() {
    let o = offer(0x1a, "cute.jpg", 1000);
    let text = offer_text(&o).unwrap();
    let encoded = text.rsplit_once(MARKER).unwrap().1.to_string();
    // The readable part lies about the name: not an offer.
    let liar = text.replace("[file] cute.jpg", "[file] tax.pdf");
    assert_eq!(parse_offer(&liar), None);
    // Text around it, padding, a bad encoding, a truncated offer, a huge tail.
    assert_eq!(parse_offer(&format!("look: {text}")), None);
    assert_eq!(parse_offer(&format!("{text}=")), None);
    assert_eq!(parse_offer(&format!("{MARKER}{encoded}")), None);
    assert_eq!(parse_offer(&text[..text.len() - 3]), None);
    assert_eq!(
        parse_offer(&format!("{MARKER}{}", "A".repeat(100_000))),
        None
    );
    assert_eq!(parse_offer("echo-offer:1:"), None);
    assert_eq!(parse_offer("plain text"), None);
    // A bidi override in the name is shown defused.
    let sneaky = offer(0x2b, "invoice\u{202e}fdp.exe", 10);
    let t = offer_text(&sneaky).unwrap();
    assert_eq!(parse_offer(&t), Some(sneaky.clone()));
    assert!(!describe(&sneaky).contains('\u{202e}'));
}

#[test]
fn sizes_for_people() {
    assert_eq!(human_size(0), "0 B");
    assert_eq!(human_size(1023), "1023 B");
    assert_eq!(human_size(1536), "1.50 KiB");
    assert_eq!(human_size(100 << 20), "100 MiB");
    assert_eq!(human_size(u64::MAX), "16777216 TiB");
}

#[test]
fn ids_must_be_long_enough_and_unambiguous() {
    let mut f = Files::default();
    let alice = PeerId::random();
    let room = ViewId::Room("general".into());
    let real = offer(0x1a, "a.txt", 5);
    f.saw(real.clone(), alice, room.clone());
    assert_eq!(f.find("1a070707").unwrap().offer, real);
    assert_eq!(f.find("1A070707").unwrap().offer, real);
    assert!(f.find("1a07").unwrap_err().contains("8 or more"));
    assert!(f.find("zzzzzzzz").unwrap_err().contains("hex"));
    assert!(f.find("2b070707").unwrap_err().contains("no file offer"));
    // Someone offers a made-up hash with the same first digits.
    let mut clash = real.clone();
    clash.hash.0[31] = 0xff;
    clash.name = "evil.exe".into();
    f.saw(clash.clone(), PeerId::random(), room.clone());
    assert!(f.find("1a070707").unwrap_err().contains("more than one"));
    assert_eq!(f.find(&real.hash.to_hex()).unwrap().offer, real);
    assert_eq!(f.find(&clash.hash.to_hex()[..63]).unwrap().offer, clash);
    // The same hash offered again keeps its first offerer.
    f.saw(real.clone(), PeerId::random(), room);
    assert_eq!(f.find(&real.hash.to_hex()).unwrap().from, alice);
}

#[test]
fn offers_are_bounded_oldest_first() {
    let mut f = Files::default();
    let p = PeerId::random();
    for i in 0..(MAX_OFFERS as u32 + 10) {
        let mut o = offer(0, "x", 1);
        o.hash.0[..4].copy_from_slice(&i.to_be_bytes());
        f.saw(o, p, ViewId::Direct(p));
    }
    let offers = f.offers();
    assert_eq!(offers.len(), MAX_OFFERS);
    assert_eq!(offers[0].offer.hash.0[..4], 10u32.to_be_bytes());
}

#[test]
fn progress_rate_eta_and_bounded_history() {
    let mut f = Files::default();
    let t0 = Instant::now();
    let o = offer(0x1a, "big.bin", 100 << 20);
    f.started(TransferId(1), o.clone(), t0);
    assert_eq!(f.active().count(), 1);
    f.progress(TransferId(1), 10 << 20, 2, t0 + Duration::from_secs(1));
    let t = &f.transfers[0];
    assert_eq!(t.rate(), Some((10 << 20) as f64));
    assert_eq!(t.eta(), Some(Duration::from_secs(9)));
    assert_eq!(
        t.status(),
        "10% 10.0 MiB of 100 MiB, 10.0 MiB/s, 0:09 left, 2 sources"
    );
    for i in 2..200u64 {
        f.progress(
            TransferId(1),
            (10 + i) << 20,
            2,
            t0 + Duration::from_millis(250 * i),
        );
    }
    assert!(f.transfers[0].samples.len() <= 64);
    assert!(f.transfer_mut("1a0707").is_some());
    f.ended(TransferId(1), State::Done("/tmp/big.bin".into()));
    assert_eq!(f.active().count(), 0);
    assert_eq!(f.transfers[0].done, o.size);
    assert!(f.transfer_mut("1a0707").is_none());
    // Finished transfers are kept up to a bound; running ones always.
    for i in 0..(MAX_FINISHED as u64 + 5) {
        f.started(TransferId(100 + i), o.clone(), t0);
        f.ended(TransferId(100 + i), State::Cancelled);
    }
    assert!(f.running(&o.hash.0).is_none());
    f.started(TransferId(999), o.clone(), t0);
    assert_eq!(f.transfers.len(), MAX_FINISHED + 1);
    assert_eq!(f.running(&o.hash.0).unwrap().id, TransferId(999));
}
