"""Fixtures and helpers for the Redis bridge tests (tests/redis), imported by them
(a plain module, not a conftest.py: see tests/layer/layer_fixtures.py for why).

Everything runs against real processes on 127.0.0.1 only:

- ``RedisServer``: a redis-server on a free port (``--save "" --appendonly no``), which a
  test can stop, kill and start again on the same port; optional ``--requirepass`` and
  UNIX socket. ``Resp`` is a raw-socket RESP client for inspecting it (CLIENT LIST,
  PUBSUB NUMSUB/CHANNELS, INFO).
- ``Agent``: a plain Python process holding a channel layer outside any server
  (``layer_agent.py``): channels_redis' pub/sub layer (the reference) or laurel's layer
  from the ``_laurel_layer`` extension.
- ``layer_app.py`` served by the server under test (``start_layer_app``) and
  ``AppMember``, a WebSocket member of it that knows its channel name.
- The notifications example (``examples/notifications``) helpers: ``example_env``,
  ``manage``, ``Client`` (a logged-in browser-like client with WebSockets).

Against laurel (the default) "the laurel side" of every topology is laurel: servers run
laurel.layers.ChannelLayer with hosts, outside processes load it from the extension.
With ``--server uvicorn`` (or daphne) the tests check themselves: every laurel layer is
replaced by channels_redis.pubsub.RedisPubSubChannelLayer (``side_layer()``), the
server is uvicorn, and the tests about laurel's own behaviour (logs, stats, failures)
are skipped (``laurel_only``).
"""

import ast
import asyncio
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

from conftest import PY, REPO, free_port, kind
from site_client import SiteClient

HERE = Path(__file__).resolve().parent
EXAMPLE = REPO / "examples" / "notifications"
EXAMPLE_APP = "notifications.asgi:application"
LAYER_APP = "tests.redis.layer_app:app"
AGENT = HERE / "layer_agent.py"
REDIS_SERVER = shutil.which("redis-server")
BUILD = Path(os.environ.get("LAUREL_TEST_BUILD_DIR") or (REPO / "build"))
if not BUILD.is_absolute():
    BUILD = REPO / BUILD

PUBSUB = "channels_redis.pubsub.RedisPubSubChannelLayer"
CORE = "channels_redis.core.RedisChannelLayer"
LAUREL = "laurel.layers.ChannelLayer"
LAUREL_CORE = "laurel.layers.RedisChannelLayer"
SWAP_LINE = "replaces channels_redis.pubsub.RedisPubSubChannelLayer"

# How long a receiver is watched after the expected messages arrived, to catch late
# duplicates (a duplicate through Redis comes within milliseconds on loopback).
QUIET = 0.8

needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")


def oracle():
    """True when the suite checks itself against uvicorn/daphne + channels_redis."""
    return kind() != "laurel"


def side_layer():
    """The layer name of "laurel's side": ``laurel``, or ``pubsub`` for the oracle."""
    return "pubsub" if oracle() else "laurel"


def unique(prefix="m"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_for(pred, timeout=10, what="condition", interval=0.02):
    """Polls pred() until it returns something true; returns it or fails."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def until(pred, timeout=10, what="condition", interval=0.02):
    """wait_for for coroutines: polls pred() with asyncio.sleep in between."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


_PARSE_LOCK = threading.Lock()


def literal(text):
    """ast.literal_eval under a lock: CPython 3.11 before 3.11.5 can raise "SystemError:
    AST constructor recursion depth mismatch" when two threads parse at once (the
    agents' reader threads do)."""
    with _PARSE_LOCK:
        return ast.literal_eval(text)


def outside_env(**extra):
    """Environment of a plain Python process that imports laurel.layers from the source
    tree (python/ and the _laurel_layer extension in build/)."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "python"), str(BUILD)])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_py(code, *args, timeout=30, env=None):
    """Runs ``python -c code args...`` with outside_env(); returns CompletedProcess."""
    return subprocess.run([PY, "-c", code, *map(str, args)], env=outside_env(**(env or {})),
                          capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------- RESP client

class RespError(Exception):
    pass


class Resp:
    """A minimal RESP2 client on a raw socket (TCP 127.0.0.1:port or a UNIX socket)."""

    def __init__(self, port=None, unix=None, password=None, timeout=5):
        if unix:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(str(unix))
        else:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.f = self.sock.makefile("rb")
        if password:
            self.command("AUTH", password)

    def command(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.f.readline()
        if not line:
            raise ConnectionError("Redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RespError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RespError(f"unexpected reply {line!r}")

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------- redis-server

class RedisServer:
    """A redis-server process. ``port`` stays the same across stop()/start(), so that
    clients reconnecting to it find it again. tcp=False: UNIX socket only."""

    def __init__(self, tmpdir, password=None, unixsocket=False, tcp=True, port=None,
                 tls=None):
        """tls: a TlsFiles; the server then also listens with TLS on ``tls_port``
        (the plain port stays, for inspection)."""
        if REDIS_SERVER is None:
            pytest.skip("redis-server is not installed")
        self.dir = Path(tmpdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = (port or free_port()) if tcp else 0
        self.password = password
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.unix = None
        if unixsocket or not tcp:
            # short path: sun_path is 108 bytes, pytest's tmp_path can be longer
            self._sockdir = tempfile.mkdtemp(prefix="lrds-", dir="/tmp")
            self.unix = os.path.join(self._sockdir, "redis.sock")
        self.log = self.dir / f"redis-{self.port or 'unix'}-{uuid.uuid4().hex[:6]}.log"
        self.proc = None
        self.starts = 0

    def argv(self):
        a = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir),
             "--logfile", str(self.log), "--daemonize", "no", "--protected-mode", "no"]
        if self.password:
            a += ["--requirepass", self.password]
        if self.unix:
            a += ["--unixsocket", self.unix, "--unixsocketperm", "700"]
        if self.tls:
            a += ["--tls-port", str(self.tls_port), "--tls-cert-file", str(self.tls.cert),
                  "--tls-key-file", str(self.tls.key), "--tls-ca-cert-file", str(self.tls.ca),
                  "--tls-auth-clients", "no"]
        return a

    def start(self, timeout=10):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"redis-server exited with {self.proc.returncode}; log:\n"
                            f"{self.log_text()[-3000:]}")
            try:
                with self.client() as c:
                    if c.command("PING") == "PONG":
                        return self
            except (OSError, ConnectionError, RespError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server not answering after {timeout}s; log:\n"
                            f"{self.log_text()[-3000:]}")
            time.sleep(0.02)

    def stop(self, sig=signal.SIGTERM):
        """Stops it (SIGKILL: as in a crash); returns when the port is free again."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, sig=signal.SIGTERM):
        self.stop(sig)
        return self.start()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- addresses

    def url(self, password=None, db=0):
        """redis://[:password@]127.0.0.1:port/db; password=None: this server's own."""
        pw = self.password if password is None else password
        auth = f":{urllib.parse.quote(pw, safe='')}@" if pw else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def tls_url(self, host="localhost", ca=None, **params):
        """rediss://host:tls_port with redis-py's query parameters (the test CA by
        default; ca=False: none named)."""
        q = {**({} if ca is False else {"ssl_ca_certs": str(ca or self.tls.ca)}), **params}
        return f"rediss://{host}:{self.tls_port}?{urllib.parse.urlencode(q)}"

    @property
    def addr(self):
        """How laurel names it in its log lines."""
        return f"unix:{self.unix}" if not self.port else f"127.0.0.1:{self.port}"

    # -- inspection

    def client(self):
        if self.port:
            return Resp(port=self.port, password=self.password)
        return Resp(unix=self.unix, password=self.password)

    def command(self, *args):
        with self.client() as c:
            return c.command(*args)

    def clients(self):
        """CLIENT LIST as a list of dicts (this query's own connection excluded)."""
        with self.client() as c:
            me = c.command("CLIENT", "ID")
            text = c.command("CLIENT", "LIST").decode()
        out = []
        for line in text.splitlines():
            d = dict(kv.split("=", 1) for kv in line.split(" ") if "=" in kv)
            if int(d["id"]) != me:
                out.append(d)
        return out

    def info(self, section="stats"):
        text = self.command("INFO", section).decode()
        return dict(ln.split(":", 1) for ln in text.splitlines() if ":" in ln)

    def numsub(self, *channels):
        r = self.command("PUBSUB", "NUMSUB", *channels)
        return {r[i].decode(): r[i + 1] for i in range(0, len(r), 2)}

    def channels(self, pattern="*"):
        return sorted(c.decode() for c in self.command("PUBSUB", "CHANNELS", pattern))

    def wait_numsub(self, channel, n, timeout=10):
        """Waits until exactly n connections subscribe to channel; fails otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.numsub(channel)[channel]
            if got == n:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{channel!r} has {got} subscriber(s) on Redis {self.addr}, "
                            f"expected {n}")
            time.sleep(0.02)

    def cleanup(self):
        self.stop(signal.SIGKILL)
        if self.unix:
            shutil.rmtree(self._sockdir, ignore_errors=True)


class TlsFiles:
    """A throwaway CA and a server certificate it signed (openssl), in ``folder``:
    ``ca``, ``cert``, ``key``; ``names``: the certificate's DNS names and addresses."""

    def __init__(self, folder, names=("localhost", "127.0.0.1"), tag="test"):
        if shutil.which("openssl") is None:
            pytest.skip("the openssl command is not installed")
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        self.ca, self.cert, self.key = d / f"{tag}-ca.crt", d / f"{tag}.crt", d / f"{tag}.key"
        ca_key, csr, ext = d / f"{tag}-ca.key", d / f"{tag}.csr", d / f"{tag}.ext"
        alt = ",".join(("IP:" if n[0].isdigit() else "DNS:") + n for n in names)
        ext.write_text(f"subjectAltName={alt}\n")

        def openssl(*args):
            r = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key,
                "-out", self.ca, "-days", "2", "-subj", f"/CN=laurel {tag} CA")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key, "-out", csr,
                "-subj", f"/CN={names[0]}")
        openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", ca_key,
                "-CAcreateserial", "-out", self.cert, "-days", "2", "-extfile", ext)


class RedisFactory:
    def __init__(self, tmpdir):
        self.tmpdir = Path(tmpdir)
        self.servers = []

    def __call__(self, start=True, **kw):
        r = RedisServer(self.tmpdir / f"redis{len(self.servers)}", **kw)
        self.servers.append(r)
        return r.start() if start else r

    def finalize(self):
        for r in self.servers:
            r.cleanup()


@pytest.fixture
def redis_factory(tmp_path):
    """redis_factory(start=True, password=None, unixsocket=False, tcp=True, port=None)
    -> RedisServer (stopped at the end of the test)."""
    f = RedisFactory(tmp_path)
    yield f
    f.finalize()


@pytest.fixture(scope="module")
def module_redis_factory(tmp_path_factory):
    f = RedisFactory(tmp_path_factory.mktemp("redis"))
    yield f
    f.finalize()


# --------------------------------------------------------------------------- agents

class AgentError(Exception):
    def __init__(self, type_name, text):
        super().__init__(f"{type_name}: {text}")
        self.type_name, self.text = type_name, text


class Agent:
    """A plain process with a channel layer outside any server (layer_agent.py).

    ``layer``: "pubsub", "laurel", "core" or "laurelcore"; ``hosts``/``config`` as for
    the layer."""

    def __init__(self, layer, hosts, tmpdir, config=None, name="agent", env=None):
        self.name = name
        self.tmpdir = Path(tmpdir)
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self._err_path = self.tmpdir / f"{name}-{uuid.uuid4().hex[:6]}.stderr"
        self._err = open(self._err_path, "wb")
        argv = [PY, str(AGENT), layer, repr(hosts), repr(config or {})]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._err, env=outside_env(**(env or {})),
                                     cwd=str(HERE))
        self._cond = threading.Condition()
        self._replies = {}
        self._msgs = []          # (channel, message) in arrival order
        self._next = 0
        self.ready = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        with self._cond:
            ok = self._cond.wait_for(lambda: self.ready is not None or self._eof, 20)
        if not ok or self.ready is None:
            self.kill()
            pytest.fail(f"agent {name} ({layer}) did not start; stderr:\n{self.stderr()[-3000:]}")
        self.layer_class = self.ready["layer"]

    _eof = False

    def _read(self):
        for line in self.proc.stdout:
            obj = literal(line.decode())
            with self._cond:
                if "ready" in obj:
                    self.ready = obj
                elif "id" in obj:
                    self._replies[obj["id"]] = obj
                else:
                    self._msgs.append((obj["channel"], obj["msg"]))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def call(self, op, timeout=15, **kw):
        with self._cond:
            self._next += 1
            ident = self._next
        line = repr(dict(kw, id=ident, op=op)) + "\n"
        self.proc.stdin.write(line.encode())
        self.proc.stdin.flush()
        with self._cond:
            ok = self._cond.wait_for(lambda: ident in self._replies or self._eof, timeout)
            reply = self._replies.pop(ident, None)
        if reply is None:
            pytest.fail(f"agent {self.name}: no answer to {op} within {timeout}s "
                        f"(ok={ok}); stderr:\n{self.stderr()[-3000:]}")
        if "error" in reply:
            raise AgentError(reply["error"], reply["text"])
        return reply["result"]

    # -- layer operations

    def new_channel(self, prefix=None):
        """A new channel with a receive loop; prefix: the layer's default when None."""
        return self.call("new_channel", **({} if prefix is None else {"prefix": prefix}))

    def member(self, *groups):
        """A new channel (with a receive loop) that joins groups; returns its name."""
        ch = self.new_channel()
        for g in groups:
            self.call("group_add", group=g, channel=ch)
        return ch

    def send(self, channel, message):
        return self.call("send", channel=channel, message=message)

    def group_send(self, group, message):
        return self.call("group_send", group=group, message=message)

    def group_discard(self, group, channel):
        return self.call("group_discard", group=group, channel=channel)

    def stats(self):
        return self.call("stats")

    # -- what arrived

    def messages(self, channel=None):
        with self._cond:
            return [m for c, m in self._msgs if channel is None or c == channel]

    def wait_messages(self, n, channel=None, timeout=10):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [m for c, m in self._msgs if channel is None or c == channel]
                if len(got) >= n:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"agent {self.name}: {len(got)} of {n} message(s) on "
                                f"{channel} after {timeout}s: {got!r}\nstderr:\n"
                                f"{self.stderr()[-2000:]}")
                self._cond.wait(left)

    def stderr(self):
        return self._err_path.read_bytes().decode("utf-8", "replace")

    # -- end

    def close(self, timeout=15):
        """Ends stdin (the agent closes its layer and exits); returns the exit status."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._err.close()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class AgentFactory:
    def __init__(self, tmpdir):
        self.tmpdir = Path(tmpdir)
        self.agents = []

    def __call__(self, layer, hosts, config=None, name=None, env=None):
        a = Agent(layer, hosts, self.tmpdir, config=config,
                  name=name or f"{layer}{len(self.agents)}", env=env)
        self.agents.append(a)
        return a

    def finalize(self):
        problems = []
        for a in self.agents:
            rc = a.close()
            if rc != 0:
                problems.append(f"agent {a.name} exited with {rc}; stderr:\n"
                                f"{a.stderr()[-2000:]}")
        return problems


@pytest.fixture
def agents(tmp_path):
    """agents(layer, hosts, config=None, name=None) -> Agent; each must exit 0 when its
    stdin ends (checked at teardown)."""
    f = AgentFactory(tmp_path / "agents")
    yield f
    problems = f.finalize()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def module_agents(tmp_path_factory):
    f = AgentFactory(tmp_path_factory.mktemp("agents"))
    yield f
    problems = f.finalize()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# --------------------------------------------------------------------------- layer_app servers

def layer_app_env(backend, hosts, config=None, **extra):
    env = {"LAYER_BACKEND": backend, "LAYER_HOSTS": repr(hosts) if hosts is not None else "",
           "LAYER_CONFIG": repr(config or {})}
    if backend == "laurel" and kind() != "laurel":
        env.update(outside_env())  # uvicorn loading laurel.layers itself
    env.update(extra)
    return env


def start_layer_app(factory, backend, hosts, config=None, args=(), env=None, **kw):
    """Serves tests/redis/layer_app.py with the server under test (``factory``: a
    conftest._Factory). backend: laurel, pubsub or core."""
    e = layer_app_env(backend, hosts, config, **(env or {}))
    srv = factory(LAYER_APP, *args, env=e, ready_timeout=20, **kw)
    srv.env.pop("DJANGO_SETTINGS_MODULE", None)
    return srv


def app_layer(srv):
    r = srv.request("GET", "/layer")
    assert r.status == 200, r
    return r.body.decode()


def app_stats(srv):
    r = srv.request("GET", "/stats")
    assert r.status == 200, r
    return literal(r.body.decode())


def redis_stats(srv):
    """layer.stats()["redis"] of a layer_app server (laurel only)."""
    stats = app_stats(srv)
    assert "redis" in stats, f"stats() has no 'redis' key: {stats!r}"
    return stats["redis"]


def app_post(srv, what, target, message, mode="async", timeout=10):
    """POST /group_send or /send to a layer_app server; returns (status, text)."""
    key = "group" if what == "group_send" else "channel"
    path = f"/{what}?{key}={urllib.parse.quote(target)}&mode={mode}"
    r = srv.request("POST", path, body=repr(message).encode(), timeout=timeout)
    return r.status, r.body.decode("utf-8", "replace")


def app_group_send(srv, group, message, mode="async"):
    status, text = app_post(srv, "group_send", group, message, mode)
    assert (status, text) == (200, "ok"), f"group_send from the server's view: {status} {text}"


def app_send(srv, channel, message, mode="async"):
    status, text = app_post(srv, "send", channel, message, mode)
    assert (status, text) == (200, "ok"), f"send from the server's view: {status} {text}"


class AppMember:
    """A WebSocket member of layer_app (async): ``channel`` is its channel name,
    ``events`` the layer messages it got, in order."""

    def __init__(self, ws, channel, name):
        self.ws, self.channel, self.name = ws, channel, name
        self.events = []
        self._replies = {}
        self._next = 0
        self._task = asyncio.ensure_future(self._read())
        self.closed = False

    @classmethod
    async def open(cls, srv, *groups, name=None):
        import websockets

        qs = urllib.parse.urlencode({"groups": ",".join(groups)})
        ws = await websockets.connect(f"ws://127.0.0.1:{srv.port}/ws/?{qs}",
                                      open_timeout=10, close_timeout=5, max_size=None)
        first = literal(await asyncio.wait_for(ws.recv(), 10))
        return cls(ws, first["channel"], name or f"member@{srv.port}")

    async def _read(self):
        import websockets

        try:
            async for frame in self.ws:
                obj = literal(frame)
                if "event" in obj:
                    self.events.append(obj["event"])
                else:
                    self._replies[obj["id"]] = obj
        except websockets.exceptions.ConnectionClosed:
            pass
        self.closed = True

    async def call(self, op, timeout=10, **kw):
        """Runs a layer operation in the consumer; returns None or raises AgentError."""
        self._next += 1
        ident = self._next
        await self.ws.send(repr(dict(kw, id=ident, op=op)))
        await until(lambda: ident in self._replies or self.closed, timeout,
                    f"{self.name}: answer to {op}")
        reply = self._replies.pop(ident, None)
        assert reply is not None, f"{self.name}: connection closed before the answer to {op}"
        if "error" in reply:
            raise AgentError(reply["error"], reply["text"])
        return reply["result"]

    async def close(self):
        await self.ws.close()
        await asyncio.wait_for(self._task, 10)


# --------------------------------------------------------------------------- exactly once

def short(obj, limit=1500):
    """repr(obj), cut in the middle when long (failure messages stay readable)."""
    r = repr(obj)
    return r if len(r) <= limit else f"{r[:limit // 2]} ...[{len(r) - limit} chars]... {r[-limit // 2:]}"


async def expect_everywhere(sinks, expected, timeout=10, quiet=QUIET):
    """Waits until every sink (name -> callable returning the list received so far)
    has at least len(expected) items, watches a further ``quiet`` seconds for
    duplicates, then asserts that every sink received exactly ``expected``, in order."""
    n = len(expected)
    deadline = time.monotonic() + timeout
    while True:
        short_of = {name: get() for name, get in sinks.items() if len(get()) < n}
        if not short_of:
            break
        if time.monotonic() > deadline:
            got = {name: get() for name, get in sinks.items()}
            pytest.fail(f"after {timeout}s, {sorted(short_of)} lack messages.\nexpected "
                        f"{short(expected)}\ngot {short(got)}")
        await asyncio.sleep(0.02)
    await asyncio.sleep(quiet)
    got = {name: list(get()) for name, get in sinks.items()}
    bad = {name: g for name, g in got.items() if g != list(expected)}
    assert not bad, f"expected exactly {short(expected)} everywhere; differing: {short(bad)}"


# --------------------------------------------------------------------------- the example

def example_env(db, redis_url=None, layer=None, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "NOTIFICATIONS_REDIS_URL",
                        "NOTIFICATIONS_LAYER")}
    env.update({"NOTIFICATIONS_DB": str(db), "PYTHONDONTWRITEBYTECODE": "1"})
    if redis_url:
        env["NOTIFICATIONS_REDIS_URL"] = redis_url
    if layer:
        env["NOTIFICATIONS_LAYER"] = layer
        if layer == "laurel":
            # manage.py processes (and uvicorn) import laurel.layers from the tree
            env["PYTHONPATH"] = outside_env()["PYTHONPATH"]
    env.update(extra)
    return env


def manage(env, *args, timeout=60):
    return subprocess.run([PY, "manage.py", *args], cwd=EXAMPLE, env=env,
                          capture_output=True, text=True, timeout=timeout)


def prepare_db(path):
    """A migrated example database with the demo users; returns demo's pk."""
    r = manage(example_env(path), "demo_setup")
    assert r.returncode == 0, r.stderr
    return user_pk(path, "demo")


def user_pk(db, username):
    with sqlite3.connect(str(db)) as c:
        return c.execute("SELECT id FROM auth_user WHERE username = ?",
                         (username,)).fetchone()[0]


def start_example(factory, env, args=()):
    srv = factory(EXAMPLE_APP, *args, cwd=EXAMPLE, env=env, ready_timeout=30)
    srv.env.pop("DJANGO_SETTINGS_MODULE", None)
    return srv


class Client(SiteClient):
    """SiteClient plus WebSockets carrying its session (as in tests/django)."""

    def ws(self, path, **kw):
        import websockets

        headers = {"Cookie": self.cookie_header()} if self.cookies else {}
        return websockets.connect(f"ws://127.0.0.1:{self.srv.port}{path}",
                                  extra_headers=headers, origin=self.origin,
                                  open_timeout=10, close_timeout=5, **kw)


class WsSink:
    """Collects the JSON frames of an open example WebSocket (async)."""

    def __init__(self, ws, name):
        import json

        self.ws, self.name, self.got = ws, name, []
        self._json = json
        self._task = asyncio.ensure_future(self._read())

    async def _read(self):
        import websockets

        try:
            async for frame in self.ws:
                self.got.append(self._json.loads(frame))
        except websockets.exceptions.ConnectionClosed:
            pass


def grep(text, pattern):
    return re.findall(pattern, text, re.M)


def finalize_all(*factories):
    """Finalizes server factories (conftest._Factory); fails with their problems."""
    problems = []
    for f in factories:
        problems += f.finalize()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)

