//! Interop with DPDK's own `dpdk-testpmd` over memif, no hugepages:
//! `cargo test -p datapath --features dpdk --test testpmd_memif`.
//!
//! ferrovsd owns a `net_memif` server port (1) and a null port (2) with the
//! flow `in_port=1,actions=output:2`; `dpdk-testpmd`, a separate DPDK
//! process, connects as memif client and sends with `--forward-mode=txonly`.
//! The test waits until ferrovsd has received and forwarded traffic from it.
//!
//! The second test puts testpmd at the other end: its `io` forwarding on the
//! memif link echoes back whatever ferrovsd sends. ferrovsd sends a fixed
//! number of generated frames (a generator port added once the memif link
//! is up, `in_port=3,actions=output:1`) and forwards the echoes to the null
//! port (`in_port=1,actions=output:2`); testpmd's own forward statistics
//! show it received frames, no more than ferrovsd sent (frames still in
//! the memif ring when testpmd stops are not counted), and ferrovsd must
//! have received exactly what testpmd sent back.
//!
//! Needs `dpdk-testpmd` (Debian package `dpdk-dev`). Without it the test
//! skips, unless `FERROVS_REQUIRE_TESTPMD=1` (set by `scripts/test.sh`,
//! which installs it).
#![cfg(feature = "dpdk")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FERROVSD: &str = env!("CARGO_BIN_EXE_ferrovsd");
const CTL: &str = env!("CARGO_BIN_EXE_ferrovs-ctl");

fn testpmd() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("dpdk-testpmd"))
        .find(|p| p.exists())
}

/// The tests pin testpmd to the same CPU and poll busily: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Kills the child on drop (a failed assertion must not leave it running).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Proc {
    /// SIGTERM, then the exit code within 30 s.
    fn terminate(&mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.0.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// (rx packets of port 1, tx packets of port 2) from `ferrovs-ctl show`.
fn counters(sock: &Path) -> (u64, u64) {
    (
        show_field(sock, "1(m0)", "rx pkts="),
        show_field(sock, "2(sink)", "tx pkts="),
    )
}

/// One counter of one port (`"N(name)"`) from `ferrovs-ctl show`.
fn show_field(sock: &Path, port: &str, key: &str) -> u64 {
    let o = Command::new(CTL)
        .arg("--socket")
        .arg(sock)
        .arg("show")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let field = |port: &str, key: &str| -> u64 {
        let mut lines = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with(port));
        lines
            .find_map(|l| {
                let rest = &l[l.find(key)? + key.len()..];
                let end = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                rest[..end].parse().ok()
            })
            .unwrap_or(0)
    };
    field(port, key)
}

/// Starts ferrovsd with a `net_memif` server port `m0` (1) and a null port
/// `sink` (2) under `flows`, in a fresh directory named after `tag`; waits
/// for its control and memif sockets. Returns (daemon, dir, control socket,
/// memif socket).
fn start_ferrovsd(tag: &str, flows: &str) -> (Proc, PathBuf, PathBuf, PathBuf) {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("fvs-{tag}-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("s.sock");
    let memif = dir.join("memif.sock");
    std::fs::write(dir.join("f.flows"), flows).unwrap();
    let cpu = dpdk_bindings::eal::first_allowed_cpu();
    let cfg = format!(
        r#"{{ "control_socket": "{}",
             "dpdk": {{ "eal_args": ["-l", "{cpu}", "--no-huge", "-m", "256", "--no-pci",
                                     "--no-telemetry", "--no-shconf",
                                     "--file-prefix", "fvs-{tag}-d-{pid}",
                                     "--vdev", "net_memif0,role=server,socket={},socket-abstract=no"] }},
             "ports": [ {{ "name": "m0", "number": 1, "type": "dpdk",
                           "options": {{ "device": "net_memif0" }} }},
                        {{ "name": "sink", "number": 2, "type": "null" }} ],
             "flows": "f.flows" }}"#,
        sock.display(),
        memif.display()
    );
    std::fs::write(dir.join("c.json"), &cfg).unwrap();
    let mut daemon = Proc(
        Command::new(FERROVSD)
            .arg("--config")
            .arg(dir.join("c.json"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    // A file-system memif socket (as the README recommends for containers).
    while !(sock.exists() && memif.exists()) {
        assert!(Instant::now() < deadline, "ferrovsd did not come up");
        assert!(daemon.0.try_wait().unwrap().is_none(), "ferrovsd exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    (daemon, dir, sock, memif)
}

/// Starts dpdk-testpmd as memif client of `memif` with `fwd_args` (after
/// `--`); stdin piped (a line stops it), stdout to `stdout`.
fn spawn_testpmd(
    testpmd: &Path,
    tag: &str,
    memif: &Path,
    fwd_args: &[&str],
    stdout: Stdio,
) -> Proc {
    let cpu = dpdk_bindings::eal::first_allowed_cpu();
    // testpmd needs a main and a forwarding lcore: both on one CPU here.
    Proc(
        Command::new(testpmd)
            .args(["--lcores", &format!("0@{cpu},1@{cpu}")])
            .args(["--no-huge", "-m", "256", "--no-pci", "--no-telemetry"])
            .args([
                "--no-shconf",
                "--file-prefix",
                &format!("fvs-{tag}-t-{}", std::process::id()),
            ])
            .arg("--vdev")
            .arg(format!(
                "net_memif0,role=client,socket={},socket-abstract=no",
                memif.display()
            ))
            .arg("--")
            .args(fwd_args)
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Sends testpmd a line (it stops forwarding and exits) and returns its
/// exit code.
fn stop_testpmd(tp: &mut Proc) -> Option<i32> {
    drop(tp.0.stdin.take().unwrap().write_all(b"\n"));
    wait_exit(tp)
}

/// Waits up to 30 s for the process to end; its exit code (None if a
/// signal ended it).
fn wait_exit(tp: &mut Proc) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = tp.0.try_wait().unwrap() {
            return s.code();
        }
        assert!(Instant::now() < deadline, "testpmd did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn testpmd_sends_to_ferrovsd_over_memif() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(testpmd) = testpmd() else {
        assert!(
            std::env::var("FERROVS_REQUIRE_TESTPMD").as_deref() != Ok("1"),
            "dpdk-testpmd not found (package dpdk-dev)"
        );
        eprintln!("skipping: dpdk-testpmd not found (package dpdk-dev)");
        return;
    };
    let (mut daemon, dir, sock, memif) = start_ferrovsd("memif", "in_port=1,actions=output:2\n");
    assert_eq!(counters(&sock), (0, 0));

    let mut tp = spawn_testpmd(
        &testpmd,
        "memif",
        &memif,
        &["--forward-mode=txonly", "--total-num-mbufs=4096"],
        Stdio::null(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (rx, tx) = counters(&sock);
        if rx >= 10_000 && tx >= 10_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no traffic from testpmd: rx {rx} tx {tx}"
        );
        assert!(tp.0.try_wait().unwrap().is_none(), "testpmd exited");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Enter: testpmd stops forwarding and exits.
    let code = stop_testpmd(&mut tp);
    assert_eq!(code, Some(0), "testpmd stops cleanly");
    // Once testpmd is gone, everything received was forwarded to the sink.
    std::thread::sleep(Duration::from_millis(500));
    let (rx, tx) = counters(&sock);
    assert_eq!(rx, tx, "every packet from testpmd forwarded");
    assert_eq!(daemon.terminate(), Some(0), "ferrovsd stops cleanly");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The numbers after `key` in testpmd's "Forward statistics for port 0"
/// block (printed when forwarding stops).
fn testpmd_forward_stat(out: &str, key: &str) -> Option<u64> {
    let block = &out[out.find("Forward statistics for port 0")?..];
    let rest = &block[block.find(key)? + key.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn testpmd_echoes_what_ferrovsd_sends_over_memif() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(testpmd) = testpmd() else {
        assert!(
            std::env::var("FERROVS_REQUIRE_TESTPMD").as_deref() != Ok("1"),
            "dpdk-testpmd not found (package dpdk-dev)"
        );
        eprintln!("skipping: dpdk-testpmd not found (package dpdk-dev)");
        return;
    };
    const SENT: u64 = 20_000;
    let (mut daemon, dir, sock, memif) = start_ferrovsd(
        "memif-io",
        "in_port=3,actions=output:1\nin_port=1,actions=output:2\n",
    );
    let out_path = dir.join("testpmd.out");
    let mut tp = spawn_testpmd(
        &testpmd,
        "memif-io",
        &memif,
        &[
            "--forward-mode=io",
            "--port-topology=loop",
            "--total-num-mbufs=8192",
        ],
        std::fs::File::create(&out_path).unwrap().into(),
    );
    // The memif link comes up once testpmd has connected.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = Command::new(CTL)
            .arg("--socket")
            .arg(&sock)
            .args(["--json", "show"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        let up = v["ports"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["name"] == "m0" && p["link"].as_str() == Some("up"))
        });
        if up {
            break;
        }
        assert!(Instant::now() < deadline, "memif link never came up: {v}");
        assert!(tp.0.try_wait().unwrap().is_none(), "testpmd exited");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The link is up once the memif handshake is done; testpmd starts
    // forwarding a moment later.
    std::thread::sleep(Duration::from_secs(1));
    let add = Command::new(CTL)
        .arg("--socket")
        .arg(&sock)
        .arg("add-port")
        .arg(format!(
            r#"{{"name": "gen", "number": 3, "type": "generator", "options": {{"limit": {SENT}, "flows": 100}}}}"#
        ))
        .output()
        .unwrap();
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    // Every generated frame leaves through the memif port or is counted as
    // dropped there (its ring was full).
    let deadline = Instant::now() + Duration::from_secs(60);
    let (sent, dropped) = loop {
        let sent = show_field(&sock, "1(m0)", "tx pkts=");
        let dropped = show_field(&sock, "1(m0)", "drop=");
        if sent + dropped >= SENT {
            break (sent, dropped);
        }
        assert!(
            Instant::now() < deadline,
            "generator frames not all out: sent {sent} dropped {dropped}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(sent + dropped, SENT);
    // The generator outruns the link, so many frames meet a full ring
    // (counted drops, as they should be); some must get through.
    assert!(sent >= 1000, "frames reach testpmd: sent {sent}");
    // Let the echoes drain (ferrovsd's receive count unchanged for 1.2 s),
    // then stop testpmd (Enter) for its statistics.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut stable) = (u64::MAX, 0);
    while stable < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        let rx = show_field(&sock, "1(m0)", "rx pkts=");
        stable = if rx == last { stable + 1 } else { 0 };
        last = rx;
    }
    let code = stop_testpmd(&mut tp);
    assert_eq!(code, Some(0), "testpmd stops cleanly");
    let out = std::fs::read_to_string(&out_path).unwrap();
    let tp_rx = testpmd_forward_stat(&out, "RX-packets:").expect("testpmd RX-packets");
    let tp_tx = testpmd_forward_stat(&out, "TX-packets:").expect("testpmd TX-packets");
    // Frames still in the memif ring when testpmd stops are not counted by
    // it, so testpmd's count is bounded by what ferrovsd sent, not equal.
    assert!(
        tp_rx > 0 && tp_rx <= sent,
        "testpmd received {tp_rx} of the {sent} frames ferrovsd sent\n{out}"
    );
    assert!(tp_tx > 0 && tp_tx <= tp_rx, "testpmd echoed: {tp_tx}");
    std::thread::sleep(Duration::from_millis(300));
    let (rx, to_sink) = counters(&sock);
    assert_eq!(rx, tp_tx, "ferrovsd received every echo testpmd sent");
    assert_eq!(to_sink, rx, "every echo forwarded to the sink");
    assert_eq!(daemon.terminate(), Some(0), "ferrovsd stops cleanly");
    let _ = std::fs::remove_dir_all(&dir);
}
