"""Request bodies and receive() (asgi.md "HTTP messages": body chunks, backpressure,
http.disconnect, Expect: 100-continue)."""

import hashlib
import os
import socket
import time
import uuid

import pytest

from conftest import Reader, req


def uid():
    return uuid.uuid4().hex[:12]


def test_bodyless_request_gives_one_empty_message(server):
    r = server.raw_request(req("/scope"))
    assert r.status == 200
    msgs = r.json()["messages"]
    assert msgs == [["http.request", 0, False, ["body", "more_body", "type"]]]


def test_bodyless_post_content_length_zero(server):
    r = server.raw_request(req("/scope", method=b"POST", headers=b"Content-Length: 0\r\n"))
    assert r.status == 200
    msgs = r.json()["messages"]
    assert [m[:3] for m in msgs] == [["http.request", 0, False]]


def test_content_length_body_delivered_whole(server):
    body = os.urandom(100_000)
    r = server.request("POST", "/scope", body=body,
                       headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200
    d = r.json()
    assert d["body_len"] == len(body)
    assert d["sha256"] == hashlib.sha256(body).hexdigest()
    msgs = d["messages"]
    assert all(m[0] == "http.request" for m in msgs)
    assert [m[2] for m in msgs] == [True] * (len(msgs) - 1) + [False]


def test_chunked_body_delivered_whole(server):
    parts = [b"a" * 10, b"b" * 5000, b"c" * 1, b"d" * 70000]
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    r = server.raw_request(req("/scope", method=b"POST",
                               headers=b"Transfer-Encoding: chunked\r\n", body=body))
    assert r.status == 200
    d = r.json()
    whole = b"".join(parts)
    assert d["body_len"] == len(whole)
    assert d["sha256"] == hashlib.sha256(whole).hexdigest()
    assert d["messages"][-1][:3] == ["http.request", d["messages"][-1][1], False]


def test_chunked_body_with_extension_and_trailer(server):
    body = b"5;name=value\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"
    r = server.raw_request(req("/echo", method=b"POST",
                               headers=b"Transfer-Encoding: chunked\r\n", body=body))
    assert r.status == 200
    assert r.body == b"hello"


def test_echo_body_bytes_exact(server):
    body = bytes(range(256)) * 100
    r = server.request("POST", "/echo", body=body)
    assert r.status == 200 and r.body == body


@pytest.mark.servers("laurel", "uvicorn")  # daphne buffers the whole body (daphne #483)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_body_streamed_to_app_as_it_arrives(server, framing):
    """The app sees the first part of the body (more_body True) while the client still
    holds the rest back: it answers one line per message as it arrives."""
    s = server.connect()
    try:
        rd = Reader(s)
        if framing == "content-length":
            s.sendall(req("/chunks", method=b"POST", headers=b"Content-Length: 10\r\n")
                      + b"12345")
        else:
            s.sendall(req("/chunks", method=b"POST",
                          headers=b"Transfer-Encoding: chunked\r\n") + b"5\r\n12345\r\n")
        # The response head and the first line come before the rest is sent.
        buf = rd.read_some(1, timeout=3)
        deadline = time.monotonic() + 3
        while b"\n5 1\n" not in buf.replace(b"\r\n", b"\n") and time.monotonic() < deadline:
            rd._fill(max(0.01, deadline - time.monotonic()))
            buf = rd.buf
        assert b"HTTP/1.1 200" in buf
        if framing == "content-length":
            s.sendall(b"67890")
        else:
            s.sendall(b"5\r\n67890\r\n0\r\n\r\n")
        r = rd.read_response()
        lines = r.body.decode().split("\n")
        assert lines[0] == "5 1"
        assert lines[-2:] in (["5 0", ""], ["0 0", ""])
        total = sum(int(x.split()[0]) for x in lines if x)
        assert total == 10
    finally:
        s.close()


def test_receive_blocks_after_body_until_response(server):
    r = server.request("POST", "/receive-blocks", body=b"abc")
    assert r.status == 200
    assert r.json() == {"blocked": True, "message": None}


def test_receive_returns_disconnect_when_client_leaves(server):
    key = uid()
    s = server.connect()
    try:
        s.sendall(req(f"/wait-disconnect?id={key}"))
        buf = Reader(s).read_some(1, timeout=3)
        deadline = time.monotonic() + 3
        while b"started" not in buf and time.monotonic() < deadline:
            more = s.recv(65536)
            if not more:
                break
            buf += more
        assert b"started" in buf
        time.sleep(0.2)
    finally:
        s.close()
    res = server.result(key)
    assert res["message"] == {"type": "http.disconnect"}
    assert res["waited"] >= 0.15
    # Sends after the client left are dropped silently: no exception in the app.
    assert res["error"] is None


@pytest.mark.servers("laurel", "uvicorn")
def test_receive_returns_disconnect_after_response_finished(server):
    """With the connection still open (keep-alive), receive() after the response is
    complete returns http.disconnect promptly."""
    key = uid()
    s = server.connect()
    try:
        rd = Reader(s)
        s.sendall(req(f"/receive-after-response?id={key}"))
        r = rd.read_response()
        assert r.status == 200 and r.body == b"done"
        res = server.result(key)
        assert res["message"] == {"type": "http.disconnect"}
        assert res["waited"] < 2
        # and the connection still serves the next request
        s.sendall(req("/scope"))
        assert rd.read_response().status == 200
    finally:
        s.close()


@pytest.mark.servers("laurel", "uvicorn")  # daphne only calls the app once the body is in
def test_disconnect_mid_body(server):
    """A client that leaves mid-body: the app reading the body gets http.disconnect."""
    key = uid()
    s = server.connect()
    s.sendall(req(f"/read-record?id={key}", method=b"POST",
                  headers=b"Content-Length: 100000\r\n") + b"x" * 1000)
    time.sleep(0.3)
    s.close()
    deadline = time.monotonic() + 5
    while True:
        res = server.result(key)
        if res["done"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert res["done"], res
    assert res["messages"][-1][0] == "http.disconnect"
    assert sum(m[1] for m in res["messages"]) <= 1000
    server.assert_alive()


# --------------------------------------------------------------------------- 100-continue

@pytest.mark.servers("laurel", "uvicorn")
def test_expect_100_continue_sent_when_app_reads(server):
    s = server.connect()
    try:
        rd = Reader(s)
        s.sendall(req("/expect?read=1", method=b"POST",
                      headers=b"Content-Length: 5\r\nExpect: 100-continue\r\n"))
        r = rd.read_response(timeout=3)
        assert (r.version, r.status) == ("HTTP/1.1", 100)
        assert r.head.startswith(b"HTTP/1.1 100 Continue\r\n")
        s.sendall(b"hello")
        r = rd.read_response()
        assert r.status == 200
        assert r.json() == {"body_len": 5, "body": "hello"}
    finally:
        s.close()


@pytest.mark.servers("laurel", "uvicorn")
def test_expect_100_continue_only_when_app_calls_receive(server):
    """The app sleeps 0.6 s before its first receive(): no 100 before that."""
    s = server.connect()
    try:
        rd = Reader(s)
        s.sendall(req("/expect?read=1&delay=0.6", method=b"POST",
                      headers=b"Content-Length: 5\r\nExpect: 100-continue\r\n"))
        s.settimeout(0.35)
        with pytest.raises(socket.timeout):
            s.recv(100)
        r = rd.read_response(timeout=3)
        assert r.status == 100
        s.sendall(b"hello")
        assert rd.read_response().json()["body_len"] == 5
    finally:
        s.close()


@pytest.mark.servers("laurel", "uvicorn")
@pytest.mark.parametrize("status", [417, 413])
def test_expect_no_100_when_app_answers_without_reading(server, status):
    s = server.connect()
    try:
        rd = Reader(s)
        s.sendall(req(f"/expect?read=0&status={status}", method=b"POST",
                      headers=b"Content-Length: 5\r\nExpect: 100-continue\r\n"))
        r = rd.read_response(timeout=3)
        assert r.status == status
        assert r.body == b"rejected"
    finally:
        s.close()
    server.assert_alive()


# --------------------------------------------------------------------------- backpressure

@pytest.mark.servers("laurel", "uvicorn")  # daphne buffers the whole body (daphne #483)
def test_backpressure_app_not_reading(server):
    """An app that never reads: a client sending 64 MB must block well before the end
    (the server stops reading instead of buffering the body)."""
    total = 64 << 20
    s = server.connect()
    sent = 0
    try:
        s.sendall(req("/noread?t=4", method=b"POST",
                      headers=b"Content-Length: %d\r\n" % total))
        s.settimeout(1.0)
        block = b"\0" * 65536
        stalled = False
        while sent < total:
            try:
                n = s.send(block)
            except socket.timeout:
                stalled = True
                break
            sent += n
        assert stalled, "the whole 64 MB body was accepted while the app never read it"
        # Kernel socket buffers on loopback hold a few MB at most.
        assert sent < 24 << 20, f"{sent} bytes accepted while the app never read"
    finally:
        s.close()
    server.assert_alive()


@pytest.mark.servers("laurel", "uvicorn")
def test_large_body_streamed_through(server):
    """32 MB through an app that reads: arrives whole, in many messages."""
    total = 32 << 20
    s = server.connect(timeout=20)
    try:
        s.sendall(req("/scope", method=b"POST", headers=b"Content-Length: %d\r\n" % total))
        block = b"\x5a" * (1 << 20)
        for _ in range(32):
            s.sendall(block)
        r = Reader(s).read_response(timeout=20)
        d = r.json()
        assert d["body_len"] == total
        assert d["sha256"] == hashlib.sha256(block * 32).hexdigest()
        assert len(d["messages"]) > 8
        assert all(m[1] <= (4 << 20) for m in d["messages"])
    finally:
        s.close()
