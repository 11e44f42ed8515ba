#!/usr/bin/env bash
# Second demo mode (root): ferrovsd switches two network namespaces over
# veth pairs with AF_PACKET ports, through the stateful firewall.
#
#   sudo scripts/demo-netns.sh            # run the demo and check it
#   sudo scripts/demo-netns.sh --keep     # leave everything up afterwards
#
#   namespace A (10.9.0.1) --veth-- [port 1 | ferrovsd | port 2] --veth-- namespace B (10.9.0.2)
#
# A may open connections to B (committed in conntrack zone 9); B's traffic
# is admitted only when it belongs to one (+est, or +rel for ICMP errors).
# The script then checks: ping A->B works, a TCP transfer A->B completes
# intact, a TCP connection B->A is refused by the switch (times out), and
# ferrovs-ctl dump-conntrack shows the entries. Exit status 0 only if all
# of that holds (tests/tests/netns_firewall.rs runs it under scripts/test.sh).
#
# Binaries: $FERROVSD and $FERROVS_CTL if set, else target/release/ (built
# here if missing). Needs: ip (iproute2), ethtool, ping, python3.
# Transmit checksum offload stays on in the namespaces: the AF_PACKET
# port completes the partial checksums (tested by the TCP transfer).
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
[ "${1:-}" = "--keep" ] && keep=1
[ "$(id -u)" = 0 ] || { echo "demo-netns.sh: needs root (network namespaces, AF_PACKET)" >&2; exit 2; }
for t in ip ethtool ping python3; do
    command -v "$t" >/dev/null || { echo "demo-netns.sh: $t is required" >&2; exit 2; }
done
if [ -z "${FERROVSD:-}" ] || [ -z "${FERROVS_CTL:-}" ]; then
    cargo build --release --locked -q -p datapath --bin ferrovsd --bin ferrovs-ctl
    FERROVSD=target/release/ferrovsd
    FERROVS_CTL=target/release/ferrovs-ctl
fi

id=$$
nsa="fvA$id"; nsb="fvB$id"
va0="fva0$id"; va1="fva1$id"; vb0="fvb0$id"; vb1="fvb1$id"
work="$(mktemp -d /tmp/ferrovs-netns.XXXXXX)"
sock="$work/ferrovsd.sock"
daemon_pid=""

cleanup() {
    if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
    ip netns del "$nsa" 2>/dev/null || true
    ip netns del "$nsb" 2>/dev/null || true
    ip link del "$va0" 2>/dev/null || true
    ip link del "$vb0" 2>/dev/null || true
    rm -rf "$work"
}
if [ "$keep" = 0 ]; then trap cleanup EXIT; fi
step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; [ -f "$work/ferrovsd.log" ] && tail -n 30 "$work/ferrovsd.log" >&2; exit 1; }

step "namespaces $nsa (10.9.0.1) and $nsb (10.9.0.2), veth pairs $va0/$va1 and $vb0/$vb1"
ip netns add "$nsa"
ip netns add "$nsb"
ip link add "$va0" type veth peer name "$va1"
ip link add "$vb0" type veth peer name "$vb1"
ip link set "$va1" netns "$nsa"
ip link set "$vb1" netns "$nsb"
for dev in "$va0" "$vb0"; do
    echo 1 > "/proc/sys/net/ipv6/conf/$dev/disable_ipv6" 2>/dev/null || true
    # AF_PACKET sees what the kernel hands it: no merged segments (GRO
    # would hand it frames larger than a packet buffer). Checksums the
    # namespaces' stacks leave partial (transmit offload stays on) are
    # completed by the AF_PACKET port.
    ethtool -K "$dev" gro off gso off tso off >/dev/null 2>&1 || true
    ip link set "$dev" up
done
for pair in "$nsa:$va1:10.9.0.1" "$nsb:$vb1:10.9.0.2"; do
    IFS=: read -r ns dev addr <<<"$pair"
    ip netns exec "$ns" sh -c "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6" 2>/dev/null || true
    ip netns exec "$ns" ethtool -K "$dev" gso off tso off >/dev/null 2>&1 || true
    ip -n "$ns" addr add "$addr/24" dev "$dev"
    ip -n "$ns" link set "$dev" up
    ip -n "$ns" link set lo up
done

step "ferrovsd: ports 1=$va0 2=$vb0, stateful firewall in zone 9"
cat > "$work/firewall.flows" <<'EOF'
table=0,priority=10,arp,in_port=1,actions=output:2
table=0,priority=10,arp,in_port=2,actions=output:1
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=9)
table=0,priority=10,ip,in_port=2,actions=ct(table=2,zone=9)
table=1,priority=10,ip,ct_state=+trk+new-inv,actions=ct(commit,zone=9),output:2
table=1,priority=10,ip,ct_state=+trk+est-inv,actions=output:2
table=2,priority=10,ip,ct_state=+trk+est-inv,actions=output:1
table=2,priority=10,ip,ct_state=+trk+rel-inv,actions=output:1
EOF
cat > "$work/ferrovsd.json" <<EOF
{ "control_socket": "$sock",
  "pmd": { "threads": 1, "idle_sleep_us": 50 },
  "ports": [
    { "name": "$va0", "number": 1, "type": "afpacket", "options": { "ifname": "$va0" } },
    { "name": "$vb0", "number": 2, "type": "afpacket", "options": { "ifname": "$vb0" } } ],
  "flows": "firewall.flows" }
EOF
"$FERROVSD" --config "$work/ferrovsd.json" >"$work/ferrovsd.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || fail "ferrovsd did not start"
ctl() { "$FERROVS_CTL" --socket "$sock" "$@"; }
ctl show

step "ping A -> B"
ip netns exec "$nsa" ping -c 3 -i 0.2 -W 2 10.9.0.2 || fail "ping A->B"

step "TCP transfer A -> B (1 MiB, echoed back and compared)"
cat > "$work/tcp.py" <<'EOF'
import hashlib, socket, sys
role, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if role == "server":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port)); s.listen(1); s.settimeout(20)
    c, _ = s.accept(); c.settimeout(20)
    h = hashlib.sha256(); n = 0
    while True:
        b = c.recv(65536)
        if not b: break
        h.update(b); n += len(b)
    c.sendall(h.hexdigest().encode()); c.close()
    print(f"server: received {n} bytes")
else:
    data = bytes((i * 7) & 0xff for i in range(1 << 20))
    s = socket.create_connection((host, port), timeout=float(sys.argv[4]) if len(sys.argv) > 4 else 10)
    s.sendall(data); s.shutdown(socket.SHUT_WR)
    got = s.recv(100).decode()
    ok = got == hashlib.sha256(data).hexdigest()
    print("client: digest", "matches" if ok else "DIFFERS")
    sys.exit(0 if ok else 1)
EOF
ip netns exec "$nsb" python3 "$work/tcp.py" server 10.9.0.2 5001 &
srv=$!
sleep 0.5
ip netns exec "$nsa" python3 "$work/tcp.py" client 10.9.0.2 5001 || fail "TCP transfer A->B"
wait "$srv" || fail "TCP server in B"

step "TCP connection B -> A must be blocked"
ip netns exec "$nsa" python3 -c "
import socket; s = socket.socket(); s.bind(('10.9.0.1', 5002)); s.listen(1); s.settimeout(6)
try: s.accept(); print('A: accepted a connection (unexpected)')
except socket.timeout: pass" &
lsn=$!
sleep 0.3
if ip netns exec "$nsb" python3 -c "
import socket, sys
try:
    socket.create_connection(('10.9.0.1', 5002), timeout=3); sys.exit(0)
except OSError as e:
    print('B: connect failed as expected:', e); sys.exit(1)"; then
    fail "B connected to A through the firewall"
fi
wait "$lsn" || true

step "ferrovs-ctl dump-conntrack zone=9"
ct="$(ctl dump-conntrack zone=9)"
echo "$ct"
echo "$ct" | grep -q '^icmp,orig=(src=10.9.0.1,dst=10.9.0.2' || fail "no ICMP entry for A->B"
echo "$ct" | grep -q '^tcp,orig=(src=10.9.0.1,dst=10.9.0.2,sport=[0-9]*,dport=5001)' || fail "no TCP entry for A->B"
if echo "$ct" | grep -q 'src=10.9.0.2,dst=10.9.0.1,sport=[0-9]*,dport=5002'; then
    fail "the blocked B->A connection was committed"
fi

step "ferrovs-ctl dump-flows"
ctl dump-flows
ctl pmd-stats-show | head -n 12

echo
echo "demo-netns: OK (ping and TCP A->B pass, B->A blocked, conntrack shows the entries)"
if [ "$keep" = 1 ]; then
    echo "left running: namespaces $nsa $nsb, ferrovsd pid $daemon_pid, socket $sock"
    trap - EXIT
fi
