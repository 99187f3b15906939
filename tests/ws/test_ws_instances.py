"""WebSocket application instances (asgi.md "Application instances"), the close
handshake timeout (security.md: the server adds close timeouts) and memory across
connect/disconnect cycles (security.md "Faults", daphne #373)."""

import re
import socket
import time

import pytest

from conftest import asan_build
from wshelpers import (OP_CLOSE, OP_CONT, OP_TEXT, WS_APP, RawWS, WSClosed, bystander_check,
                       frame, q, rid, rss_kb, server_pid, wsserver)  # noqa: F401 (fixture)


@pytest.mark.servers("laurel", "uvicorn")  # daphne 4.0 runs no asyncio TaskGroup checks
def test_instance_is_a_task_on_a_running_loop(wsserver):
    with RawWS(wsserver, "/aio", timeout=10) as ws:
        r = ws.recv_json(timeout=10)
    assert r == {"task": True, "loop_running": True, "timeout_ok": True,
                 "timeout_fires": True, "taskgroup": 3, "executor_other_thread": True,
                 "sync_to_async": "a2s", "call_soon_threadsafe": "cst"}, r


@pytest.mark.laurel_only
def test_instance_cancelled_after_application_close_timeout(serve):
    srv = serve(WS_APP, "--application-close-timeout", "1")
    key = rid()
    with RawWS(srv, "/ignore-disconnect" + q(id=key)) as ws:
        ws.send_close(4001, "leaving")
        ws.expect_close(reply=False)
    deadline = time.monotonic() + 6
    while True:
        res = srv.result(key)
        if res["state"] != "ignoring":
            break
        assert time.monotonic() < deadline, "the instance was never cancelled"
        time.sleep(0.1)
    assert res["state"] == "cancelled", res
    assert 0.7 <= res["after"] <= 3, res
    # the disconnect was delivered before the cancellation
    assert res["disconnect"] == {"type": "websocket.disconnect", "code": 4001,
                                 "reason": "leaving"}, res
    err = srv.wait_output(r"WARNING.*ignore-disconnect", stream="stderr", timeout=3)
    assert re.search(r"WARNING.*ignore-disconnect", err), err[-2000:]
    bystander_check(srv)


@pytest.mark.laurel_only
def test_close_handshake_timeout(wsserver):
    """The app closes; the client never answers the close frame nor closes TCP: the
    server gives up after a bounded wait, and the app still gets its disconnect."""
    key = rid()
    with RawWS(wsserver, "/close" + q(id=key, code=1000)) as ws:
        t0 = time.monotonic()
        f = ws.recv_frame()
        assert f.opcode == OP_CLOSE
        try:
            while True:
                ws.recv_frame(timeout=max(0.01, 9 - (time.monotonic() - t0)))
        except WSClosed:
            pass
        except socket.timeout:
            pytest.fail("TCP still open 9 s after an unanswered close frame")
        took = time.monotonic() - t0
        assert took < 8.5, f"TCP still open {took:.1f}s after an unanswered close"
    assert wsserver.result(key)["disconnect"]["type"] == "websocket.disconnect"
    bystander_check(wsserver)


@pytest.mark.laurel_only
def test_idle_connections_keep_no_engine_buffers(serve):
    """A WebSocket that has received and sent and is now quiet holds no frame buffers:
    wslay's context (about 8.8 KiB, a 4 KiB input and a 4 KiB output buffer) is freed
    between frames and made again for the next one. RSS per such connection, the echo
    app's own Python objects included, stays under 8 KiB (11 with the context kept),
    and each connection still works afterwards, a message split over many reads
    included."""
    srv = serve(WS_APP)
    pid = server_pid(srv)
    n = 400

    def open_echoing(count):
        out = []
        for i in range(count):
            ws = RawWS(srv, "/echo")
            ws.send_text(f"hello {i}")
            assert ws.recv_text() == f"hello {i}"
            out.append(ws)
        return out

    warm = open_echoing(40)  # first-use allocations
    for ws in warm:
        ws.close()
    time.sleep(0.3)
    rss0 = rss_kb(pid)
    conns = open_echoing(n)
    try:
        time.sleep(0.3)
        rss1 = rss_kb(pid)
        # the context comes back for the next frames: whole, fragmented and cut up
        for i, ws in enumerate(conns[:50]):
            ws.send_text(f"again {i}")
            assert ws.recv_text() == f"again {i}"
            ws.send_frame(OP_TEXT, b"part one, ", fin=False)
            time.sleep(0.002)
            last = frame(OP_CONT, b"part two", fin=True)
            for k in range(0, len(last), 3):
                ws.send_raw(last[k:k + 3])
                time.sleep(0.001)
            assert ws.recv_text() == "part one, part two"
        conns[0].send_close(1012)  # a code wslay is shown as 1000 (ws.c)
        assert conns[0].expect_close(reply=False)[0] == 1012
    finally:
        for ws in conns:
            ws.close()
    per = (rss1 - rss0) / n
    print(f"RSS per quiet connection: {per:.2f} KiB")
    if asan_build(pid):
        pytest.skip(f"ASan build: RSS not meaningful ({per:.2f} KiB)")
    assert per < 8, f"{per:.2f} KiB per quiet WebSocket ({rss0} -> {rss1} kB)"


@pytest.mark.servers("laurel", "uvicorn")
def test_memory_flat_across_connect_disconnect_cycles(wsserver):
    pid = server_pid(wsserver)

    def cycles(n):
        for i in range(n):
            with RawWS(wsserver, "/echo") as ws:
                if i % 2:
                    ws.send_text("x")
                    assert ws.recv_text() == "x"
                    ws.send_close(1000)
                    ws.expect_close(reply=False)
                # else: dropped without a close frame

    cycles(300)  # warm up allocator pools
    time.sleep(0.3)
    rss0 = rss_kb(pid)
    cycles(1500)
    time.sleep(0.3)
    rss1 = rss_kb(pid)
    if asan_build(pid):
        pytest.skip(f"ASan build: RSS not meaningful ({rss0} -> {rss1} kB)")
    assert rss1 - rss0 < 3 * 1024, f"RSS grew {rss0} -> {rss1} kB over 1500 connections"
