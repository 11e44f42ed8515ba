//! End-to-end: the real `ferrovsd` driven by the real `ferrovs-ctl`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const FERROVSD: &str = env!("CARGO_BIN_EXE_ferrovsd");
const CTL: &str = env!("CARGO_BIN_EXE_ferrovs-ctl");

const FLOWS: &str = "\
# a stateful firewall: zone 5, new connections committed
table=0,priority=10,in_port=1,ip,actions=ct(table=1,zone=5)
table=0,priority=0,actions=drop
table=1,priority=10,ct_state=+trk+new,ip,actions=ct(commit,zone=5),output:2
table=1,priority=10,ct_state=+trk+est,ip,actions=output:2
";

fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "fvs-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Extra keys for the `pmd` and `conntrack` sections (each starting with
/// `, `).
#[derive(Clone, Copy, Default)]
struct Tuning<'a> {
    pmd: &'a str,
    conntrack: &'a str,
}

fn config(dir: &Path, extra_ports: &str, gen_options: &str, tuning: Tuning) -> String {
    format!(
        r#"{{ "log_level": "info",
  "control_socket": "{sock}",
  "metrics": {{ "listen": "127.0.0.1:0" }},
  "pmd": {{ "threads": 1, "idle_sleep_us": 200{pmd} }},
  "conntrack": {{ "shards": 16{ct} }},
  "ports": [ {{ "name": "gen0", "number": 1, "type": "generator", "options": {{ "flows": 10, "size": 64, "limit": 2000{gen_options} }} }},
             {{ "name": "sink", "number": 2, "type": "null" }}{extra_ports} ],
  "flows": "firewall.flows" }}"#,
        sock = dir.join("run/ferrovsd.sock").display(),
        pmd = tuning.pmd,
        ct = tuning.conntrack,
    )
}

/// A running daemon in its own directory; killed and cleaned up on drop.
struct Daemon {
    dir: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    fn start() -> Daemon {
        Self::start_with("")
    }

    fn start_with(extra_ports: &str) -> Daemon {
        Self::start_full(extra_ports, FLOWS)
    }

    fn start_full(extra_ports: &str, flows: &str) -> Daemon {
        Self::start_gen(extra_ports, flows, "")
    }

    fn start_gen(extra_ports: &str, flows: &str, gen_options: &str) -> Daemon {
        Self::start_gen_in(temp_dir(), extra_ports, flows, gen_options)
    }

    /// Like [`Daemon::start_full`], in `dir` (which may hold input files).
    fn start_full_in(dir: PathBuf, extra_ports: &str, flows: &str) -> Daemon {
        Self::start_gen_in(dir, extra_ports, flows, "")
    }

    fn start_gen_in(dir: PathBuf, extra_ports: &str, flows: &str, gen_options: &str) -> Daemon {
        Self::start_tuned_in(dir, extra_ports, flows, gen_options, Tuning::default())
    }

    /// With extra `pmd` / `conntrack` settings.
    fn start_tuned(gen_options: &str, tuning: Tuning) -> Daemon {
        Self::start_tuned_in(temp_dir(), "", FLOWS, gen_options, tuning)
    }

    fn start_tuned_in(
        dir: PathBuf,
        extra_ports: &str,
        flows: &str,
        gen_options: &str,
        tuning: Tuning,
    ) -> Daemon {
        std::fs::write(dir.join("firewall.flows"), flows).unwrap();
        std::fs::write(
            dir.join("ferrovsd.json"),
            config(&dir, extra_ports, gen_options, tuning),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("ferrovsd.log")).unwrap();
        let child = Command::new(FERROVSD)
            .arg("--config")
            .arg(dir.join("ferrovsd.json"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Daemon {
            dir,
            child: Some(child),
        };
        d.wait_until(|| d.ctl(&["version"]).status.success(), "daemon to answer");
        d
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("run/ferrovsd.sock")
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(CTL)
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .unwrap()
    }

    /// Run a command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(
            o.status.success(),
            "ferrovs-ctl {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Run a command that must fail; its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert_eq!(o.status.code(), Some(1), "ferrovs-ctl {args:?} should fail");
        assert!(o.stdout.is_empty());
        String::from_utf8(o.stderr).unwrap()
    }

    fn wait_until(&self, mut f: impl FnMut() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("ferrovsd.log")).unwrap_or_default()
    }

    /// Wait for the process to exit; its status code.
    fn wait_exit(&mut self) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            assert!(Instant::now() < deadline, "daemon did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_for_traffic(&self) {
        self.wait_until(
            || packets_received(&self.ok(&["pmd-stats-show"])) >= 2000,
            "generated traffic",
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn packets_received(stats: &str) -> u64 {
    stats
        .lines()
        .filter_map(|l| l.trim().strip_prefix("packets received: "))
        .map(|v| v.parse::<u64>().unwrap())
        .sum()
}

fn n_packets(line: &str) -> u64 {
    let v = line.split("n_packets=").nth(1).unwrap();
    v[..v.find(',').unwrap()].parse().unwrap()
}

/// Flow lines without the fields that change by themselves.
fn flow_set(dump: &str) -> Vec<String> {
    let mut v: Vec<String> = dump
        .lines()
        .map(|l| {
            l.split(", ")
                .filter(|f| !f.trim_start().starts_with("duration="))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    v.sort();
    v
}

#[test]
fn flows_count_traffic_and_conntrack_fills_and_flushes() {
    let d = Daemon::start();
    d.wait_for_traffic();
    let stats = d.ok(&["pmd-stats-show"]);
    assert!(stats.starts_with("(ferrovs reports nanoseconds"), "{stats}");
    assert!(stats.contains("pmd thread numa_id 0"), "{stats}");
    assert!(
        stats.contains("megaflow hits") && stats.contains("emc hits"),
        "{stats}"
    );

    // Rule counters are credited by revalidation (every 500 ms).
    d.wait_until(
        || {
            let dump = d.ok(&["dump-flows"]);
            dump.lines()
                .filter(|l| {
                    l.contains("actions=ct(table=1,zone=5)") || l.contains("ct(commit,zone=5)")
                })
                .all(|l| n_packets(l) > 0)
        },
        "rule counters",
    );
    let dump = d.ok(&["dump-flows", "table=1"]);
    assert_eq!(dump.lines().count(), 2, "{dump}");
    let json: serde_json::Value = serde_json::from_str(&d.ok(&["--json", "dump-flows"])).unwrap();
    assert_eq!(json["flows"].as_array().unwrap().len(), 4);

    let conns = d.ok(&["dump-conntrack", "zone=5"]);
    assert_eq!(conns.lines().count(), 10, "{conns}");
    assert!(
        conns
            .lines()
            .all(|l| l.starts_with("udp,orig=(") && l.ends_with(",zone=5")),
        "{conns}"
    );
    let one = d.ok(&["dump-conntrack", "zone=5", "ct_nw_proto=17,ct_tp_src=1024"]);
    assert_eq!(one.lines().count(), 1, "{one}");
    assert_eq!(d.ok(&["dump-conntrack", "zone=6"]), "");
    assert_eq!(
        d.ok(&["dump-expectations", "zone=5"]),
        "",
        "no ALG in these flows"
    );
    assert!(d.fails(&["dump-expectations", "zone=x"]).contains("zone=x"));
    let j: serde_json::Value = serde_json::from_str(&d.ok(&["--json", "dump-conntrack"])).unwrap();
    assert_eq!(j.as_array().unwrap().len(), 10);
    assert_eq!(j[0]["zone"], 5);

    let ct_stats = d.ok(&["ct-stats-show"]);
    assert!(
        ct_stats.contains("Total: 10") && ct_stats.contains("UDP: 10"),
        "{ct_stats}"
    );
    assert!(ct_stats.contains("inserts: 10"), "{ct_stats}");

    let dp = d.ok(&["dump-dp-flows"]);
    assert!(
        dp.contains("flow-dump from pmd-0") && dp.contains("recirc("),
        "{dp}"
    );

    // A bad filter changes nothing.
    let e = d.fails(&["flush-conntrack", "zone=5", "ct_nw_srcc=10.0.0.0"]);
    assert!(
        e.starts_with("ferrovs-ctl: ") && e.contains("ct_nw_srcc"),
        "{e}"
    );
    assert_eq!(d.ok(&["dump-conntrack", "zone=5"]).lines().count(), 10);
    assert_eq!(d.ok(&["flush-conntrack", "zone=5"]), "");
    assert_eq!(d.ok(&["dump-conntrack", "zone=5"]), "");
    assert!(d.ok(&["ct-stats-show"]).contains("Total: 0"));

    d.ok(&["pmd-stats-clear"]);
    assert_eq!(packets_received(&d.ok(&["pmd-stats-show"])), 0);
    let rxq = d.ok(&["pmd-rxq-show"]);
    assert!(
        rxq.contains("port: gen0") && rxq.contains("queue-id:  0 (enabled)"),
        "{rxq}"
    );
}

#[test]
fn add_flow_and_rejected_flows_leave_tables_unchanged() {
    let d = Daemon::start();
    d.ok(&["add-flow", "table=0,priority=20,tcp,tp_dst=22,actions=drop"]);
    let dump = d.ok(&["dump-flows"]);
    assert!(
        dump.contains("priority=20,tcp,tp_dst=22 actions=drop"),
        "{dump}"
    );
    let before = flow_set(&d.ok(&["dump-flows"]));

    let e = d.fails(&[
        "add-flow",
        "table=0,priority=30,tcp,tp_dst=80,actions=bogus",
    ]);
    assert!(e.contains("`bogus`"), "{e}");
    let e = d.fails(&[
        "add-flow",
        "table=0,priority=30,tcp,tp_dstt=80,actions=drop",
    ]);
    assert!(e.contains("tp_dstt"), "{e}");
    let bad = d.dir.join("bad.flows");
    std::fs::write(
        &bad,
        "priority=40,udp,actions=drop\npriority=41,udp,actions=frobnicate\n",
    )
    .unwrap();
    let e = d.fails(&["add-flows", bad.to_str().unwrap()]);
    assert!(e.contains("line 2") && e.contains("frobnicate"), "{e}");
    assert_eq!(flow_set(&d.ok(&["dump-flows"])), before);

    // add-flows from a file and from stdin.
    let good = d.dir.join("good.flows");
    std::fs::write(&good, "priority=40,udp,tp_dst=53,actions=drop\n").unwrap();
    d.ok(&["add-flows", good.to_str().unwrap()]);
    let mut child = Command::new(CTL)
        .arg("--socket")
        .arg(d.socket())
        .args(["add-flows", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"priority=41,udp,tp_dst=54,actions=drop\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let dump = d.ok(&["dump-flows"]);
    assert!(
        dump.contains("tp_dst=53") && dump.contains("tp_dst=54"),
        "{dump}"
    );

    d.ok(&["del-flows", "tcp,tp_dst=22"]);
    assert!(!d.ok(&["dump-flows"]).contains("tp_dst=22"));
    d.ok(&["del-flows"]);
    assert_eq!(d.ok(&["dump-flows"]), "");
}

#[test]
fn zone_limits_and_timeout_policies_round_trip() {
    let d = Daemon::start();
    d.ok(&[
        "ct-set-limits",
        "default=100",
        "zone=5,limit=1000",
        "zone=7,limit=3",
    ]);
    let all = d.ok(&["ct-get-limits"]);
    assert!(all.starts_with("default limit=100\n"), "{all}");
    assert!(
        all.contains("zone=5,limit=1000,count=") && all.contains("zone=7,limit=3,count=0"),
        "{all}"
    );
    let one = d.ok(&["ct-get-limits", "zone=9"]);
    assert_eq!(one, "default limit=100\nzone=9,limit=100,count=0\n");
    let e = d.fails(&["ct-set-limits", "zone=8,limit=4", "zone=5,limit=x"]);
    assert!(e.contains("'x'"), "{e}");
    assert!(!d.ok(&["ct-get-limits"]).contains("zone=8"));
    d.ok(&["ct-del-limits", "zone=7"]);
    assert_eq!(
        d.ok(&["ct-get-limits", "zone=7"]),
        "default limit=100\nzone=7,limit=100,count=0\n"
    );
    let j: serde_json::Value =
        serde_json::from_str(&d.ok(&["--json", "ct-get-limits", "zone=5"])).unwrap();
    assert_eq!(j["zones"][0]["limit"], 1000);

    d.ok(&["timeout-policy", "add", "short", "udp_first=3,udp_single=4"]);
    let list = d.ok(&["timeout-policy", "list"]);
    assert!(list.contains("short: udp_first=3,udp_single=4"), "{list}");
    assert!(list.contains("default: (kernel defaults)"), "{list}");
    let e = d.fails(&["timeout-policy", "add", "bad", "udp_frist=3"]);
    assert!(e.contains("udp_frist"), "{e}");
    assert!(!d.ok(&["timeout-policy", "list"]).contains("bad"));
    d.ok(&["timeout-policy", "del", "short"]);
    assert!(!d.ok(&["timeout-policy", "list"]).contains("short"));
    assert!(d
        .fails(&["timeout-policy", "del", "short"])
        .contains("short"));
}

#[test]
fn ports_show_and_trace() {
    let d = Daemon::start_with(
        r#", { "name": "rec", "number": 3, "type": "pcap", "options": { "tx": "rec.pcap" } }"#,
    );
    let show = d.ok(&["show"]);
    assert!(
        show.contains(" 1(gen0): generator flows=10") && show.contains(" 2(sink): null"),
        "{show}"
    );
    assert!(d.dir.join("rec.pcap").exists());
    d.ok(&[
        "add-port",
        r#"{"name": "p9", "number": 9, "type": "null", "vlan": {"access": 10}}"#,
    ]);
    let show = d.ok(&["show"]);
    assert!(
        show.contains(" 9(p9): null") && show.contains("access vlan 10"),
        "{show}"
    );
    let e = d.fails(&["add-port", r#"{"name": "p9", "number": 10}"#]);
    assert!(e.contains("p9") && e.contains("clashes"), "{e}");
    let e = d.fails(&["add-port", r#"{"name": "p10", "number": 10, "typo": 1}"#]);
    assert!(e.contains("typo"), "{e}");
    d.ok(&["del-port", "p9"]);
    assert!(!d.ok(&["show"]).contains("p9"));
    assert!(d.fails(&["del-port", "p9"]).contains("p9"));

    d.wait_for_traffic();
    let flow = "in_port=1,udp,nw_src=10.0.0.0,nw_dst=172.16.0.1,tp_src=1024,tp_dst=5001";
    let t = d.ok(&["trace", flow]);
    assert!(t.contains("Conntrack zone 5: connection found"), "{t}");
    assert!(
        t.contains("ct_state=new|trk") && t.contains("Datapath actions: ct(commit,zone=5),2"),
        "{t}"
    );
    let t = d.ok(&["trace", flow, "--ct-next", "trk+est"]);
    assert!(t.contains("resume conntrack with ct_state=est|trk"), "{t}");
    let t = d.ok(&[
        "trace",
        "in_port=1,udp,nw_src=10.9.9.9,nw_dst=172.16.0.1,tp_src=1,tp_dst=2",
    ]);
    assert!(t.contains("Conntrack zone 5: no connection"), "{t}");
    let e = d.fails(&["trace", "in_port=1,udp,nw_srcc=1.2.3.4"]);
    assert!(e.contains("nw_srcc"), "{e}");
    assert!(d.ok(&["version"]).starts_with("ferrovsd (ferrovs) "));
    assert!(d.fails(&["frobnicate"]).contains("'frobnicate'"));
}

#[test]
fn socket_metrics_second_daemon_and_exit() {
    let mut d = Daemon::start();
    let sock = d.socket();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let dmode = std::fs::metadata(sock.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dmode & 0o777, 0o700);

    let log = d.log();
    let addr = log
        .split("metrics on http://")
        .nth(1)
        .and_then(|s| s.split("/metrics").next())
        .unwrap_or_else(|| panic!("no metrics address in log:\n{log}"))
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    d.wait_for_traffic();
    let get = |path: &str| {
        let mut s = TcpStream::connect(&addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r
    };
    let m = get("/metrics");
    assert!(m.starts_with("HTTP/1.1 200 OK\r\n"), "{m}");
    assert!(m.contains("Content-Type: text/plain; version=0.0.4"), "{m}");
    assert!(
        m.contains("# TYPE ferrovs_pmd_packets_total counter"),
        "{m}"
    );
    assert!(
        m.contains("ferrovs_pmd_packets_total{pmd=\"0\"} 2000"),
        "{m}"
    );
    assert!(
        m.contains("ferrovs_port_rx_packets_total{port=\"gen0\",number=\"1\"} 2000"),
        "{m}"
    );
    assert!(m.contains("ferrovs_ct_connections 10"), "{m}");
    assert!(
        m.contains("ferrovs_ct_zone_connections{zone=\"5\"} 10"),
        "{m}"
    );
    assert!(get("/other").starts_with("HTTP/1.1 404"));

    // A second daemon on the same socket refuses to start.
    let second = Command::new(FERROVSD)
        .arg("--config")
        .arg(d.dir.join("ferrovsd.json"))
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let e = String::from_utf8_lossy(&second.stderr);
    assert!(e.contains("already running"), "{e}");
    assert!(d.ok(&["version"]).contains("ferrovsd"));

    assert_eq!(d.ok(&["exit"]), "");
    assert_eq!(d.wait_exit(), Some(0));
    assert!(!sock.exists());
    let e = d.fails(&["version"]);
    assert!(
        e.contains("cannot connect to ferrovsd") && e.contains("is ferrovsd running"),
        "{e}"
    );
}

#[test]
fn sigterm_stops_cleanly_and_flushes_recordings() {
    let mut d = Daemon::start_full(
        r#", { "name": "rec", "number": 3, "type": "pcap", "options": { "tx": "rec.pcap" } }"#,
        "priority=1,in_port=1,actions=output:3\n",
    );
    d.wait_for_traffic();
    let pid = nix::unistd::Pid::from_raw(d.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(d.wait_exit(), Some(0));
    assert!(!d.socket().exists());
    assert!(d.log().contains("shutting down"));
    // Every packet reached the recording: header + 2000 records of 64 bytes.
    let len = std::fs::metadata(d.dir.join("rec.pcap")).unwrap().len();
    assert_eq!(len, 24 + 2000 * (16 + 64));
}

#[test]
fn bad_configs_exit_1_naming_the_problem() {
    let dir = temp_dir();
    let run = |cfg: &str| {
        std::fs::write(dir.join("c.json"), cfg).unwrap();
        let o = Command::new(FERROVSD)
            .arg("--config")
            .arg(dir.join("c.json"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{cfg}");
        String::from_utf8(o.stderr).unwrap()
    };
    let sock = dir.join("s.sock");
    let base = format!(r#""control_socket": "{}", "ports": []"#, sock.display());
    let e = run(&format!(r#"{{ {base}, "pmdd": {{}} }}"#));
    assert!(e.starts_with("ferrovsd: ") && e.contains("pmdd"), "{e}");
    let e = run(&format!(
        r#"{{ {base}, "conntrack": {{ "zone_limits": {{ "x": 1 }} }} }}"#
    ));
    assert!(e.contains("'x'"), "{e}");
    let e = run(&format!(
        r#"{{ {base}, "conntrack": {{ "pressure": {{ "high_pct": 70 }} }} }}"#
    ));
    assert!(
        e.contains("conntrack.pressure.low_pct=80: must not exceed high_pct=70"),
        "{e}"
    );
    let e = run(&format!(r#"{{ {base}, "flows": "missing.flows" }}"#));
    assert!(e.contains("missing.flows"), "{e}");
    std::fs::write(
        dir.join("bad.flows"),
        "priority=1,actions=drop\n\npriority=2,ip,actions=nope\n",
    )
    .unwrap();
    let e = run(&format!(r#"{{ {base}, "flows": "bad.flows" }}"#));
    assert!(e.contains("line 3") && e.contains("nope"), "{e}");
    let e = run(&format!(
        r#"{{ {base}, "metrics": {{ "listen": "0.0.0.0:9464" }} }}"#
    ));
    assert!(e.contains("loopback"), "{e}");
    assert!(!sock.exists(), "a failed start leaves no socket behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn trace_uses_the_live_connection_direction() {
    // The generator also sends the server's replies: connections become
    // established.
    let d = Daemon::start_gen("", FLOWS, r#", "replies": true"#);
    d.wait_for_traffic();
    let orig = "in_port=1,udp,nw_src=10.0.0.0,nw_dst=172.16.0.1,tp_src=1024,tp_dst=5001";
    let t = d.ok(&["trace", orig]);
    assert!(
        t.contains("connection found, original direction: resuming with ct_state=est|trk"),
        "{t}"
    );
    let reply = "in_port=1,udp,nw_src=172.16.0.1,nw_dst=10.0.0.0,tp_src=5001,tp_dst=1024";
    let t = d.ok(&["trace", reply]);
    assert!(
        t.contains("connection found, reply direction: resuming with ct_state=est|rpl|trk"),
        "{t}"
    );
    let j: serde_json::Value = serde_json::from_str(&d.ok(&["--json", "trace", reply])).unwrap();
    assert_eq!(j["ct_states"][0], "est|rpl|trk");
}

#[test]
fn control_socket_caps_clients() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let d = Daemon::start();
    // Hold the maximum number of idle clients; one more is turned away.
    let held: Vec<UnixStream> = (0..datapath::control::server::MAX_CONNECTIONS)
        .map(|_| UnixStream::connect(d.socket()).unwrap())
        .collect();
    // The held ones are counted once the listener has accepted them.
    d.wait_until(
        || {
            let extra = UnixStream::connect(d.socket()).unwrap();
            let mut line = String::new();
            BufReader::new(extra).read_line(&mut line).unwrap();
            line.contains("too many control connections")
        },
        "the connection cap to apply",
    );
    drop(held);
    // Clients are served again once the others are gone.
    d.wait_until(|| d.ctl(&["version"]).status.success(), "service to resume");
    // A client streaming a line that never ends does not disturb others
    // (the per-request bound itself, 64 MiB, is not exercised here).
    let mut s = UnixStream::connect(d.socket()).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..4 {
        s.write_all(&chunk).unwrap();
    }
    drop(s);
    assert!(d.ctl(&["version"]).status.success());
}

#[test]
fn ipf_get_status_shows_fragment_state_and_ipf_set_changes_limits() {
    use ct::build::{ethernet_with, Builder, Tcp};
    use ct::frag::FragLayout;
    use pcap_file::pcap::{PcapPacket, PcapWriter};

    let flows = "\
table=0,priority=10,in_port=3,ip,actions=ct(table=1,zone=7)
table=0,priority=0,actions=drop
table=1,priority=10,ct_state=+trk+new-inv,ip,actions=ct(commit,zone=7),output:4
";
    let b = Builder::v4("10.0.0.1".parse().unwrap(), "192.0.2.9".parse().unwrap());
    let cut = |l3: &[u8], cuts: &[u32]| {
        FragLayout::for_datagram(l3, 0, cuts)
            .unwrap()
            .fragments(l3)
            .unwrap()
    };
    // A UDP datagram in 3 fragments (out of order), the first fragment of
    // a datagram that never completes, and a tiny TCP first fragment.
    let udp = cut(&b.clone().ident(1).udp(5000, 53, &[7; 3000]), &[1480, 2960]);
    let lone = cut(&b.clone().ident(2).udp(5001, 53, &[7; 3000]), &[1480]);
    let tcp = Tcp::new(1234, 22).payload(&[0; 64]);
    let tiny = cut(&b.clone().ident(3).tcp(&tcp), &[8]);
    let frames: Vec<Vec<u8>> = [&udp[2], &udp[0], &udp[1], &lone[0], &tiny[0]]
        .iter()
        .map(|l3| ethernet_with([2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 4], l3))
        .collect();

    let dir = temp_dir();
    let mut w = PcapWriter::new(std::fs::File::create(dir.join("in.pcap")).unwrap()).unwrap();
    for f in &frames {
        w.write_packet(&PcapPacket::new(Duration::ZERO, f.len() as u32, f))
            .unwrap();
    }
    drop(w);
    let ports = r#", { "name": "in", "number": 3, "type": "pcap", "options": { "rx": "in.pcap" } },
        { "name": "rec", "number": 4, "type": "pcap", "options": { "tx": "rec.pcap" } }"#;
    // The daemon runs in its own directory: move the capture there.
    let d = Daemon::start_full_in(dir, ports, flows);

    let status = || -> serde_json::Value {
        serde_json::from_str(&d.ok(&["--json", "ipf-get-status"])).unwrap()
    };
    d.wait_until(
        || {
            let s = status();
            s["counters"]["v4"]["reassembled"] == 1
                && s["counters"]["v4"]["tiny"] == 1
                && s["datapath"]["fragments_sent"] == 3
        },
        "the fragments to be processed",
    );
    let s = status();
    assert_eq!(s["datagrams"], 1, "{s}");
    assert_eq!(s["zones"][0]["zone"], 7, "{s}");
    assert_eq!(s["counters"]["v4"]["accepted"], 4, "{s}");
    assert_eq!(s["datapath"]["held"], 3, "{s}");
    assert_eq!(s["datapath"]["rejected"], 1, "{s}");
    assert_eq!(s["config"]["timeout_v4_ms"], 30000, "{s}");

    let text = d.ok(&["ipf-get-status", "-m"]);
    assert!(text.contains("in progress: datagrams=1"), "{text}");
    assert!(
        text.contains("  reassembled: 1\n") && text.contains("  tiny: 1\n"),
        "{text}"
    );
    assert!(
        text.contains("zone=7 src=10.0.0.1 dst=192.0.2.9 id=0x2 proto=17 fragments=1 bytes=1480 first=yes last=no"),
        "{text}"
    );

    d.ok(&["ipf-set", "max_fragments=8", "timeout_v6_ms=1000"]);
    let s = status();
    assert_eq!(
        (&s["config"]["max_fragments"], &s["config"]["timeout_v6_ms"]),
        (&serde_json::json!(8), &serde_json::json!(1000))
    );
    let e = d.fails(&["ipf-set", "max_fragments=4", "maxbytes=1"]);
    assert!(e.contains("'maxbytes'"), "{e}");
    let e = d.fails(&["ipf-set", "max_fragments=0"]);
    assert!(e.contains("max_fragments: 0"), "{e}");
    assert_eq!(
        status()["config"]["max_fragments"],
        8,
        "rejected set changed nothing"
    );
    assert!(d.fails(&["ipf-get-status", "-x"]).contains("'-x'"));

    // The same counters on the metrics endpoint.
    let log = d.log();
    let addr = log
        .split("metrics on http://")
        .nth(1)
        .and_then(|s| s.split("/metrics").next())
        .unwrap_or_else(|| panic!("no metrics address in log:\n{log}"))
        .to_string();
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut m = String::new();
    s.read_to_string(&mut m).unwrap();
    for line in [
        "ferrovs_ipf_datagrams 1",
        "ferrovs_ipf_reassembled_total{family=\"ipv4\"} 1",
        "ferrovs_ipf_accepted_total{family=\"ipv4\"} 4",
        "ferrovs_ipf_rejected_total{family=\"ipv4\",reason=\"tiny\"} 1",
        "ferrovs_ipf_rejected_total{family=\"ipv6\",reason=\"overlaps\"} 0",
    ] {
        assert!(m.contains(line), "{line} not in\n{m}");
    }
}

/// A running `ferrovs-ctl events ...`; its stdout lines arrive on a channel.
struct EventStream {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl EventStream {
    fn start(d: &Daemon, args: &[&str]) -> EventStream {
        use std::io::BufRead;
        let mut child = Command::new(CTL)
            .arg("--socket")
            .arg(d.socket())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Subscribed once it says so on stderr.
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        assert!(first.contains("listening for conntrack events"), "{first}");
        let (tx, lines) = std::sync::mpsc::channel();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        EventStream { child, lines }
    }

    fn take(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.lines
                    .recv_timeout(Duration::from_secs(20))
                    .unwrap_or_else(|e| panic!("event {i} of {n}: {e}"))
            })
            .collect()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn events_stream_destroys_with_counters_until_the_client_leaves() {
    let d = Daemon::start();
    d.wait_for_traffic();
    let conns = d.ok(&["dump-conntrack", "zone=5"]);
    assert_eq!(conns.lines().count(), 10, "{conns}");

    let e = d.fails(&["events", "type=bogus"]);
    assert!(e.contains("type=bogus"), "{e}");
    assert!(d.ok(&["help"]).contains("events [zone=N]"));

    let text = EventStream::start(&d, &["events", "zone=5", "type=destroy"]);
    let json = EventStream::start(&d, &["--json", "events", "type=destroy"]);
    let other_zone = EventStream::start(&d, &["events", "zone=6"]);
    d.ok(&["flush-conntrack", "zone=5"]);

    let lines = text.take(10);
    for l in &lines {
        assert!(l.starts_with("[DESTROY] udp,orig=(src="), "{l}");
        assert!(l.contains(",zone=5,packets=("), "{l}");
    }
    let objs = json.take(10);
    let mut pkts = 0;
    for o in &objs {
        let v: serde_json::Value = serde_json::from_str(o).unwrap();
        assert_eq!(v["type"], "DESTROY", "{o}");
        assert_eq!(v["cause"], "flushed", "{o}");
        assert_eq!(v["conn"]["zone"], 5, "{o}");
        assert!(v["end_ns"].as_u64().unwrap() >= v["conn"]["start_ns"].as_u64().unwrap());
        pkts += v["conn"]["counters"][0]["packets"].as_u64().unwrap();
    }
    // The generator's 2000 packets went to these 10 connections (each
    // passes two ct actions, both counted by the connection).
    assert!(pkts >= 2000, "{pkts}");
    assert!(other_zone
        .lines
        .recv_timeout(Duration::from_millis(300))
        .is_err());

    // Clients that leave are unsubscribed (their slots are reused by the
    // next subscriber) and the daemon goes on answering.
    drop(text);
    drop(json);
    drop(other_zone);
    let again = EventStream::start(&d, &["events"]);
    drop(again);
    assert!(d.ok(&["version"]).starts_with("ferrovsd"));
}

/// Sum of one numeric field over every thread of `pmd-stats-show --json`.
fn pmd_sum(stats: &serde_json::Value, field: &str) -> u64 {
    stats["pmds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[field].as_u64().unwrap())
        .sum()
}

#[test]
fn flow_offload_from_the_config_shows_in_pmd_stats() {
    for offload in [true, false] {
        let pmd = if offload {
            r#", "flow_offload": true"#
        } else {
            ""
        };
        // Replies make the connections established: what the fast path takes.
        let d = Daemon::start_tuned(
            r#", "replies": true"#,
            Tuning {
                pmd,
                ..Default::default()
            },
        );
        d.wait_for_traffic();
        let j: serde_json::Value =
            serde_json::from_str(&d.ok(&["--json", "pmd-stats-show"])).unwrap();
        assert_eq!(j["pmds"][0]["flow_offload"], offload, "{j}");
        let hits = pmd_sum(&j, "offload_hits");
        let installs = pmd_sum(&j, "offload_installs");
        let text = d.ok(&["pmd-stats-show"]);
        if offload {
            assert!(hits > 0 && installs > 0, "offload on: {j}");
            assert!(
                hits < pmd_sum(&j, "packets"),
                "handshakes take the classic path: {j}"
            );
            assert!(
                text.contains(&format!("  offload hits: {hits}\n")),
                "{text}"
            );
            assert!(
                text.contains("offload installs: ") && text.contains("offload entries: "),
                "{text}"
            );
        } else {
            assert_eq!((hits, installs), (0, 0), "offload off: {j}");
            assert!(!text.contains("offload hits"), "{text}");
        }
    }
}

fn pressure_json(d: &Daemon) -> serde_json::Value {
    serde_json::from_str(&d.ok(&["--json", "ct-get-pressure"])).unwrap()
}

#[test]
fn pressure_from_the_config_then_set_and_get() {
    // 10 established connections out of max_conns=100: 10% fill, above
    // the configured high mark of 5%.
    let d = Daemon::start_tuned(
        r#", "replies": true"#,
        Tuning {
            conntrack: r#", "max_conns": 100,
               "pressure": { "high_pct": 5, "low_pct": 4, "embryonic_secs": 3 }"#,
            ..Default::default()
        },
    );
    d.wait_for_traffic();
    let j = pressure_json(&d);
    assert_eq!(
        j["config"],
        serde_json::json!({ "high_pct": 5, "low_pct": 4, "embryonic_secs": 3, "evict_assured": false }),
        "config applied at startup: {j}"
    );
    assert_eq!(
        (&j["connections"], &j["max_conns"]),
        (&10.into(), &100.into()),
        "{j}"
    );
    assert_eq!(j["under_pressure"], true, "{j}");
    assert_eq!(j["episodes"], 1, "{j}");
    let text = d.ok(&["ct-get-pressure"]);
    assert_eq!(
        text,
        "high=5% low=4% embryonic=3s evict-assured=off\n\
         under pressure: yes (episodes: 1)\n\
         connections: 10/100 (10.0%)\n"
    );

    // A partial update keeps the other fields; 10% is below the new low
    // mark, so pressure ends at once.
    assert_eq!(
        d.ok(&["ct-set-pressure", "high=50", "low=40", "evict-assured=on"]),
        ""
    );
    let j = pressure_json(&d);
    assert_eq!(
        j["config"],
        serde_json::json!({ "high_pct": 50, "low_pct": 40, "embryonic_secs": 3, "evict_assured": true }),
        "{j}"
    );
    assert_eq!(
        (&j["under_pressure"], &j["episodes"]),
        (&false.into(), &1.into()),
        "{j}"
    );

    // Rejected settings change nothing and name the token.
    for (args, want) in [
        (
            &["ct-set-pressure", "low=60"][..],
            "'low=60': low_pct=60: must not exceed high_pct=50",
        ),
        (
            &["ct-set-pressure", "embryonic=1", "bogus=1"][..],
            "'bogus=1'",
        ),
        (
            &["ct-set-pressure", "evict-assured=maybe"][..],
            "'evict-assured=maybe'",
        ),
        (&["ct-set-pressure"][..], "expected [high=N]"),
        (&["ct-get-pressure", "zone=1"][..], "'zone=1'"),
    ] {
        let e = d.fails(args);
        assert!(e.contains(want), "{args:?}: {e}");
    }
    assert_eq!(pressure_json(&d)["config"]["embryonic_secs"], 3);
    assert_eq!(pressure_json(&d)["config"]["low_pct"], 40);
    let help = d.ok(&["help"]);
    assert!(
        help.contains("ct-get-pressure") && help.contains("ct-set-pressure [high=N]"),
        "{help}"
    );
}
