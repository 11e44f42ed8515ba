#!/usr/bin/env bash
# The main job: a stateful firewall on software ports (no NIC, no root).
#
#   scripts/demo.sh [ferrovs-demo options]     e.g. --seconds 10 --conns 100000
#
# Builds the release binaries once, then runs ferrovs-demo: generator
# traffic and a capture of unsolicited packets go through
# ct(table=..,zone=1); inside connections are committed, outside traffic is
# admitted only when +est. Prints forwarded/dropped counts, the rule
# counters, the conntrack table and the packet rate.
#
# The second mode (root): two network namespaces switched over veth pairs
# with AF_PACKET ports by ferrovsd: scripts/demo-netns.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "demo.sh: cargo (Rust toolchain) is required" >&2; exit 1; }
cargo build --release --locked -q -p datapath --bin ferrovs-demo
exec target/release/ferrovs-demo "$@"
