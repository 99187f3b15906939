"""Clients that vanish (security.md "Faults": resetting mid-frame; asgi.md: disconnect
code 1006 for a dropped TCP connection), and many clients at once."""

import asyncio
import socket
import struct
import time

import pytest
import websockets

from conftest import kind
from wshelpers import (OP_BINARY, OP_TEXT, RawWS, bystander_check, frame, handshake_bytes,
                       new_key, q, rid, wsserver)  # noqa: F401 (fixture)


def rst(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


DROPS = {
    "close": lambda ws: ws.close(),
    "rst": lambda ws: rst(ws.sock),
    "half-frame-close": lambda ws: (ws.send_raw(frame(OP_TEXT, b"x" * 200)[:60]), ws.close()),
    "half-frame-rst": lambda ws: (ws.send_raw(frame(OP_TEXT, b"x" * 200)[:60]), rst(ws.sock)),
    "half-header-rst": lambda ws: (ws.send_raw(b"\x81"), rst(ws.sock)),
    "mid-fragmented-message": lambda ws: (
        ws.send_raw(frame(OP_BINARY, b"a" * 50, fin=False)), rst(ws.sock)),
    "shutdown-write": lambda ws: (ws.sock.shutdown(socket.SHUT_WR), time.sleep(0.3),
                                  ws.close()),
}


@pytest.mark.parametrize("how", list(DROPS))
def test_abrupt_client_drop_gives_1006(wsserver, how):
    key = rid()
    bystander = RawWS(wsserver, "/echo")
    try:
        ws = RawWS(wsserver, "/echo" + q(id=key))
        ws.send_text("before")
        assert ws.recv_text() == "before"
        DROPS[how](ws)
        ws.close()
        d = wsserver.result(key)["disconnect"]
        assert d["type"] == "websocket.disconnect"
        assert d["code"] == 1006, d
        if kind() == "laurel":  # uvicorn 0.17 / daphne 4.0 send no reason
            assert d["reason"] == "", d
        bystander_check(wsserver, bystander)
    finally:
        bystander.close()


@pytest.mark.servers("laurel", "daphne")  # uvicorn 0.17 never tells the app
@pytest.mark.parametrize("how", ["close", "rst"])
def test_drop_before_accept(wsserver, how):
    """The client leaves while the app is still deciding: accepting later is harmless
    and the app gets websocket.disconnect 1006."""
    key = rid()
    s = wsserver.connect()
    s.sendall(handshake_bytes("/accept-after" + q(t=0.5, id=key), new_key()))
    time.sleep(0.1)
    if how == "rst":
        rst(s)
    else:
        s.close()
    d = wsserver.result(key)["disconnect"]
    assert d["type"] == "websocket.disconnect" and d["code"] == 1006, d
    bystander_check(wsserver)


@pytest.mark.parametrize("cut", [10, 40])
def test_drop_mid_handshake(wsserver, cut):
    marker = rid()
    s = wsserver.connect()
    s.sendall(handshake_bytes(f"/echo/{marker}", new_key())[:cut])
    rst(s)
    time.sleep(0.1)
    assert not wsserver.seen(marker)
    bystander_check(wsserver)


def test_drop_while_app_sends(wsserver):
    """The peer resets while the app's send() is waiting on a full queue: the app's
    send finishes (dropped or raising), it does not hang, and the server carries on."""
    key = rid()
    ws = RawWS(wsserver, "/flood" + q(n=1000, size=65536, id=key))
    ws.recv_message()
    time.sleep(0.5)
    rst(ws.sock)
    deadline = time.monotonic() + 5
    while True:
        res = wsserver.result(key)
        if res["done"] or res["error"]:
            break
        assert time.monotonic() < deadline, f"app's send() still stuck after the reset: {res}"
        time.sleep(0.1)
    bystander_check(wsserver)


def test_200_concurrent_clients(wsserver):
    n = 200

    async def one(i):
        async with websockets.connect(f"ws://127.0.0.1:{wsserver.port}/echo?c={i}",
                                      open_timeout=20, close_timeout=5,
                                      ping_interval=None) as c:
            await c.send(f"hello-{i}")
            got = await asyncio.wait_for(c.recv(), 20)
            await c.send(b"bin-%d" % i)
            got2 = await asyncio.wait_for(c.recv(), 20)
            return got, got2

    async def main():
        return await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)

    t0 = time.monotonic()
    results = asyncio.run(main())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} of {n} failed, e.g. {errors[:3]!r}"
    assert results == [(f"hello-{i}", b"bin-%d" % i) for i in range(n)]
    assert time.monotonic() - t0 < 30
    bystander_check(wsserver)
