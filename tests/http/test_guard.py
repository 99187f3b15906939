"""Bad input (security.md "HTTP parser" and the bug classes other servers shipped).

Every input gets exactly one answer with the expected status and ``Connection: close``,
then the connection closes; the request never reaches the app (its target carries a
marker the app would have recorded); a request pipelined behind it is not processed;
a keep-alive connection opened before it, and new connections, are still served.

``{M}`` in an input is replaced by a fresh marker.
"""

import pytest

from conftest import check_rejected, req

H = b"GET /m-{M} HTTP/1.1\r\nHost: t\r\n"          # a valid start of a head
P = b"POST /echo?m-{M} HTTP/1.1\r\nHost: t\r\n"    # for bodies
TE = b"Transfer-Encoding: chunked\r\n"


# --------------------------------------------------------------------------- head (400)

HEAD_CASES = {
    # CVE-2023-30589: bare CR as a line end
    "bare_cr_request_line": b"GET /m-{M} HTTP/1.1\rHost: t\r\n\r\n",
    "bare_cr_header_line_end": H + b"X-A: a\rX-B: b\r\n\r\n",
    "bare_cr_in_value": H + b"X-A: a\rb\r\n\r\n",
    "cr_cr_lf": H + b"X-A: a\r\r\n\r\n",
    "bare_cr_in_name": H + b"X-\rA: a\r\n\r\n",
    # CVE-2024-27982: obs-fold / leading whitespace hiding a header
    "obs_fold_space": H + b"X-A: a\r\n b\r\n\r\n",
    "obs_fold_tab": H + b"X-A: a\r\n\tb\r\n\r\n",
    "leading_space_first_header": b"GET /m-{M} HTTP/1.1\r\n Host: t\r\n\r\n",
    "leading_space_hides_te": H + b" Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
    # CVE-2025-23167: a header block ending "\r\n\rX"
    "head_end_cr_x": H + b"\rXGET /smuggled-{M} HTTP/1.1\r\nHost: t\r\n\r\n",
    "empty_header_name": H + b": value\r\n\r\n",
    "space_before_colon": H + b"X-A : b\r\n\r\n",
    "space_in_name": H + b"X A: b\r\n\r\n",
    "no_colon": H + b"X-A b\r\n\r\n",
    "name_paren": H + b"X(A): b\r\n\r\n",
    "name_quote": H + b"X\"A: b\r\n\r\n",
    "name_slash": H + b"X/A: b\r\n\r\n",
    "name_ctl": H + b"X\x01A: b\r\n\r\n",
    "name_high_byte": H + b"X\xe9A: b\r\n\r\n",
    "target_ctl": b"GET /m-{M}\x01 HTTP/1.1\r\nHost: t\r\n\r\n",
    "target_esc": b"GET /m-{M}\x1b[31m HTTP/1.1\r\nHost: t\r\n\r\n",
    "target_space": b"GET /m-{M} x HTTP/1.1\r\nHost: t\r\n\r\n",
    "target_del": b"GET /m-{M}\x7f HTTP/1.1\r\nHost: t\r\n\r\n",
    "double_space": b"GET  /m-{M} HTTP/1.1\r\nHost: t\r\n\r\n",
    "trailing_junk": b"GET /m-{M} HTTP/1.1 x\r\nHost: t\r\n\r\n",
    "lowercase_method": b"get /m-{M} HTTP/1.1\r\nHost: t\r\n\r\n",
    "unknown_method_chars": b"G(T /m-{M} HTTP/1.1\r\nHost: t\r\n\r\n",
    "no_version": b"GET /m-{M}\r\nHost: t\r\n\r\n",
    "bad_protocol": b"GET /m-{M} HTTQ/1.1\r\nHost: t\r\n\r\n",
    "bad_version_digits": b"GET /m-{M} HTTP/1.x\r\nHost: t\r\n\r\n",
    "garbage": b"GARBAGE-{M}\r\n\r\n",
    "tls_client_hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"{M}",
    "connect": b"CONNECT m-{M}.example:443 HTTP/1.1\r\nHost: m-{M}.example:443\r\n\r\n",
    "two_hosts": b"GET /m-{M} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "no_host_http11": b"GET /m-{M} HTTP/1.1\r\nX-A: b\r\n\r\n",
    # Twisted CVE-2020-10108/10109, CVE-2022-24801, aiohttp CVE-2023-47627
    "cl_plus": P + b"Content-Length: +3\r\n\r\nabc",
    "cl_minus": P + b"Content-Length: -3\r\n\r\nabc",
    "cl_underscore": P + b"Content-Length: 1_0\r\n\r\n0123456789",
    "cl_hex": P + b"Content-Length: 0x3\r\n\r\nabc",
    "cl_alpha": P + b"Content-Length: abc\r\n\r\nabc",
    "cl_empty": P + b"Content-Length: \r\n\r\nabc",
    "cl_two_numbers": P + b"Content-Length: 3 3\r\n\r\nabc",
    "cl_comma_list": P + b"Content-Length: 3, 3\r\n\r\nabc",
    "cl_unicode_digit": P + b"Content-Length: \xd9\xa3\r\n\r\nabc",
    "cl_overflow": P + b"Content-Length: 99999999999999999999999999\r\n\r\nabc",
    "cl_duplicate_same": P + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "cl_duplicate_differ": P + b"Content-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
    "cl_and_te": P + b"Content-Length: 3\r\n" + TE + b"\r\n0\r\n\r\n",
    "te_and_cl": P + TE + b"Content-Length: 5\r\n\r\n0\r\n\r\n",
    "te_gzip": P + b"Transfer-Encoding: gzip\r\n\r\nabc",
    "te_identity": P + b"Transfer-Encoding: identity\r\n\r\nabc",
    "te_gzip_chunked": P + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te_chunked_gzip": P + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "te_chunked_twice": P + b"Transfer-Encoding: chunked\r\n" + TE + b"\r\n0\r\n\r\n",
    "te_xchunked": P + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te_chunkedx": P + b"Transfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n",
    "te_http10": b"POST /echo?m-{M} HTTP/1.0\r\n" + TE + b"\r\n3\r\nabc\r\n0\r\n\r\n",
}
for _c in [b"\x00", b"\x01", b"\x07", b"\x08", b"\x0b", b"\x0c", b"\x1b", b"\x1c", b"\x1d",
           b"\x1e", b"\x1f", b"\x7f", b"\x85"]:
    HEAD_CASES[f"value_ctl_{_c.hex()}"] = H + b"X-A: a" + _c + b"b\r\n\r\n"


# uvicorn 0.17 (httptools, i.e. lenient llhttp) gets these wrong: the suite checks itself
# against uvicorn on the others.
UVICORN_WRONG = {
    'bad_protocol', 'double_space', 'head_end_cr_x', 'leading_space_first_header',
    'leading_space_hides_te', 'no_host_http11', 'no_version', 'obs_fold_space',
    'obs_fold_tab', 'space_before_colon', 'space_in_name', 'te_chunked_gzip',
    'te_chunked_twice', 'te_chunkedx', 'te_gzip', 'te_gzip_chunked', 'te_http10',
    'te_identity', 'te_xchunked', 'two_hosts', 'value_ctl_85', 'data_cr_x',
    'data_lf_only', 'data_two_bytes', 'ext_lf', 'long_extension',
    'long_extension_last_chunk', 'size_cr_x', 'smuggle_after_last_chunk_cr_x',
    'trailer_obs_fold',
}


def cases(table, wrong):
    return [pytest.param(n, marks=pytest.mark.laurel_only if n in wrong
                         else pytest.mark.servers("laurel", "uvicorn"))
            for n in sorted(table)]


@pytest.mark.parametrize("name", cases(HEAD_CASES, UVICORN_WRONG))
def test_bad_head_400(server, name):
    check_rejected(server, HEAD_CASES[name], 400)


# --------------------------------------------------------------------------- versions

@pytest.mark.laurel_only
@pytest.mark.parametrize("version", [b"2.0", b"3.0"])
def test_unsupported_version_505(server, version):
    check_rejected(server, b"GET /m-{M} HTTP/" + version + b"\r\nHost: t\r\n\r\n", 505)


# --------------------------------------------------------------------------- chunked bodies (400)

def chunked(body):
    return P + TE + b"\r\n" + body


CHUNK_CASES = {
    "size_cr_x": b"5\rXhello\r\n0\r\n\r\n",
    "size_bare_cr": b"5\rhello\r\n0\r\n\r\n",
    "ext_lf": b"5;a=b\nc\r\nhello\r\n0\r\n\r\n",
    "ext_bare_cr": b"5;a=b\rc\r\nhello\r\n0\r\n\r\n",
    "size_0x": b"0x5\r\nhello\r\n0\r\n\r\n",
    "size_plus": b"+5\r\nhello\r\n0\r\n\r\n",
    "size_minus": b"-5\r\nhello\r\n0\r\n\r\n",
    "size_non_hex": b"g\r\nhello\r\n0\r\n\r\n",
    "size_empty": b"\r\nhello\r\n0\r\n\r\n",
    "size_overflow": b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "size_lf_only": b"5\nhello\r\n0\r\n\r\n",
    # h11 CVE-2025-43859: anything accepted in place of the CRLF after chunk data
    "data_lf_only": b"5\r\nhello\nX0\r\n\r\n",
    "data_lf_then_last": b"5\r\nhello\n0\r\n\r\n",
    "data_two_bytes": b"5\r\nhelloXX0\r\n\r\n",
    "data_cr_x": b"5\r\nhello\rX0\r\n\r\n",
    "data_longer_than_size": b"3\r\nhello\r\n0\r\n\r\n",
    "long_extension": b"5;" + b"a" * 300 + b"\r\nhello\r\n0\r\n\r\n",
    "long_extension_last_chunk": b"5\r\nhello\r\n0;" + b"a" * 300 + b"\r\n\r\n",
    "trailer_bare_cr": b"5\r\nhello\r\n0\r\nX-T: a\rb\r\n\r\n",
    "trailer_obs_fold": b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n",
    "smuggle_after_last_chunk_cr_x": (b"0\r\n\rXGET /smuggled-{M} HTTP/1.1\r\n"
                                      b"Host: t\r\n\r\n"),
}


@pytest.mark.parametrize("name", cases(CHUNK_CASES, UVICORN_WRONG))
def test_bad_chunked_body_400(server, name):
    check_rejected(server, chunked(CHUNK_CASES[name]), 400, head_level=False)


# --------------------------------------------------------------------------- accepted

@pytest.mark.parametrize("name,data,body", [
    ("chunk_ext_ok", b"5;name=val;x\r\nhello\r\n0\r\n\r\n", b"hello"),
    ("chunk_upper_hex", b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    ("chunk_leading_zeros", b"0005\r\nhello\r\n000\r\n\r\n", b"hello"),
    ("trailer_ok", b"5\r\nhello\r\n0\r\nX-T: t\r\n\r\n", b"hello"),
])
def test_valid_chunked_accepted(server, name, data, body):
    """The guard is not over-eager: valid chunked framings pass."""
    r = server.raw_request(b"POST /echo HTTP/1.1\r\nHost: t\r\n" + TE + b"\r\n" + data)
    assert r.status == 200
    assert r.body == body


@pytest.mark.parametrize("headers", [
    b"X-A: a\tb\r\n", b"X-A:\r\n", b"X-A:no-space\r\n", b"x-lower: 1\r\n",
    b"X-Token!#$%&'*+-.^_`|~: 1\r\n".replace(b"_", b""), b"X-A: caf\xc3\xa9 \xe2\x82\xac\r\n",
    b"Content-Length: 0\r\n", b"Content-Length: 000\r\n", b"Content-Length:  0  \r\n",
])
def test_valid_heads_accepted(server, headers):
    r = server.raw_request(req("/scope", headers=headers))
    assert r.status == 200, r


@pytest.mark.servers("laurel", "uvicorn")  # daphne 4.0 puts the URL in path
def test_absolute_form_target_accepted(server):
    r = server.raw_request(b"GET http://t/abs/x?y=1 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert r.status == 200
    sc = r.json()["scope"]
    assert sc["path"] == "/abs/x"
    assert sc["query_string"] == "y=1"
