//! Frames for raw peers ([`super::Sim::open_raw`]) that tests write by hand.

use crate::wire::{Frame, Kind};

/// One frame as a raw peer writes it (length prefix included), for [`super::Sim::raw_send`].
pub fn raw_frame(kind: Kind) -> Vec<u8> {
    Frame::new(kind).to_wire().to_vec()
}

/// A raw peer's hello frame: name `name`, in room `general`.
pub fn raw_hello(name: &str) -> Vec<u8> {
    raw_frame(Kind::Hello(crate::wire::Hello {
        version_major: crate::wire::VERSION_MAJOR,
        name: name.into(),
        rooms: vec!["general".into()],
        nonce: 1,
        ..Default::default()
    }))
}
