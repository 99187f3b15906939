"""Keepalive pings and WebSocket timeouts (cli.md --ping-interval, --ping-timeout,
--websocket_timeout, --websocket_connect_timeout; security.md limits table)."""

import asyncio
import socket
import time

import pytest
import websockets

from conftest import Reader
from wshelpers import (OP_CLOSE, OP_PING, OP_PONG, WS_APP, RawWS, WSClosed,
                       bystander_check, handshake_bytes, new_key, parse_close, q, rid)


def next_frame(ws, timeout):
    try:
        return ws.recv_frame(timeout)
    except socket.timeout:
        return None


# --------------------------------------------------------------------------- pings

def test_idle_connection_gets_pings(serve):
    srv = serve(WS_APP, "--ping-interval", "1", "--ping-timeout", "5")
    with RawWS(srv, "/wait") as ws:
        t0 = time.monotonic()
        times = []
        while len(times) < 2:
            f = next_frame(ws, 4)
            assert f is not None, f"no ping within 4 s (pings so far at {times})"
            assert f.opcode == OP_PING, f
            assert not f.masked
            times.append(time.monotonic() - t0)
            ws.send_frame(OP_PONG, f.payload)
        assert 0.7 <= times[0] <= 2.6, times
        assert 0.7 <= times[1] - times[0] <= 2.6, times
        ws.send_text("still-open")
        assert ws.recv_text() == "still-open"


@pytest.mark.laurel_only  # daphne 4.0 closes before the timeout has passed
def test_no_pong_closes_connection(serve):
    srv = serve(WS_APP, "--ping-interval", "1", "--ping-timeout", "1")
    key = rid()
    with RawWS(srv, "/wait" + q(id=key)) as ws:
        t0 = time.monotonic()
        f = next_frame(ws, 3)
        assert f is not None and f.opcode == OP_PING, f
        t_ping = time.monotonic() - t0
        code = None
        while True:  # never answer
            try:
                f = ws.recv_frame(max(0.01, 6 - (time.monotonic() - t0)))
            except WSClosed:
                break
            except socket.timeout:
                pytest.fail("connection still open 6 s after an unanswered ping")
            if f.opcode == OP_CLOSE:
                code = parse_close(f.payload)[0]
                assert ws.eof(3), "no TCP close after the close frame"
                break
            assert f.opcode == OP_PING, f
        took = time.monotonic() - t0
        assert code in (1011, None), f"close code {code}"
        assert took >= t_ping + 0.7, f"closed {took - t_ping:.2f}s after the ping"
    assert srv.result(key)["disconnect"]["type"] == "websocket.disconnect"
    bystander_check(srv)  # a new connection (an idle old one would time out too)


@pytest.mark.laurel_only  # daphne 4.0 pings less often than asked
def test_pong_answering_raw_client_stays(serve):
    srv = serve(WS_APP, "--ping-interval", "1", "--ping-timeout", "1")
    with RawWS(srv, "/wait") as ws:
        t0, pings = time.monotonic(), 0
        while time.monotonic() - t0 < 4.2:
            f = next_frame(ws, 0.2)
            if f is None:
                continue
            assert f.opcode == OP_PING, f"unexpected frame {f}"
            pings += 1
            ws.send_frame(OP_PONG, f.payload)
        assert pings >= 2, pings  # idle is counted from the last pong
        ws.send_text("alive")
        assert ws.recv_text() == "alive"


def test_websockets_client_stays_connected(serve):
    srv = serve(WS_APP, "--ping-interval", "1", "--ping-timeout", "1")

    async def main():
        async with websockets.connect(f"ws://127.0.0.1:{srv.port}/echo", ping_interval=None,
                                      open_timeout=5, close_timeout=2) as c:
            await asyncio.sleep(3.5)
            await c.send("after-idle")
            return await asyncio.wait_for(c.recv(), 5)

    assert asyncio.run(main()) == "after-idle"


@pytest.mark.laurel_only
def test_no_ping_while_traffic_flows(serve):
    srv = serve(WS_APP, "--ping-interval", "1", "--ping-timeout", "5")
    with RawWS(srv, "/echo") as ws:
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < 2.5:
            ws.send_text(f"m{i}")
            f = ws.recv_frame()
            assert f.opcode != OP_PING, f"ping at {time.monotonic() - t0:.2f}s despite traffic"
            assert f.payload == f"m{i}".encode()
            i += 1
            time.sleep(0.25)


# --------------------------------------------------------------------------- lifetime

@pytest.mark.parametrize("flag", ["--websocket_timeout", "--websocket-timeout"])
def test_websocket_timeout_closes_1000(serve, flag):
    srv = serve(WS_APP, flag, "1")
    key = rid()
    with RawWS(srv, "/wait" + q(id=key)) as ws:
        t0 = time.monotonic()
        ws.send_text("early")
        assert ws.recv_text() == "early"
        code, _, _ = ws.expect_close(timeout=5)
        took = time.monotonic() - t0
        assert code == 1000
        assert 0.8 <= took <= 3, took
        assert ws.eof()
    assert srv.result(key)["disconnect"]["type"] == "websocket.disconnect"
    with RawWS(srv, "/echo") as ws:  # new connections get their own lifetime
        ws.send_text("fresh")
        assert ws.recv_text() == "fresh"


@pytest.mark.parametrize("flag", ["--websocket_connect_timeout",
                                  "--websocket-connect-timeout"])
@pytest.mark.laurel_only  # daphne 4.0 answers with a broken response
def test_connect_timeout_403(serve, flag):
    srv = serve(WS_APP, flag, "1")
    bystander = RawWS(srv, "/echo")
    try:
        s = srv.connect()
        try:
            t0 = time.monotonic()
            s.sendall(handshake_bytes("/never-accept", new_key()))
            rd = Reader(s)
            r = rd.read_response(timeout=5)
            took = time.monotonic() - t0
            assert r.status == 403, r
            assert 0.8 <= took <= 3, took
            assert rd.closed(5)
        finally:
            s.close()
        bystander_check(srv, bystander)
    finally:
        bystander.close()


@pytest.mark.laurel_only  # daphne 4.0 drops the connection
def test_connect_timeout_stops_at_accept(serve):
    srv = serve(WS_APP, "--websocket_connect_timeout", "1")
    with RawWS(srv, "/accept-after?t=0.4") as ws:
        time.sleep(1.5)
        ws.send_text("after-connect-timeout")
        assert ws.recv_text() == "after-connect-timeout"


@pytest.mark.laurel_only  # daphne 4.0 rejects at once with -1
def test_connect_timeout_minus_one_is_infinite(serve):
    srv = serve(WS_APP, "--websocket_connect_timeout", "-1")
    t0 = time.monotonic()
    with RawWS(srv, "/accept-after?t=1.5") as ws:
        assert time.monotonic() - t0 >= 1.4
        ws.send_text("ok")
        assert ws.recv_text() == "ok"
