"""Slow readers (security.md "Exhaustion": slow reader, bounded write queue, then close).

A client that never reads its response: the app's send() waits above the write
high-water mark (256 KiB), so the server holds a bounded amount; --send-timeout S
(default 30) after the client last took a byte, the connection is closed, one log line
says so, and the app's remaining sends return at once (as after any client that left),
so the app finishes. A client that reads slowly but keeps reading is never cut off.

The WebSocket form is in tests/ws/test_ws_backpressure.py."""

import os
import re
import socket
import time
import uuid

import pytest

from conftest import Reader, req

MiB = 1 << 20
LOG = r"the client has read nothing for 1 s \(\d+ bytes waiting\): closing"


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise KeyError("VmRSS")


def small_rcvbuf_conn(srv):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.settimeout(5)
    s.connect((srv.host, srv.port))
    return s


@pytest.mark.laurel_only
def test_client_that_never_reads_is_closed(serve):
    srv = serve("tests.apps.basic:app", "--send-timeout", "1")
    rss0 = rss_kb(srv.proc.pid)
    key = uuid.uuid4().hex
    s = small_rcvbuf_conn(srv)
    try:
        # 320 MB if the server queued it all: the app must be held back instead
        s.sendall(req(f"/after-leave?id={key}&n=5000&size=65536&delay=0"))
        time.sleep(0.5)
        rss_blocked = rss_kb(srv.proc.pid)
        t0 = time.monotonic()
        text = srv.wait_output(LOG, stream="stderr", timeout=15)
        waited = time.monotonic() - t0
        assert re.search(LOG, text), text[-2000:]
        assert waited < 10, waited
        # other clients were served all along
        srv.assert_alive()
        res = srv.result(key, timeout=10)
        # the app was held by send() (bounded output), then let go: its later sends
        # return at once (dropped), as after any client that left
        assert res["finished"] is True and res["error"] is None, res
        if not os.environ.get("ASAN_OPTIONS"):  # ASan's quarantine keeps freed memory
            assert rss_blocked - rss0 < 64 * 1024, (rss0, rss_blocked)
        # the client sees what had fitted in the socket buffers, then the end
        s.settimeout(5)
        got = 0
        try:
            while True:
                b = s.recv(1 << 20)
                if not b:
                    break
                got += len(b)
        except ConnectionResetError:
            pass
        assert 0 < got < 64 * MiB, got
    finally:
        s.close()


@pytest.mark.laurel_only
def test_slow_but_steady_reader_is_served(serve):
    """Reading 64 KiB every 0.3 s for 3 s (three times the timeout), then the rest:
    every byte arrives, because the timeout counts from the last progress."""
    srv = serve("tests.apps.basic:app", "--send-timeout", "1")
    n, size = 200, 65536
    s = small_rcvbuf_conn(srv)
    try:
        s.sendall(req(f"/stream?n={n}&size={size}&cl=1"))
        time.sleep(0.6)  # the server blocks on a full socket: the clock runs
        r = Reader(s)
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:
            r.read_some(len(r.buf) + 65536, timeout=5)
            time.sleep(0.3)
        resp = r.read_response(timeout=30)
        assert resp.status == 200
        assert len(resp.body) == n * size
    finally:
        s.close()
    assert "has read nothing" not in srv.stderr()


@pytest.mark.laurel_only
def test_send_timeout_zero_never_closes(serve):
    srv = serve("tests.apps.basic:app", "--send-timeout", "0")
    s = small_rcvbuf_conn(srv)
    try:
        s.sendall(req("/stream?n=200&size=65536&cl=1"))
        time.sleep(2.5)
        r = Reader(s)
        resp = r.read_response(timeout=30)
        assert resp.status == 200 and len(resp.body) == 200 * 65536
    finally:
        s.close()
    assert "has read nothing" not in srv.stderr()
