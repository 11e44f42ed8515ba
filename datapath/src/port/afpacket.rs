//! [`AfPacketPort`]: a Linux kernel network interface (a veth end, a tap, a
//! NIC) driven through an `AF_PACKET` raw socket. Needs `CAP_NET_RAW`.
//!
//! A non-blocking socket bound to the interface, in promiscuous mode.
//! A receive burst is one `recvmmsg` straight into pool buffers (no copy);
//! a transmit burst is one `sendmmsg` from the packets' own bytes. The
//! socket ignores its own transmissions (`PACKET_IGNORE_OUTGOING`; frames
//! marked outgoing are also skipped, for kernels without that option).
//!
//! The kernel takes the outer VLAN tag out of a received frame and keeps it
//! as packet metadata; the port asks for that metadata (`PACKET_AUXDATA`)
//! and puts the tag back into the frame, using the packet's headroom, so
//! the datapath sees the frame as it was on the wire. The same metadata
//! says when a frame from a local stack carries a partial L4 checksum
//! (transmit offload, e.g. on a veth): the port completes it, as a NIC
//! would, and marks checksums the kernel verified as good.
//!
//! Several receive queues are several sockets in one `PACKET_FANOUT_HASH`
//! group ([`AfPacketPort::open_with_queues`]): the kernel hashes each flow
//! to one socket, so poll-mode threads can poll one queue each.
//!
//! This file is one of the two places of the crate allowed `unsafe` (the
//! libc calls); each block says why it is sound.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{LinkState, Port, PortCounters, PortDropReason, PortStats};
use crate::packet::{csum, OffloadFlags, Packet, PacketBatch, PacketPool, PortNo};
use crate::BATCH_SIZE;

// Linux ABI constants (linux/if_packet.h).
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_MR_PROMISC: libc::c_ushort = 1;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_OUTGOING: u8 = 4;
const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_FANOUT_HASH: i32 = 0;

/// Mirror of `struct tpacket_stats`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TpacketStats {
    tp_packets: u32,
    tp_drops: u32,
}

/// Socket buffer size asked for in each direction (the kernel caps it at
/// `net.core.rmem_max`/`wmem_max` unless the process may force more).
pub const SOCKET_BUFFER_BYTES: i32 = 4 << 20;
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
const TP_STATUS_CSUM_VALID: u32 = 1 << 7;

/// Mirror of `struct tpacket_auxdata`.
#[repr(C)]
#[derive(Clone, Copy)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

/// Ancillary-data buffer of one received message: room for the auxdata
/// control message (`CMSG_SPACE(20)` is 40 on 64-bit Linux), aligned like a
/// `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct ControlBuf([u8; 64]);

/// The kernel's auxiliary data of one received message (`PACKET_AUXDATA`).
fn auxdata(hdr: &libc::msghdr) -> Option<TpacketAuxdata> {
    // SAFETY: `hdr` was filled in by recvmmsg: msg_control points at a live
    // ControlBuf and msg_controllen is the length the kernel wrote, which
    // CMSG_FIRSTHDR checks before returning a pointer (or null).
    let mut c = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    while !c.is_null() {
        // SAFETY: non-null results of CMSG_FIRSTHDR/CMSG_NXTHDR point at a
        // whole cmsghdr inside the control buffer.
        let cm = unsafe { &*c };
        // SAFETY: CMSG_LEN is arithmetic on its argument only.
        let need = unsafe { libc::CMSG_LEN(size_of::<TpacketAuxdata>() as u32) } as usize;
        if cm.cmsg_level == libc::SOL_PACKET
            && cm.cmsg_type == PACKET_AUXDATA
            && cm.cmsg_len as usize >= need
        {
            // SAFETY: the length check above shows that a whole
            // TpacketAuxdata follows the header inside the buffer; it is
            // read unaligned, so no alignment is assumed.
            return Some(unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast()) });
        }
        // SAFETY: `c` is a valid cmsghdr of `hdr`'s buffer (see above);
        // CMSG_NXTHDR bounds-checks against msg_controllen.
        c = unsafe { libc::CMSG_NXTHDR(hdr, c) };
    }
    None
}

/// The VLAN tag the kernel took out of a received frame, as `(tpid, tci)`.
fn stripped_vlan(aux: &TpacketAuxdata) -> Option<(u16, u16)> {
    if aux.tp_status & TP_STATUS_VLAN_VALID == 0 {
        return None;
    }
    let tpid = if aux.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
        aux.tp_vlan_tpid
    } else {
        0x8100
    };
    Some((tpid, aux.tp_vlan_tci))
}

/// Mirror of `struct packet_mreq`.
#[repr(C)]
struct PacketMreq {
    mr_ifindex: libc::c_int,
    mr_type: libc::c_ushort,
    mr_alen: libc::c_ushort,
    mr_address: [u8; 8],
}

/// An error setting up the socket, naming the interface and the step.
#[derive(Debug)]
pub struct AfPacketError {
    pub ifname: String,
    pub step: &'static str,
    pub source: io::Error,
}

impl fmt::Display for AfPacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AF_PACKET on {}: {}: {}",
            self.ifname, self.step, self.source
        )
    }
}

impl std::error::Error for AfPacketError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A port on a kernel interface.
#[derive(Debug)]
pub struct AfPacketPort {
    name: String,
    port_no: PortNo,
    ifname: String,
    ifindex: i32,
    /// One socket per receive queue.
    fds: Box<[OwnedFd]>,
    counters: PortCounters,
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` is a live reference to a `T` and the length passed is
    // exactly `size_of::<T>()`, so the kernel reads only valid memory; `fd`
    // is an open socket owned by the caller for the duration of the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Open, bind and configure one socket on interface `ifindex`.
fn open_socket(ifindex: u32) -> Result<OwnedFd, (&'static str, io::Error)> {
    // Protocol 0: the socket receives nothing until bound to one
    // interface below, so no frame of another interface slips in.
    // SAFETY: plain syscall with constant arguments; the result is checked.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(("socket", io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a freshly created descriptor that nothing else
    // owns; OwnedFd closes it exactly once.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };

    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll and the length matches it.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(("bind", io::Error::last_os_error()));
    }
    // Older kernels lack the option: outgoing frames are then skipped
    // by their packet type on receive.
    let _ = setsockopt(&fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &1i32);
    setsockopt(&fd, libc::SOL_PACKET, PACKET_AUXDATA, &1i32).map_err(|e| ("PACKET_AUXDATA", e))?;
    let mreq = PacketMreq {
        mr_ifindex: ifindex as i32,
        mr_type: PACKET_MR_PROMISC,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    setsockopt(&fd, libc::SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq)
        .map_err(|e| ("promiscuous mode", e))?;
    // Room for bursts between polls; the FORCE variants pass the sysctl
    // caps with CAP_NET_ADMIN, the plain ones are the fallback.
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt(&fd, libc::SOL_SOCKET, force, &SOCKET_BUFFER_BYTES).is_err() {
            let _ = setsockopt(&fd, libc::SOL_SOCKET, plain, &SOCKET_BUFFER_BYTES);
        }
    }
    Ok(fd)
}

/// A fanout group id no other port of this process uses.
fn next_fanout_group() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (std::process::id() as u16)
        .wrapping_mul(251)
        .wrapping_add(n as u16)
}

impl AfPacketPort {
    /// Open a port with one receive queue on interface `ifname`.
    pub fn open(
        name: impl Into<String>,
        port_no: PortNo,
        ifname: &str,
    ) -> Result<AfPacketPort, AfPacketError> {
        Self::open_with_queues(name, port_no, ifname, 1)
    }

    /// Open a port with `n_rxq` receive queues (at least 1): one socket per
    /// queue, joined in a `PACKET_FANOUT_HASH` group so that the kernel
    /// spreads flows over the queues and keeps each flow on one queue.
    /// Transmit queue `q` sends on socket `q % n_rxq`.
    pub fn open_with_queues(
        name: impl Into<String>,
        port_no: PortNo,
        ifname: &str,
        n_rxq: usize,
    ) -> Result<AfPacketPort, AfPacketError> {
        let fail = |step, source| AfPacketError {
            ifname: ifname.to_string(),
            step,
            source,
        };
        let cname = CString::new(ifname)
            .map_err(|_| fail("name", io::Error::from(io::ErrorKind::InvalidInput)))?;
        // SAFETY: `cname` is a NUL-terminated string that outlives the call.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(fail("if_nametoindex", io::Error::last_os_error()));
        }
        let n_rxq = n_rxq.clamp(1, 64);
        let group = next_fanout_group();
        let mut fds = Vec::with_capacity(n_rxq);
        for _ in 0..n_rxq {
            let fd = open_socket(ifindex).map_err(|(step, e)| fail(step, e))?;
            if n_rxq > 1 {
                let arg = i32::from(group) | (PACKET_FANOUT_HASH << 16);
                setsockopt(&fd, libc::SOL_PACKET, PACKET_FANOUT, &arg)
                    .map_err(|e| fail("PACKET_FANOUT", e))?;
            }
            fds.push(fd);
        }
        Ok(AfPacketPort {
            name: name.into(),
            port_no,
            ifname: ifname.to_string(),
            ifindex: ifindex as i32,
            fds: fds.into_boxed_slice(),
            counters: PortCounters::default(),
        })
    }

    /// The kernel interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The kernel interface index.
    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    /// Set the kernel receive buffer of every queue's socket (bytes; the
    /// kernel doubles it for bookkeeping and applies its limits).
    pub fn set_rx_buffer(&self, bytes: i32) -> io::Result<()> {
        for fd in self.fds.iter() {
            setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &bytes)
                .or_else(|_| setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &bytes))?;
        }
        Ok(())
    }

    /// Move the kernel's count of frames it dropped because the socket
    /// queue was full into [`PortDropReason::RxOverflow`] (reading the
    /// kernel counters resets them).
    fn collect_kernel_drops(&self) {
        for fd in self.fds.iter() {
            let mut st = TpacketStats::default();
            let mut len = size_of::<TpacketStats>() as libc::socklen_t;
            // SAFETY: `st` is a live TpacketStats and `len` holds its size,
            // so the kernel writes at most that many bytes into it; `fd` is
            // open.
            let r = unsafe {
                libc::getsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    PACKET_STATISTICS,
                    (&mut st as *mut TpacketStats).cast(),
                    &mut len,
                )
            };
            if r == 0 {
                self.counters
                    .drop(PortDropReason::RxOverflow, u64::from(st.tp_drops));
            }
        }
    }
}

impl Port for AfPacketPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn port_no(&self) -> PortNo {
        self.port_no
    }

    fn n_rxq(&self) -> usize {
        self.fds.len()
    }

    fn n_txq(&self) -> usize {
        self.fds.len()
    }

    fn rx_burst(&self, rxq: usize, batch: &mut PacketBatch, pool: &mut PacketPool) -> usize {
        let want = batch.remaining().min(BATCH_SIZE);
        let Some(fd) = self.fds.get(rxq) else {
            return 0;
        };
        if want == 0 {
            return 0;
        }
        // Fresh buffers, each opened to its full tailroom to receive into.
        let mut slots: [Option<Packet>; BATCH_SIZE] = [const { None }; BATCH_SIZE];
        // SAFETY: iovec, mmsghdr and sockaddr_ll are plain old data; zero is
        // a valid value for each.
        let mut iov: [libc::iovec; BATCH_SIZE] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; BATCH_SIZE] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut addrs: [libc::sockaddr_ll; BATCH_SIZE] = unsafe { zeroed() };
        let mut ctrl = [ControlBuf([0; 64]); BATCH_SIZE];
        for i in 0..want {
            let mut p = pool.alloc(self.port_no);
            let room = p.tailroom();
            if let Ok(buf) = p.append(room) {
                iov[i].iov_base = buf.as_mut_ptr().cast();
                iov[i].iov_len = buf.len();
            }
            slots[i] = Some(p);
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_ll).cast();
            msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            msgs[i].msg_hdr.msg_control = ctrl[i].0.as_mut_ptr().cast();
            msgs[i].msg_hdr.msg_controllen = size_of::<ControlBuf>() as _;
        }
        // SAFETY: `msgs[..want]` are initialised headers whose iovecs point
        // into the heap buffers of the packets held in `slots` (moving a
        // Packet does not move its buffer, and none is dropped or resized
        // before the call returns), each iov_len is that buffer's length,
        // each msg_name points at a sockaddr_ll of the stated size and each
        // msg_control at a ControlBuf of the stated size.
        let r = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                want as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let got = if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted {
                self.counters.drop(PortDropReason::RxError, 1);
            }
            0
        } else {
            r as usize
        };
        let (mut n, mut bytes, mut trunc, mut runt) = (0u64, 0u64, 0u64, 0u64);
        let mut no_headroom = 0u64;
        for (i, slot) in slots.iter_mut().enumerate().take(want) {
            let Some(mut p) = slot.take() else { continue };
            if i >= got || addrs[i].sll_pkttype == PACKET_OUTGOING {
                pool.free(p);
                continue;
            }
            let len = msgs[i].msg_len as usize;
            if msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                trunc += 1;
                pool.free(p);
            } else if len < 14 {
                runt += 1;
                pool.free(p);
            } else {
                p.truncate(len);
                let aux = auxdata(&msgs[i].msg_hdr);
                if let Some((tpid, tci)) = aux.as_ref().and_then(stripped_vlan) {
                    match p.insert_gap(12, 4) {
                        Ok(tag) => {
                            tag[0..2].copy_from_slice(&tpid.to_be_bytes());
                            tag[2..4].copy_from_slice(&tci.to_be_bytes());
                        }
                        Err(_) => {
                            no_headroom += 1;
                            pool.free(p);
                            continue;
                        }
                    }
                }
                // Checksums: a frame sent by a local stack with transmit
                // offload arrives with its L4 checksum only started
                // (CHECKSUM_PARTIAL); finish it, as the NIC would have.
                // One the kernel already verified is marked good.
                let status = aux.map_or(0, |a| a.tp_status);
                if status & TP_STATUS_CSUMNOTREADY != 0 {
                    if csum::complete_partial_l4(p.data_mut()) {
                        p.meta.offload.insert(OffloadFlags::L4_CSUM_GOOD);
                    }
                } else if status & TP_STATUS_CSUM_VALID != 0 {
                    p.meta.offload.insert(OffloadFlags::L4_CSUM_GOOD);
                }
                let len = p.len();
                bytes += len as u64;
                n += 1;
                // Cannot fail: at most `batch.remaining()` slots were filled.
                let _ = batch.push(p);
            }
        }
        self.counters.rx(n, bytes);
        self.counters
            .drop(PortDropReason::TooLarge, trunc + no_headroom);
        self.counters.drop(PortDropReason::RxRunt, runt);
        n as usize
    }

    fn tx_burst(&self, txq: usize, batch: &mut PacketBatch, pool: &mut PacketPool) -> usize {
        let fd = &self.fds[txq % self.fds.len()];
        let n = batch.len().min(BATCH_SIZE);
        // SAFETY: plain old data; zero is a valid value.
        let mut iov: [libc::iovec; BATCH_SIZE] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; BATCH_SIZE] = unsafe { zeroed() };
        for (i, p) in batch.iter().enumerate().take(n) {
            let d = p.data();
            iov[i].iov_base = d.as_ptr() as *mut libc::c_void;
            iov[i].iov_len = d.len();
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        let (mut sent, mut bytes) = (0usize, 0u64);
        let mut next = 0usize;
        while next < n {
            // SAFETY: `msgs[next..n]` are initialised headers whose iovecs
            // point at the frames of packets owned by `batch`, which is not
            // touched until the call returns; the kernel only reads them.
            let r = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    msgs.as_mut_ptr().add(next),
                    (n - next) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                let r = r as usize;
                bytes += batch.as_slice()[next..next + r]
                    .iter()
                    .map(|p| p.len() as u64)
                    .sum::<u64>();
                sent += r;
                next += r;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                    // The socket buffer is full: the rest of the burst drops.
                    self.counters
                        .drop(PortDropReason::TxQueueFull, (n - next) as u64);
                    next = n;
                }
                Some(libc::EMSGSIZE) => {
                    self.counters.drop(PortDropReason::TooLarge, 1);
                    next += 1;
                }
                Some(libc::ENETDOWN) | Some(libc::ENXIO) => {
                    self.counters
                        .drop(PortDropReason::LinkDown, (n - next) as u64);
                    next = n;
                }
                _ => {
                    self.counters.drop(PortDropReason::TxError, 1);
                    next += 1;
                }
            }
        }
        batch.free_into(pool);
        self.counters.tx(sent as u64, bytes);
        sent
    }

    fn stats(&self) -> PortStats {
        self.collect_kernel_drops();
        self.counters.snapshot()
    }

    fn link_state(&self) -> LinkState {
        let path = format!("/sys/class/net/{}/operstate", self.ifname);
        match std::fs::read_to_string(path) {
            Ok(s) if matches!(s.trim(), "up" | "unknown") => LinkState::Up,
            _ => LinkState::Down,
        }
    }
}
