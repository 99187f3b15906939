#!/usr/bin/python3
"""HTTP/2 benchmark: laurel vs hypercorn serving hello:app over h2c (prior knowledge).

Each server runs bench/hello.py pinned to one CPU while h2load, pinned to another,
sends -n requests over -c connections with -m streams in flight on each. Per server:
a warm-up run, then a measured run, from which we report requests/s (h2load) and the
server's CPU time per request (utime+stime from /proc, as bench/run.py measures it).

Run with Debian's interpreter:  /usr/bin/python3 bench/h2_bench.py [--help]
"""

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile

from common import (CLK_TCK, ROOT, StartError, add_laurel_options, check_cpus, cpu_ticks,
                    fmt, free_port, laurel_binary, laurel_contenders, make_certificate,
                    rss_kib,
                    start_server, stop, tail, wait_http, with_contenders)
from common import versions as _versions

APP = "hello:app"
EXPECTED_BODY = b"Hello, world!"
ALL_SERVERS = ("laurel", "hypercorn")


def server_command(name, args, port):
    if name == "laurel" or name.startswith("laurel@"):
        tls = ["--ssl-certfile", args.cert, "--ssl-keyfile", args.key] if args.tls else []
        return [laurel_binary(name, args), "-v", "0", "-b", "127.0.0.1", "-p", str(port),
                *tls, APP]
    if name == "hypercorn":
        # one worker, asyncio; h2c with prior knowledge is served on plain TCP, h2 by
        # ALPN with a certificate
        tls = ["--certfile", args.cert, "--keyfile", args.key] if args.tls else []
        return [args.python, "-m", "hypercorn", "--workers", "1", "--log-level",
                "warning", "-b", f"127.0.0.1:{port}", *tls, APP]
    raise ValueError(name)


def run_h2load(args, port, n):
    cmd = ["taskset", "-c", str(args.load_cpu), "h2load", "-n", str(n), "-c",
           str(args.connections), "-m", str(args.streams),
           f"{'https' if args.tls else 'http'}://127.0.0.1:{port}/"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    return r.returncode, r.stdout + r.stderr


def parse_h2load(out):
    res = {"rps": None, "requests": 0, "succeeded": 0, "failed": None, "errored": None}
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    if m:
        res["rps"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored", out)
    if m:
        res["requests"] = int(m.group(2))
        res["succeeded"] = int(m.group(3))
        res["failed"] = int(m.group(4))
        res["errored"] = int(m.group(5))
    return res


def bench_one(name, args, logdir):
    result = {"server": name, "error": None}
    port = free_port()
    log_path = os.path.join(logdir, f"{name}.log")
    try:
        proc, log = start_server(server_command(name, args, port), log_path,
                                 args.server_cpu, cwd=os.path.join(ROOT, "bench"), tag=name)
    except OSError as e:
        result["error"] = f"failed to start: {e}"
        return result
    try:
        try:
            # an HTTP/1.1 GET proves the app is imported; both servers speak both
            wait_http(proc, f"{'https' if args.tls else 'http'}://127.0.0.1:{port}/",
                      args.start_timeout,
                      lambda b: b == EXPECTED_BODY)
        except StartError as e:
            detail = tail(log_path)
            result["error"] = f"failed to start: {e}" + (f": {detail}" if detail else "")
            return result
        if args.warmup:
            print(f"[{name}] warm-up {args.warmup} requests", file=sys.stderr)
            run_h2load(args, port, args.warmup)
        print(f"[{name}] measuring {args.requests} requests", file=sys.stderr)
        before = cpu_ticks(proc.pid)
        rc, out = run_h2load(args, port, args.requests)
        after = cpu_ticks(proc.pid)
        result["rss_mib"] = rss_kib(proc.pid) / 1024.0
        if args.verbose:
            print(out, file=sys.stderr)
        h = parse_h2load(out)
        result.update(h)
        if rc != 0 or not h["succeeded"]:
            result["error"] = f"h2load failed (status {rc}): {out.strip()[-300:]}"
            return result
        result["cpu_us_per_req"] = (after - before) * 1e6 / CLK_TCK / h["succeeded"]
        notes = []
        if h["failed"] or h["errored"]:
            notes.append(f"{h['failed']} failed, {h['errored']} errored")
        if proc.poll() is not None:
            notes.append(f"server died (status {proc.returncode})")
        result["notes"] = ", ".join(notes)
        return result
    finally:
        stop(proc)
        log.close()


def table(results):
    base = next((r.get("cpu_us_per_req") for r in results
                 if r["server"] == "hypercorn" and not r["error"]), None)
    rows = ["| server | req/s | CPU µs/req | x hypercorn | RSS MiB | notes |",
            "|---|---:|---:|---:|---:|---|"]
    for r in results:
        if r["error"]:
            rows.append(f"| {r['server']} | – | – | – | – | "
                        f"{r['error'].replace('|', '/').replace(chr(10), ' ')} |")
            continue
        cpu = r.get("cpu_us_per_req")
        ratio = f"{cpu / base:.2f}" if base and cpu is not None else "–"
        rows.append(f"| {r['server']} | {fmt(r['rps'], ',.0f')} | {fmt(cpu, '.1f')} "
                    f"| {ratio} | {fmt(r.get('rss_mib'), '.1f')} | {r.get('notes', '')} |")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_laurel_options(ap)
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="interpreter for hypercorn (default: /usr/bin/python3)")
    ap.add_argument("--servers", default=",".join(ALL_SERVERS),
                    help="comma-separated subset of laurel,hypercorn")
    ap.add_argument("-n", "--requests", type=int, default=100000,
                    help="measured requests (100000)")
    ap.add_argument("--warmup", type=int, default=10000, help="warm-up requests (10000)")
    ap.add_argument("-c", "--connections", type=int, default=10, help="connections (10)")
    ap.add_argument("-m", "--streams", type=int, default=100,
                    help="concurrent streams per connection (100)")
    ap.add_argument("--server-cpu", type=int, default=0, help="CPU for the server (0)")
    ap.add_argument("--load-cpu", type=int, default=1, help="CPU for h2load (1)")
    ap.add_argument("--start-timeout", type=float, default=30)
    ap.add_argument("--timeout", type=float, default=600, help="h2load time limit (600 s)")
    ap.add_argument("--out", help="also write the Markdown table to this file")
    ap.add_argument("--tls", action="store_true",
                    help="HTTP/2 over TLS (ALPN h2, a throwaway P-256 certificate) instead "
                         "of h2c")
    ap.add_argument("-v", "--verbose", action="store_true", help="show h2load's output")
    args = ap.parse_args(argv)

    extra = laurel_contenders(ap, args)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in servers if s not in ALL_SERVERS + tuple(extra)]
    if unknown or not servers:
        ap.error(f"unknown server(s) {unknown}; choose from {','.join(ALL_SERVERS)}")
    servers = with_contenders(servers, extra)
    for tool in ("h2load", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"h2_bench.py: {tool} not found (make deps installs nghttp2-client)")
    check_cpus("h2_bench.py", args.server_cpu, args.load_cpu, "load")

    logdir = tempfile.mkdtemp(prefix="laurel-h2bench-")
    print(f"h2_bench.py: server logs in {logdir}", file=sys.stderr)
    if args.tls:
        args.cert, args.key = make_certificate(logdir)
    results = []
    for name in servers:
        r = bench_one(name, args, logdir)
        if r["error"]:
            print(f"[{name}] {r['error']}", file=sys.stderr)
        results.append(r)

    v = _versions(args.python, [s for s in servers if s == "hypercorn"])
    how = "TLS, ALPN h2, a P-256 certificate" if args.tls else "h2c prior knowledge"
    head = (f"h2load -n {args.requests} -c {args.connections} -m {args.streams} ({how}, "
            f"CPU {args.load_cpu}) against each server (CPU {args.server_cpu}) "
            f"serving bench/hello.py, {args.warmup} warm-up requests; "
            f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs"
            f"{'; ' + v if v else ''}. CPU µs/req = server utime+stime / requests.")
    report = head + "\n\n" + table(results) + "\n"
    print()
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
    return 0 if any(not r["error"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
