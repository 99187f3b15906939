"""TLS on laurel's listeners (docs/cli.md "TLS", security.md "TLS and HTTP/2").

Real clients over real TLS: Python's ssl (http.client, raw sockets), websockets, and
certificates made here (tests/tlsfiles.py). Covers uvicorn's --ssl-* flags and daphne's
ssl: endpoint string, what the application sees (scheme, ASGI's TLS extension), ALPN,
session resumption (one process and across workers), certificate reload without
dropping connections, client certificates, and every kind of failed handshake leaving
the server serving.
"""

import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port, read_until_close, run_cli
from tlsfiles import Pki

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "h2"))  # h2helpers

websockets = pytest.importorskip("websockets")

pytestmark = [pytest.mark.laurel_only,
              pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")]

WS_APP = "tests.apps.ws_app:app"


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path / "pki")


def tls_serve(serve, leaf, *args, app="tests.apps.basic:app", **kw):
    return serve(app, "--ssl-certfile", leaf.cert, "--ssl-keyfile", leaf.key, *args, **kw)


def tls_connect(srv, ctx, server_hostname="localhost", session=None, timeout=10):
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_hostname, session=session)
    except BaseException:
        raw.close()
        raise


def https(srv, ctx, method="GET", path="/scope", body=None, headers=None, conn=None):
    """(status, body bytes) of one request; conn: an HTTPSConnection to reuse."""
    c = conn or http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        if conn is None:
            c.close()


def scope_over(srv, ctx, **kw):
    status, body = https(srv, ctx, **kw)
    assert status == 200, body[:300]
    return json.loads(body)["scope"]


def served(srv, pki):
    """A fresh TLS connection still gets its answer."""
    status, _ = https(srv, pki.client_context(), path="/text")
    return status == 200


def test_https_scope_and_tls_extension(serve, pki):
    """scheme https; ASGI's TLS extension: our certificate's PEM, the version and
    suite negotiated, no client certificate."""
    leaf = pki.issue()
    srv = tls_serve(serve, leaf)
    scope = scope_over(srv, pki.client_context())
    assert scope["scheme"] == "https"
    tls = scope["extensions"]["tls"]
    assert tls["server_cert"] == leaf.pem
    assert tls["tls_version"] == 0x0304
    assert tls["cipher_suite"] in (0x1301, 0x1302, 0x1303)
    assert tls["client_cert_chain"] == []
    assert tls["client_cert_name"] is None and tls["client_cert_error"] is None
    scope12 = scope_over(srv, pki.client_context(maximum=ssl.TLSVersion.TLSv1_2))
    assert scope12["extensions"]["tls"]["tls_version"] == 0x0303
    assert scope12["extensions"]["tls"]["cipher_suite"] > 0
    assert "Starting server at ssl:port=%d:interface=127.0.0.1" % srv.port in srv.stderr()


def test_bodies_both_ways_keep_alive_and_pipelining(serve, pki):
    """Megabytes up and down through the record layer (small pieces gathered, large ones
    straight from the queue), on one keep-alive connection, and pipelined requests
    answered in order."""
    srv = tls_serve(serve, pki.issue())
    ctx = pki.client_context()
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=20)
    try:
        up = os.urandom(3 << 20)
        status, body = https(srv, ctx, "POST", "/echo", body=up, conn=conn)
        assert status == 200 and body == up
        status, body = https(srv, ctx, path="/big?size=%d" % (5 << 20), conn=conn)
        assert status == 200 and body == b"b" * (5 << 20)
        status, body = https(srv, ctx, path="/stream?n=300&size=7", conn=conn)
        assert body == b"".join(str(i % 10).encode() * 7 for i in range(300))
    finally:
        conn.close()
    s = tls_connect(srv, ctx)
    try:
        s.sendall(b"".join(b"GET /text?i=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(20))
                  + b"GET /text HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, closed = read_until_close(s, 10)
    finally:
        s.close()
    assert closed and data.count(b"HTTP/1.1 200 OK") == 21


@pytest.mark.parametrize("http2", [True, False])
def test_alpn(serve, pki, http2):
    """h2 is chosen when offered (http/1.1 with --no-http2), http/1.1 otherwise; a
    client offering only protocols laurel lacks gets no ALPN and HTTP/1.1."""
    srv = tls_serve(serve, pki.issue(), *([] if http2 else ["--no-http2"]))
    s = tls_connect(srv, pki.client_context(alpn=["h2", "http/1.1"]))
    assert s.selected_alpn_protocol() == ("h2" if http2 else "http/1.1")
    s.close()
    for offer, chosen in [(["http/1.1"], "http/1.1"), (["spdy/3", "http/1.1"], "http/1.1"),
                          (["spdy/3"], None)]:
        s = tls_connect(srv, pki.client_context(alpn=offer))
        try:
            assert s.selected_alpn_protocol() == chosen, offer
            s.sendall(b"GET /text HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data, _ = read_until_close(s, 5)
            assert data.startswith(b"HTTP/1.1 200 "), data[:100]
        finally:
            s.close()


def test_wss_scope(serve, pki):
    """A WebSocket over TLS: scheme wss, the TLS extension next to WebSocket's own."""
    leaf = pki.issue()
    srv = tls_serve(serve, leaf, app=WS_APP)

    async def main():
        uri = "wss://127.0.0.1:%d/scope" % srv.port
        async with websockets.connect(uri, ssl=pki.client_context()) as ws:
            return json.loads(await ws.recv())

    scope = asyncio.run(asyncio.wait_for(main(), 20))
    assert scope["scheme"] == "wss"
    assert scope["extensions"]["tls"]["server_cert"] == leaf.pem
    assert "websocket.http.response" in scope["extensions"]


def test_plain_http_on_tls_port(serve, pki):
    """A plain HTTP request on the TLS port gets a plain 400 saying to use https://;
    the port keeps serving TLS."""
    srv = tls_serve(serve, pki.issue())
    data, closed = srv.raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert closed
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n"), data
    assert data.endswith(b"\r\n\r\nThis port speaks HTTPS: use an https:// URL.\n")
    assert served(srv, pki)


def test_failed_handshakes_leave_the_server_serving(serve, pki):
    """Garbage instead of a ClientHello, a ClientHello cut short and then silence, a
    TCP connection that says nothing (closed at --header-timeout), a client that
    does not trust the certificate, one that asks for another name (SNI), one that
    offers only TLS 1.1: each loses its own connection; honest clients are served
    throughout."""
    srv = tls_serve(serve, pki.issue(), "--header-timeout", "1.5", "-v", "2")
    data, closed = srv.raw(b"\x16\x03\x01\x00\x05garbage that is no ClientHello" * 4)
    assert closed and not data.startswith(b"HTTP")
    t0 = time.monotonic()
    silent, partial = srv.connect(), srv.connect()
    try:
        partial.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # then nothing
        assert served(srv, pki)  # while those two wait
        for s in (silent, partial):
            data, closed = read_until_close(s, 6)
            assert closed and data == b""
        assert 1.0 < time.monotonic() - t0 < 5.0
    finally:
        silent.close()
        partial.close()
    other = Pki(pki.dir / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        https(srv, other.client_context())
    with pytest.raises(ssl.SSLCertVerificationError, match="match|mismatch"):
        tls_connect(srv, pki.client_context(), server_hostname="other.example")
    old = pki.client_context(maximum=ssl.TLSVersion.TLSv1_1)
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        tls_connect(srv, old)
    assert served(srv, pki)
    assert "TLS handshake with 127.0.0.1:" in srv.stderr()


def test_expired_certificate_is_served_with_a_warning(serve, pki):
    """An expired certificate is what clients refuse; laurel says so at start-up and
    keeps serving whoever accepts it."""
    leaf = pki.issue(expired=True)
    srv = tls_serve(serve, leaf)
    assert "TLS certificate %s for ssl:port=%d:interface=127.0.0.1 is expired" % (
        leaf.cert, srv.port) in srv.stderr()
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        https(srv, pki.client_context())
    lax = pki.client_context(check_hostname=False)
    lax.verify_mode = ssl.CERT_NONE
    assert https(srv, lax, path="/text")[0] == 200


def test_bad_files_stop_the_server_at_start(tmp_path, pki):
    """Each problem: exit status 1 before any port is taken, one line naming the file."""
    leaf = pki.issue()
    other = pki.issue()
    loose = pki.issue(key_mode=0o644)
    locked = pki.issue(password="s3cret")
    missing = tmp_path / "nope.key"
    cases = [
        (["--ssl-certfile", loose.cert, "--ssl-keyfile", loose.key],
         f"private key {loose.key}: its permissions (0644) let any user read it; make it "
         "readable by its owner only (chmod 600) or by owner and group (chmod 640)"),
        (["--ssl-certfile", leaf.cert, "--ssl-keyfile", other.key],
         f"private key {other.key} does not match certificate {leaf.cert}"),
        (["--ssl-certfile", leaf.cert, "--ssl-keyfile", missing],
         f"private key {missing}: No such file or directory"),
        (["--ssl-certfile", tmp_path / "nope.crt", "--ssl-keyfile", leaf.key],
         f"certificate {tmp_path / 'nope.crt'}:"),
        (["--ssl-certfile", locked.cert, "--ssl-keyfile", locked.key,
          "--ssl-keyfile-password", "wrong"], f"private key {locked.key}:"),
        (["-e", f"ssl:0:privateKey={leaf.key}:certKey={leaf.cert}:"
                f"extraCertChainFile={leaf.key}"], "no PEM certificate in it"),
    ]
    for args, want in cases:
        r = run_cli("-p", "0", *args, app="tests.apps.basic:app")
        assert r.returncode == 1, (args, r.stderr)
        assert want in r.stderr, (args, r.stderr)
        assert "Listening on" not in r.stderr
    r = run_cli("--ssl-keyfile", leaf.key, app="tests.apps.basic:app")
    assert r.returncode == 2 and "--ssl-keyfile needs --ssl-certfile" in r.stderr
    r = run_cli("-e", "tcp:0", "--ssl-certfile", leaf.cert, app="tests.apps.basic:app")
    assert r.returncode == 2 and "-e endpoints use ssl:" in r.stderr


def test_group_readable_key_and_encrypted_key(serve, pki):
    """Debian's way (0640, group ssl-cert) is accepted; an encrypted key opens with
    --ssl-keyfile-password; a key inside the certificate file works without
    --ssl-keyfile."""
    group = pki.issue(key_mode=0o640)
    assert served(tls_serve(serve, group), pki)
    locked = pki.issue(password="s3cret")
    assert served(tls_serve(serve, locked, "--ssl-keyfile-password", "s3cret"), pki)
    both = pki.issue()
    combined = pki.dir / "combined.pem"
    combined.write_text(both.key.read_text() + both.pem)
    os.chmod(combined, 0o600)
    assert served(serve("tests.apps.basic:app", "--ssl-certfile", combined), pki)


def test_ssl_endpoint_with_chain(serve, pki):
    """daphne's endpoint string, with Twisted's extraCertChainFile: a certificate from
    an intermediate CA verifies with the chain sent, and does not without it."""
    inter, inter_path = pki.intermediate()
    leaf = pki.issue(issuer=inter)
    port = free_port()
    with_chain = serve("tests.apps.basic:app", "-e",
                       f"ssl:{port}:privateKey={leaf.key}:certKey={leaf.cert}"
                       f":interface=127.0.0.1:extraCertChainFile={inter_path}", port=port)
    assert scope_over(with_chain, pki.client_context())["scheme"] == "https"
    port2 = free_port()
    without = serve("tests.apps.basic:app", "-e",
                    f"ssl:port={port2}:privateKey={leaf.key}:certKey={leaf.cert}"
                    ":interface=127.0.0.1", port=port2)
    with pytest.raises(ssl.SSLCertVerificationError):
        https(without, pki.client_context())


@pytest.mark.parametrize("reqs", [1, 2])
def test_client_certificates(serve, pki, reqs):
    """--ssl-ca-certs with --ssl-cert-reqs: the client's certificate reaches the app
    (name, chain); without one, 2 refuses the handshake and 1 serves."""
    srv = tls_serve(serve, pki.issue(), "--ssl-ca-certs", pki.ca, "--ssl-cert-reqs", reqs)
    alice = pki.issue("alice", client=True)
    ctx = pki.client_context()
    ctx.load_cert_chain(alice.cert, alice.key)
    tls = scope_over(srv, ctx)["extensions"]["tls"]
    assert tls["client_cert_name"] == "O=laurel tests,CN=alice"
    # Its own certificate first, then what it sent along: OpenSSL clients add the CA
    # certificates they can chain to from their trust store.
    assert tls["client_cert_chain"][0] == alice.pem
    assert tls["client_cert_chain"][1:] in ([], [pki.ca.read_text()])
    stranger_pki = Pki(pki.dir / "stranger")
    mallory = stranger_pki.issue("mallory", client=True)
    bad = pki.client_context()
    bad.load_cert_chain(mallory.cert, mallory.key)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https(srv, bad)
    if reqs == 2:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            https(srv, pki.client_context())
    else:
        assert scope_over(srv, pki.client_context())["extensions"]["tls"]["client_cert_chain"] == []


def _resumed(srv, ctx, n=6):
    """How many of n reconnections resumed the first connection's session."""
    s = tls_connect(srv, ctx)
    s.sendall(b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
    s.recv(65536)  # TLS 1.3 tickets come after the handshake, with the first data
    session = s.session
    s.close()
    reused = 0
    for _ in range(n):
        s = tls_connect(srv, ctx, session=session)
        s.sendall(b"GET /text HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        read_until_close(s, 5)
        reused += s.session_reused
        s.close()
    return reused


@pytest.mark.parametrize("workers", [1, 2])
def test_session_resumption(serve, pki, workers):
    """Tickets resume TLS 1.3 and 1.2 sessions, on whichever worker the client reaches
    (the ticket keys are made once, before the workers fork)."""
    srv = tls_serve(serve, pki.issue(), "--workers", workers)
    if workers > 1:
        srv.wait_output("Master process", stream="stderr")
    assert _resumed(srv, pki.client_context()) == 6
    assert _resumed(srv, pki.client_context(maximum=ssl.TLSVersion.TLSv1_2)) == 6


def _peer_pem(srv, ctx):
    s = tls_connect(srv, ctx)
    try:
        return ssl.DER_cert_to_PEM_cert(s.getpeercert(binary_form=True))
    finally:
        s.close()


def _same_cert(pem_a, pem_b):
    return ssl.PEM_cert_to_DER_cert(pem_a) == ssl.PEM_cert_to_DER_cert(pem_b)


@pytest.mark.parametrize("mode", ["single-SIGHUP", "master-SIGUSR1"])
def test_reload_keeps_live_connections(serve, pki, mode):
    """The certificate files are replaced and the signal sent: new connections get the
    new certificate; a keep-alive connection and a WebSocket opened before go on
    working; files that fail the checks are logged and the current certificate stays."""
    first, second = pki.issue(tag="first"), pki.issue(tag="second")
    cert, key = pki.dir / "live.crt", pki.dir / "live.key"
    cert.write_text(first.cert.read_text())
    key.write_bytes(first.key.read_bytes())
    os.chmod(key, 0o600)
    args = ["--ssl-certfile", cert, "--ssl-keyfile", key]
    if mode.startswith("master"):
        args += ["--workers", "2"]
    srv = serve(WS_APP, *args)
    sig = signal.SIGHUP if mode.startswith("single") else signal.SIGUSR1
    # Every process logs its own reload: the master (whose context later workers are
    # forked with) and each worker. Checking before all have read the files races: two
    # signals close together reach a slow worker as one, read after the key is broken.
    processes = 1 if mode.startswith("single") else 3
    ctx = pki.client_context()
    assert _same_cert(_peer_pem(srv, ctx), first.pem)
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=10)

    async def main():
        async with websockets.connect("wss://127.0.0.1:%d/echo" % srv.port, ssl=ctx) as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            assert https(srv, ctx, path="/text", conn=conn)[0] == 200
            cert.write_text(second.cert.read_text())
            key.write_bytes(second.key.read_bytes())
            srv.signal(sig)
            text = await asyncio.to_thread(srv.wait_output, "TLS certificate reloaded",
                                           "stderr", 10, processes)
            assert text.count("TLS certificate reloaded for ssl:port=%d" % srv.port) >= (
                processes), text[-2000:]
            for _ in range(4):  # whichever worker answers
                assert _same_cert(await asyncio.to_thread(_peer_pem, srv, ctx), second.pem)
            await ws.send("after")
            assert await ws.recv() == "after"
            assert https(srv, ctx, path="/text", conn=conn)[0] == 200
            key.write_text("not a key\n")
            srv.signal(sig)
            text = await asyncio.to_thread(srv.wait_output, "keeping the current certificate",
                                           "stderr", 10, processes)
            assert text.count("keeping the current certificate") >= processes, text[-2000:]
            assert _same_cert(await asyncio.to_thread(_peer_pem, srv, ctx), second.pem)
            await ws.send("still")
            assert await ws.recv() == "still"

    try:
        asyncio.run(asyncio.wait_for(main(), 40))
    finally:
        conn.close()


def test_tls_on_a_unix_socket(serve, pki, tmp_path):
    """--ssl-certfile covers -u listeners as uvicorn's does."""
    leaf = pki.issue()
    path = tmp_path / "tls.sock"
    srv = serve("tests.apps.basic:app", "-u", path, "--ssl-certfile", leaf.cert,
                "--ssl-keyfile", leaf.key, unix=path)
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(10)
    raw.connect(str(path))
    s = pki.client_context().wrap_socket(raw, server_hostname="localhost")
    try:
        s.sendall(b"GET /scope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, _ = read_until_close(s, 5)
    finally:
        s.close()
    body = data.split(b"\r\n\r\n", 1)[1]
    scope = json.loads(body)["scope"]
    assert scope["scheme"] == "https"
    assert scope["extensions"]["tls"]["server_cert"] == leaf.pem


def _h2_over_tls(srv, pki):
    s = tls_connect(srv, pki.client_context(alpn=["h2", "http/1.1"]))
    assert s.selected_alpn_protocol() == "h2"
    return s


def test_http2_over_tls(serve, pki):
    """ALPN h2: HTTP/2 on the TLS connection, the scope's http_version "2" with scheme
    https and the TLS extension; h2load over TLS (100 streams at a time) sees no error."""
    from h2helpers import Client
    leaf = pki.issue()
    srv = tls_serve(serve, leaf)
    c = Client(srv, sock=_h2_over_tls(srv, pki))
    try:
        status, _, body = c.get("/scope")
        assert status == 200
        scope = json.loads(body)["scope"]
        assert scope["http_version"] == "2" and scope["scheme"] == "https"
        assert scope["extensions"]["tls"]["server_cert"] == leaf.pem
        status, _, body = c.get("/big?size=%d" % (3 << 20), timeout=20)
        assert status == 200 and body == b"b" * (3 << 20)
    finally:
        c.close()
    if shutil.which("h2load"):
        r = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "100",
                            f"https://127.0.0.1:{srv.port}/text"],
                           capture_output=True, text=True, timeout=60)
        assert "2000 succeeded, 0 failed, 0 errored" in r.stdout, r.stdout[-1500:]
        assert "Application protocol: h2" in r.stdout


def test_websocket_over_http2_over_tls(serve, pki):
    """RFC 8441 on a TLS connection: the extended CONNECT's WebSocket has scheme wss,
    http_version "2" and the TLS extension, and echoes."""
    from h2helpers import Raw
    from test_h2_websocket import WS
    srv = tls_serve(serve, pki.issue(), app=WS_APP)
    raw = Raw(srv, sock=_h2_over_tls(srv, pki))
    try:
        ws = WS(srv, "/scope", raw=raw, sid=1)
        assert ws.handshake() == 200
        scope = json.loads(ws.recv()[1])
        assert scope["scheme"] == "wss" and scope["http_version"] == "2"
        assert "tls" in scope["extensions"]
        echo = WS(srv, "/echo", raw=raw, sid=3)
        assert echo.handshake() == 200
        echo.send(0x1, b"over h2 over tls")
        assert echo.recv() == (0x1, b"over h2 over tls")
    finally:
        raw.close()
