"""laurel.layers.RedisChannelLayer: channels_redis.core's protocol spoken natively.

Mixed on one Redis, every message delivered exactly once: laurel servers whose settings
name ``channels_redis.core.RedisChannelLayer`` (swapped under laurel), plain processes
running channels_redis' core layer itself (the reference: what daphne, uvicorn,
``manage.py`` and Celery run) and plain processes running laurel's layer outside the
server. Also: direct sends both ways (process-local and general channels), capacity and
``ChannelFull``, ``group_expiry``, Fernet encryption interoperable both ways, two Redis
shards (same shard for a name as channels_redis), ``flush``, foreign data in this
process's key, and a Redis restarted empty under running servers: laurel writes its
consumers' memberships again, channels_redis' members stay lost.
"""

import asyncio
import re
import signal

import pytest

from conftest import _Factory
from redis_fixtures import (CORE, EXAMPLE, EXAMPLE_APP, LAUREL_CORE, QUIET, AgentError,  # noqa: F401
                            AppMember, Client, WsSink, agents, app_group_send, app_layer,  # noqa: F401
                            app_send, app_stats, example_env, expect_everywhere,
                            finalize_all, manage, module_agents,  # noqa: F401
                            module_redis_factory, needs_redis, prepare_db,  # noqa: F401
                            redis_factory, start_example, start_layer_app, unique, until,  # noqa: F401
                            wait_for)

websockets = pytest.importorskip("websockets")
pytest.importorskip("channels_redis")

pytestmark = [needs_redis, pytest.mark.slow, pytest.mark.laurel_only]

SWAP = "replaces channels_redis.core.RedisChannelLayer"
KEY_RE = re.compile(r"^specific\.[0-9a-f]{32}![0-9a-f]{32}$")


def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def msg(tag, **kw):
    return dict({"type": "test.message", "tag": tag}, **kw)


@pytest.fixture(scope="module")
def redis(module_redis_factory):
    return module_redis_factory()


@pytest.fixture(scope="module")
def apps(tmp_path_factory, redis):
    """layer_app twice with channels_redis core settings (swapped to laurel's layer)."""
    factory = _Factory(tmp_path_factory.mktemp("core-apps"))
    hosts = [redis.url()]
    sa = start_layer_app(factory, "core", hosts)
    sb = start_layer_app(factory, "core", hosts)
    yield {"SA": sa, "SB": sb, "hosts": hosts}
    finalize_all(factory)


def agent_sink(agent, channel):
    return lambda: agent.messages(channel)


def test_swap_and_settings_mode(apps, tmp_path):
    """Under laurel, channels_redis core settings get laurel's layer (one INFO line);
    --channel-layer settings keeps channels_redis; hosts laurel's layer refuses keep it,
    saying why."""
    sa = apps["SA"]
    assert app_layer(sa) == LAUREL_CORE
    assert len(re.findall(re.escape(SWAP), sa.stderr())) == 1, sa.stderr()[-3000:]
    factory = _Factory(tmp_path)
    try:
        kept = start_layer_app(factory, "core", apps["hosts"],
                               args=("--channel-layer", "settings"))
        assert app_layer(kept) == CORE
        refused = start_layer_app(
            factory, "core", [{"sentinels": [("127.0.0.1", 1)], "master_name": "m",
                               "sentinel_kwargs": {"ssl": True}}])
        assert app_layer(refused) == CORE
        assert "core layer kept (TLS to sentinels is not supported" in refused.stderr()
    finally:
        finalize_all(factory)


def test_mixed_group_exactly_once(apps, agents):
    """Members in two laurel servers, a channels_redis core process and a laurel-layer
    process; group_send from each kind of sender (a server view async and sync, both
    plain processes, async_to_sync from a plain thread): every member gets every
    message once, in order."""
    hosts = apps["hosts"]
    core = agents("core", hosts, name="core")
    lc = agents("laurelcore", hosts, name="laurelcore")
    assert core.layer_class == CORE and lc.layer_class == LAUREL_CORE
    group = unique("mixed")

    async def main():
        m_a = await AppMember.open(apps["SA"], group, name="A")
        m_a2 = await AppMember.open(apps["SA"], group, name="A2")
        m_b = await AppMember.open(apps["SB"], group, name="B")
        c_ch = await asyncio.to_thread(core.member, group)
        l_ch = await asyncio.to_thread(lc.member, group)
        for ch in (m_a.channel, m_b.channel, c_ch, l_ch):
            assert KEY_RE.match(ch), ch
        expected = []
        for i, send in enumerate([
            lambda m: app_group_send(apps["SA"], group, m, "async"),
            lambda m: app_group_send(apps["SB"], group, m, "sync"),
            lambda m: core.group_send(group, m),
            lambda m: lc.group_send(group, m),
        ]):
            m = msg("g", n=i, blob=b"\x00\xff", tup=[1, 2.5, None, True])
            await asyncio.to_thread(send, m)
            expected.append(m)
        burst = msg("t")
        await asyncio.to_thread(lc.call, "thread_group_send", group=group, message=burst,
                                times=3)
        expected += [dict(burst, n=i) for i in range(3)]
        await expect_everywhere({
            "A": lambda: m_a.events, "A2": lambda: m_a2.events, "B": lambda: m_b.events,
            "core": agent_sink(core, c_ch), "laurelcore": agent_sink(lc, l_ch)}, expected)
        # a member that leaves gets nothing more; the others still do
        await m_a2.call("group_discard", group=group, channel=m_a2.channel)
        last = msg("after-leave")
        await asyncio.to_thread(core.group_send, group, last)
        await expect_everywhere({"A": lambda: m_a.events[len(expected):],
                                 "core": lambda: core.messages(c_ch)[len(expected):]},
                                [last])
        assert m_a2.events == expected
        for m in (m_a, m_a2, m_b):
            await m.close()
    run(main())
    stats = app_stats(apps["SA"])
    assert stats["redis"]["connected"] == 1 and stats["redis"]["failed_calls"] == 0, stats


def test_direct_sends_both_ways(apps, agents):
    """send() to a process-local channel of another process (laurel <-> channels_redis),
    to one of the same process, and to a general channel received elsewhere."""
    hosts = apps["hosts"]
    core = agents("core", hosts, name="core")
    lc = agents("laurelcore", hosts, name="laurelcore")

    async def main():
        m = await AppMember.open(apps["SA"], name="A")
        c_ch = await asyncio.to_thread(core.new_channel)
        l_ch = await asyncio.to_thread(lc.new_channel)
        await asyncio.to_thread(core.send, m.channel, msg("core->server"))
        await asyncio.to_thread(lc.send, m.channel, msg("laurel->server"))
        await asyncio.to_thread(app_send, apps["SB"], m.channel, msg("server->server"), "sync")
        await m.call("send", channel=m.channel, message=msg("self"))
        await asyncio.to_thread(app_send, apps["SA"], c_ch, msg("server->core"))
        await asyncio.to_thread(lc.send, c_ch, msg("laurel->core"))
        await asyncio.to_thread(core.send, l_ch, msg("core->laurel"))
        await expect_everywhere({"server": lambda: m.events}, [
            msg("core->server"), msg("laurel->server"), msg("server->server"), msg("self")])
        await expect_everywhere({"core": agent_sink(core, c_ch)},
                                [msg("server->core"), msg("laurel->core")])
        await expect_everywhere({"laurel": agent_sink(lc, l_ch)}, [msg("core->laurel")])
        # general channels (no "!"): whoever receives gets each message once
        general = unique("work")
        await asyncio.to_thread(lc.call, "receive", channel=general)
        for i in range(3):
            await asyncio.to_thread(core.send, general, msg("job", n=i))
        await expect_everywhere({"laurel": agent_sink(lc, general)},
                                [msg("job", n=i) for i in range(3)])
        general2 = unique("work")
        await asyncio.to_thread(core.call, "receive", channel=general2)
        await asyncio.to_thread(app_send, apps["SA"], general2, msg("job2"))
        await expect_everywhere({"core": agent_sink(core, general2)}, [msg("job2")])
        await m.close()
    run(main())


def test_capacity_and_channel_full(redis, agents):
    """A channel holding `capacity` messages refuses the next with ChannelFull, for
    laurel's layer as for channels_redis (channel_capacity patterns too); group_send
    skips the full member and still reaches the others."""
    hosts = [redis.url()]
    config = {"capacity": 2, "channel_capacity": {"tight.*": 1}}
    core = agents("core", hosts, config, name="core")
    lc = agents("laurelcore", hosts, config, name="laurelcore")
    stalled = core.call("new_channel")  # no receive loop: never read
    core.call("stop", channel=stalled)
    for who in (lc, core):
        target = "tight." + unique("q")
        who.send(target, msg("1"))
        with pytest.raises(AgentError, match="ChannelFull"):
            who.send(target, msg("2"))
    lc.send(stalled, msg("a"))
    core.send(stalled, msg("b"))
    with pytest.raises(AgentError, match="ChannelFull"):
        lc.send(stalled, msg("c"))
    group = unique("cap")
    lc.call("group_add", group=group, channel=stalled)
    live = lc.member(group)
    lc.group_send(group, msg("to-all"))
    lc.wait_messages(1, live)
    assert lc.messages(live) == [msg("to-all")]
    assert lc.stats()["group_full"] == 1


def test_group_expiry(redis, agents):
    """Memberships older than group_expiry are dropped at the next group_send, on both
    layers alike."""
    hosts = [redis.url()]
    core = agents("core", hosts, {"group_expiry": 1}, name="core")
    lc = agents("laurelcore", hosts, {"group_expiry": 1}, name="laurelcore")
    group = unique("exp")
    c_ch, l_ch = core.member(group), lc.member(group)
    import time

    time.sleep(2.2)
    lc.group_send(group, msg("late"))
    core.group_send(group, msg("late2"))
    time.sleep(QUIET)
    assert core.messages(c_ch) == [] and lc.messages(l_ch) == []
    assert redis.command("EXISTS", f"asgi:group:{group}") == 0


def test_encryption_interoperates(redis, agents):
    """symmetric_encryption_keys: laurel and channels_redis read each other's Fernet
    messages (the first key encrypts, every key decrypts: rotation works); nothing is
    stored in clear; a message under a key the receiver lacks is dropped, counted and
    logged once, and later ones still arrive."""
    hosts = [redis.url()]
    core = agents("core", hosts, {"symmetric_encryption_keys": ["shared"]}, name="core")
    lc = agents("laurelcore", hosts, {"symmetric_encryption_keys": ["shared", "older"]},
                name="laurelcore")
    rot = agents("laurelcore", hosts, {"symmetric_encryption_keys": ["newer", "shared"]},
                 name="rotated")
    stranger = agents("core", hosts, {"symmetric_encryption_keys": ["other"]}, name="x")
    group = unique("enc")
    c_ch, l_ch, r_ch = core.member(group), lc.member(group), rot.member(group)
    core.group_send(group, msg("from-core"))
    lc.group_send(group, msg("from-laurel"))
    stranger.send(l_ch, msg("wrong-key"))
    stranger.send(r_ch, msg("wrong-key"))
    rot.send(l_ch, msg("newer-key"))  # lc lacks "newer"
    core.group_send(group, msg("still"))
    want = [msg("from-core"), msg("from-laurel"), msg("still")]
    for agent, ch in ((core, c_ch), (lc, l_ch), (rot, r_ch)):
        agent.wait_messages(3, ch)
    assert core.messages(c_ch) == want and rot.messages(r_ch) == want
    assert lc.messages(l_ch) == want
    assert lc.stats()["undecodable"] == 2
    assert lc.stderr().count("cannot be decoded") == 1, lc.stderr()[-2000:]
    # stored encrypted: a 12-byte head, then a Fernet token
    queue = unique("encq")
    lc.send(queue, msg("secret-text"))
    (stored,) = redis.command("ZRANGE", "asgi" + queue, 0, -1)
    assert b"secret-text" not in stored and stored[12:].startswith(b"gAAAAA"), stored
    core.call("receive", channel=queue)
    core.wait_messages(1, queue)
    assert core.messages(queue) == [msg("secret-text")]


def test_two_shards_same_placement(redis_factory, agents):
    """Two Redis hosts: groups and channel keys land on the shard channels_redis picks
    (crc32 ring), and every member gets every message once from both layers."""
    r1, r2 = redis_factory(), redis_factory()
    hosts = [r1.url(), r2.url()]
    core = agents("core", hosts, name="core")
    lc = agents("laurelcore", hosts, name="laurelcore")
    from channels_redis.utils import _consistent_hash

    groups = [unique("shard") for _ in range(6)]
    members = {}
    for g in groups:
        members[g] = (core.member(g), lc.member(g))
        shard = (r1, r2)[_consistent_hash(g, 2)]
        other = (r2, r1)[_consistent_hash(g, 2)]
        assert shard.command("ZCARD", f"asgi:group:{g}") == 2
        assert other.command("EXISTS", f"asgi:group:{g}") == 0
    for g in groups:
        core.group_send(g, msg("c", g=g))
        lc.group_send(g, msg("l", g=g))
    for g, (c_ch, l_ch) in members.items():
        want = [msg("c", g=g), msg("l", g=g)]
        core.wait_messages(2, c_ch)
        lc.wait_messages(2, l_ch)
        assert core.messages(c_ch) == want and lc.messages(l_ch) == want
    # laurel's direct sends go to the shard its receiver pops
    lc.send(members[groups[0]][0], msg("direct"))
    core.wait_messages(3, members[groups[0]][0])


def test_flush(redis, agents):
    """flush() removes the prefix's keys (and only those) on every host."""
    hosts = [redis.url()]
    lc = agents("laurelcore", hosts, {"prefix": "flushme"}, name="laurelcore")
    core = agents("core", hosts, {"prefix": "flushme"}, name="core")
    group = unique("f")
    core.member(group)
    lc.send("somewhere", msg("x"))
    redis.command("SET", "unrelated", "1")
    assert redis.command("KEYS", "flushme*")
    lc.call("flush")
    assert redis.command("KEYS", "flushme*") == []
    assert redis.command("GET", "unrelated") == b"1"


def test_foreign_data_dropped_not_fatal(apps, redis):
    """Garbage in a server's own key (wrong prefix length, not msgpack, a list, no
    __asgi_channel__) is dropped and counted, logged once per cause; the channel keeps
    working."""

    async def main():
        m = await AppMember.open(apps["SB"], name="B")
        key = "asgi" + m.channel[:m.channel.index("!") + 1]
        for junk in (b"short", b"x" * 12 + b"\xc1not msgpack", b"y" * 12 + b"\x93\x01\x02\x03",
                     b"z" * 12 + b"\x81\xa4type\xa1x"):
            await asyncio.to_thread(redis.command, "ZADD", key, "1", junk)
        await asyncio.to_thread(app_send, apps["SA"], m.channel, msg("fine"))
        await expect_everywhere({"B": lambda: m.events}, [msg("fine")])
        stats = await asyncio.to_thread(app_stats, apps["SB"])
        assert stats["undecodable"] == 3 and stats["unaddressed"] == 1, stats
        await m.close()
    run(main())
    err = apps["SB"].stderr()
    assert err.count("cannot be decoded") == 1 and err.count("no __asgi_channel__") == 1, err[-3000:]


def test_redis_restart_restores_memberships(redis_factory, agents, tmp_path):
    """Redis killed and started again empty under a running laurel server: laurel writes
    its consumers' memberships again by itself and delivery resumes without any client
    reconnecting; the channels_redis member (the reference) is lost until it rejoins."""
    r = redis_factory()
    hosts = [r.url()]
    factory = _Factory(tmp_path)
    try:
        srv = start_layer_app(factory, "core", hosts)
        core = agents("core", hosts, name="core")
        group = unique("restart")

        async def main():
            ms = [await AppMember.open(srv, group, name=f"m{i}") for i in range(3)]
            c_ch = await asyncio.to_thread(core.member, group)
            await asyncio.to_thread(core.group_send, group, msg("before"))
            await expect_everywhere({**{m.name: (lambda m=m: m.events) for m in ms},
                                     "core": agent_sink(core, c_ch)}, [msg("before")])
            await asyncio.to_thread(r.stop, signal.SIGKILL)
            await asyncio.to_thread(r.start)
            await until(lambda: r.command("ZCARD", f"asgi:group:{group}") == 3, 15,
                        "laurel's memberships written again")
            sender = agents("core", hosts, name="sender")
            await asyncio.to_thread(sender.group_send, group, msg("after"))
            await expect_everywhere({m.name: (lambda m=m: m.events) for m in ms},
                                    [msg("before"), msg("after")])
            assert core.messages(c_ch) == [msg("before")]  # channels_redis lost it
            for m in ms:
                await m.close()
        run(main())
        stats = app_stats(srv)
        assert stats["restored"] == 3, stats
        assert stats["redis"]["reconnects"] >= 1, stats
        assert "wrote again the 3 group membership(s)" in srv.stderr(), srv.stderr()[-3000:]
    finally:
        finalize_all(factory)


def test_example_project_mixed_with_uvicorn(redis, tmp_path, agents):
    """The notifications example on its default Redis settings (channels_redis core),
    served by two laurel servers (swapped to laurel's layer: sync consumers behind
    AuthMiddlewareStack) and by uvicorn running channels_redis itself; notifications from
    a sync view on each laurel server, an async view, a view on uvicorn, ``manage.py
    notify`` (channels_redis in a plain Django process) and laurel's layer in a plain
    process: every socket of the user, on every server, gets each once, in order."""
    db = tmp_path / "db.sqlite3"
    pk = prepare_db(db)
    group = f"user-{pk}"
    env = example_env(db, redis.url(), "core")
    factory = _Factory(tmp_path / "servers")
    try:
        a = start_example(factory, env)
        b = start_example(factory, env)
        u = factory(EXAMPLE_APP, cwd=EXAMPLE, env=env, ready_timeout=30, kind="uvicorn")
        for srv in (a, b):  # logged once the application is loaded
            wait_for(lambda: SWAP in srv.stderr(), 20, "the swap's log line")
            assert len(re.findall(re.escape(SWAP), srv.stderr())) == 1, srv.stderr()[-3000:]
        lc = agents("laurelcore", [redis.url()], name="laurelcore")
        ca, cb, cu = (Client(s).login("demo") for s in (a, b, u))

        def command(text):
            r = manage(env, "notify", "demo", text)
            assert r.returncode == 0, r.stderr[-3000:]
            assert f"through {CORE}" in r.stdout, r.stdout

        senders = [
            ("view-A-sync", lambda t: ca.notify(t, "/notify/")),
            ("view-B-async", lambda t: cb.notify(t, "/notify-async/")),
            ("view-uvicorn", lambda t: cu.notify(t, "/notify/")),
            ("core-command", command),
            ("laurel-process", lambda t: lc.group_send(group, {"type": "notify", "text": t})),
        ]

        async def main():
            async with ca.ws("/notifications/") as a1, ca.ws("/notifications/") as a2, \
                    cb.ws("/notifications/") as b1, cu.ws("/notifications/") as u1:
                socks = {"A1": a1, "A2": a2, "B1": b1, "U1": u1}
                ws_sinks = {n: WsSink(w, n) for n, w in socks.items()}
                await until(lambda: redis.command("ZCARD", f"asgi:group:{group}") == 4, 10,
                            "four members in Redis")
                sinks = {n: (lambda s=s: [m.get("text", m) for m in s.got])
                         for n, s in ws_sinks.items()}
                expected = []
                for name, send in senders:
                    text = unique(name)
                    await asyncio.to_thread(send, text)
                    expected.append(text)
                    await expect_everywhere(sinks, expected, timeout=15, quiet=0)
                await expect_everywhere(sinks, expected, quiet=QUIET)
        run(main())
    finally:
        finalize_all(factory)


def test_outside_server_one_connection(redis_factory, agents):
    """Outside the server (a Celery task, a management command), many async_to_sync
    calls from a plain thread reuse the layer's connections: no new connection per call,
    as channels_redis' per-event-loop pools make."""
    r = redis_factory()
    hosts = [r.url()]
    lc = agents("laurelcore", hosts, name="laurelcore")
    group = unique("conn")
    ch = lc.member(group)
    lc.call("thread_group_send", group=group, message=msg("warm"), times=1)
    before = int(r.info("stats")["total_connections_received"])
    lc.call("thread_group_send", group=group, message=msg("n"), times=20)
    lc.wait_messages(21, ch)
    after = int(r.info("stats")["total_connections_received"])
    assert after - before <= 1, (before, after)  # at most the query's own
    core = agents("core", hosts, name="core")
    c_before = int(r.info("stats")["total_connections_received"])
    core.call("thread_group_send", group=group, message=msg("c"), times=5)
    c_after = int(r.info("stats")["total_connections_received"])
    assert c_after - c_before >= 5, (c_before, c_after)  # the reference: one per call


FORK = r'''
import ast, os, sys
from asgiref.sync import async_to_sync
from django.conf import settings
settings.configure()
from laurel.layers import RedisChannelLayer
layer = RedisChannelLayer(hosts=ast.literal_eval(sys.argv[1]))
group = sys.argv[2]
mine = async_to_sync(layer.new_channel)()
async_to_sync(layer.group_add)(group, mine)
async_to_sync(layer.group_send)(group, {"type": "test.message", "who": "parent-before"})
pid = os.fork()
if pid == 0:  # a Celery prefork child: the layer it inherited works, as another process
    own = async_to_sync(layer.new_channel)()
    assert not own.startswith(mine[:mine.index("!")]), (own, mine)
    async_to_sync(layer.group_add)(group, own)
    async_to_sync(layer.group_send)(group, {"type": "test.message", "who": "child"})
    got = async_to_sync(layer.receive)(own)
    assert got["who"] == "child", got
    async_to_sync(layer.group_discard)(group, own)
    os._exit(0)
_, status = os.waitpid(pid, 0)
async_to_sync(layer.group_send)(group, {"type": "test.message", "who": "parent-after"})
seen = [async_to_sync(layer.receive)(mine)["who"] for _ in range(3)]
print(repr((status, seen)))
'''


def test_forked_child(redis, agents):
    """A process that used the layer forks: the child gets its own process key (it does
    not pop the parent's), sends and receives; the parent keeps working; the parent's
    member gets everything once."""
    import subprocess

    from redis_fixtures import PY, literal, outside_env

    group = unique("fork")
    core = agents("core", [redis.url()], name="core")
    c_ch = core.member(group)
    r = subprocess.run([PY, "-c", FORK, repr([redis.url()]), group], env=outside_env(),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr[-3000:]
    status, seen = literal(r.stdout.strip().splitlines()[-1])
    assert status == 0 and seen == ["parent-before", "child", "parent-after"], (status, seen)
    core.wait_messages(3, c_ch)
    assert [m["who"] for m in core.messages(c_ch)] == ["parent-before", "child",
                                                        "parent-after"]


def test_scale_out_two_masters_two_shards(redis_factory, agents, tmp_path):
    """The scale-out shape of docs/channel-layer.md: two laurel masters with --workers 2
    each (4 worker processes) on two Redis shards, channels_redis core processes on the
    same two: members spread over every worker get every group_send once, from a view
    of either server and from a plain process; the groups' keys sit on the shard
    channels_redis picks."""
    from channels_redis.utils import _consistent_hash

    shards = [redis_factory(), redis_factory()]
    hosts = [r.url() for r in shards]
    factory = _Factory(tmp_path)
    try:
        s1 = start_layer_app(factory, "core", hosts, args=("--workers", "2"))
        s2 = start_layer_app(factory, "core", hosts, args=("--workers", "2"))
        core = agents("core", hosts, name="core")
        groups = [unique("scale") for _ in range(2)]

        async def main():
            members = []
            for i in range(12):
                srv = (s1, s2)[i % 2]
                members.append(await AppMember.open(srv, *groups, name=f"m{i}"))
            c_chs = [await asyncio.to_thread(core.member, *groups)]
            for g in groups:
                home = shards[_consistent_hash(g, 2)]
                assert home.command("ZCARD", f"asgi:group:{g}") == 13, g
            # each worker process is its own client (its own key to pop)
            prefixes = {m.channel.split("!")[0] for m in members}
            assert len(prefixes) >= 2, prefixes  # one per worker that got members
            expected = {g: [] for g in groups}
            for i in range(4):
                g = groups[i % 2]
                m = msg("s", n=i)
                expected[g].append(m)
                if i == 0:
                    await asyncio.to_thread(core.group_send, g, m)
                else:
                    await asyncio.to_thread(app_group_send, (s1, s2)[i % 2], g, m,
                                            "sync" if i == 3 else "async")
            every = expected[groups[0]] + expected[groups[1]]
            sinks = {m.name: (lambda m=m: sorted(m.events, key=lambda e: e["n"]))
                     for m in members}
            sinks["core"] = lambda: sorted(core.messages(c_chs[0]), key=lambda e: e["n"])
            await expect_everywhere(sinks, sorted(every, key=lambda e: e["n"]))
            for m in members:
                await m.close()
        run(main())
    finally:
        finalize_all(factory)
