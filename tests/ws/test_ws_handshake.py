"""The WebSocket opening handshake (asgi.md "WebSocket scope and messages", first line;
security.md: the server adds the handshake; daphne 4.2.2 smuggling through the upgrade
path; the deflate bomb is in test_deflate.py)."""

import base64
import json

import pytest

from conftest import Reader, parse_responses, read_until_close, req
from wshelpers import (OP_TEXT, RawWS, accept_value, bystander_check, handshake_bytes,
                       new_key, rid, wsserver)  # noqa: F401 (fixture)


def test_valid_handshake_101(wsserver):
    key = new_key()
    s = wsserver.connect()
    try:
        s.sendall(handshake_bytes("/echo", key))
        rd = Reader(s)
        r = rd.read_response()
        assert r.status == 101, r
        assert r.header("upgrade", "").lower() == "websocket", r
        assert "upgrade" in r.header("connection", "").lower(), r
        assert r.header("sec-websocket-accept") == accept_value(key), r
        assert r.header("content-length") is None and r.header("transfer-encoding") is None
    finally:
        s.close()


@pytest.mark.parametrize("upgrade,connection", [
    ("websocket", "Upgrade"),
    ("WebSocket", "upgrade"),
    ("WEBSOCKET", "UPGRADE"),
    ("websocket", "keep-alive, Upgrade"),
    ("websocket", "Upgrade , keep-alive"),
    ("websocket", "keep-alive,upgrade"),
])
def test_upgrade_and_connection_tokens_any_case(wsserver, upgrade, connection):
    key = new_key()
    s = wsserver.connect()
    try:
        s.sendall(handshake_bytes("/echo", key, upgrade=upgrade, connection=connection))
        rd = Reader(s)
        r = rd.read_response()
        assert r.status == 101, r
        assert r.header("sec-websocket-accept") == accept_value(key)
    finally:
        s.close()


def _rejected(srv, data, status):
    """Sends a failing upgrade request plus a pipelined HTTP request: exactly one
    response with ``status``, the connection closed, the follower never processed, the
    app never saw a websocket scope."""
    marker = rid()
    data = data.replace(b"MARK", marker.encode())
    bystander = RawWS(srv, "/echo")
    try:
        s = srv.connect()
        try:
            try:
                s.sendall(data + req(f"/follow-{marker}"))
            except (BrokenPipeError, ConnectionResetError):
                pass
            buf, closed = read_until_close(s, 5)
        finally:
            s.close()
        assert not buf.startswith(b"HTTP/1.1 101"), f"upgraded anyway: {buf[:400]!r}"
        assert closed, f"connection not closed after a refused upgrade: {buf[:300]!r}"
        rs = parse_responses(buf)
        assert len(rs) == 1, f"expected exactly one response: {buf[:600]!r}"
        r = rs[0]
        assert r.status == status, f"expected {status}: {buf[:400]!r}"
        assert not srv.seen(f"follow-{marker}"), "request pipelined after a refused upgrade"
        assert not srv.seen(f"ws:/m-{marker}"), "the refused upgrade reached the app"
        bystander_check(srv, bystander)
    finally:
        bystander.close()
    return r


@pytest.mark.laurel_only  # RFC 6455 4.2.2; uvicorn 0.17 and daphne 4.0 answer 400
@pytest.mark.parametrize("version", ["12", "8", "14", "", "13, 8", "abc"])
def test_wrong_version_426(wsserver, version):
    r = _rejected(wsserver, handshake_bytes("/m-MARK", new_key(), version=version), 426)
    assert r.header("sec-websocket-version") == "13", r


@pytest.mark.laurel_only
def test_missing_version_426(wsserver):
    r = _rejected(wsserver, handshake_bytes("/m-MARK", new_key(), version=None), 426)
    assert r.header("sec-websocket-version") == "13", r


@pytest.mark.parametrize("key", [
    None,                                           # missing
    "",                                             # empty
    "abc",                                          # not base64 of 16 bytes
    base64.b64encode(b"x" * 15).decode(),           # 15 bytes
    base64.b64encode(b"x" * 17).decode(),           # 17 bytes
    base64.b64encode(b"x" * 32).decode(),           # 32 bytes
    "!!!!!!!!!!!!!!!!!!!!!!==",                     # 24 chars, not base64
    base64.b64encode(b"x" * 16).decode().rstrip("="),  # no padding
])
def test_invalid_key_400(wsserver, key):
    _rejected(wsserver, handshake_bytes("/m-MARK", key), 400)


def test_two_keys_400(wsserver):
    data = handshake_bytes("/m-MARK", new_key(), headers=[("Sec-WebSocket-Key", new_key())])
    _rejected(wsserver, data, 400)


def _served_as_http(srv, data):
    s = srv.connect()
    try:
        s.sendall(data)
        r = Reader(s).read_response()
    finally:
        s.close()
    assert r.status != 101, f"upgraded: {r!r}"
    assert r.status == 200, r
    body = json.loads(r.body)
    assert body["type"] == "http", body
    return body


@pytest.mark.laurel_only
@pytest.mark.parametrize("method", ["POST", "PUT", "HEAD"])
def test_upgrade_only_for_get(wsserver, method):
    data = handshake_bytes("/m", new_key(), method=method, headers=[("Content-Length", "0")])
    s = wsserver.connect()
    try:
        s.sendall(data)
        r = Reader(s).read_response(head=method == "HEAD")
    finally:
        s.close()
    assert r.status == 200, f"{method} with upgrade headers was not a plain request: {r!r}"
    if method != "HEAD":
        assert json.loads(r.body)["method"] == method
    bystander_check(wsserver)


@pytest.mark.laurel_only
def test_no_upgrade_for_http10(wsserver):
    body = _served_as_http(wsserver, handshake_bytes("/m", new_key(), http="1.0"))
    assert body["http_version"] == "1.0"


NOT_DAPHNE = pytest.mark.servers("laurel", "uvicorn")  # daphne 4.0: 400
NOT_UVICORN = pytest.mark.servers("laurel", "daphne")  # uvicorn 0.17: 400


@pytest.mark.parametrize("upgrade,connection", [
    pytest.param("websocket", None, marks=NOT_DAPHNE),
    pytest.param("websocket", "keep-alive", marks=NOT_DAPHNE),
    (None, "Upgrade"),
    pytest.param("h2c", "Upgrade", marks=NOT_UVICORN),
    pytest.param("websocketx", "Upgrade", marks=NOT_UVICORN),
    pytest.param("websocket", "upgraded", marks=NOT_DAPHNE),
])
def test_no_upgrade_without_both_headers(wsserver, upgrade, connection):
    _served_as_http(wsserver, handshake_bytes("/m", new_key(), upgrade=upgrade,
                                              connection=connection))


@pytest.mark.laurel_only  # uvicorn 0.17 and daphne 4.0 lose them
def test_frames_pipelined_after_handshake_are_read(wsserver):
    """Frames sent together with the upgrade request are not lost."""
    from wshelpers import frame
    key = new_key()
    s = wsserver.connect()
    try:
        s.sendall(handshake_bytes("/echo", key) + frame(OP_TEXT, b"early-bird"))
        ws = RawWS.__new__(RawWS)
        ws.sock, ws.reader, ws.timeout = s, Reader(s), 5
        r = ws.reader.read_response()
        assert r.status == 101
        assert ws.recv_text() == "early-bird"
    finally:
        s.close()


@pytest.mark.laurel_only  # daphne drops TCP without a close frame; uvicorn 0.17 hangs
def test_http_request_after_handshake_is_not_http(wsserver):
    """Bytes after an accepted upgrade are WebSocket frames: a smuggled HTTP request is a
    protocol error (unmasked, reserved bits) and never reaches the app as HTTP."""
    marker = rid()
    key = new_key()
    s = wsserver.connect()
    try:
        s.sendall(handshake_bytes("/echo", key) + req(f"/smuggled-{marker}"))
        ws = RawWS.__new__(RawWS)
        ws.sock, ws.reader, ws.timeout = s, Reader(s), 5
        assert ws.reader.read_response().status == 101
        code, _, _ = ws.expect_close()
        assert code == 1002
    finally:
        s.close()
    assert not wsserver.seen(f"smuggled-{marker}")
    bystander_check(wsserver)
