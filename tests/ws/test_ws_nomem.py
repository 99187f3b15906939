"""Out of memory for WebSocket frames (security.md "Memory"): when wslay cannot allocate
(its per-connection context, made when frames move, or a frame to queue), that
connection is closed, the app gets websocket.disconnect 1006, one rate-limited line is
logged, and every other connection and the server go on.

The failure is real: tests/shim/nomem.c (LD_PRELOAD) makes libwslay's own malloc/calloc/
realloc calls return NULL while a flag file exists. Release build only: a sanitizer's
runtime owns malloc and cannot be preloaded over."""

import asyncio
import subprocess

import pytest
import websockets

from conftest import LAUREL_BIN
from wshelpers import WS_APP, RawWS, WSClosed, q, rid

pytestmark = pytest.mark.laurel_only

NOMEM = LAUREL_BIN.parent / "nomem.so"
LOG = "Out of memory for WebSocket frames: closed"


def _sanitized():
    out = subprocess.run(["ldd", str(LAUREL_BIN)], capture_output=True, text=True).stdout
    return "libasan" in out or "libubsan" in out


@pytest.fixture
def nomem(serve, tmp_path):
    """serve(app) with wslay's allocations failing while the returned flag file exists."""
    if _sanitized():
        pytest.skip("a sanitizer build owns malloc: nomem.so cannot be preloaded over it")
    if not NOMEM.is_file():
        pytest.fail(f"{NOMEM} is missing: build it (make build)")
    flag = tmp_path / "nomem.flag"

    def start(app, *args):
        env = {"LD_PRELOAD": str(NOMEM), "LAUREL_NOMEM_LIB": "libwslay",
               "LAUREL_NOMEM_FLAG": str(flag)}
        return serve(app, *args, env=env)

    return start, flag


def test_frames_from_the_client_without_memory_close_that_connection(nomem):
    start, flag = nomem
    srv = start(WS_APP)
    key = rid()
    bystander = RawWS(srv, "/echo")
    victim = RawWS(srv, "/echo" + q(id=key))
    try:
        for ws in (bystander, victim):
            ws.send_text("before")
            assert ws.recv_text() == "before"
        flag.touch()
        victim.send_text("no room")  # wslay's context is made on this frame: it fails
        frames = []
        with pytest.raises(WSClosed):  # socket.timeout: the connection stayed open
            while True:
                frames.append(victim.recv_frame(5))
        assert frames == []  # no echo, no close frame: there is no memory for one
        flag.unlink()
        d = srv.result(key)
        assert [m.get("text_len") for m in d["received"]] == [6], d
        assert d["disconnect"]["code"] == 1006, d
        text = srv.wait_output(LOG, "stderr", 5)
        assert "ERROR" in text and LOG + " 1 connection " in text, text[-2000:]
        bystander.send_text("after")
        assert bystander.recv_text() == "after"
        fresh = RawWS(srv, "/echo")
        fresh.send_text("new")
        assert fresh.recv_text() == "new"
        fresh.close()
    finally:
        bystander.close()
        victim.close()


def test_pushes_without_memory_close_those_connections(nomem):
    """The notification path: group messages relayed to idle connections. Each send
    needs wslay's context again; without memory the connection closes, and the server
    serves the next connection once memory is back."""
    start, flag = nomem
    srv = start("tests.apps.ticker_app:app", "--graceful-timeout", "1")  # its ticker runs on
    url = "ws://127.0.0.1:%d/" % srv.port

    async def main():
        conns = [await websockets.connect(url) for _ in range(3)]
        for ws in conns:
            assert (await ws.recv()).startswith("pid ")
            await ws.recv()  # a tick
        flag.touch()
        for ws in conns:
            with pytest.raises(websockets.ConnectionClosed) as e:
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()
            assert e.value.rcvd is None, e.value  # no close frame: no memory for one
        flag.unlink()
        async with websockets.connect(url) as ws:
            assert (await ws.recv()).startswith("pid ")
            ticks = [int(await ws.recv()) for _ in range(3)]
            assert ticks == sorted(ticks) and len(set(ticks)) == 3, ticks

    asyncio.run(asyncio.wait_for(main(), 30))
    text = srv.wait_output(LOG, "stderr", 5)
    assert text.count(LOG) == 1, text[-2000:]  # one line a minute, whatever the count
