"""Apps that misbehave (security.md "Faults"; the outcomes are listed in
docs/security.md): an app that never reads its request body, and one that sends after
its WebSocket close. (Raising at every step, hanging, and sending after the response
or after the client left have their tests in test_errors.py, test_body.py,
test_framing.py, test_response.py and tests/ws.)"""

import json
import socket
import time
import uuid

import pytest

from conftest import Reader, req

WS_REQ = (b"GET /ws?id={id} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
          b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
          b"Sec-WebSocket-Version: 13\r\n\r\n")


def expect_unread(size, marker):
    body = b"x" * size
    return (req("/expect?read=0&status=200", method=b"POST",
                headers=f"Content-Length: {size}\r\n".encode(), body=body)
            + req(f"/text?body=second-{marker}"))


def test_unread_small_body_is_skipped_and_keepalive_goes_on(server):
    """The body came whole with the request: the server skips what the app did not
    read and serves the next request on the same connection."""
    marker = uuid.uuid4().hex[:8]
    s = server.connect()
    try:
        s.sendall(expect_unread(100, marker))
        rd = Reader(s)
        first = rd.read_response()
        second = rd.read_response()
        assert first.status == 200 and first.body == b"rejected"
        assert second.status == 200 and second.body == f"second-{marker}".encode()
    finally:
        s.close()


@pytest.mark.laurel_only
def test_unread_large_body_closes_after_the_response(server):
    """More body than the server holds for an app that does not read it: the response
    goes out whole, then the connection closes (lingering: the client reads the
    response before the close), and the request pipelined behind the body is not
    processed."""
    marker = uuid.uuid4().hex[:8]
    s = server.connect()
    try:
        s.sendall(expect_unread(200_000, marker))
        rd = Reader(s)
        first = rd.read_response(timeout=10)
        assert first.status == 200 and first.body == b"rejected"
        assert rd.closed(timeout=10)
    finally:
        s.close()
    assert not server.seen(f"second-{marker}")
    server.assert_alive()


@pytest.mark.laurel_only
def test_websocket_send_after_close_is_dropped(serve):
    """A WebSocket app that sends after its own websocket.close: the send is dropped
    silently, as sends after the client left are (asgi.md), so nothing reaches the
    client after the close frame and the app does not crash; its next receive() is
    websocket.disconnect. (uvicorn raises RuntimeError in send() instead.)"""
    srv = serve("tests.apps.fault_app:app")
    key = uuid.uuid4().hex
    s = srv.connect()
    try:
        s.sendall(WS_REQ.replace(b"{id}", key.encode()))
        s.settimeout(5)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(4096)
        head, _, rest = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        while len(rest) < 4:
            rest += s.recv(4096)
        assert rest[0] == 0x88 and rest[2:4] == (4001).to_bytes(2, "big"), rest
        s.sendall(bytes([0x88, 0x82, 1, 2, 3, 4, 0x0F ^ 1, 0xA1 ^ 2]))  # close 4001
        tail = rest[2 + rest[1]:]
        try:
            while True:
                b = s.recv(4096)
                if not b:
                    break
                tail += b
        except (socket.timeout, ConnectionResetError):
            pass
        assert b"after close" not in tail
    finally:
        s.close()
    for _ in range(50):
        res = json.loads(srv.request("GET", f"/result?id={key}").body)
        if res:
            break
        time.sleep(0.1)
    assert res == {"error": None, "next": "websocket.disconnect"}, res
