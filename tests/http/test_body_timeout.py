"""Request bodies that stall or trickle (security.md "Slow clients": the body deadline)
and empty lines before a request line (RFC 9112 2.2).

--body-timeout S / --body-min-rate N: no body byte for S seconds, or fewer than N bytes
per second once S seconds have passed, closes the connection, and the application's
receive() gets http.disconnect. A slow application (backpressure) stops the clock."""

import time

import pytest

from conftest import read_until_close

def _open_body(srv, key, length):
    s = srv.connect(timeout=15)
    s.sendall(b"POST /read-record?id=%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
              % (key.encode(), length))
    return s


@pytest.mark.laurel_only
def test_stalled_body_is_cut_and_the_app_hears_disconnect(serve):
    srv = serve("tests.apps.basic:app", "--body-timeout", "1", "-v", "1")
    s = _open_body(srv, "stall", 1000)
    try:
        s.sendall(b"x" * 100)  # then nothing
        t0 = time.monotonic()
        data, closed = read_until_close(s, 6)
        took = time.monotonic() - t0
    finally:
        s.close()
    assert closed and data == b""
    assert 0.8 < took < 3.0
    res = srv.result("stall")
    assert res["done"] and res["messages"][-1][0] == "http.disconnect"
    assert sum(m[1] for m in res["messages"]) == 100
    assert "request body too slow (100 bytes in" in srv.stderr()


@pytest.mark.laurel_only
def test_trickling_body_is_cut_by_the_rate(serve):
    """One byte every 0.2 s never idles for a second, but averages 5 B/s: with
    --body-min-rate 100 it is cut soon after the first second."""
    srv = serve("tests.apps.basic:app", "--body-timeout", "1", "--body-min-rate", "100")
    s = _open_body(srv, "trickle", 1000)
    t0 = time.monotonic()
    closed = False
    try:
        for _ in range(40):
            try:
                s.sendall(b"y")
            except OSError:
                closed = True
                break
            s.settimeout(0.2)
            try:
                if s.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
    finally:
        s.close()
    took = time.monotonic() - t0
    assert closed, "a 5 B/s body was still accepted after 8 s"
    assert took < 4.0
    assert srv.result("trickle")["messages"][-1][0] == "http.disconnect"


@pytest.mark.laurel_only
def test_a_steady_slow_body_is_served(serve):
    """Above the minimum rate a long body is fine however long it takes."""
    srv = serve("tests.apps.basic:app", "--body-timeout", "1", "--body-min-rate", "100")
    s = _open_body(srv, "steady", 500)
    try:
        for _ in range(10):  # 2.5 s at 200 B/s
            s.sendall(b"z" * 50)
            time.sleep(0.25)
        data, _ = read_until_close(s, 5)
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    res = srv.result("steady")
    assert res["done"] and sum(m[1] for m in res["messages"]) == 500


@pytest.mark.laurel_only
def test_backpressure_stops_the_clock(serve):
    """An app that does not read its body for longer than --body-timeout is not the
    client's fault: the client that sent everything is answered."""
    srv = serve("tests.apps.basic:app", "--body-timeout", "1")
    body = b"b" * (400 * 1024)  # beyond the 64 KiB laurel buffers for the app
    s = srv.connect(timeout=15)
    try:
        s.sendall(b"POST /noread?t=2.5 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                  % len(body))
        s.sendall(body[:256 * 1024])
        data, _ = read_until_close(s, 8)
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    assert b"noread done" in data


@pytest.mark.laurel_only
def test_body_timeout_zero_is_no_limit(serve):
    srv = serve("tests.apps.basic:app", "--body-timeout", "0")
    s = _open_body(srv, "nolimit", 10)
    try:
        s.sendall(b"12345")
        time.sleep(1.5)
        s.sendall(b"67890")
        data, _ = read_until_close(s, 5)
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 200")


@pytest.mark.servers("laurel", "uvicorn")  # daphne (Twisted) answers 400 as laurel did
def test_empty_lines_before_the_request_line_are_ignored(serve):
    """RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request
    line, also between keep-alive requests (a client ending a body with an extra CRLF)."""
    srv = serve()
    data, _ = srv.raw(b"\r\n\r\nGET /text HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    data, _ = srv.raw(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\r\n"
                      b"GET /text HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert data.count(b"HTTP/1.1 200") == 2, data[:400]
    data, _ = srv.raw(b"\r\n\rXGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400"), data[:200]
