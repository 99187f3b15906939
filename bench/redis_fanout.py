#!/usr/bin/python3
"""Channels fan-out through Redis between two server processes: laurel and uvicorn.

For each contender, one Redis (shared by the whole run, flushed in between) and TWO
processes of the same server serve bench/fanout_app with the same Redis-backed channel
layer. The WebSockets (an unmodified Channels AsyncWebsocketConsumer in group
"notifications") are split between the two processes, A and B; every broadcast is
triggered on A only (POST /broadcast -> group_send), so the members on B can only get
it through Redis.

Contenders (--servers):
  laurel          laurel, laurel.layers.ChannelLayer with hosts=[redis]
  uvicorn-core    uvicorn, channels_redis.core.RedisChannelLayer
  uvicorn-pubsub  uvicorn, channels_redis.pubsub.RedisPubSubChannelLayer
  laurel-swap     laurel, settings naming channels_redis.pubsub (swapped for laurel's)
  laurel-pubsub   laurel --channel-layer settings, channels_redis.pubsub as is
  laurel-core     laurel, settings naming channels_redis.core (swapped for
                  laurel.layers.RedisChannelLayer, the same protocol natively)
  laurel-core-settings  laurel --channel-layer settings, channels_redis.core as is
The first four are the default.

Pinning: both server processes and redis-server on --server-cpu (0; --redis-cpu moves
Redis), this runner -- which is also the load client -- on --load-cpu (1). Loopback
only.

The load client is in Python (asyncio on uvloop, a minimal WebSocket client protocol;
bench/wsload talks to one port only and reports per-broadcast figures, not
per-delivery ones). Its CPU share over the measured phase is reported: above 80% it
may be the bottleneck and the row says so.

Per contender: open --clients WebSockets (half on A, half on B), settle, a few warm-up
broadcasts, then --broadcasts broadcasts one at a time (the next is triggered once
every member got the previous one and A answered the POST, or after --timeout).
Reported over the measured broadcasts: deliveries/s; latency from the trigger (just
before the POST's connect) to each member's receipt, p50/p99 over all deliveries and
p50 for A's and B's members apart; server CPU µs per delivery (utime+stime of A and B
summed, from /proc, 10 ms ticks); Redis CPU µs per delivery (INFO cpu, µs) and Redis
commands per broadcast; the client's CPU. Correctness: lost deliveries (never arrived),
late ones (after their broadcast timed out), duplicates, unexpected messages, closed
connections, server deaths and warning/error lines in the servers' logs.

Run with Debian's interpreter:  /usr/bin/python3 bench/redis_fanout.py [--help]
"""

import argparse
import asyncio
import base64
import datetime
import hashlib
import importlib.util
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from time import perf_counter

from common import (CLK_TCK, ROOT, StartError, check_cpus, cpu_ticks, fmt, free_port,
                    md_cell, start_server, stop, tail, versions, wait_http)

APP = "fanout_app.asgi:application"
WS_PATH = "/ws/notifications"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HOST = "127.0.0.1"

# name: server kind, FANOUT_LAYER for bench/fanout_app/settings.py, extra server
# flags, the layer class GET / must report, the table's "server" cell
CONTENDERS = {
    "laurel": ("laurel", "laurel", [], "laurel.layers.ChannelLayer", "laurel"),
    "uvicorn-core": ("uvicorn", "redis-core", [], "channels_redis.core.RedisChannelLayer",
                     "uvicorn"),
    "uvicorn-pubsub": ("uvicorn", "redis-pubsub", [],
                       "channels_redis.pubsub.RedisPubSubChannelLayer", "uvicorn"),
    "laurel-swap": ("laurel", "redis-pubsub", [], "laurel.layers.ChannelLayer",
                    "laurel (settings name channels_redis pubsub)"),
    "laurel-pubsub": ("laurel", "redis-pubsub", ["--channel-layer", "settings"],
                      "channels_redis.pubsub.RedisPubSubChannelLayer",
                      "laurel --channel-layer settings"),
    "laurel-core": ("laurel", "redis-core", [], "laurel.layers.RedisChannelLayer",
                    "laurel (settings name channels_redis core)"),
    "laurel-core-settings": ("laurel", "redis-core", ["--channel-layer", "settings"],
                             "channels_redis.core.RedisChannelLayer",
                             "laurel --channel-layer settings"),
}
DEFAULT_SERVERS = ("laurel", "laurel-core", "uvicorn-core", "uvicorn-pubsub")
LOG_PROBLEM = re.compile(rb"\b(ERROR|CRITICAL|WARNING|Traceback|Fatal Python error)\b")


def say(msg):
    print(msg, file=sys.stderr, flush=True)


def server_command(kind, extra, args, port):
    if kind == "laurel":
        return [args.laurel, "-v", "0", *extra, "-b", HOST, "-p", str(port), APP]
    return [args.python, "-m", "uvicorn", "--loop", "uvloop", "--http", "httptools",
            "--ws", "websockets", "--no-access-log", "--log-level", "warning",
            "--host", HOST, "--port", str(port), APP]


def split(args):
    """(members on A, members on B)."""
    n_b = round(args.clients * args.on_b)
    return args.clients - n_b, n_b


def sides(args):
    """0 (A) or 1 (B) for each client in opening order, the two evenly interleaved."""
    n_a, n_b = split(args)
    order = [(i / n_a, 0) for i in range(n_a)] + [(i / n_b, 1) for i in range(n_b)]
    return [side for _, side in sorted(order)]


def pct(sorted_values, p):
    """Nearest-rank percentile (as bench/wsload computes it)."""
    n = len(sorted_values)
    if not n:
        return None
    i = min(max(int(-(-p * n // 100)), 1), n)
    return sorted_values[i - 1]


# ---------------------------------------------------------------- Redis

class RedisError(Exception):
    pass


class RedisCtl:
    """A minimal blocking RESP client for the runner's own few commands."""

    def __init__(self, port):
        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.f = self.sock.makefile("rb")

    def __call__(self, *args):
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        out = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a)
                                                  for a in parts)
        self.sock.sendall(out)
        return self._reply()

    def _reply(self):
        line = self.f.readline()
        if not line.endswith(b"\r\n"):
            raise RedisError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RedisError(f"unexpected reply {line[:80]!r}")

    def info(self, section):
        out = {}
        for line in self("INFO", section).decode().splitlines():
            key, sep, value = line.partition(":")
            if sep and not key.startswith("#"):
                out[key] = value
        return out

    def cpu_s(self):
        i = self.info("cpu")
        return float(i["used_cpu_sys"]) + float(i["used_cpu_user"])

    def commands(self):
        return int(self.info("stats")["total_commands_processed"])

    def close(self):
        self.f.close()
        self.sock.close()


def make_tls_files(folder):
    """A throwaway CA and a certificate for localhost signed by it (openssl)."""
    def openssl(*a):
        subprocess.run(["openssl", *a], check=True, capture_output=True)
    p = lambda name: os.path.join(folder, name)  # noqa: E731
    with open(p("ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p("ca.key"),
            "-out", p("ca.crt"), "-days", "2", "-subj", "/CN=redis_fanout CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", p("redis.key"), "-out",
            p("redis.csr"), "-subj", "/CN=localhost")
    openssl("x509", "-req", "-in", p("redis.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"),
            "-CAcreateserial", "-out", p("redis.crt"), "-days", "2", "-extfile", p("ext.cnf"))
    return p("ca.crt"), p("redis.crt"), p("redis.key")


class Redis:
    def __init__(self, args, logdir):
        self.port = free_port()
        self.url = f"redis://{HOST}:{self.port}/0"
        log_path = os.path.join(logdir, "redis.log")
        cmd = [args.redis_server, "--port", str(self.port), "--bind", HOST,
               "--protected-mode", "yes", "--save", "", "--appendonly", "no",
               "--daemonize", "no", "--dir", logdir, "--loglevel", "warning"]
        if args.tls:  # the servers use the TLS port; this runner keeps the plain one
            ca, cert, key = make_tls_files(logdir)
            tls_port = free_port()
            cmd += ["--tls-port", str(tls_port), "--tls-cert-file", cert, "--tls-key-file",
                    key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "no"]
            self.url = f"rediss://localhost:{tls_port}/0?ssl_ca_certs={ca}"
        self.proc, self.log = start_server(cmd, log_path, args.redis_cpu, cwd=logdir,
                                           tag="redis")
        deadline = time.monotonic() + 15
        last = None
        self.ctl = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                ctl = RedisCtl(self.port)
            except OSError as e:
                last = e
                time.sleep(0.1)
                continue
            try:
                if ctl("PING") == "PONG":
                    self.ctl = ctl
                    self.version = ctl.info("server").get("redis_version", "?")
                    return
            except (OSError, RedisError) as e:
                last = e
            ctl.close()
            time.sleep(0.1)
        self.close()
        sys.exit(f"redis_fanout.py: redis-server did not start ({last}): "
                 f"{tail(log_path)}")

    def close(self):
        if self.ctl:
            self.ctl.close()
        stop(self.proc)
        self.log.close()


# ---------------------------------------------------------------- load client

def mask_frame(opcode, payload=b""):
    """A masked client frame (control frames only: payload <= 125 bytes)."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(body))) + mask + body


CONNECTING, OPEN, CLOSING, DONE = range(4)


class WSClient(asyncio.Protocol):
    """One subscriber: handshake, then counts every broadcast it receives by seq."""

    def __init__(self, run, side, port):
        self.run, self.side = run, side
        self.counts = bytearray(run.max_seq + 1)
        self.state = CONNECTING
        self.buf = b""
        self.frag = None
        self.tr = None
        self.lost_at = None  # first broadcast it could not be expected to get
        self.expect = 0      # the last broadcast it was open for at the trigger
        self.opened = asyncio.get_running_loop().create_future()
        key = base64.b64encode(os.urandom(16))
        self.accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        self.req = (b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                    b"Sec-WebSocket-Version: 13\r\nOrigin: http://%s:%d\r\n\r\n"
                    % (WS_PATH.encode(), HOST.encode(), port, key, HOST.encode(), port))

    def connection_made(self, transport):
        self.tr = transport
        transport.write(self.req)

    def data_received(self, data):
        t = perf_counter()
        if self.state == OPEN and not self.buf:
            # The usual case: exactly one small unfragmented text frame.
            if len(data) >= 2 and data[0] == 0x81 and data[1] < 126 and \
                    len(data) == data[1] + 2:
                self.text(data[2:], t)
                return
        self.buf += data
        if self.state == CONNECTING:
            self.handshake()
        if self.state in (OPEN, CLOSING) and self.buf:
            self.frames(t)

    def handshake(self):
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > 16384:
                self.fail("handshake: response head too large")
            return
        head, self.buf = self.buf[:end], self.buf[end + 4:]
        lines = head.split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.1 101"):
            return self.fail(f"handshake: {lines[0].decode(errors='replace')}")
        accept = [l.split(b":", 1)[1].strip() for l in lines[1:]
                  if l.lower().startswith(b"sec-websocket-accept:")]
        if accept != [self.accept]:
            return self.fail("handshake: missing or wrong Sec-WebSocket-Accept")
        self.state = OPEN
        self.opened.set_result(None)

    def fail(self, why):
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(why))
        self.state = DONE
        self.tr.abort()

    def frames(self, t):
        buf, pos, n = self.buf, 0, len(self.buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, head = b1 & 0x7F, 2
            if b1 & 0x80:
                self.run.error("server sent a masked frame")
                self.run.bad += 1
                self.state = DONE
                self.tr.abort()
                return
            if length == 126:
                if n - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if n - pos < head + length:
                break
            payload = buf[pos + head:pos + head + length]
            pos += head + length
            opcode, fin = b0 & 0x0F, b0 & 0x80
            if opcode in (1, 2):
                if fin:
                    self.text(payload, t)
                else:
                    self.frag = payload
            elif opcode == 0 and self.frag is not None:
                self.frag += payload
                if fin:
                    payload, self.frag = self.frag, None
                    self.text(payload, t)
            elif opcode == 9:  # ping (uvicorn's websockets pings every 20 s)
                self.tr.write(mask_frame(10, payload))
            elif opcode == 8:
                if self.state == OPEN:
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                    self.run.closed_by_server += 1
                    self.run.error(f"server closed a WebSocket with code {code}")
                    self.tr.write(mask_frame(8, payload[:2]))
                self.state = CLOSING
        self.buf = buf[pos:]

    def text(self, payload, t):
        run = self.run
        i = payload.find(b'"seq": ')
        j = payload.find(b",", i)
        try:
            if i < 0 or j < 0:
                raise ValueError
            seq = int(payload[i + 7:j])
        except ValueError:
            run.bad += 1
            return
        counts = self.counts
        if not 0 < seq < len(counts):
            run.unexpected += 1
            return
        seen = counts[seq]
        if seen:
            run.duplicates[self.side] += 1
            if seen < 255:
                counts[seq] = seen + 1
            return
        counts[seq] = 1
        if seq == run.cur:
            dt = t - run.t_trigger
            run.lat_cur[self.side].append(dt)
            run.got += 1
            if run.got >= run.expected and run.trigger_done:
                run.complete(True)
        else:
            run.late[self.side] += 1

    def connection_lost(self, exc):
        was, self.state = self.state, DONE
        if was == CONNECTING:
            if not self.opened.done():
                self.opened.set_exception(ConnectionError(
                    "handshake: server closed the connection before a response"))
            return
        if not self.run.closing:
            self.run.conn_lost(self, was)


class HTTPOnce(asyncio.Protocol):
    """One HTTP/1.1 request with Connection: close; the result is the raw response."""

    def __init__(self, request, fut):
        self.request, self.fut, self.data = request, fut, b""

    def connection_made(self, transport):
        transport.write(self.request)

    def data_received(self, data):
        self.data += data

    def connection_lost(self, exc):
        if not self.fut.done():
            self.fut.set_result(self.data)


async def http(port, method, path, body=b""):
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    req = (b"%s %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: "
           b"application/x-www-form-urlencoded\r\nContent-Length: %d\r\n"
           b"Connection: close\r\n\r\n%s"
           % (method.encode(), path.encode(), HOST.encode(), port, len(body), body))
    await loop.create_connection(lambda: HTTPOnce(req, fut), HOST, port)
    return await fut


async def layer_stats(port):
    """GET /layer-stats (laurel's layer.stats(), {} for the others); None on failure."""
    try:
        resp = await asyncio.wait_for(http(port, "GET", "/layer-stats"), 10)
        head, _, body = resp.partition(b"\r\n\r\n")
        return json.loads(body) if head.startswith(b"HTTP/1.1 200") else None
    except (OSError, ValueError, asyncio.TimeoutError):
        return None


def stats_delta(before, after):
    """after - before for every int, nested dicts included."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return None
    out = {}
    for k, v in after.items():
        b = before.get(k)
        if isinstance(v, dict):
            out[k] = stats_delta(b or {}, v)
        elif isinstance(v, int) and not isinstance(v, bool) and isinstance(b, int):
            out[k] = v - b
    return out


def proc_cpu_s(pid):
    return cpu_ticks(pid) / CLK_TCK


def client_cpu_s():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Run:
    """The clients and the broadcast loop of one contender."""

    def __init__(self, args, name, ports):
        self.args, self.name, self.ports = args, name, ports
        self.max_seq = args.warmup_broadcasts + args.broadcasts
        self.conns = []
        self.cur = self.started = 0
        self.t_trigger = 0.0
        self.got = self.expected = 0
        self.trigger_done = False
        self.done = None
        self.lat_cur = ([], [])
        self.lat = ([], [])   # measured deliveries: A's members, B's members
        self.last = []        # measured broadcasts: trigger -> last receipt
        self.trigger_rtt = []
        self.late = [0, 0]
        self.duplicates = [0, 0]
        self.bad = self.unexpected = self.closed_by_server = self.lost_conns = 0
        self.timeouts = self.trigger_errors = self.connect_errors = 0
        self.warmup_timeouts = 0
        self.closing = False
        self.first_error = None

    def error(self, msg):
        if self.first_error is None:
            self.first_error = msg

    # -- connections

    async def open_all(self):
        args, loop = self.args, asyncio.get_running_loop()
        sem = asyncio.Semaphore(args.concurrency)

        async def one(side):
            async with sem:
                try:
                    _, proto = await asyncio.wait_for(loop.create_connection(
                        lambda: WSClient(self, side, self.ports[side]), HOST,
                        self.ports[side]), 10)
                    await asyncio.wait_for(proto.opened, 30)
                    self.conns.append(proto)
                except (OSError, ConnectionError, asyncio.TimeoutError) as e:
                    self.connect_errors += 1
                    self.error(f"connect to {'AB'[side]}: {e or type(e).__name__}")

        await asyncio.gather(*(one(side) for side in sides(args)))
        return [sum(1 for c in self.conns if c.side == s) for s in (0, 1)]

    def conn_lost(self, conn, was):
        self.lost_conns += 1
        self.error("a WebSocket was closed during the run")
        conn.lost_at = self.cur or self.started + 1
        if self.cur and conn.expect == self.cur and not conn.counts[self.cur]:
            self.expected -= 1
            if self.got >= self.expected and self.trigger_done:
                self.complete(True)

    async def close_all(self):
        self.closing = True
        for c in self.conns:
            if c.state == OPEN:
                c.tr.write(mask_frame(8, (1000).to_bytes(2, "big")))
                c.state = CLOSING
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and any(c.state != DONE for c in self.conns):
            await asyncio.sleep(0.05)
        for c in self.conns:
            if c.state != DONE:
                c.tr.abort()

    # -- broadcasts

    def complete(self, ok):
        if self.done is not None and not self.done.done():
            self.done.set_result(ok)

    def _trigger_finished(self, fut):
        self.trigger_rtt_cur = perf_counter() - self.t_trigger
        ok = False
        if fut.cancelled():
            return
        if fut.exception() is not None:
            self.error(f"trigger: POST /broadcast failed: {fut.exception()}")
        elif not fut.result().startswith(b"HTTP/1.1 200"):
            first = fut.result().split(b"\r\n", 1)[0].decode(errors="replace")
            self.error(f"trigger: POST /broadcast answered {first or 'nothing'}")
        else:
            ok = True
        self.trigger_done = True
        if not ok:
            self.trigger_errors += 1
            self.complete(False)
        elif self.got >= self.expected:
            self.complete(True)

    async def broadcast(self, seq, measured):
        """One broadcast; True when every member got it and the POST was answered."""
        loop = asyncio.get_running_loop()
        self.cur = self.started = seq
        self.got, self.trigger_done = 0, False
        self.expected = 0
        for c in self.conns:
            if c.state == OPEN:
                c.expect = seq
                self.expected += 1
        self.lat_cur = ([], [])
        self.done = loop.create_future()
        self.t_trigger = perf_counter()
        trig = asyncio.ensure_future(http(self.ports[0], "POST", "/broadcast",
                                          b"seq=%d" % seq))
        trig.add_done_callback(self._trigger_finished)
        try:
            ok = await asyncio.wait_for(self.done, self.args.timeout)
        except asyncio.TimeoutError:
            ok = False
            if not self.trigger_done:
                trig.cancel()
                self.trigger_errors += 1
                self.error(f"trigger: no answer to POST /broadcast within "
                           f"{self.args.timeout:g}s")
            else:
                self.error(f"broadcast {seq}: {self.expected - self.got} of "
                           f"{self.expected} members without it after "
                           f"{self.args.timeout:g}s")
        self.cur = 0
        if measured:
            for side in (0, 1):
                self.lat[side].extend(self.lat_cur[side])
            if self.lat_cur[0] or self.lat_cur[1]:
                self.last.append(max(self.lat_cur[0] + self.lat_cur[1]))
            if self.trigger_done:
                self.trigger_rtt.append(self.trigger_rtt_cur)
        return ok

    def lost(self, upto):
        """Deliveries that never arrived: (A's members, B's members)."""
        out = [0, 0]
        for c in self.conns:
            stop_at = min(upto, (c.lost_at or upto + 1) - 1)
            out[c.side] += c.counts[1:stop_at + 1].count(0)
        return out


# ---------------------------------------------------------------- one contender

def scan_log(path, upto):
    """(count, first) of warning/error lines in the first `upto` bytes of a log."""
    try:
        with open(path, "rb") as f:
            data = f.read(upto)
    except OSError:
        return 0, None
    hits = [l for l in data.splitlines() if LOG_PROBLEM.search(l)]
    first = hits[0].decode(errors="replace").strip()[:300] if hits else None
    return len(hits), first


async def measure(name, args, redis, ports, procs, logs, result):
    run = Run(args, name, ports)
    tag = f"[{name}]"
    n_a, n_b = split(args)
    say(f"{tag} opening {args.clients} WebSockets ({n_a} on A :{ports[0]}, "
        f"{n_b} on B :{ports[1]})")
    t = time.monotonic()
    opened = await run.open_all()
    result["opened"] = opened
    result["connect_s"] = time.monotonic() - t
    result["connect_errors"] = run.connect_errors
    say(f"{tag} {opened[0]} + {opened[1]} open in {result['connect_s']:.1f}s"
        + (f", {run.connect_errors} failed ({run.first_error})" if run.connect_errors
           else ""))
    try:
        if not run.conns:
            result["error"] = f"no WebSocket opened: {run.first_error}"
            return
        await asyncio.sleep(args.settle)

        for seq in range(1, args.warmup_broadcasts + 1):
            if not await run.broadcast(seq, measured=False):
                run.warmup_timeouts += 1
        if args.warmup_broadcasts:
            say(f"{tag} {args.warmup_broadcasts} warm-up broadcasts"
                + (f", {run.warmup_timeouts} incomplete" if run.warmup_timeouts else ""))

        stats0 = [await layer_stats(p) for p in ports]
        cmd0, rcpu0 = redis.ctl.commands(), redis.ctl.cpu_s()
        c0 = client_cpu_s()
        s0 = [proc_cpu_s(p.pid) for p in procs]
        t0 = perf_counter()
        first = args.warmup_broadcasts + 1
        consecutive, last_report, done_k = 0, time.monotonic(), 0
        for k, seq in enumerate(range(first, first + args.broadcasts), 1):
            ok = await run.broadcast(seq, measured=True)
            done_k = k
            if not ok:
                run.timeouts += 1
                consecutive += 1
                if consecutive >= 3:
                    run.error(f"gave up after {k} broadcasts: 3 in a row failed")
                    break
            else:
                consecutive = 0
            if time.monotonic() - last_report >= args.progress or k == args.broadcasts:
                last_report = time.monotonic()
                n = len(run.lat[0]) + len(run.lat[1])
                say(f"{tag} {k}/{args.broadcasts} broadcasts, "
                    f"{n / (perf_counter() - t0):,.0f} deliveries/s")
        t1 = perf_counter()
        s1 = [proc_cpu_s(p.pid) for p in procs]
        c1 = client_cpu_s()
        rcpu1, cmd1 = redis.ctl.cpu_s(), redis.ctl.commands()
        stats1 = [await layer_stats(p) for p in ports]
        await asyncio.sleep(args.grace)  # late or duplicate messages still count
        log_sizes = [os.path.getsize(l) for l in logs]

        last_seq = first + done_k - 1
        lat_a, lat_b = sorted(run.lat[0]), sorted(run.lat[1])
        lat_all = sorted(lat_a + lat_b)
        delivered = len(lat_all)
        phase = t1 - t0
        lost = run.lost(last_seq)
        ms = lambda v: None if v is None else v * 1e3  # noqa: E731
        result.update({
            "broadcasts": done_k,
            "members": [sum(1 for c in run.conns if c.side == s) for s in (0, 1)],
            "delivered": delivered,
            "delivered_ab": [len(lat_a), len(lat_b)],
            "phase_s": phase,
            "deliveries_per_s": delivered / phase if phase > 0 else None,
            "broadcasts_per_s": done_k / phase if phase > 0 else None,
            "p50_ms": ms(pct(lat_all, 50)), "p99_ms": ms(pct(lat_all, 99)),
            "max_ms": ms(lat_all[-1] if lat_all else None),
            "p50_a_ms": ms(pct(lat_a, 50)), "p99_a_ms": ms(pct(lat_a, 99)),
            "p50_b_ms": ms(pct(lat_b, 50)), "p99_b_ms": ms(pct(lat_b, 99)),
            "last_p50_ms": ms(pct(sorted(run.last), 50)),
            "last_p99_ms": ms(pct(sorted(run.last), 99)),
            "last_each_ms": [round(v * 1e3, 2) for v in run.last],
            "trigger_p50_ms": ms(pct(sorted(run.trigger_rtt), 50)),
            "server_cpu_s": [b - a for a, b in zip(s0, s1)],
            "redis_cpu_s": rcpu1 - rcpu0,
            "redis_commands": cmd1 - cmd0,
            "client_cpu_pct": 100 * (c1 - c0) / phase if phase > 0 else None,
            "timeouts": run.timeouts, "warmup_timeouts": run.warmup_timeouts,
            "trigger_errors": run.trigger_errors,
            "lost": lost, "late": run.late, "duplicates": run.duplicates,
            "unexpected": run.unexpected, "bad": run.bad,
            "closed_by_server": run.closed_by_server, "lost_connections": run.lost_conns,
            "layer_stats_delta": [stats_delta(a, b) for a, b in zip(stats0, stats1)],
            "first_error": run.first_error,
        })
        if delivered:
            result["server_cpu_us_per_delivery"] = \
                sum(result["server_cpu_s"]) * 1e6 / delivered
            result["redis_cpu_us_per_delivery"] = result["redis_cpu_s"] * 1e6 / delivered
            result["total_cpu_us_per_delivery"] = \
                result["server_cpu_us_per_delivery"] + result["redis_cpu_us_per_delivery"]
        if done_k:
            result["redis_commands_per_broadcast"] = result["redis_commands"] / done_k
        result["log_problems"] = [scan_log(l, n) for l, n in zip(logs, log_sizes)]
        if not delivered:
            result["error"] = f"nothing delivered: {run.first_error or '?'}"
    finally:
        await run.close_all()


def run_contender(name, args, redis, logdir):
    kind, layer, extra, expect, label = CONTENDERS[name]
    result = {"server": name, "label": label, "error": None}
    if kind == "laurel" and not os.access(args.laurel, os.X_OK):
        result["error"] = (f"not built ({os.path.relpath(args.laurel, ROOT)} missing; "
                           f"run make build)")
        return result
    try:
        redis.ctl("FLUSHALL")
    except (OSError, RedisError) as e:
        result["error"] = f"Redis: {e}"
        return result
    os.environ["FANOUT_LAYER"] = layer
    os.environ["FANOUT_REDIS"] = redis.url
    procs, logfiles, logs, ports = [], [], [], []
    try:
        for which in "AB":
            port = free_port()
            log_path = os.path.join(logdir, f"{name}-{which}.log")
            try:
                proc, log = start_server(server_command(kind, extra, args, port), log_path,
                                         args.server_cpu, tag=f"{name} {which}")
            except OSError as e:
                result["error"] = f"{which} could not be started: {e}"
                return result
            procs.append(proc)
            logfiles.append(log)
            logs.append(log_path)
            ports.append(port)
        for which, proc, port, log_path in zip("AB", procs, ports, logs):
            try:
                body = wait_http(proc, f"http://{HOST}:{port}/", args.start_timeout,
                                 lambda b: b.startswith(b"ok "))
            except StartError as e:
                detail = tail(log_path)
                result["error"] = f"{which} failed to start: {e}" + \
                    (f": {detail}" if detail else "")
                return result
            got = body[3:].decode(errors="replace").strip()
            result["layer"] = got
            if got != expect:
                result["error"] = f"{which} runs {got}, expected {expect}"
                return result
        # One broadcast with nobody subscribed: checks the endpoint and warms it.
        try:
            resp = asyncio_run(http(ports[0], "POST", "/broadcast", b"seq=0"), args)
            if not resp.startswith(b"HTTP/1.1 200"):
                raise OSError(resp.split(b"\r\n", 1)[0].decode(errors="replace")
                              or "no answer")
        except OSError as e:
            result["error"] = f"POST /broadcast failed: {e}"
            return result
        time.sleep(0.3)
        try:
            asyncio_run(measure(name, args, redis, ports, procs, logs, result), args)
        except Exception as e:  # a bug here must not hide the other contenders
            result["error"] = f"runner error: {type(e).__name__}: {e}"
        for which, proc, log_path in zip("AB", procs, logs):
            if proc.poll() is not None:
                detail = tail(log_path)
                result["error"] = f"{which} died (status {proc.returncode})" + \
                    (f": {detail}" if detail else "")
                break
        return result
    finally:
        for proc in procs:
            stop(proc)
        for log in logfiles:
            log.close()


def asyncio_run(coro, args):
    if args.client_loop == "uvloop":
        import uvloop
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


# ---------------------------------------------------------------- report

def notes_for(r):
    notes = []
    if r.get("connect_errors"):
        notes.append(f"{r['connect_errors']} connections failed")
    lost, late, dup = r.get("lost") or [0, 0], r.get("late") or [0, 0], \
        r.get("duplicates") or [0, 0]
    if sum(lost):
        notes.append(f"{sum(lost)} lost (A {lost[0]}, B {lost[1]})")
    if sum(late):
        notes.append(f"{sum(late)} late (A {late[0]}, B {late[1]})")
    if sum(dup):
        notes.append(f"{sum(dup)} duplicated (A {dup[0]}, B {dup[1]})")
    for key, what in (("timeouts", "broadcasts timed out"),
                      ("warmup_timeouts", "warm-up broadcasts incomplete"),
                      ("trigger_errors", "trigger errors"),
                      ("unexpected", "unexpected messages"), ("bad", "bad messages"),
                      ("closed_by_server", "closed by server"),
                      ("lost_connections", "connections lost")):
        if r.get(key):
            notes.append(f"{r[key]} {what}")
    # laurel's layer.stats()["redis"] over the measured broadcasts: A publishes each
    # broadcast once, B receives each once; nothing is dropped or reconnected.
    deltas = r.get("layer_stats_delta") or []
    for which, delta in zip("AB", deltas):
        red = (delta or {}).get("redis") or {}
        for key in ("unpublished", "reconnects", "undecodable", "failed_calls",
                    "pop_errors"):
            if red.get(key):
                notes.append(f"{which}: redis {key} +{red[key]}")
        for key in ("undecodable", "unaddressed", "invalid", "group_full"):
            if (delta or {}).get(key):  # laurel.layers.RedisChannelLayer's own counters
                notes.append(f"{which}: {key} +{delta[key]}")
    core = all(isinstance(d, dict) and "popped" in (d.get("redis") or {}) for d in deltas)
    if len(deltas) == 2 and core and (r.get("members") or [0, 0])[1]:
        # channels_redis core's protocol: B pops each broadcast's one message for it
        k = r.get("broadcasts")
        popped = deltas[1]["redis"]["popped"]
        if popped != k:
            notes.append(f"B: popped +{popped} for {k} broadcasts")
    elif len(deltas) == 2 and all(isinstance(d, dict) and isinstance(d.get("redis"), dict)
                                  for d in deltas):
        k = r.get("broadcasts")
        published, received = deltas[0]["redis"].get("published"), \
            deltas[1]["redis"].get("received")
        if published != k:
            notes.append(f"A: redis published +{published} for {k} broadcasts")
        if received != k and (r.get("members") or [0, 0])[1]:
            notes.append(f"B: redis received +{received} for {k} broadcasts")
    for which, (count, first) in zip("AB", r.get("log_problems") or []):
        if count:
            notes.append(f"{which} log: {count} warning/error lines, first: {first}")
    if (r.get("client_cpu_pct") or 0) > 80:
        notes.append(f"load client at {r['client_cpu_pct']:.0f}% CPU: may be the "
                     f"bottleneck")
    if r.get("first_error") and notes:
        notes.append(f"first error: {r['first_error']}")
    return ", ".join(notes)


def table(results):
    rows = ["| server | layer | deliveries/s | p50 (ms) | p99 (ms) | p50 A / B (ms) "
            "| server CPU µs/delivery (A+B) | Redis CPU µs/delivery | server + Redis "
            "| Redis cmds/broadcast | client CPU % | notes |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        label = CONTENDERS[r["server"]][4]
        layer = r.get("layer") or CONTENDERS[r["server"]][3]
        if r["error"]:
            rows.append(f"| {label} | {layer} | – | – | – | – | – | – | – | – | – "
                        f"| {md_cell(r['error'])}"
                        f"{md_cell(', ' + notes_for(r)) if notes_for(r) else ''} |")
            continue
        rows.append(
            f"| {label} | {layer} | {fmt(r.get('deliveries_per_s'), ',.0f')} "
            f"| {fmt(r.get('p50_ms'), '.1f')} | {fmt(r.get('p99_ms'), '.1f')} "
            f"| {fmt(r.get('p50_a_ms'), '.1f')} / {fmt(r.get('p50_b_ms'), '.1f')} "
            f"| {fmt(r.get('server_cpu_us_per_delivery'), '.1f')} "
            f"| {fmt(r.get('redis_cpu_us_per_delivery'), '.2f')} "
            f"| {fmt(r.get('total_cpu_us_per_delivery'), '.1f')} "
            f"| {fmt(r.get('redis_commands_per_broadcast'), ',.0f')} "
            f"| {fmt(r.get('client_cpu_pct'), '.0f')} | {md_cell(notes_for(r))} |")
    return "\n".join(rows)


def report(args, servers, results, redis_version):
    v = versions(args.python, ["uvicorn", "channels", "channels_redis"])
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    n_a, n_b = split(args)
    head = (f"bench/redis_fanout.py: two server processes (A, B) on CPU {args.server_cpu}, "
            f"redis-server {redis_version} on CPU {args.redis_cpu}, load client on CPU "
            f"{args.load_cpu}, loopback{' (servers to Redis over TLS)' if args.tls else ''}; "
            f"bench/fanout_app; {when}, {os.cpu_count()} CPUs"
            f"{'; ' + v if v else ''}.")
    what = (f"{args.clients} WebSockets in group \"notifications\" ({n_a} on A, {n_b} on "
            f"B), {args.broadcasts} broadcasts one at a time after "
            f"{args.warmup_broadcasts} warm-up ones, each POSTed to A only. p50/p99 = "
            f"trigger to each member's receipt, over all deliveries; A / B = A's and B's "
            f"members apart; server CPU = utime+stime of A and B over the measured "
            f"broadcasts / deliveries; Redis CPU likewise, from INFO cpu.")
    return f"{head}\n\n{what}\n\n{table(results)}\n"


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="contenders: " + "; ".join(f"{k}: {v[4]}" for k, v in CONTENDERS.items()))
    ap.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                    help="comma-separated contenders, from " + ",".join(CONTENDERS) +
                    f" (default {','.join(DEFAULT_SERVERS)})")
    ap.add_argument("--clients", type=int, default=1000,
                    help="WebSockets, split between A and B (1000)")
    ap.add_argument("--on-b", type=float, default=0.5, metavar="FRACTION",
                    help="share of the WebSockets opened on B (0.5); 0 puts them all on "
                    "A, the process that gets the POSTs, 1 all on B")
    ap.add_argument("--broadcasts", type=int, default=200, help="measured broadcasts (200)")
    ap.add_argument("--warmup-broadcasts", type=int, default=5,
                    help="unmeasured broadcasts first (5)")
    ap.add_argument("--timeout", type=float, default=10,
                    help="seconds one broadcast may take to reach everyone (10)")
    ap.add_argument("--settle", type=float, default=1,
                    help="seconds to wait once every WebSocket is open (1)")
    ap.add_argument("--grace", type=float, default=1,
                    help="seconds to keep listening after the last broadcast, so that "
                    "late or duplicated messages are seen (1)")
    ap.add_argument("--concurrency", type=int, default=64,
                    help="handshakes in flight while opening (64)")
    ap.add_argument("--laurel", default=os.path.join(ROOT, "build", "laurel"),
                    help="laurel binary (default: build/laurel)")
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="interpreter for uvicorn (default: /usr/bin/python3)")
    ap.add_argument("--redis-server", default="redis-server",
                    help="redis-server binary (default: redis-server from PATH)")
    ap.add_argument("--server-cpu", type=int, default=0,
                    help="CPU for both server processes (0)")
    ap.add_argument("--redis-cpu", type=int, help="CPU for redis-server (the server CPU)")
    ap.add_argument("--tls", action="store_true",
                    help="the servers reach Redis over TLS (rediss://, a throwaway CA)")
    ap.add_argument("--load-cpu", type=int, default=1,
                    help="CPU for this runner, which is the load client (1)")
    ap.add_argument("--client-loop", choices=("uvloop", "asyncio"), default="uvloop",
                    help="event loop of the load client (uvloop)")
    ap.add_argument("--start-timeout", type=float, default=30,
                    help="seconds a server may take to answer (30)")
    ap.add_argument("--progress", type=float, default=5,
                    help="seconds between progress lines (5)")
    ap.add_argument("--json", help="also write every raw result to this JSON file")
    ap.add_argument("--out", help="also write the Markdown report to this file")
    args = ap.parse_args(argv)

    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in servers if s not in CONTENDERS]
    if unknown or not servers:
        ap.error(f"unknown contender(s) {unknown}; choose from {','.join(CONTENDERS)}")
    if args.clients < 1 or not 0 <= args.on_b <= 1 or args.broadcasts < 1 or args.warmup_broadcasts < 0 or \
            args.concurrency < 1 or args.timeout <= 0:
        ap.error("--clients >= 1, 0 <= --on-b <= 1, --broadcasts >= 1, --warmup-broadcasts >= 0, "
                 "--concurrency >= 1, --timeout > 0")
    if args.clients > 30000 or args.broadcasts + args.warmup_broadcasts > 100000:
        ap.error("keep it bounded: --clients <= 30000, broadcasts <= 100000")
    if args.redis_cpu is None:
        args.redis_cpu = args.server_cpu
    check_cpus("redis_fanout.py", args.server_cpu, args.load_cpu, "load")
    if args.redis_cpu not in os.sched_getaffinity(0):
        sys.exit(f"redis_fanout.py: CPU {args.redis_cpu} not available")
    if not shutil.which(args.redis_server):
        sys.exit(f"redis_fanout.py: {args.redis_server} not found (apt install "
                 f"redis-server)")
    if args.client_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        sys.exit("redis_fanout.py: uvloop missing; use --client-loop asyncio")
    args.laurel = os.path.abspath(args.laurel)

    # Servers inherit the limit: each process holds about half the clients.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.clients + 1024
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < want:
            say(f"redis_fanout.py: warning: open files limited to {new}")

    os.sched_setaffinity(0, {args.load_cpu})
    logdir = tempfile.mkdtemp(prefix="laurel-redis-fanout-")
    say(f"redis_fanout.py: logs in {logdir}; this runner (the load client) on CPU "
        f"{args.load_cpu}")
    redis = Redis(args, logdir)
    results = []
    try:
        for name in servers:
            r = run_contender(name, args, redis, logdir)
            if r["error"]:
                say(f"[{name}] {r['error']}")
            else:
                say(f"[{name}] {r['deliveries_per_s']:,.0f} deliveries/s, p50 "
                    f"{r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, server "
                    f"{r.get('server_cpu_us_per_delivery', 0):.1f} µs/delivery")
            notes = notes_for(r)
            if notes:
                say(f"[{name}] notes: {notes}")
            results.append(r)
    finally:
        redis_version = getattr(redis, "version", "?")
        redis.close()

    text = report(args, servers, results, redis_version)
    print()
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    return 0 if any(not r["error"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
