"""The HTTP connection scope (asgi.md "HTTP scope")."""

import pytest

from conftest import req


def scope_of(server, data):
    r = server.raw_request(data)
    assert r.status == 200, r
    return r.json()["scope"], r.sockname


@pytest.mark.servers("laurel", "uvicorn")  # daphne 4.0 omits spec_version
def test_type_and_asgi_version(server):
    sc, _ = scope_of(server, req("/scope"))
    assert sc["type"] == "http"
    assert sc["asgi"] == {"version": "3.0", "spec_version": "2.3"}


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_http_version(server, version):
    sc, _ = scope_of(server, req("/scope", version=version.encode()))
    assert sc["http_version"] == version


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_method_as_sent(server, method):
    body = b"" if method in ("GET", "DELETE", "OPTIONS") else b"x"
    sc, _ = scope_of(server, req("/scope", method=method.encode(),
                                 headers=b"Content-Length: %d\r\n" % len(body), body=body))
    assert sc["method"] == method
    assert sc["_types"]["method"] == "str"


def test_scheme_is_http(server):
    sc, _ = scope_of(server, req("/scope"))
    assert sc["scheme"] == "http"


@pytest.mark.parametrize("target,path,raw_path", [
    ("/a%2Fb", "/a/b", "/a%2Fb"),
    ("/caf%C3%A9/x", "/caf\u00e9/x", "/caf%C3%A9/x"),
    ("/sp%20ace", "/sp ace", "/sp%20ace"),
    ("/a+b", "/a+b", "/a+b"),
    ("/plain/path/", "/plain/path/", "/plain/path/"),
    ("/", "/", "/"),
])
def test_path_percent_decoded_raw_path_as_sent(server, target, path, raw_path):
    sc, _ = scope_of(server, req(target))
    assert sc["path"] == path
    assert sc["raw_path"] == raw_path
    assert sc["_types"]["path"] == "str"
    assert sc["_types"]["raw_path"] == "bytes"


@pytest.mark.parametrize("target,path,raw_path,qs", [
    ("/q?x=1&y=%20&z", "/q", "/q", "x=1&y=%20&z"),
    ("/q?a=1?b=2", "/q", "/q", "a=1?b=2"),
    ("/q%2Fr?k=%2F", "/q/r", "/q%2Fr", "k=%2F"),
    ("/q?", "/q", "/q", ""),
    ("/q", "/q", "/q", ""),
])
def test_query_string_raw_bytes(server, target, path, raw_path, qs):
    sc, _ = scope_of(server, req(target))
    assert sc["path"] == path
    assert sc["raw_path"] == raw_path
    assert sc["query_string"] == qs
    assert sc["_types"]["query_string"] == "bytes"


def test_root_path_default_empty(server):
    sc, _ = scope_of(server, req("/scope"))
    assert sc["root_path"] == ""


@pytest.mark.servers("laurel", "uvicorn")  # Twisted groups duplicates by name
def test_headers_lowercased_ordered_with_duplicates(server):
    sc, _ = scope_of(server, req("/scope", headers=(
        b"X-One: 1\r\nX-Dup: a\r\nX-Other: o\r\nX-DUP: b\r\nx-two: Two  Val\r\n")))
    assert sc["_types"]["headers_bytes"] is True
    got = [h for h in sc["headers"] if h[0].startswith("x-")]
    assert got == [["x-one", "1"], ["x-dup", "a"], ["x-other", "o"], ["x-dup", "b"],
                   ["x-two", "Two  Val"]]
    assert ["host", "t"] in sc["headers"]


@pytest.mark.servers("laurel", "daphne")  # uvicorn's httptools keeps trailing OWS
def test_header_value_whitespace_trimmed(server):
    """RFC 9110 5.5: leading and trailing OWS is not part of the field value."""
    sc, _ = scope_of(server, req("/scope", headers=b"X-Pad:   padded value \t \r\n"))
    assert ["x-pad", "padded value"] in sc["headers"]


def test_header_value_htab_and_utf8_bytes_kept(server):
    sc, _ = scope_of(server, req("/scope", headers=b"X-Tab: a\tb\r\nX-Utf: caf\xc3\xa9\r\n"))
    assert ["x-tab", "a\tb"] in sc["headers"]
    assert ["x-utf", b"caf\xc3\xa9".decode("latin-1")] in sc["headers"]


@pytest.mark.servers("laurel", "daphne")
def test_header_names_with_underscore_dropped(server):
    sc, _ = scope_of(server, req("/scope", headers=(
        b"X_Evil: 1\r\nX-Good: 2\r\nContent_Length: 5\r\n")))
    names = [h[0] for h in sc["headers"]]
    assert "x-good" in names
    assert not [n for n in names if "_" in n]


def test_client_and_server_addresses(server):
    sc, sockname = scope_of(server, req("/scope"))
    assert list(sc["client"]) == ["127.0.0.1", sockname[1]]
    assert list(sc["server"]) == ["127.0.0.1", server.port]


def test_keepalive_requests_share_client(server):
    s = server.connect()
    try:
        from conftest import Reader
        rd = Reader(s)
        s.sendall(req("/scope?n=1"))
        a = rd.read_response().json()["scope"]
        s.sendall(req("/scope?n=2"))
        b = rd.read_response().json()["scope"]
        assert a["client"] == b["client"] == ["127.0.0.1", s.getsockname()[1]]
        assert a["query_string"] == "n=1" and b["query_string"] == "n=2"
    finally:
        s.close()


# --------------------------------------------------------------------------- proxy headers

def test_proxy_headers_ignored_without_flag(serve):
    srv = serve()
    sc, sockname = scope_of(srv, req("/scope", headers=(
        b"X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Port: 4242\r\n"
        b"X-Forwarded-Proto: https\r\nX-Real-IP: 10.9.9.9\r\n")))
    assert list(sc["client"]) == ["127.0.0.1", sockname[1]]
    assert sc["scheme"] == "http"


def test_proxy_headers_single_forwarded_for_and_proto(serve):
    srv = serve("tests.apps.basic:app", "--proxy-headers")
    sc, _ = scope_of(srv, req("/scope", headers=(
        b"X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: https\r\n")))
    assert sc["client"][0] == "10.1.2.3"
    assert sc["scheme"] == "https"


@pytest.mark.servers("laurel", "daphne")
def test_proxy_headers_first_entry_and_port(serve):
    srv = serve("tests.apps.basic:app", "--proxy-headers")
    sc, _ = scope_of(srv, req("/scope", headers=(
        b"X-Forwarded-For: 10.1.2.3, 10.0.0.1, 127.0.0.1\r\nX-Forwarded-Port: 4242\r\n")))
    assert list(sc["client"]) == ["10.1.2.3", 4242]


@pytest.mark.servers("laurel", "daphne")
def test_proxy_headers_renamed_host_and_port(serve):
    srv = serve("tests.apps.basic:app", "--proxy-headers", "--proxy-headers-host",
                "X-Real-IP", "--proxy-headers-port", "X-Real-Port")
    sc, _ = scope_of(srv, req("/scope", headers=(
        b"X-Real-IP: 10.9.9.9\r\nX-Real-Port: 5151\r\n")))
    assert list(sc["client"]) == ["10.9.9.9", 5151]


@pytest.mark.laurel_only
def test_daphne_root_path_header_ignored_without_proxy_headers(serve):
    srv = serve()
    sc, _ = scope_of(srv, req("/scope", headers=b"Daphne-Root-Path: /evil\r\n"))
    assert sc["root_path"] == ""


@pytest.mark.servers("laurel", "daphne")
def test_daphne_root_path_header_with_proxy_headers(serve):
    srv = serve("tests.apps.basic:app", "--proxy-headers")
    sc, _ = scope_of(srv, req("/scope", headers=b"Daphne-Root-Path: /mounted\r\n"))
    assert sc["root_path"] == "/mounted"


def test_root_path_flag(serve):
    srv = serve("tests.apps.basic:app", "--root-path", "/x")
    sc, _ = scope_of(srv, req("/scope"))
    assert sc["root_path"] == "/x"
