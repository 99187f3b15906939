"""laurel as a container entrypoint and as a process supervisor (docs/deployment.md).

* PID 1: the binary runs as PID 1 of a new PID namespace
  (``unshare --pid --fork --mount-proc --kill-child laurel ...``), as it does under
  ``docker run``. It must serve, stop with status 0 on SIGTERM (``docker stop``) and on
  SIGINT (Ctrl-C), reap orphaned grandchildren, and read ``PORT`` and ``LAUREL_*``.
* ``--workers``: the master binds, forks the workers, restarts a dead one, stops them all
  on SIGTERM, replaces them one by one on SIGHUP, recycles them with ``--max-requests``
  and gives up (exit status non-zero) when the application cannot even be imported.

Tests that need the master process (``--workers``, and laurel running a master as PID 1)
use the ``master_mode`` fixture: it starts ``laurel --workers 2`` once per session and
skips them, with the reason, while that runs as a single process. Set
``LAUREL_TEST_REQUIRE_MASTER=1`` to make that a failure instead.

Every server here runs in its own session, so that a failing test can take the master and
all its workers down with one killpg and leaves nothing behind.
"""

import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import (LAUREL_BIN, REPO, Server, check_binary, free_port, ipv6_available,
                      kind, run_cli)

pytestmark = pytest.mark.laurel_only

APP = "tests.apps.ops_app:app"
UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
GRACE = 3.0      # --graceful-timeout used by the shutdown tests
MARGIN = 4.0     # start-up/teardown slack on a loaded 2-core machine (and under ASan)


# --------------------------------------------------------------------------- /proc

def children(pid):
    out = []
    for f in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            out += [int(x) for x in Path(f).read_text().split()]
        except OSError:
            pass
    return out


def stat(pid, proc="/proc"):
    """(state, ppid, pgid) of a process, or None if it is gone."""
    try:
        s = Path(f"{proc}/{pid}/stat").read_text()
    except OSError:
        return None
    f = s[s.rindex(")") + 2:].split()
    return f[0], int(f[1]), int(f[2])


def alive(pid):
    st = stat(pid)
    return st is not None and st[0] != "Z"


def is_laurel(pid):
    """A live process running the laurel binary (a forked worker keeps the master's
    executable; " (deleted)" when the binary was rebuilt meanwhile)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False  # gone, or a zombie
    return Path(exe.removesuffix(" (deleted)")).name == LAUREL_BIN.name


def worker_pids(master):
    return sorted(c for c in children(master) if is_laurel(c))


def tagged(tag):
    """Every live process whose environment carries OPS_TEST_TAG=tag: the server and
    whatever it started, wherever they were re-parented or re-grouped to."""
    needle = f"OPS_TEST_TAG={tag}".encode()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            env = Path(f"/proc/{d}/environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0") and alive(d):
            out.append(int(d))
    return out


def wait_for(cond, timeout, interval=0.05):
    """Polls cond() until it returns something true; returns that, or the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def clean_env(extra=None):
    """The environment without PORT and LAUREL_*, so the runner's own cannot leak in."""
    e = {k: v for k, v in os.environ.items() if k != "PORT" and not k.startswith("LAUREL_")}
    e.update({"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    e.update(extra or {})
    return e


# --------------------------------------------------------------------------- clients

def fetch(host, port, path, timeout=10):
    """GET with Connection: close on a new connection; returns (status, body)."""
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Connection": "close"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def pid_of(srv, path="/pid", timeout=10):
    status, body = fetch(srv.host, srv.port, path, timeout)
    assert status == 200, (status, body[:300])
    return json.loads(body)


class InFlight(threading.Thread):
    """One request in a thread; .result is (status, body) or the exception."""

    def __init__(self, srv, path, timeout=30):
        super().__init__(daemon=True)
        self.srv, self.path, self.timeout, self.result = srv, path, timeout, None
        self.start()

    def run(self):
        try:
            self.result = fetch(self.srv.host, self.srv.port, self.path, self.timeout)
        except Exception as e:  # reported by the test
            self.result = e


class Hammer(threading.Thread):
    """Requests /pid in a loop, one connection each, until stopped; collects every
    served pid and every failure."""

    def __init__(self, srv):
        super().__init__(daemon=True)
        self.srv, self.pids, self.errors, self.count = srv, [], [], 0
        self._stop_ev = threading.Event()
        self.start()

    def run(self):
        while not self._stop_ev.is_set():
            try:
                status, body = fetch(self.srv.host, self.srv.port, "/pid", 10)
                if status != 200:
                    self.errors.append((status, body[:200]))
                else:
                    self.pids.append(json.loads(body)["pid"])
            except Exception as e:
                self.errors.append(repr(e))
            self.count += 1
            time.sleep(0.005)

    def stop(self):
        self._stop_ev.set()
        self.join(30)
        return self


def serving_pids(srv, n, timeout=20, block=0.05, clients=4):
    """Sends concurrent requests that each block their worker for ``block`` s (so that
    busy workers leave the next connections to the others) until n distinct worker pids
    have answered; returns {pid: ppid}. Fails on any error or after timeout."""
    seen, errors, lock = {}, [], threading.Lock()
    deadline = time.monotonic() + timeout

    def client():
        while time.monotonic() < deadline:
            with lock:
                if len(seen) >= n or errors:
                    return
            try:
                d = pid_of(srv, f"/pid?block={block}")
                with lock:
                    seen[d["pid"]] = d["ppid"]
            except Exception as e:
                with lock:
                    errors.append(repr(e))
    ts = [threading.Thread(target=client) for _ in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout + 15)
    assert not errors, errors
    assert len(seen) >= n, f"only {sorted(seen)} answered within {timeout}s, want {n}"
    return seen


# --------------------------------------------------------------------------- servers

class OpsServer(Server):
    """A Server in its own session whose processes all carry OPS_TEST_TAG in their
    environment: kill() SIGKILLs every one of them (workers lead process groups of their
    own). The environment has no PORT or LAUREL_* but those the test gives."""

    def __init__(self, app, args, tmpdir, env=None, wrap=(), **kw):
        super().__init__(app, args, tmpdir, env=env, **kw)
        self.tag = uuid.uuid4().hex
        self.env = clean_env(env)
        self.env["OPS_TEST_TAG"] = self.tag
        self.argv = [*(wrap(self.env) if callable(wrap) else wrap), *self.argv]

    def processes(self):
        """Live processes started by this server (the master or PID 1 included)."""
        unshare = self.proc.pid if isinstance(self, NsServer) else None
        return [p for p in tagged(self.tag) if p != unshare]

    def start(self, ready_timeout=15, wait=True):
        check_binary()
        self._out = open(self._out_path, "wb")
        self._err = open(self._err_path, "wb")
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err, start_new_session=True)
        if wait:
            self.wait_ready(ready_timeout)
        return self

    def kill(self):
        if self.proc is None:
            return
        for p in [self.proc.pid, *tagged(self.tag)]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.wait(10)

    @property
    def master(self):
        return self.proc.pid

    def workers(self):
        return worker_pids(self.master)

    def wait_workers(self, n, timeout=10, exclude=()):
        """Waits until the master has exactly n live workers, none of them in exclude;
        returns them (or fails)."""
        ws = wait_for(lambda: (lambda w: w if len(w) == n and not set(w) & set(exclude)
                               else None)(self.workers()), timeout)
        assert ws, (f"expected {n} workers (not {sorted(exclude)}) under master "
                    f"{self.master} within {timeout}s; have {self.workers()}\n"
                    f"stderr:\n{self.stderr()[-3000:]}")
        return ws


class NsServer(OpsServer):
    """laurel as PID 1 of a new PID namespace (with its own /proc), as in a container.
    self.proc is unshare, which relays PID 1's exit status; signals go to PID 1, the
    way `docker stop` sends them."""

    def __init__(self, app, args, tmpdir, env=None, **kw):
        super().__init__(app, args, tmpdir, env=env, **kw)
        self.argv = [*UNSHARE, *self.argv]
        self._pid1 = None

    @property
    def pid1(self):
        """Host pid of the namespace's PID 1 (laurel)."""
        if self._pid1 is None:
            kids = wait_for(lambda: children(self.proc.pid), 5)
            assert kids, "unshare started no child"
            self._pid1 = kids[0]
        return self._pid1

    @property
    def master(self):
        return self.pid1

    def stop(self, sig=signal.SIGTERM, timeout=15):
        self.stopped = True
        if self.proc.poll() is None:
            try:
                os.kill(self.pid1, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self.returncode = None
                return None
        self.returncode = self.proc.returncode
        return self.returncode

    def signal(self, sig):  # (after stop(): in this class body `signal` is now this)
        os.kill(self.pid1, sig)

    def ns_processes(self):
        """[(pid inside the namespace, state, comm)] read from the namespace's /proc."""
        root = f"/proc/{self.pid1}/root/proc"
        out = []
        for d in os.listdir(root):
            if d.isdigit():
                try:
                    s = Path(f"{root}/{d}/stat").read_text()
                except OSError:
                    continue
                out.append((int(d), s[s.rindex(")") + 2], s[s.index("(") + 1:s.rindex(")")]))
        return out


@pytest.fixture
def launch(tmp_path):
    """launch(app=APP, *args, pid1=False, env=None, port=None, host=..., unix=None,
    wait=True, add_listener=True, wrap=()) -> OpsServer / NsServer (wrap: a command
    that execs laurel, such as systemd-socket-activate, or a function of the server's
    environment returning one). As conftest's serve: "-p <free port>"
    is added unless a listener is given or add_listener=False; at teardown a server not
    stopped by the test must still answer and exit 0 on SIGTERM."""
    servers = []

    def start(app=APP, *args, pid1=False, env=None, port=None, host="127.0.0.1",
              unix=None, wait=True, ready_timeout=15, add_listener=True, wrap=()):
        cls = NsServer if pid1 else OpsServer
        s = cls(app, [str(a) for a in args], tmp_path, env=env, port=port, host=host,
                unix=unix, add_listener=add_listener, wrap=wrap)
        servers.append(s)
        return s.start(ready_timeout=ready_timeout, wait=wait)

    yield start
    problems = []
    for s in servers:
        problems += s.finalize()
    for s in servers:
        s.kill()  # whatever is left of the group
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# --------------------------------------------------------------------------- capabilities

_PROBES = {}


def _probe_unshare():
    try:
        r = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"unshare unavailable: {e}"
    if r.returncode != 0:
        return False, (f"`{' '.join(UNSHARE)} true` failed here (needs root or user "
                       f"namespaces): {r.stderr.strip()}")
    return True, ""


def _probe_master(tmp):
    """Whether `laurel --workers 2` runs a master with two worker processes."""
    check_binary()
    port = free_port()
    err = Path(tmp) / "probe.stderr"
    with open(err, "wb") as ef:
        p = subprocess.Popen([str(LAUREL_BIN), "--workers", "2", "-v", "0", "-p", str(port),
                              APP], cwd=REPO, env=clean_env(), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=ef, start_new_session=True)
    try:
        def up():
            if p.poll() is not None:
                return "exited"
            try:
                return fetch("127.0.0.1", port, "/", 1)[0] == 200
            except OSError:
                return False
        state = wait_for(up, 15)
        if state is not True:  # False (timeout) or "exited"
            return False, (f"`laurel --workers 2` did not serve ({state or 'timeout'}): "
                           f"{err.read_text(errors='replace')[-500:]}")
        ws = wait_for(lambda: len(worker_pids(p.pid)) >= 2 and worker_pids(p.pid), 5)
        if not ws:
            return False, ("--workers is not implemented yet: `laurel --workers 2` runs "
                           f"as a single process ({len(worker_pids(p.pid))} worker "
                           "processes under it)")
        return True, ""
    finally:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(10)


def _require(name, probe, *a):
    if name not in _PROBES:
        _PROBES[name] = probe(*a)
    ok, why = _PROBES[name]
    if not ok:
        if name == "master" and os.environ.get("LAUREL_TEST_REQUIRE_MASTER"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture
def pid_ns():
    if kind() != "laurel":
        pytest.skip("laurel only")
    _require("unshare", _probe_unshare)


@pytest.fixture
def master_mode(tmp_path_factory):
    if kind() != "laurel":
        pytest.skip("laurel only")
    _require("master", _probe_master, tmp_path_factory.mktemp("probe"))


needs_master = pytest.mark.usefixtures("master_mode")
needs_pid_ns = pytest.mark.usefixtures("pid_ns")


# =========================================================================== PID 1

@needs_pid_ns
def test_pid1_serves(launch):
    srv = launch(APP, pid1=True)
    d = pid_of(srv)
    # the pid as the namespace sees it: 1 (single process) or a worker of PID 1
    assert d["pid"] == 1 or d["ppid"] == 1, d
    assert srv.ns_processes(), "the namespace has its own /proc"


@needs_pid_ns
@needs_master
def test_pid1_runs_a_master_with_one_worker(launch):
    """As PID 1 laurel always runs the master (it reaps orphans, handles signals), with
    one worker by default."""
    srv = launch(APP, pid1=True)
    ws = srv.wait_workers(1)
    for _ in range(5):
        d = pid_of(srv)
        assert d["pid"] != 1 and d["ppid"] == 1, d
    assert srv.workers() == ws


@needs_pid_ns
@pytest.mark.parametrize("sig,target", [
    (signal.SIGTERM, "pid1"),   # docker stop
    (signal.SIGINT, "pid1"),    # docker kill -s INT
    (signal.SIGINT, "group"),   # Ctrl-C in a terminal: the whole foreground group
    (signal.SIGTERM, "group"),
], ids=["TERM-pid1", "INT-pid1", "INT-group", "TERM-group"])
def test_pid1_signal_stops_gracefully(launch, sig, target):
    srv = launch(APP, "--graceful-timeout", GRACE, pid1=True)
    finishing = InFlight(srv, "/sleep?s=1")
    hanging = InFlight(srv, "/sleep?s=60")
    time.sleep(0.4)
    t0 = time.monotonic()
    if target == "pid1":
        os.kill(srv.pid1, sig)
    else:
        os.killpg(srv.proc.pid, sig)  # unshare itself ignores SIGINT and SIGTERM
    rc = srv.wait_stopped(GRACE + MARGIN + 5)
    took = time.monotonic() - t0
    finishing.join(10)
    hanging.join(10)
    assert rc == 0, f"exit status {rc}\nstderr:\n{srv.stderr()[-3000:]}"
    assert took < GRACE + MARGIN, f"took {took:.1f}s with --graceful-timeout {GRACE}"
    assert finishing.result == (200, b"slept 1.0"), \
        f"in-flight request not finished: {finishing.result!r}"
    assert not isinstance(hanging.result, tuple) or hanging.result[0] != 200, \
        hanging.result


@needs_pid_ns
@needs_master
def test_pid1_reaps_orphans(launch):
    """A request that leaves an orphaned grandchild (re-parented to PID 1) leaves no
    zombie behind."""
    srv = launch(APP, pid1=True)
    for _ in range(3):
        d = pid_of(srv, "/orphan?s=0.2")
        assert d["orphan"] > 1, d
    time.sleep(1.2)

    def zombies():
        return [p for p in srv.ns_processes() if p[1] == "Z"]
    z = wait_for(lambda: not zombies(), 1.0)
    assert z, f"zombies in the namespace: {zombies()}"
    pid_of(srv)  # and still serving


@needs_pid_ns
def test_pid1_port_env(launch):
    port = free_port()
    srv = launch(APP, pid1=True, env={"PORT": str(port)}, port=port, add_listener=False)
    assert pid_of(srv)
    assert f"Listening on TCP address 127.0.0.1:{port}" in srv.stderr()


@needs_pid_ns
def test_pid1_laurel_bind_env(launch):
    """PORT gives the port, LAUREL_BIND the host (the image sets LAUREL_BIND=0.0.0.0;
    here another loopback address, so the old 127.0.0.1 default is visibly not used)."""
    port = free_port("127.0.0.2")
    srv = launch(APP, pid1=True, env={"PORT": str(port), "LAUREL_BIND": "127.0.0.2"},
                 port=port, host="127.0.0.2", add_listener=False)
    assert pid_of(srv)
    with pytest.raises(OSError):
        fetch("127.0.0.1", port, "/", 2)


@needs_pid_ns
def test_pid1_laurel_bind_env_ipv6(launch):
    if not ipv6_available():
        pytest.skip("no IPv6 loopback")
    port = free_port("::1")
    srv = launch(APP, pid1=True, env={"LAUREL_PORT": str(port), "LAUREL_BIND": "::1"},
                 port=port, host="::1", add_listener=False)
    assert pid_of(srv)


@needs_pid_ns
@needs_master
def test_pid1_laurel_workers_env(launch):
    srv = launch(APP, pid1=True, env={"LAUREL_WORKERS": "2"})
    a, b = srv.wait_workers(2)
    assert pid_of(srv)["ppid"] == 1


@needs_pid_ns
@needs_master
def test_pid1_workers_flag_beats_env(launch):
    srv = launch(APP, "--workers", "1", pid1=True, env={"LAUREL_WORKERS": "3"})
    srv.wait_workers(1)
    time.sleep(0.5)
    assert len(srv.workers()) == 1, srv.workers()


@needs_pid_ns
def test_pid1_verbosity_env(launch):
    quiet = launch(APP, pid1=True, env={"LAUREL_VERBOSITY": "0"})
    loud = launch(APP, "-v", "1", pid1=True, env={"LAUREL_VERBOSITY": "0"})  # flag wins
    for s in (quiet, loud):
        for _ in range(3):
            pid_of(s, "/pid?marker=access-3141")
    loud.wait_output(r'"GET /pid\?marker=access-3141" 200', count=3, timeout=5)
    assert loud.stdout().count("access-3141") == 3, loud.stdout()
    time.sleep(0.5)
    assert "access-3141" not in quiet.stdout(), quiet.stdout()
    assert " INFO " not in quiet.stderr(), quiet.stderr()


@needs_pid_ns
@pytest.mark.parametrize("var", ["PORT", "LAUREL_PORT"])
def test_pid1_port_flag_beats_env(launch, var):
    env_port, flag_port = free_port(), free_port()
    srv = launch(APP, "-p", flag_port, pid1=True, env={var: str(env_port)}, port=flag_port)
    assert pid_of(srv)
    with pytest.raises(OSError):
        fetch("127.0.0.1", env_port, "/", 2)


@pytest.mark.parametrize("pid1", [False, True], ids=["plain", "pid1"])
@pytest.mark.parametrize("var,value,expect", [
    ("LAUREL_WORKERS", "abc", "invalid int value: 'abc'"),
    ("LAUREL_WORKERS", "0", "value out of range"),
    ("LAUREL_PORT", "http", "invalid int value: 'http'"),
    ("PORT", "abc", "invalid int value: 'abc'"),
    ("LAUREL_VERBOSITY", "7", "invalid choice: 7"),
    ("LAUREL_PROXY_HEADERS", "maybe", "invalid boolean value: 'maybe'"),
    ("LAUREL_GRACEFUL_TIMEOUT", "soon", "invalid float value: 'soon'"),
])
def test_invalid_env_value(request, var, value, expect, pid1):
    if pid1:
        request.getfixturevalue("pid_ns")
    if kind() != "laurel":
        pytest.skip("laurel only")
    check_binary()
    argv = [*(UNSHARE if pid1 else []), str(LAUREL_BIN), APP]
    r = subprocess.run(argv, cwd=REPO, env=clean_env({var: value}), capture_output=True,
                       text=True, timeout=15, stdin=subprocess.DEVNULL)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"laurel: error: environment variable {var}: "), lines[0]
    assert expect in lines[0], lines[0]
    assert r.stdout == ""


def test_invalid_env_value_ignored_when_flag_given():
    """The command line wins: a bad LAUREL_PORT is never read when -p is given."""
    r = run_cli("-p", "abc", app=APP, env={"LAUREL_PORT": "xyz"})
    assert r.returncode == 2
    assert "argument -p/--port: invalid int value: 'abc'" in r.stderr, r.stderr
    assert "LAUREL_PORT" not in r.stderr


@needs_pid_ns
def test_pid1_import_failure_exits(launch):
    srv = launch("tests.apps.raising_import:app", pid1=True, wait=False)
    rc = srv.wait_exit(20)
    assert rc not in (0, None), rc
    err = srv.stderr()
    assert "RuntimeError: import-time boom 5521" in err, err[-3000:]
    assert err.count("Cannot load the application") == 1, err[-5000:]  # no restart


# =========================================================================== --workers

@needs_master
def test_two_workers_serve(launch):
    srv = launch(APP, "--workers", 2, "-v", 0)
    ws = srv.wait_workers(2)
    seen = serving_pids(srv, 2)
    assert set(seen) == set(ws), f"served by {sorted(seen)}, workers {ws}"
    assert set(seen.values()) == {srv.master}, seen
    # and with plain sequential requests, nothing fails
    for _ in range(20):
        assert pid_of(srv)["pid"] in ws


@needs_master
def test_killed_worker_is_replaced(launch):
    srv = launch(APP, "--workers", 2, "-v", 0)
    ws = srv.wait_workers(2)
    serving_pids(srv, 2)  # both have started serving: this is a crash, not a failed start
    victim = ws[0]
    before = len(srv.stderr())
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: not alive(victim), 5), f"worker {victim} did not die"
    # the listener keeps answering while the master restarts the worker
    t0 = time.monotonic()
    served = 0
    while time.monotonic() - t0 < 1.0 or len(srv.workers()) < 2:
        status, body = fetch(srv.host, srv.port, "/pid")
        assert status == 200, (status, body)
        served += 1
        assert time.monotonic() - t0 < 10, (
            f"no replacement for worker {victim} after 10s; workers {srv.workers()}\n"
            f"stderr:\n{srv.stderr()[-3000:]}")
    new = srv.wait_workers(2, exclude=[victim])
    assert ws[1] in new, (ws, new)
    assert stat(victim) is None, f"dead worker {victim} not reaped: {stat(victim)}"
    named = re.compile(rf"\b{victim}\b")
    log = wait_for(lambda: named.search(srv.stderr()[before:]) and srv.stderr()[before:], 3)
    assert log, f"the master did not log the death of {victim}:\n{srv.stderr()[before:]}"
    for _ in range(10):
        assert pid_of(srv)["pid"] in new
    assert served > 0


@needs_master
@pytest.mark.parametrize("sig,how", [
    (signal.SIGTERM, "master"), (signal.SIGINT, "master"),
    (signal.SIGTERM, "group"), (signal.SIGINT, "group"),
    (signal.SIGTERM, "everyone"),
], ids=["TERM-master", "INT-master", "TERM-group", "INT-group", "TERM-everyone"])
def test_workers_stop_gracefully(launch, sig, how):
    """master: kill, supervisor, docker stop. group: Ctrl-C in a terminal (the
    foreground process group). everyone: systemd's default KillMode=control-group,
    `kill 0`: the master and every worker get the signal at once. In each case the
    in-flight request finishes, everything exits within --graceful-timeout, status 0,
    and nothing is left behind."""
    srv = launch(APP, "--workers", 2, "-v", 0, "--graceful-timeout", GRACE)
    ws = srv.wait_workers(2)
    serving_pids(srv, 2)
    finishing = [InFlight(srv, "/sleep?s=1.5") for _ in range(4)]
    time.sleep(0.5)
    t0 = time.monotonic()
    if how == "master":
        os.kill(srv.master, sig)
    elif how == "group":
        os.killpg(srv.master, sig)
    else:
        for p in [srv.master, *ws]:
            os.kill(p, sig)
    rc = srv.wait_stopped(GRACE + MARGIN + 5)
    took = time.monotonic() - t0
    for f in finishing:
        f.join(10)
    assert rc == 0, f"exit status {rc}\nstderr:\n{srv.stderr()[-3000:]}"
    assert took < GRACE + MARGIN, took
    assert [f.result for f in finishing] == [(200, b"slept 1.5")] * 4, \
        f"in-flight requests: {[f.result for f in finishing]}\n{srv.stderr()[-3000:]}"
    left = srv.processes()
    assert not left, f"left running after the master exited: {left}"


@needs_master
def test_sighup_replaces_workers_without_errors(launch):
    srv = launch(APP, "--workers", 2, "-v", 0)
    old = srv.wait_workers(2)
    hammer = Hammer(srv)
    time.sleep(0.3)
    in_flight = InFlight(srv, "/sleep?s=1")
    time.sleep(0.2)
    srv.signal(signal.SIGHUP)
    try:
        new = srv.wait_workers(2, timeout=30, exclude=old)
        time.sleep(0.5)
    finally:
        hammer.stop()
    in_flight.join(10)
    assert not hammer.errors, f"{len(hammer.errors)} of {hammer.count} failed: " \
                              f"{hammer.errors[:5]}"
    assert hammer.count > 20, hammer.count
    assert set(hammer.pids) & set(new), "no request served by a new worker"
    assert in_flight.result == (200, b"slept 1.0"), in_flight.result
    assert srv.running() and srv.workers() == new
    assert not [w for w in old if alive(w)], "old workers still running"


@needs_master
def test_max_requests_recycles_worker(launch):
    srv = launch(APP, "--workers", 1, "--max-requests", 5, "--max-requests-jitter", 0,
                 "-v", 0)
    srv.wait_workers(1)
    pids = [pid_of(srv)["pid"] for _ in range(15)]
    assert pids[:5] == [pids[0]] * 5, pids
    assert pids[5:10] == [pids[5]] * 5 and pids[5] != pids[0], pids
    assert pids[10:] == [pids[10]] * 5 and pids[10] not in (pids[0], pids[5]), pids
    assert not alive(pids[0]) and stat(pids[0]) is None, "recycled worker not reaped"


@needs_master
def test_max_requests_jitter(launch):
    srv = launch(APP, "--workers", 1, "--max-requests", 3, "--max-requests-jitter", 3,
                 "-v", 0)
    srv.wait_workers(1)
    pids = [pid_of(srv)["pid"] for _ in range(20)]
    runs, n = [], 1
    for a, b in zip(pids, pids[1:]):
        if a == b:
            n += 1
        else:
            runs.append(n)
            n = 1
    assert runs, f"the worker was never recycled: {pids}"
    assert all(3 <= r <= 6 for r in runs), runs


@needs_master
def test_worker_import_failure_exits(launch):
    """A worker that cannot import the application is not restarted in a loop: the
    master exits non-zero and the traceback is visible."""
    srv = launch("tests.apps.raising_import:app", "--workers", 2, wait=False)
    rc = srv.wait_exit(20)
    err = srv.stderr()
    assert rc not in (0, None), rc
    assert "RuntimeError: import-time boom 5521" in err, err[-3000:]
    # at most one attempt per worker, no restart loop
    assert 1 <= err.count("Cannot load the application") <= 2, err[-5000:]
    assert not srv.processes(), f"processes left behind: {srv.processes()}"


@needs_master
def test_killed_master_takes_its_workers_down(launch):
    """If the master is SIGKILLed (OOM killer, supervisor's last resort) the workers
    get SIGTERM from the kernel and drain; no orphan keeps serving."""
    srv = launch(APP, "--workers", 2, "-v", 0, "--graceful-timeout", GRACE)
    ws = srv.wait_workers(2)
    serving_pids(srv, 2)
    finishing = InFlight(srv, "/sleep?s=1")
    time.sleep(0.4)
    os.kill(srv.master, signal.SIGKILL)
    srv.wait_stopped(5)
    finishing.join(10)
    assert finishing.result == (200, b"slept 1.0"), finishing.result
    # (a process that is exiting may already show an empty environment: check both)
    gone = wait_for(lambda: not srv.processes() and not [w for w in ws if alive(w)],
                    GRACE + MARGIN)
    assert gone, ("still running after the master was killed: "
                  f"{srv.processes()} {[w for w in ws if alive(w)]}")


@needs_master
def test_sighup_with_broken_code_keeps_serving(launch, tmp_path):
    """A rolling restart onto code that cannot be imported: the old workers keep
    serving (a replacement takes over only once it serves), the master retries, and
    once the code is fixed the restart completes. No request fails meanwhile."""
    flag = tmp_path / "broken"
    srv = launch(APP, "--workers", 2, "-v", 0, env={"OPS_FAIL_IMPORT": str(flag)})
    old = srv.wait_workers(2)
    serving_pids(srv, 2)
    hammer = Hammer(srv)
    try:
        flag.write_text("")
        srv.signal(signal.SIGHUP)
        assert wait_for(lambda: "import refused" in srv.stderr(), 10), \
            f"no replacement tried to import the broken code:\n{srv.stderr()[-3000:]}"
        time.sleep(1.5)
        assert srv.running(), f"the master gave up:\n{srv.stderr()[-3000:]}"
        assert all(alive(w) for w in old), "an old worker retired before its replacement served"
        assert set(hammer.pids) <= set(old)
        flag.unlink()
        new = srv.wait_workers(2, timeout=45, exclude=old)
        time.sleep(0.3)
    finally:
        hammer.stop()
    assert not hammer.errors, f"{len(hammer.errors)} of {hammer.count} failed: " \
                              f"{hammer.errors[:5]}"
    assert set(hammer.pids) & set(new)


# =========================================================================== recipes

SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")


@pytest.mark.skipif(not SOCKET_ACTIVATE, reason="systemd-socket-activate not installed")
@pytest.mark.parametrize("family,flags", [
    ("tcp", ["--fd", "3"]),
    ("tcp", ["-e", "systemd:domain=INET:index=0", "--workers", "2"]),
    ("unix", ["--fd", "3", "--workers", "2"]),
], ids=["tcp-fd3", "tcp-systemd-endpoint-workers", "unix-fd3-workers"])
def test_systemd_socket_activation(launch, tmp_path, family, flags):
    """systemd passes the socket as fd 3 (LISTEN_FDS); laurel is started by the first
    connection, which waits in the backlog and is served."""
    if "--workers" in flags:
        _require("master", _probe_master, tmp_path)
    if family == "tcp":
        port = free_port()
        listen, kw = f"127.0.0.1:{port}", {"port": port}
    else:
        path = tmp_path / "laurel.sock"
        listen, kw = str(path), {"unix": str(path)}
    def wrap(env):  # like systemd, it passes only what it is told to
        return [SOCKET_ACTIVATE, "-l", listen,
                *[a for k, v in sorted(env.items()) for a in ("-E", f"{k}={v}")]]
    srv = launch(APP, *flags, "-v", 1, wrap=wrap, wait=False, add_listener=False, **kw)
    s = wait_for(lambda: os.path.exists(listen) if family == "unix" else
                 "Listening on" in srv.stderr(), 5)
    assert s, srv.stderr()
    r = srv.request("GET", "/pid", timeout=15)  # this connection starts laurel
    assert r.status == 200, r
    assert "Execing" in srv.stderr(), srv.stderr()
    assert wait_for(lambda: "Starting server at fd:fileno=3" in srv.stderr(), 3), srv.stderr()
    for _ in range(5):
        assert srv.request("GET", "/pid").status == 200


NGINX = shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx")


def _doc_nginx_block():
    text = (REPO / "docs" / "deployment.md").read_text()
    blocks = re.findall(r"```nginx\n(.*?)```", text, re.S)
    assert len(blocks) == 1, "docs/deployment.md should have one nginx block"
    return blocks[0]


def _ws_roundtrip(port, path, text, headers=b""):
    """Minimal WebSocket client: handshake, one masked text frame, one reply."""
    import base64
    key = base64.b64encode(os.urandom(16))
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n"
                  b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n"
                  + headers + b"\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            assert chunk, f"closed during the handshake: {buf!r}"
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        payload = text.encode()
        assert len(payload) < 126
        mask = os.urandom(4)
        s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask +
                  bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

        def need(n):
            nonlocal buf
            while len(buf) < n:
                chunk = s.recv(4096)
                assert chunk, f"closed before a whole frame: {buf!r}"
                buf += chunk
        need(2)
        n, off = buf[1] & 0x7F, 2
        if n == 126:
            need(4)
            n, off = int.from_bytes(buf[2:4], "big"), 4
        need(off + n)
        assert buf[0] == 0x81, buf[:10]
        return json.loads(buf[off:off + n])
    finally:
        s.close()


@pytest.mark.skipif(not NGINX, reason="nginx not installed (apt-get install nginx-light)")
def test_nginx_recipe_from_the_docs(launch, tmp_path):
    """The nginx block of docs/deployment.md, as written (TLS replaced by a plain
    loopback listener), in front of `laurel -u SOCK --proxy-headers`: HTTP and
    WebSocket pass, and the client address is the real one, not one a client claims
    with X-Forwarded-For."""
    sock = tmp_path / "laurel.sock"
    launch(APP, "-u", sock, "--proxy-headers", "-v", 0, unix=str(sock))
    port = free_port()
    conf = _doc_nginx_block()
    conf = conf.replace("unix:/run/laurel/laurel.sock", f"unix:{sock}")
    conf = conf.replace("listen 443 ssl;", f"listen 127.0.0.1:{port};")
    assert f"127.0.0.1:{port}" in conf and str(sock) in conf
    tmp = tmp_path / "nginx"
    tmp.mkdir()
    temps = "\n".join(f"    {k}_temp_path {tmp}/{k};" for k in
                      ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp / "nginx.conf").write_text(f"""
user root;
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
{temps}
{conf}
}}
""")
    t = subprocess.run([NGINX, "-t", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)],
                       capture_output=True, text=True)
    assert t.returncode == 0, t.stderr
    ngx = subprocess.Popen([NGINX, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def up():
            try:
                return fetch("127.0.0.1", port, "/", 1)[0] == 200
            except OSError:
                return False
        assert wait_for(up, 10), (tmp / "error.log").read_text()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/scope", headers={"X-Forwarded-For": "6.6.6.6",
                                            "X-Forwarded-Proto": "https"})
        r = c.getresponse()
        d = json.loads(r.read())
        local_port = c.sock.getsockname()[1]
        c.close()
        assert r.status == 200
        assert d["client"] == ["127.0.0.1", local_port], d
        assert d["scheme"] == "http", d  # nginx's own $scheme, not the client's header
        ws = _ws_roundtrip(port, "/ws", "hello", b"X-Forwarded-For: 6.6.6.6\r\n")
        assert ws["echo"] == "hello" and ws["scheme"] == "ws", ws
        assert ws["client"][0] == "127.0.0.1", ws
        for _ in range(5):  # over nginx's keep-alive connections to laurel
            assert fetch("127.0.0.1", port, "/pid")[0] == 200
    finally:
        ngx.terminate()
        try:
            ngx.wait(10)
        except subprocess.TimeoutExpired:
            ngx.kill()
            ngx.wait(10)
