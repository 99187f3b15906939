#!/usr/bin/python3
"""WebSocket benchmark: Channels group fan-out and echo under laurel, uvicorn, daphne.

Each server runs bench/fanout_app (an unmodified Channels AsyncWebsocketConsumer in
group "notifications", Channels' InMemoryChannelLayer, a raw ASGI POST /broadcast that
does the group_send) pinned to one CPU; bench/wsload (C, libev + wslay), pinned to
another, drives it over loopback.

fan-out: open N WebSockets, settle, then K broadcasts one at a time (the next is
triggered once every client got the previous one, or after a timeout). Reported:
server CPU µs per delivered message (utime+stime over the broadcast phase / messages
delivered), RSS per idle connection ((RSS with N open - RSS before) / N), latency from
the trigger to the last and the median receipt, deliveries/s.

echo: C connections each send an S-byte text message and wait for its echo, for D
seconds after a warm-up. Reported: messages/s, round trip p50/p99, server CPU µs per
message.

Run with Debian's interpreter:  /usr/bin/python3 bench/fanout.py [--help]
"""

import argparse
import datetime
import json
import os
import select
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request

from common import (CLK_TCK, HERE, ROOT, StartError, add_laurel_options, check_cpus,
                    cpu_ticks, fmt, free_port, laurel_binary, laurel_contenders, md_cell,
                    rss_kib, start_server, stop, tail, versions, wait_http,
                    with_contenders)

APP = "fanout_app.asgi:application"
WSLOAD = os.path.join(HERE, "wsload")
ALL_SERVERS = ("laurel", "laurel-inmemory", "uvicorn", "daphne")
DEFAULT_SERVERS = ("laurel", "laurel-inmemory", "uvicorn", "daphne")
LABELS = {"laurel-inmemory": "laurel + InMemory"}


def server_command(name, args, port):
    """The argv that serves APP on 127.0.0.1:port, without the taskset prefix."""
    if name == "laurel" or name.startswith("laurel@"):
        return [laurel_binary(name, args), "-v", "0", "-b", "127.0.0.1", "-p", str(port),
                APP]
    if name == "laurel-inmemory":  # keep Channels' InMemoryChannelLayer from settings
        return [args.laurel, "-v", "0", "--channel-layer", "settings",
                "-b", "127.0.0.1", "-p", str(port), APP]
    if name == "uvicorn":
        return [args.python, "-m", "uvicorn", "--loop", "uvloop", "--http", "httptools",
                "--ws", "websockets", "--no-access-log", "--log-level", "warning",
                "--host", "127.0.0.1", "--port", str(port), APP]
    if name == "daphne":
        return [args.python, "-m", "daphne", "-v", "0",
                "-b", "127.0.0.1", "-p", str(port), APP]
    raise ValueError(name)


def build_wsload(force=False):
    src = os.path.join(HERE, "wsload.c")
    if not force and os.access(WSLOAD, os.X_OK) and \
            os.path.getmtime(WSLOAD) >= os.path.getmtime(src):
        return
    cmd = ["cc", "-O2", "-Wall", "-o", WSLOAD, src, "-lev", "-lwslay", "-lcrypto", "-lz",
           "-lm"]
    print(f"fanout.py: {shlex.join(cmd)}", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        sys.exit(f"fanout.py: building wsload failed:\n{proc.stderr}")


# ---------------------------------------------------------------- wsload driving

class LoadError(Exception):
    pass


class Wsload:
    """wsload --control as a child: JSON event lines out, a "go" line in per phase."""

    def __init__(self, args, argv, log_path):
        cmd = ["taskset", "-c", str(args.load_cpu), WSLOAD] + argv + ["--control"]
        if args.verbose:
            print(f"  {shlex.join(cmd)}", file=sys.stderr)
        self.err = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err)
        self.buf = b""
        self.lines = []

    def event(self, deadline):
        """The next JSON line from stdout, or LoadError at the deadline / on exit."""
        while not self.lines:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LoadError("wsload timed out")
            r, _, _ = select.select([self.proc.stdout], [], [], min(left, 1.0))
            if not r:
                continue
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                self.proc.wait(timeout=10)
                raise LoadError(f"wsload exited with status {self.proc.returncode}")
            self.buf += chunk
            *done, self.buf = self.buf.split(b"\n")
            self.lines.extend(l for l in done if l.strip())
        line = self.lines.pop(0)
        try:
            return json.loads(line)
        except ValueError:
            raise LoadError(f"wsload printed {line[:200]!r}")

    def expect(self, name, deadline):
        ev = self.event(deadline)
        if ev.get("event") != name:
            raise LoadError(f"wsload: expected {name!r}, got {ev}")
        return ev

    def go(self):
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.err.close()


# ---------------------------------------------------------------- one server

def serve(name, args, logdir, what):
    """Start the server and wait until GET / answers; returns (proc, log, port, layer)."""
    port = free_port()
    log_path = os.path.join(logdir, f"{name}-{what}.log")
    proc, log = start_server(server_command(name, args, port), log_path, args.server_cpu,
                             tag=f"{name} {what}")
    try:
        body = wait_http(proc, f"http://127.0.0.1:{port}/", args.start_timeout,
                         lambda b: b.startswith(b"ok "))
    except StartError as e:
        stop(proc)
        log.close()
        detail = tail(log_path)
        raise StartError(f"failed to start: {e}" + (f": {detail}" if detail else ""))
    layer = body[3:].decode(errors="replace").strip()
    layer = layer[len("channels.layers."):] if layer.startswith("channels.layers.") else layer
    return proc, log, port, layer, log_path


def trigger_once(port):
    """One broadcast with nobody subscribed: checks the endpoint and warms it."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/broadcast", data=b"seq=0",
                                 method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def server_failure(proc, log_path, what):
    if proc.poll() is not None:
        detail = tail(log_path)
        return f"server died during {what} (status {proc.returncode})" + \
            (f": {detail}" if detail else "")
    return None


def bench_fanout(name, args, logdir):
    result = {"server": name, "error": None, "deflate_offered": args.deflate}
    try:
        proc, log, port, layer, log_path = serve(name, args, logdir, "fanout")
    except (StartError, OSError) as e:
        result["error"] = str(e)
        return result
    result["layer"] = layer
    load = None
    try:
        try:
            trigger_once(port)
        except Exception as e:
            result["error"] = f"POST /broadcast failed: {e}"
            return result
        time.sleep(0.5)
        rss_before = rss_kib(proc.pid)
        argv = ["fanout", "-p", str(port), "-n", str(args.clients),
                "-k", str(args.broadcasts), "--timeout", str(args.timeout),
                "--settle", str(args.settle)] + (["--pad", str(args.pad)] if args.pad else [])
        argv += ["--deflate"] if args.deflate else []
        print(f"[{name} fanout] {args.clients} clients, {args.broadcasts} broadcasts",
              file=sys.stderr)
        load = Wsload(args, argv, os.path.join(logdir, f"{name}-wsload-fanout.log"))
        deadline = time.monotonic() + 60 + args.settle + 30
        opened = load.expect("open", deadline)
        rss_open = rss_kib(proc.pid)
        t0 = cpu_ticks(proc.pid)
        load.go()
        deadline = time.monotonic() + args.broadcasts * (args.timeout + 1) + 30
        load.expect("done", deadline)
        t1 = cpu_ticks(proc.pid)
        load.go()
        r = load.expect("result", time.monotonic() + 30)
        result.update(r)
        if opened["open"]:
            result["rss_kib_per_conn"] = (rss_open - rss_before) / opened["open"]
        result["rss_before_mib"] = rss_before / 1024
        if r["received"]:
            result["cpu_us_per_msg"] = (t1 - t0) * 1e6 / CLK_TCK / r["received"]
        died = server_failure(proc, log_path, "the fan-out run")
        if died:
            result["error"] = died
        elif not r["received"]:
            result["error"] = "no message delivered: " + (r.get("first_error") or "?")
        return result
    except LoadError as e:
        result["error"] = server_failure(proc, log_path, "the fan-out run") or str(e)
        return result
    finally:
        if load:
            load.close()
        stop(proc)
        log.close()


def bench_echo(name, args, logdir):
    result = {"server": name, "error": None, "deflate_offered": args.deflate}
    try:
        proc, log, port, layer, log_path = serve(name, args, logdir, "echo")
    except (StartError, OSError) as e:
        result["error"] = str(e)
        return result
    load = None
    try:
        argv = ["echo", "-p", str(port), "-c", str(args.echo_clients),
                "-s", str(args.size), "-d", str(args.duration),
                "--warmup", str(args.warmup), "--path", args.echo_path]
        argv += ["--deflate"] if args.deflate else []
        print(f"[{name} echo] {args.echo_clients} connections, {args.size} B, "
              f"{args.duration}s on {args.echo_path}", file=sys.stderr)
        load = Wsload(args, argv, os.path.join(logdir, f"{name}-wsload-echo.log"))
        load.expect("ready", time.monotonic() + 60 + args.warmup + 30)
        t0 = cpu_ticks(proc.pid)
        load.go()
        load.expect("done", time.monotonic() + args.duration + 60)
        t1 = cpu_ticks(proc.pid)
        load.go()
        r = load.expect("result", time.monotonic() + 30)
        result.update(r)
        if r["messages"]:
            result["cpu_us_per_msg"] = (t1 - t0) * 1e6 / CLK_TCK / r["messages"]
        died = server_failure(proc, log_path, "the echo run")
        if died:
            result["error"] = died
        elif not r["messages"]:
            result["error"] = "no echo: " + (r.get("first_error") or "?")
        return result
    except LoadError as e:
        result["error"] = server_failure(proc, log_path, "the echo run") or str(e)
        return result
    finally:
        if load:
            load.close()
        stop(proc)
        log.close()


# ---------------------------------------------------------------- report

def notes_for(r, mode):
    notes = []
    if r.get("connect_errors"):
        notes.append(f"{r['connect_errors']} of {r['clients']} connections failed")
    if mode == "fanout":
        if r.get("timeouts"):
            notes.append(f"{r['timeouts']} of {r['broadcasts']} broadcasts timed out")
        if r.get("missing"):
            notes.append(f"{r['missing']} messages missing")
        if r.get("late"):
            notes.append(f"{r['late']} late")
        if r.get("trigger_errors"):
            notes.append(f"{r['trigger_errors']} trigger errors")
    if r.get("bad"):
        notes.append(f"{r['bad']} bad messages")
    if r.get("deflate_offered") and r.get("deflate") is not None:
        opened = r.get("opened") or 0
        notes.append("permessage-deflate" if r["deflate"] == opened and opened else
                     f"permessage-deflate on {r['deflate']} of {opened}")
    if r.get("closed_by_server"):
        notes.append(f"{r['closed_by_server']} closed by server")
    if (r.get("client_cpu_pct") or 0) > 80:
        notes.append(f"load client at {r['client_cpu_pct']:.0f}% CPU")
    if r.get("first_error") and notes:
        notes.append(f"first error: {r['first_error']}")
    return ", ".join(notes)


def label(name):
    return LABELS.get(name, name)


def ratio(r, base):
    cpu = r.get("cpu_us_per_msg")
    return f"{cpu / base:.2f}" if base and cpu is not None else "–"


def base_of(results):
    return next((r.get("cpu_us_per_msg") for r in results
                 if r["server"] == "uvicorn" and not r["error"]), None)


def fanout_table(results):
    base = base_of(results)
    rows = ["| server | layer | deliveries/s | last p50 (ms) | last p99 (ms) "
            "| median p50 (ms) | CPU µs/delivery | x uvicorn | RSS KiB/idle conn | notes |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        if r["error"]:
            rows.append(f"| {label(r['server'])} | {r.get('layer', '–')} "
                        f"| – | – | – | – | – | – | – | {md_cell(r['error'])} |")
            continue
        rows.append(
            f"| {label(r['server'])} | {r.get('layer', '–')} "
            f"| {fmt(r.get('deliveries_per_s'), ',.0f')} "
            f"| {fmt(r.get('last_p50_ms'), '.1f')} | {fmt(r.get('last_p99_ms'), '.1f')} "
            f"| {fmt(r.get('median_p50_ms'), '.1f')} | {fmt(r.get('cpu_us_per_msg'), '.1f')} "
            f"| {ratio(r, base)} | {fmt(r.get('rss_kib_per_conn'), '.1f')} "
            f"| {md_cell(notes_for(r, 'fanout'))} |")
    return "\n".join(rows)


def echo_table(results):
    base = base_of(results)
    rows = ["| server | messages/s | RTT p50 (ms) | RTT p99 (ms) | CPU µs/message "
            "| x uvicorn | notes |",
            "|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        if r["error"]:
            rows.append(f"| {label(r['server'])} | – | – | – | – | – | {md_cell(r['error'])} |")
            continue
        rows.append(
            f"| {label(r['server'])} | {fmt(r.get('messages_per_s'), ',.0f')} "
            f"| {fmt(r.get('rtt_p50_ms'), '.2f')} | {fmt(r.get('rtt_p99_ms'), '.2f')} "
            f"| {fmt(r.get('cpu_us_per_msg'), '.1f')} | {ratio(r, base)} "
            f"| {md_cell(notes_for(r, 'echo'))} |")
    return "\n".join(rows)


def report(args, servers, fanout, echo):
    v = versions(args.python, servers)
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        f"bench/fanout.py: servers on CPU {args.server_cpu}, bench/wsload on CPU "
        f"{args.load_cpu}, loopback; bench/fanout_app; {when}, {os.cpu_count()} CPUs"
        f"{'; ' + v if v else ''}."
    ]
    if args.deflate:
        parts.append("**Compressed**: every client offers `permessage-deflate; "
                     "client_max_window_bits` (as browsers do) and inflates what comes "
                     "compressed" + (f"; each notification carries {args.pad} bytes of "
                                     "text (`--pad`)" if args.pad else "") + ".")
    elif args.pad:
        parts.append(f"Each notification carries {args.pad} bytes of text (`--pad`).")
    if fanout:
        parts.append(
            f"**Fan-out**: {args.clients} WebSockets in group \"notifications\" "
            f"(AsyncWebsocketConsumer), {args.broadcasts} broadcasts one at a time "
            f"(POST /broadcast -> group_send). last/median = trigger to the last/median "
            f"client's receipt; CPU µs/delivery = server utime+stime over the broadcast "
            f"phase / messages delivered; RSS KiB/idle conn = (RSS with {args.clients} "
            f"open - RSS before) / {args.clients}.\n\n" + fanout_table(fanout))
    if echo:
        parts.append(
            f"**Echo**: {args.echo_clients} connections to {args.echo_path}, "
            f"{args.size}-byte text messages, one in flight per connection, "
            f"{args.duration}s after {args.warmup}s warm-up; CPU µs/message = server "
            f"utime+stime / echoed messages.\n\n" + echo_table(echo))
    return "\n\n".join(parts) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_laurel_options(ap)
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="interpreter for uvicorn and daphne (default: /usr/bin/python3)")
    ap.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                    help="comma-separated subset of " + ",".join(ALL_SERVERS) +
                    " (laurel-inmemory: laurel --channel-layer settings)")
    ap.add_argument("--bench", default="fanout,echo", help="fanout,echo or one of them")
    ap.add_argument("--clients", type=int, default=1000, help="fan-out subscribers (1000)")
    ap.add_argument("--broadcasts", type=int, default=50, help="fan-out broadcasts (50)")
    ap.add_argument("--timeout", type=float, default=10,
                    help="seconds one broadcast may take to reach everyone (10)")
    ap.add_argument("--settle", type=float, default=1,
                    help="seconds to wait once all subscribers are open (1)")
    ap.add_argument("--duration", type=int, default=10, help="echo measured seconds (10)")
    ap.add_argument("--warmup", type=float, default=1, help="echo warm-up seconds (1)")
    ap.add_argument("--echo-clients", type=int, default=64, help="echo connections (64)")
    ap.add_argument("--size", type=int, default=32, help="echo message bytes (32)")
    ap.add_argument("--deflate", action="store_true",
                    help="clients offer permessage-deflate (as browsers do) and inflate "
                         "compressed messages")
    ap.add_argument("--pad", type=int, default=0,
                    help="fan-out: N bytes of notification text added to each message "
                         "(0: {seq, ts} only, about 37 bytes)")
    ap.add_argument("--echo-path", default="/echo",
                    help="/echo (AsyncWebsocketConsumer) or /echo-raw (raw ASGI)")
    ap.add_argument("--server-cpu", type=int, default=0, help="CPU for the server (0)")
    ap.add_argument("--load-cpu", type=int, default=1, help="CPU for wsload (1)")
    ap.add_argument("--start-timeout", type=float, default=30,
                    help="seconds a server may take to answer (30)")
    ap.add_argument("--json", help="also write every raw result to this JSON file")
    ap.add_argument("--out", help="also write the Markdown report to this file")
    ap.add_argument("-v", "--verbose", action="store_true", help="show wsload commands")
    args = ap.parse_args(argv)

    extra = laurel_contenders(ap, args)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in servers if s not in ALL_SERVERS + tuple(extra)]
    if unknown or not servers:
        ap.error(f"unknown server(s) {unknown}; choose from {','.join(ALL_SERVERS)}")
    servers = with_contenders(servers, extra)
    benches = [b.strip() for b in args.bench.split(",") if b.strip()]
    if not benches or any(b not in ("fanout", "echo") for b in benches):
        ap.error("--bench takes fanout, echo or fanout,echo")
    if min(args.clients, args.broadcasts, args.echo_clients, args.size, args.duration) < 1:
        ap.error("--clients, --broadcasts, --echo-clients, --size, --duration must be >= 1")
    if args.clients > 60000 or args.broadcasts > 100000 or args.duration > 3600:
        ap.error("keep it bounded: --clients <= 60000, --broadcasts <= 100000, "
                 "--duration <= 3600")
    check_cpus("fanout.py", args.server_cpu, args.load_cpu, "load")
    build_wsload()

    logdir = tempfile.mkdtemp(prefix="laurel-fanout-")
    print(f"fanout.py: logs in {logdir}", file=sys.stderr)

    fanout, echo = [], []
    for name in servers:
        for bench, results in (("fanout", fanout), ("echo", echo)):
            if bench not in benches:
                continue
            binary = laurel_binary(name, args) if name.startswith("laurel") else None
            if binary and not os.access(binary, os.X_OK):
                r = {"server": name, "error": f"not built "
                     f"({os.path.relpath(binary, ROOT)} missing; run make build)"}
            else:
                r = (bench_fanout if bench == "fanout" else bench_echo)(name, args, logdir)
            if r["error"]:
                print(f"[{name} {bench}] {r['error']}", file=sys.stderr)
            results.append(r)

    text = report(args, servers, fanout, echo)
    print()
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"fanout": fanout, "echo": echo}, f, indent=1)
    ok = any(not r["error"] for r in fanout + echo)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
