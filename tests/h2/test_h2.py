"""HTTP/2 with prior knowledge (h2c): requests as ASGI cycles, flow control, limits,
shutdown (docs/http2.md). Real clients: curl, nghttp, h2load and the h2 library."""

import json
import shutil
import signal
import socket
import subprocess
import time

import h2.events
import h2.settings
import pytest

from conftest import PY
from h2helpers import (CANCEL, CONTINUATION, DATA, ENHANCE_YOUR_CALM, END_HEADERS,
                       END_STREAM, GOAWAY, HEADERS, PREFACE, PROTOCOL_ERROR, RST_STREAM,
                       Client, Raw, app_state, frame, goaway_code, request_block,
                       rst_codes)

pytestmark = pytest.mark.laurel_only

APP = "tests.apps.h2_app:app"


def need(tool):
    if not shutil.which(tool):
        pytest.skip(f"{tool} not installed")


def curl(srv, path, *args, timeout=20):
    need("curl")
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "-", "-D",
                        "/dev/stderr", *args, srv.url(path)],
                       capture_output=True, timeout=timeout)
    return r


@pytest.fixture
def h2srv(serve):
    return serve(APP)


# ---- curl ----

def test_curl_get(h2srv):
    r = curl(h2srv, "/hello")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"Hello, world!"
    head = r.stderr.decode()
    assert head.startswith("HTTP/2 200")
    assert "content-length: 13" in head and "server: laurel" in head and "date: " in head


def test_curl_post_body(h2srv):
    body = bytes(range(256)) * 1000
    need("curl")
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--data-binary", "@-",
                        h2srv.url("/echo")], input=body, capture_output=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert r.stdout == body


def test_curl_head(h2srv):
    r = curl(h2srv, "/hello", "-I")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"HTTP/2 200")
    assert b"content-length: 13" in r.stdout


def test_curl_large_response(h2srv):
    n = 3 * 1024 * 1024 + 17
    r = curl(h2srv, f"/big?{n}")
    assert r.returncode == 0, r.stderr
    chunk = bytes(range(256)) * 256
    assert len(r.stdout) == n
    assert r.stdout == (chunk * 64)[:n]


def test_access_log_line(h2srv):
    curl(h2srv, "/hello?x=1")
    h2srv.wait_output(r'"GET /hello\?x=1" 200 13')


# ---- nghttp, h2load ----

def test_nghttp_verbose(serve):
    need("nghttp")
    srv = serve(APP, "--h2-max-concurrent-streams", "42")
    r = subprocess.run(["nghttp", "-nv", srv.url("/hello")], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SETTINGS_MAX_CONCURRENT_STREAMS(0x03):42" in r.stdout
    assert ":status: 200" in r.stdout
    assert "recv DATA frame <length=13, flags=0x01" in r.stdout


def test_h2load_quick(h2srv):
    need("h2load")
    r = subprocess.run(["h2load", "-n", "1000", "-c", "4", "-m", "100",
                        h2srv.url("/hello")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1000 succeeded, 0 failed, 0 errored, 0 timeout" in r.stdout, r.stdout
    assert "status codes: 1000 2xx" in r.stdout


# ---- the scope and responses ----

def test_scope(h2srv):
    c = Client(h2srv)
    st, _, body = c.get("/scope?a=1&b=%20", headers=[(b"x-one", b"1"), (b"x-two", b"2"),
                                                   (b"x-one", b"3")])
    assert st == 200
    s = json.loads(body)
    assert s["type"] == "http" and s["http_version"] == "2"
    assert s["method"] == "GET" and s["scheme"] == "http"
    assert s["path"] == "/scope" and s["raw_path"] == "/scope"
    assert s["query_string"] == "a=1&b=%20"
    assert s["root_path"] == ""
    assert s["headers"][0] == ["host", f"127.0.0.1:{h2srv.port}"]
    assert [h for h in s["headers"] if h[0].startswith("x-")] == [
        ["x-one", "1"], ["x-two", "2"], ["x-one", "3"]]
    assert not any(h[0].startswith(":") for h in s["headers"])
    assert s["client"][0] == "127.0.0.1" and s["server"] == ["127.0.0.1", h2srv.port]
    # a host header of the client's own is kept and not doubled
    st, _, body = c.get("/scope", headers=[(b"x-a", b"1"), (b"host", c.authority)])
    hs = json.loads(body)["headers"]
    assert [h for h in hs if h[0] == "host"] == [["host", c.authority.decode()]]
    assert hs.index(["host", c.authority.decode()]) == 1  # where the client put it
    c.close()


def test_percent_path(h2srv):
    c = Client(h2srv)
    st, _, body = c.get("/sc%6Fpe")
    s = json.loads(body)
    assert s["path"] == "/scope" and s["raw_path"] == "/sc%6Fpe"
    c.close()


def test_connection_specific_response_headers_dropped(h2srv):
    c = Client(h2srv)
    st, headers, body = c.get("/conn-headers")
    assert st == 200 and body == b"ok"
    names = [k for k, v in headers]
    for bad in (b"connection", b"keep-alive", b"transfer-encoding", b"upgrade"):
        assert bad not in names
    assert (b"x-mixed", b"Case") in headers
    c.close()


def test_streaming_response_without_length(h2srv):
    c = Client(h2srv)
    st, headers, body = c.get("/stream")
    assert st == 200
    assert body == b"".join(b"part%d\n" % i for i in range(5))
    assert b"content-length" not in dict(headers)
    c.close()


def test_head_and_no_body_statuses(h2srv):
    c = Client(h2srv)
    st, headers, body = c.get("/hello", method="HEAD")
    assert st == 200 and body == b"" and dict(headers)[b"content-length"] == b"13"
    st, headers, body = c.get("/status?204")
    assert st == 204 and body == b""
    c.close()


def test_app_error_is_500(h2srv):
    c = Client(h2srv)
    st, _, body = c.get("/raise")
    assert st == 500
    st, _, body = c.get("/hello")  # the connection goes on
    assert st == 200
    c.close()


def test_many_streams_interleaved(h2srv):
    c = Client(h2srv)
    sids = [c.request("/echo", method="POST", body=b"", end=False) for i in range(30)]
    rest = {s: b"x" * (i * 1000) for i, s in enumerate(sids)}
    deadline = time.monotonic() + 10
    while rest and time.monotonic() < deadline:
        for s in list(rest):
            rest[s] = c.send_body(s, rest[s])
            if not rest[s]:
                del rest[s]
        c.pump(0.05)
    assert c.wait(lambda: all(c.stream(s)["ended"] for s in sids), 10)
    for i, s in enumerate(sids):
        assert c.response(s)[2] == b"x" * (i * 1000)
    c.close()


# ---- flow control ----

def test_request_window_follows_the_app(h2srv):
    """The app takes its body slowly: the client's window closes and reopens only as
    the app reads; the whole body arrives."""
    c = Client(h2srv)
    body = b"y" * (600 * 1024)
    sid = c.request("/slow-echo", method="POST", body=b"", end=False)
    rest = c.send_body(sid, body, end=False)
    assert len(rest) >= len(body) - 65535  # stream window: 65535 at most went out
    t0 = time.monotonic()
    while rest and time.monotonic() - t0 < 30:
        c.pump(0.05)
        rest = c.send_body(sid, rest, end=False)
    assert not rest
    c.conn.end_stream(sid)
    c.flush()
    assert c.wait(lambda: c.stream(sid)["ended"], 30)
    assert c.response(sid)[2] == str(len(body)).encode()
    # 600 KiB through a 64 KiB window taken at one read per 50 ms: several round trips
    assert time.monotonic() - t0 > 0.2
    c.close()


def test_unread_body_keeps_window_shut(h2srv):
    """/wait never reads... except that it does call receive(): use /sleep, which
    never calls receive(): no WINDOW_UPDATE for the stream arrives."""
    c = Client(h2srv)
    sid = c.request("/sleep?1.5", method="POST", body=b"", end=False)
    rest = c.send_body(sid, b"z" * 200000, end=False)
    assert rest and c.conn.local_flow_control_window(sid) == 0
    c.pump(0.5)
    ups = [e for e in c.events if isinstance(e, h2.events.WindowUpdated)
           and e.stream_id == sid]
    assert ups == []
    assert c.conn.local_flow_control_window(sid) == 0
    c.close()


def test_response_waits_for_client_window(h2srv):
    """The client opens no window: the server sends 65535 bytes and stops; the app's
    send() waits; once the client acknowledges, the rest follows."""
    c = Client(h2srv, auto_ack=False)
    n = 2 * 1024 * 1024
    sid = c.request(f"/big?{n}")
    c.wait(lambda: len(c.stream(sid)["data"]) >= 65535, 5)
    c.pump(0.5)
    assert len(c.stream(sid)["data"]) == 65535
    st = app_state(h2srv)
    assert st["running"] >= 2  # /big is parked in send(), plus /state itself
    c.auto_ack = True
    got = len(c.stream(sid)["data"])
    c.conn.acknowledge_received_data(got, sid)
    c.flush()
    assert c.wait(lambda: c.stream(sid)["ended"], 20)
    assert len(c.stream(sid)["data"]) == n
    c.close()


# ---- trailers, resets ----

def test_request_trailers_are_ignored(h2srv):
    """ASGI has no request trailers: they are dropped, the body ends with them."""
    c = Client(h2srv)
    sid = c.request("/echo", method="POST", body=b"abc", trailers=[(b"x-checksum", b"1")])
    assert c.wait(lambda: c.stream(sid)["ended"], 5)
    st, _, body = c.response(sid)
    assert st == 200 and body == b"abc"
    c.close()


def test_client_reset_disconnects_the_app(h2srv):
    before = app_state(h2srv)["disconnects"]
    c = Client(h2srv)
    sid = c.request("/wait")
    c.pump(0.2)
    c.conn.reset_stream(sid, error_code=CANCEL)
    c.flush()
    deadline = time.monotonic() + 5
    while app_state(h2srv)["disconnects"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app_state(h2srv)["disconnects"] == before + 1
    c.close()


def test_connection_loss_disconnects_every_stream(h2srv):
    before = app_state(h2srv)["disconnects"]
    c = Client(h2srv)
    for _ in range(3):
        c.request("/wait")
    c.pump(0.3)
    c.close()
    deadline = time.monotonic() + 5
    while app_state(h2srv)["disconnects"] < before + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app_state(h2srv)["disconnects"] == before + 3
    assert app_state(h2srv)["running"] == 1  # only /state itself


# ---- the CLI ----

def test_cli_limits_in_settings(serve):
    srv = serve(APP, "--h2-max-concurrent-streams", "7", "--h2-max-header-list-size",
                "9000")
    c = Client(srv)
    c.wait(lambda: c.remote_settings, 5)
    s = c.remote_settings
    assert s[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 7
    assert s[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] == 9000
    c.close()


def test_more_streams_than_allowed_are_refused(serve):
    srv = serve(APP, "--h2-max-concurrent-streams", "3")
    r = Raw(srv)
    r.frames(0.3)
    blocks = b"".join(frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1,
                            request_block(srv, "/wait")) for i in range(5))
    r.send(blocks)
    frames, closed = r.frames(1.5)
    codes = rst_codes(frames)
    assert codes.get(7) == 7 and codes.get(9) == 7  # REFUSED_STREAM
    assert 1 not in codes and not closed
    r.close()
    # the refused ones never reached the app: three /wait ran and were disconnected
    time.sleep(0.3)
    assert app_state(srv)["paths"]["/wait"] == 3


def test_no_http2_switch(serve):
    srv = serve(APP, "--no-http2")
    s = socket.create_connection((srv.host, srv.port), timeout=5)
    s.sendall(PREFACE)
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    # the preface is an HTTP/1.1 request line of version 2.0 to llhttp's guard
    assert data.startswith(b"HTTP/1.1 505 ")
    s.close()


def test_upgrade_h2c_is_answered_as_http11(h2srv):
    """RFC 7540's Upgrade: h2c (removed by RFC 9113) is not taken: curl --http2 on an
    http:// URL gets its answer over HTTP/1.1."""
    need("curl")
    r = subprocess.run(["curl", "-sS", "--http2", "-D", "/dev/stderr", h2srv.url("/hello")],
                       capture_output=True, timeout=20)
    assert r.returncode == 0 and r.stdout == b"Hello, world!"
    assert r.stderr.startswith(b"HTTP/1.1 200")


def test_idle_connection_goaway(serve):
    srv = serve(APP, "--keep-alive-timeout", "1")
    r = Raw(srv)
    frames, closed = r.frames(4)
    assert closed and goaway_code(frames) == 0
    r.close()


def test_goaway_on_sigterm_finishes_streams(serve):
    srv = serve(APP)
    r = Raw(srv)
    r.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, request_block(srv, "/sleep?1")))
    r.frames(0.3)
    srv.signal(signal.SIGTERM)
    frames, closed = r.frames(8)
    kinds = [f[0] for f in frames]
    assert GOAWAY in kinds and closed
    g = frames[kinds.index(GOAWAY)]
    assert int.from_bytes(g[3][:4], "big") == 1 and goaway_code(frames) == 0
    # the stream in flight was answered after the GOAWAY, before the close
    data = [f for f in frames if f[0] == DATA and f[2] == 1]
    assert data and data[-1][3] == b"slept" and data[-1][1] & END_STREAM
    assert kinds.index(GOAWAY) < kinds.index(DATA)
    assert srv.wait_exit(10) == 0
    srv.stopped = True


def test_cookie_crumbs_are_joined(h2srv):
    """RFC 9113 8.2.3: cookie crumbs in separate fields reach the app as one cookie
    header joined with "; " (Django would join repeated fields with "," and lose the
    session), in the place of the first."""
    c = Client(h2srv)
    try:
        status, _, body = c.get("/scope", headers=[(b"cookie", b"a=1"), (b"x-one", b"1"),
                                                   (b"cookie", b"sessionid=abc"),
                                                   (b"cookie", b"c=3")])
    finally:
        c.close()
    assert status == 200
    headers = json.loads(body)["headers"]
    cookies = [v for k, v in headers if k == "cookie"]
    assert cookies == ["a=1; sessionid=abc; c=3"]
    names = [k for k, v in headers if k in ("cookie", "x-one")]
    assert names == ["cookie", "x-one"]
