//! Random control commands against a live daemon state: none panics, and a
//! command that fails leaves the flow table, the ports, the conntrack
//! limits, the timeout policies and the pressure settings exactly as they
//! were.

use std::path::Path;

use datapath::config::DaemonConfig;
use datapath::control::commands::dispatch;
use datapath::control::protocol::Request;
use datapath::daemon::Daemon;
use proptest::prelude::*;

fn daemon() -> std::sync::Arc<Daemon> {
    let cfg: DaemonConfig = serde_json::from_str(
        r#"{ "pmd": { "threads": 1, "idle_sleep_us": 200 },
             "ports": [ { "name": "a", "number": 1, "type": "null" },
                        { "name": "b", "number": 2, "type": "null" } ] }"#,
    )
    .unwrap();
    let (d, _rx) = Daemon::start(&cfg, Path::new(".")).unwrap();
    d.sw.bridge
        .ofctl(
            "add-flow",
            "table=0,priority=5,ip,actions=ct(table=1,zone=3)",
            0,
        )
        .unwrap();
    d
}

/// Everything a failed command must not touch, as text.
fn state(d: &Daemon) -> String {
    let now = d.sw.clock.now_ms();
    let flows = d.sw.bridge.ofctl("dump-flows", "", now).unwrap();
    let flows: Vec<&str> = flows
        .lines()
        .map(|l| l.split_once(" table=").map_or(l, |(_, r)| r)) // drop cookie/duration
        .collect();
    let ports: Vec<String> =
        d.sw.port_entries()
            .iter()
            .map(|e| e.port.name().to_string())
            .collect();
    let policies = format!("{:?}", d.sw.ct.policies.list());
    let limits: Vec<String> = (0..8u16)
        .map(|z| format!("{z}:{:?}", d.sw.ct.zones.limit(ct::Zone(z))))
        .collect();
    let pressure = d.sw.ct.pressure_status().config;
    format!("{flows:?}\n{ports:?}\n{policies}\n{limits:?}\n{pressure:?}")
}

const COMMANDS: &[&str] = &[
    "add-flow",
    "add-flows",
    "mod-flows",
    "del-flows",
    "dump-flows",
    "dump-conntrack",
    "flush-conntrack",
    "dump-expectations",
    "ct-stats-show",
    "ct-set-limits",
    "ct-get-limits",
    "ct-del-limits",
    "ct-get-pressure",
    "ct-set-pressure",
    "timeout-policy",
    "pmd-stats-show",
    "pmd-rxq-show",
    "dump-dp-flows",
    "add-port",
    "del-port",
    "show",
    "trace",
    "version",
    "help",
    "bogus",
    "",
];

const TOKENS: &[&str] = &[
    "add",
    "del",
    "list",
    "zone=3",
    "zone=70000",
    "limit=5",
    "default=9",
    "ip",
    "tcp",
    "priority=7",
    "actions=drop",
    "actions=output:2",
    "actions=ct(commit)",
    "in_port=1",
    "ct_nw_src=10.0.0.1",
    "ct_nw_proto=6",
    "udp_first=3",
    "nonsense=1",
    "high=95",
    "low=99",
    "embryonic=0",
    "evict-assured=on",
    "--strict",
    "{\"name\":\"c\",\"number\":3}",
    "{\"name\":\"a\",\"number\":1}",
    "{bad json",
    "a",
    "b",
    "c",
    "short",
    "table=300",
    "nw_src=300.1.1.1",
    "ct_state=+trk+est",
    "--ct-next",
    "trk,new",
    "=",
    ",",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_commands_never_panic_and_failures_change_nothing(
        script in proptest::collection::vec(
            (0..COMMANDS.len(), proptest::collection::vec(0..TOKENS.len(), 0..4), any::<bool>()),
            1..6,
        ),
    ) {
        let d = daemon();
        for (c, toks, json) in script {
            let before = state(&d);
            let req = Request {
                command: COMMANDS[c].to_string(),
                args: toks.iter().map(|&t| TOKENS[t].to_string()).collect(),
                json,
            };
            if COMMANDS[c] == "exit" {
                continue;
            }
            let r = dispatch(&d, &req);
            if let Err(e) = r {
                prop_assert!(!e.is_empty());
                prop_assert_eq!(&before, &state(&d), "failed {:?} changed the switch: {}", req, e);
            }
        }
        d.stop();
    }
}
