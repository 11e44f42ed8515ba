//! Fuzz the flow text parser: it must never panic, and whatever it accepts
//! must print to text that parses back to the same flow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ofproto::text::parse::{parse_flow, parse_match, FlowCmd};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = parse_match(s);
    let _ = parse_flow(s, FlowCmd::Delete);
    if let Ok(spec) = parse_flow(s, FlowCmd::Add) {
        let printed = spec.to_text();
        let back = parse_flow(&printed, FlowCmd::Add).expect("printed flow parses");
        assert_eq!(back, spec, "round trip via {printed}");
    }
});
