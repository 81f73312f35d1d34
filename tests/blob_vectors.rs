//! The test vectors of `PROTOCOL.md`, section 17 (file transfer), checked against the
//! implementation. Every hex string here also appears verbatim in `PROTOCOL.md`.

#![allow(clippy::single_range_in_vec_init)]

use std::time::Instant;

use echo_proto::blob::{
    BlobConfig, BlobDecoder, BlobFrame, BlobHash, BlobOutput, MemStore, Offer, Provider,
};

const DOC: &str = include_str!("../PROTOCOL.md");

fn input() -> Vec<u8> {
    (0..40_000u32).map(|i| (i % 251) as u8).collect()
}

/// The frames host `Provider` sends for one request, as hex (leaf frames are cut to
/// their first 20 bytes).
fn response(req: &BlobFrame) -> Vec<String> {
    let now = Instant::now();
    let mut store = MemStore::new();
    store.insert(&input());
    let mut p = Provider::new(BlobConfig::default());
    let peer = echo_proto::Identity::from_secret_bytes([1; 32]).peer_id();
    p.handle_frame(peer, req.clone(), &mut store, now);
    let mut out = Vec::new();
    while let BlobOutput::Transmit { data, .. } = p.poll_output() {
        let mut d = BlobDecoder::new();
        d.extend(&data);
        let frame = d.decode().unwrap().unwrap();
        if let BlobFrame::Leaf { data: leaf, .. } = &frame {
            let group = 16384 * (req_first_group(req) as usize);
            assert_eq!(&leaf[..], &input()[group..(group + 16384).min(40_000)]);
            out.push(hex::encode(&data[..20]));
        } else {
            out.push(hex::encode(&data));
        }
    }
    out
}

fn req_first_group(req: &BlobFrame) -> u64 {
    match req {
        BlobFrame::Request { ranges, .. } => ranges[0].start,
        _ => unreachable!(),
    }
}

fn hash() -> BlobHash {
    BlobHash::of(&input())
}

const HASH: &str = "ccd32b4544a24c50fbefb249e10a8fcedc26e2794c79eb8a44ad0631bf07f53f";
const OUTBOARD: &str = "1e03bf3657c5076623059f21d92f2ec634dd276b07e3760625c73416f343d857083663d9bddc14d40cc2f3869e01c5bebde7632dfea165eda38af01d93d5045b5384f9b342c6cb86badedcbe662b0e980476a8db17db3cc1f13b19329749ab1f406632eceb31aa6735f072ad0554f5963f4082b5139978455b44f67732cf949d";
const FIRST: [&str; 5] = [
    "360100000001ccd32b4544a24c50fbefb249e10a8fcedc26e2794c79eb8a44ad0631bf07f53f0100000000000000000000000000000001",
    "0d10000000010000000000009c40",
    "491100000001000000011e03bf3657c5076623059f21d92f2ec634dd276b07e3760625c73416f343d857083663d9bddc14d40cc2f3869e01c5bebde7632dfea165eda38af01d93d5045b",
    "491100000001000000025384f9b342c6cb86badedcbe662b0e980476a8db17db3cc1f13b19329749ab1f406632eceb31aa6735f072ad0554f5963f4082b5139978455b44f67732cf949d",
    "8980011200000001000000030001020304050607",
];
const LAST: [&str; 4] = [
    "360100000001ccd32b4544a24c50fbefb249e10a8fcedc26e2794c79eb8a44ad0631bf07f53f0100000000000000020000000000000003",
    "0d10000000010000000000009c40",
    "491100000001000000011e03bf3657c5076623059f21d92f2ec634dd276b07e3760625c73416f343d857083663d9bddc14d40cc2f3869e01c5bebde7632dfea165eda38af01d93d5045b",
    "c9381200000001000000028a8b8c8d8e8f909192",
];
const OFFER: &str = "01ccd32b4544a24c50fbefb249e10a8fcedc26e2794c79eb8a44ad0631bf07f53f0000000000009c40086563686f2e62696e186170706c69636174696f6e2f6f637465742d73747265616d";

#[test]
fn hash_and_outboard() {
    assert_eq!(hash().to_hex(), HASH);
    let mut ob = vec![0u8; echo_proto::blob::outboard_size(40_000) as usize];
    let h = echo_proto::blob::compute_outboard(&input()[..], 40_000, |slot, pair| {
        ob[slot as usize * 64..][..64].copy_from_slice(pair);
        Ok(())
    })
    .unwrap();
    assert_eq!(h, hash());
    assert_eq!(hex::encode(&ob), OUTBOARD);
}

#[test]
fn responses_for_the_first_and_the_last_group() {
    for (group, vectors) in [(0u64, &FIRST[..]), (2, &LAST[..])] {
        let req = BlobFrame::Request {
            id: 1,
            hash: hash(),
            ranges: vec![group..group + 1],
        };
        assert_eq!(hex::encode(req.to_bytes()), vectors[0]);
        assert_eq!(response(&req), vectors[1..], "group {group}");
    }
}

#[test]
fn offer_encoding() {
    let offer = Offer {
        hash: hash(),
        size: 40_000,
        name: "echo.bin".into(),
        mime: "application/octet-stream".into(),
    };
    assert_eq!(hex::encode(offer.encode().unwrap()), OFFER);
    assert_eq!(Offer::decode(&hex::decode(OFFER).unwrap()).unwrap(), offer);
    assert_eq!(offer.short_id(), "ccd32b45");
}

#[test]
fn doc_contains_every_vector() {
    for v in [HASH, OUTBOARD, OFFER].iter().chain(&FIRST).chain(&LAST) {
        assert!(DOC.contains(v), "PROTOCOL.md lacks {v}");
    }
}

/// The proofs of the vectors decode with `bao-tree`'s own verifying decoder, so the
/// layout is `bao-tree`'s and not only ours.
#[test]
fn vectors_verify_with_the_bao_tree_decoder() {
    use bao_tree::io::sync::DecodeResponseIter;
    use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};
    let tree = BaoTree::new(40_000, BlockSize::from_chunk_log(4));
    let root = bao_tree::blake3::Hash::from_bytes(hash().0);
    let pair = |frame: &str| hex::decode(frame).unwrap()[1 + 1 + 4 + 4..].to_vec();
    for (vectors, parents, chunks, bytes) in [
        (
            &FIRST[..],
            2,
            ChunkRanges::from(ChunkNum(0)..ChunkNum(16)),
            0..16_384,
        ),
        (
            &LAST[..],
            1,
            ChunkRanges::from(ChunkNum(32)..),
            32_768..40_000,
        ),
    ] {
        let mut encoded = Vec::new();
        for p in &vectors[2..2 + parents] {
            encoded.extend(pair(p));
        }
        encoded.extend(&input()[bytes.clone()]);
        let items: Vec<_> = DecodeResponseIter::new(root, tree, &encoded[..], &chunks)
            .collect::<Result<_, _>>()
            .expect("bao-tree verifies the proof");
        assert_eq!(items.len(), parents + 1);
        let mut tampered = encoded.clone();
        *tampered.last_mut().unwrap() ^= 1;
        let bad = DecodeResponseIter::new(root, tree, &tampered[..], &chunks).any(|r| r.is_err());
        assert!(bad, "a flipped bit fails");
    }
}
