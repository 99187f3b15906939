"""The WebSocket connection scope (asgi.md "WebSocket scope and messages")."""

import pytest

from conftest import kind
from wshelpers import WS_APP, RawWS, wsserver  # noqa: F401 (fixture)


def scope_of(srv, path="/scope", **kw):
    with RawWS(srv, path, **kw) as ws:
        sc = ws.recv_json()
        ws.send_close(1000)
        ws.expect_close(reply=False)
        return sc, ws.sockname


def test_type_and_asgi(wsserver):
    sc, _ = scope_of(wsserver)
    assert sc["type"] == "websocket"
    assert sc["asgi"]["version"] == "3.0"
    if kind() != "daphne":  # daphne 4.0 omits spec_version
        assert "spec_version" in sc["asgi"]


@pytest.mark.servers("laurel", "uvicorn")  # daphne 4.0 has no http_version
def test_http_version_scheme_no_method(wsserver):
    sc, _ = scope_of(wsserver)
    assert sc["http_version"] == "1.1"
    assert sc["scheme"] == "ws"
    assert "method" not in sc, sc


@pytest.mark.parametrize("target,path,raw_path,qs", [
    ("/scope", "/scope", "/scope", ""),
    ("/scope/a%2Fb", "/scope/a/b", "/scope/a%2Fb", ""),
    ("/scope/caf%C3%A9?x=1&y=%20", "/scope/caf\u00e9", "/scope/caf%C3%A9", "x=1&y=%20"),
    ("/scope/sp%20ace?a=1?b=2", "/scope/sp ace", "/scope/sp%20ace", "a=1?b=2"),
])
@pytest.mark.servers("laurel", "daphne")  # uvicorn 0.17 gives raw_path as str
def test_path_raw_path_query_string(wsserver, target, path, raw_path, qs):
    sc, _ = scope_of(wsserver, target)
    assert sc["path"] == path
    assert sc["_types"]["path"] == "str"
    assert sc["raw_path"] == raw_path
    assert sc["_types"]["raw_path"] == "bytes"
    assert sc["query_string"] == qs
    assert sc["_types"]["query_string"] == "bytes"


@pytest.mark.servers("laurel", "uvicorn")  # daphne 4.0 has no root_path here
def test_root_path_default_empty(wsserver):
    sc, _ = scope_of(wsserver)
    assert sc["root_path"] == ""


@pytest.mark.servers("laurel", "uvicorn")
def test_root_path_flag(serve):
    srv = serve(WS_APP, "--root-path", "/prefix")
    sc, _ = scope_of(srv)
    assert sc["root_path"] == "/prefix"


@pytest.mark.servers("laurel", "daphne")  # uvicorn keeps "_" names (CVE-2015-0219)
def test_headers_lowercased_underscore_dropped(wsserver):
    sc, _ = scope_of(wsserver, headers=[("X-Custom-One", "Val One"),
                                        ("X_Smuggled", "evil"),
                                        ("X-Dup", "a"), ("X-DUP", "b")])
    assert sc["_headers_bytes"] and sc["_types"]["headers"] in ("list", "tuple")
    names = [n for n, _ in sc["headers"]]
    assert all(n == n.lower() for n in names), names
    assert ["x-custom-one", "Val One"] in sc["headers"]
    assert not any("_" in n for n in names), names
    assert not any(v == "evil" for _, v in sc["headers"])
    assert "upgrade" in names and "sec-websocket-key" in names
    vals = [v for n, v in sc["headers"] if n == "x-dup"]
    assert sorted(vals) == ["a", "b"] or vals == ["a,b"] or vals == ["a, b"], vals


def test_client_and_server(wsserver):
    sc, sockname = scope_of(wsserver)
    assert list(sc["client"]) == ["127.0.0.1", sockname[1]]
    assert list(sc["server"]) == ["127.0.0.1", wsserver.port]


@pytest.mark.parametrize("header,expected", [
    (None, []),
    ("chat", ["chat"]),
    ("chat, superchat", ["chat", "superchat"]),
    ("  a ,b,   c  ", ["a", "b", "c"]),
])
def test_subprotocols(wsserver, header, expected):
    sc, _ = scope_of(wsserver, protocols=header)
    assert sc["subprotocols"] == expected
    assert sc["_types"]["subprotocols"] in ("list", "tuple")


@pytest.mark.servers("laurel")  # uvicorn 0.17 / daphne 4.0 predate the extension
def test_extensions_announce_denial_response(wsserver):
    sc, _ = scope_of(wsserver)
    assert isinstance(sc.get("extensions"), dict), sc.get("extensions")
    assert "websocket.http.response" in sc["extensions"]
    assert sc["_ext_websocket_http_response"] != "ABSENT"


@pytest.mark.laurel_only  # uvicorn 0.17 / daphne 4.0 have no lifespan state
def test_state_from_lifespan(wsserver):
    sc, _ = scope_of(wsserver)
    assert sc["state"].get("from_lifespan") == "yes", sc.get("state")
