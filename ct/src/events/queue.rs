//! A bounded subscriber queue: the ready-made [`EventSink`].
//!
//! The tracker pushes without waiting (a lock-free bounded array); a reader
//! thread pops. A full queue refuses the event, which the tracker counts
//! and, for a reliable queue, retries later (see [`super::reliable`]).
//! Events the filters reject are accepted and dropped: they are not
//! refusals and are never retried.

use crossbeam_queue::ArrayQueue;

use super::{ConnEvent, EventKind, EventSink};
use crate::key::Zone;

/// Which events a queue takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this zone (None: all zones).
    pub zone: Option<Zone>,
    /// Only these kinds (None: all kinds).
    pub kinds: Option<KindSet>,
}

/// A set of event kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindSet(u8);

impl KindSet {
    fn bit(k: EventKind) -> u8 {
        match k {
            EventKind::New => 1,
            EventKind::Update => 2,
            EventKind::Destroy => 4,
        }
    }
    pub fn with(self, k: EventKind) -> KindSet {
        KindSet(self.0 | Self::bit(k))
    }
    pub fn contains(self, k: EventKind) -> bool {
        self.0 & Self::bit(k) != 0
    }
}

impl FromIterator<EventKind> for KindSet {
    fn from_iter<I: IntoIterator<Item = EventKind>>(it: I) -> KindSet {
        it.into_iter().fold(KindSet::default(), KindSet::with)
    }
}

impl EventFilter {
    pub fn accepts(&self, ev: &ConnEvent) -> bool {
        self.zone.is_none_or(|z| ev.conn.zone == z)
            && self.kinds.is_none_or(|k| k.contains(ev.kind))
    }
}

/// A bounded queue of events for one subscriber.
pub struct EventQueue {
    q: ArrayQueue<ConnEvent>,
    reliable: bool,
    filter: EventFilter,
}

impl EventQueue {
    /// A queue holding at most `capacity` events (at least 1).
    pub fn new(capacity: usize, reliable: bool) -> EventQueue {
        EventQueue::with_filter(capacity, reliable, EventFilter::default())
    }

    pub fn with_filter(capacity: usize, reliable: bool, filter: EventFilter) -> EventQueue {
        EventQueue {
            q: ArrayQueue::new(capacity.max(1)),
            reliable,
            filter,
        }
    }

    /// The oldest queued event.
    pub fn pop(&self) -> Option<ConnEvent> {
        self.q.pop()
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
    pub fn capacity(&self) -> usize {
        self.q.capacity()
    }
    pub fn filter(&self) -> &EventFilter {
        &self.filter
    }
}

impl EventSink for EventQueue {
    fn deliver(&self, ev: &ConnEvent) -> bool {
        if !self.filter.accepts(ev) {
            return true;
        }
        self.q.push(ev.clone()).is_ok()
    }

    fn reliable(&self) -> bool {
        self.reliable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Conn;
    use crate::key::ConnKey;
    use crate::proto::{ProtoState, Seen, UdpState};

    fn ev(kind: EventKind, zone: u16) -> ConnEvent {
        let key = ConnKey::v4(
            Zone(zone),
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            17,
            1,
            2,
        );
        let c = Conn {
            key,
            ext: None,
            expire: 0,
            mark: 0,
            status: Default::default(),
            policy: Default::default(),
            sched: 0,
            proto: ProtoState::Udp(UdpState(Seen::First)),
            counters: Default::default(),
            start_ns: 0,
        };
        ConnEvent::of(kind, &c, 1, 0)
    }

    #[test]
    fn full_queue_refuses_and_filters_accept_without_queueing() {
        let q = EventQueue::with_filter(
            2,
            true,
            EventFilter {
                zone: Some(Zone(3)),
                kinds: Some([EventKind::New, EventKind::Destroy].into_iter().collect()),
            },
        );
        assert!(q.reliable());
        assert!(q.deliver(&ev(EventKind::New, 4))); // other zone: dropped
        assert!(q.deliver(&ev(EventKind::Update, 3))); // other kind: dropped
        assert!(q.is_empty());
        assert!(q.deliver(&ev(EventKind::New, 3)));
        assert!(q.deliver(&ev(EventKind::Destroy, 3)));
        assert!(!q.deliver(&ev(EventKind::Destroy, 3)));
        assert_eq!(q.pop().map(|e| e.kind), Some(EventKind::New));
        assert_eq!(q.pop().map(|e| e.kind), Some(EventKind::Destroy));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn kind_names_parse() {
        assert_eq!(EventKind::parse("Destroy"), Ok(EventKind::Destroy));
        assert!(EventKind::parse("old").unwrap_err().contains("old"));
        assert_eq!(EventKind::New.name(), "NEW");
    }
}
