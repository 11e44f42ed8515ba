#!/usr/bin/env bash
# The one test command: installs what a fresh machine lacks, then runs the
# format check, clippy and every test of the workspace.
#
#   scripts/test.sh            # everything
#   FERROVS_QUICK=1 scripts/test.sh   # skip installs (developer loop)
#
# Tests that need root or network namespaces check for them and run here
# (CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# --- install what is missing ------------------------------------------------
need_pkgs=()
command -v ovs-ofctl >/dev/null 2>&1 || need_pkgs+=(openvswitch-common)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)   # veth pairs, namespaces
command -v ethtool >/dev/null 2>&1 || need_pkgs+=(ethtool) # netns test: offloads off
command -v ping >/dev/null 2>&1 || need_pkgs+=(iputils-ping)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3) # netns test: TCP transfer
# Real-traffic suite (tests/tests/system_traffic.rs): curl as HTTP (later FTP
# and TFTP) client, scapy for injected segments, pyftpdlib for the FTP
# scenarios; the modules are looked for in Debian's python3 (/usr/bin).
[ -x /usr/bin/python3 ] || need_pkgs+=(python3)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
/usr/bin/python3 -c 'import scapy' >/dev/null 2>&1 || need_pkgs+=(python3-scapy)
/usr/bin/python3 -c 'import pyftpdlib' >/dev/null 2>&1 || need_pkgs+=(python3-pyftpdlib)
# dpdk-bindings (a workspace member outside default-members): the system DPDK
# found through pkg-config, and libclang (library + builtin headers) for bindgen.
command -v pkg-config >/dev/null 2>&1 || need_pkgs+=(pkg-config)
pkg-config --exists libdpdk 2>/dev/null || need_pkgs+=(libdpdk-dev)
command -v dpdk-testpmd >/dev/null 2>&1 || need_pkgs+=(dpdk-dev) # testpmd_memif (Debian ships dpdk-testpmd in dpdk-dev)
command -v tc >/dev/null 2>&1 || need_pkgs+=(iproute2) # dpdk_hw_offload_tap: the kernel's tc flower check
grep -q 'libclang\(-[0-9.]*\)\?\.so' < <(ldconfig -p 2>/dev/null) || need_pkgs+=(libclang1-14)
compgen -G '/usr/lib/llvm-*/lib/clang/*/include/stddef.h' >/dev/null || need_pkgs+=(libclang-common-14-dev)
if [ "${FERROVS_QUICK:-0}" != 1 ] && [ ${#need_pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing ${need_pkgs[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
    else
        echo "missing ${need_pkgs[*]} and cannot apt-get install (not root?)" >&2
        exit 1
    fi
fi
command -v ovs-ofctl >/dev/null 2>&1 && export FERROVS_REQUIRE_OVS=1
command -v dpdk-testpmd >/dev/null 2>&1 && export FERROVS_REQUIRE_TESTPMD=1
# As root the tests that need it (veth pairs for AF_PACKET) must run, not skip.
if [ "$(id -u)" = 0 ]; then export FERROVS_REQUIRE_ROOT=1; fi

if ! cargo fmt --version >/dev/null 2>&1; then rustup component add rustfmt; fi
if ! cargo clippy --version >/dev/null 2>&1; then rustup component add clippy; fi

# --- static checks -----------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo clippy (datapath --features dpdk)"
cargo clippy -p datapath --features dpdk --all-targets --locked -- -D warnings

# --- tool smoke runs (release build, small sizes) ----------------------------
log "building release tools"
cargo build --release --locked -p ct --bins
log "bench.sh --quick (benchmark matrix and report, small sizes)"
scripts/bench.sh --quick >target/bench-quick.log 2>&1 \
    || { tail -n 40 target/bench-quick.log; echo "scripts/bench.sh --quick failed" >&2; exit 1; }
grep -E '^\[[0-9]+/[0-9]+\]|^== ' target/bench-quick.log
grep -q '^| established-1T | conns |' target/bench-report/report.md
grep -q '^| flush-command | entries |' target/bench-report/report.md
grep -q '<polyline' target/bench-report/mpps-vs-conns.svg
log "extract-bench smoke run"
cargo build --release --locked -p datapath --bin extract-bench
./target/release/extract-bench --runs 1 --packets 100000 --port-packets 100000 | tail -n 3
log "ct-replay over the golden traces"
for f in ct/tests/golden/*.pcap; do
    ./target/release/ct-replay "$f" | diff -u "${f%.pcap}.expected" - \
        || { echo "ct-replay disagrees with ${f%.pcap}.expected" >&2; exit 1; }
done

# --- tests (last, so the runner's summary closes the log) --------------------
log "DPDK ports over vdevs (datapath --features dpdk)"
cargo test -p datapath --features dpdk --locked --test dpdk_ports --test dpdk_pcap --test daemon_dpdk --test testpmd_memif
log "rte_flow hardware offload (datapath --features dpdk; the net_tap test needs root)"
cargo test -p datapath --features dpdk --locked --test hw_offload_engine --test dpdk_hw_offload --test daemon_hw_offload --test dpdk_hw_offload_tap

log "dpdk-bench smoke (testpmd io, one-rule and ct pipelines over vdevs, no hugepages)"
cargo build --release -p datapath --features dpdk --locked --bin dpdk-bench
./target/release/dpdk-bench --runs 1 --seconds 1 --warmup 1 --memory no-huge \
    --cells testpmd-null,one-rule-null,ct-pcap
log "cargo test"
cargo test --workspace --locked 2>&1 | tee target/test.log
if grep -qE '^test result: FAILED|^error' target/test.log; then exit 1; fi
passed=$(grep -oE '^test result: ok\. [0-9]+ passed' target/test.log | awk '{s+=$4} END {print s+0}')
echo
echo "ferrovs: $passed passed, 0 failed"
