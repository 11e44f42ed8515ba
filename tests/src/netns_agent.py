"""Socket agent of the real-traffic tests (tests/src/netns.rs).

Runs inside a network namespace; reads one JSON request a line on standard
input, answers one JSON line on standard output. Keeps sockets open between
requests so a test can hold a connection across ferrovs-ctl commands.

Requests (every reply has "ok": true, or "ok": false and "err": an errno
name such as ECONNREFUSED, or "timeout"):
  udp_open id [ip port] [connect_ip connect_port]   -> port (local)
  udp_send id data [ip port]                        (sendto, or send when connected)
  udp_recv id timeout                               -> data, ip, port
  tcp_listen id ip port
  tcp_accept id lid timeout                         -> ip, port
  tcp_connect id ip port [sport] timeout            -> port (local)
  tcp_send id data
  tcp_recv id n timeout                             -> data ("" at end of stream)
  close id
  serve_udp_echo ip port prefix     (thread: answers prefix + datagram)
  serve_tcp_echo ip port prefix     (thread per connection: prefix + each chunk)
      ("{peer}" in prefix becomes the peer's "ip:port" as the server saw it,
       so a test behind NAT learns which address reached the server)
  sniff id iface marker             (thread: counts frames containing marker)
  sniff_count id                    -> count
  tcp_inject_out_of_window id iface src_mac dst_mac data
      (sends "probe" on connection id and reads the echo while capturing
       its own segments, to learn the next sequence number and the latest
       ack; then scapy sends a segment of the connection whose sequence
       number is 2^30 beyond that: outside any window)
Data is text (UTF-8).
"""
import errno
import json
import socket
import sys
import threading

socks = {}
sniffers = {}


def err_name(e):
    if isinstance(e, socket.timeout):
        return "timeout"
    return errno.errorcode.get(e.errno, str(e)) if e.errno else str(e)


def with_peer(prefix, addr):
    return prefix.replace("{peer}", "%s:%d" % (addr[0], addr[1])).encode()


def serve_udp_echo(ip, port, prefix):
    s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, port))

    def run():
        while True:
            data, addr = s.recvfrom(65535)
            s.sendto(with_peer(prefix, addr) + data, addr)

    threading.Thread(target=run, daemon=True).start()


def serve_tcp_echo(ip, port, prefix):
    s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.listen(16)

    def conn(c, addr):
        p = with_peer(prefix, addr)
        with c:
            while True:
                b = c.recv(65536)
                if not b:
                    return
                c.sendall(p + b)

    def run():
        while True:
            c, addr = s.accept()
            threading.Thread(target=conn, args=(c, addr), daemon=True).start()

    threading.Thread(target=run, daemon=True).start()


def sniff(sid, iface, marker):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.bind((iface, 0))
    sniffers[sid] = 0
    m = marker.encode()

    def run():
        while True:
            f = s.recv(65536)
            if m in f:
                sniffers[sid] += 1

    threading.Thread(target=run, daemon=True).start()


def own_segments(cap, lip, lport, pport):
    """(seq_end, ack) of each IPv4 TCP segment of ours captured on cap."""
    out = []
    while True:
        try:
            f = cap.recv(65536)
        except BlockingIOError:
            return out
        if len(f) < 34 or f[12:14] != b"\x08\x00" or f[23] != 6:
            continue
        ihl = (f[14] & 0xF) * 4
        t = 14 + ihl
        total = int.from_bytes(f[16:18], "big")
        if socket.inet_ntoa(f[26:30]) != lip or len(f) < t + 20:
            continue
        sport, dport = int.from_bytes(f[t:t + 2], "big"), int.from_bytes(f[t + 2:t + 4], "big")
        if (sport, dport) != (lport, pport):
            continue
        seq, ack = int.from_bytes(f[t + 4:t + 8], "big"), int.from_bytes(f[t + 8:t + 12], "big")
        doff, flags = (f[t + 12] >> 4) * 4, f[t + 13]
        payload = total - ihl - doff
        out.append(((seq + payload + (flags & 1)) & 0xFFFFFFFF, ack))


def inject_out_of_window(r):
    import time
    from scapy.all import Ether, IP, TCP, Raw, sendp  # noqa

    c = socks[r["id"]]
    lip, lport = c.getsockname()[:2]
    pip, pport = c.getpeername()[:2]
    # Capture our own segments (outgoing frames too) while a probe is
    # echoed, to learn the next sequence number and the latest ack.
    cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    cap.bind((r["iface"], 0))
    c.sendall(b"probe")
    c.settimeout(5)
    c.recv(65536)
    time.sleep(0.3)  # the ack of the echo (delayed ack) is ours too
    cap.setblocking(False)
    segs = own_segments(cap, lip, lport, pport)
    cap.close()
    if not segs:
        return {"ok": False, "err": "captured none of the connection's segments"}
    seq_next, ack = segs[-1]  # the last one sent: the ack of the echo
    seq = (seq_next + (1 << 30)) & 0xFFFFFFFF
    frame = (Ether(src=r["src_mac"], dst=r["dst_mac"]) / IP(src=lip, dst=pip)
             / TCP(sport=lport, dport=pport, flags="PA", seq=seq, ack=ack, window=502)
             / Raw(load=r["data"].encode()))
    sendp(frame, iface=r["iface"], verbose=False)
    return {"ok": True, "seq": seq, "next_seq": seq_next}


def family(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def handle(r):
    op = r["op"]
    if op == "udp_open":
        ip = r.get("ip") or r.get("connect_ip") or "0.0.0.0"
        s = socket.socket(family(ip), socket.SOCK_DGRAM)
        if "ip" in r:
            s.bind((r["ip"], r.get("port", 0)))
        if "connect_ip" in r:
            s.connect((r["connect_ip"], r["connect_port"]))
        socks[r["id"]] = s
        return {"ok": True, "port": s.getsockname()[1]}
    if op == "udp_send":
        s = socks[r["id"]]
        data = r["data"].encode()
        if "ip" in r:
            s.sendto(data, (r["ip"], r["port"]))
        else:
            s.send(data)
        return {"ok": True}
    if op == "udp_recv":
        s = socks[r["id"]]
        s.settimeout(r["timeout"])
        data, addr = s.recvfrom(65535)
        return {"ok": True, "data": data.decode(errors="replace"), "ip": addr[0], "port": addr[1]}
    if op == "tcp_listen":
        s = socket.socket(family(r["ip"]), socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((r["ip"], r["port"]))
        s.listen(16)
        socks[r["id"]] = s
        return {"ok": True}
    if op == "tcp_accept":
        s = socks[r["lid"]]
        s.settimeout(r["timeout"])
        c, addr = s.accept()
        c.settimeout(None)
        socks[r["id"]] = c
        return {"ok": True, "ip": addr[0], "port": addr[1]}
    if op == "tcp_connect":
        s = socket.socket(family(r["ip"]), socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if r.get("sport"):
            s.bind(("", r["sport"]))
        s.settimeout(r["timeout"])
        try:
            s.connect((r["ip"], r["port"]))
        except OSError:
            s.close()
            raise
        s.settimeout(None)
        socks[r["id"]] = s
        return {"ok": True, "port": s.getsockname()[1]}
    if op == "tcp_send":
        socks[r["id"]].sendall(r["data"].encode())
        return {"ok": True}
    if op == "tcp_recv":
        s = socks[r["id"]]
        s.settimeout(r["timeout"])
        want, got = r["n"], b""
        while len(got) < want:
            b = s.recv(want - len(got))
            if not b:
                break
            got += b
        return {"ok": True, "data": got.decode(errors="replace")}
    if op == "close":
        socks.pop(r["id"]).close()
        return {"ok": True}
    if op == "serve_udp_echo":
        serve_udp_echo(r["ip"], r["port"], r["prefix"])
        return {"ok": True}
    if op == "serve_tcp_echo":
        serve_tcp_echo(r["ip"], r["port"], r["prefix"])
        return {"ok": True}
    if op == "sniff":
        sniff(r["id"], r["iface"], r["marker"])
        return {"ok": True}
    if op == "sniff_count":
        return {"ok": True, "count": sniffers[r["id"]]}
    if op == "tcp_inject_out_of_window":
        return inject_out_of_window(r)
    return {"ok": False, "err": "unknown op " + op}


print(json.dumps({"ok": True, "ready": True}), flush=True)
for line in sys.stdin:
    try:
        reply = handle(json.loads(line))
    except OSError as e:
        reply = {"ok": False, "err": err_name(e)}
    except Exception as e:  # a bug in the request: report it, keep serving
        reply = {"ok": False, "err": "%s: %s" % (type(e).__name__, e)}
    print(json.dumps(reply), flush=True)
