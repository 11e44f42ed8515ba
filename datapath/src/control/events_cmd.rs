//! `events [zone=N] [type=new|update|destroy[,...]]`: stream conntrack
//! lifecycle events to the client until it disconnects, like
//! `conntrack -E`.
//!
//! The connection stops being request/reply: after the first line (an
//! empty success, sent once subscribed, or an error naming the bad token)
//! every line is one event as a [`Reply`]: `output` is the text form
//! (`[NEW] udp,orig=(...),reply=(...),zone=5`), `json` the structured one
//! when the request asked for JSON. The subscriber is a bounded
//! [`EventQueue`] and unreliable: a client that cannot keep up misses
//! events (counted in `ct-stats-show` as `events refused`); it never slows
//! the datapath.

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use ct::events::queue::{EventFilter, EventQueue};
use ct::events::{ConnEvent, EventKind, EventSink};
use ct::Zone;
use serde_json::{json, Value};

use super::protocol::{write_line, Reply};
use crate::daemon::Daemon;

/// Events buffered for one client.
pub const QUEUE_EVENTS: usize = 4096;
/// How often an idle stream checks whether the client has gone.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Parse `zone=N` and `type=KIND[,KIND]...` (repeatable).
pub fn parse_events_args(args: &[String]) -> Result<EventFilter, String> {
    let mut f = EventFilter::default();
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| format!("'{a}': expected zone=N or type=new|update|destroy"))?;
        match k {
            "zone" => {
                let z: u16 = v
                    .parse()
                    .map_err(|_| format!("'{a}': zone must be 0..65535"))?;
                if f.zone.is_some_and(|old| old != Zone(z)) {
                    return Err(format!("'{a}': only one zone"));
                }
                f.zone = Some(Zone(z));
            }
            "type" => {
                let mut set = f.kinds.unwrap_or_default();
                for t in v.split(',') {
                    set = set.with(EventKind::parse(t).map_err(|e| format!("'{a}': {e}"))?);
                }
                f.kinds = Some(set);
            }
            _ => return Err(format!("'{a}': expected zone=N or type=new|update|destroy")),
        }
    }
    Ok(f)
}

/// One event as text: `[KIND] <connection as dump-conntrack prints it>`,
/// plus counters and end time for DESTROY (flow accounting).
pub fn event_text(ev: &ConnEvent) -> String {
    let mut s = format!("[{}] {}", ev.kind.name(), ev.conn);
    if ev.kind == EventKind::Destroy {
        let [o, r] = ev.conn.counters;
        s.push_str(&format!(
            ",packets=({},{}),bytes=({},{})",
            o.packets, r.packets, o.bytes, r.bytes
        ));
        if let Some(end) = ev.end_ns {
            s.push_str(&format!(
                ",duration_ms={}",
                end.saturating_sub(ev.conn.start_ns) / 1_000_000
            ));
        }
    }
    s.push('\n');
    s
}

/// One event as JSON.
pub fn event_json(ev: &ConnEvent) -> Value {
    json!({
        "type": ev.kind,
        "conn": ev.conn,
        "end_ns": ev.end_ns,
        "cause": ev.cause,
    })
}

/// Serve an `events` request on `stream` until the client goes away.
pub fn stream(mut out: UnixStream, mut input: UnixStream, d: &Daemon, args: &[String], json: bool) {
    let filter = match parse_events_args(args) {
        Ok(f) => f,
        Err(e) => {
            let _ = write_line(&mut out, &Reply::err(e));
            return;
        }
    };
    let q = Arc::new(EventQueue::with_filter(QUEUE_EVENTS, false, filter));
    let sink: Arc<dyn EventSink> = q.clone();
    d.sw.ct.subscribe(sink.clone());
    let _ = input.set_read_timeout(Some(IDLE_POLL));
    let mut ok = write_line(&mut out, &Reply::ok(String::new(), json!({}))).is_ok();
    let mut buf = [0u8; 256];
    while ok {
        match q.pop() {
            Some(ev) => {
                let j = if json { event_json(&ev) } else { Value::Null };
                ok = write_line(&mut out, &Reply::ok(event_text(&ev), j)).is_ok();
            }
            // Idle: wait a little, noticing a closed connection.
            None => match input.read(&mut buf) {
                Ok(0) => ok = false,
                Ok(_) => {} // the client has nothing to say; ignore it
                Err(e) => {
                    ok = matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    )
                }
            },
        }
    }
    d.sw.ct.unsubscribe(&sink);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_zone_and_types() {
        let f = parse_events_args(&args("zone=5 type=new,destroy")).unwrap();
        assert_eq!(f.zone, Some(Zone(5)));
        let k = f.kinds.unwrap();
        assert!(k.contains(EventKind::New) && k.contains(EventKind::Destroy));
        assert!(!k.contains(EventKind::Update));
        assert_eq!(parse_events_args(&[]).unwrap(), EventFilter::default());
        let e = parse_events_args(&args("type=old")).unwrap_err();
        assert!(e.contains("type=old"), "{e}");
        let e = parse_events_args(&args("zone=70000")).unwrap_err();
        assert!(e.contains("zone=70000"), "{e}");
        let e = parse_events_args(&args("zone=1 zone=2")).unwrap_err();
        assert!(e.contains("zone=2"), "{e}");
        let e = parse_events_args(&args("nonsense")).unwrap_err();
        assert!(e.contains("nonsense"), "{e}");
    }
}
