"""Protocol violations by the client (security.md "WebSocket (wslay 1.1.1)": masking,
opcodes, control frames, continuation order, UTF-8, close codes; asgi.md: invalid
UTF-8 → 1007). Each: the exact close code, TCP closed, the app told, others unharmed."""

import os
import struct

import pytest

from wshelpers import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, RawWS, apply_mask,
                       bystander_check, frame, q, rid, wsserver)  # noqa: F401 (fixture)


# daphne (autobahn) drops TCP without a close frame on protocol errors
pytestmark = pytest.mark.servers("laurel", "uvicorn")


def check_close(srv, data, code):
    key = rid()
    bystander = RawWS(srv, "/echo")
    try:
        with RawWS(srv, "/echo" + q(id=key)) as ws:
            try:
                ws.send_raw(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            got, reason, seen = ws.expect_close()
            assert got == code, f"expected close {code}, got {got} {reason!r}; frames {seen}"
            assert not seen, f"data frames before the close: {seen}"
            assert ws.eof(), "TCP not closed after the close handshake"
        d = srv.result(key)["disconnect"]
        assert d["type"] == "websocket.disconnect" and isinstance(d["code"], int), d
        bystander_check(srv, bystander)
    finally:
        bystander.close()


@pytest.mark.parametrize("payload", [
    b"\xff", b"abc\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"abc\xe2\x82", b"\xf4\x90\x80\x80",
], ids=["ff", "fe", "overlong", "surrogate", "truncated", "above-10ffff"])
def test_invalid_utf8_text_1007(wsserver, payload):
    check_close(wsserver, frame(OP_TEXT, payload), 1007)


def test_invalid_utf8_in_fragmented_text_1007(wsserver):
    check_close(wsserver, frame(OP_TEXT, b"ok-", fin=False) + frame(OP_CONT, b"\xff", fin=False)
                + frame(OP_CONT, b"end"), 1007)


def test_invalid_utf8_split_across_fragments_1007(wsserver):
    # \xe2\x82 then \x41: a broken sequence only visible across the fragment boundary
    check_close(wsserver, frame(OP_TEXT, b"\xe2\x82", fin=False) + frame(OP_CONT, b"A"), 1007)


def test_invalid_utf8_detected_before_final_fragment(wsserver):
    """Validation is incremental: the close comes without the message being finished."""
    check_close(wsserver, frame(OP_TEXT, b"\xff\xff", fin=False), 1007)


def test_binary_not_utf8_checked(wsserver):
    with RawWS(wsserver, "/echo") as ws:
        ws.send_bytes(b"\xff\xfe\xc0")
        assert ws.recv_bytes() == b"\xff\xfe\xc0"


def test_one_byte_close_payload_1002(wsserver):
    check_close(wsserver, frame(OP_CLOSE, b"\x03"), 1002)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1100, 2999, 5000, 65535])
def test_invalid_close_code_1002(wsserver, code):
    check_close(wsserver, frame(OP_CLOSE, struct.pack("!H", code) + b"x"), 1002)


@pytest.mark.laurel_only  # uvicorn (websockets 10) accepts these frames
@pytest.mark.parametrize("declared, n", [(126, 5), (126, 125), (127, 5), (127, 65535)])
def test_non_minimal_length_1002(wsserver, declared, n):
    """RFC 6455 5.2: the length in the fewest bytes; 126/127 for a shorter payload is a
    protocol error (1002), as docs/websocket.md says."""
    key = os.urandom(4)
    ext = struct.pack("!H", n) if declared == 126 else struct.pack("!Q", n)
    data = bytes([0x81, 0x80 | declared]) + ext + key + apply_mask(b"h" * n, key)
    check_close(wsserver, data, 1002)


def test_unmasked_client_frame_1002(wsserver):
    check_close(wsserver, frame(OP_TEXT, b"not masked", mask=False), 1002)


def test_unmasked_client_close_1002(wsserver):
    check_close(wsserver, frame(OP_CLOSE, struct.pack("!H", 1000), mask=False), 1002)


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
def test_reserved_bits_1002(wsserver, rsv):
    check_close(wsserver, frame(OP_TEXT, b"x", rsv=rsv), 1002)


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_reserved_opcode_1002(wsserver, opcode):
    check_close(wsserver, frame(opcode, b"x"), 1002)


def test_fragmented_ping_1002(wsserver):
    check_close(wsserver, frame(OP_PING, b"p", fin=False), 1002)


@pytest.mark.parametrize("opcode", [OP_PING, OP_CLOSE, 0xA])
def test_control_frame_over_125_bytes_1002(wsserver, opcode):
    payload = (struct.pack("!H", 1000) if opcode == OP_CLOSE else b"") + b"c" * 126
    check_close(wsserver, frame(opcode, payload[:126]), 1002)


def test_continuation_without_start_1002(wsserver):
    check_close(wsserver, frame(OP_CONT, b"orphan"), 1002)


@pytest.mark.parametrize("second", [OP_TEXT, OP_BINARY])
def test_new_message_inside_fragmented_one_1002(wsserver, second):
    check_close(wsserver, frame(OP_TEXT, b"a", fin=False) + frame(second, b"b"), 1002)


def test_valid_close_codes_accepted(wsserver):
    # 1012-1014: registered with IANA after RFC 6455 (wslay 1.1.1 does not know them).
    for code in (1000, 1001, 1003, 1007, 1008, 1010, 1011, 1012, 1013, 1014, 3000, 4999):
        key = rid()
        with RawWS(wsserver, "/echo" + q(id=key)) as ws:
            ws.send_close(code, "r")
            got, _, _ = ws.expect_close(reply=False)
            assert got == code
        assert wsserver.result(key)["disconnect"]["code"] == code
