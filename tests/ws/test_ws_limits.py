"""WebSocket size limits (cli.md --websocket-max-message-size / --websocket-max-frame-size;
security.md limits table, "daphne 4.2.2 unbounded WebSocket size", wslay allocating the
declared payload)."""

import os
import struct
import time

import pytest

from conftest import _Factory
from wshelpers import (OP_BINARY, OP_CONT, OP_TEXT, WS_APP, RawWS, bystander_check, frame,
                       proc_status, q, rid, server_pid, wsserver)  # noqa: F401 (fixture)

MiB = 1 << 20


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """Frames up to 500 bytes, messages up to 1000 bytes."""
    factory = _Factory(tmp_path_factory.mktemp("limited"))
    s = factory(WS_APP, "--websocket-max-message-size", "1000",
                "--websocket-max-frame-size", "500")
    yield s
    problems = factory.finalize()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def fragments(opcode, sizes):
    out = b""
    for i, n in enumerate(sizes):
        out += frame(opcode if i == 0 else OP_CONT, b"m" * n, fin=i == len(sizes) - 1)
    return out


def echoes(srv, data, expect_len, opcode=OP_BINARY):
    with RawWS(srv, "/echo", timeout=10) as ws:
        ws.send_raw(data)
        op, got = ws.recv_message()
        assert op == opcode and len(got) == expect_len
        ws.send_close(1000)
        ws.expect_close(reply=False)


def closes_1009(srv, data):
    key = rid()
    bystander = RawWS(srv, "/echo")
    try:
        with RawWS(srv, "/echo" + q(id=key), timeout=10) as ws:
            try:
                ws.send_raw(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            code, reason, seen = ws.expect_close()
            assert code == 1009, (code, reason)
            assert not seen, f"the message was delivered: {seen}"
            assert ws.eof()
        res = srv.result(key)
        assert res["received"] == [], "part of the oversized message reached the app"
        assert res["disconnect"]["type"] == "websocket.disconnect"
        bystander_check(srv, bystander)
    finally:
        bystander.close()


# --------------------------------------------------------------------------- defaults

def test_default_message_of_1mib_accepted(wsserver):
    echoes(wsserver, frame(OP_BINARY, os.urandom(MiB)), MiB)


@pytest.mark.laurel_only  # daphne 4.0: no limit (4.2.2: 1 MiB); uvicorn: 16 MiB
def test_default_message_over_1mib_1009(wsserver):
    closes_1009(wsserver, frame(OP_BINARY, b"x" * (MiB + 1)))


@pytest.mark.laurel_only
def test_default_limit_counts_fragments(wsserver):
    closes_1009(wsserver, fragments(OP_BINARY, [256 * 1024] * 4 + [1]))


@pytest.mark.laurel_only
def test_1024_fragments_accepted(wsserver):
    echoes(wsserver, fragments(OP_TEXT, [1] * 1024), 1024, OP_TEXT)


@pytest.mark.laurel_only
def test_1025_fragments_1009(wsserver):
    closes_1009(wsserver, fragments(OP_TEXT, [1] * 1025))


@pytest.mark.laurel_only
def test_many_empty_fragments_1009(wsserver):
    closes_1009(wsserver, fragments(OP_BINARY, [0] * 5000))


@pytest.mark.laurel_only
def test_fragment_count_resets_per_message(wsserver):
    with RawWS(wsserver, "/echo") as ws:
        for _ in range(3):
            ws.send_raw(fragments(OP_TEXT, [1] * 1000))
            assert ws.recv_text() == "m" * 1000


@pytest.mark.servers("laurel", "uvicorn")
@pytest.mark.parametrize("extra", [0, 1000], ids=["header-only", "header+1000"])
def test_huge_declared_frame_not_allocated(wsserver, extra):
    """Only a frame header declaring 2 GiB (and maybe a little payload): the close 1009
    comes at once, without waiting for the payload, and the server does not allocate
    it."""
    pid = server_pid(wsserver)
    rss0, peak0 = proc_status(pid, "VmRSS"), proc_status(pid, "VmPeak")
    bystander = RawWS(wsserver, "/echo")
    try:
        with RawWS(wsserver, "/echo") as ws:
            head = struct.pack("!BBQ", 0x82, 0x80 | 127, 2 << 30) + os.urandom(4)
            t0 = time.monotonic()
            ws.send_raw(head + b"\0" * extra)
            code, _, _ = ws.expect_close(timeout=2)
            took = time.monotonic() - t0
            assert code == 1009
            assert took < 1.0, f"close 1009 took {took:.2f}s"
            assert ws.eof()
        rss1, peak1 = proc_status(pid, "VmRSS"), proc_status(pid, "VmPeak")
        assert rss1 - rss0 < 32 * 1024, f"RSS grew {rss0} -> {rss1} kB"
        assert peak1 - peak0 < 256 * 1024, f"VmPeak grew {peak0} -> {peak1} kB"
        bystander_check(wsserver, bystander)
    finally:
        bystander.close()


@pytest.mark.laurel_only
def test_huge_declared_text_fragment_not_allocated(wsserver):
    pid = server_pid(wsserver)
    peak0 = proc_status(pid, "VmPeak")
    with RawWS(wsserver, "/echo") as ws:
        head = struct.pack("!BBQ", 0x00, 0x80 | 127, (1 << 63) - 1) + os.urandom(4)
        ws.send_raw(frame(OP_TEXT, b"start", fin=False) + head + b"\0" * 1000)
        code, _, _ = ws.expect_close(timeout=2)
        assert code == 1009
    assert proc_status(pid, "VmPeak") - peak0 < 256 * 1024
    bystander_check(wsserver)


def test_server_sends_messages_above_the_incoming_limit(wsserver):
    with RawWS(wsserver, "/send-big?size=%d" % (2 * MiB), timeout=10) as ws:
        assert ws.recv_bytes() == b"s" * (2 * MiB)


# --------------------------------------------------------------------------- flags

@pytest.mark.parametrize("sizes", [[500], [250, 250], [400, 400], [500, 500], [100] * 10])
def test_within_limits(limited, sizes):
    echoes(limited, fragments(OP_BINARY, sizes), sum(sizes))


def test_frame_over_frame_limit_1009(limited):
    closes_1009(limited, frame(OP_BINARY, b"x" * 501))


def test_fragment_over_frame_limit_1009(limited):
    closes_1009(limited, fragments(OP_BINARY, [100, 501]))


def test_fragmented_message_over_message_limit_1009(limited):
    closes_1009(limited, fragments(OP_BINARY, [400, 400, 201]))


def test_text_over_message_limit_1009(limited):
    closes_1009(limited, fragments(OP_TEXT, [500, 500, 1]))


def test_message_limit_alone(serve):
    srv = serve(WS_APP, "--websocket-max-message-size", "1000")
    echoes(srv, frame(OP_BINARY, b"y" * 1000), 1000)
    closes_1009(srv, frame(OP_BINARY, b"y" * 1001))
    closes_1009(srv, fragments(OP_BINARY, [300] * 4))


def test_frame_limit_alone(serve):
    srv = serve(WS_APP, "--websocket-max-frame-size", "500")
    echoes(srv, fragments(OP_BINARY, [500] * 6), 3000)
    closes_1009(srv, frame(OP_BINARY, b"y" * 501))


def test_zero_means_unlimited(serve):
    srv = serve(WS_APP, "--websocket-max-message-size", "0", "--websocket-max-frame-size", "0")
    echoes(srv, frame(OP_BINARY, os.urandom(3 * MiB)), 3 * MiB)
    echoes(srv, fragments(OP_BINARY, [MiB] * 3), 3 * MiB)
