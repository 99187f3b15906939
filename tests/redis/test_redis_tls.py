"""Redis over TLS (``rediss://``) for both of laurel's Redis layers, against Debian's
redis-server on its TLS port with a throwaway CA made here (openssl).

- channels_redis' core layer (settings swapped under laurel) and pub/sub layer, with
  channels_redis processes on the same TLS Redis: every message once;
- redis-py's options: ``ssl_ca_certs``, ``ssl_cert_reqs`` (``none`` needs no CA),
  ``ssl_check_hostname``, in the URL or in a keyword dict with ``"ssl": True``;
- a certificate that does not verify (another CA, a host name it is not for): the
  server says so naming the host, keeps serving, retries with backoff, and local
  delivery goes on.
"""

import asyncio
import re

import pytest

from conftest import _Factory
from redis_fixtures import (LAUREL, LAUREL_CORE, AppMember, TlsFiles, agents,  # noqa: F401
                            app_group_send, app_layer, app_stats, expect_everywhere,
                            finalize_all, needs_redis, redis_factory, start_layer_app,  # noqa: F401
                            unique, wait_for)

websockets = pytest.importorskip("websockets")
pytest.importorskip("channels_redis")

pytestmark = [needs_redis, pytest.mark.slow, pytest.mark.laurel_only]


def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def msg(tag, **kw):
    return dict({"type": "test.message", "tag": tag}, **kw)


@pytest.fixture
def tls_redis(redis_factory, tmp_path):
    return redis_factory(tls=TlsFiles(tmp_path / "tls"))


@pytest.mark.parametrize("backend, agent_kind, laurel_kind, layer", [
    ("core", "core", "laurelcore", LAUREL_CORE),
    ("pubsub", "pubsub", "laurel", LAUREL),
])
def test_tls_both_protocols_exactly_once(tls_redis, agents, tmp_path, backend, agent_kind,
                                         laurel_kind, layer):
    """A laurel server whose settings name channels_redis (swapped), channels_redis and
    laurel's layer in plain processes, all on rediss://: every member gets every
    message once; nothing travels in clear on the plain port's side (the TLS port was
    the only one named)."""
    url = tls_redis.tls_url(ssl_check_hostname="true")
    factory = _Factory(tmp_path / "servers")
    try:
        srv = start_layer_app(factory, backend, [url])
        assert app_layer(srv) == layer
        ref = agents(agent_kind, [url], name="channels_redis")
        lo = agents(laurel_kind, [url], name="laurel")
        group = unique("tls")

        async def main():
            m = await AppMember.open(srv, group, name="server")
            r_ch = await asyncio.to_thread(ref.member, group)
            l_ch = await asyncio.to_thread(lo.member, group)
            if backend == "pubsub":
                await asyncio.to_thread(tls_redis.wait_numsub, f"asgi__group__{group}", 3)
            expected = []
            for i, send in enumerate([lambda m: app_group_send(srv, group, m),
                                      lambda m: ref.group_send(group, m),
                                      lambda m: lo.group_send(group, m)]):
                expected.append(msg("t", n=i))
                await asyncio.to_thread(send, expected[-1])
            await expect_everywhere({"server": lambda: m.events,
                                     "channels_redis": lambda: ref.messages(r_ch),
                                     "laurel": lambda: lo.messages(l_ch)}, expected)
            await m.close()
        run(main())
        assert "rediss://localhost:%d" % tls_redis.tls_port in srv.stderr()
    finally:
        finalize_all(factory)


def test_tls_option_forms(tls_redis, agents):
    """ssl_cert_reqs=none needs no CA; a redis-py keyword dict with "ssl": True and
    ssl_ca_certs works as the URL does."""
    lo = agents("laurelcore", [tls_redis.tls_url(ca=False, ssl_cert_reqs="none")],
                name="noverify")
    kw = agents("laurelcore", [{"host": "127.0.0.1", "port": tls_redis.tls_port, "ssl": True,
                                "ssl_ca_certs": str(tls_redis.tls.ca)}], name="kwargs")
    group = unique("forms")
    a, b = lo.member(group), kw.member(group)
    kw.group_send(group, msg("k"))
    lo.group_send(group, msg("n"))
    lo.wait_messages(2, a)
    kw.wait_messages(2, b)
    assert lo.messages(a) == kw.messages(b) == [msg("k"), msg("n")]


def test_certificate_that_does_not_verify(tls_redis, redis_factory, agents, tmp_path):
    """Another CA, or a certificate for another host name with ssl_check_hostname: the
    server logs why, naming the host, keeps serving and delivering locally, and keeps
    retrying with backoff; without the host-name check that certificate is accepted
    (redis-py's default)."""
    other = TlsFiles(tmp_path / "other", tag="other")
    elsewhere = redis_factory(tls=TlsFiles(tmp_path / "named", names=("redis.example",),
                                           tag="named"))
    factory = _Factory(tmp_path / "servers")
    try:
        wrong_ca = start_layer_app(factory, "core", [tls_redis.tls_url(ca=other.ca)],
                                   config={"connect_timeout": 2})
        wrong_name = start_layer_app(
            factory, "core", [elsewhere.tls_url(ssl_check_hostname="true")],
            config={"connect_timeout": 2})
        for srv, why in ((wrong_ca, "certificate verify failed: self.signed certificate"),
                         (wrong_name, "certificate verify failed: hostname mismatch")):
            wait_for(lambda: re.search(why, srv.stderr()), 15, why)
            assert re.search(r"Redis rediss://localhost:\d+ unreachable: TLS handshake: "
                             + why, srv.stderr()), srv.stderr()[-3000:]

            async def local(srv=srv):
                m = await AppMember.open(srv, name="local")
                await m.call("send", channel=m.channel, message=msg("here"))
                await expect_everywhere({"m": lambda: m.events}, [msg("here")], quiet=0.2)
                await m.close()
            run(local())
            stats = app_stats(srv)
            assert stats["redis"]["connected"] == 0 and stats["redis"]["reconnects"] == 0, stats
            wait_for(lambda: srv.stderr().count("retrying") == 1, 5, "one outage line")
        relaxed = agents("laurelcore", [elsewhere.tls_url()], name="relaxed")
        group = unique("relaxed")
        ch = relaxed.member(group)
        relaxed.group_send(group, msg("ok"))
        relaxed.wait_messages(1, ch)
    finally:
        finalize_all(factory)
