"""WebSocket application messages: connect/accept/close/denial, receive/send, disconnect
(asgi.md "WebSocket scope and messages")."""

import os

import pytest

from conftest import Reader, kind, read_until_close
from wshelpers import (OP_BINARY, OP_CLOSE, OP_CONT, OP_TEXT, RawWS, bystander_check,
                       frame, handshake_bytes, new_key, q, rid,
                       wsserver)  # noqa: F401 (fixture)


def refused(srv, path, status):
    """The upgrade to ``path`` is answered ``status``, and the connection closes."""
    s = srv.connect()
    try:
        s.sendall(handshake_bytes(path, new_key()))
        rd = Reader(s)
        r = rd.read_response()
        assert r.status == status, r
        assert rd.closed(5), "connection not closed after the refusal"
        return r
    finally:
        s.close()


# --------------------------------------------------------------------------- accept

def test_first_receive_is_connect(wsserver):
    key = rid()
    with RawWS(wsserver, "/echo" + q(id=key)) as ws:
        ws.send_close(1000)
        ws.expect_close(reply=False)
    res = wsserver.result(key)
    assert res["connect"] == {"type": "websocket.connect", "keys": ["type"]}


def test_accept_with_subprotocol(wsserver):
    with RawWS(wsserver, "/subprotocol?sp=superchat", protocols="chat, superchat") as ws:
        assert ws.response.header("sec-websocket-protocol") == "superchat", ws.response
        assert ws.recv_json() == ["chat", "superchat"]


def test_accept_without_subprotocol_sends_none(wsserver):
    with RawWS(wsserver, "/subprotocol", protocols="chat, superchat") as ws:
        assert ws.response.header("sec-websocket-protocol") is None, ws.response
        assert ws.recv_json() == ["chat", "superchat"]


@pytest.mark.servers("laurel", "uvicorn")  # daphne 4.0 ignores accept headers (#374)
def test_accept_extra_headers(wsserver):
    with RawWS(wsserver, "/accept-headers") as ws:
        assert ws.response.status == 101
        assert ws.response.header("x-extra") == "one", ws.response
        assert ws.response.header("set-cookie") == "ws=1; Path=/", ws.response
        bystander_check(wsserver, ws)  # the socket works after the 101


@pytest.mark.laurel_only
@pytest.mark.parametrize("case", ["crlf_value", "lf_value", "cr_value", "crlf_name",
                                  "nul_value"])
def test_accept_header_injection_raises_in_send(wsserver, case):
    key = rid()
    with RawWS(wsserver, "/bad-accept" + q(case=case, id=key)) as ws:
        assert ws.response.status == 101
        assert ws.response.header("x-evil") is None, ws.response
        assert b"X-Evil" not in ws.response.head, ws.response.head
        assert ws.response.header("x-a") is None, ws.response
        bystander_check(wsserver, ws)
    assert wsserver.result(key)["raised"] is True


# --------------------------------------------------------------------------- refusals

def test_close_before_accept_403(wsserver):
    refused(wsserver, "/close-before-accept", 403)
    bystander_check(wsserver)


@pytest.mark.laurel_only  # uvicorn 0.17: 500; daphne 4.0: connection dropped
def test_return_before_accept_403(wsserver):
    refused(wsserver, "/return-before-accept", 403)
    bystander_check(wsserver)


@pytest.mark.servers("laurel", "uvicorn")
def test_raise_before_accept_500(wsserver):
    refused(wsserver, "/raise-before-accept", 500)
    bystander_check(wsserver)


@pytest.mark.laurel_only
def test_denial_response(wsserver):
    s = wsserver.connect()
    try:
        s.sendall(handshake_bytes("/deny", new_key()))
        buf, closed = read_until_close(s, 5)
    finally:
        s.close()
    assert closed, buf
    from conftest import parse_responses
    rs = parse_responses(buf)
    assert len(rs) == 1, buf
    r = rs[0]
    assert r.status == 401, r
    assert r.header("x-deny") == "yes", r
    assert r.header("content-type") == "text/plain", r
    assert r.body == b"denied: nope!", r
    assert r.header("sec-websocket-accept") is None
    bystander_check(wsserver)


@pytest.mark.laurel_only
def test_denial_response_other_status(wsserver):
    refused(wsserver, "/deny?status=404", 404)


# --------------------------------------------------------------------------- receive

def test_text_message_has_only_text(wsserver):
    key = rid()
    with RawWS(wsserver, "/echo" + q(id=key)) as ws:
        ws.send_text("h\u00e9llo")
        assert ws.recv_text() == "h\u00e9llo"
        ws.send_bytes(b"\x00\xffbin")
        assert ws.recv_bytes() == b"\x00\xffbin"
        ws.send_close(1000)
        ws.expect_close(reply=False)
    got = wsserver.result(key)["received"]
    assert got[0]["type"] == "websocket.receive"
    assert got[0]["text_type"] == "str" and got[0]["text_len"] == 5
    assert got[1]["bytes_type"] == "bytes" and got[1]["bytes_len"] == 5
    assert got[0]["keys"] == ["text", "type"], got[0]
    assert got[1]["keys"] == ["bytes", "type"], got[1]


@pytest.mark.servers("laurel", "uvicorn")  # daphne drops empty messages
def test_empty_messages_received(wsserver):
    with RawWS(wsserver, "/echo") as ws:
        ws.send_text("")
        assert ws.recv_message() == (OP_TEXT, b"")
        ws.send_bytes(b"")
        assert ws.recv_message() == (OP_BINARY, b"")


@pytest.mark.parametrize("n", [2, 3, 50])
def test_fragmented_text_reassembled(wsserver, n):
    text = ("fr\u00e9g-\u20ac-" * 40)
    data = text.encode()
    # cut inside multi-byte characters on purpose: validation is per message
    cuts = [len(data) * i // n for i in range(n + 1)]
    parts = [data[cuts[i]:cuts[i + 1]] for i in range(n)]
    key = rid()
    with RawWS(wsserver, "/echo" + q(id=key)) as ws:
        raw = b""
        for i, p in enumerate(parts):
            raw += frame(OP_TEXT if i == 0 else OP_CONT, p, fin=i == n - 1)
        ws.send_raw(raw)
        assert ws.recv_text() == text
        ws.send_close(1000)
        ws.expect_close(reply=False)
    got = wsserver.result(key)["received"]
    assert len(got) == 1, got
    assert got[0]["text_len"] == len(text)


def test_fragmented_binary_with_interleaved_ping(wsserver):
    with RawWS(wsserver, "/echo") as ws:
        ws.send_raw(frame(OP_BINARY, b"abc", fin=False) + frame(0x9, b"pp")
                    + frame(OP_CONT, b"def", fin=False) + frame(OP_CONT, b"ghi"))
        f = ws.recv_frame()
        assert f.opcode == 0xA and f.payload == b"pp", f
        assert ws.recv_bytes() == b"abcdefghi"


def test_ping_answered_with_pong(wsserver):
    with RawWS(wsserver, "/echo") as ws:
        ws.send_frame(0x9, b"hello-ping")
        f = ws.recv_frame()
        assert f.opcode == 0xA and f.payload == b"hello-ping", f
        assert not f.masked


# --------------------------------------------------------------------------- send

@pytest.mark.servers("laurel", "uvicorn")  # daphne drops empty messages
def test_send_empty_text_and_bytes(wsserver):
    with RawWS(wsserver, "/send-empty") as ws:
        assert ws.recv_message() == (OP_TEXT, b"")
        assert ws.recv_message() == (OP_BINARY, b"")
        assert ws.recv_message() == (OP_TEXT, b"end")


def test_server_frames_unmasked(wsserver):
    with RawWS(wsserver, "/echo") as ws:
        ws.send_text("x" * 300)
        f = ws.recv_frame()
        assert not f.masked and f.rsv == 0 and f.payload == b"x" * 300


@pytest.mark.parametrize("size", [125, 126, 65535, 65536, 300000])
def test_sizes_across_length_encodings(wsserver, size):
    with RawWS(wsserver, "/echo") as ws:
        data = os.urandom(size)
        ws.send_bytes(data)
        assert ws.recv_bytes() == data


# --------------------------------------------------------------------------- close

def test_close_default_code_1000(wsserver):
    key = rid()
    with RawWS(wsserver, "/close" + q(id=key)) as ws:
        code, reason, _ = ws.expect_close()
        assert code == 1000 and reason == ""
        assert ws.eof()
    d = wsserver.result(key)["disconnect"]
    assert d["type"] == "websocket.disconnect" and d["code"] == 1000


@pytest.mark.servers("laurel", "uvicorn")  # daphne does not send the reason
@pytest.mark.parametrize("code,reason", [(4321, "bye now"), (1001, "adi\u00f3s"),
                                         (3000, "")])
def test_close_code_and_reason(wsserver, code, reason):
    key = rid()
    with RawWS(wsserver, "/close" + q(id=key, code=code, reason=reason)) as ws:
        got, got_reason, _ = ws.expect_close()
        assert (got, got_reason) == (code, reason)
        assert ws.eof()
    assert wsserver.result(key)["disconnect"]["code"] == code


@pytest.mark.servers("laurel", "daphne")  # uvicorn 0.17 drops TCP without a close
def test_raise_after_accept_1011(wsserver):
    with RawWS(wsserver, "/raise-after") as ws:
        code, _, seen = ws.expect_close()
        assert code == 1011, (code, seen)
        assert [f.payload for f in seen] == [b"accepted"]
        assert ws.eof()
    bystander_check(wsserver)


@pytest.mark.servers("laurel", "uvicorn")  # daphne 4.0 sends no close frame
def test_return_after_accept_1000(wsserver):
    with RawWS(wsserver, "/return-after") as ws:
        code, _, seen = ws.expect_close()
        assert code == 1000, (code, seen)
        assert [f.payload for f in seen] == [b"accepted"]
        assert ws.eof()
    bystander_check(wsserver)


# --------------------------------------------------------------------------- disconnect

@pytest.mark.laurel_only  # daphne echoes 1000; uvicorn 0.17 gives no reason
@pytest.mark.parametrize("code,reason", [(1000, ""), (1001, "going"), (4000, "bye"),
                                         (3999, "r\u00e9ason")])
def test_disconnect_carries_peer_code_and_reason(wsserver, code, reason):
    key = rid()
    with RawWS(wsserver, "/echo" + q(id=key)) as ws:
        ws.send_close(code, reason)
        got, _, _ = ws.expect_close(reply=False)
        assert got == code, "the close code is echoed"
        assert ws.eof()
    d = wsserver.result(key)["disconnect"]
    assert d["type"] == "websocket.disconnect"
    assert d["code"] == code
    assert d["reason"] == reason


@pytest.mark.servers("laurel", "uvicorn")
def test_disconnect_1005_for_empty_close(wsserver):
    key = rid()
    with RawWS(wsserver, "/echo" + q(id=key)) as ws:
        ws.send_frame(OP_CLOSE, b"")
        f = ws.recv_frame()
        assert f.opcode == OP_CLOSE, f
        assert ws.eof()
    d = wsserver.result(key)["disconnect"]
    assert d["code"] == 1005, d
    if kind() == "laurel":
        assert d["reason"] == "", d


def test_disconnect_1006_for_tcp_drop(wsserver):
    key = rid()
    ws = RawWS(wsserver, "/echo" + q(id=key))
    ws.send_text("hi")
    assert ws.recv_text() == "hi"
    ws.close()
    d = wsserver.result(key)["disconnect"]
    assert d["type"] == "websocket.disconnect"
    assert d["code"] == 1006, d
    if kind() == "laurel":  # uvicorn 0.17 / daphne 4.0 send no reason
        assert d["reason"] == "", d
    bystander_check(wsserver)
