//! Datapath actions that change a packet's headers.
//!
//! - [`rewrite`]: [`set_field()`], ofproto's `set_field` on the packet bytes
//!   with incremental checksum updates, keeping the datapath [`FlowKey`]
//!   equal to what extraction would give for the rewritten frame.
//! - [`vlan`]: [`push_vlan()`] and [`pop_vlan()`] of the outer 802.1Q/802.1ad
//!   tag.
//! - [`nat`]: conntrack's NAT translation written into the packet and key.
//!
//! Every function takes the packet and its key; an error
//! ([`RewriteError`]) leaves both unchanged. Nothing here allocates.
//!
//! [`FlowKey`]: crate::flow::FlowKey

pub mod nat;
pub mod rewrite;
pub mod vlan;

pub use rewrite::{set_field, RewriteError};
pub use vlan::{pop_vlan, push_vlan};
