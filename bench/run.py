#!/usr/bin/python3
"""Side-by-side benchmark: laurel vs uvicorn vs daphne on the same ASGI app.

Each server runs ``hello:app`` (bench/hello.py) pinned to one CPU while wrk,
pinned to another, loads it over loopback. Per server: a warm-up run, then a
measured run, from which we report requests/s and p99 latency (wrk), server CPU
time per request (utime+stime from /proc, children included) and RSS.

Run with Debian's interpreter:  /usr/bin/python3 bench/run.py [--help]
"""

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile

from common import (CLK_TCK, ROOT, StartError, add_laurel_options, cpu_ticks,
                    free_port, fmt, laurel_binary, laurel_contenders, make_certificate,
                    parse_wrk,
                    rss_kib, run_wrk, start_server, stop, tail, wait_http,
                    with_contenders)
from common import check_cpus, versions as _versions

APP = "hello:app"
EXPECTED_BODY = b"Hello, world!"
ALL_SERVERS = ("laurel", "uvicorn", "daphne")
# With --tls: laurel without TLS in the same run, for what TLS costs it per request.
PLAIN = "laurel-plain"


def tls_of(name, args):
    return args.tls and name != PLAIN


def server_command(name, args, port):
    """The argv that serves APP on 127.0.0.1:port, without the taskset prefix."""
    tls = tls_of(name, args)
    if name in ("laurel", PLAIN) or name.startswith("laurel@"):
        extra = ["--ssl-certfile", args.cert, "--ssl-keyfile", args.key] if tls else []
        return [laurel_binary("laurel" if name == PLAIN else name, args), "-v", "0",
                "-b", "127.0.0.1", "-p", str(port), *extra, APP]
    if name == "uvicorn":
        extra = ["--ssl-certfile", args.cert, "--ssl-keyfile", args.key] if tls else []
        return [args.python, "-m", "uvicorn", "--loop", "uvloop", "--http", "httptools",
                "--no-access-log", "--log-level", "warning",
                "--host", "127.0.0.1", "--port", str(port), *extra, APP]
    if name == "daphne":
        listen = (["-e", f"ssl:{port}:privateKey={args.key}:certKey={args.cert}"
                   ":interface=127.0.0.1"] if tls else ["-b", "127.0.0.1", "-p", str(port)])
        return [args.python, "-m", "daphne", "-v", "0", *listen, APP]
    raise ValueError(name)


# ---------------------------------------------------------------- one server

def wait_ready(proc, port, timeout, scheme="http"):
    """Poll until the server answers GET / with the hello body."""
    wait_http(proc, f"{scheme}://127.0.0.1:{port}/", timeout, lambda b: b == EXPECTED_BODY)


def bench_one(name, args, logdir):
    """Return a result dict for one server; never raises for a server's failure."""
    result = {"server": name, "error": None}
    binary = "laurel" if name == PLAIN else name
    scheme = "https" if tls_of(name, args) else "http"
    if name.startswith("laurel") and not os.access(laurel_binary(binary, args), os.X_OK):
        path = os.path.relpath(laurel_binary(binary, args), ROOT)
        result["error"] = f"not built ({path} missing; run make build)"
        return result
    port = free_port()
    log_path = os.path.join(logdir, f"{name}.log")
    try:
        proc, log = start_server(server_command(name, args, port), log_path,
                                 args.server_cpu, tag=name)
    except OSError as e:
        result["error"] = f"failed to start: {e}"
        return result
    try:
        try:
            wait_ready(proc, port, args.start_timeout, scheme)
        except StartError as e:
            detail = tail(log_path)
            result["error"] = f"failed to start: {e}" + (f": {detail}" if detail else "")
            return result
        if args.warmup > 0:
            print(f"[{name}] warm-up {args.warmup}s", file=sys.stderr)
            run_wrk(args.wrk_cpu, args.connections, port, args.warmup, scheme=scheme)
        print(f"[{name}] measuring {args.duration}s, {args.connections} connections",
              file=sys.stderr)
        before = cpu_ticks(proc.pid)
        rc, out = run_wrk(args.wrk_cpu, args.connections, port, args.duration,
                          scheme=scheme)
        after = cpu_ticks(proc.pid)
        result["rss_mib"] = rss_kib(proc.pid) / 1024.0
        alive = proc.poll() is None
        if args.verbose:
            print(out, file=sys.stderr)
        w = parse_wrk(out)
        result.update(w)
        if rc != 0 or not w["requests"]:
            result["error"] = f"wrk failed (status {rc}): {out.strip()[-200:]}"
            return result
        result["cpu_us_per_req"] = (after - before) * 1e6 / CLK_TCK / w["requests"]
        notes = []
        if w["errors"]:
            notes.append(f"{w['errors']} socket errors")
        if w["non2xx"]:
            notes.append(f"{w['non2xx']} non-2xx")
        if not alive:
            notes.append(f"server died (status {proc.returncode})")
        result["notes"] = ", ".join(notes)
        return result
    finally:
        stop(proc)
        log.close()


# ---------------------------------------------------------------- report

def table(results):
    base = next((r.get("cpu_us_per_req") for r in results
                 if r["server"] == "uvicorn" and not r["error"]), None)
    rows = ["| server | req/s | p99 (ms) | CPU µs/req | x uvicorn | RSS MiB | notes |",
            "|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        if r["error"]:
            error = r["error"].replace("|", "\\|").replace("\n", " ")
            rows.append(f"| {r['server']} | – | – | – | – | – | {error} |")
            continue
        cpu = r.get("cpu_us_per_req")
        ratio = f"{cpu / base:.2f}" if base and cpu is not None else "–"
        rows.append(
            f"| {r['server']} | {fmt(r['rps'], ',.0f')} | {fmt(r['p99_ms'], '.2f')} "
            f"| {fmt(cpu, '.1f')} | {ratio} | {fmt(r.get('rss_mib'), '.1f')} "
            f"| {r.get('notes', '')} |")
    return "\n".join(rows)


def versions(args, servers):
    """'uvicorn 0.17.6, daphne 4.0.0' for the Python servers being run."""
    return _versions(args.python, servers)


def header(args, servers):
    v = versions(args, servers)
    tls = ("over TLS (https://, a P-256 certificate; laurel-plain: laurel without TLS "
           "in the same run), ") if args.tls else ""
    return (
        f"wrk -t1 -c{args.connections} -d{args.duration}s --latency {tls}"
        f"(CPU {args.wrk_cpu}) against each server (CPU {args.server_cpu}) serving "
        f"bench/{APP.replace(':app', '.py')}, {args.warmup}s warm-up; "
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, "
        f"{os.cpu_count()} CPUs{'; ' + v if v else ''}. CPU µs/req = server utime+stime / requests; "
        f"\"x uvicorn\" = that ratio to uvicorn's."
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_laurel_options(ap)
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="interpreter for uvicorn and daphne (default: /usr/bin/python3)")
    ap.add_argument("--servers", default=",".join(ALL_SERVERS),
                    help="comma-separated subset of laurel,uvicorn,daphne")
    ap.add_argument("--duration", type=int, default=10, help="measured seconds (10)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up seconds (2)")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    ap.add_argument("--server-cpu", type=int, default=0, help="CPU for the server (0)")
    ap.add_argument("--wrk-cpu", type=int, default=1, help="CPU for wrk (1)")
    ap.add_argument("--start-timeout", type=float, default=30,
                    help="seconds a server may take to answer (30)")
    ap.add_argument("--out", help="also write the Markdown table to this file")
    ap.add_argument("--tls", action="store_true",
                    help="HTTPS keep-alive (a throwaway certificate): laurel's --ssl-*, "
                         "uvicorn's --ssl-*, daphne's ssl: endpoint; adds laurel-plain")
    ap.add_argument("-v", "--verbose", action="store_true", help="show wrk's output")
    args = ap.parse_args(argv)

    extra = laurel_contenders(ap, args)
    if args.tls:
        extra = extra + [PLAIN]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in servers if s not in ALL_SERVERS + tuple(extra)]
    if unknown or not servers:
        ap.error(f"unknown server(s) {unknown}; choose from {','.join(ALL_SERVERS)}")
    servers = with_contenders(servers, extra)
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"run.py: {tool} not found (make deps installs it)")
    check_cpus("run.py", args.server_cpu, args.wrk_cpu, "wrk")

    logdir = tempfile.mkdtemp(prefix="laurel-bench-")
    print(f"run.py: server logs in {logdir}", file=sys.stderr)
    if args.tls:
        args.cert, args.key = make_certificate(logdir)

    results = []
    for name in servers:
        r = bench_one(name, args, logdir)
        if r["error"]:
            print(f"[{name}] {r['error']}", file=sys.stderr)
        results.append(r)

    report = header(args, servers) + "\n\n" + table(results) + "\n"
    print()
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
    # Success if at least one server was measured.
    return 0 if any(not r["error"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
