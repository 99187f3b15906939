"""The app failing: raising before/after the response start, in receive, returning
without a response, too slow (-t), outliving its client (--application-close-timeout)."""

import time
import uuid

import pytest

from conftest import Reader, kind, parse_responses, req

CLOSE = b"Connection: close\r\n"


def uid():
    return uuid.uuid4().hex[:12]


def test_raise_before_start_gives_500_and_traceback_logged(serve):
    srv = serve()
    r = srv.raw_request(req("/raise-before"))
    assert r.status == 500
    assert r.complete
    assert 0 < len(r.body) < 2000
    assert (r.header("content-type") or "").startswith("text/")
    assert b"boom-before-start-7f3a" not in r.body, "the exception leaks to the client"
    err = srv.wait_output("boom-before-start-7f3a", "stderr")
    assert "Traceback (most recent call last)" in err
    assert "RuntimeError: boom-before-start-7f3a" in err
    srv.assert_alive()


def test_raise_before_start_keeps_other_connections(server):
    other = server.connect()
    try:
        rd = Reader(other)
        other.sendall(req("/text?body=one"))
        assert rd.read_response().body == b"one"
        assert server.raw_request(req("/raise-before")).status == 500
        other.sendall(req("/text?body=two"))
        assert rd.read_response().body == b"two"
    finally:
        other.close()


@pytest.mark.servers("laurel", "uvicorn")  # daphne 4.0 hangs
def test_return_before_start_gives_500(server):
    r = server.raw_request(req("/return-before"))
    assert r.status == 500
    server.assert_alive()


@pytest.mark.servers("laurel", "uvicorn")  # daphne 4.0 leaves the connection hanging
@pytest.mark.parametrize("cl", [None, "100"])
def test_raise_after_start_closes_connection(server, cl):
    """Raised after http.response.start: the client sees a truncated response (no final
    chunk / fewer bytes than Content-Length) and the connection closes."""
    s = server.connect()
    try:
        s.sendall(req("/raise-after" + (f"?cl={cl}" if cl else "")))
        rd = Reader(s)
        buf = rd.read_some(10 ** 9, timeout=5)
        assert rd.eof, "connection not closed after the app raised mid-response"
        r = parse_responses(buf)[0]
        assert r.status == 200
        assert not r.complete
        assert r.body == b"partial-"
    finally:
        s.close()
    server.assert_alive()


@pytest.mark.servers("laurel", "uvicorn")  # daphne only calls the app once the body is in
def test_raise_in_receive_mid_body(server):
    """The app raises after its first receive() while the client is still sending: 500,
    the connection closes, the rest of the body is not taken as a new request."""
    marker = uid()
    s = server.connect()
    try:
        s.sendall(req("/raise-in-receive", method=b"POST",
                      headers=b"Content-Length: 200000\r\n") + b"a" * 1000)
        time.sleep(0.2)
        try:
            s.sendall(req(f"/scope?smuggled-{marker}") * 10)
        except OSError:
            pass
        rd = Reader(s)
        buf = rd.read_some(10 ** 9, timeout=5)
        assert rd.eof
        rs = parse_responses(buf)
        assert [r.status for r in rs] == [500]
    finally:
        s.close()
    assert not server.seen(f"smuggled-{marker}")


@pytest.mark.servers("laurel", "daphne")
def test_http_timeout_503(serve):
    srv = serve("tests.apps.basic:app", "-t", "1")
    t0 = time.monotonic()
    r = srv.raw_request(req("/slow?t=4"), timeout=6)
    elapsed = time.monotonic() - t0
    assert r.status == 503
    assert 0.8 <= elapsed <= 3
    if kind() == "laurel":
        assert r.body == b"Application failed to respond within time limit."
    else:
        assert b"Application failed to respond within time limit." in r.body
    # a fast request on the same server is unaffected
    r = srv.raw_request(req("/slow?t=0.1"))
    assert r.status == 200


@pytest.mark.laurel_only  # daphne's -t also cuts a response in progress
def test_http_timeout_not_applied_once_response_started(serve):
    srv = serve("tests.apps.basic:app", "-t", "1")
    r = srv.raw_request(req("/sleep-stream?n=4&delay=0.5"), timeout=6)
    assert r.status == 200
    assert r.complete
    assert r.body.endswith(b"end\n")


@pytest.mark.servers("laurel", "daphne")
def test_application_close_timeout_cancels_and_warns(serve):
    srv = serve("tests.apps.basic:app", "--application-close-timeout", "1")
    key = uid()
    s = srv.connect()
    s.sendall(req(f"/ignore-disconnect?id={key}&t=30"))
    time.sleep(0.2)
    s.close()
    deadline = time.monotonic() + 6
    while True:
        res = srv.result(key)
        if res["state"] == "cancelled" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert res["state"] == "cancelled", res
    assert 0.5 <= res["after"] <= 4, res
    err = srv.wait_output(r"WARNING.*(Application instance|ignore-disconnect)", "stderr")
    lines = [ln for ln in err.splitlines() if "WARNING" in ln]
    assert any("Application instance" in ln or "ignore-disconnect" in ln for ln in lines), err
