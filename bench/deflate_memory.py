"""RSS per WebSocket with permessage-deflate: bench/fanout_app's Channels echo consumer
under laurel (or uvicorn), N connections opened with or without a deflate offer, RSS
read from /proc before, with all open and idle, and after each connection sent one
compressed message and got its (compressed) echo.

    /usr/bin/python3 bench/deflate_memory.py                 # laurel, 1000 connections
    /usr/bin/python3 bench/deflate_memory.py --server uvicorn --clients 500

The last column is read after laurel's ping interval (--ping-interval 2, plus 3 s) while
the clients answer pings as browsers do. Rows: no offer; the browser's offer (permessage-deflate; client_max_window_bits, both
sides keep their context, so the zlib streams stay); the same offer with
server_no_context_takeover; client_no_context_takeover (laurel frees both streams after
each message).
"""

import argparse
import base64
import json
import os
import selectors
import socket
import struct
import sys
import tempfile
import time
import zlib

from common import HERE, free_port, rss_kib, start_server, stop, wait_http

APP = "fanout_app.asgi:application"
OFFERS = [
    ("no offer", None),
    ("permessage-deflate; client_max_window_bits", "permessage-deflate; "
     "client_max_window_bits"),
    ("... ; server_no_context_takeover; client_no_context_takeover",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
]
TAIL = b"\x00\x00\xff\xff"


def handshake(port, offer):
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    ext = f"Sec-WebSocket-Extensions: {offer}\r\n" if offer else ""
    s.sendall((f"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n{ext}\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed during the handshake")
        buf += chunk
    head = buf.split(b"\r\n\r\n")[0].decode("latin-1")
    if not head.startswith("HTTP/1.1 101"):
        raise RuntimeError(head.splitlines()[0])
    return s, "permessage-deflate" in head.lower()


def send_frame(s, payload, rsv1, opcode=0x1):
    mask = os.urandom(4)
    n = len(payload)
    b0 = 0x80 | opcode | (0x40 if rsv1 else 0)
    head = struct.pack("!BB", b0, 0x80 | n) if n < 126 else \
        struct.pack("!BBH", b0, 0x80 | 126, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    s.sendall(head + mask + masked)


def recv_frame(s):
    def need(n):
        out = b""
        while len(out) < n:
            chunk = s.recv(n - len(out))
            if not chunk:
                raise RuntimeError("closed")
            out += chunk
        return out
    b0, b1 = need(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", need(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", need(8))[0]
    return b0, need(n)


def answer_pings(conns, seconds):
    """Reads what the server sends for a while and answers its pings, as a browser
    does (a ping left unanswered holds laurel's keepalive timer for --ping-timeout)."""
    sel = selectors.DefaultSelector()
    for s in conns:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        for key, _ in sel.select(left):
            s = key.fileobj
            s.setblocking(True)
            b0, payload = recv_frame(s)
            if b0 & 0x0F == 0x9:
                send_frame(s, payload, False, opcode=0xA)
            s.setblocking(False)
    sel.close()
    for s in conns:
        s.setblocking(True)


def measure(args, offer):
    port = free_port()
    logdir = tempfile.mkdtemp(prefix="deflate-mem-")
    if args.server == "laurel":
        cmd = [args.laurel, "-v", "0", "--ping-interval", str(args.ping_interval),
               "-b", "127.0.0.1", "-p", str(port), APP]
    else:
        cmd = [args.python, "-m", "uvicorn", "--loop", "uvloop", "--http", "httptools",
               "--ws", "websockets", "--no-access-log", "--log-level", "warning",
               "--host", "127.0.0.1", "--port", str(port), APP]
    proc, log = start_server(cmd, os.path.join(logdir, "server.log"), args.server_cpu,
                             cwd=HERE)
    conns = []
    try:
        wait_http(proc, f"http://127.0.0.1:{port}/", 30, lambda b: b.startswith(b"ok"))
        for _ in range(20):  # warm-up: imports, first consumer, allocator pools
            conns.append(handshake(port, offer)[0])
        time.sleep(0.5)
        rss0 = rss_kib(proc.pid)
        negotiated = 0
        for _ in range(args.clients):
            s, ok = handshake(port, offer)
            conns.append(s)
            negotiated += ok
        time.sleep(0.5)
        rss1 = rss_kib(proc.pid)
        msg = json.dumps({"type": "chat.message", "user": "demo",
                          "text": "See you at the meeting at ten; bring the slides. " * 3})
        for s in conns[20:]:
            if negotiated:
                c = zlib.compressobj(6, zlib.DEFLATED, -15)
                z = c.compress(msg.encode()) + c.flush(zlib.Z_SYNC_FLUSH)
                send_frame(s, z[:-4], True)
            else:
                send_frame(s, msg.encode(), False)
        for s in conns[20:]:
            b0, payload = recv_frame(s)
            got = zlib.decompressobj(-15).decompress(payload + TAIL) if b0 & 0x40 \
                else payload
            assert got == msg.encode(), got[:80]
        time.sleep(0.5)
        rss2 = rss_kib(proc.pid)
        answer_pings(conns, args.ping_interval + 3)  # laurel frees idle compressors then
        rss3 = rss_kib(proc.pid)
        return {"negotiated": negotiated, "idle": (rss1 - rss0) / args.clients,
                "used": (rss2 - rss0) / args.clients,
                "quiet": (rss3 - rss0) / args.clients, "rss0": rss0}
    finally:
        for s in conns:
            s.close()
        stop(proc)
        log.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="laurel", choices=("laurel", "uvicorn"))
    ap.add_argument("--laurel", default=os.path.join(os.path.dirname(HERE), "build",
                                                     "laurel"))
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--ping-interval", type=float, default=2,
                    help="laurel's --ping-interval (2): the last column is read after it")
    args = ap.parse_args()
    print(f"bench/deflate_memory.py: {args.server}, {args.clients} connections to "
          "bench/fanout_app's EchoConsumer (/echo); KiB of RSS per connection over the "
          "RSS before them\n")
    print("| offer | negotiated | idle | after one message each way "
          "| then quiet for a ping interval |")
    print("|---|---:|---:|---:|---:|")
    for name, offer in OFFERS:
        r = measure(args, offer)
        print(f"| {name} | {r['negotiated']} | {r['idle']:.1f} | {r['used']:.1f} "
              f"| {r['quiet']:.1f} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
