//! Flow keys: what the caches and the classifier match on.
//!
//! - [`key`]: [`FlowKey`], a fixed array of 64-bit words with named fields,
//!   compared, masked and hashed a word at a time.
//! - [`extract`](mod@extract): [`extract()`] fills a key from a frame and
//!   its metadata with one length check per layer, records the L3/L4
//!   offsets in the metadata, and flags (never panics on) truncated or
//!   malformed headers with a [`Malformed`] reason counted in
//!   [`ExtractStats`].
//! - [`hash`]: [`hash::flow_hash`], the exact-match-cache hash of a key.
//! - [`format`](mod@format): a masked key as text (`dpctl/dump-flows`).

pub mod extract;
pub mod format;
pub mod hash;
pub mod key;

pub use extract::{extract, extract_batch, ExtractStats, Malformed};
pub use format::format_masked;
pub use hash::flow_hash;
pub use key::{FlowKey, FLOW_WORDS};
