//! ferrovsd with `dpdk.hw_offload` (built with DPDK): the switch is
//! refused without `pmd.flow_offload`; with it the daemon probes its DPDK
//! ports at start and `ferrovs-ctl hw-offload-show` reports their modes
//! and the counters (text and JSON); without the switch the command says
//! it is disabled. Vdevs only (`net_ring`, `net_null`), no root:
//! `cargo test -p datapath --features dpdk --test daemon_hw_offload`.
#![cfg(feature = "dpdk")]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FERROVSD: &str = env!("CARGO_BIN_EXE_ferrovsd");
const CTL: &str = env!("CARGO_BIN_EXE_ferrovs-ctl");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn config(dir: &Path, tag: &str, hw_offload: bool, flow_offload: bool) -> PathBuf {
    let pid = std::process::id();
    let cpu = dpdk_bindings::eal::first_allowed_cpu();
    let cfg = format!(
        r#"{{ "control_socket": "{}",
             "pmd": {{ "flow_offload": {flow_offload} }},
             "dpdk": {{ "eal_args": ["-l", "{cpu}", "--no-huge", "-m", "256", "--no-pci",
                                     "--no-telemetry", "--no-shconf",
                                     "--file-prefix", "fvs-{tag}-{pid}",
                                     "--vdev", "net_ring0", "--vdev", "net_null0"],
                        "hw_offload": {hw_offload} }},
             "ports": [ {{ "name": "r0", "number": 1, "type": "dpdk",
                           "options": {{ "device": "net_ring0" }} }},
                        {{ "name": "n0", "number": 2, "type": "dpdk",
                           "options": {{ "device": "net_null0" }} }} ] }}"#,
        dir.join("s.sock").display()
    );
    let path = dir.join("c.json");
    std::fs::write(&path, cfg).unwrap();
    path
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fvs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start(dir: &Path, cfg: &Path) -> Proc {
    let mut d = Proc(
        Command::new(FERROVSD)
            .arg("--config")
            .arg(cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sock = dir.join("s.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "ferrovsd did not come up");
        assert!(d.0.try_wait().unwrap().is_none(), "ferrovsd exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    d
}

fn ctl(dir: &Path, args: &[&str]) -> String {
    let o = Command::new(CTL)
        .arg("--socket")
        .arg(dir.join("s.sock"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn stop(dir: &Path, mut d: Proc) {
    ctl(dir, &["exit"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = d.0.try_wait().unwrap() {
            assert_eq!(s.code(), Some(0));
            return;
        }
        assert!(Instant::now() < deadline, "ferrovsd did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn hw_offload_needs_flow_offload() {
    let dir = temp_dir("hwoff-refused");
    let cfg = config(&dir, "hwoff-refused", true, false);
    let mut child = Command::new(FERROVSD)
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("dpdk.hw_offload") && err.contains("flow_offload"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hw_offload_show_reports_probed_ports() {
    let dir = temp_dir("hwoff-show");
    let d = start(&dir, &config(&dir, "hwoff-show", true, true));
    let text = ctl(&dir, &["hw-offload-show"]);
    assert!(
        text.starts_with("hw offload: installed=0 removed=0 active=0"),
        "{text}"
    );
    assert!(
        text.contains("port 1 (net_ring0): mode none rules=0"),
        "{text}"
    );
    assert!(
        text.contains("port 2 (net_null0): mode none rules=0"),
        "{text}"
    );
    assert!(text.contains("Function not implemented"), "{text}");
    let j: serde_json::Value =
        serde_json::from_str(&ctl(&dir, &["--json", "hw-offload-show"])).unwrap();
    assert_eq!(j["enabled"], true, "{j}");
    assert_eq!(j["ports"].as_array().map(Vec::len), Some(2), "{j}");
    assert_eq!(j["ports"][0]["mode"], "none");
    assert_eq!(j["create_calls"], 0);
    stop(&dir, d);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hw_offload_show_when_disabled() {
    let dir = temp_dir("hwoff-off");
    let d = start(&dir, &config(&dir, "hwoff-off", false, true));
    assert!(ctl(&dir, &["hw-offload-show"]).contains("disabled"));
    let j: serde_json::Value =
        serde_json::from_str(&ctl(&dir, &["--json", "hw-offload-show"])).unwrap();
    assert_eq!(j["enabled"], false);
    stop(&dir, d);
    let _ = std::fs::remove_dir_all(&dir);
}
