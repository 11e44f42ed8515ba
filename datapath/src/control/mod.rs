//! The control plane: `ferrovs-ctl` talks to `ferrovsd` over a Unix
//! socket ([`protocol`], [`server`]); [`commands`] dispatches each request.
//!
//! | file | what |
//! | --- | --- |
//! | `protocol.rs` | one JSON object per line each way; the client call |
//! | `server.rs` | the socket (0700 dir, 0600 socket, stale-socket handling) |
//! | `commands.rs` | dispatch, flow and port commands, `version`, `help`, `exit` |
//! | `ct_cmds.rs` | conntrack dump/flush/stats, zone limits, timeout policies |
//! | `events_cmd.rs` | `events`: a stream of conntrack lifecycle events (`conntrack -E`) |
//! | `ct_filter.rs` | `zone=5 ct_nw_src=...` filter arguments |
//! | `frag_cmds.rs` | fragment reassembly status and settings (`ipf-get-status`, `ipf-set`) |
//! | `limits.rs` | default and per-zone connection limits |
//! | `pmd_cmds.rs` | PMD statistics, receive queues, megaflow dump |
//! | `pressure_cmds.rs` | conntrack table-pressure settings and state (`ct-get-pressure`, `ct-set-pressure`) |
//! | `show.rs` | ports and their counters |
//! | `trace.rs` | `ofproto/trace` against the live tables and conntrack |

pub mod commands;
pub mod ct_cmds;
pub mod ct_filter;
pub mod events_cmd;
pub mod frag_cmds;
pub mod limits;
pub mod pmd_cmds;
pub mod pressure_cmds;
pub mod protocol;
pub mod server;
pub mod show;
pub mod trace;

pub use commands::{dispatch, CmdOutput};
pub use protocol::{Reply, Request};
pub use server::ControlServer;
