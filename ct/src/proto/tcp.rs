//! TCP connection tracking: a table-driven state machine plus sequence and
//! window tracking.
//!
//! Three layers look at every segment, in this order:
//!
//! 1. **Flag sanity** ([`flag_error`]): combinations no TCP stack sends (scans,
//!    Xmas packets) are rejected before anything else.
//! 2. **State machine** ([`TcpConn::update`]): the segment's [`FlagClass`], its
//!    direction and the current [`TcpState`] select one cell of a transition
//!    table. The cell says what the segment may do: move the connection to a
//!    state, keep it where it is, reopen it, or nothing (invalid).
//! 3. **Window tracking**: every segment the table lets through must also lie
//!    inside the sequence space the two ends have advertised to each other
//!    (Guido van Rooij, "Real Stateful TCP Packet Filtering in IP Filter", the
//!    scheme used by pf and by Linux `nf_conntrack`'s window tracker). Only a
//!    segment that passes both the table and the window checks changes the
//!    connection; anything else leaves [`TcpConn`] exactly as it was.
//!
//! Sequence numbers are compared modulo 2^32 ([`seq_before`], [`seq_after`])
//! and all arithmetic wraps, so connections crossing 2^32 work and no input
//! can panic.
//!
//! Choices worth knowing (where this differs from, or narrows, what Linux or
//! OVS do):
//!
//! - No mid-stream pickup: only a bare SYN creates a connection
//!   ([`TcpConn::valid_new`]), like Linux with `nf_conntrack_tcp_loose=0`.
//! - Closing states are derived from per-side "FIN sent" / "FIN acknowledged"
//!   bits rather than from whichever ACK comes next, so a FIN retransmission
//!   or an ACK from the side that closed first does not advance the state,
//!   and `TIME_WAIT` means both FINs really were acknowledged.
//! - A SYN on an established (or closing, not yet finished) connection is
//!   invalid; a stale entry for a reused port has to time out or be reset.
//!   A SYN in `TIME_WAIT`/`CLOSE` reopens.
//! - A bare ACK from the responder in `SYN_SENT` (e.g. a challenge ACK from a
//!   host with a stale connection) is invalid.
//! - `liberal` switches off every sequence check, including the RST ones; the
//!   state machine and flag sanity checks still apply.
//! - SACK blocks are not consulted (the segment summary does not carry them);
//!   the plain acknowledgement number is checked.
//! - `maxend` and `maxwin` never shrink, so a receiver reducing its window
//!   does not make already-allowed data invalid.

use crate::key::Dir;
use crate::packet::tcp_flags::{ACK, CWR, ECE, FIN, PSH, RST, SYN, URG};
use crate::packet::TcpSeg;

/// TCP conntrack states (nf_conntrack naming).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
#[repr(u8)]
pub enum TcpState {
    /// Nothing seen yet (a default-constructed [`TcpConn`]).
    #[default]
    None,
    /// The originator's SYN was seen.
    SynSent,
    /// The responder's SYN/ACK was seen (or both SYN/ACKs of a simultaneous
    /// open); the final ACK is outstanding.
    SynRecv,
    /// Three-way handshake complete.
    Established,
    /// One side sent a FIN that the other side has not acknowledged yet.
    FinWait,
    /// One side's FIN is acknowledged; the other side has not sent its FIN.
    CloseWait,
    /// Both sides sent a FIN; at least one of them is still unacknowledged.
    LastAck,
    /// Both FINs sent and acknowledged.
    TimeWait,
    /// Reset (an accepted RST).
    Close,
    /// Simultaneous open: the reply side answered the SYN with a SYN of its own.
    SynSent2,
}

impl TcpState {
    /// Number of states (the width of the transition table).
    pub const COUNT: usize = 10;

    /// All states, in discriminant order.
    pub const ALL: [TcpState; TcpState::COUNT] = [
        TcpState::None,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::Established,
        TcpState::FinWait,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::SynSent2,
    ];

    /// Name as `dump-conntrack` prints it in `protoinfo=(state=...)`.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::SynSent2 => "SYN_SENT2",
        }
    }

    /// Whether a FIN or an RST has been seen (`FIN_WAIT` through `CLOSE`).
    pub fn is_closing(self) -> bool {
        matches!(
            self,
            TcpState::FinWait
                | TcpState::CloseWait
                | TcpState::LastAck
                | TcpState::TimeWait
                | TcpState::Close
        )
    }
}

/// Bits of [`TcpPeer::flags`].
pub mod peer_flags {
    /// This side's SYN carried the window-scale option.
    pub const WSCALE: u8 = 0x01;
    /// This side's SYN carried the SACK-permitted option.
    pub const SACK_PERM: u8 = 0x02;
    /// This side has sent its SYN (or SYN/ACK): `end`, `maxend` and `maxwin`
    /// hold real values.
    pub const INIT: u8 = 0x04;
    /// This side has sent a FIN (its `end` counts the FIN).
    pub const FIN_SENT: u8 = 0x08;
    /// The other side has acknowledged this side's FIN.
    pub const FIN_ACKED: u8 = 0x10;
    /// This side opened with a bare SYN while the other side's SYN was
    /// outstanding (simultaneous open). Only ever set on the reply side.
    pub const BARE_SYN: u8 = 0x20;
}

/// Window-tracking state of one direction (the sender's view).
///
/// All sequence values are absolute (not relative to the ISN) and compared
/// modulo 2^32.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct TcpPeer {
    /// One past the highest sequence number this side has sent (SYN and FIN
    /// count as one each).
    pub end: u32,
    /// The furthest `end` this side may reach: the largest
    /// `ack + max(window, 1)` the other side has advertised.
    pub maxend: u32,
    /// The largest window (scaled, at least 1) this side has advertised.
    pub maxwin: u32,
    /// Window-scale shift applied to this side's window field (0 unless both
    /// SYNs carried the option; at most [`MAX_WSCALE`]).
    pub scale: u8,
    /// [`peer_flags`] bits.
    pub flags: u8,
}

impl TcpPeer {
    fn has(&self, bit: u8) -> bool {
        self.flags & bit != 0
    }

    /// Start tracking this side from its SYN or SYN/ACK.
    fn init_from_syn(seg: &TcpSeg) -> TcpPeer {
        let end = seg_end(seg);
        let mut flags = peer_flags::INIT;
        if seg.wscale.is_some() {
            flags |= peer_flags::WSCALE;
        }
        if seg.sack_perm {
            flags |= peer_flags::SACK_PERM;
        }
        TcpPeer {
            end,
            maxend: end,
            maxwin: u32::from(seg.win).max(1),
            scale: seg.wscale.unwrap_or(0).min(MAX_WSCALE),
            flags,
        }
    }
}

/// Per-connection TCP tracking state.
///
/// `repr(C)` keeps `state` first: it is also the niche that tags
/// `ProtoState`, and the connection record wants that tag early in its
/// cache line.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[repr(C)]
pub struct TcpConn {
    pub state: TcpState,
    /// Index 0: the originator (sender of the first SYN); 1: the responder.
    /// Index with [`Dir::index`].
    pub peers: [TcpPeer; 2],
}

/// Outcome of feeding one segment to a connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TcpVerdict {
    /// Segment accepted; the state may have changed.
    Accept,
    /// Segment is invalid (out of window, bad flags ...); state unchanged.
    Invalid(&'static str),
    /// A SYN on a closed/time-wait connection: the caller destroys the old
    /// connection and starts a new one with this segment.
    Reopen,
}

/// Largest window-scale shift RFC 7323 allows; larger values are clamped.
pub const MAX_WSCALE: u8 = 14;

/// Floor of the "ACK too far behind" allowance: how far an ACK may trail the
/// other side's data even when the acknowledging side advertised only small
/// windows (a 64 KiB window plus slack for one segment).
pub const ACK_LAG_FLOOR: u32 = 66_000;

/// `a` comes strictly before `b` in sequence space (RFC 1982 style).
#[inline]
pub fn seq_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a` comes strictly after `b` in sequence space.
#[inline]
pub fn seq_after(a: u32, b: u32) -> bool {
    seq_before(b, a)
}

/// Sequence number just past the segment: SYN and FIN occupy one each.
#[inline]
pub fn seg_end(seg: &TcpSeg) -> u32 {
    let mut end = seg.seq.wrapping_add(seg.payload_len);
    if seg.flags & SYN != 0 {
        end = end.wrapping_add(1);
    }
    if seg.flags & FIN != 0 {
        end = end.wrapping_add(1);
    }
    end
}

// ---------------------------------------------------------------------------
// Flag sanity
// ---------------------------------------------------------------------------

/// Why a flag byte is impossible for a real TCP stack, or `None` if it is fine.
///
/// ECE and CWR (ECN signalling) are ignored; of the remaining six bits these
/// combinations are rejected, first match wins:
///
/// | flags (besides ECE/CWR)              | why                                   |
/// |--------------------------------------|---------------------------------------|
/// | none at all                          | null scan                             |
/// | SYN and FIN                          | open and close at once                |
/// | SYN and RST                          | open and abort at once                |
/// | FIN and RST                          | close and abort at once               |
/// | FIN, PSH or URG without ACK          | FIN/Xmas scans; only SYN and RST may  |
/// |                                      | be sent without ACK                   |
///
/// Everything else is allowed: SYN, SYN+ACK, ACK, FIN+ACK, RST, RST+ACK, each
/// optionally with PSH/URG once ACK is present.
pub fn flag_error(flags: u8) -> Option<&'static str> {
    let f = flags & !(ECE | CWR);
    if f == 0 {
        Some("no TCP flags set (null scan)")
    } else if f & (SYN | FIN) == SYN | FIN {
        Some("SYN and FIN together")
    } else if f & (SYN | RST) == SYN | RST {
        Some("SYN and RST together")
    } else if f & (FIN | RST) == FIN | RST {
        Some("FIN and RST together")
    } else if f & ACK == 0 && f & (FIN | PSH | URG) != 0 {
        Some("FIN, PSH or URG without ACK")
    } else {
        None
    }
}

/// The row of the transition table a segment selects.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u8)]
pub enum FlagClass {
    /// SYN without ACK.
    Syn,
    /// SYN with ACK.
    SynAck,
    /// FIN (with ACK, since a FIN without ACK fails [`flag_error`]).
    Fin,
    /// ACK with neither SYN, FIN nor RST (data or pure ACK).
    Ack,
    /// RST, with or without ACK.
    Rst,
    /// Anything else; [`flag_error`] rejects all of these first.
    Other,
}

impl FlagClass {
    /// Number of classes (the height of one direction's table).
    pub const COUNT: usize = 6;

    /// Classify a flag byte. RST wins over everything, then SYN, then FIN.
    pub fn of(flags: u8) -> FlagClass {
        if flags & RST != 0 {
            FlagClass::Rst
        } else if flags & SYN != 0 {
            if flags & ACK != 0 {
                FlagClass::SynAck
            } else {
                FlagClass::Syn
            }
        } else if flags & FIN != 0 {
            FlagClass::Fin
        } else if flags & ACK != 0 {
            FlagClass::Ack
        } else {
            FlagClass::Other
        }
    }

    fn unexpected(self) -> &'static str {
        match self {
            FlagClass::Syn => "SYN not expected in this state",
            FlagClass::SynAck => "SYN/ACK not expected in this state",
            FlagClass::Fin => "FIN not expected in this state",
            FlagClass::Ack => "ACK not expected in this state",
            FlagClass::Rst => "RST not expected in this state",
            FlagClass::Other => "segment without SYN, FIN, ACK or RST",
        }
    }
}

// ---------------------------------------------------------------------------
// Transition table
// ---------------------------------------------------------------------------

/// What one cell of the transition table lets a segment do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Transition {
    /// Window-check the segment, record it, then enter this state.
    To(TcpState),
    /// Window-check and record the segment; the state does not change.
    Stay,
    /// Window-check and record the segment, then derive the state from the
    /// FINs seen so far: one FIN unacknowledged → `FIN_WAIT`; one FIN,
    /// acknowledged → `CLOSE_WAIT`; two FINs, not both acknowledged →
    /// `LAST_ACK`; both acknowledged → `TIME_WAIT`.
    Closing,
    /// Only meaningful in a simultaneous open (the reply side sent a bare
    /// SYN): there it is `To(state)`, otherwise `Invalid`.
    SimOpen(TcpState),
    /// A new SYN on a finished connection: [`TcpVerdict::Reopen`].
    Reopen,
    /// The segment cannot occur in this state: [`TcpVerdict::Invalid`].
    Invalid,
}

use TcpState as St;
use Transition as T;

// Short names so the table below lines up.
const SS: Transition = T::To(St::SynSent);
const SR: Transition = T::To(St::SynRecv);
const ES: Transition = T::To(St::Established);
const TW: Transition = T::To(St::TimeWait);
const CL: Transition = T::To(St::Close);
const S2: Transition = T::To(St::SynSent2);
const SM: Transition = T::SimOpen(St::SynRecv);
const KP: Transition = T::Stay;
const FX: Transition = T::Closing;
const RO: Transition = T::Reopen;
const IV: Transition = T::Invalid;

/// The transition table: `TRANSITIONS[direction][flag class][state]`.
///
/// Columns are the current state, in [`TcpState`] order:
/// `NO`ne, `SS` SYN_SENT, `SR` SYN_RECV, `ES`TABLISHED, `FW` FIN_WAIT,
/// `CW` CLOSE_WAIT, `LA` LAST_ACK, `TW` TIME_WAIT, `CL` CLOSE, `S2` SYN_SENT2.
///
/// Cells: `SS`/`SR`/`ES`/`TW`/`CL`/`S2` move to that state; `KP` keeps the
/// state; `FX` is [`Transition::Closing`] (state from the FIN bookkeeping);
/// `SM` is SYN_RECV in a simultaneous open and invalid otherwise; `RO` reopens;
/// `IV` marks a segment that cannot occur in that state.
///
/// Every cell except `IV`/`RO` is still subject to the window checks (and RST
/// to its own acceptability check) before it takes effect.
#[rustfmt::skip]
pub const TRANSITIONS: [[[Transition; TcpState::COUNT]; FlagClass::COUNT]; 2] = [
    // ---------------- original direction (the side that sent the first SYN)
    [
        //         NO  SS  SR  ES  FW  CW  LA  TW  CL  S2
        /* SYN */ [SS, SS, KP, IV, IV, IV, IV, RO, RO, KP],
        // SYN: NO/SS (re)start tracking from this SYN (a retransmission, or a
        //   retry with a new ISN). SR/S2: the originator's SYN again, e.g. our
        //   SYN/ACK was lost; harmless if in window. Once data can flow a SYN
        //   makes no sense. TW/CL: the port is being reused → reopen.
        /* S/A */ [IV, IV, SM, IV, IV, IV, IV, IV, IV, SR],
        // SYN/ACK from the originator exists only in a simultaneous open: in
        //   S2 it answers the responder's SYN; in SR it is the second SYN/ACK
        //   (or a repeat). In a normal open it is bogus.
        /* FIN */ [IV, IV, FX, FX, FX, FX, FX, TW, CL, IV],
        // FIN: SR (the handshake ACK may carry a FIN) through LA are closing
        //   bookkeeping; late FINs in TW/CL are tolerated. No FIN before the
        //   handshake has been answered.
        /* ACK */ [IV, IV, ES, ES, FX, FX, FX, TW, CL, IV],
        // ACK: SR → ES is the third packet of the handshake. In FW/CW/LA the
        //   ACK may acknowledge a FIN. An ACK before any SYN/ACK (SS, S2)
        //   acknowledges nothing and is invalid.
        /* RST */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        // RST: closes from any state once it passes the RST checks.
        /* --- */ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
    ],
    // ---------------- reply direction (the side the first SYN was sent to)
    [
        //         NO  SS  SR  ES  FW  CW  LA  TW  CL  S2
        /* SYN */ [IV, S2, IV, IV, IV, IV, IV, RO, RO, KP],
        // SYN: in SS a bare SYN back is a simultaneous open (→ S2, repeats stay
        //   there). TW/CL: the former responder opens a new connection →
        //   reopen (the caller creates it with this side as originator).
        /* S/A */ [IV, SR, SR, KP, KP, KP, KP, IV, IV, SR],
        // SYN/ACK: the normal answer in SS, the responder's answer in S2.
        //   Repeats (the handshake ACK got lost) are accepted until the
        //   connection is finished.
        /* FIN */ [IV, IV, FX, FX, FX, FX, FX, TW, CL, IV],
        // FIN: as in the original direction.
        /* ACK */ [IV, IV, KP, ES, FX, FX, FX, TW, CL, IV],
        // ACK: in SR the responder may already send data (TCP Fast Open) or
        //   be the first to ACK after a simultaneous open; the state waits for
        //   the originator's ACK. Nothing to ACK before its SYN/ACK (SS, S2).
        /* RST */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        // RST: as in the original direction (in SS: a refused connection).
        /* --- */ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
    ],
];

/// Look up the transition for a segment of class `class` travelling in `dir`
/// while the connection is in `state`.
pub fn transition(dir: Dir, class: FlagClass, state: TcpState) -> Transition {
    TRANSITIONS[dir.index()][class as usize][state as usize]
}

// ---------------------------------------------------------------------------
// Window tracking
// ---------------------------------------------------------------------------

/// The acknowledgement number the segment asserts, if any. An RST with the
/// ACK bit and a zero acknowledgement number (sent by some broken stacks)
/// counts as no acknowledgement.
fn seg_ack(seg: &TcpSeg) -> Option<u32> {
    if seg.flags & ACK == 0 || (seg.flags & RST != 0 && seg.ack == 0) {
        None
    } else {
        Some(seg.ack)
    }
}

/// The segment's window in bytes: SYNs are never scaled, everything else is
/// shifted by the sender's negotiated scale.
fn seg_win(snd: &TcpPeer, seg: &TcpSeg) -> u32 {
    let raw = u32::from(seg.win);
    if seg.flags & SYN != 0 {
        raw
    } else {
        raw << snd.scale.min(MAX_WSCALE)
    }
}

/// The four window checks for a segment from `snd` to `rcv`. Read-only.
fn in_window(snd: &TcpPeer, rcv: &TcpPeer, seg: &TcpSeg) -> Result<(), &'static str> {
    let end = seg_end(seg);
    // I. The segment must not reach past what the receiver has offered.
    if seq_after(end, snd.maxend) {
        return Err("segment beyond the receiver's window");
    }
    // II. Nor may it be older than one full receive window behind the
    //     sender's highest sequence (retransmissions inside that are fine).
    if seq_before(end, snd.end.wrapping_sub(rcv.maxwin)) {
        return Err("segment older than one window");
    }
    if let (Some(ack), true) = (seg_ack(seg), rcv.has(peer_flags::INIT)) {
        // III. It must not acknowledge data the receiver has not sent.
        if seq_after(ack, rcv.end) {
            return Err("ACK for data not yet sent");
        }
        // IV. Nor lag the receiver's data by more than the sender's window
        //     could ever have held.
        let lag = snd.maxwin.max(ACK_LAG_FLOOR);
        if seq_before(ack, rcv.end.wrapping_sub(lag)) {
            return Err("ACK too far behind");
        }
    }
    Ok(())
}

/// Fold an accepted segment from `snd` into both peers.
fn record(snd: &mut TcpPeer, rcv: &mut TcpPeer, seg: &TcpSeg) {
    let end = seg_end(seg);
    let win = seg_win(snd, seg);
    if win > snd.maxwin {
        snd.maxwin = win;
    }
    if seq_after(end, snd.end) {
        snd.end = end;
    }
    // Only reachable in liberal mode: keep `end <= maxend`.
    if seq_after(end, snd.maxend) {
        snd.maxend = end;
    }
    if let Some(ack) = seg_ack(seg) {
        let edge = ack.wrapping_add(win.max(1));
        if seq_after(edge, rcv.maxend) {
            rcv.maxend = edge;
        }
        if rcv.has(peer_flags::FIN_SENT) && !seq_before(ack, rcv.end) {
            rcv.flags |= peer_flags::FIN_ACKED;
        }
    }
    if seg.flags & FIN != 0 {
        snd.flags |= peer_flags::FIN_SENT;
    }
}

impl TcpConn {
    /// Whether `seg` may create a new connection: a SYN without ACK, RST or
    /// FIN (and with no impossible flag combination).
    ///
    /// There is no mid-stream pickup: a connection whose SYN conntrack did not
    /// see is never adopted from a later segment. This is the behaviour of
    /// Linux with `nf_conntrack_tcp_loose=0`.
    pub fn valid_new(seg: &TcpSeg) -> bool {
        flag_error(seg.flags).is_none() && FlagClass::of(seg.flags) == FlagClass::Syn
    }

    /// The state of a connection created by `seg` (which passed `valid_new`):
    /// `SYN_SENT`, with the originator tracked from its SYN (including any
    /// data the SYN carries) and the responder not yet known.
    pub fn new(seg: &TcpSeg) -> TcpConn {
        TcpConn {
            state: TcpState::SynSent,
            peers: [TcpPeer::init_from_syn(seg), TcpPeer::default()],
        }
    }

    /// Whether a FIN or RST has been seen (`FIN_WAIT` through `CLOSE`).
    pub fn is_closing(&self) -> bool {
        self.state.is_closing()
    }

    /// Whether the connection was opened simultaneously from both ends.
    pub fn is_simultaneous_open(&self) -> bool {
        self.peers[Dir::Reply.index()].has(peer_flags::BARE_SYN)
    }

    /// Fold the edges of a segment a fast path forwarded (see
    /// [`crate::offload`]) into the window state, without checks and
    /// without state transitions (the fast path hands SYN, FIN and RST
    /// back to the classic path).
    pub fn record_offloaded(&mut self, dir: Dir, seg: &TcpSeg) {
        let [orig, reply] = &mut self.peers;
        let (snd, rcv) = match dir {
            Dir::Orig => (orig, reply),
            Dir::Reply => (reply, orig),
        };
        record(snd, rcv, seg);
    }

    /// Feed a segment travelling in `dir`; `liberal` turns window checks off.
    ///
    /// On [`TcpVerdict::Invalid`] and [`TcpVerdict::Reopen`] the connection is
    /// left untouched.
    pub fn update(&mut self, dir: Dir, seg: &TcpSeg, liberal: bool) -> TcpVerdict {
        if let Some(why) = flag_error(seg.flags) {
            return TcpVerdict::Invalid(why);
        }
        let class = FlagClass::of(seg.flags);
        let mut next = *self;
        let verdict = next.apply(transition(dir, class, self.state), class, dir, seg, liberal);
        if verdict == TcpVerdict::Accept {
            *self = next;
        }
        verdict
    }

    /// Carry out one table cell on `self` (a scratch copy).
    fn apply(
        &mut self,
        cell: Transition,
        class: FlagClass,
        dir: Dir,
        seg: &TcpSeg,
        liberal: bool,
    ) -> TcpVerdict {
        let target = match cell {
            T::Invalid => return TcpVerdict::Invalid(class.unexpected()),
            T::Reopen => return TcpVerdict::Reopen,
            T::SimOpen(s) if self.is_simultaneous_open() => Some(s),
            T::SimOpen(_) => return TcpVerdict::Invalid(class.unexpected()),
            T::To(s) => Some(s),
            T::Stay | T::Closing => None,
        };

        // The originator's SYN before anything else was answered: start over.
        if class == FlagClass::Syn
            && dir == Dir::Orig
            && matches!(self.state, St::None | St::SynSent)
        {
            *self = TcpConn::new(seg);
            return TcpVerdict::Accept;
        }

        let (o, r) = self.peers.split_at_mut(1);
        let (snd, rcv) = match dir {
            Dir::Orig => (&mut o[0], &mut r[0]),
            Dir::Reply => (&mut r[0], &mut o[0]),
        };

        if class == FlagClass::Rst {
            if !liberal {
                if let Err(why) = rst_acceptable(snd, rcv, seg) {
                    return TcpVerdict::Invalid(why);
                }
            }
            if snd.has(peer_flags::INIT) && rcv.has(peer_flags::INIT) {
                record(snd, rcv, seg);
            }
            self.state = St::Close;
            return TcpVerdict::Accept;
        }

        // The responder's first SYN or SYN/ACK: start tracking that side and
        // settle window scaling, which needs the option in both SYNs.
        if seg.flags & SYN != 0 && !snd.has(peer_flags::INIT) {
            *snd = TcpPeer::init_from_syn(seg);
            if class == FlagClass::Syn {
                snd.flags |= peer_flags::BARE_SYN;
            }
            if !(snd.has(peer_flags::WSCALE) && rcv.has(peer_flags::WSCALE)) {
                snd.scale = 0;
                rcv.scale = 0;
            }
        }
        if !snd.has(peer_flags::INIT) {
            // Unreachable through the table; guard against hand-built state.
            return TcpVerdict::Invalid("sender has not sent a SYN");
        }

        if !liberal {
            if let Err(why) = in_window(snd, rcv, seg) {
                return TcpVerdict::Invalid(why);
            }
        }
        record(snd, rcv, seg);

        self.state = match (cell, target) {
            (_, Some(s)) => s,
            (T::Closing, _) => self.closing_state(),
            _ => self.state,
        };
        TcpVerdict::Accept
    }

    /// The closing state implied by the FIN bookkeeping of both peers.
    fn closing_state(&self) -> TcpState {
        let sent = self
            .peers
            .iter()
            .filter(|p| p.has(peer_flags::FIN_SENT))
            .count();
        let acked = self
            .peers
            .iter()
            .filter(|p| p.has(peer_flags::FIN_SENT) && p.has(peer_flags::FIN_ACKED))
            .count();
        match (sent, acked) {
            (0, _) => self.state,
            (1, 0) => St::FinWait,
            (1, _) => St::CloseWait,
            (_, 2) => St::TimeWait,
            _ => St::LastAck,
        }
    }
}

/// Whether an RST may close the connection (defence against blind RST
/// injection): it must fall inside the window like any other segment. Before
/// the responder has answered (SYN_SENT) there is no window on its side yet,
/// so its RST must acknowledge exactly the originator's SYN, and an RST from
/// the originator must carry the sequence number following its SYN.
fn rst_acceptable(snd: &TcpPeer, rcv: &TcpPeer, seg: &TcpSeg) -> Result<(), &'static str> {
    if !snd.has(peer_flags::INIT) {
        // The responder refusing the SYN.
        return match seg_ack(seg) {
            Some(ack) if ack == rcv.end => Ok(()),
            _ => Err("RST does not acknowledge the SYN"),
        };
    }
    if !rcv.has(peer_flags::INIT) {
        // The originator abandoning its own SYN.
        return if seg.seq == snd.end {
            Ok(())
        } else {
            Err("RST out of window")
        };
    }
    in_window(snd, rcv, seg).map_err(|_| "RST out of window")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tcp_flags::{ACK, CWR, ECE, FIN, PSH, RST, SYN, URG};
    use proptest::prelude::*;

    const O: Dir = Dir::Orig;
    const R: Dir = Dir::Reply;
    const ACCEPT: TcpVerdict = TcpVerdict::Accept;

    fn is_invalid(v: TcpVerdict) -> bool {
        matches!(v, TcpVerdict::Invalid(_))
    }

    /// Two well-behaved endpoints talking through the tracker.
    #[derive(Clone, Copy)]
    struct Pair {
        c: TcpConn,
        /// Next sequence number each side will send.
        nxt: [u32; 2],
        /// Raw window each side advertises.
        win: [u16; 2],
        liberal: bool,
    }

    impl Pair {
        /// Only the originator's SYN has been seen.
        fn syn_sent(isn_c: u32, isn_s: u32, ws: Option<u8>) -> Pair {
            let s = TcpSeg {
                seq: isn_c,
                win: 65535,
                flags: SYN,
                wscale: ws,
                ..Default::default()
            };
            assert!(TcpConn::valid_new(&s));
            let c = TcpConn::new(&s);
            assert_eq!(c.state, TcpState::SynSent);
            Pair {
                c,
                nxt: [isn_c.wrapping_add(1), isn_s],
                win: [65535, 65535],
                liberal: false,
            }
        }

        /// Completed three-way handshake, checking every step.
        fn established(isn_c: u32, isn_s: u32) -> Pair {
            let mut p = Pair::syn_sent(isn_c, isn_s, None);
            assert_eq!(p.send(R, SYN | ACK, 0), ACCEPT);
            assert_eq!(p.c.state, TcpState::SynRecv);
            assert_eq!(p.send(O, ACK, 0), ACCEPT);
            assert_eq!(p.c.state, TcpState::Established);
            p
        }

        fn seg(&self, d: Dir, flags: u8, len: u32) -> TcpSeg {
            let i = d.index();
            TcpSeg {
                seq: self.nxt[i],
                ack: self.nxt[1 - i],
                win: self.win[i],
                flags,
                payload_len: len,
                ..Default::default()
            }
        }

        /// Send a segment; on Accept advance the sender's next sequence.
        fn push(&mut self, d: Dir, s: TcpSeg) -> TcpVerdict {
            let before = self.c;
            let v = self.c.update(d, &s, self.liberal);
            if v == ACCEPT {
                if seq_after(seg_end(&s), self.nxt[d.index()]) {
                    self.nxt[d.index()] = seg_end(&s);
                }
            } else {
                assert_eq!(self.c, before, "{v:?} must leave the connection unchanged");
            }
            v
        }

        fn send(&mut self, d: Dir, flags: u8, len: u32) -> TcpVerdict {
            let s = self.seg(d, flags, len);
            self.push(d, s)
        }

        /// Like `send` but must be rejected, leaving everything unchanged.
        fn reject(&mut self, d: Dir, s: TcpSeg) -> &'static str {
            let before = self.c;
            match self.c.update(d, &s, self.liberal) {
                TcpVerdict::Invalid(why) => {
                    assert_eq!(self.c, before);
                    why
                }
                v => panic!("expected Invalid, got {v:?} for {s:?}"),
            }
        }
    }

    #[test]
    fn conn_is_small_and_copy() {
        fn copy<T: Copy>() {}
        copy::<TcpConn>();
        assert!(std::mem::size_of::<TcpConn>() <= 36);
        assert_eq!(std::mem::size_of::<TcpPeer>(), 16);
    }

    #[test]
    fn names_and_closing() {
        let names: Vec<_> = TcpState::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "NONE",
                "SYN_SENT",
                "SYN_RECV",
                "ESTABLISHED",
                "FIN_WAIT",
                "CLOSE_WAIT",
                "LAST_ACK",
                "TIME_WAIT",
                "CLOSE",
                "SYN_SENT2"
            ]
        );
        for (i, s) in TcpState::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
            let conn = TcpConn {
                state: *s,
                ..Default::default()
            };
            assert_eq!(conn.is_closing(), (4..=8).contains(&i), "{s:?}");
        }
    }

    #[test]
    fn table_shape() {
        for d in [O, R] {
            for s in TcpState::ALL {
                // Nothing without SYN/FIN/ACK/RST is ever a transition.
                assert_eq!(transition(d, FlagClass::Other, s), Transition::Invalid);
                // RST closes from every state that exists.
                let rst = transition(d, FlagClass::Rst, s);
                if s == TcpState::None {
                    assert_eq!(rst, Transition::Invalid);
                } else {
                    assert_eq!(rst, Transition::To(TcpState::Close));
                }
            }
            // Only the originator's SYN leaves NONE.
            for class in [
                FlagClass::Syn,
                FlagClass::SynAck,
                FlagClass::Fin,
                FlagClass::Ack,
            ] {
                let t = transition(d, class, TcpState::None);
                let expect = if d == O && class == FlagClass::Syn {
                    Transition::To(TcpState::SynSent)
                } else {
                    Transition::Invalid
                };
                assert_eq!(t, expect);
            }
            // A SYN on a finished connection reopens it, from either side.
            for s in [TcpState::TimeWait, TcpState::Close] {
                assert_eq!(transition(d, FlagClass::Syn, s), Transition::Reopen);
            }
        }
        assert_eq!(FlagClass::of(SYN | ACK | ECE), FlagClass::SynAck);
        assert_eq!(FlagClass::of(RST | ACK), FlagClass::Rst);
        assert_eq!(FlagClass::of(FIN | ACK | PSH), FlagClass::Fin);
        assert_eq!(FlagClass::of(ACK | PSH | URG), FlagClass::Ack);
    }

    const BAD_FLAGS: [u8; 14] = [
        0,
        ECE | CWR,
        SYN | FIN,
        SYN | FIN | ACK,
        SYN | RST,
        SYN | RST | ACK,
        FIN | RST,
        FIN | RST | ACK,
        FIN,
        PSH,
        URG,
        FIN | PSH | URG,
        SYN | PSH,
        RST | PSH,
    ];

    #[test]
    fn bad_flag_combinations_are_invalid_in_every_state() {
        let mut conns = vec![TcpConn::default()];
        let mut p = Pair::syn_sent(1000, 5000, None);
        conns.push(p.c);
        p.send(R, SYN | ACK, 0);
        conns.push(p.c);
        p.send(O, ACK, 10);
        conns.push(p.c);
        p.send(O, FIN | ACK, 0);
        conns.push(p.c);
        p.send(R, ACK, 0);
        conns.push(p.c);
        p.send(R, FIN | ACK, 0);
        conns.push(p.c);
        p.send(O, ACK, 0);
        assert_eq!(p.c.state, TcpState::TimeWait);
        conns.push(p.c);
        for &f in &BAD_FLAGS {
            assert!(flag_error(f).is_some(), "{f:#x}");
            let s = TcpSeg {
                flags: f,
                seq: 1001,
                ack: 5001,
                win: 100,
                ..Default::default()
            };
            assert!(!TcpConn::valid_new(&s));
            for c in &conns {
                for d in [O, R] {
                    for liberal in [false, true] {
                        let mut x = *c;
                        assert!(
                            is_invalid(x.update(d, &s, liberal)),
                            "{f:#x} in {:?}",
                            c.state
                        );
                        assert_eq!(x, *c);
                    }
                }
            }
        }
    }

    #[test]
    fn good_flag_combinations_pass_the_sanity_check() {
        for f in [
            SYN,
            SYN | ECE | CWR,
            SYN | ACK,
            SYN | ACK | ECE,
            ACK,
            ACK | PSH,
            ACK | URG | PSH,
            FIN | ACK,
            FIN | ACK | PSH,
            RST,
            RST | ACK,
            RST | ACK | PSH,
        ] {
            assert_eq!(flag_error(f), None, "{f:#x}");
        }
    }

    #[test]
    fn only_a_plain_syn_is_valid_new() {
        let mk = |flags| TcpSeg {
            flags,
            ..Default::default()
        };
        assert!(TcpConn::valid_new(&mk(SYN)));
        assert!(TcpConn::valid_new(&mk(SYN | ECE | CWR)));
        for f in [SYN | ACK, ACK, ACK | PSH, FIN | ACK, RST, RST | ACK] {
            assert!(!TcpConn::valid_new(&mk(f)), "{f:#x}");
        }
    }

    #[test]
    fn new_initialises_originator_from_syn() {
        let s = TcpSeg {
            seq: 100,
            win: 0,
            flags: SYN,
            payload_len: 10,
            wscale: Some(20),
            sack_perm: true,
            ..Default::default()
        };
        let c = TcpConn::new(&s);
        assert_eq!(c.state, TcpState::SynSent);
        let o = c.peers[0];
        assert_eq!(
            (o.end, o.maxend, o.maxwin, o.scale),
            (111, 111, 1, MAX_WSCALE)
        );
        assert_eq!(
            o.flags,
            peer_flags::INIT | peer_flags::WSCALE | peer_flags::SACK_PERM
        );
        assert_eq!(c.peers[1], TcpPeer::default());
        // A default connection behaves like nothing was seen: the SYN starts it.
        let mut d = TcpConn::default();
        assert_eq!(d.update(O, &s, false), ACCEPT);
        assert_eq!(d, c);
    }

    #[test]
    fn three_way_handshake() {
        let p = Pair::established(1000, 90_000);
        assert_eq!(p.c.peers[0].end, 1001);
        assert_eq!(p.c.peers[1].end, 90_001);
        // Each side may send up to what the other acknowledged plus its window.
        assert_eq!(p.c.peers[0].maxend, 1001 + 65535);
        assert_eq!(p.c.peers[1].maxend, 90_001 + 65535);
        assert!(!p.c.is_closing());
        assert!(!p.c.is_simultaneous_open());
    }

    #[test]
    fn ack_before_synack_is_invalid() {
        let mut p = Pair::syn_sent(1000, 5000, None);
        let s = p.seg(O, ACK, 0);
        p.reject(O, s);
        let s = p.seg(R, ACK, 0);
        p.reject(R, s);
        let s = p.seg(O, FIN | ACK, 0);
        p.reject(O, s);
        assert_eq!(p.c.state, TcpState::SynSent);
    }

    #[test]
    fn simultaneous_open_originator_answers_first() {
        let mut p = Pair::syn_sent(1000, 7000, None);
        let s = TcpSeg {
            seq: 7000,
            win: 65535,
            flags: SYN,
            ..Default::default()
        };
        assert_eq!(p.push(R, s), ACCEPT);
        assert_eq!(p.c.state, TcpState::SynSent2);
        assert!(p.c.is_simultaneous_open());
        // A repeat of the reply SYN keeps SYN_SENT2.
        assert_eq!(p.push(R, s), ACCEPT);
        assert_eq!(p.c.state, TcpState::SynSent2);
        let s = TcpSeg {
            seq: 1000,
            ack: 7001,
            win: 65535,
            flags: SYN | ACK,
            ..Default::default()
        };
        assert_eq!(p.push(O, s), ACCEPT);
        assert_eq!(p.c.state, TcpState::SynRecv);
        let s = TcpSeg {
            seq: 7000,
            ack: 1001,
            win: 65535,
            flags: SYN | ACK,
            ..Default::default()
        };
        assert_eq!(p.push(R, s), ACCEPT);
        assert_eq!(p.c.state, TcpState::SynRecv);
        // The responder's data does not finish the handshake; the originator's ACK does.
        assert_eq!(p.send(R, ACK, 100), ACCEPT);
        assert_eq!(p.c.state, TcpState::SynRecv);
        assert_eq!(p.send(O, ACK, 100), ACCEPT);
        assert_eq!(p.c.state, TcpState::Established);
    }

    #[test]
    fn simultaneous_open_responder_answers_first() {
        let mut p = Pair::syn_sent(1000, 7000, Some(2));
        let s = TcpSeg {
            seq: 7000,
            win: 65535,
            flags: SYN,
            wscale: Some(3),
            ..Default::default()
        };
        assert_eq!(p.push(R, s), ACCEPT);
        assert_eq!((p.c.peers[0].scale, p.c.peers[1].scale), (2, 3));
        let s = TcpSeg {
            seq: 7000,
            ack: 1001,
            win: 65535,
            flags: SYN | ACK,
            ..Default::default()
        };
        assert_eq!(p.push(R, s), ACCEPT);
        assert_eq!(p.c.state, TcpState::SynRecv);
        let s = TcpSeg {
            seq: 1000,
            ack: 7001,
            win: 65535,
            flags: SYN | ACK,
            ..Default::default()
        };
        assert_eq!(p.push(O, s), ACCEPT);
        assert_eq!(p.c.state, TcpState::SynRecv);
        assert_eq!(p.send(O, ACK, 0), ACCEPT);
        assert_eq!(p.c.state, TcpState::Established);
    }

    #[test]
    fn originator_synack_without_simultaneous_open_is_invalid() {
        let mut p = Pair::syn_sent(1000, 7000, None);
        p.send(R, SYN | ACK, 0);
        let s = TcpSeg {
            seq: 1000,
            ack: 7001,
            win: 65535,
            flags: SYN | ACK,
            ..Default::default()
        };
        assert_eq!(p.reject(O, s), "SYN/ACK not expected in this state");
        p.send(O, ACK, 0);
        p.reject(O, s);
        // An originator SYN/ACK in SYN_SENT (no reply SYN yet) is bogus too.
        let mut q = Pair::syn_sent(1000, 7000, None);
        q.reject(O, s);
    }

    #[test]
    fn data_both_ways() {
        let mut p = Pair::established(10, 20);
        for i in 0..50 {
            let d = if i % 3 == 0 { R } else { O };
            assert_eq!(p.send(d, ACK | PSH, 1400), ACCEPT, "segment {i}");
            assert_eq!(p.send(d.other(), ACK, 0), ACCEPT);
        }
        assert_eq!(p.c.state, TcpState::Established);
        assert_eq!(p.c.peers[0].end, p.nxt[0]);
        assert_eq!(p.c.peers[1].end, p.nxt[1]);
    }

    #[test]
    fn client_initiated_close() {
        let mut p = Pair::established(1000, 2000);
        p.send(O, ACK, 500);
        assert_eq!(p.send(O, FIN | ACK, 0), ACCEPT);
        assert_eq!(p.c.state, TcpState::FinWait);
        assert!(p.c.is_closing());
        assert_eq!(p.send(R, ACK, 0), ACCEPT);
        assert_eq!(p.c.state, TcpState::CloseWait);
        // The responder may still send data in CLOSE_WAIT.
        assert_eq!(p.send(R, ACK, 300), ACCEPT);
        assert_eq!(p.send(O, ACK, 0), ACCEPT);
        assert_eq!(p.c.state, TcpState::CloseWait);
        assert_eq!(p.send(R, FIN | ACK, 0), ACCEPT);
        assert_eq!(p.c.state, TcpState::LastAck);
        assert_eq!(p.send(O, ACK, 0), ACCEPT);
        assert_eq!(p.c.state, TcpState::TimeWait);
        // Late retransmissions in TIME_WAIT are tolerated.
        let s = TcpSeg {
            seq: p.nxt[1] - 1,
            ack: p.nxt[0],
            win: 100,
            flags: FIN | ACK,
            ..Default::default()
        };
        assert_eq!(p.push(R, s), ACCEPT);
        assert_eq!(p.send(O, ACK, 0), ACCEPT);
        assert_eq!(p.c.state, TcpState::TimeWait);
    }

    #[test]
    fn server_initiated_close() {
        let mut p = Pair::established(1000, 2000);
        assert_eq!(p.send(R, FIN | ACK, 0), ACCEPT);
        assert_eq!(p.c.state, TcpState::FinWait);
        assert_eq!(p.send(O, ACK, 0), ACCEPT);
        assert_eq!(p.c.state, TcpState::CloseWait);
        assert_eq!(p.send(O, FIN | ACK, 0), ACCEPT);
        assert_eq!(p.c.state, TcpState::LastAck);
        assert_eq!(p.send(R, ACK, 0), ACCEPT);
        assert_eq!(p.c.state, TcpState::TimeWait);
    }

    #[test]
    fn fin_ack_answering_a_fin_goes_to_last_ack() {
        let mut p = Pair::established(1000, 2000);
        p.send(O, FIN | ACK, 0);
        // FIN/ACK that also acknowledges the first FIN.
        assert_eq!(p.send(R, FIN | ACK, 0), ACCEPT);
        assert_eq!(p.c.state, TcpState::LastAck);
        assert_eq!(p.send(O, ACK, 0), ACCEPT);
        assert_eq!(p.c.state, TcpState::TimeWait);
    }

    #[test]
    fn simultaneous_close_needs_both_fins_acknowledged() {
        let mut p = Pair::established(1000, 2000);
        let fin_o = p.seg(O, FIN | ACK, 0);
        let fin_r = p.seg(R, FIN | ACK, 0); // crosses fin_o: does not ack it
        assert_eq!(p.push(O, fin_o), ACCEPT);
        assert_eq!(p.push(R, fin_r), ACCEPT);
        assert_eq!(p.c.state, TcpState::LastAck);
        assert_eq!(p.send(O, ACK, 0), ACCEPT);
        assert_eq!(
            p.c.state,
            TcpState::LastAck,
            "only the reply FIN is acknowledged"
        );
        assert_eq!(p.send(R, ACK, 0), ACCEPT);
        assert_eq!(p.c.state, TcpState::TimeWait);
    }

    #[test]
    fn fin_retransmission_and_closer_acks_stay_in_fin_wait() {
        let mut p = Pair::established(1000, 2000);
        let fin = p.seg(O, FIN | ACK, 0);
        assert_eq!(p.push(O, fin), ACCEPT);
        assert_eq!(p.push(O, fin), ACCEPT);
        assert_eq!(p.c.state, TcpState::FinWait);
        // The responder's data that does not yet acknowledge the FIN.
        let s = TcpSeg {
            seq: p.nxt[1],
            ack: p.nxt[0] - 1,
            win: 65535,
            flags: ACK,
            payload_len: 10,
            ..Default::default()
        };
        assert_eq!(p.push(R, s), ACCEPT);
        assert_eq!(p.c.state, TcpState::FinWait);
        // The closer acknowledging that data.
        assert_eq!(p.send(O, ACK, 0), ACCEPT);
        assert_eq!(p.c.state, TcpState::FinWait);
        assert_eq!(p.send(R, ACK, 0), ACCEPT);
        assert_eq!(p.c.state, TcpState::CloseWait);
        // The first closer's FIN again: still CLOSE_WAIT.
        assert_eq!(p.push(O, fin), ACCEPT);
        assert_eq!(p.c.state, TcpState::CloseWait);
    }

    #[test]
    fn fin_on_the_handshake_ack() {
        let mut p = Pair::syn_sent(1000, 2000, None);
        p.send(R, SYN | ACK, 0);
        assert_eq!(p.send(O, FIN | ACK, 0), ACCEPT);
        assert_eq!(p.c.state, TcpState::FinWait);
    }

    #[test]
    fn rst_in_window_closes() {
        for d in [O, R] {
            let mut p = Pair::established(1000, 2000);
            p.send(O, ACK, 100);
            assert_eq!(p.send(d, RST | ACK, 0), ACCEPT);
            assert_eq!(p.c.state, TcpState::Close);
            assert!(p.c.is_closing());
            // Without ACK, and with a zero ACK field (broken stacks), still fine.
            let mut q = Pair::established(1000, 2000);
            assert_eq!(q.send(d, RST, 0), ACCEPT);
            let mut q = Pair::established(1000, 2000);
            let mut s = q.seg(d, RST | ACK, 0);
            s.ack = 0;
            assert_eq!(q.push(d, s), ACCEPT);
            // Further in-window segments are accepted in CLOSE, a new SYN reopens.
            assert_eq!(q.send(O, ACK, 0), ACCEPT);
            assert_eq!(q.c.state, TcpState::Close);
        }
    }

    #[test]
    fn rst_out_of_window_is_invalid() {
        let mut p = Pair::established(1000, 2000);
        for off in [100_000u32, 1 << 31, 3_000_000_000] {
            let mut s = p.seg(R, RST, 0);
            s.seq = s.seq.wrapping_add(off);
            assert_eq!(p.reject(R, s), "RST out of window");
            let mut s = p.seg(O, RST | ACK, 0);
            s.seq = s.seq.wrapping_sub(off);
            assert_eq!(p.reject(O, s), "RST out of window");
        }
        // In window but acknowledging unsent data.
        let mut s = p.seg(R, RST | ACK, 0);
        s.ack += 10;
        p.reject(R, s);
        assert_eq!(p.c.state, TcpState::Established);
    }

    #[test]
    fn rst_in_syn_sent() {
        // A refused connection: RST/ACK acknowledging the SYN.
        let mut p = Pair::syn_sent(1000, 0, None);
        let s = TcpSeg {
            seq: 0,
            ack: 1001,
            flags: RST | ACK,
            ..Default::default()
        };
        let mut q = p;
        assert_eq!(q.push(R, s), ACCEPT);
        assert_eq!(q.c.state, TcpState::Close);
        // Anything else from the responder's side is a guess.
        for bad in [
            TcpSeg { ack: 1000, ..s },
            TcpSeg { ack: 1002, ..s },
            TcpSeg { ack: 0, ..s },
            TcpSeg { flags: RST, ..s },
        ] {
            assert_eq!(p.reject(R, bad), "RST does not acknowledge the SYN");
        }
        // The originator abandoning its SYN must use the next sequence number.
        let s = TcpSeg {
            seq: 1001,
            flags: RST,
            ..Default::default()
        };
        assert_eq!(p.clone().push(O, s), ACCEPT);
        p.reject(O, TcpSeg { seq: 5000, ..s });
        // Liberal mode skips the checks.
        p.liberal = true;
        assert_eq!(p.push(R, TcpSeg { ack: 77, ..s }), ACCEPT);
        assert_eq!(p.c.state, TcpState::Close);
    }

    #[test]
    fn segment_far_beyond_the_window_is_invalid() {
        let mut p = Pair::established(1000, 2000);
        let mut s = p.seg(O, ACK, 100);
        s.seq += 70_000;
        assert_eq!(p.reject(O, s), "segment beyond the receiver's window");
        // Exactly filling the window is fine, one byte more is not.
        let mut s = p.seg(O, ACK, 65535);
        assert_eq!(p.clone().push(O, s), ACCEPT);
        s.payload_len += 1;
        p.reject(O, s);
        let mut s = p.seg(R, ACK, 10);
        s.seq = s.seq.wrapping_add(1 << 31);
        p.reject(R, s);
    }

    /// Move `n` full segments from `d` to the other side, acknowledged.
    fn bulk(p: &mut Pair, d: Dir, n: usize) {
        for _ in 0..n {
            assert_eq!(p.send(d, ACK, 10_000), ACCEPT);
            assert_eq!(p.send(d.other(), ACK, 0), ACCEPT);
        }
    }

    #[test]
    fn old_retransmissions_are_accepted_very_old_ones_are_not() {
        let mut p = Pair::established(1000, 2000);
        bulk(&mut p, O, 20);
        let mut s = p.seg(O, ACK, 1000);
        s.seq -= 5000;
        assert_eq!(p.push(O, s), ACCEPT);
        s.seq = p.nxt[0] - 60_000;
        assert_eq!(p.push(O, s), ACCEPT);
        s.seq = p.nxt[0] - 100_000;
        assert_eq!(p.reject(O, s), "segment older than one window");
        assert_eq!(p.c.peers[0].end, p.nxt[0]);
    }

    #[test]
    fn ack_of_unsent_data_is_invalid() {
        let mut p = Pair::established(1000, 2000);
        let mut s = p.seg(O, ACK, 0);
        s.ack += 1;
        assert_eq!(p.reject(O, s), "ACK for data not yet sent");
        let mut s = p.seg(R, ACK, 10);
        s.ack += 500;
        p.reject(R, s);
        // The SYN/ACK must not acknowledge beyond the SYN either.
        let mut q = Pair::syn_sent(1000, 2000, None);
        let mut s = q.seg(R, SYN | ACK, 0);
        s.ack = 1002;
        q.reject(R, s);
        s.ack = 1000u32.wrapping_sub(100_000);
        assert_eq!(q.reject(R, s), "ACK too far behind");
        assert_eq!(q.c.state, TcpState::SynSent);
    }

    #[test]
    fn ack_too_far_behind_is_invalid() {
        let mut p = Pair::established(1000, 2000);
        bulk(&mut p, R, 10);
        let mut s = p.seg(O, ACK, 0);
        s.ack = p.nxt[1] - 60_000;
        assert_eq!(
            p.push(O, s),
            ACCEPT,
            "a stale ACK within the window is fine"
        );
        s.ack = p.nxt[1] - 80_000;
        assert_eq!(p.reject(O, s), "ACK too far behind");
    }

    #[test]
    fn syn_on_finished_connections_reopens() {
        let mut p = Pair::established(1000, 2000);
        p.send(O, FIN | ACK, 0);
        p.send(R, FIN | ACK, 0);
        p.send(O, ACK, 0);
        assert_eq!(p.c.state, TcpState::TimeWait);
        let before = p.c;
        let s = TcpSeg {
            seq: 999_999,
            win: 100,
            flags: SYN,
            ..Default::default()
        };
        assert_eq!(p.c.update(O, &s, false), TcpVerdict::Reopen);
        assert_eq!(p.c.update(R, &s, false), TcpVerdict::Reopen);
        assert_eq!(p.c, before);
        let mut q = Pair::established(1000, 2000);
        q.send(R, RST, 0);
        assert_eq!(q.c.update(O, &s, true), TcpVerdict::Reopen);
    }

    #[test]
    fn syn_in_established_is_invalid() {
        let mut p = Pair::established(1000, 2000);
        let s = TcpSeg {
            seq: 1000,
            win: 100,
            flags: SYN,
            ..Default::default()
        };
        assert_eq!(p.reject(O, s), "SYN not expected in this state");
        p.reject(R, s);
        p.send(O, FIN | ACK, 0);
        p.reject(O, s);
    }

    #[test]
    fn syn_retransmission_in_syn_sent_is_accepted() {
        let mut p = Pair::syn_sent(1000, 2000, Some(7));
        let before = p.c;
        let s = TcpSeg {
            seq: 1000,
            win: 65535,
            flags: SYN,
            wscale: Some(7),
            ..Default::default()
        };
        assert_eq!(p.push(O, s), ACCEPT);
        assert_eq!(p.c, before);
        // A retry with a fresh ISN restarts tracking from it.
        let s = TcpSeg { seq: 50_000, ..s };
        assert_eq!(p.push(O, s), ACCEPT);
        assert_eq!(p.c.state, TcpState::SynSent);
        assert_eq!(p.c.peers[0].end, 50_001);
        // In SYN_RECV the original SYN again is fine, a different one is not.
        let mut q = Pair::syn_sent(1000, 2000, None);
        q.send(R, SYN | ACK, 0);
        let s = TcpSeg {
            seq: 1000,
            win: 65535,
            flags: SYN,
            ..Default::default()
        };
        assert_eq!(q.push(O, s), ACCEPT);
        assert_eq!(q.c.state, TcpState::SynRecv);
        q.reject(O, TcpSeg { seq: 900_000, ..s });
    }

    #[test]
    fn synack_retransmission_is_accepted() {
        let mut p = Pair::syn_sent(1000, 2000, None);
        let sa = p.seg(R, SYN | ACK, 0);
        assert_eq!(p.push(R, sa), ACCEPT);
        assert_eq!(p.push(R, sa), ACCEPT);
        assert_eq!(p.c.state, TcpState::SynRecv);
        p.send(O, ACK, 0);
        assert_eq!(p.push(R, sa), ACCEPT);
        assert_eq!(p.c.state, TcpState::Established);
        // A SYN/ACK far from the responder's sequence space is not.
        p.reject(
            R,
            TcpSeg {
                seq: 2000 + (1 << 30),
                ..sa
            },
        );
    }

    #[test]
    fn syn_with_data() {
        let s = TcpSeg {
            seq: 1000,
            win: 65535,
            flags: SYN,
            payload_len: 200,
            ..Default::default()
        };
        let mut c = TcpConn::new(&s);
        assert_eq!(c.peers[0].end, 1201);
        // The responder may acknowledge the data or only the SYN.
        let sa = TcpSeg {
            seq: 5000,
            ack: 1201,
            win: 65535,
            flags: SYN | ACK,
            ..Default::default()
        };
        assert_eq!(c.clone().update(R, &sa, false), ACCEPT);
        let sa = TcpSeg { ack: 1001, ..sa };
        assert_eq!(c.update(R, &sa, false), ACCEPT);
        assert_eq!(c.state, TcpState::SynRecv);
    }

    #[test]
    fn window_scaling_needs_both_sides() {
        // Both SYNs carry the option: windows are shifted.
        let mut p = Pair::syn_sent(1000, 2000, Some(20));
        let mut sa = p.seg(R, SYN | ACK, 0);
        sa.wscale = Some(5);
        assert_eq!(p.push(R, sa), ACCEPT);
        assert_eq!((p.c.peers[0].scale, p.c.peers[1].scale), (MAX_WSCALE, 5));
        assert_eq!(p.send(O, ACK, 0), ACCEPT);
        // The client advertised 65535 << 14: the server may send ~1 GiB.
        let mut s = p.seg(R, ACK, 1_000_000);
        assert_eq!(p.push(R, s), ACCEPT);
        assert_eq!(p.c.peers[1].maxend, 2001 + (65535u32 << 14));
        // The server's 65535 << 5 window lets the client send 2 MB but not 3 MB.
        let mut c = p.seg(O, ACK, 2_000_000);
        assert_eq!(p.clone().push(O, c), ACCEPT);
        c.payload_len = 3_000_000;
        p.reject(O, c);
        s.seq = p.nxt[1];
        s.payload_len = 1;
        assert_eq!(p.push(R, s), ACCEPT);

        // Only the originator offers it: nothing is scaled.
        for (ws_c, ws_s) in [(Some(7), None), (None, Some(7))] {
            let mut p = Pair::syn_sent(1000, 2000, ws_c);
            let mut sa = p.seg(R, SYN | ACK, 0);
            sa.wscale = ws_s;
            assert_eq!(p.push(R, sa), ACCEPT);
            assert_eq!((p.c.peers[0].scale, p.c.peers[1].scale), (0, 0));
            p.send(O, ACK, 0);
            assert_eq!(p.clone().send(O, ACK, 65535), ACCEPT);
            let s = p.seg(O, ACK, 65536);
            p.reject(O, s);
        }
    }

    #[test]
    fn zero_window_probe_is_accepted() {
        let mut p = Pair::established(1000, 2000);
        // The client fills the server's window; the server acknowledges it
        // all but advertises a zero window.
        assert_eq!(p.send(O, ACK, 65535), ACCEPT);
        p.win[1] = 0;
        assert_eq!(p.send(R, ACK, 0), ACCEPT);
        // One byte into the zero window (a probe) is allowed, two are not.
        let s = p.seg(O, ACK, 2);
        assert_eq!(p.reject(O, s), "segment beyond the receiver's window");
        assert_eq!(p.send(O, ACK, 1), ACCEPT);
        // Repeated probes of that byte keep working.
        let mut s = p.seg(O, ACK, 1);
        s.seq -= 1;
        assert_eq!(p.push(O, s), ACCEPT);
        assert_eq!(p.push(O, s), ACCEPT);
        // A window reopening lets data flow again.
        p.win[1] = 1000;
        assert_eq!(p.send(R, ACK, 0), ACCEPT);
        assert_eq!(p.send(O, ACK, 1000), ACCEPT);
    }

    #[test]
    fn sequence_wraparound() {
        let mut p = Pair::established(u32::MAX - 3000, u32::MAX - 10);
        for _ in 0..10 {
            assert_eq!(p.send(O, ACK | PSH, 1000), ACCEPT);
            assert_eq!(p.send(R, ACK | PSH, 1000), ACCEPT);
        }
        assert!(p.nxt[0] < 10_000 && p.nxt[1] < 20_000, "both crossed 2^32");
        // Window checks still bite after the wrap.
        let mut s = p.seg(O, ACK, 10);
        s.seq = s.seq.wrapping_add(100_000);
        p.reject(O, s);
        let mut s = p.seg(O, ACK, 10);
        s.ack = s.ack.wrapping_add(1);
        p.reject(O, s);
        // A retransmission from before the wrap is still fine.
        let s = TcpSeg {
            seq: u32::MAX - 500,
            ack: p.nxt[1],
            win: 65535,
            flags: ACK,
            payload_len: 100,
            ..Default::default()
        };
        assert_eq!(p.push(O, s), ACCEPT);
        p.send(O, FIN | ACK, 0);
        p.send(R, FIN | ACK, 0);
        p.send(O, ACK, 0);
        assert_eq!(p.c.state, TcpState::TimeWait);
    }

    #[test]
    fn liberal_mode_skips_window_checks_only() {
        let mut p = Pair::established(1000, 2000);
        p.liberal = true;
        let mut s = p.seg(O, ACK, 100);
        s.seq += 1_000_000;
        s.ack += 7;
        assert_eq!(p.push(O, s), ACCEPT);
        assert_eq!(p.c.peers[0].end, s.seq + 100, "peers are still updated");
        let mut r = p.seg(R, RST, 0);
        r.seq += 1 << 30;
        let mut q = p;
        assert_eq!(q.push(R, r), ACCEPT);
        assert_eq!(q.c.state, TcpState::Close);
        // The state machine still runs: no ACK before the SYN/ACK, no bad flags.
        let mut q = Pair::syn_sent(1, 2, None);
        q.liberal = true;
        let s = q.seg(O, ACK, 0);
        q.reject(O, s);
        let s = q.seg(O, FIN, 0);
        q.reject(O, s);
        // And closes normally.
        p.send(R, FIN | ACK, 0);
        assert_eq!(p.c.state, TcpState::FinWait);
    }

    const COMMON_FLAGS: [u8; 10] = [
        SYN,
        SYN | ACK,
        ACK,
        ACK | PSH,
        FIN | ACK,
        RST,
        RST | ACK,
        ACK,
        ACK | PSH,
        SYN | ECE | CWR,
    ];

    fn pick(conn: &TcpConn, dir: Dir, mode: u8, rnd: u32, off: i16) -> u32 {
        let base = conn.peers[dir.index()].end;
        match mode % 3 {
            0 => rnd,
            1 => base.wrapping_add(off as i32 as u32),
            _ => base,
        }
    }

    proptest! {
        #[test]
        fn random_segments_never_panic_and_invalid_is_a_noop(
            isn in any::<u32>(),
            ws in proptest::option::of(any::<u8>()),
            ops in proptest::collection::vec(
                (any::<bool>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u32>(), any::<u32>(),
                 any::<i16>(), any::<u16>(), 0u32..70_000, proptest::option::of(any::<u8>())),
                0..60),
            liberal in any::<bool>(),
        ) {
            let syn = TcpSeg { seq: isn, win: 1000, flags: SYN, wscale: ws, ..Default::default() };
            let mut c = TcpConn::new(&syn);
            for (reply, fsel, smode, amode, rseq, rack, off, win, len, wscale) in ops {
                let dir = if reply { R } else { O };
                let flags = if fsel < 230 { COMMON_FLAGS[fsel as usize % COMMON_FLAGS.len()] } else { fsel };
                let seg = TcpSeg {
                    seq: pick(&c, dir, smode, rseq, off),
                    ack: pick(&c, dir.other(), amode, rack, off / 4),
                    win,
                    flags,
                    payload_len: len,
                    wscale,
                    sack_perm: reply,
                };
                let before = c;
                let v = c.update(dir, &seg, liberal);
                match v {
                    TcpVerdict::Accept => {
                        prop_assert!(c.state != TcpState::None);
                        for p in c.peers.iter().filter(|p| p.flags & peer_flags::INIT != 0) {
                            prop_assert!(p.scale <= MAX_WSCALE);
                            prop_assert!(p.maxwin >= 1);
                            // Liberal mode records arbitrary jumps, so only
                            // checked traffic keeps `end` within `maxend`.
                            prop_assert!(liberal || !seq_after(p.end, p.maxend));
                        }
                        if transition(dir, FlagClass::of(flags), before.state) == Transition::Stay {
                            prop_assert_eq!(c.state, before.state);
                        }
                    }
                    TcpVerdict::Invalid(_) | TcpVerdict::Reopen => prop_assert_eq!(c, before),
                }
                if v == TcpVerdict::Reopen {
                    prop_assert!(TcpConn::valid_new(&seg));
                    c = TcpConn::new(&seg);
                }
            }
        }

        #[test]
        fn arbitrary_state_never_panics(
            state in 0usize..TcpState::COUNT,
            raw in proptest::collection::vec(any::<u32>(), 8),
            dir in any::<bool>(),
            seg in (any::<u32>(), any::<u32>(), any::<u16>(), any::<u8>(), any::<u32>(), proptest::option::of(any::<u8>())),
            liberal in any::<bool>(),
        ) {
            let peer = |i: usize| TcpPeer {
                end: raw[i],
                maxend: raw[i + 1],
                maxwin: raw[i + 2],
                scale: (raw[i + 3] >> 8) as u8,
                flags: raw[i + 3] as u8,
            };
            let mut c = TcpConn { state: TcpState::ALL[state], peers: [peer(0), peer(4)] };
            let s = TcpSeg { seq: seg.0, ack: seg.1, win: seg.2, flags: seg.3, payload_len: seg.4, wscale: seg.5, sack_perm: false };
            let before = c;
            let v = c.update(if dir { R } else { O }, &s, liberal);
            if v != TcpVerdict::Accept {
                prop_assert_eq!(c, before);
            }
        }

        #[test]
        fn well_behaved_connections_are_always_accepted(
            isn_c in any::<u32>(),
            isn_s in any::<u32>(),
            ws in proptest::option::of((0u8..=14, 0u8..=14)),
            talk in proptest::collection::vec((any::<bool>(), 0u32..=1460), 0..40),
            client_closes in any::<bool>(),
        ) {
            let mut p = Pair::syn_sent(isn_c, isn_s, ws.map(|w| w.0));
            let mut sa = p.seg(R, SYN | ACK, 0);
            sa.wscale = ws.map(|w| w.1);
            prop_assert_eq!(p.push(R, sa), ACCEPT);
            prop_assert_eq!(p.send(O, ACK, 0), ACCEPT);
            for (reply, len) in talk {
                let d = if reply { R } else { O };
                prop_assert_eq!(p.send(d, ACK | PSH, len), ACCEPT);
                prop_assert_eq!(p.send(d.other(), ACK, 0), ACCEPT);
                prop_assert_eq!(p.c.state, TcpState::Established);
            }
            let first = if client_closes { O } else { R };
            prop_assert_eq!(p.send(first, FIN | ACK, 0), ACCEPT);
            prop_assert_eq!(p.send(first.other(), ACK, 0), ACCEPT);
            prop_assert_eq!(p.c.state, TcpState::CloseWait);
            prop_assert_eq!(p.send(first.other(), FIN | ACK, 0), ACCEPT);
            prop_assert_eq!(p.send(first, ACK, 0), ACCEPT);
            prop_assert_eq!(p.c.state, TcpState::TimeWait);
        }
    }
}
