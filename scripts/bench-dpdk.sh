#!/usr/bin/env bash
# DPDK benchmark: ferrovs over net_null / net_pcap vdevs side by side with
# dpdk-testpmd --forward-mode=io on the same devices, without and with
# hugepages (see datapath/src/bin/dpdk-bench.rs for the cells).
#
#   scripts/bench-dpdk.sh [dpdk-bench options, e.g. --runs 5 --seconds 5]
#
# Installs libdpdk-dev/dpdk-dev when missing (Debian), builds with
# --features dpdk, and as root reserves 1 GiB of 2 MiB hugepages (and mounts
# hugetlbfs) when fewer are free; without root the hugepage cells are
# skipped with a message. Results: the table on stdout and JSON lines in
# target/bench-report/dpdk-bench.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
pkg-config --exists libdpdk 2>/dev/null || need+=(libdpdk-dev pkg-config libclang1-14 libclang-common-14-dev)
command -v dpdk-testpmd >/dev/null || need+=(dpdk-dev)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    else
        echo "bench-dpdk: missing ${need[*]} (install them, or run as root)" >&2
        exit 1
    fi
fi

if [ "$(id -u)" = 0 ]; then
    free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
    if [ "${free:-0}" -lt 512 ]; then
        total=$(cat /proc/sys/vm/nr_hugepages)
        echo $((total + 512 - free)) > /proc/sys/vm/nr_hugepages || true
    fi
    mount | grep -q hugetlbfs || { mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages; } || true
fi

cargo build --release -p datapath --features dpdk --bin dpdk-bench
mkdir -p target/bench-report
./target/release/dpdk-bench --json-out target/bench-report/dpdk-bench.jsonl "$@"
