"""``manage.py runserver`` through laurel: the ``laurel`` Django app first in
INSTALLED_APPS (python/laurel/management/commands/runserver.py).

Each project is a temporary copy of examples/notifications with a settings module that
imports the example's settings and puts "laurel" first in INSTALLED_APPS, a static file,
and a temporary SQLite database. The commands run as Django users run them:
``/usr/bin/python3 manage.py runserver 127.0.0.1:PORT`` in the project directory, in a
session of their own (so that a terminal's Ctrl-C, SIGINT to the process group, can be
imitated). The laurel executable is the one under test (LAUREL_BIN).
"""

import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import LAUREL_BIN, PY, REPO, free_port, ipv6_available

websockets = pytest.importorskip("websockets")

EXAMPLE = REPO / "examples" / "notifications"
STATIC_BODY = b"/* laurel runserver test */\nbody { color: #24513a; }\n"
BAD_STDERR = ("AddressSanitizer", "LeakSanitizer", "Fatal Python error")
APP_PATH = "laurel.django_app:application"

pytestmark = [
    pytest.mark.laurel_only,
    pytest.mark.slow,
    pytest.mark.skipif(not (EXAMPLE / "inbox").is_dir(),
                       reason="examples/notifications has no inbox app yet"),
]

SETTINGS = '''\
from notifications.settings import *  # noqa: F401,F403

INSTALLED_APPS = ["laurel", *INSTALLED_APPS]
STATICFILES_DIRS = [BASE_DIR / "static"]
'''


# --------------------------------------------------------------------------- projects

class Project:
    def __init__(self, root):
        self.dir = root / "project"
        shutil.copytree(EXAMPLE, self.dir,
                        ignore=shutil.ignore_patterns("__pycache__", "db.sqlite3*"))
        (self.dir / "static").mkdir()
        (self.dir / "static" / "laurel-test.css").write_bytes(STATIC_BODY)
        (self.dir / "laurel_settings.py").write_text(SETTINGS)
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("DJANGO_SETTINGS_MODULE", "NOTIFICATIONS_REDIS_URL")
                    and not k.startswith("LAUREL_")}
        self.env.update({
            "DJANGO_SETTINGS_MODULE": "laurel_settings",
            "PYTHONPATH": str(REPO / "python"),
            "NOTIFICATIONS_DB": str(root / "db.sqlite3"),
            "DJANGO_DEBUG": "1",
            "LAUREL_BIN": str(LAUREL_BIN),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        })
        r = self.manage("migrate", "--noinput")
        assert r.returncode == 0, r.stdout + r.stderr

    def manage(self, *args, env=None, timeout=60):
        e = dict(self.env)
        e.update(env or {})
        return subprocess.run([PY, "manage.py", *args], cwd=self.dir, env=e,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)

    def edit(self, relpath, old, new):
        path = self.dir / relpath
        text = path.read_text()
        assert old in text, f"{old!r} not in {relpath}"
        before = path.stat().st_mtime
        path.write_text(text.replace(old, new))
        if path.stat().st_mtime <= before:  # coarse clocks: make the change visible
            os.utime(path, (before + 1, before + 1))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project the tests only read (no edits)."""
    return Project(tmp_path_factory.mktemp("runserver"))


def children(pid):
    """Pids whose parent is pid."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


def running(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


def is_laurel(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe") == os.path.realpath(LAUREL_BIN)
    except OSError:
        return False


def cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]


class Runserver:
    """``manage.py runserver 127.0.0.1:PORT *args`` in its own session."""

    def __init__(self, project, *args, env=None, addr="127.0.0.1", port=None):
        self.project = project
        self.port = port or free_port()
        self.host = addr
        shown = f"[{addr}]" if ":" in addr else addr
        self.url = f"http://{shown}:{self.port}"
        self.argv = [PY, "manage.py", "runserver", f"{shown}:{self.port}", *args]
        e = dict(project.env)
        e.update(env or {})
        n = len(list(project.dir.parent.glob("runserver*.out")))
        self.out_path = project.dir.parent / f"runserver{n}.out"
        self.err_path = project.dir.parent / f"runserver{n}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, cwd=project.dir, env=e,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         start_new_session=True)
        self.seen = set()  # every process of the tree seen so far

    def stdout(self):
        return self.out_path.read_text(errors="replace")

    def stderr(self):
        return self.err_path.read_text(errors="replace")

    def output(self):
        return f"argv: {self.argv}\nstdout:\n{self.stdout()[-4000:]}\n" \
               f"stderr:\n{self.stderr()[-8000:]}"

    def tree(self):
        pids = descendants(self.proc.pid)
        self.seen.update(pids)
        return pids

    def laurel_pids(self):
        return [p for p in self.tree() if is_laurel(p)]

    def get(self, path, timeout=5, host=None):
        conn = http.client.HTTPConnection(host or self.host, self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.headers, r.read()
        finally:
            conn.close()

    def wait_serving(self, path="/", timeout=40, check=None):
        """Polls until GET path answers (and check(status, headers, body) is true).
        Returns the last answer."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"runserver exited with {self.proc.returncode}\n{self.output()}")
            try:
                last = self.get(path, timeout=2)
                if check is None or check(*last):
                    self.tree()
                    return last
            except (OSError, http.client.HTTPException) as exc:
                last = exc
            time.sleep(0.2)
        pytest.fail(f"{self.url}{path} not served as expected within {timeout}s "
                    f"(last: {last!r})\n{self.output()}")

    def signal(self, sig, group=False):
        self.tree()
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout=30):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"runserver still running {timeout}s after the signal\n"
                        f"{self.output()}")

    def assert_no_leftovers(self, timeout=10):
        """Every process of the tree (laurel included) has exited."""
        deadline = time.monotonic() + timeout
        while True:
            alive = [p for p in self.seen if running(p)]
            if not alive:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"processes left running: {[(p, cmdline(p)) for p in alive]}"
                            f"\n{self.output()}")
            time.sleep(0.1)

    def cleanup(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        for pid in self.seen:
            if running(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        err = self.stderr()
        for bad in BAD_STDERR:
            assert bad not in err, err[-8000:]


@pytest.fixture
def runserver():
    started = []

    def start(project, *args, **kw):
        rs = Runserver(project, *args, **kw)
        started.append(rs)
        return rs

    yield start
    for rs in started:
        rs.cleanup()


async def ws_echo(url, origin, message):
    async with websockets.connect(url, origin=origin, open_timeout=20,
                                  close_timeout=5) as ws:
        await ws.send(json.dumps(message))
        return json.loads(await asyncio.wait_for(ws.recv(), 10))


async def ws_status(url, origin):
    try:
        async with websockets.connect(url, origin=origin, open_timeout=20):
            return 101
    except websockets.exceptions.InvalidStatusCode as exc:
        return exc.status_code


# --------------------------------------------------------------------------- tests

def test_serves_http_websocket_and_static(project, runserver):
    rs = runserver(project)
    status, headers, body = rs.wait_serving("/")
    assert status == 200
    assert headers["Server"] == "laurel"
    assert b"Hello from laurel" in body

    out = rs.stdout()
    assert "Performing system checks..." in out
    assert "System check identified no issues" in out
    assert f"Starting ASGI/laurel development server at {rs.url}/" in out, out
    assert "Quit the server with CONTROL-C." in out

    # supervisor -> reloader child -> laurel on the supervisor's socket
    kids = children(rs.proc.pid)
    assert len(kids) == 1, rs.output()
    (laurel_pid,) = children(kids[0])
    assert is_laurel(laurel_pid), cmdline(laurel_pid)
    argv = cmdline(laurel_pid)
    assert "--fd" in argv and argv[-1] == APP_PATH, argv

    # DEBUG: static files from STATICFILES_DIRS, through laurel
    status, headers, body = rs.get("/static/laurel-test.css")
    assert (status, body) == (200, STATIC_BODY)
    assert headers["Server"] == "laurel"
    assert headers["Content-Type"].startswith("text/css")

    # WebSockets: the project's ASGI_APPLICATION (origin check, auth, URLRouter)
    ws = f"ws://127.0.0.1:{rs.port}"
    msg = {"hello": "runserver", "n": [1, 2]}
    assert asyncio.run(ws_echo(ws + "/echo-json/", rs.url, msg)) == msg
    assert asyncio.run(ws_status(ws + "/notifications/", rs.url)) == 403  # anonymous

    # the access log (laurel -v 1, runserver's default verbosity) on stdout
    assert re.search(r'"GET /static/laurel-test.css" 200 \d+', rs.stdout()), rs.stdout()


@pytest.mark.parametrize("debug, args, expected", [
    ("1", ["--nostatic"], 404),
    ("0", [], 404),
    ("0", ["--insecure"], 200),
])
def test_static_flags(project, runserver, debug, args, expected):
    rs = runserver(project, "--noreload", *args, env={"DJANGO_DEBUG": debug})
    rs.wait_serving("/")
    status, headers, body = rs.get("/static/laurel-test.css")
    assert status == expected, body[:300]
    assert headers["Server"] == "laurel"


def test_autoreload_restarts_laurel(tmp_path, runserver):
    project = Project(tmp_path)
    rs = runserver(project)
    body = rs.wait_serving("/sync/")[2]
    assert "edited" not in json.loads(body)
    (first,) = rs.laurel_pids()
    (reloader,) = children(rs.proc.pid)
    time.sleep(1.5)  # the StatReloader's first snapshot of every module

    # A view module: the reloader child exits with 3, the supervisor starts another,
    # which starts another laurel.
    project.edit("notifications/views.py", '{"sync": True,', '{"sync": True, "edited": 1,')
    rs.wait_serving("/sync/", check=lambda s, h, b: s == 200 and b'"edited": 1' in b)
    (second,) = rs.laurel_pids()
    assert second != first
    assert not running(first), "the old laurel still runs"
    assert children(rs.proc.pid) != [reloader]
    assert "notifications/views.py changed, reloading." in rs.stderr()

    # A consumer module: only the ASGI application imports it (runserver builds the
    # application in the reloader child so that it is watched).
    time.sleep(1.5)
    project.edit("inbox/consumers.py", "await self.send_json(content)",
                 'await self.send_json({"edited": content})')
    ws = f"ws://127.0.0.1:{rs.port}/echo-json/"
    deadline = time.monotonic() + 40
    while True:
        try:
            got = asyncio.run(ws_echo(ws, rs.url, {"n": 1}))
        except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as exc:
            got = exc  # the old laurel shutting down: 503 or a closed connection
        if got == {"edited": {"n": 1}}:
            break
        assert got == {"n": 1} or isinstance(got, Exception), got
        assert time.monotonic() < deadline, f"consumers.py not reloaded\n{rs.output()}"
        time.sleep(0.3)
    (third,) = rs.laurel_pids()
    assert third != second

    # A syntax error: no server until it is fixed, then it serves again.
    time.sleep(1.5)
    project.edit("notifications/views.py", "def sync_view(request):", "def sync_view(request:")
    deadline = time.monotonic() + 30
    while running(third) or rs.laurel_pids():
        assert time.monotonic() < deadline, f"laurel still runs\n{rs.output()}"
        time.sleep(0.2)
    while "SyntaxError" not in rs.stderr():
        assert time.monotonic() < deadline, rs.output()
        time.sleep(0.2)
    time.sleep(1.5)  # the reloader watches the file with the error from now on
    project.edit("notifications/views.py", "def sync_view(request:", "def sync_view(request):")
    rs.wait_serving("/sync/", check=lambda s, h, b: s == 200 and b'"edited": 1' in b)
    assert len(rs.laurel_pids()) == 1

    rs.signal(signal.SIGINT, group=True)
    assert rs.wait_exit() == 0, rs.output()
    rs.assert_no_leftovers()


@pytest.mark.parametrize("how", [
    "ctrl-c",             # SIGINT to the whole process group, as a terminal sends it
    "sigint-parent",      # kill -INT <manage.py>
    "sigterm-parent",     # kill <manage.py> (a supervisor, an IDE's stop button)
    "noreload-ctrl-c",
    "noreload-sigterm",
])
def test_signals_stop_everything(project, runserver, how):
    args = ["--noreload"] if how.startswith("noreload") else []
    rs = runserver(project, *args)
    rs.wait_serving("/")
    assert len(rs.laurel_pids()) == 1

    async def hold_socket_and_stop():
        # an open WebSocket must not keep the server up: laurel closes it with 1012
        async with websockets.connect(f"ws://127.0.0.1:{rs.port}/echo-json/",
                                      origin=rs.url, open_timeout=10) as ws:
            sig = signal.SIGTERM if how.endswith("sigterm") or how == "sigterm-parent" \
                else signal.SIGINT
            rs.signal(sig, group=how.endswith("ctrl-c"))
            try:
                await asyncio.wait_for(ws.recv(), 20)
            except websockets.exceptions.ConnectionClosed as exc:
                return exc.code
            return None

    code = asyncio.run(hold_socket_and_stop())
    assert code in (1012, 1006), code  # 1006 if the second signal closed it at once
    assert rs.wait_exit() == 0, rs.output()
    rs.assert_no_leftovers()
    # nothing listens on the port any more
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", rs.port), timeout=2).close()


def test_laurel_options_pass_through(project, runserver):
    other = free_port()
    rs = runserver(project, "--noreload", "--laurel-arg=--server-name=dev-laurel",
                   "--laurel-arg=--websocket_timeout=600",
                   env={"LAUREL_ACCESS_LOG": str(project.dir.parent / "access.log"),
                        "LAUREL_PORT": str(other)})
    status, headers, _ = rs.wait_serving("/")
    assert headers["Server"] == "dev-laurel"
    argv = cmdline(rs.laurel_pids()[0])
    assert "--server-name=dev-laurel" in argv and "--websocket_timeout=600" in argv
    # LAUREL_* variables reach laurel (the access log went to the file) ...
    deadline = time.monotonic() + 5
    log = project.dir.parent / "access.log"
    while not (log.exists() and '"GET /"' in log.read_text()):
        assert time.monotonic() < deadline, "LAUREL_ACCESS_LOG not used"
        time.sleep(0.1)
    # ... except the ones that would add listeners: the address is runserver's.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", other), timeout=2).close()


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")
def test_ipv6(project, runserver):
    rs = runserver(project, "--noreload", addr="::1")
    status, headers, body = rs.wait_serving("/")
    assert (status, headers["Server"]) == (200, "laurel")
    assert f"Starting ASGI/laurel development server at http://[::1]:{rs.port}/" in rs.stdout()


def test_errors(project, tmp_path):
    r = project.manage("runserver", "--noreload", f"127.0.0.1:{free_port()}",
                       env={"LAUREL_BIN": str(tmp_path / "no-such-laurel")})
    assert r.returncode == 1
    assert "is not an executable file" in r.stderr, r.stderr

    r = project.manage("runserver", "--noreload", f"127.0.0.1:{free_port()}",
                       "--laurel-arg=--port=9")
    assert r.returncode == 1
    assert "addrport" in r.stderr, r.stderr

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = project.manage("runserver", f"127.0.0.1:{busy.getsockname()[1]}")
    assert r.returncode == 1
    assert "Error: That port is already in use." in r.stderr, r.stderr


def test_check_laurel_before_staticfiles(project, tmp_path):
    settings = project.dir / "laurel_late_settings.py"
    settings.write_text("from laurel_settings import *  # noqa\n"
                        "INSTALLED_APPS = [a for a in INSTALLED_APPS if a != 'laurel']"
                        " + ['laurel']\n")
    r = project.manage("check", env={"DJANGO_SETTINGS_MODULE": "laurel_late_settings"})
    assert r.returncode != 0
    assert "laurel.E001" in r.stderr and "django.contrib.staticfiles" in r.stderr, r.stderr
    assert project.manage("check").returncode == 0
