//! Per-protocol trackers.
pub mod tcp;
