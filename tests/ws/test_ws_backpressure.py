"""WebSocket backpressure (asgi.md "Backpressure"; security.md limits table "outgoing
WebSocket queue"): reading pauses while the app has ~32 messages unread; send() waits
while the peer does not read. The server's memory stays bounded either way."""

import os
import select
import time

import pytest

from wshelpers import (OP_BINARY, OP_TEXT, RawWS, bystander_check, frame, q, rid,
                       rss_kb, server_pid, wsserver)  # noqa: F401 (fixture)

MiB = 1 << 20


@pytest.mark.servers("laurel", "uvicorn")  # daphne buffers everything
def test_reading_pauses_while_app_does_not_receive(wsserver):
    pid = server_pid(wsserver)
    rss0 = rss_kb(pid)
    key = rid()
    size = 64 * 1024
    one = frame(OP_BINARY, b"i" * size)
    cap = 96 * MiB  # never push more than this, whatever the server does
    bystander = RawWS(wsserver, "/echo")
    try:
        with RawWS(wsserver, "/noreceive" + q(t=2.5, id=key), timeout=10) as ws:
            assert ws.recv_text() == "sleeping"
            t_accept = time.monotonic()
            s = ws.sock
            s.setblocking(False)
            total, blocked = 0, False
            while total < cap:
                _, w, _ = select.select([], [s], [], 0.5)
                if not w:
                    blocked = True
                    break
                try:
                    off = total % len(one)
                    total += s.send(one[off:])
                except BlockingIOError:
                    continue
            blocked_after = time.monotonic() - t_accept
            rss_blocked = rss_kb(pid)
            assert blocked, f"the client wrote {total >> 20} MiB without ever blocking"
            assert blocked_after < 2.4, "the client only blocked once the app woke up"
            assert total < 32 * MiB, f"{total >> 20} MiB accepted before blocking"
            assert rss_blocked - rss0 < 48 * 1024, f"RSS {rss0} -> {rss_blocked} kB"
            # finish the frame in progress; everything written is delivered once the
            # app reads again
            s.settimeout(10)
            rest = (len(one) - total % len(one)) % len(one)
            s.sendall(one[len(one) - rest:])
            total += rest
            ws.send_close(1000)
            code, _, _ = ws.expect_close(timeout=10)
            assert code == 1000
        res = wsserver.result(key, timeout=10)
        assert res["messages"] == total // len(one), (res, total // len(one))
        assert res["bytes"] == res["messages"] * size
        bystander_check(wsserver, bystander)
    finally:
        bystander.close()


@pytest.mark.servers("laurel", "uvicorn")
def test_send_waits_while_peer_does_not_read(wsserver):
    pid = server_pid(wsserver)
    rss0 = rss_kb(pid)
    key = rid()
    n, size = 1000, 64 * 1024
    bystander = RawWS(wsserver, "/echo")
    try:
        with RawWS(wsserver, "/flood" + q(n=n, size=size, id=key), timeout=10) as ws:
            time.sleep(2)  # not reading
            res = wsserver.result(key)
            rss_stalled = rss_kb(pid)
            assert not res["done"] and res["error"] is None, res
            assert res["sent"] * size < 32 * MiB, \
                f"{res['sent']} of {n} sends completed while the peer did not read"
            assert rss_stalled - rss0 < 48 * 1024, f"RSS {rss0} -> {rss_stalled} kB"
            bystander_check(wsserver, bystander)  # the loop is not blocked
            # reading resumes: everything arrives, in order, and send() completes
            for i in range(n):
                op, data = ws.recv_message(timeout=10)
                assert op == OP_BINARY and len(data) == size, (i, op, len(data))
            assert ws.recv_message(timeout=10) == (OP_TEXT, b"flood-end")
            ws.send_close(1000)
            ws.expect_close(reply=False)
        res = wsserver.result(key)
        assert res["done"] and res["sent"] == n, res
    finally:
        bystander.close()


def test_send_completes_at_once_while_queue_is_small(wsserver):
    """A reading client: 200 small sends finish quickly (no artificial waits)."""
    key = rid()
    with RawWS(wsserver, "/flood" + q(n=200, size=100, id=key)) as ws:
        for _ in range(200):
            assert ws.recv_message() == (OP_BINARY, b"f" * 100)
        assert ws.recv_message() == (OP_TEXT, b"flood-end")
    res = wsserver.result(key)
    assert res["done"] and res["t_done"] < 1.0, res


@pytest.mark.laurel_only
def test_peer_that_never_reads_is_closed_after_send_timeout(serve):
    """security.md "slow reader": send() waits above the high-water mark, and once the
    peer has taken nothing for --send-timeout the connection is closed: one log line,
    the app's pending send() returns (later ones are dropped) and its receive() gets
    websocket.disconnect 1006; everyone else is served."""
    srv = serve("tests.apps.ws_app:app", "--send-timeout", "1")
    pid = server_pid(srv)
    rss0 = rss_kb(pid)
    key = rid()
    bystander = RawWS(srv, "/echo")
    try:
        ws = RawWS(srv, "/flood" + q(n=5000, size=64 * 1024, id=key), timeout=10)
        t0 = time.monotonic()
        time.sleep(0.5)
        rss_blocked = rss_kb(pid)
        text = srv.wait_output(r"has read nothing for 1 s \(\d+ bytes waiting\): closing",
                               stream="stderr", timeout=15)
        assert "has read nothing for 1 s" in text, text[-2000:]
        assert time.monotonic() - t0 < 10
        res = srv.result(key, timeout=10)
        # the sends after the close return at once (dropped), so the app finishes
        assert res["done"] and res["error"] is None, res
        assert res["disconnect"]["type"] == "websocket.disconnect", res
        assert res["disconnect"]["code"] == 1006, res
        if not os.environ.get("ASAN_OPTIONS"):  # ASan's quarantine keeps freed memory
            assert rss_blocked - rss0 < 48 * 1024, (rss0, rss_blocked)
        bystander_check(srv, bystander)
        ws.close()
    finally:
        bystander.close()
