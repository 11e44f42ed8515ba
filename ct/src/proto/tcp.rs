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
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
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
