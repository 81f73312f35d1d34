//! The bounded event queue between the node task and the app.
//!
//! The node task never waits for the app: when [`DriverConfig::event_buffer`] events are
//! queued and unread, further events are counted instead of queued, and the app reads a
//! [`RuntimeEvent::Lagged`] with their number at the place where they were dropped.
//!
//! [`DriverConfig::event_buffer`]: crate::DriverConfig::event_buffer

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use std::path::PathBuf;
use std::time::Duration;

use echo_proto::blob::{BlobHash, TransferId};
use echo_proto::{Event, Multiaddr, PeerId};
use futures::task::AtomicWaker;
use futures::Stream;

/// What [`Events`] yields: the node's next event, or how many were dropped because the
/// app fell behind.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RuntimeEvent {
    /// An event of the node, in order.
    Event(Event),
    /// The app did not read events fast enough: this many events that came here were
    /// dropped (the node itself lost nothing). Room messages can be read again from the
    /// node with [`crate::Handle::inspect`] and [`echo_proto::Node::room_log`] (and the
    /// connected peers with [`crate::Handle::peers`]); an app that stores history
    /// re-reads the logs of its rooms when it sees this. Raise
    /// [`crate::DriverConfig::event_buffer`] to make it rarer.
    Lagged {
        /// Events dropped at this point of the stream.
        missed: u64,
    },
    /// A download made progress (at most about 4 a second per transfer).
    TransferProgress {
        /// The download.
        id: TransferId,
        /// The blob.
        hash: BlobHash,
        /// Bytes verified and written (resumed ones included).
        done: u64,
        /// The size.
        total: u64,
        /// Sources with a request in flight.
        sources: usize,
    },
    /// A download is complete, verified and in its folder (never dropped).
    TransferDone {
        /// The download.
        id: TransferId,
        /// The blob.
        hash: BlobHash,
        /// Where the file is.
        path: PathBuf,
    },
    /// A download stopped without the file (never dropped); what was verified stays in
    /// the store, so downloading the offer again resumes.
    TransferFailed {
        /// The download.
        id: TransferId,
        /// The blob.
        hash: BlobHash,
        /// Why.
        kind: crate::blobs::TransferFailure,
        /// Why, readable.
        reason: String,
    },
    /// Hole punching (DCUtR) made a direct connection to a peer reached through a relay;
    /// the node moves the chat onto it ([`echo_proto::Event::LinkChanged`]).
    /// [`crate::swarm`] only.
    LinkUpgraded {
        /// The peer.
        peer: PeerId,
    },
    /// A relay accepted (or renewed) a reservation: peers reach this node at `addr`
    /// (`…/p2p/<relay>/p2p-circuit/p2p/<own id>`). [`crate::swarm`] only.
    RelayReserved {
        /// The address to give to peers.
        addr: Multiaddr,
    },
    /// A relay reservation ended (the relay went away or refused): it is asked again in
    /// `retry_in` (exponential backoff, capped). [`crate::swarm`] only.
    RelayLost {
        /// The relay's address (as configured).
        relay: Multiaddr,
        /// Until the next attempt.
        retry_in: Duration,
        /// Why, for the user.
        reason: String,
    },
    /// AutoNAT changed its conclusion about this node's reachability (also in
    /// [`crate::Handle::addresses`]). [`crate::swarm`] only.
    NatStatus {
        /// The new conclusion.
        nat: crate::Nat,
    },
}

#[derive(Default)]
struct State {
    /// Events, and `Lagged` markers where events were dropped.
    items: VecDeque<RuntimeEvent>,
    /// Events (not markers) in `items`.
    events: usize,
    /// The node task has ended.
    closed: bool,
    sent: u64,
    missed: u64,
}

struct Shared {
    state: Mutex<State>,
    waker: AtomicWaker,
}

/// The node task's end.
pub(crate) struct EventSender {
    shared: Arc<Shared>,
    cap: usize,
}

/// Counts of the event queue, for [`crate::DriverStats`].
pub(crate) struct EventCounts {
    pub queued: usize,
    pub sent: u64,
    pub missed: u64,
}

pub(crate) fn channel(cap: usize) -> (EventSender, Events) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        waker: AtomicWaker::new(),
    });
    (
        EventSender {
            shared: shared.clone(),
            cap: cap.max(1),
        },
        Events(shared),
    )
}

impl EventSender {
    /// Queues `e`, or counts it as missed if the app is `cap` events behind. Never waits.
    pub fn send(&self, e: Event) {
        // Events the app must persist (sequence reservations, own membership) are never
        // dropped; only the local user's actions cause them, so they cannot flood.
        let must = e.must_deliver();
        self.send_runtime(RuntimeEvent::Event(e), must);
    }

    #[cfg(feature = "swarm")]
    /// Queues a network notice (relay, hole punching, NAT) like an event of the node: it
    /// counts against the same buffer and is dropped (counted) when the app lags.
    pub fn notify(&self, e: RuntimeEvent) {
        self.send_runtime(e, false);
    }

    /// Queues `e` like [`EventSender::send`]; `must`: never dropped.
    pub fn send_runtime(&self, e: RuntimeEvent, must: bool) {
        let mut s = self.shared.state.lock().expect("not poisoned");
        if s.events < self.cap || must {
            s.items.push_back(e);
            s.events += 1;
            s.sent += 1;
        } else {
            s.missed += 1;
            match s.items.back_mut() {
                Some(RuntimeEvent::Lagged { missed }) => *missed += 1,
                _ => s.items.push_back(RuntimeEvent::Lagged { missed: 1 }),
            }
        }
        drop(s);
        self.shared.waker.wake();
    }

    pub fn counts(&self) -> EventCounts {
        let s = self.shared.state.lock().expect("not poisoned");
        EventCounts {
            queued: s.events,
            sent: s.sent,
            missed: s.missed,
        }
    }
}

impl Drop for EventSender {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.state.lock() {
            s.closed = true;
        }
        self.shared.waker.wake();
    }
}

/// The node's events, in order, with a [`RuntimeEvent::Lagged`] wherever the app fell
/// more than [`crate::DriverConfig::event_buffer`] events behind. Ends when the node
/// stops.
pub struct Events(Arc<Shared>);

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0.state.lock().expect("not poisoned");
        f.debug_struct("Events")
            .field("queued", &s.events)
            .field("missed", &s.missed)
            .finish()
    }
}

impl Events {
    fn pop(&self) -> Option<Option<RuntimeEvent>> {
        let mut s = self.0.state.lock().expect("not poisoned");
        match s.items.pop_front() {
            Some(e) => {
                if !matches!(e, RuntimeEvent::Lagged { .. }) {
                    s.events -= 1;
                }
                Some(Some(e))
            }
            None if s.closed => Some(None),
            None => None,
        }
    }
}

impl Stream for Events {
    type Item = RuntimeEvent;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RuntimeEvent>> {
        if let Some(r) = self.pop() {
            return Poll::Ready(r);
        }
        self.0.waker.register(cx.waker());
        match self.pop() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn ev(i: usize) -> Event {
        Event::MemberJoined {
            room: format!("r{i}"),
            peer: echo_proto::PeerId::random(),
        }
    }

    fn addr(e: &RuntimeEvent) -> Option<String> {
        match e {
            RuntimeEvent::Event(Event::MemberJoined { room, .. }) => Some(room.clone()),
            _ => None,
        }
    }

    /// A reader that falls 100 events behind a queue of 4 gets the 4, then one `Lagged`
    /// with the 96 it missed, then later events again; the queue never holds more.
    #[test]
    fn lagged_where_events_were_dropped() {
        let (tx, mut rx) = channel(4);
        for i in 0..100 {
            tx.send(ev(i));
            assert!(tx.counts().queued <= 4);
        }
        let c = tx.counts();
        assert_eq!((c.queued, c.sent, c.missed), (4, 4, 96));
        futures::executor::block_on(async {
            for i in 0..4 {
                let e = rx.next().await.unwrap();
                assert_eq!(addr(&e).unwrap(), format!("r{i}"));
            }
            tx.send(ev(500));
            assert!(matches!(
                rx.next().await,
                Some(RuntimeEvent::Lagged { missed: 96 })
            ));
            assert_eq!(addr(&rx.next().await.unwrap()).unwrap(), "r500");
            drop(tx);
            assert!(rx.next().await.is_none());
        });
    }

    /// A sequence reservation reaches an app that fell behind: dropping it would let a
    /// restarted node reuse sequence numbers.
    #[test]
    fn reservations_and_failed_checks_are_never_dropped() {
        let (tx, mut rx) = channel(2);
        for i in 0..10 {
            tx.send(ev(i));
        }
        tx.send(Event::SeqReserved {
            room: "general".into(),
            upto: 2000,
        });
        tx.send(ev(99));
        // Nor is a failed signature check: the app deletes those messages.
        tx.send(Event::SignatureFailed {
            room: "general".into(),
            author: PeerId::random(),
            seqs: vec![7],
        });
        let c = tx.counts();
        assert_eq!((c.sent, c.missed), (4, 9));
        drop(tx);
        let got: Vec<RuntimeEvent> = futures::executor::block_on(rx.by_ref().collect());
        assert!(
            matches!(
                got.as_slice(),
                [
                    RuntimeEvent::Event(Event::MemberJoined { .. }),
                    RuntimeEvent::Event(Event::MemberJoined { .. }),
                    RuntimeEvent::Lagged { missed: 8 },
                    RuntimeEvent::Event(Event::SeqReserved { upto: 2000, .. }),
                    RuntimeEvent::Lagged { missed: 1 },
                    RuntimeEvent::Event(Event::SignatureFailed { .. }),
                ]
            ),
            "{got:?}"
        );
    }
}
