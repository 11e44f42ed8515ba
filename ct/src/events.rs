//! Lifecycle events: NEW, UPDATE (state, mark or label change) and DESTROY.
//!
//! The tracker calls every registered [`EventSink`] with a [`ConnEvent`]
//! after releasing the shard lock the change was made under. An event
//! carries both tuples, zone, mark, label, per-direction counters and
//! timestamps, so DESTROY events serve as flow accounting records.
//!
//! A sink that refuses an event (its queue is full) has it counted in
//! `events_refused`. A sink that asks for reliable delivery
//! ([`EventSink::reliable`]) also gets it again later: see [`reliable`]
//! (missed-event cache, dying list). [`queue::EventQueue`] is a ready-made
//! bounded subscriber queue with zone and kind filters.

pub mod queue;
pub mod reliable;

use serde::Serialize;

use crate::conn::Conn;
use crate::dump::ConnSnapshot;

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventKind {
    New,
    Update,
    Destroy,
}

impl EventKind {
    /// Name as `conntrack -E` prints it.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::New => "NEW",
            EventKind::Update => "UPDATE",
            EventKind::Destroy => "DESTROY",
        }
    }

    /// Parse `new`, `update` or `destroy` (any case).
    pub fn parse(s: &str) -> Result<EventKind, String> {
        match s.to_ascii_lowercase().as_str() {
            "new" => Ok(EventKind::New),
            "update" => Ok(EventKind::Update),
            "destroy" => Ok(EventKind::Destroy),
            _ => Err(format!(
                "unknown event type \"{s}\" (new, update or destroy)"
            )),
        }
    }
}

/// Why a connection was destroyed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DestroyCause {
    Expired,
    Flushed,
    EarlyDrop,
    /// Replaced by `force` or a TCP reopen.
    Replaced,
}

/// One lifecycle event: what happened, and the connection as it was then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnEvent {
    pub kind: EventKind,
    /// Both tuples, zone, mark, label, state, counters, start time.
    pub conn: ConnSnapshot,
    /// For DESTROY: when it happened.
    pub end_ns: Option<u64>,
    pub cause: Option<DestroyCause>,
}

impl ConnEvent {
    pub fn of(kind: EventKind, c: &Conn, id: u32, now_s: u32) -> ConnEvent {
        ConnEvent {
            kind,
            conn: ConnSnapshot::of(c, id, now_s),
            end_ns: None,
            cause: None,
        }
    }
}

/// A subscriber to lifecycle events.
pub trait EventSink: Send + Sync {
    /// Deliver one event; return false if it could not be queued.
    fn deliver(&self, ev: &ConnEvent) -> bool;

    /// Whether refused events must be retried (see [`reliable`]). An
    /// unreliable sink's refused events are only counted, so it never
    /// slows the tracker down.
    fn reliable(&self) -> bool {
        false
    }
}
