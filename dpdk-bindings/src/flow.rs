//! Generic flow API (`rte_flow`): a Rust description of an ingress rule
//! ([`FlowRule`]: pattern items and actions), the C arrays DPDK reads built
//! from it ([`CRule`], which owns every spec, mask and action configuration
//! it points to, so they stay alive for the call), and the calls:
//! [`validate`], [`create`], [`destroy`], [`query_count`], [`flush`].
//!
//! Only what ferrovs pushes to a device is described: pattern ETH / IPV4 or
//! IPV6 / TCP or UDP with exact addresses and ports (and, optionally, TCP
//! flags that must be clear), and the actions SET_IPV4_SRC/DST,
//! SET_IPV6_SRC/DST, SET_TP_SRC/DST, PORT_ID, REPRESENTED_PORT, QUEUE, MARK,
//! COUNT, DROP and PASSTHRU.
//!
//! Errors ([`FlowError`]) carry the errno, the kind `rte_flow_error` reported
//! (which part of the rule the device refused) and the driver's message.

use std::ffi::{c_void, CStr};
use std::fmt;
use std::ptr::{self, NonNull};

use crate::ethdev::EthDev;
use crate::ffi;

/// One pattern item, matched exactly (every given field fully masked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowItem {
    /// Any Ethernet frame (no spec).
    Eth,
    /// IPv4 with these source and destination addresses (network order
    /// bytes).
    Ipv4 { src: [u8; 4], dst: [u8; 4] },
    /// IPv6 with these source and destination addresses.
    Ipv6 { src: [u8; 16], dst: [u8; 16] },
    /// TCP with these ports; `flags_clear`: TCP flag bits that must all be
    /// zero (e.g. SYN|FIN|RST so that those segments do not match), 0 to
    /// not match flags at all.
    Tcp { src: u16, dst: u16, flags_clear: u8 },
    /// UDP with these ports.
    Udp { src: u16, dst: u16 },
}

/// One action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowAction {
    SetIpv4Src([u8; 4]),
    SetIpv4Dst([u8; 4]),
    SetIpv6Src([u8; 16]),
    SetIpv6Dst([u8; 16]),
    SetTpSrc(u16),
    SetTpDst(u16),
    /// Send to this DPDK port (deprecated in favour of REPRESENTED_PORT by
    /// DPDK, still the one most drivers take).
    PortId(u32),
    /// Send to the entity this ethdev port represents.
    RepresentedPort(u16),
    /// Deliver to this rx queue of the receiving port.
    Queue(u16),
    /// Tag the packet's mbuf with this id (`RTE_MBUF_F_RX_FDIR_ID`).
    Mark(u32),
    /// Count matching packets and bytes ([`query_count`]).
    Count,
    Drop,
    /// Let the packet go on to lower-priority rules / default handling.
    Passthru,
}

/// An ingress rule: attributes, pattern (without the END item) and actions
/// (without the END action).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FlowRule {
    pub group: u32,
    pub priority: u32,
    pub pattern: Vec<FlowItem>,
    pub actions: Vec<FlowAction>,
}

/// What went wrong, as `rte_flow_error` said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowError {
    /// The call (`rte_flow_validate`, ...).
    pub call: &'static str,
    /// errno (positive): ENOSYS when the driver has no flow support,
    /// ENOTSUP when it refuses part of the rule, ...
    pub errno: i32,
    /// `rte_flow_error.type`.
    pub kind: u32,
    /// The driver's message (or DPDK's message for the errno).
    pub message: String,
}

impl FlowError {
    /// The name of [`FlowError::kind`] (what part of the rule was refused).
    pub fn kind_name(&self) -> &'static str {
        error_kind_name(self.kind)
    }
}

/// Name of an `rte_flow_error_type`.
pub fn error_kind_name(kind: u32) -> &'static str {
    match kind {
        ffi::rte_flow_error_type_RTE_FLOW_ERROR_TYPE_NONE => "none",
        ffi::rte_flow_error_type_RTE_FLOW_ERROR_TYPE_UNSPECIFIED => "unspecified",
        ffi::rte_flow_error_type_RTE_FLOW_ERROR_TYPE_HANDLE => "handle",
        ffi::rte_flow_error_type_RTE_FLOW_ERROR_TYPE_ATTR_GROUP => "attr group",
        ffi::rte_flow_error_type_RTE_FLOW_ERROR_TYPE_ATTR_PRIORITY => "attr priority",
        ffi::rte_flow_error_type_RTE_FLOW_ERROR_TYPE_ATTR_INGRESS => "attr ingress",
        ffi::rte_flow_error_type_RTE_FLOW_ERROR_TYPE_ATTR_EGRESS => "attr egress",
        ffi::rte_flow_error_type_RTE_FLOW_ERROR_TYPE_ATTR_TRANSFER => "attr transfer",
        ffi::rte_flow_error_type_RTE_FLOW_ERROR_TYPE_ATTR => "attr",
        ffi::rte_flow_error_type_RTE_FLOW_ERROR_TYPE_ITEM_NUM => "item number",
        ffi::rte_flow_error_type_RTE_FLOW_ERROR_TYPE_ITEM_SPEC => "item spec",
        ffi::rte_flow_error_type_RTE_FLOW_ERROR_TYPE_ITEM_LAST => "item last",
        ffi::rte_flow_error_type_RTE_FLOW_ERROR_TYPE_ITEM_MASK => "item mask",
        ffi::rte_flow_error_type_RTE_FLOW_ERROR_TYPE_ITEM => "item",
        ffi::rte_flow_error_type_RTE_FLOW_ERROR_TYPE_ACTION_NUM => "action number",
        ffi::rte_flow_error_type_RTE_FLOW_ERROR_TYPE_ACTION_CONF => "action conf",
        ffi::rte_flow_error_type_RTE_FLOW_ERROR_TYPE_ACTION => "action",
        ffi::rte_flow_error_type_RTE_FLOW_ERROR_TYPE_STATE => "state",
        _ => "other",
    }
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (errno {}, refused: {})",
            self.call,
            self.message,
            self.errno,
            self.kind_name()
        )
    }
}

impl std::error::Error for FlowError {}

/// The C form of a [`FlowRule`]: the attribute, the END-terminated item and
/// action arrays, and the boxed specs/masks/configurations they point to.
/// The pointers stay valid as long as the `CRule` lives (boxes do not move
/// when the vectors holding them grow).
pub struct CRule {
    attr: ffi::rte_flow_attr,
    items: Vec<ffi::rte_flow_item>,
    actions: Vec<ffi::rte_flow_action>,
    _storage: Vec<Box<dyn std::any::Any>>,
}

impl fmt::Debug for CRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CRule")
            .field("items", &self.items.len())
            .field("actions", &self.actions.len())
            .finish()
    }
}

fn keep<T: 'static>(storage: &mut Vec<Box<dyn std::any::Any>>, v: T) -> *const c_void {
    let b = Box::new(v);
    let p = &*b as *const T as *const c_void;
    storage.push(b);
    p
}

impl CRule {
    /// Build the arrays of `rule`.
    pub fn new(rule: &FlowRule) -> CRule {
        let mut storage: Vec<Box<dyn std::any::Any>> = Vec::new();
        let mut attr = ffi::rte_flow_attr {
            group: rule.group,
            priority: rule.priority,
            ..Default::default()
        };
        attr.set_ingress(1);
        let mut items = Vec::with_capacity(rule.pattern.len() + 1);
        for it in &rule.pattern {
            let (type_, spec, mask) = match *it {
                FlowItem::Eth => (
                    ffi::rte_flow_item_type_RTE_FLOW_ITEM_TYPE_ETH,
                    ptr::null(),
                    ptr::null(),
                ),
                FlowItem::Ipv4 { src, dst } => {
                    let mut s = ffi::rte_flow_item_ipv4::default();
                    s.hdr.src_addr = u32::from_ne_bytes(src);
                    s.hdr.dst_addr = u32::from_ne_bytes(dst);
                    let mut m = ffi::rte_flow_item_ipv4::default();
                    m.hdr.src_addr = u32::MAX;
                    m.hdr.dst_addr = u32::MAX;
                    (
                        ffi::rte_flow_item_type_RTE_FLOW_ITEM_TYPE_IPV4,
                        keep(&mut storage, s),
                        keep(&mut storage, m),
                    )
                }
                FlowItem::Ipv6 { src, dst } => {
                    let mut s = ffi::rte_flow_item_ipv6::default();
                    s.hdr.src_addr = src;
                    s.hdr.dst_addr = dst;
                    let mut m = ffi::rte_flow_item_ipv6::default();
                    m.hdr.src_addr = [0xff; 16];
                    m.hdr.dst_addr = [0xff; 16];
                    (
                        ffi::rte_flow_item_type_RTE_FLOW_ITEM_TYPE_IPV6,
                        keep(&mut storage, s),
                        keep(&mut storage, m),
                    )
                }
                FlowItem::Tcp {
                    src,
                    dst,
                    flags_clear,
                } => {
                    let mut s = ffi::rte_flow_item_tcp::default();
                    s.hdr.src_port = src.to_be();
                    s.hdr.dst_port = dst.to_be();
                    let mut m = ffi::rte_flow_item_tcp::default();
                    m.hdr.src_port = u16::MAX;
                    m.hdr.dst_port = u16::MAX;
                    m.hdr.tcp_flags = flags_clear;
                    (
                        ffi::rte_flow_item_type_RTE_FLOW_ITEM_TYPE_TCP,
                        keep(&mut storage, s),
                        keep(&mut storage, m),
                    )
                }
                FlowItem::Udp { src, dst } => {
                    let mut s = ffi::rte_flow_item_udp::default();
                    s.hdr.src_port = src.to_be();
                    s.hdr.dst_port = dst.to_be();
                    let mut m = ffi::rte_flow_item_udp::default();
                    m.hdr.src_port = u16::MAX;
                    m.hdr.dst_port = u16::MAX;
                    (
                        ffi::rte_flow_item_type_RTE_FLOW_ITEM_TYPE_UDP,
                        keep(&mut storage, s),
                        keep(&mut storage, m),
                    )
                }
            };
            items.push(ffi::rte_flow_item {
                type_,
                spec,
                last: ptr::null(),
                mask,
            });
        }
        items.push(ffi::rte_flow_item {
            type_: ffi::rte_flow_item_type_RTE_FLOW_ITEM_TYPE_END,
            spec: ptr::null(),
            last: ptr::null(),
            mask: ptr::null(),
        });
        let mut actions = Vec::with_capacity(rule.actions.len() + 1);
        for a in &rule.actions {
            use FlowAction as A;
            let set4 = |s: &mut Vec<_>, addr: [u8; 4]| {
                keep(
                    s,
                    ffi::rte_flow_action_set_ipv4 {
                        ipv4_addr: u32::from_ne_bytes(addr),
                    },
                )
            };
            let set6 = |s: &mut Vec<_>, addr: [u8; 16]| {
                keep(s, ffi::rte_flow_action_set_ipv6 { ipv6_addr: addr })
            };
            let settp = |s: &mut Vec<_>, port: u16| {
                keep(s, ffi::rte_flow_action_set_tp { port: port.to_be() })
            };
            let (type_, conf) = match *a {
                A::SetIpv4Src(x) => (
                    ffi::rte_flow_action_type_RTE_FLOW_ACTION_TYPE_SET_IPV4_SRC,
                    set4(&mut storage, x),
                ),
                A::SetIpv4Dst(x) => (
                    ffi::rte_flow_action_type_RTE_FLOW_ACTION_TYPE_SET_IPV4_DST,
                    set4(&mut storage, x),
                ),
                A::SetIpv6Src(x) => (
                    ffi::rte_flow_action_type_RTE_FLOW_ACTION_TYPE_SET_IPV6_SRC,
                    set6(&mut storage, x),
                ),
                A::SetIpv6Dst(x) => (
                    ffi::rte_flow_action_type_RTE_FLOW_ACTION_TYPE_SET_IPV6_DST,
                    set6(&mut storage, x),
                ),
                A::SetTpSrc(p) => (
                    ffi::rte_flow_action_type_RTE_FLOW_ACTION_TYPE_SET_TP_SRC,
                    settp(&mut storage, p),
                ),
                A::SetTpDst(p) => (
                    ffi::rte_flow_action_type_RTE_FLOW_ACTION_TYPE_SET_TP_DST,
                    settp(&mut storage, p),
                ),
                A::PortId(id) => {
                    let c = ffi::rte_flow_action_port_id {
                        id,
                        ..Default::default()
                    };
                    (
                        ffi::rte_flow_action_type_RTE_FLOW_ACTION_TYPE_PORT_ID,
                        keep(&mut storage, c),
                    )
                }
                A::RepresentedPort(port_id) => (
                    ffi::rte_flow_action_type_RTE_FLOW_ACTION_TYPE_REPRESENTED_PORT,
                    keep(&mut storage, ffi::rte_flow_action_ethdev { port_id }),
                ),
                A::Queue(index) => (
                    ffi::rte_flow_action_type_RTE_FLOW_ACTION_TYPE_QUEUE,
                    keep(&mut storage, ffi::rte_flow_action_queue { index }),
                ),
                A::Mark(id) => (
                    ffi::rte_flow_action_type_RTE_FLOW_ACTION_TYPE_MARK,
                    keep(&mut storage, ffi::rte_flow_action_mark { id }),
                ),
                A::Count => (
                    ffi::rte_flow_action_type_RTE_FLOW_ACTION_TYPE_COUNT,
                    keep(&mut storage, ffi::rte_flow_action_count { id: 0 }),
                ),
                A::Drop => (
                    ffi::rte_flow_action_type_RTE_FLOW_ACTION_TYPE_DROP,
                    ptr::null(),
                ),
                A::Passthru => (
                    ffi::rte_flow_action_type_RTE_FLOW_ACTION_TYPE_PASSTHRU,
                    ptr::null(),
                ),
            };
            actions.push(ffi::rte_flow_action { type_, conf });
        }
        actions.push(ffi::rte_flow_action {
            type_: ffi::rte_flow_action_type_RTE_FLOW_ACTION_TYPE_END,
            conf: ptr::null(),
        });
        CRule {
            attr,
            items,
            actions,
            _storage: storage,
        }
    }

    /// The attribute.
    pub fn attr(&self) -> &ffi::rte_flow_attr {
        &self.attr
    }

    /// The items, END last.
    pub fn items(&self) -> &[ffi::rte_flow_item] {
        &self.items
    }

    /// The actions, END last.
    pub fn actions(&self) -> &[ffi::rte_flow_action] {
        &self.actions
    }
}

fn flow_error(call: &'static str, ret: i32, err: &ffi::rte_flow_error) -> FlowError {
    let errno = if ret < 0 {
        ret.saturating_abs()
    } else {
        crate::error::rte_errno()
    };
    let message = if err.message.is_null() {
        crate::error::strerror(errno)
    } else {
        // SAFETY: a non-null rte_flow_error.message is a NUL-terminated
        // string set by the driver (static, or in the driver's storage that
        // outlives the call); it is copied out at once.
        let m = unsafe { CStr::from_ptr(err.message) };
        format!("{}: {}", m.to_string_lossy(), crate::error::strerror(errno))
    };
    FlowError {
        call,
        errno,
        kind: err.type_,
        message,
    }
}

/// Ask the device whether it would accept `rule` (nothing is installed).
pub fn validate(dev: &EthDev, rule: &FlowRule) -> Result<(), FlowError> {
    let c = CRule::new(rule);
    let mut err = ffi::rte_flow_error::default();
    // SAFETY: attr, items and actions are valid, END-terminated arrays
    // whose specs, masks and confs live in `c` for the duration of the
    // call; err is a valid out pointer.
    let ret = unsafe {
        ffi::rte_flow_validate(
            dev.port_id(),
            &c.attr,
            c.items.as_ptr(),
            c.actions.as_ptr(),
            &mut err,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(flow_error("rte_flow_validate", ret, &err))
    }
}

/// A rule installed on a device. Not removed when dropped: call
/// [`destroy`] (or [`flush`] the port).
#[derive(Debug)]
pub struct Flow {
    port_id: u16,
    ptr: NonNull<ffi::rte_flow>,
}

// SAFETY: the handle is an opaque pointer that rte_flow calls accept from
// any thread (the flow API is thread-safe per port unless the application
// declares otherwise); it is never dereferenced on the Rust side.
unsafe impl Send for Flow {}

impl Flow {
    /// The DPDK port it is installed on.
    pub fn port_id(&self) -> u16 {
        self.port_id
    }
}

/// Install `rule` on the device.
pub fn create(dev: &EthDev, rule: &FlowRule) -> Result<Flow, FlowError> {
    let c = CRule::new(rule);
    let mut err = ffi::rte_flow_error::default();
    // SAFETY: as in `validate`; the driver copies what it keeps.
    let p = unsafe {
        ffi::rte_flow_create(
            dev.port_id(),
            &c.attr,
            c.items.as_ptr(),
            c.actions.as_ptr(),
            &mut err,
        )
    };
    match NonNull::new(p) {
        Some(ptr) => Ok(Flow {
            port_id: dev.port_id(),
            ptr,
        }),
        None => Err(flow_error("rte_flow_create", 0, &err)),
    }
}

/// Remove an installed rule.
pub fn destroy(dev: &EthDev, flow: Flow) -> Result<(), FlowError> {
    if flow.port_id != dev.port_id() {
        return Err(FlowError {
            call: "rte_flow_destroy",
            errno: libc::EINVAL,
            kind: ffi::rte_flow_error_type_RTE_FLOW_ERROR_TYPE_HANDLE,
            message: format!(
                "rule of port {} destroyed through port {}",
                flow.port_id,
                dev.port_id()
            ),
        });
    }
    let mut err = ffi::rte_flow_error::default();
    // SAFETY: flow.ptr came from rte_flow_create on this port and is
    // consumed here (destroyed at most once).
    let ret = unsafe { ffi::rte_flow_destroy(flow.port_id, flow.ptr.as_ptr(), &mut err) };
    if ret == 0 {
        Ok(())
    } else {
        Err(flow_error("rte_flow_destroy", ret, &err))
    }
}

/// Packets and bytes a rule with a COUNT action has matched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCount {
    pub hits: Option<u64>,
    pub bytes: Option<u64>,
}

/// Read (and, with `reset`, zero) the COUNT action of an installed rule.
pub fn query_count(dev: &EthDev, flow: &Flow, reset: bool) -> Result<FlowCount, FlowError> {
    let count = ffi::rte_flow_action_count { id: 0 };
    let action = [
        ffi::rte_flow_action {
            type_: ffi::rte_flow_action_type_RTE_FLOW_ACTION_TYPE_COUNT,
            conf: &count as *const ffi::rte_flow_action_count as *const c_void,
        },
        ffi::rte_flow_action {
            type_: ffi::rte_flow_action_type_RTE_FLOW_ACTION_TYPE_END,
            conf: ptr::null(),
        },
    ];
    let mut data = ffi::rte_flow_query_count::default();
    data.set_reset(u32::from(reset));
    let mut err = ffi::rte_flow_error::default();
    // SAFETY: flow.ptr is a live rule of this port; action points to a
    // COUNT action whose conf (`count`) outlives the call; data is the
    // rte_flow_query_count the COUNT query writes.
    let ret = unsafe {
        ffi::rte_flow_query(
            dev.port_id(),
            flow.ptr.as_ptr(),
            action.as_ptr(),
            &mut data as *mut _ as *mut c_void,
            &mut err,
        )
    };
    if ret != 0 {
        return Err(flow_error("rte_flow_query", ret, &err));
    }
    Ok(FlowCount {
        hits: (data.hits_set() != 0).then_some(data.hits),
        bytes: (data.bytes_set() != 0).then_some(data.bytes),
    })
}

/// Remove every rule of the port (including ones created elsewhere).
pub fn flush(dev: &EthDev) -> Result<(), FlowError> {
    let mut err = ffi::rte_flow_error::default();
    // SAFETY: err is a valid out pointer; any port id is accepted.
    let ret = unsafe { ffi::rte_flow_flush(dev.port_id(), &mut err) };
    if ret == 0 {
        Ok(())
    } else {
        Err(flow_error("rte_flow_flush", ret, &err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read back a conf/spec of type T from a pointer the CRule owns.
    fn at<T: Copy>(p: *const c_void) -> T {
        assert!(!p.is_null());
        // SAFETY: the tests only read pointers CRule built for type T,
        // while the CRule is alive.
        unsafe { *(p as *const T) }
    }

    #[test]
    fn pattern_is_exact_and_end_terminated() {
        let rule = FlowRule {
            group: 0,
            priority: 1,
            pattern: vec![
                FlowItem::Eth,
                FlowItem::Ipv4 {
                    src: [10, 0, 0, 1],
                    dst: [10, 0, 0, 2],
                },
                FlowItem::Tcp {
                    src: 1234,
                    dst: 80,
                    flags_clear: 0x07,
                },
            ],
            actions: vec![FlowAction::Queue(3)],
        };
        let c = CRule::new(&rule);
        assert_eq!(c.attr().ingress(), 1);
        assert_eq!(c.attr().egress(), 0);
        assert_eq!(c.attr().priority, 1);
        let it = c.items();
        assert_eq!(it.len(), 4);
        assert_eq!(it[0].type_, ffi::rte_flow_item_type_RTE_FLOW_ITEM_TYPE_ETH);
        assert!(it[0].spec.is_null() && it[0].mask.is_null());
        assert_eq!(it[1].type_, ffi::rte_flow_item_type_RTE_FLOW_ITEM_TYPE_IPV4);
        let s: ffi::rte_flow_item_ipv4 = at(it[1].spec);
        let m: ffi::rte_flow_item_ipv4 = at(it[1].mask);
        assert_eq!(s.hdr.src_addr.to_ne_bytes(), [10, 0, 0, 1]);
        assert_eq!(s.hdr.dst_addr.to_ne_bytes(), [10, 0, 0, 2]);
        assert_eq!((m.hdr.src_addr, m.hdr.dst_addr), (u32::MAX, u32::MAX));
        assert_eq!(m.hdr.next_proto_id, 0);
        assert!(it[1].last.is_null());
        assert_eq!(it[2].type_, ffi::rte_flow_item_type_RTE_FLOW_ITEM_TYPE_TCP);
        let s: ffi::rte_flow_item_tcp = at(it[2].spec);
        let m: ffi::rte_flow_item_tcp = at(it[2].mask);
        // Network byte order in memory.
        assert_eq!(s.hdr.src_port.to_ne_bytes(), 1234u16.to_be_bytes());
        assert_eq!(s.hdr.dst_port.to_ne_bytes(), [0, 80]);
        assert_eq!(s.hdr.tcp_flags, 0);
        assert_eq!(m.hdr.tcp_flags, 0x07);
        assert_eq!((m.hdr.src_port, m.hdr.dst_port), (u16::MAX, u16::MAX));
        assert_eq!(it[3].type_, ffi::rte_flow_item_type_RTE_FLOW_ITEM_TYPE_END);
        let a = c.actions();
        assert_eq!(a.len(), 2);
        assert_eq!(
            a[0].type_,
            ffi::rte_flow_action_type_RTE_FLOW_ACTION_TYPE_QUEUE
        );
        assert_eq!(at::<ffi::rte_flow_action_queue>(a[0].conf).index, 3);
        assert_eq!(
            a[1].type_,
            ffi::rte_flow_action_type_RTE_FLOW_ACTION_TYPE_END
        );
    }

    #[test]
    fn ipv6_udp_items() {
        let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut dst = src;
        dst[15] = 2;
        let c = CRule::new(&FlowRule {
            pattern: vec![
                FlowItem::Eth,
                FlowItem::Ipv6 { src, dst },
                FlowItem::Udp { src: 53, dst: 4000 },
            ],
            ..Default::default()
        });
        let it = c.items();
        assert_eq!(it[1].type_, ffi::rte_flow_item_type_RTE_FLOW_ITEM_TYPE_IPV6);
        let s: ffi::rte_flow_item_ipv6 = at(it[1].spec);
        let m: ffi::rte_flow_item_ipv6 = at(it[1].mask);
        assert_eq!((s.hdr.src_addr, s.hdr.dst_addr), (src, dst));
        assert_eq!(m.hdr.src_addr, [0xff; 16]);
        assert_eq!(m.hdr.proto, 0);
        assert_eq!(it[2].type_, ffi::rte_flow_item_type_RTE_FLOW_ITEM_TYPE_UDP);
        let s: ffi::rte_flow_item_udp = at(it[2].spec);
        assert_eq!(s.hdr.src_port.to_ne_bytes(), [0, 53]);
        assert_eq!(s.hdr.dst_port.to_ne_bytes(), 4000u16.to_be_bytes());
        // No actions: just END.
        assert_eq!(c.actions().len(), 1);
        assert_eq!(c.items().len(), 4);
    }

    #[test]
    fn every_action_and_its_conf() {
        let v6 = [7u8; 16];
        let c = CRule::new(&FlowRule {
            pattern: vec![FlowItem::Eth],
            actions: vec![
                FlowAction::SetIpv4Src([192, 0, 2, 1]),
                FlowAction::SetIpv4Dst([192, 0, 2, 2]),
                FlowAction::SetIpv6Src(v6),
                FlowAction::SetIpv6Dst(v6),
                FlowAction::SetTpSrc(1000),
                FlowAction::SetTpDst(2000),
                FlowAction::PortId(5),
                FlowAction::RepresentedPort(6),
                FlowAction::Queue(1),
                FlowAction::Mark(0xabcd),
                FlowAction::Count,
                FlowAction::Drop,
                FlowAction::Passthru,
            ],
            ..Default::default()
        });
        let a = c.actions();
        assert_eq!(a.len(), 14);
        use ffi::*;
        let types: Vec<u32> = a.iter().map(|x| x.type_).collect();
        assert_eq!(
            types,
            [
                rte_flow_action_type_RTE_FLOW_ACTION_TYPE_SET_IPV4_SRC,
                rte_flow_action_type_RTE_FLOW_ACTION_TYPE_SET_IPV4_DST,
                rte_flow_action_type_RTE_FLOW_ACTION_TYPE_SET_IPV6_SRC,
                rte_flow_action_type_RTE_FLOW_ACTION_TYPE_SET_IPV6_DST,
                rte_flow_action_type_RTE_FLOW_ACTION_TYPE_SET_TP_SRC,
                rte_flow_action_type_RTE_FLOW_ACTION_TYPE_SET_TP_DST,
                rte_flow_action_type_RTE_FLOW_ACTION_TYPE_PORT_ID,
                rte_flow_action_type_RTE_FLOW_ACTION_TYPE_REPRESENTED_PORT,
                rte_flow_action_type_RTE_FLOW_ACTION_TYPE_QUEUE,
                rte_flow_action_type_RTE_FLOW_ACTION_TYPE_MARK,
                rte_flow_action_type_RTE_FLOW_ACTION_TYPE_COUNT,
                rte_flow_action_type_RTE_FLOW_ACTION_TYPE_DROP,
                rte_flow_action_type_RTE_FLOW_ACTION_TYPE_PASSTHRU,
                rte_flow_action_type_RTE_FLOW_ACTION_TYPE_END,
            ]
        );
        assert_eq!(
            at::<rte_flow_action_set_ipv4>(a[0].conf)
                .ipv4_addr
                .to_ne_bytes(),
            [192, 0, 2, 1]
        );
        assert_eq!(
            at::<rte_flow_action_set_ipv4>(a[1].conf)
                .ipv4_addr
                .to_ne_bytes(),
            [192, 0, 2, 2]
        );
        assert_eq!(at::<rte_flow_action_set_ipv6>(a[2].conf).ipv6_addr, v6);
        assert_eq!(at::<rte_flow_action_set_ipv6>(a[3].conf).ipv6_addr, v6);
        assert_eq!(
            at::<rte_flow_action_set_tp>(a[4].conf).port.to_ne_bytes(),
            1000u16.to_be_bytes()
        );
        assert_eq!(
            at::<rte_flow_action_set_tp>(a[5].conf).port.to_ne_bytes(),
            2000u16.to_be_bytes()
        );
        let pid: rte_flow_action_port_id = at(a[6].conf);
        assert_eq!((pid.id, pid.original()), (5, 0));
        assert_eq!(at::<rte_flow_action_ethdev>(a[7].conf).port_id, 6);
        assert_eq!(at::<rte_flow_action_queue>(a[8].conf).index, 1);
        assert_eq!(at::<rte_flow_action_mark>(a[9].conf).id, 0xabcd);
        assert_eq!(at::<rte_flow_action_count>(a[10].conf).id, 0);
        assert!(a[11].conf.is_null() && a[12].conf.is_null() && a[13].conf.is_null());
    }

    #[test]
    fn error_kinds_are_named() {
        let e = FlowError {
            call: "rte_flow_validate",
            errno: libc::ENOTSUP,
            kind: ffi::rte_flow_error_type_RTE_FLOW_ERROR_TYPE_ACTION,
            message: "action not supported".into(),
        };
        assert_eq!(e.kind_name(), "action");
        assert!(e.to_string().contains("refused: action"));
        assert_eq!(error_kind_name(9999), "other");
    }
}
