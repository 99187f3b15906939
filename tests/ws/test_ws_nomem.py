"""Out of memory on WebSocket connections (security.md "Memory"): when wslay cannot
allocate (its per-connection context, made when frames move, or a frame to queue) or
zlib cannot (a compressor, made for the first compressed message each way and again
after a quiet ping interval), that connection is closed, the app gets
websocket.disconnect 1006, one rate-limited line is logged, and every other connection
and the server go on.

The failure is real: tests/shim/nomem.c (LD_PRELOAD) makes the allocations made by
libwslay's (or libz's) own code return NULL while a flag file exists. Release build
only: a sanitizer's runtime owns malloc and cannot be preloaded over."""

import asyncio

import pytest
import websockets

from conftest import LAUREL_BIN, sanitized
from wshelpers import WS_APP, RawWS, WSClosed, q, rid

pytestmark = pytest.mark.laurel_only

NOMEM = LAUREL_BIN.parent / "nomem.so"
LOG = "Out of memory for WebSocket frames or compression: closed"


@pytest.fixture
def nomem(serve, tmp_path):
    """start(app, *args, lib=...): a server whose allocations from lib's code fail while
    the returned flag file exists."""
    if sanitized():
        pytest.skip("a sanitizer build owns malloc: nomem.so cannot be preloaded over it")
    if not NOMEM.is_file():
        pytest.fail(f"{NOMEM} is missing: build it (make build)")
    flag = tmp_path / "nomem.flag"

    def start(app, *args, lib="libwslay"):
        env = {"LD_PRELOAD": str(NOMEM), "LAUREL_NOMEM_LIB": lib,
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


@pytest.mark.parametrize("way", ["inflate", "deflate"])
def test_no_memory_for_a_compressor_closes_1011(nomem, way):
    """A client that negotiated permessage-deflate: zlib cannot make the inflater for its
    first compressed message, or the deflater for the app's first long answer. The
    client gets close 1011 (the stream's state is lost), the app 1006."""
    start, flag = nomem
    srv = start(WS_APP, lib="libz")
    key = rid()

    async def main():
        async with websockets.connect("ws://127.0.0.1:%d/echo" % srv.port) as bystander:
            await bystander.send("b" * 200)
            assert await bystander.recv() == "b" * 200
            url = "ws://127.0.0.1:%d/echo%s" % (srv.port, q(id=key))
            async with websockets.connect(url) as ws:
                assert "permessage-deflate" in ws.response_headers["Sec-WebSocket-Extensions"]
                if way == "deflate":  # the inflater is made (and kept) for this one
                    await ws.send("s" * 10)
                    assert await ws.recv() == "s" * 10  # short: sent uncompressed
                flag.touch()
                await ws.send("m" * 1000)
                with pytest.raises(websockets.ConnectionClosed) as e:
                    async with asyncio.timeout(5):
                        await ws.recv()
                assert e.value.rcvd is not None and e.value.rcvd.code == 1011, e.value
            flag.unlink()
            await bystander.send("after")
            assert await bystander.recv() == "after"

    asyncio.run(asyncio.wait_for(main(), 30))
    d = srv.result(key)
    assert [m.get("text_len") for m in d["received"]] == (
        [10, 1000] if way == "deflate" else []), d
    assert d["disconnect"]["code"] == 1006, d
    text = srv.wait_output(LOG, "stderr", 5)
    assert LOG + " 1 connection " in text, text[-2000:]
