"""Error paths of the bridged layer's configuration and connection set-up, without a
Redis server: refused host forms, a peer that accepts the TCP connection but never
answers (connect_timeout), and parse_host's normalisation."""

import asyncio
import logging
import socket
import threading
import time

import pytest

import layer_fixtures  # noqa: F401  (build/ and python/ first on sys.path)

django_conf = pytest.importorskip("django.conf")
if not django_conf.settings.configured:
    django_conf.settings.configure()

from laurel.layers import ChannelLayer, parse_host  # noqa: E402


@pytest.mark.parametrize("host, pattern", [
    ("http://127.0.0.1:6379", "unsupported Redis URL"),
    ({"master_name": "mymaster"}, "list of 'sentinels'"),
    ({"sentinels": [("127.0.0.1", 26379)]}, "needs a 'master_name'"),
    ({"master_name": "m", "sentinels": [("h", 1, 2)]}, r"a sentinel is \(host, port\)"),
    ({"path": "/run/r.sock", "ssl": True}, "TLS over a UNIX socket"),
    ("rediss://h?ssl_cert_reqs=sometimes", "ssl_cert_reqs must be"),
    ("rediss://h?ssl_ca_certs=/nonexistent/ca.pem", "h:6379: cannot load the CA certificates"),
    ({"host": "h", "connection_class": object}, "connection_class"),
    ("redis://127.0.0.1:6379/x", "database"),
    ({"nohost": 1}, "needs an 'address'"),
    (("127.0.0.1", 6379, 0), r"\(host, port\)"),
    (6379, "must be a URL"),
    ("unix://", "no socket path"),
])
def test_refused_hosts(host, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        ChannelLayer(hosts=[host])


def test_hosts_must_be_a_list():
    with pytest.raises(TypeError, match="list of Redis hosts"):
        ChannelLayer(hosts="redis://127.0.0.1:6379")


@pytest.mark.parametrize("host, expected", [
    ("redis://127.0.0.1:6380/2", ("127.0.0.1", 6380, None, None, "127.0.0.1:6380", 2, None)),
    ("redis://h?db=3", ("h", 6379, None, None, "h:6379", 3, None)),
    ("redis://:s%40cret@h", ("h", 6379, None, "s@cret", "h:6379", 0, None)),
    ("redis://u:pw@[::1]:7000", ("::1", 7000, "u", "pw", "[::1]:7000", 0, None)),
    ("unix:///run/r.sock?password=x", ("/run/r.sock", 0, None, "x", "unix:/run/r.sock", 0, None)),
    ("unix:///run/r.sock?db=1", ("/run/r.sock", 0, None, None, "unix:/run/r.sock", 1, None)),
    ("unix:/run/r.sock", ("/run/r.sock", 0, None, None, "unix:/run/r.sock", 0, None)),
    (("10.0.0.1", "6379"), ("10.0.0.1", 6379, None, None, "10.0.0.1:6379", 0, None)),
    ({"address": ("h", 1), "password": "p"}, ("h", 1, None, "p", "h:1", 0, None)),
    ({"address": "redis://h/4", "db": 5}, ("h", 6379, None, None, "h:6379", 5, None)),
    ({"host": "h", "port": 7, "db": 2, "password": "p"}, ("h", 7, None, "p", "h:7", 2, None)),
    ({"path": "/run/r.sock"}, ("/run/r.sock", 0, None, None, "unix:/run/r.sock", 0, None)),
    ("rediss://h:7", ("h", 7, None, None, "rediss://h:7", 0,
                      {"cert_reqs": "required", "check_hostname": False})),
    ("rediss://h?ssl_cert_reqs=none&ssl_ca_certs=/ca.pem&ssl_check_hostname=true",
     ("h", 6379, None, None, "rediss://h:6379", 0,
      {"cert_reqs": "none", "check_hostname": True, "ca_certs": "/ca.pem"})),
    ({"address": "rediss://h", "ssl_cert_reqs": None, "ssl_certfile": "/c.pem"},
     ("h", 6379, None, None, "rediss://h:6379", 0,
      {"cert_reqs": "none", "check_hostname": False, "certfile": "/c.pem"})),
    ({"master_name": "mymaster", "sentinels": [("127.0.0.1", 26379), ["s2", "26380"]],
      "sentinel_kwargs": {"password": "sp"}, "password": "mp", "db": 1},
     ("mymaster", -1, None, "mp", "sentinel:mymaster", 1, None,
      {"sentinels": [("127.0.0.1", 26379), ("s2", 26380)], "username": None,
       "password": "sp"})),
    ({"host": "h", "port": 7, "ssl": True, "ssl_cert_reqs": 2, "ssl_keyfile": "/k.pem"},
     ("h", 7, None, None, "rediss://h:7", 0,
      {"cert_reqs": "required", "check_hostname": False, "keyfile": "/k.pem"})),
])
def test_parse_host(host, expected):
    assert parse_host(host) == expected


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelno, record.getMessage()))


def test_redis_that_never_answers_times_out():
    """A listener that accepts and then says nothing: the connection counts as
    unreachable after connect_timeout, is retried, and local delivery goes on."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    accepted = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(srv.accept()[0])  # held open, never written to
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    rec = _Records()
    log = logging.getLogger("laurel.layers")
    log.addHandler(rec)
    layer = ChannelLayer(hosts=[("127.0.0.1", port)], connect_timeout=0.3,
                         reconnect_max=0.2)
    try:
        async def main():
            ch = await layer.new_channel()
            await layer.group_add("g", ch)
            await layer.group_send("g", {"type": "local"})
            assert await asyncio.wait_for(layer.receive(ch), 2) == {"type": "local"}
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and len(accepted) < 4:
                await asyncio.sleep(0.05)

        asyncio.run(main())
        stats = layer.stats()["redis"]
        assert stats["connected"] == 0
        assert len(accepted) >= 4, "no retry after the timeout"  # 2 connections, retried
        errors = [m for lvl, m in rec.lines if lvl == logging.ERROR]
        assert len(errors) == 1, rec.lines  # once per outage, not per attempt
        assert f"127.0.0.1:{port} unreachable: no answer within 0.3 s" in errors[0]
    finally:
        layer.close_sync(0.5)
        log.removeHandler(rec)
        stop.set()
        t.join()
        for c in accepted:
            c.close()
        srv.close()


def test_core_layer_refuses_before_any_redis_call():
    """laurel.layers.RedisChannelLayer says no at once, without Redis: another process's
    channel cannot be received here, a message must be a dict without
    __asgi_channel__, names are Channels' own rules."""
    from laurel.layers import RedisChannelLayer

    layer = RedisChannelLayer(hosts=["redis://127.0.0.1:1"], connect_timeout=0.2)
    try:
        other = "specific.%s!abc" % ("0" * 32)

        async def main():
            with pytest.raises(ValueError, match="process-local channel of another process"):
                await layer.receive(other)
            with pytest.raises(TypeError, match="not a dict"):
                await layer.send("somewhere", ["not", "a", "dict"])
            with pytest.raises(ValueError, match="__asgi_channel__"):
                await layer.send("somewhere", {"__asgi_channel__": "x"})
            with pytest.raises(TypeError):
                await layer.group_send("bad group!", {"type": "x"})
        asyncio.run(main())
    finally:
        layer.close_sync(0.5)
