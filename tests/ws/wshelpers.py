"""Helpers for the WebSocket black-box tests: a raw RFC 6455 client (frames written by
hand, masked as a client must), the shared module-scoped server of tests.apps.ws_app,
and /proc memory readings.

Test modules import from here with ``from wshelpers import ...`` (and the fixture
``wsserver`` by importing it into the module namespace).
"""

import base64
import hashlib
import json
import os
import socket
import struct
import time
import urllib.parse

import pytest

from conftest import Reader, _Factory, proc_status, read_until_close, rss_kb  # noqa: F401

WS_APP = "tests.apps.ws_app:app"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


@pytest.fixture(scope="module")
def wsserver(tmp_path_factory):
    """One server of tests.apps.ws_app:app with default flags, shared by a module."""
    factory = _Factory(tmp_path_factory.mktemp("wsserver"))
    s = factory(WS_APP)
    yield s
    problems = factory.finalize()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# --------------------------------------------------------------------------- handshake

def new_key(nbytes=16):
    return base64.b64encode(os.urandom(nbytes)).decode()


def accept_value(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def handshake_bytes(path="/echo", key=None, version="13", protocols=None, headers=(),
                    method="GET", http="1.1", upgrade="websocket", connection="Upgrade",
                    host="t"):
    """The bytes of an upgrade request. ``None`` for key/version/upgrade/connection
    leaves that header out; ``headers`` are extra (name, value) str pairs."""
    lines = [f"{method} {path} HTTP/{http}"]
    if host is not None:
        lines.append(f"Host: {host}")
    if upgrade is not None:
        lines.append(f"Upgrade: {upgrade}")
    if connection is not None:
        lines.append(f"Connection: {connection}")
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    if protocols is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}")
    for n, v in headers:
        lines.append(f"{n}: {v}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# --------------------------------------------------------------------------- frames

def frame(opcode, payload=b"", fin=True, mask=True, rsv=0, mask_key=None, length=None):
    """One frame as a client sends it. ``length`` overrides the declared payload length
    (to declare more than is sent)."""
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload) if length is None else length
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    return head + key + apply_mask(payload, key)


def apply_mask(data, key):
    if not data:
        return b""
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def close_payload(code=None, reason=b""):
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode()
    return struct.pack("!H", code) + reason


def parse_close(payload):
    """(code, reason str) of a close frame's payload; (None, "") when empty."""
    if len(payload) < 2:
        return None, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")


class Frame:
    def __init__(self, fin, rsv, opcode, payload, masked):
        self.fin, self.rsv, self.opcode, self.payload, self.masked = (fin, rsv, opcode,
                                                                      payload, masked)

    def __repr__(self):
        return (f"<Frame op={self.opcode:#x} fin={self.fin} rsv={self.rsv} "
                f"masked={self.masked} len={len(self.payload)} {self.payload[:60]!r}>")


class WSClosed(Exception):
    """The TCP connection ended (EOF or reset) while a frame was expected."""


class HandshakeFailed(Exception):
    def __init__(self, response):
        super().__init__(f"handshake answered {response.status}: {response!r}")
        self.response = response


class RawWS:
    """A WebSocket client on a raw socket: every frame is written by hand."""

    def __init__(self, srv, path="/echo", timeout=5, protocols=None, headers=(), key=None,
                 connect=True):
        self.srv = srv
        self.path = path
        self.timeout = timeout
        self.key = key or new_key()
        self.sock = srv.connect(timeout)
        self.sockname = self.sock.getsockname()
        self.reader = Reader(self.sock)
        self.response = None
        if connect:
            self.handshake(protocols=protocols, headers=headers)

    # -- handshake

    def handshake(self, protocols=None, headers=(), timeout=None):
        self.sock.sendall(handshake_bytes(self.path, self.key, protocols=protocols,
                                          headers=headers))
        r = self.reader.read_response(timeout=timeout or self.timeout)
        self.response = r
        if r.status != 101:
            raise HandshakeFailed(r)
        assert r.header("sec-websocket-accept") == accept_value(self.key), r
        return r

    # -- writing

    def send_raw(self, data):
        self.sock.sendall(data)

    def send_frame(self, opcode, payload=b"", fin=True, mask=True, rsv=0):
        self.sock.sendall(frame(opcode, payload, fin=fin, mask=mask, rsv=rsv))

    def send_text(self, text):
        self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text)

    def send_bytes(self, data):
        self.send_frame(OP_BINARY, data)

    def send_close(self, code=1000, reason=b""):
        self.send_frame(OP_CLOSE, close_payload(code, reason))

    # -- reading

    def _need(self, n, deadline):
        while len(self.reader.buf) < n:
            if self.reader.eof:
                raise WSClosed(f"connection closed; have {self.reader.buf[:100]!r}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout(f"no complete frame; have {self.reader.buf[:100]!r}")
            self.reader._fill(left)

    def recv_frame(self, timeout=None):
        """The next frame from the server; socket.timeout if none comes, WSClosed at
        EOF."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._need(2, deadline)
        b0, b1 = self.reader.buf[0], self.reader.buf[1]
        n, pos = b1 & 0x7F, 2
        if n == 126:
            self._need(4, deadline)
            n, pos = struct.unpack("!H", self.reader.buf[2:4])[0], 4
        elif n == 127:
            self._need(10, deadline)
            n, pos = struct.unpack("!Q", self.reader.buf[2:10])[0], 10
        masked = bool(b1 & 0x80)
        if masked:
            self._need(pos + 4, deadline)
            key = self.reader.buf[pos:pos + 4]
            pos += 4
        self._need(pos + n, deadline)
        payload = bytes(self.reader.buf[pos:pos + n])
        if masked:
            payload = apply_mask(payload, key)
        self.reader.buf = self.reader.buf[pos + n:]
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, payload, masked)

    def recv_message(self, timeout=None, answer_pings=True):
        """(opcode, payload) of the next data message (continuations joined); pings are
        answered; a close frame raises AssertionError with its code."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        parts, op = [], None
        while True:
            f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if f.opcode == OP_PING:
                if answer_pings:
                    self.send_frame(OP_PONG, f.payload)
                continue
            if f.opcode == OP_PONG:
                continue
            if f.opcode == OP_CLOSE:
                raise AssertionError(f"server closed {parse_close(f.payload)} while a "
                                     "message was expected")
            if op is None:
                op = f.opcode
            parts.append(f.payload)
            if f.fin:
                return op, b"".join(parts)

    def recv_text(self, timeout=None):
        op, data = self.recv_message(timeout)
        assert op == OP_TEXT, (op, data[:100])
        return data.decode()

    def recv_bytes(self, timeout=None):
        op, data = self.recv_message(timeout)
        assert op == OP_BINARY, (op, data[:100])
        return data

    def recv_json(self, timeout=None):
        return json.loads(self.recv_text(timeout))

    def expect_close(self, timeout=None, reply=True):
        """Reads frames until a close frame; returns (code, reason, data frames seen
        before it). Replies with a close frame (echoing the code) unless reply=False."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        seen = []
        while True:
            try:
                f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            except WSClosed:
                raise AssertionError(f"TCP closed without a close frame; frames: {seen}")
            except socket.timeout:
                raise AssertionError(f"no close frame within the timeout; frames: {seen}")
            if f.opcode == OP_CLOSE:
                code, reason = parse_close(f.payload)
                if reply:
                    try:
                        self.send_frame(OP_CLOSE, f.payload[:2])
                    except OSError:
                        pass
                return code, reason, seen
            seen.append(f)

    def eof(self, timeout=3):
        """True when the server closes TCP within timeout (any frames before are
        discarded)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.recv_frame(max(0.01, deadline - time.monotonic()))
            except WSClosed:
                return True
            except socket.timeout:
                return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def ws_closes_with(srv, path, data, code, timeout=5):
    """Opens a connection to ``path``, sends ``data`` (raw frame bytes) and checks the
    server answers with a close frame carrying ``code`` and then closes TCP."""
    with RawWS(srv, path, timeout=timeout) as ws:
        try:
            ws.send_raw(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        got, reason, seen = ws.expect_close(timeout)
        assert got == code, f"expected close {code}, got {got} {reason!r}; frames {seen}"
        assert ws.eof(timeout), "TCP not closed after the close handshake"
        return reason


def bystander_check(srv, ws=None):
    """A WebSocket connection (a long-lived one opened earlier, or a new one) still
    echoes, and plain HTTP is still answered."""
    own = ws is None
    ws = ws or RawWS(srv, "/echo")
    try:
        token = os.urandom(6).hex()
        ws.send_text("by-" + token)
        assert ws.recv_text() == "by-" + token, "other WebSocket connection harmed"
    finally:
        if own:
            ws.close()
    srv.assert_alive()


def rid():
    return os.urandom(6).hex()


def q(**kw):
    return "?" + urllib.parse.urlencode(kw) if kw else ""


# --------------------------------------------------------------------------- memory

def server_pid(srv):
    """The pid of the process running the app (asked of the app itself)."""
    return srv.get_json("/pid")["pid"]


def drain(sock, timeout=5):
    return read_until_close(sock, timeout)
