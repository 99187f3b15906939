"""Fixtures and helpers for laurel's black-box tests.

The server under test is a real process: ``build/laurel`` (or ``$LAUREL_BIN``), or, to
check the tests themselves, uvicorn or daphne (``--server uvicorn`` or
``LAUREL_TEST_SERVER=daphne``). Tests of laurel-only behaviour are marked
``laurel_only`` (or ``servers("laurel", "daphne")``) and skipped for the others; a test
passing a flag that the other server has no equivalent for is skipped too.

Test modules import the helpers with ``from conftest import ...``.

LAUREL_TEST_IGNORE_MARKS=1 runs every test whatever its markers: pointed at uvicorn or
daphne, it shows that laurel-only tests do fail on servers that behave otherwise.
"""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAUREL_BIN = Path(os.environ.get("LAUREL_BIN") or (REPO / "build" / "laurel")).resolve()
PY = "/usr/bin/python3"
SERVERS = ("laurel", "uvicorn", "daphne")
BAD_STDERR = ("AddressSanitizer", "LeakSanitizer", "Fatal Python error", "refcount")
LISTENER_FLAGS = ("-p", "--port", "-b", "--bind", "-u", "--unix-socket", "--fd", "-e",
                  "--endpoint")

_KIND = None


# --------------------------------------------------------------------------- pytest hooks

def pytest_addoption(parser):
    parser.addoption("--server", default=None, choices=SERVERS,
                     help="server under test (default: $LAUREL_TEST_SERVER or laurel)")


def pytest_configure(config):
    global _KIND
    _KIND = config.getoption("--server") or os.environ.get("LAUREL_TEST_SERVER") or "laurel"
    if _KIND not in SERVERS:
        raise pytest.UsageError(f"unknown server {_KIND!r}; one of {SERVERS}")
    for line in ("laurel_only: behaviour decided for laurel; skipped for uvicorn/daphne",
                 "servers(*names): run only against these servers",
                 "slow: takes several seconds"):
        config.addinivalue_line("markers", line)


def pytest_report_header(config):
    what = str(LAUREL_BIN) if _KIND == "laurel" else f"{PY} -m {_KIND}"
    return f"server under test: {_KIND} ({what})"


def pytest_collection_modifyitems(config, items):
    if os.environ.get("LAUREL_TEST_IGNORE_MARKS"):
        return  # to see how another server fares on laurel's decisions
    for item in items:
        if item.get_closest_marker("laurel_only") and _KIND != "laurel":
            item.add_marker(pytest.mark.skip(reason=f"laurel-only behaviour (server={_KIND})"))
        m = item.get_closest_marker("servers")
        if m and _KIND not in m.args:
            item.add_marker(pytest.mark.skip(reason=f"not expected of {_KIND}"))


def kind():
    return _KIND


# --------------------------------------------------------------------------- ports

def free_port(host="127.0.0.1"):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ipv6_available():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- command lines

DAPHNE_FLAGS = {"-p", "--port", "-b", "--bind", "-u", "--unix-socket", "--fd", "-e",
                "--endpoint", "-v", "--verbosity", "-t", "--http-timeout", "--access-log",
                "--log-fmt", "--ping-interval", "--ping-timeout",
                "--application-close-timeout", "--websocket_timeout",
                "--websocket_connect_timeout", "--root-path", "--proxy-headers",
                "--proxy-headers-host", "--proxy-headers-port", "-s", "--server-name",
                "--no-server-name"}
NO_VALUE = {"--proxy-headers", "--no-server-name"}
UVICORN_MAP = {"-p": "--port", "--port": "--port", "-b": "--host", "--bind": "--host",
               "-u": "--uds", "--unix-socket": "--uds", "--fd": "--fd",
               "--root-path": "--root-path", "--lifespan": "--lifespan",
               "--limit-concurrency": "--limit-concurrency",
               "--keep-alive-timeout": "--timeout-keep-alive",
               "--ws-per-message-deflate": "--ws-per-message-deflate"}


def _split_flags(args):
    """[(flag, value-or-None)] for laurel-style args."""
    out, i = [], 0
    args = list(args)
    while i < len(args):
        a = args[i]
        if a.startswith("--") and "=" in a:
            f, v = a.split("=", 1)
            out.append((f, v))
            i += 1
        elif a in NO_VALUE or not a.startswith("-") or i + 1 >= len(args):
            out.append((a, None))
            i += 1
        else:
            out.append((a, args[i + 1]))
            i += 2
    return out


def build_argv(app, args, kind=None):
    """The command line running ``app`` with laurel-style ``args`` on the server under
    test (or on ``kind``); skips the test when another server has no equivalent for a
    flag."""
    args = [str(a) for a in args]
    kind = kind or _KIND
    if kind == "laurel":
        return [str(LAUREL_BIN), *args, app]
    pairs = _split_flags(args)
    if kind == "daphne":
        for f, _ in pairs:
            if f not in DAPHNE_FLAGS:
                pytest.skip(f"daphne has no {f}")
        return [PY, "-m", "daphne", *args, app]
    out = []
    for f, v in pairs:
        if f == "--proxy-headers":
            out += ["--proxy-headers", "--forwarded-allow-ips", "*"]
        elif f == "--no-server-name":
            out += ["--no-server-header"]
        elif f in ("-v", "--verbosity") and v == "0":
            out += ["--log-level", "warning", "--no-access-log"]
        elif f in UVICORN_MAP and v is not None:
            out += [UVICORN_MAP[f], v]
        else:
            pytest.skip(f"uvicorn has no equivalent for {f}")
    if "--proxy-headers" not in args:
        out.append("--no-proxy-headers")  # uvicorn trusts 127.0.0.1 by default
    return [PY, "-m", "uvicorn", *out, app]


def run_cli(*args, timeout=15, env=None, cwd=REPO, app=None):
    """Runs the server binary with exactly these arguments (laurel only: the command line
    itself is under test) and waits for it to exit. Returns CompletedProcess (text)."""
    if _KIND != "laurel":
        pytest.skip("command-line behaviour is laurel's")
    check_binary()
    e = dict(os.environ)
    e.update(env or {})
    argv = [str(LAUREL_BIN), *[str(a) for a in args]] + ([app] if app else [])
    try:
        return subprocess.run(argv, cwd=cwd, env=e, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, errors="replace",
                              timeout=timeout)
    except subprocess.TimeoutExpired as ex:
        pytest.fail(f"{argv} did not exit within {timeout}s; stderr: {ex.stderr!r}")


def check_binary():
    if _KIND == "laurel" and not (LAUREL_BIN.is_file() and os.access(LAUREL_BIN, os.X_OK)):
        pytest.fail(f"{LAUREL_BIN} does not exist or is not executable: build it first "
                    "(make) or set LAUREL_BIN")


# --------------------------------------------------------------------------- server process

class Server:
    """A running server. ``host``/``port`` (first TCP listener) or ``unix``."""

    def __init__(self, app, args, tmpdir, env=None, cwd=REPO, port=None, unix=None,
                 host="127.0.0.1", pass_fds=(), kind=None, add_listener=True):
        self.kind = kind or _KIND
        self.tmpdir = Path(tmpdir)
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        args = [str(a) for a in args]
        names_listener = any(a in LISTENER_FLAGS or a.split("=")[0] in LISTENER_FLAGS
                             for a in args)
        if add_listener and not names_listener and unix is None:
            port = port or free_port(host)
            args = ["-p", str(port), *args]
            if host != "127.0.0.1":
                args = ["-b", host, *args]
        self.host, self.port, self.unix = host, port, unix
        self.app = app
        self.argv = build_argv(app, args, self.kind)
        self.env = dict(os.environ)
        self.env.update({"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
        self.env.update(env or {})
        self.cwd = cwd
        self.pass_fds = tuple(pass_fds)
        n = len(list(self.tmpdir.glob("server*.stdout")))
        self._out_path = self.tmpdir / f"server{n}.stdout"
        self._err_path = self.tmpdir / f"server{n}.stderr"
        self.proc = None
        # What teardown checks:
        self.check_exit = True      # SIGTERM must give exit status 0
        self.alive_check = True     # the server must still answer before teardown
        self.expect_exit = False    # the test expects the process to have exited
        self.stopped = False
        self.returncode = None

    # -- process

    def start(self, ready_timeout=10, wait=True):
        check_binary()
        self._out = open(self._out_path, "wb")
        self._err = open(self._err_path, "wb")
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err, pass_fds=self.pass_fds)
        if wait:
            self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                pytest.fail(f"server exited with {rc} before accepting connections\n"
                            f"argv: {self.argv}\nstderr:\n{self.stderr()[-4000:]}")
            try:
                s = self.connect(timeout=0.5)
                s.close()
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"server not accepting connections after {timeout}s\n"
                            f"argv: {self.argv}\nstderr:\n{self.stderr()[-4000:]}")
            time.sleep(0.02)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Sends sig and waits for the exit; returns the exit status (negative: killed by
        a signal; None if it had to be SIGKILLed after timeout)."""
        self.stopped = True
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
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

    def wait_stopped(self, timeout=15):
        """After the test signalled the server itself: waits for the exit without
        signalling again (a second SIGTERM may mean "force"); returns the status."""
        self.stopped = True
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.returncode = None
        return self.returncode

    def wait_exit(self, timeout=10):
        """Waits for the process to exit by itself (the test expects it); returns the
        exit status, or fails."""
        self.expect_exit = True
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"server still running after {timeout}s; stderr:\n"
                        f"{self.stderr()[-3000:]}")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def running(self):
        return self.proc.poll() is None

    # -- output

    def stdout(self):
        return self._out_path.read_bytes().decode("utf-8", "replace")

    def stderr(self):
        return self._err_path.read_bytes().decode("utf-8", "replace")

    def wait_output(self, pattern, stream="stdout", timeout=5, count=1):
        """Waits until ``pattern`` (regex) matches ``count`` times in stdout/stderr;
        returns the text."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.stdout() if stream == "stdout" else self.stderr()
            if len(re.findall(pattern, text, re.M)) >= count:
                return text
            if time.monotonic() > deadline:
                return text
            time.sleep(0.02)

    # -- clients

    def url(self, path="/"):
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{h}:{self.port}{path}"

    def connect(self, timeout=5):
        if self.unix is not None and self.port is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            try:
                s.connect(str(self.unix))
            except OSError:
                s.close()
                raise
            return s
        return connect(self.port, self.host, timeout)

    def request(self, method="GET", path="/", body=None, headers=None, timeout=5):
        """A normal request with http.client on a new connection (TCP or UNIX).
        Returns Result(status, headers, body, json)."""
        conn = HTTPConn(self, timeout)
        try:
            return conn.request(method, path, body, headers)
        finally:
            conn.close()

    def raw_request(self, data, head=False, timeout=5):
        """Sends raw request bytes on a new connection and reads one response
        (``.sockname`` is the client's address)."""
        s = self.connect(timeout)
        try:
            s.sendall(data)
            r = Reader(s).read_response(head=head, timeout=timeout)
            r.sockname = s.getsockname()
            return r
        finally:
            s.close()

    def raw(self, data, timeout=5):
        """Sends bytes on a new connection; returns (bytes until close/timeout, closed)."""
        return raw_ex(None, data, timeout, sock=self.connect(timeout))

    def get_json(self, path, **kw):
        r = self.request("GET", path, **kw)
        assert r.status == 200, (r.status, r.body[:500])
        return json.loads(r.body)

    def scope(self, path="/scope", **kw):
        return self.get_json(path, **kw)["scope"]

    def seen(self, marker):
        """Whether any request whose target contains ``marker`` reached the app."""
        return self.get_json("/seen?q=" + urllib.parse.quote(marker))["seen"]

    def result(self, key, timeout=5):
        """Polls /result?id=key until the app stored it; returns it (or fails)."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.request("GET", "/result?id=" + urllib.parse.quote(key))
            if r.status == 200:
                return json.loads(r.body)
            if time.monotonic() > deadline:
                pytest.fail(f"the app stored no result {key!r} within {timeout}s")
            time.sleep(0.05)

    def assert_alive(self):
        """A fresh connection still gets an answer (200 from the test apps; any non-5xx
        from other apps such as Django's 404)."""
        r = self.request("GET", "/alive-check")
        assert 200 <= r.status < 500, f"server no longer serving: {r.status} {r.body[:200]!r}"

    # -- teardown

    def finalize(self):
        problems = []
        if self.proc is None:
            return problems
        if not self.stopped:
            if self.proc.poll() is not None:
                if not self.expect_exit:
                    problems.append(f"server exited by itself with {self.proc.returncode}")
            else:
                if self.alive_check:
                    try:
                        self.assert_alive()
                    except (AssertionError, OSError) as e:
                        problems.append(f"server not serving at the end of the test: {e}")
                rc = self.stop()
                if rc is None:
                    problems.append("server did not exit within 15 s of SIGTERM")
                elif self.check_exit and rc != 0:
                    problems.append(f"server exited with {rc} after SIGTERM (expected 0)")
        else:
            self.kill()
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f:
                f.close()
        err = self.stderr()
        for bad in BAD_STDERR:
            if bad in err:
                i = err.index(bad)
                problems.append(f"{bad!r} in server stderr:\n{err[max(0, i - 2000):i + 4000]}")
        return problems


class _Factory:
    def __init__(self, tmpdir):
        self.tmpdir = Path(tmpdir)
        self.servers = []

    def __call__(self, app="tests.apps.basic:app", *extra_args, env=None, cwd=REPO,
                 port=None, unix=None, host="127.0.0.1", pass_fds=(), wait=True,
                 ready_timeout=10, add_listener=True, kind=None):
        s = Server(app, extra_args, self.tmpdir, env=env, cwd=cwd, port=port, unix=unix,
                   host=host, pass_fds=pass_fds, add_listener=add_listener, kind=kind)
        self.servers.append(s)
        return s.start(ready_timeout=ready_timeout, wait=wait)

    def finalize(self):
        problems = []
        for s in self.servers:
            problems += s.finalize()
        return problems


@pytest.fixture
def serve(tmp_path):
    """Factory: serve(app="tests.apps.basic:app", *extra_args, env=None, cwd=REPO,
    port=None, unix=None, host=..., pass_fds=(), wait=True, add_listener=True) -> Server.

    Without a listener among extra_args, "-p <free port>" is added (unless
    add_listener=False: then port=/unix= only say where to connect)."""
    factory = _Factory(tmp_path)
    yield factory
    problems = factory.finalize()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server of tests.apps.basic:app with default flags, shared by a module."""
    factory = _Factory(tmp_path_factory.mktemp("server"))
    s = factory()
    yield s
    problems = factory.finalize()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def tmp_file(tmp_path):
    return tmp_path / "record.txt"


# --------------------------------------------------------------------------- raw sockets

def connect(port, host="127.0.0.1", timeout=5):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
    except OSError:
        s.close()
        raise
    return s


def read_until_close(sock, timeout=5):
    """Reads until EOF/reset or until nothing arrived for ``timeout`` s.
    Returns (data, closed)."""
    sock.settimeout(timeout)
    chunks = []
    while True:
        try:
            b = sock.recv(65536)
        except socket.timeout:
            return b"".join(chunks), False
        except (ConnectionResetError, BrokenPipeError):
            return b"".join(chunks), True
        if not b:
            return b"".join(chunks), True
        chunks.append(b)


def raw_ex(port, data, timeout=5, host="127.0.0.1", sock=None):
    """Sends ``data`` on a new connection (or ``sock``); returns (bytes read until
    close/timeout, closed)."""
    s = sock or connect(port, host, timeout)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_until_close(s, timeout)
    finally:
        s.close()


def raw(port, data, timeout=5, host="127.0.0.1"):
    """Sends bytes on a raw socket and reads until close/timeout."""
    return raw_ex(port, data, timeout, host)[0]


def is_closed(sock, timeout=3):
    """True if the peer closes (EOF or reset) within timeout with no more data;
    returns the bytes if data arrives instead."""
    sock.settimeout(timeout)
    try:
        b = sock.recv(65536)
    except socket.timeout:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True
    return True if not b else b


# --------------------------------------------------------------------------- response parser

class Response:
    def __init__(self, version, status, reason, headers):
        self.version, self.status, self.reason = version, status, reason
        self.headers = headers          # [(lower-case name, value)] as str (latin-1)
        self.body = b""
        self.chunks = []                # chunk sizes, for chunked bodies
        self.chunked = False
        self.complete = False
        self.head = b""

    def header(self, name, default=None):
        name = name.lower()
        for n, v in self.headers:
            if n == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return (f"<Response {self.status} {self.headers} body={self.body[:200]!r} "
                f"complete={self.complete}>")


class Incomplete(Exception):
    pass


def _parse_head(buf, pos):
    end = buf.find(b"\r\n\r\n", pos)
    if end < 0:
        raise Incomplete
    lines = buf[pos:end].split(b"\r\n")
    m = re.match(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
    if not m:
        raise ValueError(f"bad status line {lines[0]!r}")
    headers = []
    for ln in lines[1:]:
        if b":" not in ln:
            raise ValueError(f"bad header line {ln!r}")
        n, v = ln.split(b":", 1)
        headers.append((n.decode("latin-1").lower(), v.strip(b" \t").decode("latin-1")))
    r = Response(m.group(1).decode(), int(m.group(2)), (m.group(3) or b"").decode("latin-1"),
                 headers)
    r.head = buf[pos:end + 4]
    return r, end + 4


def parse_one(buf, pos=0, head_request=False, eof=False):
    """Parses one response at buf[pos:]. Returns (Response, next_pos).
    Raises Incomplete if more bytes are needed (unless eof: then returns what there is,
    with complete=False)."""
    r, p = _parse_head(buf, pos)
    te = r.header("transfer-encoding")
    cl = r.header("content-length")
    if head_request or 100 <= r.status < 200 or r.status in (204, 304):
        r.complete = True
        return r, p
    if te is not None and "chunked" in te.lower():
        r.chunked = True
        body = []
        while True:
            nl = buf.find(b"\r\n", p)
            if nl < 0:
                break
            size = int(buf[p:nl].split(b";")[0], 16)
            if size == 0:
                end = buf.find(b"\r\n\r\n", nl)  # optional trailers
                if buf[nl:nl + 4] == b"\r\n\r\n":
                    end = nl
                if end < 0:
                    break
                r.body = b"".join(body)
                r.complete = True
                return r, end + 4
            if len(buf) < nl + 2 + size + 2:
                break
            body.append(buf[nl + 2:nl + 2 + size])
            r.chunks.append(size)
            if buf[nl + 2 + size:nl + 4 + size] != b"\r\n":
                raise ValueError("bad chunk terminator")
            p = nl + 4 + size
        if not eof:
            raise Incomplete
        r.body = b"".join(body)
        return r, len(buf)
    if cl is not None:
        n = int(cl)
        if len(buf) - p >= n:
            r.body = buf[p:p + n]
            r.complete = True
            return r, p + n
        if not eof:
            raise Incomplete
        r.body = buf[p:]
        return r, len(buf)
    # close-delimited
    if not eof:
        raise Incomplete
    r.body = buf[p:]
    r.complete = True
    return r, len(buf)


def parse_responses(data, heads=()):
    """Parses every response in data (bytes read until close). ``heads``: indexes of
    responses that answer HEAD requests. 1xx responses count as responses."""
    out, pos, i = [], 0, 0
    while pos < len(data):
        r, pos = parse_one(data, pos, head_request=i in heads, eof=True)
        out.append(r)
        i += 1
    return out


class Reader:
    """Incremental reader of responses from a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            b = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            b = b""
        if not b:
            self.eof = True
        self.buf += b

    def read_response(self, head=False, timeout=5):
        """The next response; socket.timeout if it does not come in time. At EOF a
        partial response has complete=False; EOFError if nothing at all came."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                r, p = parse_one(self.buf, 0, head_request=head, eof=self.eof)
                self.buf = self.buf[p:]
                return r
            except Incomplete:
                if self.eof:
                    if not self.buf:
                        raise EOFError("connection closed before a response")
                    raise ValueError(f"connection closed in a response head: {self.buf!r}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout(f"no complete response within {timeout}s; "
                                     f"have {self.buf[:300]!r}")
            self._fill(left)

    def read_some(self, n=1, timeout=5):
        """At least n more raw bytes (or fewer at EOF)."""
        deadline = time.monotonic() + timeout
        while len(self.buf) < n and not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            self._fill(left)
        return self.buf

    def closed(self, timeout=3):
        """True if EOF comes within timeout with no further bytes."""
        if self.buf:
            return False
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                self._fill(left)
            except socket.timeout:
                return False
            if self.buf:
                return False
        return True


# --------------------------------------------------------------------------- http.client

class Result:
    def __init__(self, status, reason, headers, body):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body

    def header(self, name, default=None):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return default

    def header_all(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Result {self.status} {self.headers} {self.body[:200]!r}>"


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = str(path)

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class HTTPConn:
    """A keep-alive http.client connection to a Server."""

    def __init__(self, srv, timeout=5):
        if srv.port is None and srv.unix is not None:
            self.c = _UnixHTTPConnection(srv.unix, timeout)
        else:
            self.c = http.client.HTTPConnection(srv.host, srv.port, timeout=timeout)

    def request(self, method="GET", path="/", body=None, headers=None):
        self.c.request(method, path, body=body, headers=headers or {})
        r = self.c.getresponse()
        body = r.read()
        return Result(r.status, r.reason, r.getheaders(), body)

    @property
    def sock(self):
        return self.c.sock

    def close(self):
        self.c.close()


def check_rejected(server, data, status=400, head_level=True):
    """Sends data followed by a pipelined valid request; checks the single answer."""
    marker, follow = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    data = data.replace(b"{M}", marker.encode())
    bystander = server.connect()
    try:
        brd = Reader(bystander)
        bystander.sendall(req("/text?body=by1"))
        assert brd.read_response().body == b"by1"

        s = server.connect()
        try:
            try:
                s.sendall(data + req(f"/scope?follow-{follow}"))
            except (BrokenPipeError, ConnectionResetError):
                pass
            buf, closed = read_until_close(s, 5)
        finally:
            s.close()
        assert closed, f"connection not closed after a bad request; got {buf[:300]!r}"
        rs = parse_responses(buf)
        assert len(rs) == 1, f"expected exactly one response, got {buf[:600]!r}"
        r = rs[0]
        assert r.status == status, f"expected {status}, got {r.status}: {buf[:300]!r}"
        assert (r.header("connection") or "").lower() == "close", r
        if kind() == "laurel":
            assert r.header("date"), "Date is added to every response"
        assert not server.seen(f"follow-{follow}"), "request pipelined after it was processed"
        if head_level:
            assert not server.seen(f"m-{marker}"), "the bad request reached the app"
        assert not server.seen(f"smuggled-{marker}"), "smuggled request processed"

        bystander.sendall(req("/text?body=by2"))
        assert brd.read_response().body == b"by2", "other connection harmed"
    finally:
        bystander.close()
    server.assert_alive()
    return r


def req(path, headers=b"", version=b"1.1", method=b"GET", host=b"t", body=b""):
    """Bytes of a simple request."""
    h = b"Host: " + host + b"\r\n" if host else b""
    if isinstance(path, str):
        path = path.encode()
    return (method + b" " + path + b" HTTP/" + version + b"\r\n" + h + headers + b"\r\n"
            + body)


# --------------------------------------------------------------------------- /proc

def proc_status(pid, field):
    """A kB value from /proc/PID/status (VmRSS, VmPeak, VmHWM, ...)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_kb(pid):
    return proc_status(pid, "VmRSS")


def sanitized(binary=LAUREL_BIN):
    """Whether binary links a sanitizer's runtime (ASan, UBSan), which owns malloc: before
    a server starts (asan_build asks a running one)."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
    return "libasan" in out or "libubsan" in out


def asan_build(pid):
    """Whether the server PID runs the ASan build (its RSS figures are not meaningful:
    ASan's quarantine holds freed memory on purpose)."""
    with open(f"/proc/{pid}/maps") as f:
        return "libasan" in f.read()
