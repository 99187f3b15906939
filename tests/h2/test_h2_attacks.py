"""HTTP/2 attacks (security.md "TLS and HTTP/2", docs/http2.md "Attacks"): each one
ends with the attacker's connection closed (GOAWAY with the code docs/http2.md names)
or its stream refused, while an honest client on the same server keeps its answers
during the attack, and no application task is left behind."""

import struct
import time

import h2.settings
import pytest
from hpack import Encoder

from h2helpers import (CANCEL, CONTINUATION, DATA, ENHANCE_YOUR_CALM, END_HEADERS,
                       END_STREAM, GOAWAY, HEADERS, PING, PRIORITY, PROTOCOL_ERROR,
                       REFUSED_STREAM, RST_STREAM, Client, Raw, app_state, frame,
                       goaway_code, request_block, rst_codes, settings_frame)

pytestmark = pytest.mark.laurel_only

APP = "tests.apps.h2_app:app"


@pytest.fixture
def h2srv(serve):
    return serve(APP)


def honest(srv):
    """One request on a connection of its own: the server still serves others."""
    c = Client(srv)
    try:
        st, _, body = c.get("/hello", timeout=5)
        return st, body
    finally:
        c.close()


def assert_no_leftover_tasks(srv):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        st = app_state(srv)
        if st["running"] == 1:  # /state itself
            return
        time.sleep(0.05)
    assert app_state(srv)["running"] == 1


def flood(srv, r, chunks, what):
    """Sends the attack in chunks with an honest request between them; returns the
    frames the attacker got back and whether its connection was closed."""
    for chunk in chunks:
        if not r.send(chunk):
            break
        assert honest(srv) == (200, b"Hello, world!"), f"honest client failed during {what}"
    frames, closed = r.frames(5, until=lambda f: False)
    assert honest(srv) == (200, b"Hello, world!")
    return frames, closed


def test_rapid_reset(h2srv):
    r = Raw(h2srv)
    r.frames(0.2)
    enc = Encoder()
    chunks, sid = [], 1
    for _ in range(10):
        b = b""
        for _ in range(50):
            b += frame(HEADERS, END_HEADERS, sid, request_block(h2srv, "/wait", encoder=enc))
            b += frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL))
            sid += 2
        chunks.append(b)
    frames, closed = flood(h2srv, r, chunks, "rapid reset")
    assert goaway_code(frames) == ENHANCE_YOUR_CALM and closed
    assert_no_leftover_tasks(h2srv)


def test_reset_streams_are_freed(h2srv):
    """Below the cap, reset streams cancel their apps: nothing grows."""
    before = app_state(h2srv)
    c = Client(h2srv)
    for _ in range(50):
        sid = c.request("/wait")
        c.conn.reset_stream(sid, error_code=CANCEL)
        c.flush()
    c.pump(0.3)
    assert not c.closed
    deadline = time.monotonic() + 5
    while app_state(h2srv)["disconnects"] < before["disconnects"] + 50 and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    assert app_state(h2srv)["disconnects"] - before["disconnects"] <= 50
    assert_no_leftover_tasks(h2srv)
    assert c.get("/hello")[0] == 200
    c.close()


def test_continuation_flood(h2srv):
    r = Raw(h2srv)
    r.frames(0.2)
    block = request_block(h2srv, "/wait")
    data = frame(HEADERS, 0, 1, block)
    filler = Encoder().encode([("x-fill", "v" * 10)])
    chunks = [data] + [b"".join(frame(CONTINUATION, 0, 1, filler) for _ in range(20))
                       for _ in range(5)]
    frames, closed = flood(h2srv, r, chunks, "CONTINUATION flood")
    assert closed
    # nghttp2 (Debian's CVE-2024-27316 fix) stops after a few CONTINUATIONs
    assert goaway_code(frames) == ENHANCE_YOUR_CALM
    assert "/wait" not in app_state(h2srv)["paths"]


def test_hpack_bomb_answers_431(h2srv):
    r = Raw(h2srv)
    r.frames(0.2)
    enc = Encoder()
    big = "A" * 4000
    # 20 references to one 4000-byte table entry: ~80 KB decoded from ~4 KB sent
    block = request_block(h2srv, "/echo", extra=[("x-bomb", big)] * 20, encoder=enc)
    assert len(block) < 5000
    r.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
    frames, closed = r.frames(3, until=lambda f: f[0] == DATA and f[1] & END_STREAM)
    heads = [f for f in frames if f[0] == HEADERS and f[2] == 1]
    assert heads and not closed
    from hpack import Decoder
    hs = dict(Decoder().decode(heads[0][3]))
    assert hs[":status"] == "431"
    assert "/echo" not in app_state(h2srv)["paths"]  # the bomb never reached the app
    assert honest(h2srv)[0] == 200


def test_hpack_bombs_repeated_close_the_connection(h2srv):
    r = Raw(h2srv)
    r.frames(0.2)
    enc = Encoder()
    chunks, sid = [], 1
    for _ in range(3):
        b = b""
        for _ in range(25):
            b += frame(HEADERS, END_HEADERS | END_STREAM, sid,
                       request_block(h2srv, "/hello", extra=[("x-bomb", "B" * 4000)] * 20,
                                     encoder=enc))
            sid += 2
        chunks.append(b)
    frames, closed = flood(h2srv, r, chunks, "HPACK bombs")
    assert goaway_code(frames) == ENHANCE_YOUR_CALM and closed


def test_header_list_limit_from_cli(serve):
    srv = serve(APP, "--h2-max-header-list-size", "2000")
    c = Client(srv)
    st, _, _ = c.get("/hello", headers=[(b"x-big", b"v" * 1500)])
    assert st == 200
    st, _, _ = c.get("/hello", headers=[(b"x-big", b"v" * 2100)])
    assert st == 431
    c.close()


def test_field_count_and_body_limits_from_cli(serve):
    srv = serve(APP, "--limit-request-fields", "5", "--limit-request-body", "1000")
    c = Client(srv)
    few = [(b"x-%d" % i, b"v") for i in range(5)]
    assert c.get("/hello", headers=few)[0] == 200
    assert c.get("/hello", headers=few + [(b"x-more", b"v")])[0] == 431
    assert c.get("/echo", method="POST", body=b"a" * 1000)[2] == b"a" * 1000
    assert c.get("/echo", method="POST", body=b"a" * 1001)[0] == 413
    assert c.get("/hello")[0] == 200
    c.close()


@pytest.mark.parametrize("kind", ["settings", "ping", "priority", "empty-data"])
def test_control_frame_floods(h2srv, kind):
    r = Raw(h2srv)
    r.frames(0.2)
    if kind == "settings":
        one, n = settings_frame([(4, 65535)]), 150
    elif kind == "ping":
        one, n = frame(PING, 0, 0, b"12345678"), 150
    elif kind == "priority":
        one, n = frame(PRIORITY, 0, 3, struct.pack(">IB", 0, 15)), 600
    else:
        r.send(frame(HEADERS, END_HEADERS, 1, request_block(h2srv, "/wait")))
        one, n = frame(DATA, 0, 1, b""), 150
    chunks = [one * (n // 5)] * 5
    frames, closed = flood(h2srv, r, chunks, f"{kind} flood")
    assert goaway_code(frames) == ENHANCE_YOUR_CALM and closed
    assert_no_leftover_tasks(h2srv)


def test_zero_window_stall_resets_the_stream(serve):
    srv = serve(APP, "--h2-send-timeout", "1")
    c = Client(srv, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    c.pump(0.2)
    sid = c.request("/big?4000000")
    assert c.wait(lambda: c.stream(sid)["reset"] is not None, 6)
    assert c.stream(sid)["reset"] == CANCEL
    assert c.stream(sid)["headers"] is not None and c.stream(sid)["data"] == b""
    assert_no_leftover_tasks(srv)
    assert honest(srv)[0] == 200
    c.close()


def test_peer_that_reads_nothing_is_closed(serve):
    """Windows wide open, but the client never reads its socket: once the kernel's
    buffers are full nothing moves, and after --h2-send-timeout the connection is
    closed and the app freed."""
    srv = serve(APP, "--h2-send-timeout", "1")
    c = Client(srv, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    c.conn.increment_flow_control_window(2**31 - 1 - 65535)
    c.flush()
    c.pump(0.2)
    c.request("/big?200000000")
    time.sleep(4)
    assert_no_leftover_tasks(srv)
    # what the kernel held is readable, then the close
    c.sock.settimeout(5)
    total = 0
    while True:
        try:
            chunk = c.sock.recv(1 << 20)
        except (ConnectionError, TimeoutError):
            break
        if not chunk:
            break
        total += len(chunk)
    assert 0 < total < 200000000
    assert honest(srv)[0] == 200


def test_content_length_mismatch(h2srv):
    before = app_state(h2srv)
    r = Raw(h2srv)
    r.send(frame(HEADERS, END_HEADERS, 1,
                 request_block(h2srv, "/echo", "POST", extra=[("content-length", "10")])) +
           frame(DATA, END_STREAM, 1, b"12345"))
    frames, closed = r.frames(2, until=lambda f: f[0] == RST_STREAM)
    assert rst_codes(frames).get(1) == PROTOCOL_ERROR and not closed
    assert not any(f[0] == HEADERS for f in frames)  # no response: the app got no body
    time.sleep(0.2)
    assert app_state(h2srv)["disconnects"] == before["disconnects"] + 1
    r.close()


@pytest.mark.parametrize("name,value", [("connection", "keep-alive"),
                                        ("transfer-encoding", "chunked"),
                                        ("upgrade", "websocket"), ("te", "gzip")])
def test_connection_specific_request_headers_refused(h2srv, name, value):
    r = Raw(h2srv)
    r.send(frame(HEADERS, END_HEADERS | END_STREAM, 1,
                 request_block(h2srv, "/echo", extra=[(name, value)])))
    frames, closed = r.frames(2, until=lambda f: f[0] == RST_STREAM)
    assert rst_codes(frames).get(1) == PROTOCOL_ERROR
    assert "/echo" not in app_state(h2srv)["paths"]  # nothing reached the app
    r.close()


def test_refused_streams_count_towards_the_cap(serve):
    """A client that ignores SETTINGS_MAX_CONCURRENT_STREAMS and keeps opening streams
    gets REFUSED_STREAM each time, then GOAWAY ENHANCE_YOUR_CALM."""
    srv = serve(APP, "--h2-max-concurrent-streams", "2")
    r = Raw(srv)
    r.frames(0.2)
    enc = Encoder()
    chunks, sid = [], 1
    for _ in range(5):
        b = b""
        for _ in range(60):
            b += frame(HEADERS, END_HEADERS | END_STREAM, sid,
                       request_block(srv, "/wait", encoder=enc))
            sid += 2
        chunks.append(b)
    frames, closed = flood(srv, r, chunks, "refused streams")
    codes = rst_codes(frames)
    assert REFUSED_STREAM in codes.values()
    assert goaway_code(frames) == ENHANCE_YOUR_CALM and closed
    assert_no_leftover_tasks(srv)
