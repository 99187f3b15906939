"""Listeners (cli.md): -u, --fd, -e endpoint strings, IPv6, several at once."""

import os
import re
import socket
import stat

import pytest

from conftest import HTTPConn, Server, free_port, ipv6_available, req

APP = "tests.apps.basic:app"


def unix_path(tmp_path, name="s.sock"):
    # AF_UNIX paths are limited to 107 bytes; tmp_path can be long
    p = tmp_path / name
    if len(str(p)) > 100:
        import tempfile
        d = tempfile.mkdtemp(prefix="lrl")
        p = os.path.join(d, name)
    return str(p)


def unix_scope(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    try:
        from conftest import Reader
        s.sendall(req("/scope"))
        return Reader(s).read_response().json()["scope"]
    finally:
        s.close()


# --------------------------------------------------------------------------- UNIX sockets

@pytest.mark.servers("laurel", "daphne")
def test_unix_socket_scope_client_server_none(serve, tmp_path):
    path = unix_path(tmp_path)
    serve(APP, "-u", path, unix=path)
    sc = unix_scope(path)
    assert sc["client"] is None
    assert sc["server"] is None
    assert sc["path"] == "/scope"


def test_unix_socket_serves(serve, tmp_path):
    path = unix_path(tmp_path)
    srv = serve(APP, "-u", path, unix=path)
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    r = srv.request("POST", "/echo", body=b"over unix")
    assert r.status == 200 and r.body == b"over unix"


@pytest.mark.laurel_only
def test_unix_socket_stale_file_replaced_and_removed_on_exit(serve, tmp_path):
    path = unix_path(tmp_path)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays: a stale socket
    assert os.path.exists(path)
    srv = serve(APP, "-u", path, unix=path)
    assert srv.request("GET", "/x").status == 200
    assert srv.stop() == 0
    assert not os.path.exists(path), "socket file left behind after a clean exit"


@pytest.mark.laurel_only
def test_unix_endpoint_with_mode(serve, tmp_path):
    path = unix_path(tmp_path)
    srv = serve(APP, "-e", f"unix:{path}:mode=660", unix=path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    assert srv.request("GET", "/x").status == 200


# --------------------------------------------------------------------------- --fd, -e

def listening_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    s.set_inheritable(True)
    return s


def test_fd_inherited_socket(serve):
    ls = listening_socket()
    try:
        port = ls.getsockname()[1]
        srv = serve(APP, "--fd", str(ls.fileno()), port=port, pass_fds=(ls.fileno(),))
        sc = srv.scope()
        assert list(sc["server"]) == ["127.0.0.1", port]
    finally:
        ls.close()
    # our copy is closed; the server's keeps serving
    srv.assert_alive()


@pytest.mark.servers("laurel", "daphne")
def test_endpoint_fd(serve):
    ls = listening_socket()
    try:
        port = ls.getsockname()[1]
        srv = serve(APP, "-e", f"fd:fileno={ls.fileno()}", port=port,
                    pass_fds=(ls.fileno(),))
        assert srv.request("GET", "/x").status == 200
    finally:
        ls.close()


@pytest.mark.servers("laurel", "daphne")
@pytest.mark.parametrize("form", ["tcp:port={P}:interface=127.0.0.1", "tcp:{P}",
                                  "tcp:port={P}:interface=127.0.0.1:backlog=64"])
def test_endpoint_tcp(serve, form):
    port = free_port()
    srv = serve(APP, "-e", form.format(P=port), port=port)
    assert srv.request("GET", "/x").status == 200
    err = srv.wait_output(r"Listening on TCP address", "stderr")
    iface = "0.0.0.0" if form == "tcp:{P}" else "127.0.0.1"  # Twisted: all interfaces
    assert f"Listening on TCP address {iface}:{port}" in err


@pytest.mark.servers("laurel", "daphne")
def test_several_listeners_all_serve(serve, tmp_path):
    p1, p2 = free_port(), free_port()
    path = unix_path(tmp_path)
    srv = serve(APP, "-p", str(p1), "-u", path, "-e", f"tcp:port={p2}:interface=127.0.0.1",
                port=p1)
    assert srv.request("GET", "/one").status == 200
    other = Server(APP, [], tmp_path / "x", port=p2)
    c = HTTPConn(other)
    try:
        assert c.request("GET", "/two").status == 200
    finally:
        c.close()
    assert unix_scope(path)["path"] == "/scope"
    err = srv.wait_output(r"Listening on TCP address", "stderr", count=2)
    start = [ln for ln in err.splitlines() if "Starting server at" in ln]
    assert len(start) == 1
    for desc in (f"tcp:port={p1}:interface=127.0.0.1", f"tcp:port={p2}:interface=127.0.0.1",
                 f"unix:{path}"):
        assert desc in start[0], start[0]
    listening = re.findall(r"Listening on TCP address (\S+)", err)
    assert sorted(listening) == sorted([f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"])


# --------------------------------------------------------------------------- IPv6

@pytest.mark.skipif(not ipv6_available(), reason="::1 is not available")
@pytest.mark.parametrize("bind", ["::1", "[::1]"])
def test_ipv6_bind(serve, bind):
    if bind.startswith("[") and __import__("conftest").kind() == "uvicorn":
        pytest.skip("uvicorn takes no brackets")
    port = free_port("::1")
    srv = serve(APP, "-b", bind, "-p", str(port), host="::1", port=port)
    sc = srv.scope()
    assert sc["client"][0] == "::1"
    assert list(sc["server"]) == ["::1", port]
