#!/usr/bin/python3
"""Django benchmark: laurel vs uvicorn vs daphne (and gunicorn's sync WSGI worker for
the views) on one Django project, bench/django_site.

The project has `startproject`'s middleware, sessions in SQLite, Channels with the
seed's WebSocket stack (AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter))),
a sync per-user NotificationConsumer and an async FanoutConsumer. Every request carries
a logged-in user's session cookie. Each server is pinned to one CPU, the load (wrk, or
this script's asyncio WebSocket client) to the other, over loopback.

Benchmarks (--bench):
  boundary  raw ASGI app making N thread-sensitive sync_to_async calls per request
            (N = 0 and --crossings); the crossing's cost is the CPU difference / N
  views     Django views: sync HttpResponse, async view, one ORM query, a
            TemplateResponse (wrk)
  notify    seed-style delivery: --users WebSockets (one per user, sync consumer in
            group str(user.pk)); a sync view doing async_to_sync(group_send) notifies
            one user at a time (view + delivery), then an async view notifies all
            users at once (per delivery)
  fanout    --users AsyncWebsocketConsumers in one group behind the same middleware,
            one broadcast at a time

    /usr/bin/python3 bench/django_bench.py                  # everything, ~6 min
    /usr/bin/python3 bench/django_bench.py --bench views --servers laurel,gunicorn
    /usr/bin/python3 bench/django_bench.py --json /tmp/d.json --plots docs/bench
"""

import argparse
import asyncio
import base64
import datetime
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

from common import (CLK_TCK, ROOT, StartError, add_laurel_options, check_cpus,
                    cpu_ticks, fmt, free_port, laurel_binary, laurel_contenders,
                    parse_wrk, rss_kib, run_wrk, start_server, stop, tail, versions,
                    wait_http, with_contenders)

SITE = os.path.join(ROOT, "bench", "django_site")
ASGI_APP = "site_bench.asgi:application"
ALL_SERVERS = ("laurel", "uvicorn", "daphne", "gunicorn")
ASGI_ONLY = ("boundary", "notify", "fanout")
VIEWS = ("/sync/", "/async/", "/orm/", "/template/")
HOST = "127.0.0.1"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def say(msg):
    print(msg, file=sys.stderr, flush=True)


BOUNDARY_APP = "site_bench.boundary:app"


def server_command(name, args, port, app=ASGI_APP):
    if name == "laurel" or name.startswith("laurel@"):
        return [laurel_binary(name, args), "-v", "0", "-b", HOST, "-p", str(port), app]
    if name == "uvicorn":
        return [args.python, "-m", "uvicorn", "--loop", "uvloop", "--http", "httptools",
                "--ws", "websockets", "--no-access-log", "--log-level", "warning",
                "--host", HOST, "--port", str(port), app]
    if name == "daphne":
        return [args.python, "-m", "daphne", "-v", "0", "-b", HOST, "-p", str(port), app]
    if name == "gunicorn":  # the sync WSGI reference: one sync worker on the server CPU
        return [args.python, "-m", "gunicorn", "--workers", "1", "--worker-class", "sync",
                "--bind", f"{HOST}:{port}", "--log-level", "warning",
                "site_bench.wsgi:application"]
    raise ValueError(name)


class Server:
    """One server process, pinned, with its CPU and RSS readable."""

    def __init__(self, name, args, env_db, logdir, app=ASGI_APP):
        self.name, self.port = name, free_port()
        tag = name.replace("@", "-") + ("-boundary" if app == BOUNDARY_APP else "")
        self.log_path = os.path.join(logdir, f"{tag}.log")
        os.environ["BENCH_DB"] = env_db
        self.proc, self.log = start_server(server_command(name, args, self.port, app),
                                           self.log_path, args.server_cpu, cwd=SITE,
                                           tag=name)
        path, want = ("/", b"ok") if app == BOUNDARY_APP else ("/sync/", b"Hello, world!")
        try:
            wait_http(self.proc, f"http://{HOST}:{self.port}{path}", args.start_timeout,
                      lambda b: b == want)
        except StartError as e:
            detail = tail(self.log_path)
            self.close()
            raise StartError(f"{e}" + (f": {detail}" if detail else ""))

    def cpu_s(self):
        return cpu_ticks(self.proc.pid) / CLK_TCK

    def rss_kib(self):
        return rss_kib(self.proc.pid)

    def alive(self):
        return self.proc.poll() is None

    def close(self):
        stop(self.proc)
        self.log.close()


# ---------------------------------------------------------------- HTTP (wrk)

def wrk_row(srv, args, path, cookie):
    headers = [f"Cookie: sessionid={cookie}"] if cookie else []
    if args.warmup:
        run_wrk(args.load_cpu, args.connections, srv.port, args.warmup, path, headers)
    c0 = srv.cpu_s()
    rc, out = run_wrk(args.load_cpu, args.connections, srv.port, args.duration, path,
                      headers)
    c1 = srv.cpu_s()
    w = parse_wrk(out)
    row = {"path": path, "rps": w["rps"], "p99_ms": w["p99_ms"],
           "requests": w["requests"], "errors": w["errors"], "non2xx": w["non2xx"],
           "rss_mib": srv.rss_kib() / 1024}
    if rc != 0 or not w["requests"]:
        row["error"] = f"wrk failed ({rc}): {out.strip()[-200:]}"
    else:
        row["cpu_us"] = (c1 - c0) * 1e6 / w["requests"]
    return row


# ---------------------------------------------------------------- WebSocket client

class WS(asyncio.Protocol):
    """A minimal client WebSocket: handshake with a session cookie and an Origin, then
    text frames to on_text(payload, t)."""

    def __init__(self, path, port, cookie, on_text):
        self.on_text, self.buf, self.open, self.tr = on_text, b"", False, None
        self.opened = asyncio.get_running_loop().create_future()
        self.closed = False
        key = base64.b64encode(os.urandom(16))
        self.accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        self.req = (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
                    f"Sec-WebSocket-Version: 13\r\nOrigin: http://{HOST}:{port}\r\n"
                    f"Cookie: sessionid={cookie}\r\n\r\n").encode()

    def connection_made(self, tr):
        self.tr = tr
        tr.write(self.req)

    def data_received(self, data):
        t = time.perf_counter()
        if self.open and not self.buf and len(data) >= 2 and data[0] == 0x81 and \
                data[1] < 126 and len(data) == data[1] + 2:
            self.on_text(data[2:], t)  # the usual case: one small text frame
            return
        self.buf += data
        if not self.open:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end], self.buf[end + 4:]
            if not head.startswith(b"HTTP/1.1 101") or self.accept not in head:
                if not self.opened.done():
                    self.opened.set_exception(ConnectionError(head[:80]))
                self.tr.abort()
                return
            self.open = True
            self.opened.set_result(None)
        while len(self.buf) >= 2:
            b0, n, h = self.buf[0], self.buf[1] & 0x7F, 2
            if n == 126:
                if len(self.buf) < 4:
                    return
                n, h = int.from_bytes(self.buf[2:4], "big"), 4
            elif n == 127:
                if len(self.buf) < 10:
                    return
                n, h = int.from_bytes(self.buf[2:10], "big"), 10
            if len(self.buf) < h + n:
                return
            payload, self.buf = self.buf[h:h + n], self.buf[h + n:]
            op = b0 & 0x0F
            if op == 1:
                self.on_text(payload, t)
            elif op == 9:  # ping: pong
                mask = os.urandom(4)
                self.tr.write(bytes((0x8A, 0x80 | len(payload))) + mask +
                              bytes(c ^ mask[i & 3] for i, c in enumerate(payload)))
            elif op == 8:
                self.closed = True

    def connection_lost(self, exc):
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before the handshake"))


class Trigger(asyncio.Protocol):
    """One keep-alive HTTP connection for the triggering POSTs."""

    def __init__(self):
        self.tr, self.buf, self.waiter = None, b"", None

    def connection_made(self, tr):
        self.tr = tr

    def data_received(self, data):
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v)
        if len(self.buf) < end + 4 + length:
            return
        self.buf = self.buf[end + 4 + length:]
        if self.waiter and not self.waiter.done():
            self.waiter.set_result(head.split(" ", 2)[1])

    def connection_lost(self, exc):
        if self.waiter and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("trigger connection lost"))

    async def post(self, path, cookie):
        self.waiter = asyncio.get_running_loop().create_future()
        self.tr.write((f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0\r\n"
                       f"Cookie: sessionid={cookie}\r\n\r\n").encode())
        status = await asyncio.wait_for(self.waiter, 30)
        if status != "200":
            raise RuntimeError(f"POST {path}: {status}")


async def rss_per_conn(srv, args, path, sessions, users, on_text):
    """Open the users' sockets; RSS per connection is measured across that, after a
    few warm-up sockets (opened and closed) have loaded what the first one imports."""
    warm = await open_sockets(srv, path, sessions, min(10, users), lambda *a: None)
    for s in warm.values():
        s.tr.close()
    await asyncio.sleep(args.settle)
    rss0 = srv.rss_kib()
    socks = await open_sockets(srv, path, sessions, users, on_text)
    await asyncio.sleep(args.settle)
    return socks, (srv.rss_kib() - rss0) / users


async def open_sockets(srv, path, sessions, users, on_text, batch=100):
    loop = asyncio.get_running_loop()
    socks = {}
    uids = list(range(1, users + 1))
    for i in range(0, len(uids), batch):
        chunk = uids[i:i + batch]
        made = []
        for uid in chunk:
            _, p = await loop.create_connection(
                lambda uid=uid: WS(path, srv.port, sessions[str(uid)],
                                   lambda m, t, uid=uid: on_text(uid, m, t)),
                HOST, srv.port)
            made.append((uid, p))
        for uid, p in made:
            await asyncio.wait_for(p.opened, 30)
            socks[uid] = p
    return socks


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def bench_notify(srv, args, sessions):
    """Seed-style: one sync consumer per user; notify one user at a time through the
    sync notify view (view + delivery), then all users at once (per delivery)."""
    users = args.users
    got = {}
    state = {"want": None, "t0": 0.0, "lat": [], "done": None, "all_left": 0}

    def on_text(uid, payload, t):
        msg = json.loads(payload)
        got[uid] = got.get(uid, 0) + 1
        if state["want"] == (uid, msg["seq"]):
            state["lat"].append(t - state["t0"])
            state["done"].set_result(None)
        elif state["all_left"]:
            state["all_left"] -= 1
            if state["all_left"] == 0:
                state["done"].set_result(None)

    loop = asyncio.get_running_loop()
    socks, per_conn = await rss_per_conn(srv, args, "/ws/notifications/", sessions, users,
                                         on_text)
    _, trig = await loop.create_connection(Trigger, HOST, srv.port)
    cookie = sessions["1"]
    res = {"users": users, "rss_kib_per_conn": per_conn}
    # one user at a time: view + delivery
    for phase, count in (("warmup", min(50, args.notifications)),
                         ("measure", args.notifications)):
        state["lat"] = []
        c0 = srv.cpu_s()
        t_start = time.perf_counter()
        for k in range(count):
            uid = 1 + k % users
            seq = k + 1 if phase == "measure" else -(k + 1)
            state["want"], state["done"] = (uid, seq), loop.create_future()
            state["t0"] = time.perf_counter()
            await trig.post(f"/notify/{uid}/?seq={seq}", cookie)
            await asyncio.wait_for(state["done"], 10)
        wall = time.perf_counter() - t_start
        c1 = srv.cpu_s()
    state["want"] = None
    lat = state["lat"]
    res["one"] = {"notifications": count, "cpu_us": (c1 - c0) * 1e6 / count,
                  "per_s": count / wall, "p50_ms": pct(lat, 50) * 1e3,
                  "p99_ms": pct(lat, 99) * 1e3, "latencies_ms": [x * 1e3 for x in lat]}
    # everyone at once: per delivery
    rounds, c0, t_start, lat_all = args.rounds, srv.cpu_s(), time.perf_counter(), []
    for r in range(rounds):
        state["all_left"], state["done"] = users, loop.create_future()
        t0 = time.perf_counter()
        await trig.post(f"/notify-all/?first=1&count={users}&seq={100000 + r}", cookie)
        await asyncio.wait_for(state["done"], 30)
        lat_all.append(time.perf_counter() - t0)
    wall = time.perf_counter() - t_start
    c1 = srv.cpu_s()
    res["all"] = {"deliveries": rounds * users, "cpu_us": (c1 - c0) * 1e6 / (rounds * users),
                  "per_s": rounds * users / wall, "last_p50_ms": pct(lat_all, 50) * 1e3}
    res["lost_sockets"] = sum(1 for s in socks.values() if s.closed)
    trig.tr.close()
    for s in socks.values():
        s.tr.close()
    return res


async def bench_fanout(srv, args, sessions):
    users = args.users
    state = {"left": 0, "done": None}

    def on_text(uid, payload, t):
        state["left"] -= 1
        if state["left"] == 0 and state["done"]:
            state["done"].set_result(t)

    loop = asyncio.get_running_loop()
    socks, per_conn = await rss_per_conn(srv, args, "/ws/fanout/", sessions, users, on_text)
    _, trig = await loop.create_connection(Trigger, HOST, srv.port)
    lat = []
    # enough deliveries for /proc's 10 ms CPU ticks to be a small error at any size
    measured = max(args.rounds, -(-args.min_deliveries // users))
    for phase, rounds in (("warmup", 3), ("measure", measured)):
        c0 = srv.cpu_s()
        t_start = time.perf_counter()
        lat = []
        for r in range(rounds):
            state["left"], state["done"] = users, loop.create_future()
            t0 = time.perf_counter()
            await trig.post(f"/broadcast/?seq={r}", sessions["1"])
            t_last = await asyncio.wait_for(state["done"], 30)
            lat.append(t_last - t0)
        wall = time.perf_counter() - t_start
        c1 = srv.cpu_s()
    res = {"users": users, "deliveries": rounds * users,
           "cpu_us": (c1 - c0) * 1e6 / (rounds * users), "per_s": rounds * users / wall,
           "last_p50_ms": pct(lat, 50) * 1e3, "last_p99_ms": pct(lat, 99) * 1e3,
           "rss_kib_per_conn": per_conn,
           "lost_sockets": sum(1 for s in socks.values() if s.closed)}
    trig.tr.close()
    for s in socks.values():
        s.tr.close()
    return res


def client_loop_run(coro):
    import uvloop
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


# ---------------------------------------------------------------- one server

def bench_boundary(name, args, db, logdir, out):
    try:
        srv = Server(name, args, db, logdir, BOUNDARY_APP)
    except (StartError, OSError) as e:
        out["error"] = f"boundary app failed to start: {e}"
        return
    try:
        rows = [wrk_row(srv, args, f"/boundary/{n}", None) for n in (0, args.crossings)]
        out["boundary"] = rows
        if all("cpu_us" in r for r in rows):
            out["crossing_us"] = (rows[1]["cpu_us"] - rows[0]["cpu_us"]) / args.crossings
        say(f"[{name}] boundary: {fmt(out.get('crossing_us'), '.1f')} µs per crossing")
    finally:
        srv.close()


def bench_server(name, args, db, sessions, logdir, benches):
    """The views on one server process; notify and fan-out each on a fresh one, so
    that one bench's freed memory does not make the next one's RSS per connection."""
    out = {"server": name}
    if "boundary" in benches and name != "gunicorn":
        bench_boundary(name, args, db, logdir, out)
    runs = [("views", None)] if "views" in benches else []
    if name != "gunicorn":
        runs += [(b, fn) for b, fn in (("notify", bench_notify), ("fanout", bench_fanout))
                 if b in benches]
    for bench, fn in runs:
        try:
            srv = Server(name, args, db, logdir)
        except (StartError, OSError) as e:
            out["error"] = f"failed to start: {e}"
            return out
        try:
            if bench == "views":
                cookie = sessions["1"]
                out["views"] = [wrk_row(srv, args, p, cookie) for p in VIEWS]
                say(f"[{name}] views: " + ", ".join(
                    f"{r['path']} {fmt(r.get('cpu_us'), '.0f')} µs" for r in out["views"]))
            else:
                out[bench] = client_loop_run(fn(srv, args, sessions))
                say(f"[{name}] {bench}: " + (
                    f"one {out[bench]['one']['cpu_us']:.0f} µs, all "
                    f"{out[bench]['all']['cpu_us']:.1f} µs per delivery"
                    if bench == "notify" else f"{out[bench]['cpu_us']:.1f} µs per delivery")
                    + f", {out[bench]['rss_kib_per_conn']:.1f} KiB/conn" * (bench != "views"))
            if not srv.alive():
                out["error"] = f"server died ({srv.proc.returncode}): {tail(srv.log_path)}"
        except Exception as e:  # a server that fails a bench is a row with the error
            out["error"] = f"{type(e).__name__}: {e}"
            say(f"[{name}] {out['error']}")
        finally:
            srv.close()
        if out.get("error"):
            break
    return out


# ---------------------------------------------------------------- report

def ratio(v, base):
    return f"{v / base:.2f}" if v is not None and base else "–"


def report(args, servers, results):
    by = {r["server"]: r for r in results}
    uv = by.get("uvicorn", {})
    lines = [f"bench/django_bench.py, {datetime.datetime.now():%Y-%m-%d %H:%M}, "
             f"{os.cpu_count()} CPUs; {versions(args.python, servers)}; servers on CPU "
             f"{args.server_cpu}, load on CPU {args.load_cpu}; wrk -c{args.connections} "
             f"-d{args.duration}s after {args.warmup}s; --users {args.users}.", ""]
    if any("boundary" in r for r in results):
        lines += ["**Boundary**: raw ASGI app, N thread-sensitive `sync_to_async` calls per "
                  "request; a crossing = (CPU at N - CPU at 0) / N.", "",
                  f"| server | µs/req N=0 | µs/req N={args.crossings} | µs per crossing | "
                  "x uvicorn | req/s N=" + str(args.crossings) + " | p99 ms |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in results:
            if "boundary" not in r:
                continue
            b0, bn = r["boundary"]
            lines.append(f"| {r['server']} | {fmt(b0.get('cpu_us'), '.1f')} | "
                         f"{fmt(bn.get('cpu_us'), '.1f')} | {fmt(r.get('crossing_us'), '.1f')}"
                         f" | {ratio(r.get('crossing_us'), uv.get('crossing_us'))} | "
                         f"{fmt(bn.get('rps'), ',.0f')} | {fmt(bn.get('p99_ms'), '.2f')} |")
        lines.append("")
    if any("views" in r for r in results):
        lines += ["**Django views** (startproject middleware, SQLite, a logged-in session's "
                  "cookie on every request): server CPU µs per request (x uvicorn), req/s, p99 ms, "
                  "RSS MiB.", "",
                  "| server | " + " | ".join(f"`{p}`" for p in VIEWS) + " | RSS MiB |",
                  "|---|" + "---:|" * (len(VIEWS) + 1)]
        uvv = {v["path"]: v for v in uv.get("views", [])}
        for r in results:
            if "views" not in r:
                continue
            cells = []
            for v in r["views"]:
                base = uvv.get(v["path"], {}).get("cpu_us")
                cells.append(f"{fmt(v.get('cpu_us'), '.0f')} µs ({ratio(v.get('cpu_us'), base)})"
                             f"<br>{fmt(v.get('rps'), ',.0f')}/s, p99 "
                             f"{fmt(v.get('p99_ms'), '.1f')}")
            rss = max((v.get("rss_mib") or 0) for v in r["views"])
            lines.append(f"| {r['server']} | " + " | ".join(cells) + f" | {rss:.1f} |")
        lines.append("")
    if any("notify" in r for r in results):
        lines += ["**Seed-style notifications**: one sync `WebsocketConsumer` per logged-in "
                  "user in group `str(user.pk)`. *One*: a sync view doing "
                  "`async_to_sync(group_send)` notifies one user, the next only after the "
                  "previous arrived (CPU = view + delivery). *All*: an async view notifies "
                  "every user at once (CPU per delivery).", "",
                  "| server | one: µs | x uvicorn | one: p50 / p99 ms | all: µs/delivery | "
                  "x uvicorn | all: deliveries/s | RSS KiB/conn |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        un = uv.get("notify", {})
        for r in results:
            n = r.get("notify")
            if not n:
                continue
            lines.append(
                f"| {r['server']} | {n['one']['cpu_us']:.0f} | "
                f"{ratio(n['one']['cpu_us'], un.get('one', {}).get('cpu_us'))} | "
                f"{n['one']['p50_ms']:.2f} / {n['one']['p99_ms']:.2f} | "
                f"{n['all']['cpu_us']:.1f} | "
                f"{ratio(n['all']['cpu_us'], un.get('all', {}).get('cpu_us'))} | "
                f"{n['all']['per_s']:,.0f} | {n['rss_kib_per_conn']:.1f} |")
        lines.append("")
    if any("fanout" in r for r in results):
        lines += ["**Fan-out** to `AsyncWebsocketConsumer`s behind the same middleware stack, "
                  "one broadcast at a time.", "",
                  "| server | µs/delivery | x uvicorn | deliveries/s | last p50 / p99 ms | "
                  "RSS KiB/conn |", "|---|---:|---:|---:|---:|---:|"]
        for r in results:
            f = r.get("fanout")
            if not f:
                continue
            lines.append(f"| {r['server']} | {f['cpu_us']:.1f} | "
                         f"{ratio(f['cpu_us'], uv.get('fanout', {}).get('cpu_us'))} | "
                         f"{f['per_s']:,.0f} | {f['last_p50_ms']:.1f} / "
                         f"{f['last_p99_ms']:.1f} | {f['rss_kib_per_conn']:.1f} |")
        lines.append("")
    errors = [f"- {r['server']}: {r['error']}" for r in results if r.get("error")]
    if errors:
        lines += ["Errors:"] + errors + [""]
    return "\n".join(lines)


def plots(results, outdir):
    """SVG plots from the results (python3-matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(outdir, exist_ok=True)
    made = []
    withviews = [r for r in results if r.get("views")]
    if withviews:
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / len(withviews)
        for i, r in enumerate(withviews):
            xs = [j + i * width for j in range(len(VIEWS))]
            ax.bar(xs, [v.get("cpu_us") or 0 for v in r["views"]], width, label=r["server"])
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(VIEWS))], VIEWS)
        ax.set_ylabel("server CPU µs per request")
        ax.set_title("Django views (startproject middleware, session in SQLite)")
        ax.legend()
        fig.tight_layout()
        path = os.path.join(outdir, "django-views-cpu.svg")
        fig.savefig(path)
        plt.close(fig)
        made.append(path)
    withnotify = [r for r in results if r.get("notify")]
    if withnotify:
        fig, ax = plt.subplots(figsize=(8, 4))
        for r in withnotify:
            lat = sorted(r["notify"]["one"]["latencies_ms"])
            ax.plot(lat, [(i + 1) / len(lat) for i in range(len(lat))], label=r["server"])
        ax.set_xscale("log")
        ax.set_xlabel("notify view POST -> the user's receipt (ms)")
        ax.set_ylabel("fraction of notifications")
        ax.set_title("Seed-style notification latency (sync consumer, one user at a time)")
        ax.legend()
        fig.tight_layout()
        path = os.path.join(outdir, "notify-latency.svg")
        fig.savefig(path)
        plt.close(fig)
        made.append(path)
    sweep = [r for r in results if r.get("sweep")]
    if sweep:
        fig, ax = plt.subplots(figsize=(8, 4))
        for r in sweep:
            pts = sorted(r["sweep"], key=lambda p: p["users"])
            ax.plot([p["users"] for p in pts], [p["cpu_us"] for p in pts], marker="o",
                    label=r["server"])
        ax.set_xscale("log")
        ax.set_xlabel("WebSockets in the group")
        ax.set_ylabel("server CPU µs per delivery")
        ax.set_title("Fan-out cost against the number of connections")
        ax.legend()
        fig.tight_layout()
        path = os.path.join(outdir, "fanout-vs-connections.svg")
        fig.savefig(path)
        plt.close(fig)
        made.append(path)
    return made


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_laurel_options(ap)
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--servers", default=",".join(ALL_SERVERS),
                    help="subset of " + ",".join(ALL_SERVERS) + " (gunicorn: views only)")
    ap.add_argument("--bench", default="boundary,views,notify,fanout")
    ap.add_argument("--duration", type=int, default=8, help="wrk seconds per route (8)")
    ap.add_argument("--warmup", type=int, default=2, help="wrk warm-up seconds (2)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    ap.add_argument("--crossings", type=int, default=4,
                    help="sync_to_async calls per request in the boundary bench (4)")
    ap.add_argument("--users", type=int, default=1000, help="WebSockets / users (1000)")
    ap.add_argument("--notifications", type=int, default=500,
                    help="one-user notifications measured (500)")
    ap.add_argument("--rounds", type=int, default=10,
                    help="notify-all rounds and fan-out broadcasts measured (10)")
    ap.add_argument("--min-deliveries", type=int, default=30000,
                    help="fan-out: more broadcasts than --rounds when needed for at "
                         "least this many deliveries (30000)")
    ap.add_argument("--sweep", default="",
                    help="also fan-out at these group sizes, e.g. 100,300,1000,3000")
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--conn-max-age", default="0",
                    help="the project's CONN_MAX_AGE: 0 (startproject's default: a "
                         "database connection per request), seconds, or none")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--start-timeout", type=float, default=60)
    ap.add_argument("--json", help="write every raw result to this JSON file")
    ap.add_argument("--out", help="also write the Markdown report to this file")
    ap.add_argument("--plots", help="write SVG plots into this folder")
    args = ap.parse_args(argv)

    for path in (args.json, args.out):  # fail now, not after twenty minutes
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            ap.error(f"no folder for {path}")
    extra = laurel_contenders(ap, args)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in servers if s not in ALL_SERVERS + tuple(extra)]
    if unknown or not servers:
        ap.error(f"unknown server(s) {unknown}")
    servers = with_contenders(servers, extra)
    benches = [b.strip() for b in args.bench.split(",") if b.strip()]
    check_cpus("django_bench.py", args.server_cpu, args.load_cpu, "load")

    os.environ["BENCH_CONN_MAX_AGE"] = args.conn_max_age
    logdir = tempfile.mkdtemp(prefix="laurel-django-")
    db = os.path.join(logdir, "bench.sqlite3")
    say(f"django_bench.py: logs and database in {logdir}; creating {args.users} users")
    setup = subprocess.run([args.python, "-m", "site_bench.setup_db", str(args.users)],
                           cwd=SITE, env=dict(os.environ, BENCH_DB=db),
                           capture_output=True, text=True, timeout=600)
    if setup.returncode != 0:
        sys.exit(f"setting up the database failed:\n{setup.stderr[-2000:]}")
    sessions = json.loads(setup.stdout)["sessions"]

    results = []
    for name in servers:
        results.append(bench_server(name, args, db, sessions, logdir, benches))
    sizes = [int(x) for x in args.sweep.split(",") if x.strip()]
    if sizes:
        keep = args.users
        for r in results:
            if r["server"] == "gunicorn" or r.get("error"):
                continue
            r["sweep"] = []
            for n in sizes:
                if n > keep:
                    continue
                args.users = n
                sub = bench_server(r["server"], args, db, sessions, logdir, ["fanout"])
                if "fanout" in sub:
                    r["sweep"].append(sub["fanout"])
            args.users = keep
    if args.json:  # the raw figures first: a report or plot that fails loses nothing
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    text = report(args, servers, results)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if args.plots:
        for p in plots(results, args.plots):
            say(f"plot: {p}")
    return 0 if any(not r.get("error") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
