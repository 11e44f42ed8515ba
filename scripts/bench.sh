#!/usr/bin/env bash
# Conntrack benchmark table (issue 2's figures). Each row is the median of
# RUNS runs. The machine may be shared and noisy: compare ratios within one
# run of this script rather than absolute numbers across runs.
#
#   scripts/bench.sh            # full table
#   RUNS=5 PACKETS=20000000 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
PACKETS=${PACKETS:-10000000}
cargo build --release --locked -p ct --bins >/dev/null
b=./target/release/ct-bench

echo "== established traffic: ct-bench --threads T --packets $PACKETS --batch 32 --conns C (median of $RUNS)"
printf '%-8s %-9s %s\n' threads conns mpps
for t in 1 2; do
    for c in 1 32 1000 100000 1000000; do
        m=$($b --threads "$t" --packets "$PACKETS" --batch 32 --conns "$c" --runs "$RUNS" | sed -n 's/^mpps=//p')
        printf '%-8s %-9s %s\n' "$t" "$c" "$m"
    done
done

echo
echo "== connection setup: ct-bench --mode setup --threads 1 --packets 1000000"
$b --mode setup --threads 1 --packets 1000000 --runs "$RUNS" | tail -n 1

echo
echo "== memory per connection: ct-bench --mode memory --conns 1000000"
$b --mode memory --conns 1000000 --runs 1 | tail -n 1

echo
echo "== control passes with traffic: ct-bench --mode flush --conns 1000000 (flush half, dump, expire)"
$b --mode flush --conns 1000000 --runs "$RUNS"
