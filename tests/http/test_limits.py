"""Limits and timeouts (security.md "Limits"): 414, 431, 413, 503, slowloris."""

import time

import pytest

from conftest import Reader, check_rejected, parse_responses, read_until_close, req

pytestmark = pytest.mark.laurel_only


def line_of(length, marker=b"{M}"):
    """A request line of exactly ``length`` bytes (without CRLF): GET /m-{M}/aaa HTTP/1.1"""
    fixed = len(b"GET ") + len(b" HTTP/1.1")
    path = b"/m-" + marker + b"/"
    # {M} becomes 12 characters
    pad = length - fixed - len(path) + (len(b"{M}") - 12 if marker == b"{M}" else 0)
    assert pad >= 0
    return b"GET " + path + b"a" * pad + b" HTTP/1.1"


def fields(n, size=10):
    """n header fields (besides Host)."""
    return b"".join(b"X-F%d: %s\r\n" % (i, b"v" * size) for i in range(n))


# --------------------------------------------------------------------------- request line

def test_request_line_default_limit_boundary(server):
    ok = line_of(8192, b"ok")
    assert len(ok) == 8192
    r = server.raw_request(ok + b"\r\nHost: t\r\n\r\n")
    assert r.status == 200
    check_rejected(server, line_of(8193) + b"\r\nHost: t\r\n\r\n", 414)


def test_request_line_huge(server):
    check_rejected(server, line_of(100_000) + b"\r\nHost: t\r\n\r\n", 414)


def test_request_line_flag(serve):
    srv = serve("tests.apps.basic:app", "--limit-request-line", "100")
    assert srv.raw_request(line_of(100, b"ok") + b"\r\nHost: t\r\n\r\n").status == 200
    check_rejected(srv, line_of(101) + b"\r\nHost: t\r\n\r\n", 414)


def test_request_line_limit_answered_before_line_ends(server):
    """An endless request line is answered once it passes the limit, without waiting
    for its end."""
    s = server.connect()
    try:
        s.sendall(b"GET /" + b"a" * 9000)
        buf, closed = read_until_close(s, 5)
        assert closed
        assert parse_responses(buf)[0].status == 414
    finally:
        s.close()


# --------------------------------------------------------------------------- header block

def test_header_block_default_limit(server):
    ok = b"X-Big: " + b"v" * 15000 + b"\r\n"
    assert server.raw_request(req("/scope", headers=ok)).status == 200
    big = b"X-Big: " + b"v" * 17000 + b"\r\n"
    check_rejected(server, b"GET /m-{M} HTTP/1.1\r\nHost: t\r\n" + big + b"\r\n", 431)


def test_header_block_many_lines_over_limit(server):
    """Total size counts, not just one line: 80 lines of 250 bytes = 20 KB."""
    hdrs = b"".join(b"X-L%d: %s\r\n" % (i, b"v" * 240) for i in range(80))
    check_rejected(server, b"GET /m-{M} HTTP/1.1\r\nHost: t\r\n" + hdrs + b"\r\n", 431)


def test_header_block_flag(serve):
    srv = serve("tests.apps.basic:app", "--limit-request-headers", "1000")
    assert srv.raw_request(req("/scope", headers=b"X-Big: " + b"v" * 800 + b"\r\n")).status == 200
    check_rejected(srv, b"GET /m-{M} HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * 1200
                   + b"\r\n\r\n", 431)


def test_header_block_endless_answered(server):
    s = server.connect()
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * 20000)
        buf, closed = read_until_close(s, 5)
        assert closed
        assert parse_responses(buf)[0].status == 431
    finally:
        s.close()


def test_header_fields_default_limit_boundary(server):
    # Host + 99 = 100 fields: fine; Host + 100 = 101: too many.
    assert server.raw_request(req("/scope", headers=fields(99))).status == 200
    check_rejected(server, b"GET /m-{M} HTTP/1.1\r\nHost: t\r\n" + fields(100) + b"\r\n", 431)


def test_header_fields_flag(serve):
    srv = serve("tests.apps.basic:app", "--limit-request-fields", "10")
    assert srv.raw_request(req("/scope", headers=fields(9))).status == 200
    check_rejected(srv, b"GET /m-{M} HTTP/1.1\r\nHost: t\r\n" + fields(10) + b"\r\n", 431)


# --------------------------------------------------------------------------- body

@pytest.fixture
def body_limited(serve):
    return serve("tests.apps.basic:app", "--limit-request-body", "1000")


def test_body_limit_content_length_boundary(body_limited):
    srv = body_limited
    r = srv.raw_request(req("/echo", method=b"POST", headers=b"Content-Length: 1000\r\n",
                            body=b"a" * 1000))
    assert r.status == 200 and len(r.body) == 1000
    check_rejected(srv, b"POST /echo?m-{M} HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n"
                   + b"a" * 1001, 413)


def test_body_limit_content_length_answered_before_body(body_limited):
    """413 comes from the head alone: the client need not send the 10 MB."""
    s = body_limited.connect()
    try:
        s.sendall(req("/echo?before-body", method=b"POST",
                      headers=b"Content-Length: 10000000\r\n"))
        rd = Reader(s)
        r = rd.read_response(timeout=3)
        assert r.status == 413
        assert (r.header("connection") or "").lower() == "close"
        assert rd.closed(3)
    finally:
        s.close()
    assert not body_limited.seen("before-body")


def test_body_limit_no_body_unaffected(body_limited):
    assert body_limited.raw_request(req("/scope")).status == 200


def test_body_limit_chunked_within(body_limited):
    body = b"1f4\r\n" + b"a" * 500 + b"\r\n1f4\r\n" + b"b" * 500 + b"\r\n0\r\n\r\n"
    r = body_limited.raw_request(req("/echo", method=b"POST",
                                     headers=b"Transfer-Encoding: chunked\r\n", body=body))
    assert r.status == 200 and r.body == b"a" * 500 + b"b" * 500


def test_body_limit_chunked_crossed(body_limited):
    body = b"258\r\n" + b"a" * 600 + b"\r\n258\r\n" + b"b" * 600 + b"\r\n0\r\n\r\n"
    check_rejected(body_limited, b"POST /echo?m-{M} HTTP/1.1\r\nHost: t\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n" + body, 413, head_level=False)


def test_body_limit_chunked_endless(body_limited):
    """A chunked body that never ends is cut when it crosses the limit."""
    s = body_limited.connect()
    try:
        s.sendall(req("/echo", method=b"POST", headers=b"Transfer-Encoding: chunked\r\n"))
        for _ in range(10):
            try:
                s.sendall(b"100\r\n" + b"z" * 256 + b"\r\n")
            except OSError:
                break
        buf, closed = read_until_close(s, 5)
        assert closed
        assert parse_responses(buf)[0].status == 413
    finally:
        s.close()


# --------------------------------------------------------------------------- concurrency

@pytest.mark.servers("laurel", "uvicorn")
def test_limit_concurrency(serve):
    srv = serve("tests.apps.basic:app", "--limit-concurrency", "2")
    conns = []
    try:
        for i in range(2):
            c = srv.connect()
            c.sendall(req(f"/text?body=c{i}"))
            assert Reader(c).read_response().body == b"c%d" % i
            conns.append(c)
        third = srv.connect()
        try:
            third.sendall(req("/text?body=third"))
            buf, closed = read_until_close(third, 5)
        finally:
            third.close()
        assert closed
        r = parse_responses(buf)[0]
        assert r.status == 503
        assert (r.header("connection") or "").lower() == "close"
        # the two admitted connections still work
        for i, c in enumerate(conns):
            c.sendall(req(f"/text?body=again{i}"))
            assert Reader(c).read_response().body == b"again%d" % i
        conns.pop().close()
        time.sleep(0.3)
        r = srv.raw_request(req("/text?body=fourth"))
        assert r.status == 200 and r.body == b"fourth"
    finally:
        for c in conns:
            c.close()
        time.sleep(0.3)  # let the server see the closes before teardown's check


# --------------------------------------------------------------------------- slowloris

def test_header_timeout_slowloris(serve):
    srv = serve("tests.apps.basic:app", "--header-timeout", "1")
    s = srv.connect()
    t0 = time.monotonic()
    closed_at = None
    try:
        s.sendall(b"GET /slowloris HTTP/1.1\r\nHost: t\r\n")
        s.settimeout(0.2)
        buf = b""
        while time.monotonic() - t0 < 4:
            try:
                s.sendall(b"X-A: b\r\n")
            except OSError:
                closed_at = time.monotonic()
                break
            try:
                b = s.recv(4096)
                if not b:
                    closed_at = time.monotonic()
                    break
                buf += b
            except TimeoutError:
                pass
            except OSError:
                closed_at = time.monotonic()
                break
    finally:
        s.close()
    assert closed_at is not None, "a head dribbled for 4 s was not cut"
    assert 0.7 <= closed_at - t0 <= 3
    assert not buf or parse_responses(buf)[0].status == 408
    assert not srv.seen("slowloris")


def test_header_timeout_not_hit_by_fast_requests(serve):
    srv = serve("tests.apps.basic:app", "--header-timeout", "1")
    s = srv.connect()
    try:
        rd = Reader(s)
        for i in range(3):
            s.sendall(req(f"/slow?t=0.6&id={i}"))
            assert rd.read_response(timeout=4).status == 200
    finally:
        s.close()
