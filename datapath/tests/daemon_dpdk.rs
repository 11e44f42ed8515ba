//! ferrovsd built with DPDK, started with DPDK configurations that cannot
//! work: a port naming a device the EAL does not know, a device that refuses
//! its configuration, a vdev that fails to probe, and EAL arguments DPDK
//! rejects. Each must exit 1 with one message naming the problem (no panic,
//! no abort, no socket left behind): `cargo test -p datapath --features dpdk
//! --test daemon_dpdk`.
#![cfg(feature = "dpdk")]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const FERROVSD: &str = env!("CARGO_BIN_EXE_ferrovsd");

fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "fvs-dpdkd-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs ferrovsd with `eal_args` (JSON array items, after the common no-NIC
/// arguments) and `ports` (a JSON array); returns its stderr after checking
/// that it exited 1 and left no socket.
fn run_failing(eal_args: &str, ports: &str) -> String {
    let dir = temp_dir();
    let sock = dir.join("s.sock");
    let prefix = dir.file_name().unwrap().to_str().unwrap().to_string();
    let cfg = format!(
        r#"{{ "control_socket": "{}",
             "dpdk": {{ "eal_args": ["--no-huge", "-m", "256", "--no-pci", "--no-telemetry",
                                     "--no-shconf", "--file-prefix", "{prefix}"{eal_args}] }},
             "ports": {ports} }}"#,
        sock.display()
    );
    std::fs::write(dir.join("c.json"), &cfg).unwrap();
    let mut child = Command::new(FERROVSD)
        .arg("--config")
        .arg(dir.join("c.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A daemon that starts anyway would run forever: give it 60 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = status.unwrap_or_else(|| panic!("ferrovsd did not exit: {cfg}\n{stderr}"));
    assert_eq!(status.code(), Some(1), "{cfg}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!sock.exists(), "a failed start leaves no socket behind");
    let _ = std::fs::remove_dir_all(&dir);
    stderr
}

fn dpdk_port(device: &str, rxqs: usize) -> String {
    format!(
        r#"[ {{ "name": "dp0", "number": 1, "type": "dpdk",
               "options": {{ "device": "{device}", "rxqs": {rxqs} }} }} ]"#
    )
}

/// The last line of stderr: ferrovsd's own message (DPDK logs come before).
fn last_line(stderr: &str) -> &str {
    stderr.trim_end().lines().last().unwrap_or("")
}

#[test]
fn dpdk_port_naming_a_missing_device() {
    let e = run_failing(r#", "--vdev", "net_ring0""#, &dpdk_port("net_ring7", 1));
    let msg = last_line(&e);
    assert!(msg.starts_with("ferrovsd: "), "{e}");
    assert!(
        msg.contains("dp0") && msg.contains("net_ring7") && msg.contains("no DPDK port named"),
        "{e}"
    );
}

#[test]
fn dpdk_port_the_device_refuses_to_configure() {
    // A net_ring vdev has at most 16 rx queues: 64 fail at configure time.
    let e = run_failing(r#", "--vdev", "net_ring0""#, &dpdk_port("net_ring0", 64));
    let msg = last_line(&e);
    assert!(msg.starts_with("ferrovsd: "), "{e}");
    assert!(msg.contains("dp0") && msg.contains("net_ring0"), "{e}");
}

#[test]
fn bad_eal_args() {
    let e = run_failing(r#", "--no-such-eal-option""#, "[]");
    let msg = last_line(&e);
    assert!(msg.starts_with("ferrovsd: "), "{e}");
    assert!(msg.contains("EAL initialisation failed"), "{e}");
}

#[test]
fn vdev_that_fails_to_probe() {
    // net_pcap opens its rx capture when probed, at EAL init.
    let e = run_failing(
        r#", "--vdev", "net_pcap0,rx_pcap=/nonexistent/ferrovs/in.pcap""#,
        &dpdk_port("net_pcap0", 1),
    );
    let msg = last_line(&e);
    assert!(msg.starts_with("ferrovsd: "), "{e}");
    assert!(
        msg.contains("EAL initialisation failed") || msg.contains("net_pcap0"),
        "{e}"
    );
}
