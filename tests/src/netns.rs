//! Real-traffic harness: network namespaces joined through a real
//! `ferrovsd` with AF_PACKET ports (needs root).
//!
//! A [`Lab`] is one test's private world:
//!
//! ```text
//!   namespace "a" (eth0 10.1.0.1) ==veth== [port 1 |            | port 2] ==veth== namespace "b" (eth0 10.1.0.2)
//!                                          [        ferrovsd    ]
//!   namespace "c" ...             ==veth== [port 3 |            | ...   ]
//! ```
//!
//! * [`Lab::new`] checks for root and the tools (skip, or fail when
//!   `FERROVS_REQUIRE_ROOT=1`, which scripts/test.sh sets as root) and
//!   picks names unique to this process and lab (`fs<pid><lab>...`), so the
//!   tests of one binary can run in parallel threads.
//! * [`Lab::host`] adds a namespace with one veth pair: the namespace end is
//!   `eth0` with MAC [`crate::host_mac`]`(port)` and the given addresses;
//!   the root-namespace end becomes ferrovsd port `port` (1, 2, ... in the
//!   order the hosts were added). Segmentation offloads are off on both ends
//!   (AF_PACKET must see wire-sized frames); transmit checksum offload stays
//!   on (the AF_PACKET port completes partial checksums).
//! * [`Lab::start`] writes the flows and a config and starts ferrovsd (one
//!   PMD thread, its own control socket in the lab's directory).
//! * [`Host::agent`] starts a socket agent (`netns_agent.py`) in the
//!   namespace: UDP/TCP sockets kept open across requests, echo servers,
//!   a frame counter, a scapy injector. [`Host::run`] and [`Host::spawn`]
//!   run any other program there (curl, nc, ping, `python3 -m http.server`);
//!   [`Host::ip_in_receives`] (and [`Host::ip6_in_receives_except_nd`])
//!   prove that nothing reached a host's stack.
//! * [`Lab::ctl`], [`Lab::conntrack`], [`Lab::flow_packets_settled`]: `ferrovs-ctl`
//!   (the real binary) against the lab's daemon; `dump-conntrack --json` is
//!   parsed into [`CtEntry`].
//! * Dropping the lab (also while a test panics) prints the daemon's log,
//!   flows and connections if the test failed, stops the daemon and deletes
//!   the namespaces, veth pairs and directory. Processes started with
//!   [`Host::spawn`] / [`Host::agent`] are killed when their handles drop
//!   (declare them after the lab, so they drop first).
//!
//! The daemon and CLI are the debug binaries next to the test executable
//! (`target/debug/ferrovsd`, `ferrovs-ctl`): `cargo test --workspace`
//! builds them; with `cargo test -p ferrovs-tests` run
//! `cargo build -p datapath --bins` first.
//!
//! # Flows of the NAT and ALG scenarios
//!
//! Of these only FTP through NAT is still to come. Each is a lab plus a few lines (hosts, flows, a client, the
//! assertions). Port numbers are the order of [`Lab::host`] calls. Done
//! scenarios keep their flows here, marked with their tests (fragment
//! reassembly, once planned here, is `fragmented_udp_and_large_pings_root`
//! in system_traffic.rs).
//!
//! **SNAT** (done: `snat_tcp_udp_and_http_root`,
//! `snat_ping_translates_the_icmp_id_root`,
//! `snat_icmp_error_is_related_and_translated_root` and the control
//! `snat_control_without_nat_gets_no_answer_root`, with these flows) of a
//! private client `a` (10.1.0.1/24, port 1) to the public address
//! 192.0.2.1 towards `b` (192.0.2.2/24, port 2). No ARP crosses the
//! switch: `a` routes 192.0.2.0/24 via 10.1.0.254 with a static neighbour
//! 10.1.0.254 at `b`'s MAC, and `b` has a static neighbour 192.0.2.1 at
//! `a`'s MAC ([`Host::route`], [`Host::neigh`]), so the switch only
//! rewrites addresses:
//!
//! ```text
//! table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1,nat)
//! table=0,priority=10,ip,in_port=2,actions=ct(table=2,zone=1,nat)
//! table=1,priority=10,ip,ct_state=+trk+new,actions=ct(commit,zone=1,nat(src=192.0.2.1)),output:2
//! table=1,priority=10,ip,ct_state=+trk+est,actions=output:2
//! table=2,priority=10,ip,ct_state=+trk+est,actions=output:1
//! table=2,priority=10,ip,ct_state=+trk+rel,actions=output:1
//! ```
//!
//! Asserted: `b`'s TCP and UDP echo servers report the peer 192.0.2.1
//! (`{peer}` in their prefix) with the client's own port; an HTTP download
//! arrives intact and the server logs 192.0.2.1; two pings with the same
//! ICMP id from two private addresses both succeed, the second with its id
//! translated; a port unreachable from `b` reaches `a`'s socket as
//! ECONNREFUSED (`+rel`, quoted header translated); `dump-conntrack` shows
//! `orig=(src=10.1.0.1,...)`, `reply=(src=192.0.2.2,dst=192.0.2.1,...)` in
//! zone 1; `b`'s new connections to 192.0.2.1 are dropped.
//!
//! **DNAT load balancing** (done: `dnat_load_balancing_over_two_backends_root`,
//! with these flows) of the VIP 10.1.0.100:80 to backends `b1`
//! 10.1.0.11 (port 2) and `b2` 10.1.0.12 (port 3), client `a` 10.1.0.1
//! (port 1). `a` has a static neighbour 10.1.0.100 at 02:00:00:00:00:64
//! (nobody's); the flows rewrite the destination MAC to the chosen
//! backend's. Two flows split on the client's lowest source port bit (or
//! a `select` group, once ofproto has groups); the test picks its client
//! ports, as Linux's connect() prefers even ephemeral ports:
//!
//! ```text
//! table=0,priority=10,arp,in_port=1,actions=output:2,output:3
//! table=0,priority=10,arp,in_port=2,actions=output:1
//! table=0,priority=10,arp,in_port=3,actions=output:1
//! table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1,nat)
//! table=0,priority=10,ip,in_port=2,actions=ct(table=2,zone=1,nat)
//! table=0,priority=10,ip,in_port=3,actions=ct(table=2,zone=1,nat)
//! table=1,priority=20,tcp,ct_state=+trk+new,nw_dst=10.1.0.100,tp_src=0/1,actions=ct(commit,zone=1,nat(dst=10.1.0.11:8080)),mod_dl_dst:02:00:00:00:00:02,output:2
//! table=1,priority=20,tcp,ct_state=+trk+new,nw_dst=10.1.0.100,tp_src=1/1,actions=ct(commit,zone=1,nat(dst=10.1.0.12:8080)),mod_dl_dst:02:00:00:00:00:03,output:3
//! table=1,priority=10,tcp,ct_state=+trk+est,ct_nw_dst=10.1.0.100,nw_dst=10.1.0.11,actions=mod_dl_dst:02:00:00:00:00:02,output:2
//! table=1,priority=10,tcp,ct_state=+trk+est,ct_nw_dst=10.1.0.100,nw_dst=10.1.0.12,actions=mod_dl_dst:02:00:00:00:00:03,output:3
//! table=2,priority=10,ip,ct_state=+trk+est,actions=output:1
//! ```
//!
//! Asserted: a dozen connections from `a` to the VIP are answered by both
//! backends (their echo servers name themselves and the client address and
//! port they saw, `a`'s real one); `dump-conntrack` shows
//! `reply=(src=10.1.0.11,sport=8080,...)` for even and
//! `reply=(src=10.1.0.12,...)` for odd client ports, originals to
//! 10.1.0.100:80.
//!
//! **FTP active and passive through NAT** (done:
//! `ftp_active_and_passive_through_snat_root` and its control
//! `ftp_through_snat_without_the_helper_fails_root`, all four modes): the
//! SNAT topology above;
//! python3-pyftpdlib in `b` (`python3 -m pyftpdlib -i 192.0.2.2 -p 21 -d
//! DIR`, anonymous read), curl in `a` (`curl ftp://192.0.2.2/file`
//! passive, `curl -P 10.1.0.1 ftp://...` active). The helper watches the
//! control connection; the data connections are admitted as related:
//!
//! ```text
//! table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1,nat)
//! table=0,priority=10,ip,in_port=2,actions=ct(table=2,zone=1,nat)
//! table=1,priority=20,tcp,tp_dst=21,ct_state=+trk+new,actions=ct(commit,zone=1,alg=ftp,nat(src=192.0.2.1)),output:2
//! table=1,priority=10,ip,ct_state=+trk+new+rel,actions=ct(commit,zone=1,nat),output:2
//! table=1,priority=10,ip,ct_state=+trk+est,actions=output:2
//! table=2,priority=10,ip,ct_state=+trk+new+rel,actions=ct(commit,zone=1,nat),output:1
//! table=2,priority=10,ip,ct_state=+trk+est,actions=output:1
//! table=2,priority=10,ip,ct_state=+trk+rel,actions=output:1
//! ```
//!
//! Asserts: the downloaded bytes equal the file in both modes; with the
//! same flows less `alg=ftp` the transfer fails (the control: the helper
//! is what admits the data connection); `dump-conntrack` shows the control
//! connection and the data connection (active: from 192.0.2.2:20 to
//! 192.0.2.1, reply towards 10.1.0.1).
//!
//! (Without NAT, FTP in all four modes is `ftp_active_and_passive_through_the_helper_root`
//! and its control `ftp_without_the_helper_fails_root` in system_traffic.rs.)
//!
//! **TFTP** (done: `tftp_through_the_helper_and_not_without_root`, with a
//! small Python server): the firewall topology of the tests here; a server in `b`
//! (tftpd-hpa `in.tftpd -L -s DIR -a 10.1.0.2:69`, or a small agent op),
//! curl in `a` (`curl tftp://10.1.0.2/file`). The server answers from a
//! new port: admitted only as related:
//!
//! ```text
//! table=0,priority=10,arp,in_port=1,actions=output:2
//! table=0,priority=10,arp,in_port=2,actions=output:1
//! table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1)
//! table=0,priority=10,ip,in_port=2,actions=ct(table=2,zone=1)
//! table=1,priority=20,udp,tp_dst=69,ct_state=+trk+new,actions=ct(commit,zone=1,alg=tftp),output:2
//! table=1,priority=10,ip,ct_state=+trk+new-inv,actions=ct(commit,zone=1),output:2
//! table=1,priority=10,ip,ct_state=+trk+est,actions=output:2
//! table=2,priority=10,ip,ct_state=+trk+new+rel,actions=ct(commit,zone=1),output:1
//! table=2,priority=10,ip,ct_state=+trk+est,actions=output:1
//! ```
//!
//! Asserts: the file arrives intact; without `alg=tftp` curl times out;
//! `dump-conntrack` shows the request to port 69 and the transfer from
//! the server's new port.
//!
//! The test `planned_scenario_flows_parse` (system_traffic.rs) loads every
//! flow block of these docs into a switch, so they stay valid syntax.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

/// The socket agent's source, written into each lab's directory.
const AGENT_PY: &str = include_str!("netns_agent.py");

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// The Python interpreter: Debian's (which sees python3-scapy and
/// python3-pyftpdlib) when present, else the first `python3` on PATH.
pub fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0")
}

fn has_tool(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn python_has(module: &str) -> bool {
    Command::new(python())
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Run a command that must succeed (setup steps); the error names it.
fn must(mut cmd: Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

fn ip(args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(args);
    c
}

/// Poll `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// target/<profile>/ of this test binary (it lives in target/<profile>/deps).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf()
}

/// One namespace of a lab.
#[derive(Clone, Debug)]
pub struct Host {
    /// Name given to [`Lab::host`].
    pub name: String,
    /// The network namespace.
    pub ns: String,
    /// The ferrovsd port its veth is attached to.
    pub port: u32,
    /// MAC of `eth0` in the namespace.
    pub mac: [u8; 6],
    /// Addresses given to [`Lab::host`] without their prefix length.
    pub addrs: Vec<String>,
    /// The lab's directory (agent script, scratch files).
    pub dir: PathBuf,
}

impl Host {
    /// The first address.
    pub fn addr(&self) -> &str {
        &self.addrs[0]
    }

    /// `aa:bb:cc:dd:ee:ff`.
    pub fn mac_str(&self) -> String {
        mac_text(&self.mac)
    }

    /// `program` to be run inside the namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }

    /// Run `program args` in the namespace to completion, killed after
    /// `timeout` (coreutils `timeout`: exit status 124 then).
    pub fn run(&self, program: &str, args: &[&str], timeout: Duration) -> Output {
        let secs = format!("{:.1}", timeout.as_secs_f64());
        let mut c = self.cmd("timeout");
        c.args(["-k", "2", &secs, program]).args(args);
        c.output()
            .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", self.ns))
    }

    /// Start `program args` in the namespace in the background, its
    /// standard output piped ([`Proc::wait_for_line`]). Killed when the
    /// handle drops.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Proc {
        let mut c = self.cmd(program);
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Proc::start(c, &format!("{program} in {}", self.ns))
    }

    /// A socket agent in the namespace (see `netns_agent.py`).
    pub fn agent(&self) -> Agent {
        let script = self.dir.join("netns_agent.py");
        let mut c = self.cmd(python());
        c.arg("-u")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut proc = Proc::start(c, &format!("agent in {}", self.ns));
        let stdin = proc.child.stdin.take().expect("agent stdin");
        let a = Agent {
            proc,
            stdin,
            host: self.name.clone(),
        };
        let hello = a
            .proc
            .lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("agent in {} did not start: {}", self.ns, a.proc.stderr()));
        assert!(hello.contains("ready"), "agent in {}: {hello}", self.ns);
        a
    }

    /// The namespace's IPv4 `InReceives` (/proc/net/snmp): every IP packet
    /// its stack received, wherever it was going. A delta of 0 proves no
    /// IP packet reached the host.
    pub fn ip_in_receives(&self) -> u64 {
        let out = must({
            let mut c = self.cmd("cat");
            c.arg("/proc/net/snmp");
            c
        });
        let snmp = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut ip_lines = snmp.lines().filter(|l| l.starts_with("Ip:"));
        let (Some(names), Some(values)) = (ip_lines.next(), ip_lines.next()) else {
            panic!("no Ip: lines in {}'s /proc/net/snmp:\n{snmp}", self.ns);
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "InReceives")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no Ip InReceives in {}:\n{snmp}", self.ns))
    }

    /// The namespace's IPv6 packets received other than neighbour
    /// discovery (/proc/net/snmp6: `Ip6InReceives` less
    /// `Icmp6InNeighborSolicits` and `Icmp6InNeighborAdvertisements`, which
    /// the dual-stack flows pass untracked, as the IPv4 ones pass ARP). A
    /// delta of 0 proves no other IPv6 packet reached the host.
    pub fn ip6_in_receives_except_nd(&self) -> u64 {
        let out = must({
            let mut c = self.cmd("cat");
            c.arg("/proc/net/snmp6");
            c
        });
        let snmp6 = String::from_utf8_lossy(&out.stdout).into_owned();
        let get = |name: &str| -> u64 {
            snmp6
                .lines()
                .filter_map(|l| l.split_once(char::is_whitespace))
                .find(|(n, _)| *n == name)
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {}'s /proc/net/snmp6:\n{snmp6}", self.ns))
        };
        get("Ip6InReceives")
            .saturating_sub(get("Icmp6InNeighborSolicits") + get("Icmp6InNeighborAdvertisements"))
    }

    /// Route `prefix` via `gateway` on eth0 (for the NAT scenarios).
    pub fn route(&self, prefix: &str, gateway: &str) {
        must(ip(&[
            "-n", &self.ns, "route", "add", prefix, "via", gateway, "dev", "eth0",
        ]));
    }

    /// A permanent neighbour entry: `addr` is at `mac` on eth0.
    pub fn neigh(&self, addr: &str, mac: &[u8; 6]) {
        must(ip(&[
            "-n",
            &self.ns,
            "neigh",
            "replace",
            addr,
            "lladdr",
            &mac_text(mac),
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]));
    }
}

fn mac_text(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A background process in a namespace; killed (SIGKILL) and reaped when
/// dropped. Its standard output arrives line by line on a channel.
pub struct Proc {
    child: Child,
    lines: Receiver<String>,
    stderr_buf: std::sync::Arc<std::sync::Mutex<String>>,
    what: String,
}

impl Proc {
    fn start(mut c: Command, what: &str) -> Proc {
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let (tx, lines) = channel();
        let out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr_buf = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        if let Some(mut err) = child.stderr.take() {
            let buf = stderr_buf.clone();
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = std::io::Read::read_to_string(&mut err, &mut s);
                if let Ok(mut b) = buf.lock() {
                    b.push_str(&s);
                }
            });
        }
        Proc {
            child,
            lines,
            stderr_buf,
            what: what.to_string(),
        }
    }

    /// Wait up to `timeout` for an output line containing `needle`.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return Ok(l),
                Ok(_) => {}
                Err(_) => {
                    return Err(format!(
                        "{}: no line with '{needle}' within {timeout:?}; stderr: {}",
                        self.what,
                        self.stderr()
                    ))
                }
            }
        }
    }

    /// Every output line received so far.
    pub fn lines_so_far(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// What the process wrote to standard error so far (complete once it
    /// exited).
    pub fn stderr(&self) -> String {
        self.stderr_buf
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Kill the process now; its remaining output lines stay readable.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait for the process to exit by itself (up to `timeout`, else kill
    /// it); its exit status, None if it had to be killed.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                self.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The socket agent of one namespace: JSON requests, JSON replies.
pub struct Agent {
    proc: Proc,
    stdin: ChildStdin,
    host: String,
}

/// An agent reply that was not `ok`: the errno name (`ECONNREFUSED`,
/// `timeout`, ...) or a description.
pub type AgentErr = String;

impl Agent {
    /// Send a request, wait (up to 30 s) for its reply.
    pub fn request(&mut self, req: Value) -> Result<Value, AgentErr> {
        writeln!(self.stdin, "{req}").unwrap_or_else(|e| panic!("agent {}: {e}", self.host));
        let line = self
            .proc
            .lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "agent {} gave no reply to {req}; stderr: {}",
                    self.host,
                    self.proc.stderr()
                )
            });
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("agent {}: bad reply {line}: {e}", self.host));
        if v["ok"] == Value::Bool(true) {
            Ok(v)
        } else {
            Err(v["err"].as_str().unwrap_or("?").to_string())
        }
    }

    /// A request that must succeed (setup).
    pub fn ok(&mut self, req: Value) -> Value {
        let r = self.request(req.clone());
        r.unwrap_or_else(|e| panic!("agent {}: {req} failed: {e}", self.host))
    }

    /// A UDP echo server on `ip:port` answering `prefix` + each datagram.
    /// `{peer}` in `prefix` becomes the sender's `ip:port` as the server
    /// saw it (what a NAT test asserts on).
    pub fn udp_echo_server(&mut self, ip: &str, port: u16, prefix: &str) {
        self.ok(json!({"op": "serve_udp_echo", "ip": ip, "port": port, "prefix": prefix}));
    }

    /// A TCP echo server on `ip:port` answering `prefix` + each chunk;
    /// `{peer}` in `prefix` becomes the client's `ip:port` as accepted.
    pub fn tcp_echo_server(&mut self, ip: &str, port: u16, prefix: &str) {
        self.ok(json!({"op": "serve_tcp_echo", "ip": ip, "port": port, "prefix": prefix}));
    }

    /// A UDP socket `id`, bound to `bind` (else an ephemeral port) and
    /// connected to `connect` if given; its local port.
    pub fn udp_socket(
        &mut self,
        id: &str,
        bind: Option<(&str, u16)>,
        connect: Option<(&str, u16)>,
    ) -> u16 {
        let mut req = json!({"op": "udp_open", "id": id});
        if let Some((a, p)) = bind {
            req["ip"] = json!(a);
            req["port"] = json!(p);
        }
        if let Some((a, p)) = connect {
            req["connect_ip"] = json!(a);
            req["connect_port"] = json!(p);
        }
        self.ok(req)["port"].as_u64().expect("port") as u16
    }

    /// Send a datagram from socket `id` (to `to`, or to its connected peer).
    pub fn udp_send(&mut self, id: &str, data: &str, to: Option<(&str, u16)>) {
        let mut req = json!({"op": "udp_send", "id": id, "data": data});
        if let Some((a, p)) = to {
            req["ip"] = json!(a);
            req["port"] = json!(p);
        }
        self.ok(req);
    }

    /// The next datagram on socket `id`: (data, source address, source port).
    pub fn udp_recv(
        &mut self,
        id: &str,
        timeout: Duration,
    ) -> Result<(String, String, u16), AgentErr> {
        let v =
            self.request(json!({"op": "udp_recv", "id": id, "timeout": timeout.as_secs_f64()}))?;
        Ok((
            v["data"].as_str().unwrap_or_default().to_string(),
            v["ip"].as_str().unwrap_or_default().to_string(),
            v["port"].as_u64().unwrap_or_default() as u16,
        ))
    }

    /// A listening TCP socket `id`.
    pub fn tcp_listen(&mut self, id: &str, ip: &str, port: u16) {
        self.ok(json!({"op": "tcp_listen", "id": id, "ip": ip, "port": port}));
    }

    /// Accept a connection on listener `lid` as socket `id`: the peer.
    pub fn tcp_accept(
        &mut self,
        id: &str,
        lid: &str,
        timeout: Duration,
    ) -> Result<(String, u16), AgentErr> {
        let v = self.request(
            json!({"op": "tcp_accept", "id": id, "lid": lid, "timeout": timeout.as_secs_f64()}),
        )?;
        Ok((
            v["ip"].as_str().unwrap_or_default().to_string(),
            v["port"].as_u64().unwrap_or_default() as u16,
        ))
    }

    /// Connect socket `id` to `ip:port` (from source port `sport` if
    /// given): its local port.
    pub fn tcp_connect(
        &mut self,
        id: &str,
        ip: &str,
        port: u16,
        sport: Option<u16>,
        timeout: Duration,
    ) -> Result<u16, AgentErr> {
        let v = self.request(
            json!({"op": "tcp_connect", "id": id, "ip": ip, "port": port,
            "sport": sport.unwrap_or(0), "timeout": timeout.as_secs_f64()}),
        )?;
        Ok(v["port"].as_u64().unwrap_or_default() as u16)
    }

    pub fn tcp_send(&mut self, id: &str, data: &str) {
        self.ok(json!({"op": "tcp_send", "id": id, "data": data}));
    }

    /// Read until `n` bytes or the end of the stream.
    pub fn tcp_recv(&mut self, id: &str, n: usize, timeout: Duration) -> Result<String, AgentErr> {
        let v = self.request(
            json!({"op": "tcp_recv", "id": id, "n": n, "timeout": timeout.as_secs_f64()}),
        )?;
        Ok(v["data"].as_str().unwrap_or_default().to_string())
    }

    pub fn close(&mut self, id: &str) {
        self.ok(json!({"op": "close", "id": id}));
    }

    /// Count frames on `iface` containing `marker` (from now on).
    pub fn sniff(&mut self, id: &str, iface: &str, marker: &str) {
        self.ok(json!({"op": "sniff", "id": id, "iface": iface, "marker": marker}));
    }

    pub fn sniff_count(&mut self, id: &str) -> u64 {
        self.ok(json!({"op": "sniff_count", "id": id}))["count"]
            .as_u64()
            .expect("count")
    }
}

/// One side of a connection in `dump-conntrack --json`.
#[derive(Clone, Debug, Deserialize)]
pub struct CtTuple {
    pub src: String,
    pub dst: String,
    #[serde(default)]
    pub sport: Option<u16>,
    #[serde(default)]
    pub dport: Option<u16>,
    /// ICMP id.
    #[serde(default)]
    pub id: Option<u16>,
    #[serde(default)]
    pub r#type: Option<u8>,
    #[serde(default)]
    pub code: Option<u8>,
}

/// One connection of `dump-conntrack --json`.
#[derive(Clone, Debug, Deserialize)]
pub struct CtEntry {
    /// `tcp`, `udp`, `icmp`, `tcp6`, ...
    pub proto: String,
    pub orig: CtTuple,
    pub reply: CtTuple,
    pub zone: u16,
    pub mark: u32,
    /// `0x...`
    pub labels: String,
    /// TCP state name.
    #[serde(default)]
    pub state: Option<String>,
    /// Seconds left before expiry.
    pub timeout: u32,
    pub seen_reply: bool,
    pub assured: bool,
    /// ALG helper of the connection (`ftp`, `tftp`).
    #[serde(default)]
    pub helper: Option<String>,
    /// Original tuple of the master, for a related connection.
    #[serde(default)]
    pub master: Option<CtTuple>,
}

impl CtEntry {
    /// The 128-bit label.
    pub fn label(&self) -> u128 {
        u128::from_str_radix(self.labels.trim_start_matches("0x"), 16)
            .unwrap_or_else(|_| panic!("labels '{}' is not hex", self.labels))
    }
}

struct HostIf {
    ns: String,
    host_if: String,
}

/// One test's namespaces, veth pairs and ferrovsd. See the module docs.
pub struct Lab {
    tag: String,
    id: String,
    dir: PathBuf,
    hosts: Vec<HostIf>,
    daemon: Option<Child>,
    ferrovsd: PathBuf,
    ctl: PathBuf,
}

impl Lab {
    /// A new lab for test `tag`, or None when the test must skip (not
    /// root, or a tool in `tools` is missing) and `FERROVS_REQUIRE_ROOT`
    /// is not 1 (then it panics instead). `ip`, `ethtool` and python3 are
    /// always required; a tool spelled `py:MODULE` is a Python module.
    pub fn new(tag: &str, tools: &[&str]) -> Option<Lab> {
        let skip = |reason: String| {
            if std::env::var("FERROVS_REQUIRE_ROOT").as_deref() == Ok("1") {
                panic!("{tag}: cannot run and FERROVS_REQUIRE_ROOT=1: {reason}");
            }
            let _ = writeln!(std::io::stderr(), "SKIP {tag}: {reason}");
        };
        if !is_root() {
            skip("not root".into());
            return None;
        }
        for t in ["ip", "ethtool", "timeout", python()].iter().chain(tools) {
            let found = match t.strip_prefix("py:") {
                Some(m) => python_has(m),
                None => has_tool(t),
            };
            if !found {
                skip(format!("{t} is not installed"));
                return None;
            }
        }
        let bins = bin_dir();
        let (ferrovsd, ctl) = (bins.join("ferrovsd"), bins.join("ferrovs-ctl"));
        assert!(
            ferrovsd.exists() && ctl.exists(),
            "{} / {} missing: run `cargo build -p datapath --bins` (cargo test --workspace builds them)",
            ferrovsd.display(),
            ctl.display()
        );
        let n = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("fs{:07}{:02}", std::process::id() % 10_000_000, n % 100);
        let dir = std::env::temp_dir().join(format!("ferrovs-{id}-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("lab directory");
        std::fs::write(dir.join("netns_agent.py"), AGENT_PY).expect("agent script");
        Some(Lab {
            tag: tag.to_string(),
            id,
            dir,
            hosts: Vec::new(),
            daemon: None,
            ferrovsd,
            ctl,
        })
    }

    /// The lab's scratch directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Add namespace `name` with `eth0` at `addrs` (`10.1.0.1/24`,
    /// `fd00::1/64`), attached to the next ferrovsd port. IPv6 stays off in
    /// namespaces without an IPv6 address (no autoconfiguration chatter).
    pub fn host(&mut self, name: &str, addrs: &[&str]) -> Host {
        assert!(self.daemon.is_none(), "add hosts before Lab::start");
        let port = self.hosts.len() as u32 + 1;
        let ns = format!("{}-{name}", self.id);
        let host_if = format!("{}{:02}h", self.id, port);
        let tmp_if = format!("{}{:02}n", self.id, port);
        must(ip(&["netns", "add", &ns]));
        // Registered before anything else can fail, so Drop deletes it.
        self.hosts.push(HostIf {
            ns: ns.clone(),
            host_if: host_if.clone(),
        });
        must(ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &tmp_if,
        ]));
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{host_if}/disable_ipv6"),
            "1",
        );
        let _ = Command::new("ethtool")
            .args(["-K", &host_if, "gro", "off", "gso", "off", "tso", "off"])
            .output();
        must(ip(&["link", "set", &host_if, "up"]));
        must(ip(&["link", "set", &tmp_if, "netns", &ns]));
        must(ip(&["-n", &ns, "link", "set", &tmp_if, "name", "eth0"]));
        let mac = crate::host_mac(port);
        must(ip(&[
            "-n",
            &ns,
            "link",
            "set",
            "eth0",
            "address",
            &mac_text(&mac),
        ]));
        let v6 = addrs.iter().any(|a| a.contains(':'));
        let _ = Command::new("ip")
            .args(["netns", "exec", &ns, "sh", "-c"])
            .arg(format!(
                "echo {} > /proc/sys/net/ipv6/conf/all/disable_ipv6",
                u8::from(!v6)
            ))
            .output();
        let _ = Command::new("ip")
            .args([
                "netns", "exec", &ns, "ethtool", "-K", "eth0", "gso", "off", "tso", "off",
            ])
            .output();
        for a in addrs {
            let mut c = ip(&["-n", &ns, "addr", "add", a, "dev", "eth0"]);
            if a.contains(':') {
                c.arg("nodad");
            }
            must(c);
        }
        must(ip(&["-n", &ns, "link", "set", "eth0", "up"]));
        must(ip(&["-n", &ns, "link", "set", "lo", "up"]));
        Host {
            name: name.to_string(),
            ns,
            port,
            mac,
            addrs: addrs
                .iter()
                .map(|a| a.split('/').next().unwrap_or(a).to_string())
                .collect(),
            dir: self.dir.clone(),
        }
    }

    /// Start ferrovsd with `flows` (ovs-ofctl add-flows text) and default
    /// conntrack settings.
    pub fn start(&mut self, flows: &str) {
        self.start_with(flows, json!({}));
    }

    /// Start ferrovsd with `flows` and the config's `conntrack` section.
    pub fn start_with(&mut self, flows: &str, conntrack: Value) {
        assert!(self.daemon.is_none(), "ferrovsd already started");
        std::fs::write(self.dir.join("lab.flows"), flows).expect("flows file");
        let ports: Vec<Value> = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                json!({ "name": h.host_if, "number": i + 1, "type": "afpacket",
                        "options": { "ifname": h.host_if } })
            })
            .collect();
        let config = json!({
            "control_socket": self.socket(),
            "pmd": { "threads": 1, "idle_sleep_us": 100 },
            "conntrack": conntrack,
            "ports": ports,
            "flows": "lab.flows",
        });
        let cfg_path = self.dir.join("ferrovsd.json");
        std::fs::write(
            &cfg_path,
            serde_json::to_string_pretty(&config).expect("json"),
        )
        .expect("config file");
        let log = std::fs::File::create(self.dir.join("ferrovsd.log")).expect("log file");
        let log2 = log.try_clone().expect("log file");
        let child = Command::new(&self.ferrovsd)
            .arg("--config")
            .arg(&cfg_path)
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.ferrovsd.display()));
        self.daemon = Some(child);
        let sock = self.socket();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(sock.exists() && self.try_ctl(&["version"]).is_ok()) {
            let exited = self
                .daemon
                .as_mut()
                .and_then(|d| d.try_wait().ok().flatten());
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{}: ferrovsd did not start ({}):\n{}",
                self.tag,
                exited.map_or("no control socket after 20 s".into(), |s| s.to_string()),
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("ferrovsd.sock")
    }

    /// The daemon's log so far.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("ferrovsd.log")).unwrap_or_default()
    }

    /// `ferrovs-ctl ARGS` against this lab's daemon: its output, or its
    /// error message.
    pub fn try_ctl(&self, args: &[&str]) -> Result<String, String> {
        self.try_ctl_stdin(args, None)
    }

    fn try_ctl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut c = Command::new(&self.ctl);
        c.arg("--socket").arg(self.socket()).args(args);
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .map_err(|e| format!("cannot run ferrovs-ctl: {e}"))?;
        if let (Some(text), Some(mut si)) = (stdin, child.stdin.take()) {
            si.write_all(text.as_bytes())
                .map_err(|e| format!("ferrovs-ctl stdin: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("ferrovs-ctl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// `ferrovs-ctl ARGS`, which must succeed.
    pub fn ctl(&self, args: &[&str]) -> String {
        self.try_ctl(args)
            .unwrap_or_else(|e| panic!("ferrovs-ctl {}: {e}", args.join(" ")))
    }

    /// `ferrovs-ctl --json ARGS`, parsed.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let text = self.ctl(&a);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("ferrovs-ctl {}: not JSON ({e}): {text}", args.join(" ")))
    }

    /// Add flows (add-flows text) to the running daemon.
    pub fn add_flows(&self, flows: &str) {
        self.try_ctl_stdin(&["add-flows", "-"], Some(flows))
            .unwrap_or_else(|e| panic!("add-flows {flows}: {e}"));
    }

    /// `dump-conntrack --json FILTERS` (e.g. `zone=1`).
    pub fn conntrack(&self, filters: &[&str]) -> Vec<CtEntry> {
        let mut a = vec!["dump-conntrack"];
        a.extend_from_slice(filters);
        let v = self.ctl_json(&a);
        serde_json::from_value(v.clone())
            .unwrap_or_else(|e| panic!("dump-conntrack JSON does not parse ({e}): {v}"))
    }

    /// [`Lab::flow_packets`] once it reached `at_least` (polled for up to
    /// 5 s: the datapath credits rule counters when it revalidates its
    /// cached flows, every 500 ms), or its value after 5 s. All the
    /// cached flows are credited in one pass, so once the count reached
    /// `at_least`, traffic sent before polling started is all counted.
    pub fn flow_packets_settled(&self, parts: &[&str], at_least: u64) -> u64 {
        let mut n = 0;
        wait_until(Duration::from_secs(5), || {
            n = self.flow_packets(parts);
            n >= at_least
        });
        n
    }

    /// `n_packets` of the flow whose `dump-flows` line contains every one
    /// of `parts` (panics unless exactly one line does), as credited so far.
    pub fn flow_packets(&self, parts: &[&str]) -> u64 {
        let dump = self.ctl(&["dump-flows"]);
        let lines: Vec<&str> = dump
            .lines()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .collect();
        let [line] = lines.as_slice() else {
            panic!("{} flows match {parts:?} in:\n{dump}", lines.len());
        };
        line.split([',', ' '])
            .find_map(|f| f.trim().strip_prefix("n_packets="))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no n_packets in {line}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() && self.daemon.is_some() && self.socket().exists() {
            let mut e = std::io::stderr();
            let _ = writeln!(
                e,
                "--- {}: ferrovsd log ---\n{}",
                self.tag,
                self.daemon_log()
            );
            for cmd in [&["dump-flows"][..], &["dump-conntrack"], &["show"]] {
                let out = self.try_ctl(cmd).unwrap_or_else(|x| x);
                let _ = writeln!(e, "--- {}: ferrovs-ctl {} ---\n{out}", self.tag, cmd[0]);
            }
        }
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.ns]).output();
            let _ = ip(&["link", "del", &h.host_if]).output();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            let _ = writeln!(
                std::io::stderr(),
                "{}: kept {}",
                self.tag,
                self.dir.display()
            );
        }
    }
}
