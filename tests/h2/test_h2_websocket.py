"""WebSockets over HTTP/2 (RFC 8441): an extended CONNECT with :protocol websocket
becomes a websocket scope; frames are RFC 6455 frames in the stream's DATA, built and
parsed here by hand. Also Django views and the Channels notification demo over h2."""

import json
import os
import struct
import time

import pytest
from hpack import Decoder, Encoder

from conftest import PY, REPO, _Factory
from h2helpers import (CANCEL, DATA, END_HEADERS, END_STREAM, HEADERS, RST_STREAM,
                       SETTINGS, Client, Raw, frame)

pytestmark = pytest.mark.laurel_only

WS_APP = "tests.apps.ws_app:app"


def ws_frame(opcode, payload, fin=True, mask=b"\x11\x22\x33\x44"):
    """A client (masked) RFC 6455 frame."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    return head + mask + masked


def parse_ws(buf):
    """Server (unmasked) frames in buf: [(opcode, payload)], rest."""
    out = []
    while len(buf) >= 2:
        op, n, i = buf[0] & 0x0f, buf[1] & 0x7f, 2
        assert not buf[1] & 0x80, "server frames are not masked"
        if n == 126:
            if len(buf) < 4:
                break
            n, i = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, i = struct.unpack(">Q", buf[2:10])[0], 10
        if len(buf) < i + n:
            break
        out.append((op, buf[i:i + n]))
        buf = buf[i + n:]
    return out, buf


class WS:
    """One RFC 8441 WebSocket on a raw HTTP/2 connection."""

    def __init__(self, srv, path, headers=(), sid=1, raw=None):
        self.raw = raw or Raw(srv)
        self.sid = sid
        # HPACK state belongs to the connection
        if not hasattr(self.raw, "hpack"):
            self.raw.hpack = (Encoder(), Decoder())
        self.enc, self.dec = self.raw.hpack
        hs = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
              (":path", path), (":authority", f"{srv.host}:{srv.port}"),
              ("sec-websocket-version", "13"), *headers]
        self.raw.send(frame(HEADERS, END_HEADERS, sid, self.enc.encode(hs)))
        self.status, self.headers, self.body = None, [], b""
        self.buf = b""
        self.ended = False
        self.reset = None
        self.settings = {}
        self.win = {0: 65535, sid: 65535}  # our send windows: connection, stream

    def _take(self, frames):
        for f in frames:
            if f[0] == 8 and f[2] in self.win:  # WINDOW_UPDATE
                self.win[f[2]] += int.from_bytes(f[3], "big") & 0x7fffffff
            if f[0] == SETTINGS and not f[1] & 1:
                p = f[3]
                for i in range(0, len(p), 6):
                    k, v = struct.unpack(">HI", p[i:i + 6])
                    self.settings[k] = v
            if f[2] != self.sid:
                continue
            if f[0] == HEADERS:
                hs = self.dec.decode(f[3])
                self.headers = hs
                self.status = int(dict(hs)[":status"])
            elif f[0] == DATA:
                self.buf += f[3]
                # acknowledge what we read, as a client does
                if f[3]:
                    self.raw.send(frame(8, 0, 0, struct.pack(">I", len(f[3]))) +
                                  frame(8, 0, self.sid, struct.pack(">I", len(f[3]))))
            elif f[0] == RST_STREAM:
                self.reset = int.from_bytes(f[3], "big")
            if f[1] & END_STREAM and f[0] in (HEADERS, DATA):
                self.ended = True

    def handshake(self, timeout=5):
        frames, _ = self.raw.frames(timeout, until=lambda f: f[2] == self.sid and
                                    f[0] in (HEADERS, RST_STREAM))
        self._take(frames)
        return self.status

    def send(self, opcode, payload, end=False, timeout=10):
        """One WebSocket frame in DATA frames of at most 16 KiB, within the windows."""
        data = ws_frame(opcode, payload)
        deadline = time.monotonic() + timeout
        while data:
            room = min(16384, self.win[0], self.win[self.sid], len(data))
            if room <= 0:
                assert time.monotonic() < deadline, "the server never opened its window"
                frames, _ = self.raw.frames(0.1, until=lambda f: f[0] == 8)
                self._take(frames)
                continue
            chunk, data = data[:room], data[room:]
            self.win[0] -= room
            self.win[self.sid] -= room
            self.raw.send(frame(DATA, END_STREAM if end and not data else 0, self.sid,
                                chunk))

    def recv(self, timeout=5):
        deadline = time.monotonic() + timeout
        while True:
            msgs, _ = parse_ws(self.buf)
            if msgs:
                self.buf = self.buf[self._len_first():]
                return msgs[0]
            if self.ended or time.monotonic() > deadline:
                return None
            frames, closed = self.raw.frames(0.2, until=lambda f: f[2] == self.sid)
            self._take(frames)
            if closed:
                return None

    def _len_first(self):
        b = self.buf
        n, i = b[1] & 0x7f, 2
        if n == 126:
            n, i = struct.unpack(">H", b[2:4])[0], 4
        elif n == 127:
            n, i = struct.unpack(">Q", b[2:10])[0], 10
        return i + n

    def wait_end(self, timeout=5):
        deadline = time.monotonic() + timeout
        while not self.ended and self.reset is None and time.monotonic() < deadline:
            frames, closed = self.raw.frames(0.2, until=lambda f: f[2] == self.sid and
                                             f[1] & END_STREAM)
            self._take(frames)
            if closed:
                break
        return self.ended


def result(srv, key, timeout=5):
    c = Client(srv)
    try:
        deadline = time.monotonic() + timeout
        while True:
            st, _, body = c.get(f"/result?id={key}")
            if st == 200 or time.monotonic() > deadline:
                return json.loads(body)
            time.sleep(0.05)
    finally:
        c.close()


@pytest.fixture
def wssrv(serve):
    return serve(WS_APP)


def test_settings_enable_connect_protocol(wssrv):
    ws = WS(wssrv, "/echo")
    ws.handshake()
    assert ws.settings.get(8) == 1  # SETTINGS_ENABLE_CONNECT_PROTOCOL


def test_echo_and_close_handshake(wssrv):
    ws = WS(wssrv, "/echo?id=e1")
    assert ws.handshake() == 200
    names = [k for k, v in ws.headers]
    assert "sec-websocket-accept" not in names and "upgrade" not in names
    ws.send(0x1, "héllo".encode())
    assert ws.recv() == (0x1, "héllo".encode())
    big = os.urandom(300000)  # several stream windows both ways
    ws.send(0x2, big)
    assert ws.recv(10) == (0x2, big)
    ws.send(0x8, struct.pack(">H", 1000) + b"bye")
    op, payload = ws.recv()
    assert op == 0x8 and struct.unpack(">H", payload[:2])[0] == 1000
    assert ws.wait_end()  # the engine closed: END_STREAM
    r = result(wssrv, "e1")
    assert r["disconnect"]["code"] == 1000
    assert [(m["type"], m.get("text_len"), m.get("bytes_len")) for m in r["received"]] == [
        ("websocket.receive", 5, None), ("websocket.receive", None, 300000)]
    wssrv.wait_output(r'"WSCONNECT /echo"')


def test_scope(wssrv):
    ws = WS(wssrv, "/scope?x=1", headers=[("sec-websocket-protocol", "chat, superchat"),
                                        ("origin", "http://example.com")])
    assert ws.handshake() == 200
    op, payload = ws.recv()
    s = json.loads(payload)
    assert s["type"] == "websocket" and s["http_version"] == "2"
    assert s["scheme"] == "ws" and s["path"] == "/scope" and s["query_string"] == "x=1"
    assert s["subprotocols"] == ["chat", "superchat"]
    assert "method" not in s
    hs = dict(s["headers"])
    assert hs["host"] == f"127.0.0.1:{wssrv.port}" and hs["origin"] == "http://example.com"


def test_subprotocol_accepted(wssrv):
    ws = WS(wssrv, "/subprotocol?sp=superchat",
            headers=[("sec-websocket-protocol", "chat, superchat")])
    assert ws.handshake() == 200
    assert ("sec-websocket-protocol", "superchat") in ws.headers
    assert json.loads(ws.recv()[1]) == ["chat", "superchat"]


def test_close_before_accept_is_403(wssrv):
    ws = WS(wssrv, "/close-before-accept")
    assert ws.handshake() == 403
    ws.wait_end()
    assert ws.ended


def test_denial_response(wssrv):
    ws = WS(wssrv, "/deny?status=401")
    assert ws.handshake() == 401
    ws.wait_end()
    assert (b"denied: nope!") == ws.buf
    assert ("x-deny", "yes") in ws.headers


def test_client_reset_is_a_disconnect(wssrv):
    ws = WS(wssrv, "/echo?id=r1")
    assert ws.handshake() == 200
    ws.send(0x1, b"x")
    assert ws.recv() == (0x1, b"x")
    ws.raw.send(frame(RST_STREAM, 0, 1, struct.pack(">I", CANCEL)))
    r = result(wssrv, "r1")
    assert r["disconnect"]["code"] == 1006


def test_unmasked_client_frame_fails_the_socket(wssrv):
    """The same RFC 6455 checks as over HTTP/1.1: an unmasked client frame is a
    protocol error (close 1002)."""
    ws = WS(wssrv, "/echo?id=m1")
    assert ws.handshake() == 200
    ws.raw.send(frame(DATA, 0, 1, bytes([0x81, 0x02]) + b"hi"))
    op, payload = ws.recv()
    assert op == 0x8 and struct.unpack(">H", payload[:2])[0] == 1002


def test_two_websockets_and_requests_on_one_connection(wssrv):
    ws1 = WS(wssrv, "/echo", sid=1)
    assert ws1.handshake() == 200
    ws2 = WS(wssrv, "/echo", sid=3, raw=ws1.raw)
    frames, _ = ws1.raw.frames(2, until=lambda f: f[2] == 3 and f[0] == HEADERS)
    ws2._take(frames)
    assert ws2.status == 200
    ws2.send(0x1, b"two")
    ws1.send(0x1, b"one")
    frames, _ = ws1.raw.frames(2)
    ws1._take(frames)
    ws2._take(frames)
    assert parse_ws(ws1.buf)[0] == [(0x1, b"one")]
    assert parse_ws(ws2.buf)[0] == [(0x1, b"two")]


def test_sigterm_closes_websockets_1012(serve):
    """SIGTERM: the WebSocket is closed with 1012 (as over HTTP/1.1) and the server
    exits 0."""
    srv = serve(WS_APP)
    ws = WS(srv, "/echo")
    assert ws.handshake() == 200
    srv.signal(15)
    op, payload = ws.recv(8)
    assert op == 0x8 and struct.unpack(">H", payload[:2])[0] == 1012
    ws.send(0x8, struct.pack(">H", 1012))
    assert srv.wait_exit(15) == 0
    srv.stopped = True


# ---- Django and Channels over h2 ----

EXAMPLE = REPO / "examples" / "notifications"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if not (EXAMPLE / "inbox").is_dir():
        pytest.skip("no notifications example")
    import subprocess
    db = tmp_path_factory.mktemp("h2-notifications-db") / "db.sqlite3"
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "NOTIFICATIONS_REDIS_URL")}
    env.update({"NOTIFICATIONS_DB": str(db), "PYTHONDONTWRITEBYTECODE": "1"})
    r = subprocess.run([PY, "manage.py", "demo_setup"], cwd=EXAMPLE, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    factory = _Factory(tmp_path_factory.mktemp("h2-site"))
    srv = factory("notifications.asgi:application", cwd=EXAMPLE, env=env, ready_timeout=20)
    yield srv
    problems = factory.finalize()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_django_views_over_h2(site):
    from site_client import SiteClient
    demo = SiteClient(site).login("demo")
    c = Client(site)
    st, headers, body = c.get("/")
    assert st == 200 and b"<html" in body.lower()
    st, headers, body = c.get("/", headers=[(b"cookie", demo.cookie_header().encode())])
    assert st == 200 and b"demo" in body
    c.close()


def test_channels_notification_over_h2(site):
    from site_client import SiteClient
    demo = SiteClient(site).login("demo")
    ws = WS(site, "/notifications/", headers=[("cookie", demo.cookie_header()),
                                             ("origin", demo.origin)])
    assert ws.handshake() == 200
    text = f"h2-note-{time.monotonic_ns()}"
    demo.notify(text)
    op, payload = ws.recv(10)
    assert op == 0x1 and json.loads(payload) == {"text": text}
    # anonymous: the consumer closes before accepting: 403
    anon = WS(site, "/notifications/", headers=[("origin", demo.origin)])
    assert anon.handshake() == 403
