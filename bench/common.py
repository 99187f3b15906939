"""Helpers shared by the benchmark runners (bench/run.py, bench/fanout.py):
ports, /proc sampling (CPU ticks, RSS), starting, polling and stopping servers,
table formatting."""

import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- /proc reading

def _children_map():
    """ppid -> [pid] for every live process."""
    kids = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        kids.setdefault(int(fields[1]), []).append(int(entry))
    return kids


def process_tree(pid):
    """pid and all its live descendants (a server that forks workers)."""
    kids = _children_map()
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(kids.get(p, ()))
    return tree


def cpu_ticks(pid):
    """utime+stime of pid and its live descendants, plus what reaped children used."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after "(comm)": state=0 ppid=1 ... utime=11 stime=12 cutime=13 cstime=14
        fields = stat[stat.rindex(")") + 2:].split()
        total += sum(int(x) for x in fields[11:15])
    return total


def rss_kib(pid):
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


# ---------------------------------------------------------------- servers

class StartError(Exception):
    pass


def start_server(cmd, log_path, cpu, cwd=HERE, tag=None):
    """Popen cmd pinned to cpu in its own session, output to log_path.

    taskset execs the server, so the returned proc.pid is the server's own pid.
    Returns (proc, log file); raises OSError if it cannot be started.
    """
    cmd = ["taskset", "-c", str(cpu)] + list(cmd)
    log = open(log_path, "w")
    if tag:
        print(f"[{tag}] {shlex.join(cmd)}", file=sys.stderr)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    except OSError:
        log.close()
        raise
    return proc, log


def wait_http(proc, url, timeout, check):
    """Poll GET url until check(body) is true; raise StartError on exit or timeout."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StartError(f"exited with status {proc.returncode}")
        try:
            # Benchmark certificates are throwaway ones: https:// is not verified.
            ctx = ssl._create_unverified_context() if url.startswith("https:") else None
            with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
                body = r.read()
            if check(body):
                return body
            last = f"unexpected body {body[:40]!r}"
        except Exception as e:  # refused while starting up, etc.
            last = str(e)
        time.sleep(0.1)
    raise StartError(f"not ready after {timeout:.0f}s ({last})")


def stop(proc):
    """SIGTERM the server, then SIGKILL whatever is left of its process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers: workers, shell children
    except OSError:
        pass
    proc.wait()


def tail(path, n=5):
    try:
        with open(path, errors="replace") as f:
            lines = [l.rstrip() for l in f if l.strip()]
        return " / ".join(lines[-n:])
    except OSError:
        return ""


def check_cpus(prog, server_cpu, load_cpu, load_name):
    """Exit if a CPU is unavailable; warn if server and load share one."""
    cpus = os.sched_getaffinity(0)
    for cpu in (server_cpu, load_cpu):
        if cpu not in cpus:
            sys.exit(f"{prog}: CPU {cpu} not available (have {sorted(cpus)}); "
                     f"use --server-cpu/--{load_name}-cpu")
    if server_cpu == load_cpu:
        print(f"{prog}: warning: server and {load_name} share a CPU", file=sys.stderr)


# ---------------------------------------------------------------- wrk

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def _to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * _UNITS_MS[m.group(2)] if m else None


def parse_wrk(out):
    res = {"rps": None, "p99_ms": None, "requests": None, "errors": 0, "non2xx": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"^\s*99%\s+(\S+)", out, re.M)
    if m:
        res["p99_ms"] = _to_ms(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["errors"] = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    return res


def run_wrk(cpu, connections, port, duration, path="/", headers=(), scheme="http"):
    """wrk -t1 pinned to cpu against http://127.0.0.1:port/path; (status, output)."""
    cmd = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}",
           f"-d{duration}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(f"{scheme}://127.0.0.1:{port}{path}")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=duration + 60)
    return proc.returncode, proc.stdout


# ---------------------------------------------------------------- report

def fmt(v, spec):
    return "–" if v is None else format(v, spec)


def md_cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def versions(python, servers):
    """'uvicorn 0.17.6, daphne 4.0.0' for the Python packages named in servers."""
    names = [s for s in servers if not s.startswith("laurel")]
    if not names:
        return ""
    code = ("import importlib.metadata as m, sys\n"
            "print(', '.join(f'{n} {m.version(n)}' for n in sys.argv[1:]))")
    try:
        out = subprocess.run([python, "-c", code] + names, capture_output=True,
                             text=True, timeout=30)
        return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


# ---------------------------------------------------------------- laurel binaries

def add_laurel_options(ap):
    """--laurel (the binary under test) and --laurel-also NAME=PATH (more laurel
    binaries run beside it in the same run, as contenders laurel@NAME: the build of an
    earlier commit, say, for a before/after comparison)."""
    ap.add_argument("--laurel", default=os.path.join(ROOT, "build", "laurel"),
                    help="laurel binary (default: build/laurel)")
    ap.add_argument("--laurel-also", action="append", default=[], metavar="NAME=PATH",
                    help="another laurel binary, run as contender laurel@NAME right after "
                         "laurel (e.g. before=/tmp/laurel-old/build/laurel); repeatable")


def laurel_contenders(ap, args):
    """Checks --laurel-also; returns the contender names it adds ("laurel@NAME")."""
    args.laurel = os.path.abspath(args.laurel)
    args.laurel_at = {}
    for spec in args.laurel_also:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path or not name.replace("-", "").isalnum():
            ap.error(f"--laurel-also takes NAME=PATH, not {spec!r}")
        args.laurel_at[name] = os.path.abspath(path)
    return [f"laurel@{n}" for n in args.laurel_at]


def laurel_binary(name, args):
    """The binary of a laurel contender ("laurel", "laurel-inmemory", "laurel@NAME")."""
    if name.startswith("laurel@"):
        return args.laurel_at[name[len("laurel@"):]]
    return args.laurel


def with_contenders(servers, extra):
    """servers with the laurel@NAME contenders right after "laurel" (or first)."""
    out = [s for s in servers if s not in extra]
    at = out.index("laurel") + 1 if "laurel" in out else 0
    return out[:at] + [e for e in extra if e not in out] + out[at:]


def make_certificate(folder):
    """A throwaway self-signed certificate for 127.0.0.1 (openssl, EC P-256, as
    certificates are issued today): (cert path, key path)."""
    cert, key = os.path.join(folder, "bench.crt"), os.path.join(folder, "bench.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    return cert, key
