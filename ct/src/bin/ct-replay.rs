//! ct-replay: run every packet of a capture through conntrack and print one
//! line per packet with the `ct_state` it got.
//!
//! ```text
//! ct-replay [--zone N] [--no-commit] [--json] FILE.pcap
//! 1: new|trk
//! 2: est|rpl|trk
//! ```
//! FLAGS are the set state names joined by `|` in bit order, or `0` (also
//! for frames that are not IPv4/IPv6, which never reach conntrack). IP
//! fragments are reassembled first, as the datapath does (`--no-defrag`
//! turns that off): a fragment held until its datagram is complete prints
//! `held`, and the fragment that completes it prints the datagram's state. The
//! capture's timestamps drive the tracker's clock. Reads classic pcap
//! (microsecond and nanosecond) and pcapng, with Ethernet (802.1Q/QinQ tags
//! skipped) or raw-IP link types. This is how ferrovs is compared with other
//! conntrack implementations on the same capture.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::process::ExitCode;

use clap::Parser;
use ct::frag::{FragConfig, Outcome, Reassembler};
use ct::{CtPacket, CtParams, CtResult, CtState, Family, PktFlags, Tracker, Zone};
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;

#[derive(Parser)]
#[command(about = "Replay a capture through ferrovs conntrack, one ct_state line per packet")]
struct Args {
    /// Conntrack zone for every packet.
    #[arg(long, default_value_t = 0)]
    zone: u16,
    /// Do not commit (only report what each packet would be).
    #[arg(long)]
    no_commit: bool,
    /// One JSON object per line instead of `N: FLAGS`.
    #[arg(long)]
    json: bool,
    /// TCP window checks off.
    #[arg(long)]
    liberal: bool,
    /// Do not reassemble IP fragments (each fragment is then `+inv`).
    #[arg(long)]
    no_defrag: bool,
    /// Capture file (pcap or pcapng).
    file: String,
}

/// Strip the link layer: returns the L3 bytes and family, if IP.
fn l3_of(link: DataLink, frame: &[u8]) -> Option<(&[u8], Family)> {
    let (mut ethertype, mut rest) = match link {
        DataLink::ETHERNET => {
            if frame.len() < 14 {
                return None;
            }
            (u16::from_be_bytes([frame[12], frame[13]]), &frame[14..])
        }
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => {
            let v = frame.first()? >> 4;
            return match v {
                4 => Some((frame, Family::Ipv4)),
                6 => Some((frame, Family::Ipv6)),
                _ => None,
            };
        }
        _ => return None,
    };
    while matches!(ethertype, 0x8100 | 0x88a8) {
        if rest.len() < 4 {
            return None;
        }
        ethertype = u16::from_be_bytes([rest[2], rest[3]]);
        rest = &rest[4..];
    }
    match ethertype {
        0x0800 => Some((rest, Family::Ipv4)),
        0x86dd => Some((rest, Family::Ipv6)),
        _ => None,
    }
}

/// Frames of a capture: (link type, timestamp ns, bytes).
fn read_capture(path: &str) -> Result<Vec<(DataLink, u64, Vec<u8>)>, String> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|f| BufReader::new(f).read_to_end(&mut data))
        .map_err(|e| format!("{path}: {e}"))?;
    let mut frames = Vec::new();
    let magic = data
        .get(..4)
        .ok_or_else(|| format!("{path}: too short for a capture"))?;
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut r = PcapNgReader::new(&data[..]).map_err(|e| format!("{path}: {e}"))?;
        let mut links = Vec::new();
        while let Some(block) = r.next_block() {
            match block.map_err(|e| format!("{path}: {e}"))? {
                Block::InterfaceDescription(idb) => links.push(idb.linktype),
                Block::EnhancedPacket(p) => {
                    let link = *links
                        .get(p.interface_id as usize)
                        .unwrap_or(&DataLink::ETHERNET);
                    frames.push((link, p.timestamp.as_nanos() as u64, p.data.into_owned()));
                }
                Block::SimplePacket(p) => frames.push((
                    *links.first().unwrap_or(&DataLink::ETHERNET),
                    0,
                    p.data.into_owned(),
                )),
                _ => {}
            }
        }
    } else {
        let mut r = PcapReader::new(&data[..]).map_err(|e| format!("{path}: {e}"))?;
        let link = r.header().datalink;
        while let Some(p) = r.next_packet() {
            let p = p.map_err(|e| format!("{path}: {e}"))?;
            frames.push((link, p.timestamp.as_nanos() as u64, p.data.into_owned()));
        }
    }
    Ok(frames)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let frames = match read_capture(&args.file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ct-replay: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tracker = Tracker::default();
    tracker.set_liberal(args.liberal);
    let params = CtParams {
        zone: Zone(args.zone),
        commit: !args.no_commit,
        ..Default::default()
    };
    let mut defrag = Reassembler::new(FragConfig::default());
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (i, (link, ts, frame)) in frames.iter().enumerate() {
        let n = i + 1;
        let mut held = false;
        let state = match l3_of(*link, frame) {
            Some((l3, family)) => {
                let pkt = CtPacket {
                    l3,
                    family,
                    flags: PktFlags::empty(),
                };
                let outcome = if args.no_defrag {
                    Outcome::Pass
                } else {
                    defrag.push(params.zone, &pkt, *ts)
                };
                let mut res = [CtResult::default()];
                match outcome {
                    // Refused fragments reach conntrack as they are (+inv),
                    // as in the datapath.
                    Outcome::Pass | Outcome::Rejected(_) => {
                        tracker.execute(&[pkt], &params, *ts, &mut res);
                        res[0].state
                    }
                    Outcome::Held => {
                        held = true;
                        CtState::empty()
                    }
                    Outcome::Complete(r) => {
                        let whole = CtPacket {
                            l3: &r.datagram,
                            ..pkt
                        };
                        tracker.execute(&[whole], &params, *ts, &mut res);
                        res[0].state
                    }
                }
            }
            None => CtState::empty(),
        };
        let names = if held {
            "held".to_string()
        } else {
            state.pipe_names()
        };
        let line = if args.json {
            serde_json::json!({ "n": n, "state": names, "bits": state.bits() }).to_string()
        } else {
            format!("{n}: {names}")
        };
        if writeln!(out, "{line}").is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
