#!/usr/bin/env bash
# The benchmark matrix: conntrack (ct-bench), classifier (classifier-bench),
# when it is built the datapath pipeline (pipeline-bench), and a selective
# conntrack flush through the daemon's control socket (flush-bench). Every bench
# appends its cells to target/bench-report/results.jsonl (--json-out); then
# bench-report writes target/bench-report/report.md (markdown tables) and
# target/bench-report/mpps-vs-conns.svg (Mpps against connection count).
#
#   scripts/bench.sh            # full matrix, a few minutes
#   scripts/bench.sh --quick    # fewer packets and runs: under a minute once built
#   RUNS=5 PACKETS=20000000 scripts/bench.sh
#   PIPELINE_BENCH_ARGS="..." scripts/bench.sh   # extra pipeline-bench flags
#
# The machine may be shared and noisy: compare figures within one report
# rather than absolute numbers across reports (the report records nproc and
# the load average).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        -h | --help)
            sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "bench.sh: unknown argument '$arg' (try --help)" >&2
            exit 2
            ;;
    esac
done

if [ "$quick" = 1 ]; then
    RUNS=${RUNS:-1}
    PACKETS=${PACKETS:-1000000}     # established: packets per thread
    SETUP_CONNS=${SETUP_CONNS:-200000}
    CONTROL_CONNS=${CONTROL_CONNS:-100000}
    CLS_ARGS=(--runs "$RUNS" --ms 50 --flows 10,1000,100000 --masks 1,8 --flow-mod-flows 1000)
else
    RUNS=${RUNS:-3}
    PACKETS=${PACKETS:-10000000}
    SETUP_CONNS=${SETUP_CONNS:-1000000}
    CONTROL_CONNS=${CONTROL_CONNS:-1000000}
    CLS_ARGS=(--runs 5 --ms 300)
fi

out=target/bench-report
results=$out/results.jsonl
logs=$out/logs
mkdir -p "$logs"
: >"$results"
rm -f "$logs"/*.log
load_before=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

echo "== building release binaries (cargo build --release -p ct -p ofproto -p datapath --bins)"
cargo build --release --locked -p ct -p ofproto -p datapath --bins
bin=target/release

# The steps: "label|command ...". Each command gets --json-out appended.
steps=()
for t in 1 2; do
    for c in 1 32 1000 100000 1000000; do
        steps+=("ct-bench established threads=$t conns=$c|$bin/ct-bench --threads $t --packets $PACKETS --batch 32 --conns $c --runs $RUNS")
    done
done
steps+=("ct-bench setup conns=$SETUP_CONNS|$bin/ct-bench --mode setup --threads 1 --packets $SETUP_CONNS --runs $RUNS")
steps+=("ct-bench memory conns=$CONTROL_CONNS|$bin/ct-bench --mode memory --conns $CONTROL_CONNS --runs 1")
steps+=("ct-bench flush conns=$CONTROL_CONNS|$bin/ct-bench --mode flush --conns $CONTROL_CONNS --runs $RUNS")
steps+=("classifier-bench ${CLS_ARGS[*]}|$bin/classifier-bench ${CLS_ARGS[*]}")
if [ -x "$bin/pipeline-bench" ]; then
    pargs=${PIPELINE_BENCH_ARGS:-}
    # --quick is passed on only if pipeline-bench says it takes it.
    if [ "$quick" = 1 ] && [ -z "$pargs" ] && "$bin/pipeline-bench" --help 2>/dev/null | grep -q -- '--quick'; then
        pargs=--quick
    fi
    steps+=("pipeline-bench $pargs|$bin/pipeline-bench $pargs")
    steps+=("pipeline-bench --setup $pargs|$bin/pipeline-bench --setup $pargs")
    # The flow-offload fast path against the classic path, side by side.
    steps+=("pipeline-bench --offload $pargs|$bin/pipeline-bench --offload --caches all --conns 1000,100000 $pargs")
else
    echo "note: $bin/pipeline-bench was not built (no such binary in the datapath crate yet):"
    echo "      the report has no pipeline suite."
fi

# Selective flush of 500k of 1M entries from the control socket while the
# PMD forwards (100k entries with --quick); exits 1 if the flush removed the
# wrong connections or forwarding stopped during it.
if [ "$quick" = 1 ]; then
    steps+=("flush-bench --quick|$bin/flush-bench --quick")
else
    steps+=("flush-bench --runs $RUNS|$bin/flush-bench --runs $RUNS")
fi

n=${#steps[@]}
start_all=$SECONDS
tty=0
[ -t 1 ] && tty=1
echo "== running $n benchmarks ($([ "$quick" = 1 ] && echo quick || echo full); runs=$RUNS) -> $results"
i=0
for step in "${steps[@]}"; do
    i=$((i + 1))
    label=${step%%|*}
    cmd=${step#*|}
    log=$(printf '%s/%02d-%s.log' "$logs" "$i" "${label%% *}")
    prefix=$(printf '[%d/%d] %s ...' "$i" "$n" "$label")
    t0=$SECONDS
    # Word splitting of $cmd is intended: the commands hold no quoted words.
    # shellcheck disable=SC2086
    $cmd --json-out "$results" >"$log" 2>&1 &
    pid=$!
    if [ "$tty" = 1 ]; then
        shown=-1
        while kill -0 "$pid" 2>/dev/null; do
            if [ $((SECONDS - t0)) != "$shown" ]; then
                shown=$((SECONDS - t0))
                printf '\r%s %ds' "$prefix" "$shown"
            fi
            sleep 0.2
        done
    else
        printf '%s' "$prefix"
    fi
    rc=0
    wait "$pid" || rc=$?
    took=$((SECONDS - t0))
    # On a terminal the line is rewritten in place; in a log it is appended.
    head=' '
    [ "$tty" = 1 ] && head=$'\r'"$prefix "
    if [ "$rc" != 0 ]; then
        printf '%sFAILED (exit %d) after %ds; end of %s:\n' "$head" "$rc" "$took" "$log"
        tail -n 20 "$log"
        exit 1
    fi
    # ct-bench ends with a key=value summary line: show it.
    summary=$(tail -n 1 "$log" | grep '=' | cut -c1-110 || true)
    printf '%s%ds (total %ds)  %s\n' "$head" "$took" $((SECONDS - start_all)) "$summary"
done

elapsed=$((SECONDS - start_all))
echo "== $(wc -l <"$results") result cells in ${elapsed}s; writing the report"
"$bin/bench-report" --input "$results" --out-dir "$out" \
    --command "scripts/bench.sh${*:+ $*}" \
    --note "Load average before the run: $load_before. Benchmarks took ${elapsed}s (build excluded). Per-step logs: $logs/." \
    >/dev/null
echo
cat "$out/report.md"
echo
echo "report:  $out/report.md"
echo "plot:    $out/mpps-vs-conns.svg"
echo "results: $results"
