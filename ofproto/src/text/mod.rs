//! The ovs-ofctl flow text syntax.
pub mod format;
pub mod parse;
