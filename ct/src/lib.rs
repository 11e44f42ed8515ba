//! ferrovs connection tracker.
#![forbid(unsafe_code)]

pub mod build;
pub mod key;
pub mod packet;
pub mod proto;
pub mod state;

pub use key::{ConnKey, Dir, Family, Zone};
pub use packet::{CtPacket, PacketInfo, PktFlags};
pub use state::CtState;
