//! ferrovs `ofproto`: the OpenFlow-like pipeline.
//!
//! * [`fields`]: match fields and their storage in a [`fields::FlowKey`].
//! * [`mod@matches`]: value/mask matches and OVS prerequisites.
//! * [`action`]: actions, each with parse, format and check.
//! * [`classifier`]: tuple-space search with consulted-field masks, published copy-on-write.
//! * [`table`]: flow tables and flow-mods, timeouts, counters.
//! * [`xlate`]: translation of packet metadata into a datapath action program.
//! * [`pipeline`]: the bridge (ports, MAC learning, controller queue) and `trace`.
//! * [`text`]: the ovs-ofctl flow syntax.
#![forbid(unsafe_code)]

pub mod action;
pub mod classifier;
pub mod fields;
pub mod matches;
pub mod pipeline;
pub mod table;
pub mod text;
pub mod xlate;

pub use action::{Action, CtAction};
pub use classifier::Classifier;
pub use fields::{Field, FlowKey, FlowMask, PortNo, TableId};
pub use matches::Match;
pub use pipeline::Pipeline;
pub use table::{FlowSpec, FlowTables, Rule};
pub use xlate::{DpAction, Xlate};
