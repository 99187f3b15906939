#!/usr/bin/python3
"""TLS handshakes: laurel vs uvicorn vs daphne, full and resumed.

Each server serves bench/hello.py over TLS (a throwaway P-256 certificate), pinned to
one CPU; ``openssl s_time`` on the other CPU opens connection after connection for a
fixed time, each connection a GET / (``-www /``, so that TLS 1.3 tickets are read):
``-new`` (a full handshake each time) and ``-reuse`` (resuming the first
session). Reports handshakes per second and server CPU µs per handshake (utime+stime
from /proc over the run, divided by the handshakes s_time counted).

    /usr/bin/python3 bench/tls_handshakes.py [--servers laurel,uvicorn] [--duration 5]
"""

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile

from common import (CLK_TCK, StartError, check_cpus, cpu_ticks, fmt, free_port,
                    make_certificate, start_server, stop, tail, wait_http)
from run import ALL_SERVERS, EXPECTED_BODY, server_command


def s_time(cpu, port, seconds, mode):
    """(handshakes, output) of one openssl s_time run in mode -new or -reuse."""
    cmd = ["taskset", "-c", str(cpu), "openssl", "s_time", "-connect",
           f"127.0.0.1:{port}", mode, "-time", str(seconds), "-www", "/"]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=seconds + 60).stdout
    # "1234 connections in 4.35s; 283.68 connections/user sec, bytes read 0"
    found = re.findall(r"(\d+) connections in [\d.]+s", out)
    return (int(found[-1]) if found else 0), out


def bench_one(name, args, logdir):
    result = {"server": name, "error": None}
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
            wait_http(proc, f"https://127.0.0.1:{port}/", args.start_timeout,
                      lambda b: b == EXPECTED_BODY)
        except StartError as e:
            result["error"] = f"failed to start: {e}: {tail(log_path)}"
            return result
        for mode in ("-new", "-reuse"):
            print(f"[{name}] s_time {mode} {args.duration}s", file=sys.stderr)
            before = cpu_ticks(proc.pid)
            n, out = s_time(args.load_cpu, port, args.duration, mode)
            after = cpu_ticks(proc.pid)
            if not n:
                result["error"] = f"s_time {mode} counted nothing: {out.strip()[-200:]}"
                return result
            key = mode[1:]
            result[f"{key}_rate"] = n / args.duration
            result[f"{key}_us"] = (after - before) * 1e6 / CLK_TCK / n
        return result
    finally:
        stop(proc)
        log.close()


def table(results):
    rows = ["| server | full handshakes/s | server CPU µs each | resumed/s | "
            "server CPU µs each |", "|---|---:|---:|---:|---:|"]
    for r in results:
        if r["error"]:
            rows.append(f"| {r['server']} | – | – | – | – | {r['error']} |")
            continue
        rows.append(f"| {r['server']} | {fmt(r['new_rate'], ',.0f')} | "
                    f"{fmt(r['new_us'], '.0f')} | {fmt(r['reuse_rate'], ',.0f')} | "
                    f"{fmt(r['reuse_us'], '.0f')} |")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--laurel", default=os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "build", "laurel"), help="laurel binary")
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--servers", default=",".join(ALL_SERVERS))
    ap.add_argument("--duration", type=int, default=5, help="seconds per mode (5)")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--start-timeout", type=float, default=30)
    args = ap.parse_args(argv)
    args.tls, args.laurel_at = True, {}
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if any(s not in ALL_SERVERS for s in servers):
        ap.error(f"choose servers from {','.join(ALL_SERVERS)}")
    for tool in ("openssl", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"tls_handshakes.py: {tool} not found")
    check_cpus("tls_handshakes.py", args.server_cpu, args.load_cpu, "openssl s_time")
    logdir = tempfile.mkdtemp(prefix="laurel-bench-tls-")
    args.cert, args.key = make_certificate(logdir)
    results = [bench_one(s, args, logdir) for s in servers]
    print()
    print(f"openssl s_time -new / -reuse, {args.duration}s each (CPU {args.load_cpu}) "
          f"against each server (CPU {args.server_cpu}) serving bench/hello.py over TLS "
          f"with a P-256 certificate; {datetime.datetime.now():%Y-%m-%d %H:%M}.\n")
    print(table(results))
    return 0 if any(not r["error"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
