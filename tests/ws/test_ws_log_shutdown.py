"""WebSocket access-log lines (cli.md "Access log") and graceful shutdown of open
WebSockets (cli.md: SIGTERM closes WebSockets with 1012, exit 0)."""

import json
import re
import signal
import time

import pytest

from conftest import Reader
from wshelpers import WS_APP, HandshakeFailed, RawWS, handshake_bytes, new_key, q, rid

DATE = r"\[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d\]"


def line_re(port, what, path):
    return re.compile(rf'^127\.0\.0\.1:{port} - - {DATE} "{what} {re.escape(path)}" - -$', re.M)


def find(srv, port, what, path, timeout=5):
    rx = line_re(port, what, path)
    text = srv.wait_output(rx.pattern, timeout=timeout)
    m = rx.search(text)
    assert m, f"no {what} line for {path} from port {port} in stdout:\n{text[-3000:]}"
    return m.start()


@pytest.mark.servers("laurel", "daphne")
def test_access_log_accepted_socket(serve):
    srv = serve(WS_APP)
    with RawWS(srv, "/echo/p%20a?x=1&secret=2") as ws:
        port = ws.sockname[1]
        ws.send_text("hi")
        assert ws.recv_text() == "hi"
        a = find(srv, port, "WSCONNECTING", "/echo/p%20a")
        b = find(srv, port, "WSCONNECT", "/echo/p%20a")
        assert a < b
        assert "WSDISCONNECT" not in srv.stdout()
        ws.send_close(1000)
        ws.expect_close(reply=False)
    c = find(srv, port, "WSDISCONNECT", "/echo/p%20a")
    assert b < c
    assert "secret" not in srv.stdout()


@pytest.mark.servers("laurel", "daphne")
@pytest.mark.parametrize("path", [
    "/close-before-accept",
    pytest.param("/return-before-accept", marks=pytest.mark.laurel_only),
    pytest.param("/deny", marks=pytest.mark.laurel_only)])
def test_access_log_rejected_socket(serve, path):
    srv = serve(WS_APP)
    s = srv.connect()
    try:
        s.sendall(handshake_bytes(path + "?q=1", new_key()))
        port = s.getsockname()[1]
        assert Reader(s).read_response().status == (401 if path == "/deny" else 403)
    finally:
        s.close()
    a = find(srv, port, "WSCONNECTING", path)
    b = find(srv, port, "WSREJECT", path)
    assert a < b
    assert not line_re(port, "WSCONNECT", path).search(srv.stdout())


@pytest.mark.servers("laurel", "daphne")
def test_access_log_disconnect_on_drop(serve):
    srv = serve(WS_APP)
    ws = RawWS(srv, "/echo/dropped")
    port = ws.sockname[1]
    find(srv, port, "WSCONNECT", "/echo/dropped")
    ws.close()
    find(srv, port, "WSDISCONNECT", "/echo/dropped")


@pytest.mark.laurel_only
def test_access_log_off_at_verbosity_0(serve):
    srv = serve(WS_APP, "-v", "0")
    with RawWS(srv, "/echo") as ws:
        ws.send_text("x")
        ws.recv_text()
    time.sleep(0.3)
    assert "WSCONNECT" not in srv.stdout()


@pytest.mark.laurel_only
def test_websocket_timeout_logged(serve):
    srv = serve(WS_APP, "--websocket_timeout", "1")
    with RawWS(srv, "/wait") as ws:
        port = ws.sockname[1]
        code, _, _ = ws.expect_close(timeout=5)
        assert code == 1000
    find(srv, port, "WSDISCONNECT", "/wait")
    err = srv.stderr()
    assert re.search(r"(?i)timeout|timed out|lifetime", err), err[-2000:]


# --------------------------------------------------------------------------- shutdown

@pytest.mark.laurel_only
def test_sigterm_closes_websockets_1012(serve, tmp_path):
    record = tmp_path / "record.jsonl"
    srv = serve(WS_APP, env={"LAUREL_TEST_RECORD": str(record)})
    keys = [rid(), rid()]
    socks = [RawWS(srv, "/wait" + q(id=k)) for k in keys]
    try:
        for ws in socks:
            ws.send_text("up")
            assert ws.recv_text() == "up"
        srv.signal(signal.SIGTERM)
        for ws in socks:
            code, _, seen = ws.expect_close(timeout=5)
            assert code == 1012, (code, seen)
            assert ws.eof(5)
        assert srv.wait_exit(15) == 0
    finally:
        for ws in socks:
            ws.close()
    lines = [json.loads(x) for x in record.read_text().splitlines()]
    got = {x["id"]: x for x in lines}
    for k in keys:
        assert k in got, f"the app recorded no disconnect for {k}: {lines}"
        assert got[k]["disconnect"]["type"] == "websocket.disconnect", got[k]


@pytest.mark.laurel_only
def test_sigterm_with_client_ignoring_close(serve):
    """A client that never answers the close frame does not hold the server past the
    graceful timeout."""
    srv = serve(WS_APP, "--graceful-timeout", "2")
    ws = RawWS(srv, "/wait")
    try:
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        code, _, _ = ws.expect_close(timeout=5, reply=False)
        assert code == 1012
        srv.wait_exit(8)
        assert time.monotonic() - t0 < 6
    finally:
        ws.close()


@pytest.mark.laurel_only
def test_no_new_websockets_during_shutdown(serve):
    srv = serve(WS_APP, "--graceful-timeout", "3")
    ws = RawWS(srv, "/wait")
    try:
        srv.signal(signal.SIGTERM)
        ws.expect_close(timeout=5, reply=False)  # keep it open: the server is draining
        time.sleep(0.2)
        try:
            late = RawWS(srv, "/echo", timeout=2)
        except (OSError, HandshakeFailed):
            pass  # refused, or not upgraded
        else:
            late.close()
            pytest.fail("a new WebSocket was accepted during shutdown")
    finally:
        ws.close()
    srv.wait_exit(10)
