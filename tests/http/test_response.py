"""Responses: added headers, framing, HEAD/204/304, send() validation
(asgi.md "HTTP messages", security.md response splitting CVE-2020-7695)."""

import email.utils
import time

import pytest

from conftest import Reader, parse_responses, req

CLOSE = b"Connection: close\r\n"


def pipeline(server, *requests, heads=(), timeout=5):
    """Sends the requests in one write (the last one should carry Connection: close),
    reads until the server closes, parses the responses."""
    data, closed = server.raw(b"".join(requests), timeout)
    assert closed, f"connection not closed; got {data[:500]!r}"
    return parse_responses(data, heads=heads), data


# --------------------------------------------------------------------------- added headers

@pytest.mark.servers("laurel", "uvicorn")  # daphne 4.0 sends no Date
def test_date_header(server):
    r = server.request("GET", "/text")
    assert r.status == 200
    dates = r.header_all("date")
    assert len(dates) == 1
    assert dates[0].endswith(" GMT")
    when = email.utils.parsedate_to_datetime(dates[0]).timestamp()
    assert abs(when - time.time()) < 5


@pytest.mark.laurel_only
def test_server_header_default(server):
    r = server.request("GET", "/text")
    assert r.header_all("server") == ["laurel"]


@pytest.mark.servers("laurel", "daphne")  # uvicorn 0.17 sends both
def test_app_server_header_kept_and_not_duplicated(server):
    r = server.request("GET", "/text?server=custom-app")
    assert r.status == 200
    assert r.header_all("server") == ["custom-app"]


@pytest.mark.servers("laurel", "daphne")
def test_server_name_flag(serve):
    srv = serve("tests.apps.basic:app", "-s", "acme/1.0")
    r = srv.request("GET", "/text")
    assert r.header_all("server") == ["acme/1.0"]


def test_no_server_name_flag(serve):
    srv = serve("tests.apps.basic:app", "--no-server-name")
    r = srv.request("GET", "/text")
    assert r.status == 200
    assert r.header_all("server") == []


def test_app_headers_passed_in_order_with_duplicates(server):
    r = server.request("GET", "/headers?h=set-cookie:a%3D1&h=x-one:1&h=set-cookie:b%3D2"
                              "&h=content-length:2")
    assert r.status == 200
    assert r.header_all("set-cookie") == ["a=1", "b=2"]
    assert r.header_all("x-one") == ["1"]
    assert r.body == b"ok"


@pytest.mark.parametrize("code", [201, 202, 299, 418, 451, 599])
def test_status_codes(server, code):
    r = server.raw_request(req(f"/status?code={code}&body=abc&cl=1"))
    assert r.status == code
    assert r.body == b"abc"


# --------------------------------------------------------------------------- framing

@pytest.mark.laurel_only
def test_whole_body_in_first_message_gets_content_length(server):
    r = server.raw_request(req("/text?body=hello-world"))
    assert r.status == 200
    assert r.header("content-length") == "11"
    assert r.header("transfer-encoding") is None
    assert r.body == b"hello-world"


@pytest.mark.laurel_only
def test_whole_body_http10_gets_content_length(server):
    s = server.connect()
    try:
        s.sendall(req("/text?body=hello", version=b"1.0"))
        rd = Reader(s)
        r = rd.read_response()
        assert r.header("content-length") == "5"
        assert r.body == b"hello"
        assert rd.closed()
    finally:
        s.close()


def test_streamed_body_http11_chunked(server):
    r = server.raw_request(req("/stream?n=4&size=7"))
    assert r.status == 200
    assert r.header("transfer-encoding") == "chunked"
    assert r.header("content-length") is None
    assert r.complete
    assert r.body == b"0" * 7 + b"1" * 7 + b"2" * 7 + b"3" * 7
    assert len(r.chunks) >= 2


@pytest.mark.servers("laurel", "daphne")  # uvicorn/httptools answers 1.0 with chunked
def test_streamed_body_http10_close_delimited(server):
    s = server.connect()
    try:
        s.sendall(req("/stream?n=4&size=7", version=b"1.0"))
        data = Reader(s)
        buf = data.read_some(10 ** 9, timeout=5)  # until EOF
        assert data.eof, "HTTP/1.0 response without length must end with a close"
        r = parse_responses(buf)[0]
        assert r.header("transfer-encoding") is None
        assert r.header("content-length") in (None, "28")
        assert r.body == b"0" * 7 + b"1" * 7 + b"2" * 7 + b"3" * 7
    finally:
        s.close()


def test_app_content_length_honoured_when_streaming(server):
    r = server.raw_request(req("/stream?n=3&size=5&cl=1"))
    assert r.status == 200
    assert r.header("content-length") == "15"
    assert r.header("transfer-encoding") is None
    assert r.body == b"00000" + b"11111" + b"22222"


@pytest.mark.servers("laurel", "uvicorn")  # daphne leaves the connection hanging
def test_content_length_mismatch_short_closes(server):
    """The app declares 10 bytes and sends 5: the client sees a truncated response and
    the connection closes (it cannot be reused)."""
    s = server.connect()
    try:
        s.sendall(req("/cl-mismatch?cl=10&send=5"))
        rd = Reader(s)
        buf = rd.read_some(10 ** 9, timeout=5)
        assert rd.eof, f"connection left open after a short body: {buf!r}"
        r = parse_responses(buf)[0]
        assert r.status == 200
        assert r.header("content-length") == "10"
        assert not r.complete
    finally:
        s.close()
    server.assert_alive()


@pytest.mark.servers("laurel", "uvicorn")
def test_content_length_mismatch_long_not_sent(server):
    """The app declares 5 bytes and sends 10: no more than 5 body bytes reach the wire
    (the rest would be read as the next response), and the connection closes."""
    s = server.connect()
    try:
        s.sendall(req("/cl-mismatch?cl=5&send=10") + req("/scope?after-long"))
        rd = Reader(s)
        buf = rd.read_some(10 ** 9, timeout=5)
        assert rd.eof
        head_end = buf.index(b"\r\n\r\n") + 4
        assert len(buf) - head_end <= 5, buf
        assert b"HTTP/1.1 200" not in buf[head_end:]
    finally:
        s.close()
    server.assert_alive()


@pytest.mark.servers("laurel", "uvicorn")  # daphne 4.0 leaks a HEAD body
def test_head_has_no_body(server):
    responses, data = pipeline(
        server,
        req("/text?body=hello", method=b"HEAD"),
        req("/text?body=hello&stream=1", method=b"HEAD"),
        req("/text?body=after", headers=CLOSE), heads=(0, 1))
    assert [r.status for r in responses] == [200, 200, 200]
    assert responses[0].body == b"" and responses[1].body == b""
    assert responses[2].body == b"after"
    assert b"hello" not in data


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_statuses(server, code):
    """A 204/304 (empty body from the app) carries no body bytes, not even a chunked
    terminator: the pipelined next response parses."""
    responses, data = pipeline(
        server,
        req(f"/status?code={code}"),
        req("/text?body=after", headers=CLOSE))
    assert [r.status for r in responses] == [code, 200]
    assert responses[1].body == b"after"
    assert responses[0].header("transfer-encoding") is None
    assert responses[0].header("content-length") in (None, "0")


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_statuses_app_body_never_on_wire(server, code):
    """An app that sends a body with 204/304: the bytes never reach the wire (the server
    drops them, or refuses them in send() and closes)."""
    data, closed = server.raw(req(f"/status?code={code}&body=leaked")
                              + req("/text?body=after", headers=CLOSE))
    assert closed
    assert b"leaked" not in data
    responses = parse_responses(data)
    assert responses[0].status == code
    assert all(r.status == 200 and r.body == b"after" for r in responses[1:])


# --------------------------------------------------------------------------- send() validation

# uvicorn 0.17 and daphne 4.0 fail the first ten (they are the bug class under test).
BADSEND_CASES = [pytest.param(c, marks=pytest.mark.laurel_only) for c in (
    "crlf_value", "lf_value", "cr_value", "nul_value", "crlf_name", "lf_name", "nul_name",
    "str_name", "str_value", "three_items", "status_1000", "status_str")] + [
    "body_before_start", "unknown_type", "second_start"]


@pytest.mark.parametrize("case", BADSEND_CASES)
def test_invalid_send_raises_in_app(server, case):
    """The invalid message raises a clear exception inside send(); nothing of it reaches
    the wire; the app can still answer (or finish) normally."""
    s = server.connect()
    try:
        s.sendall(req(f"/badsend?case={case}", headers=CLOSE))
        rd = Reader(s)
        buf = rd.read_some(10 ** 9, timeout=5)
    finally:
        s.close()
    assert b"evil" not in buf.lower(), buf
    assert b"set-cookie" not in buf.lower(), buf
    r = parse_responses(buf)[0]
    assert r.status == 200
    report = r.json()
    assert report["raised"] is True, report
    assert report["is_exception"] is True
    assert report["error"], "the exception should say what is wrong"
    server.assert_alive()


@pytest.mark.servers("laurel", "uvicorn")
def test_body_after_response_complete_raises(server):
    import uuid
    key = uuid.uuid4().hex[:10]
    responses, data = pipeline(server, req(f"/body-after-end?id={key}", headers=CLOSE))
    assert responses[0].body == b"done"
    assert b"evil-after-end" not in data
    assert server.result(key)["raised"] is True
