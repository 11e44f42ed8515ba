//! Fuzz flow-key extraction: any bytes, any metadata, must not panic, and
//! the recorded offsets must lie inside the frame.
//!
//! Run (nightly): `cd datapath/fuzz && cargo fuzz run flow_extract`
#![no_main]

use datapath::flow::extract::{extract, ExtractStats};
use datapath::packet::{PacketMeta, PortNo};
use datapath::FlowKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (head, frame) = data.split_at(data.len().min(4));
    let mut recirc = [0u8; 4];
    recirc[..head.len()].copy_from_slice(head);
    let mut meta = PacketMeta::new(PortNo(1));
    meta.recirc_id = u32::from_le_bytes(recirc);
    let mut key = FlowKey::ZERO;
    let r = extract(frame, &mut meta, &mut key);
    let mut stats = ExtractStats::default();
    stats.record(&key, r);
    if let Some(o) = meta.l3_offset() {
        assert!(o <= frame.len());
    }
    if let Some(o) = meta.l4_offset() {
        assert!(o <= frame.len());
    }
    assert_eq!(r.is_err(), key.malformed_code() != 0);
    assert_eq!(key.recirc_id(), meta.recirc_id);
});
