"""Keep-alive, pipelining, HTTP/1.0, Connection: close, idle timeout, clients that leave
(asgi.md "Keep-alive and pipelining"; Twisted CVE-2023-46137 out-of-order responses)."""

import socket
import time
import uuid

import pytest

from conftest import HTTPConn, Reader, asan_build, kind, parse_responses, req

CLOSE = b"Connection: close\r\n"


def uid():
    return uuid.uuid4().hex[:12]


def test_pipelined_responses_in_request_order(server):
    """Three requests in one write, the first one slow: the answers come in order."""
    key = uid()
    data, closed = server.raw(req(f"/slow?t=0.5&id={key}-1")
                              + req(f"/text?body={key}-2")
                              + req(f"/text?body={key}-3", headers=CLOSE))
    assert closed
    rs = parse_responses(data)
    assert [r.status for r in rs] == [200, 200, 200]
    assert [r.body.decode() for r in rs] == [f"slow done {key}-1", f"{key}-2", f"{key}-3"]


def test_pipelined_many_with_bodies(server):
    reqs, expect = [], []
    for i in range(20):
        body = (b"%d-" % i) * (i * 50 + 1)
        reqs.append(req("/echo", method=b"POST", headers=b"Content-Length: %d\r\n" % len(body),
                        body=body))
        expect.append(body)
    reqs.append(req("/text?body=last", headers=CLOSE))
    data, closed = server.raw(b"".join(reqs))
    assert closed
    rs = parse_responses(data)
    assert [r.body for r in rs] == expect + [b"last"]


def test_pipelined_split_across_writes(server):
    """Requests split at arbitrary points (one byte at a time for the first)."""
    s = server.connect()
    try:
        rd = Reader(s)
        first = req("/text?body=one")
        for i in range(len(first)):
            s.sendall(first[i:i + 1])
        s.sendall(req("/text?body=two") + req("/text?body=thr")[:7])
        time.sleep(0.05)
        s.sendall(req("/text?body=thr")[7:])
        assert [rd.read_response().body for _ in range(3)] == [b"one", b"two", b"thr"]
    finally:
        s.close()


def test_keepalive_reuses_connection(server):
    c = HTTPConn(server)
    try:
        a = c.request("GET", "/scope?a")
        port_a = c.sock.getsockname()[1]
        b = c.request("POST", "/scope?b", body=b"xyz")
        assert c.sock.getsockname()[1] == port_a
        assert a.json()["scope"]["client"] == b.json()["scope"]["client"]
        assert b.json()["body_len"] == 3
    finally:
        c.close()


def test_http10_closes_by_default(server):
    s = server.connect()
    try:
        s.sendall(req("/text?body=ten", version=b"1.0"))
        rd = Reader(s)
        r = rd.read_response()
        assert r.status == 200 and r.body == b"ten"
        assert r.version in ("HTTP/1.1", "HTTP/1.0")
        assert rd.closed(3)
    finally:
        s.close()


def test_http10_without_host_accepted(server):
    r = server.raw_request(req("/scope", version=b"1.0", host=None))
    assert r.status == 200
    assert r.json()["scope"]["http_version"] == "1.0"


@pytest.mark.laurel_only  # uvicorn 0.17 and daphne 4.0 close 1.0 connections anyway
def test_http10_keepalive_when_asked(server):
    s = server.connect()
    try:
        rd = Reader(s)
        s.sendall(req("/text?body=first", version=b"1.0", headers=b"Connection: keep-alive\r\n"))
        r = rd.read_response()
        assert r.body == b"first"
        if kind() == "laurel":
            # an HTTP/1.0 client only keeps the connection when told so (RFC 2068 19.7.1)
            assert (r.header("connection") or "").lower() == "keep-alive"
        s.sendall(req("/text?body=second", version=b"1.0"))
        r = rd.read_response()
        assert r.body == b"second"
        assert rd.closed(3)
    finally:
        s.close()


def test_connection_close_honoured(server):
    s = server.connect()
    try:
        s.sendall(req("/text?body=bye", headers=CLOSE))
        rd = Reader(s)
        r = rd.read_response()
        assert r.body == b"bye"
        assert (r.header("connection") or "").lower() == "close"
        assert rd.closed(3)
    finally:
        s.close()


def test_pipelined_after_connection_close_not_processed(server):
    marker = uid()
    data, closed = server.raw(req("/text?body=bye", headers=CLOSE)
                              + req(f"/scope?after-close-{marker}"))
    assert closed
    rs = parse_responses(data)
    assert len(rs) == 1 and rs[0].body == b"bye"
    assert not server.seen(f"after-close-{marker}")


@pytest.mark.slow
@pytest.mark.servers("laurel", "uvicorn")
def test_keepalive_idle_timeout_default_5s(server):
    """An idle keep-alive connection is still open after 3.5 s and closed by ~6 s."""
    s = server.connect()
    try:
        rd = Reader(s)
        s.sendall(req("/text"))
        rd.read_response()
        t0 = time.monotonic()
        assert not rd.closed(3.5), "closed before the 5 s default keep-alive timeout"
        assert rd.closed(3.5), "idle keep-alive connection not closed after 5 s"
        assert 4.0 <= time.monotonic() - t0 <= 7.0
    finally:
        s.close()


def test_keepalive_timeout_flag(serve):
    srv = serve("tests.apps.basic:app", "--keep-alive-timeout", "1")
    s = srv.connect()
    try:
        rd = Reader(s)
        s.sendall(req("/text"))
        rd.read_response()
        t0 = time.monotonic()
        assert rd.closed(4)
        assert 0.7 <= time.monotonic() - t0 <= 3
    finally:
        s.close()
    srv.assert_alive()


def test_keepalive_timeout_does_not_cut_slow_response(serve):
    """The idle timer does not run while a response is being produced."""
    srv = serve("tests.apps.basic:app", "--keep-alive-timeout", "1")
    s = srv.connect()
    try:
        rd = Reader(s)
        s.sendall(req("/slow?t=2"))
        r = rd.read_response(timeout=5)
        assert r.status == 200 and r.body.startswith(b"slow done")
    finally:
        s.close()


def test_sends_after_client_left_are_dropped(server):
    """The client reads a little of a long streamed response and leaves; the app keeps
    sending, finishes normally, and the server goes on serving."""
    key = uid()
    s = server.connect()
    s.sendall(req(f"/after-leave?id={key}&n=150&size=2000"))
    Reader(s).read_some(100, timeout=3)
    s.close()
    res = server.result(key, timeout=10)
    assert res == {"finished": True, "error": None, "sent": 150}
    server.assert_alive()


def test_client_reset_mid_response(server):
    """A client that resets (RST) while an 8 MB response is being written."""
    key = uid()
    s = server.connect()
    s.sendall(req(f"/big?id={key}&size={8 << 20}"))
    Reader(s).read_some(10000, timeout=3)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    res = server.result(key, timeout=10)
    assert res["error"] is None
    server.assert_alive()


@pytest.mark.parametrize("cut", [b"GET /scope HTT", b"GET /scope HTTP/1.1\r\nHost: t\r\nX-A: b",
                                 b"POST /scope HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nab"])
@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_leaves_mid_request(server, cut, how):
    s = server.connect()
    s.sendall(cut)
    time.sleep(0.05)
    if how == "reset":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    server.assert_alive()


def test_many_connect_disconnect_cycles(server):
    for i in range(300):
        s = server.connect()
        if i % 3 == 0:
            s.sendall(b"GET /")
        s.close()
    server.assert_alive()


@pytest.mark.laurel_only
def test_memory_flat_across_connect_disconnect_cycles(serve):
    """daphne #373 leaked per connection: RSS must not grow with connections
    (a shorter version of security.md's 100k cycles)."""
    srv = serve()
    pid = srv.proc.pid

    def rss_kb():
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])

    def cycles(n):
        for i in range(n):
            s = srv.connect()
            try:
                if i % 4 == 0:
                    s.sendall(req("/text?body=m"))
                    Reader(s).read_response()
                elif i % 4 == 1:
                    s.sendall(b"GET /partial HTTP/1.1\r\nHo")
            finally:
                s.close()

    cycles(3000)
    before = rss_kb()
    cycles(30000)
    time.sleep(0.3)
    after = rss_kb()
    srv.assert_alive()
    if asan_build(pid):
        pytest.skip(f"ASan build: RSS not meaningful ({before} -> {after} kB)")
    print(f"RSS {before} -> {after} kB")
    assert after - before < 6 * 1024, f"RSS grew {before} -> {after} kB over 30000 connections"
