"""The ``hosts`` forms of laurel's Redis bridge and sharding.

- UNIX socket (``unix:///path`` and ``unix:/path``) to a redis-server listening on a
  socket only;
- ``(host, port)`` tuples and lists, ``{"address": ...}`` dicts with a URL or a tuple;
- several hosts = shards chosen exactly as channels_redis does
  (``channels_redis.utils._consistent_hash`` is the oracle): the group and specific
  channels are SUBSCRIBEd on their shard only (checked with PUBSUB CHANNELS/NUMSUB on
  each redis-server), and laurel interoperates with channels_redis' pub/sub layer
  configured with the same hosts, including names on the shard boundaries of a
  3-shard ring, where integer arithmetic would disagree with channels_redis'.
"""

import asyncio
import binascii

import pytest

from conftest import _Factory
from redis_fixtures import (AppMember, agents, app_group_send, expect_everywhere,  # noqa: F401
                            finalize_all, needs_redis, oracle, redis_factory,  # noqa: F401
                            redis_stats, side_layer, start_layer_app, unique)

websockets = pytest.importorskip("websockets")
pytest.importorskip("channels_redis")
from channels_redis.utils import _consistent_hash  # noqa: E402

pytestmark = [needs_redis, pytest.mark.slow]


def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def servers(tmp_path):
    factory = _Factory(tmp_path / "servers")
    yield factory
    finalize_all(factory)


def msg(tag, **kw):
    return dict({"type": "test.message", "tag": tag}, **kw)


async def athread(f, *a):
    return await asyncio.to_thread(f, *a)


async def exchange(group, senders, sinks, pre=()):
    """Each sender (name, callable(message)) sends one group message in turn; after
    each, every sink must have received exactly the messages so far (in order)."""
    expected = list(pre)
    for name, send in senders:
        m = msg(f"from-{name}", group=group)
        await athread(send, m)
        expected.append(m)
        await expect_everywhere(sinks, expected, quiet=0)
    await expect_everywhere(sinks, expected)


def group_on_shard(shard, n, prefix):
    """A group name whose group channel lands on ``shard`` of ``n``."""
    for i in range(10000):
        g = f"{prefix}-{i}"
        if _consistent_hash(f"asgi__group__{g}", n) == shard:
            return g
    raise AssertionError("no such name")


# --------------------------------------------------------------------------- UNIX socket

def test_unix_socket(redis_factory, servers, agents):
    """redis-server on a UNIX socket only: two laurel servers (``unix:///path`` and
    ``unix:/path``), a plain process on laurel's layer and one on channels_redis
    exchange group messages, each received once."""
    redis = redis_factory(tcp=False)
    path = redis.unix
    a = start_layer_app(servers, side_layer(), [f"unix://{path}"])
    b = start_layer_app(servers, side_layer(), [f"unix:{path}"])
    p = agents("pubsub", [f"unix://{path}"], name="pubsub")
    lo = agents(side_layer(), [f"unix://{path}"], name="laurel-outside")
    g = unique("unix")
    p_ch, l_ch = p.member(g), lo.member(g)

    async def main():
        ma = await AppMember.open(a, g, name="A")
        mb = await AppMember.open(b, g, name="B")
        await athread(redis.wait_numsub, f"asgi__group__{g}", 4)
        if not oracle():
            for s in (a, b):
                st = await athread(redis_stats, s)
                assert (st["shards"], st["connected"]) == (1, 1), st
        sinks = {"A": lambda: ma.events, "B": lambda: mb.events,
                 "P": lambda: p.messages(p_ch), "L": lambda: lo.messages(l_ch)}
        await exchange(g, [("A", lambda m: app_group_send(a, g, m)),
                           ("B", lambda m: app_group_send(b, g, m, "sync")),
                           ("P", lambda m: p.group_send(g, m)),
                           ("L", lambda m: lo.group_send(g, m))], sinks)
        z = msg("direct")
        await athread(p.send, ma.channel, z)
        await expect_everywhere({"A-direct": lambda: ma.events[4:]}, [z])
        await ma.close()
        await mb.close()
    run(main())


# --------------------------------------------------------------------------- tuple, dict

def test_tuple_list_and_dict_hosts(redis_factory, servers, agents):
    """("127.0.0.1", port), ["127.0.0.1", port], {"address": URL} and
    {"address": (host, port)} all reach the same Redis (channels_redis' pub/sub layer,
    on a URL, is on the same groups)."""
    redis = redis_factory()
    url, tup = redis.url(), ("127.0.0.1", redis.port)

    def form(x):  # channels_redis 4.0's pub/sub layer takes URLs only
        return url if oracle() else x

    a = start_layer_app(servers, side_layer(), [form(tup)])
    b = start_layer_app(servers, side_layer(), [{"address": form(url)}])
    l1 = agents(side_layer(), [form(list(tup))], name="laurel-list")
    l2 = agents(side_layer(), [{"address": form(tup)}], name="laurel-dict-tuple")
    p = agents("pubsub", [url], name="pubsub")
    g = unique("forms")
    chans = {"L1": l1.member(g), "L2": l2.member(g), "P": p.member(g)}

    async def main():
        ma = await AppMember.open(a, g, name="A-tuple")
        mb = await AppMember.open(b, g, name="B-dict")
        await athread(redis.wait_numsub, f"asgi__group__{g}", 5)
        sinks = {"A": lambda: ma.events, "B": lambda: mb.events,
                 "L1": lambda: l1.messages(chans["L1"]),
                 "L2": lambda: l2.messages(chans["L2"]), "P": lambda: p.messages(chans["P"])}
        await exchange(g, [("A", lambda m: app_group_send(a, g, m)),
                           ("B", lambda m: app_group_send(b, g, m)),
                           ("L1", lambda m: l1.group_send(g, m)),
                           ("L2", lambda m: l2.group_send(g, m)),
                           ("P", lambda m: p.group_send(g, m))], sinks)
        await ma.close()
        await mb.close()
    run(main())


# --------------------------------------------------------------------------- shards

def check_placement(rs, name):
    """name is subscribed on its shard (by channels_redis' hash) and no other."""
    n = len(rs)
    want = _consistent_hash(name, n)
    got = [r.numsub(name)[name] for r in rs]
    assert got[want] >= 1 and all(c == 0 for i, c in enumerate(got) if i != want), \
        f"{name!r}: subscribers per shard {got}, expected on shard {want} only"


def test_two_shards(redis_factory, servers, agents):
    """Two redis-servers as two shards: laurel servers and plain processes (laurel's
    layer, channels_redis' pub/sub layer) configured with the same two hosts put each
    group and specific channel on the same shard and exchange group messages and
    send() across both shards, each received once."""
    rs = [redis_factory(), redis_factory()]
    hosts = [r.url() for r in rs]
    g0 = group_on_shard(0, 2, unique("s"))
    g1 = group_on_shard(1, 2, unique("s"))
    a = start_layer_app(servers, side_layer(), hosts)
    b = start_layer_app(servers, side_layer(), hosts)
    p = agents("pubsub", hosts, name="pubsub")
    lo = agents(side_layer(), hosts, name="laurel-outside")
    p_ch, l_ch = p.member(g0, g1), lo.member(g0, g1)

    async def main():
        ma = await AppMember.open(a, g0, g1, name="A")
        mb = await AppMember.open(b, g0, g1, name="B")
        await athread(rs[0].wait_numsub, f"asgi__group__{g0}", 4)
        await athread(rs[1].wait_numsub, f"asgi__group__{g1}", 4)
        assert rs[0].channels("asgi__group__*") == [f"asgi__group__{g0}"]
        assert rs[1].channels("asgi__group__*") == [f"asgi__group__{g1}"]
        for ch in (ma.channel, mb.channel, p_ch, l_ch):
            await athread(rs[_consistent_hash(ch, 2)].wait_numsub, ch, 1)
            check_placement(rs, ch)
        if not oracle():
            for s in (a, b):
                st = await athread(redis_stats, s)
                assert (st["shards"], st["connected"]) == (2, 2), st

        sinks = {"A": lambda: ma.events, "B": lambda: mb.events,
                 "P": lambda: p.messages(p_ch), "L": lambda: lo.messages(l_ch)}
        expected = []
        plan = [("A", g0), ("A", g1), ("B", g1), ("P", g0), ("P", g1), ("L", g0),
                ("L", g1), ("B", g0)]
        senders = {"A": lambda g, m: app_group_send(a, g, m),
                   "B": lambda g, m: app_group_send(b, g, m, "sync"),
                   "P": p.group_send, "L": lo.group_send}
        for who, g in plan:
            m = msg(f"{who}->{g}")
            await athread(senders[who], g, m)
            expected.append(m)
            await expect_everywhere(sinks, expected, quiet=0)
        await expect_everywhere(sinks, expected)

        # send() to specific channels on either shard
        directs = {"A": [], "B": [], "P": [], "L": []}
        names = {"A": ma.channel, "B": mb.channel, "P": p_ch, "L": l_ch}
        for src, dst in (("P", "A"), ("P", "B"), ("L", "A"), ("A", "P"), ("B", "L"),
                         ("A", "B")):
            m = msg(f"{src}=>{dst}")
            if src == "P":
                await athread(p.send, names[dst], m)
            elif src == "L":
                await athread(lo.send, names[dst], m)
            else:
                await (ma if src == "A" else mb).call("send", channel=names[dst], message=m)
            directs[dst].append(m)
        n = len(expected)
        await asyncio.gather(*(expect_everywhere({k: lambda k=k: sinks[k]()[n:]}, directs[k])
                               for k in sinks))
        await ma.close()
        await mb.close()
        # the last local member gone, each process unsubscribes (A, B: 4 -> 2)
        await athread(rs[0].wait_numsub, f"asgi__group__{g0}", 2)
        await athread(rs[1].wait_numsub, f"asgi__group__{g1}", 2)
    run(main())


def test_three_shards_ring_boundaries(redis_factory, servers, agents):
    """Three shards: group names whose crc32 & 0xFFF is 0, 1365, 1366, 2730, 2731 or
    4095 (the edges of channels_redis' float ring) land on the same shard for laurel
    and channels_redis: each is subscribed on its shard only and messages go across."""
    rs = [redis_factory() for _ in range(3)]
    hosts = [r.url() for r in rs]
    prefix = unique("ring")
    wanted, groups = {0, 1365, 1366, 2730, 2731, 4095}, []
    for i in range(200000):
        g = f"{prefix}-{i}"
        c = binascii.crc32(f"asgi__group__{g}".encode()) & 0xFFF
        if c in wanted:
            wanted.discard(c)
            groups.append(g)
            if not wanted:
                break
    assert not wanted
    a = start_layer_app(servers, side_layer(), hosts)
    p = agents("pubsub", hosts, name="pubsub")
    p_ch = p.member(*groups)

    async def main():
        ma = await AppMember.open(a, *groups, name="A")
        for g in groups:
            name = f"asgi__group__{g}"
            await athread(rs[_consistent_hash(name, 3)].wait_numsub, name, 2)
            check_placement(rs, name)
        sinks = {"A": lambda: ma.events, "P": lambda: p.messages(p_ch)}
        expected = []
        for g in groups:
            for who in ("A", "P"):
                m = msg(f"{who}->{g}")
                if who == "A":
                    await athread(app_group_send, a, g, m)
                else:
                    await athread(p.group_send, g, m)
                expected.append(m)
                await expect_everywhere(sinks, expected, quiet=0)
        await expect_everywhere(sinks, expected)
        await ma.close()
    run(main())
