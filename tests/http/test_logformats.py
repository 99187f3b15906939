"""Access-log formats and destinations (cli.md "Logging"): ``--access-log-format
daphne|json`` and ``--access-log-to-logging`` (the Python logger ``laurel.access``).

The JSON oracle is Python's own json module: every line must satisfy
``json.dumps(json.loads(line)) == line``, i.e. one object per line, written exactly as
json.dumps() writes it (ASCII only, ``\\u00XX`` for control characters and for every byte
>= 0x80 read as Latin-1)."""

import asyncio
import datetime
import json
import os
import re
import tempfile
import textwrap
import time

import pytest

from conftest import REPO, Reader, req, run_cli

pytestmark = pytest.mark.laurel_only

BASIC = "tests.apps.basic:app"
WS_APP = "tests.apps.ws_app:app"

DAPHNE_LINE = re.compile(r'^(\S+) - - \[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d)\] '
                         r'"([^"]*)" (\d{3}|-) (\d+|-)$')
KEYS = ["time", "client", "request", "method", "path", "status", "size", "event"]


# --------------------------------------------------------------------------- helpers

def text_lines(text, needle=None):
    return [ln for ln in text.splitlines() if ln.strip() and (needle is None or needle in ln)]


def wait_for(get_text, needle, count=1, timeout=5):
    deadline = time.monotonic() + timeout
    while True:
        lines = text_lines(get_text(), needle)
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def json_lines(srv, needle, count=1, path=None, timeout=5):
    """The access-log lines containing needle, each checked to be exactly what
    json.dumps() writes, parsed."""
    get = (lambda: path.read_text() if path.exists() else "") if path else srv.stdout
    lines = wait_for(get, needle, count, timeout)
    assert len(lines) >= count, f"{count} line(s) with {needle!r} expected:\n{get()[-3000:]}"
    out = []
    for ln in lines:
        obj = json.loads(ln)
        assert list(obj) == KEYS, ln
        assert json.dumps(obj) == ln, ln  # json.dumps' exact spelling, ASCII only
        out.append(obj)
    return out


def check_time(value):
    t = datetime.datetime.fromisoformat(value)  # ISO 8601 with an offset
    assert t.tzinfo is not None, value
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", value), value
    assert abs(t.timestamp() - time.time()) < 30
    local = datetime.datetime.now().astimezone().utcoffset()
    assert t.utcoffset() == local  # local time, not UTC


def raw_get(srv, target):
    """One request with this exact target on its own connection; returns (response,
    client port)."""
    s = srv.connect()
    try:
        s.sendall(req(target) if isinstance(target, str) else
                  b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        port = s.getsockname()[1]
        return Reader(s).read_response(), port
    finally:
        s.close()


# --------------------------------------------------------------------------- daphne

@pytest.mark.parametrize("args", [[], ["--access-log-format", "daphne"]])
def test_daphne_format_unchanged(serve, args):
    srv = serve(BASIC, *args)
    r, port = raw_get(srv, "/a%2Fb/%C3%A9?x=1")
    lines = wait_for(srv.stdout, "/a%2Fb")
    assert len(lines) == 1, srv.stdout()
    m = DAPHNE_LINE.match(lines[0])
    assert m, lines[0]
    assert m.group(1) == f"127.0.0.1:{port}"
    assert m.group(3) == "GET /a%2Fb/%C3%A9?x=1"
    assert (m.group(4), m.group(5)) == ("200", str(len(r.body)))
    assert "{" not in srv.stdout()


# --------------------------------------------------------------------------- json

def test_json_http_line(serve):
    srv = serve(BASIC, "--access-log-format", "json")
    r, port = raw_get(srv, "/a%2Fb/%C3%A9?x=1&y")
    (obj,) = json_lines(srv, "/a%2Fb")
    check_time(obj.pop("time"))
    assert obj == {"client": f"127.0.0.1:{port}", "request": "GET /a%2Fb/%C3%A9?x=1&y",
                   "method": "GET", "path": "/a%2Fb/%C3%A9?x=1&y", "status": 200,
                   "size": len(r.body), "event": "http"}


@pytest.mark.parametrize("method,path,status,size", [
    ("GET", "/text?body=&cl=1&marker=empty", 200, 0),
    ("GET", "/status?code=204&marker=nocontent", 204, 0),
    ("GET", "/status?code=404&body=nope&marker=notfound", 404, 4),
    ("POST", "/stream?n=3&size=100&marker=streamed", 200, 300),
    ("GET", "/raise-before?marker=raised", 500, None),
])
def test_json_status_size_method(serve, method, path, status, size):
    srv = serve(BASIC, "--access-log-format", "json")
    srv.request(method, path, body=b"abc" if method == "POST" else None)
    (obj,) = json_lines(srv, path.split("marker=")[1])
    assert (obj["method"], obj["path"], obj["status"]) == (method, path, status)
    assert obj["request"] == f"{method} {path}"
    assert isinstance(obj["size"], int)
    if size is not None:
        assert obj["size"] == size


def test_json_quotes_backslashes_and_utf8(serve):
    """'"' and '\\' are legal in a target as laurel's guard reads it; they are escaped,
    and UTF-8 percent-encodings are logged as sent."""
    srv = serve(BASIC, "--access-log-format", "json")
    target = '/q"uo\\te/%E2%82%AC/%C3%A9?k="v"\\&z=%22'
    r, _ = raw_get(srv, target)
    assert r.status == 200
    (obj,) = json_lines(srv, "uo\\\\te")
    assert obj["path"] == target and obj["request"] == "GET " + target
    ln = text_lines(srv.stdout(), "uo\\\\te")[0]
    assert '\\"uo\\\\te' in ln  # escaped, not raw


def test_json_injection_stays_one_line(serve):
    """uvicorn CVE-2020-7694: encoded CR LF and an encoded fake JSON object stay
    percent-encoded text inside one string."""
    srv = serve(BASIC, "--access-log-format", "json")
    n = 4
    for i in range(n):
        srv.request("GET", f"/inject{i}%0d%0a%7B%22status%22:%20200%7D%22,%20%22x%22:%20%22"
                           "%0a%1b[31m%7f")
    objs = json_lines(srv, "/inject", count=n)
    assert len(objs) == n
    assert len(text_lines(srv.stdout())) == n
    for o in objs:
        assert o["status"] == 200 and "%0d%0a%7B%22status%22" in o["path"]
    assert "\x1b" not in srv.stdout()


def test_json_raw_bytes_rejected_or_escaped(serve):
    """Raw control bytes and DEL are refused by the request guard before any log line;
    high bytes, if accepted, come out as \\u00XX, one character per byte."""
    srv = serve(BASIC, "--access-log-format", "json")
    srv.raw(b"GET /ctl\x1b[31m HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    srv.raw(b"GET /del\x7f HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    srv.raw(b"GET /nl\nx HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    srv.raw(b"GET /high\xc3\xa9\xff HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    srv.request("GET", "/after-raw")
    json_lines(srv, "/after-raw")
    out = srv._out_path.read_bytes()
    assert all(b < 0x80 for b in out), "non-ASCII byte in a JSON access log"
    for ln in text_lines(out.decode("ascii")):
        obj = json.loads(ln)
        assert json.dumps(obj) == ln
        assert "\x1b" not in obj["path"] and "\x7f" not in obj["path"]
        if obj["path"].startswith("/high"):
            assert obj["path"].encode("latin-1") == b"/high\xc3\xa9\xff"
            assert "\\u00c3\\u00a9\\u00ff" in ln


def test_json_unix_socket_client_null(serve, tmp_path):
    path = str(tmp_path / "a.sock")
    if len(path) > 100:
        path = os.path.join(tempfile.mkdtemp(prefix="lrl"), "a.sock")
    srv = serve(BASIC, "-u", path, "--access-log-format", "json", unix=path)
    srv.request("GET", "/via-unix")
    (obj,) = json_lines(srv, "/via-unix")
    assert obj["client"] is None
    assert obj["status"] == 200


def test_json_to_file_and_from_environment(serve, tmp_path):
    log = tmp_path / "access.jsonl"
    log.write_text("previous line\n")
    srv = serve(BASIC, "--access-log", str(log),
                env={"LAUREL_ACCESS_LOG_FORMAT": "json"})
    for i in range(3):
        srv.request("GET", f"/to-file{i}")
    objs = json_lines(srv, "/to-file", count=3, path=log)
    assert [o["path"] for o in objs] == [f"/to-file{i}" for i in range(3)]
    assert log.read_text().startswith("previous line\n")
    assert "/to-file" not in srv.stdout()


def test_json_pipelined_keepalive(serve):
    srv = serve(BASIC, "--access-log-format", "json")
    s = srv.connect()
    try:
        s.sendall(b"".join(req(f"/pipe{i}") for i in range(5)))
        rd = Reader(s)
        for _ in range(5):
            rd.read_response()
        port = s.getsockname()[1]
    finally:
        s.close()
    objs = json_lines(srv, "/pipe", count=5)
    assert [o["path"] for o in objs] == [f"/pipe{i}" for i in range(5)]
    assert {o["client"] for o in objs} == {f"127.0.0.1:{port}"}


# --------------------------------------------------------------------------- WebSocket

async def _ws_session(port, path):
    import websockets
    async with websockets.connect(f"ws://127.0.0.1:{port}{path}") as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
        return ws.local_address[1]


async def _ws_rejected(port, path):
    import websockets
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}{path}"):
            pass
    except websockets.exceptions.InvalidStatusCode as e:
        return e.status_code
    raise AssertionError("the handshake was not rejected")


def test_json_websocket_events(serve):
    pytest.importorskip("websockets")
    srv = serve(WS_APP, "--access-log-format", "json")
    cport = asyncio.run(_ws_session(srv.port, "/echo/p%20a?x=1&secret=2"))
    objs = json_lines(srv, "/echo/p%20a", count=3)
    assert [o["event"] for o in objs] == ["wsconnecting", "wsconnect", "wsdisconnect"]
    for o in objs:
        check_time(o.pop("time"))
        event = o.pop("event")
        assert o == {"client": f"127.0.0.1:{cport}", "request": f"{event.upper()} /echo/p%20a",
                     "method": "GET", "path": "/echo/p%20a", "status": None, "size": 0}
    assert "secret" not in srv.stdout()  # as daphne: the query string is not logged


@pytest.mark.parametrize("path,status", [("/close-before-accept", 403), ("/deny", 401)])
def test_json_websocket_rejected(serve, path, status):
    pytest.importorskip("websockets")
    srv = serve(WS_APP, "--access-log-format", "json")
    assert asyncio.run(_ws_rejected(srv.port, path + "?q=1")) == status
    objs = json_lines(srv, path, count=2)
    assert [(o["event"], o["request"], o["path"]) for o in objs] == [
        ("wsconnecting", f"WSCONNECTING {path}", path),
        ("wsreject", f"WSREJECT {path}", path)]


# --------------------------------------------------------------------------- logging

LOGGING_APP = '''
    """An app whose import configures logging the way Django's LOGGING does
    (logging.config.dictConfig), routing "laurel.access" to a file of its own."""
    import logging.config
    import os

    from tests.apps.basic import app  # noqa: F401

    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "ACCESS|%(name)s|%(levelname)s|%(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler",
                              "filename": os.environ["ACCESS_FILE"],
                              "formatter": "plain"}},
        "loggers": {"laurel.access": {"handlers": ["file"], "level": "INFO",
                                      "propagate": False}},
    })
'''


def logging_app(tmp_path):
    (tmp_path / "logcfg_app.py").write_text(textwrap.dedent(LOGGING_APP))
    out = tmp_path / "routed.log"
    env = {"ACCESS_FILE": str(out), "PYTHONPATH": str(REPO)}
    return "logcfg_app:app", out, env


def test_logging_default_handler_on_stderr(serve):
    """With no logging configuration of its own, the lines go through the root handler
    laurel sets up (--log-fmt on stderr), and stdout gets none."""
    srv = serve(BASIC, "--access-log-to-logging", "--log-fmt",
                "%(name)s|%(levelname)s|%(message)s")
    r, port = raw_get(srv, "/to-logging?x=1")
    lines = wait_for(srv.stderr, "/to-logging")
    assert lines == [f'laurel.access|INFO|127.0.0.1:{port} - - ' + lines[0].split(" - - ")[1]]
    m = DAPHNE_LINE.match(lines[0].split("|", 2)[2])
    assert m and m.group(3) == "GET /to-logging?x=1" and m.group(5) == str(len(r.body))
    time.sleep(0.2)
    assert "/to-logging" not in srv.stdout()


@pytest.mark.parametrize("verbosity", ["1", "0"])
def test_logging_routed_by_logging_config(serve, tmp_path, verbosity):
    """dictConfig (what Django's LOGGING runs) decides where the lines go, even at -v 0
    where laurel's own handler shows warnings only."""
    app, out, env = logging_app(tmp_path)
    srv = serve(app, "--access-log-to-logging", "-v", verbosity, env=env, cwd=tmp_path)
    n = 20
    s = srv.connect()
    try:  # pipelined: several lines reach Python in one batch
        s.sendall(b"".join(req(f"/routed{i}%0a%22") for i in range(n)))
        rd = Reader(s)
        for _ in range(n):
            rd.read_response()
    finally:
        s.close()
    lines = wait_for(lambda: out.read_text() if out.exists() else "", "/routed", count=n)
    assert len(lines) == n, out.read_text()
    for i, ln in enumerate(lines):
        assert ln.startswith("ACCESS|laurel.access|INFO|127.0.0.1:"), ln
        m = DAPHNE_LINE.match(ln.split("|", 3)[3])
        assert m and m.group(3) == f"GET /routed{i}%0a%22", ln
    time.sleep(0.2)
    assert "/routed" not in srv.stdout() and "/routed" not in srv.stderr()


def test_logging_json_records(serve, tmp_path):
    pytest.importorskip("websockets")
    app, out, env = logging_app(tmp_path)
    srv = serve(app, "--access-log-to-logging", "--access-log-format", "json", env=env,
                cwd=tmp_path)
    srv.request("GET", '/j"son\\?a=%C3%A9')
    lines = wait_for(lambda: out.read_text() if out.exists() else "", "/j", count=1)
    obj = json.loads(lines[0].split("|", 3)[3])
    assert obj["path"] == '/j"son\\?a=%C3%A9' and obj["event"] == "http"


def test_logging_websocket_lines(serve):
    pytest.importorskip("websockets")
    srv = serve(WS_APP, "--access-log-to-logging", "--log-fmt", "%(name)s %(message)s")
    asyncio.run(_ws_session(srv.port, "/echo/logged"))
    lines = wait_for(srv.stderr, "/echo/logged", count=3)
    assert [ln.split('"')[1].split()[0] for ln in lines] == [
        "WSCONNECTING", "WSCONNECT", "WSDISCONNECT"]
    assert all(ln.startswith("laurel.access 127.0.0.1:") for ln in lines)


def test_logging_and_file_exclude_each_other():
    p = run_cli("--access-log", "x.log", "--access-log-to-logging", BASIC)
    assert p.returncode == 2
    assert p.stderr == ("laurel: error: argument --access-log-to-logging: not allowed "
                        "with argument --access-log\n")


def test_bad_format_is_a_usage_error():
    p = run_cli("--access-log-format", "xml", BASIC)
    assert p.returncode == 2
    assert p.stderr == ("laurel: error: argument --access-log-format: invalid choice: "
                        "'xml' (choose from 'daphne', 'json')\n")


def test_version_lists_libraries():
    p = run_cli("--version")
    assert p.returncode == 0 and p.stderr == ""
    lines = p.stdout.splitlines()
    assert lines[0] == "laurel 0.1.0"
    names = [ln.split()[0] for ln in lines[1:]]
    # the last line names the virtualenv in use (tests/ops/test_venv.py)
    assert names == ["CPython", "libev", "llhttp", "wslay", "OpenSSL", "venv"], p.stdout
    import platform
    assert lines[1] == f"CPython {platform.python_version()}"  # Debian's 3.11 here too
    for ln in lines[1:-1]:
        assert re.fullmatch(r"\S+ \d+\.\d+(\.\d+)?\S*( .*)?", ln), ln
