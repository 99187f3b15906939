"""laurel's Redis bridge between processes: exactly-once group delivery across laurel
servers, plain Django processes and channels_redis' pub/sub layer (one sender at a
time, four at once, a group_send right after the first group_add, leaving and
rejoining a group, --workers 2); send() to a channel of another process and to one of
the same process; the automatic swap of channels_redis' pub/sub layer under laurel.

One redis-server (module-scoped) carries:
- the notifications example served three times: A and B with NOTIFICATIONS_LAYER=laurel
  (laurel.layers.ChannelLayer with hosts), C with NOTIFICATIONS_LAYER=pubsub (laurel
  swaps channels_redis' pub/sub layer for its own);
- tests/redis/layer_app.py served twice (its members report their channel names);
- agents (plain processes, layer_agent.py) with channels_redis' pub/sub layer and with
  laurel's layer outside any server; ``manage.py`` commands.
"""

import asyncio
import re

import pytest

from conftest import _Factory
from redis_fixtures import (LAUREL, PUBSUB, QUIET, SWAP_LINE, AppMember, Client,
                            WsSink, agents, app_group_send, app_layer, app_send, expect_everywhere,  # noqa: F401
                            example_env, finalize_all, manage, module_agents,  # noqa: F401
                            module_redis_factory, needs_redis, oracle, prepare_db,  # noqa: F401
                            redis_stats, side_layer, start_example, start_layer_app, unique,
                            until)

websockets = pytest.importorskip("websockets")
pytest.importorskip("channels_redis")

pytestmark = [needs_redis, pytest.mark.slow]

CHANNEL_RE = re.compile(r"^asgispecific\.[0-9a-f]{32}$")


def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="module")
def redis(module_redis_factory):
    return module_redis_factory()


@pytest.fixture(scope="module")
def example(tmp_path_factory, redis):
    """Three example servers on one Redis: A, B (laurel's layer), C (pubsub, swapped)."""
    tmp = tmp_path_factory.mktemp("interop-example")
    db = tmp / "db.sqlite3"
    pk = prepare_db(db)
    factory = _Factory(tmp / "servers")
    url = redis.url()
    envs = {"laurel": example_env(db, url, side_layer()),
            "pubsub": example_env(db, url, "pubsub")}
    a = start_example(factory, envs["laurel"])
    b = start_example(factory, envs["laurel"])
    c = start_example(factory, envs["pubsub"])
    yield {"A": a, "B": b, "C": c, "db": db, "pk": pk, "group": f"user-{pk}",
           "envs": envs, "url": url}
    finalize_all(factory)


@pytest.fixture(scope="module")
def apps(tmp_path_factory, redis):
    """layer_app twice: SA configured with laurel's layer, SB with channels_redis'
    pub/sub layer (swapped under laurel)."""
    factory = _Factory(tmp_path_factory.mktemp("interop-apps"))
    hosts = [redis.url()]
    sa = start_layer_app(factory, side_layer(), hosts)
    sb = start_layer_app(factory, "pubsub", hosts)
    yield {"SA": sa, "SB": sb, "hosts": hosts, "factory": factory}
    finalize_all(factory)


def shell_group_send(env, group, text):
    """A plain Django process (manage.py shell) sending through the configured layer;
    returns the layer class it used."""
    code = ("from asgiref.sync import async_to_sync\n"
            "from channels.layers import get_channel_layer\n"
            "layer = get_channel_layer()\n"
            "print(type(layer).__module__ + '.' + type(layer).__qualname__)\n"
            f"async_to_sync(layer.group_send)({group!r}, "
            f"{{'type': 'notify', 'text': {text!r}}})\n")
    r = manage(env, "shell", "-c", code)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip().splitlines()[-1]


# --------------------------------------------------------------------------- exactly once

def test_group_send_reaches_every_member_everywhere_exactly_once(example, agents, redis):
    """Members: 2 sockets on A, 2 on B, 1 on C, a channel in a plain process on
    channels_redis' pub/sub layer, one in a plain process on laurel's layer. Senders: a
    sync view on A, an async view on B, a view on C, ``manage.py notify`` (pub/sub),
    ``manage.py shell`` and ``manage.py notify`` (laurel's layer outside any server),
    and both plain processes.
    Every member receives every notification exactly once, in order."""
    a, b, c, group = example["A"], example["B"], example["C"], example["group"]
    hosts = [example["url"]]
    ca, cb, cc = (Client(s).login("demo") for s in (a, b, c))
    p = agents("pubsub", hosts, name="pubsub-member")
    lo = agents(side_layer(), hosts, name="laurel-outside")
    p_ch, l_ch = p.member(group), lo.member(group)
    assert CHANNEL_RE.match(l_ch), l_ch
    envs = example["envs"]

    def notify_command(text):
        r = manage(envs["pubsub"], "notify", "demo", text)
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"sent to group {group} through {PUBSUB}" in r.stdout, r.stdout

    def laurel_command(text):
        r = manage(envs["laurel"], "notify", "demo", text)
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"sent to group {group} through " in r.stdout, r.stdout

    def laurel_shell(text):
        used = shell_group_send(envs["laurel"], group, text)
        assert used == (PUBSUB if oracle() else LAUREL)

    senders = [
        ("view-A-sync", lambda t: ca.notify(t, "/notify/")),
        ("view-B-async", lambda t: cb.notify(t, "/notify-async/")),
        ("view-C-swapped", lambda t: cc.notify(t, "/notify/")),
        ("pubsub-command", notify_command),
        ("laurel-shell", laurel_shell),
        ("laurel-command", laurel_command),
        ("pubsub-process", lambda t: p.group_send(group, {"type": "notify", "text": t})),
        ("laurel-process", lambda t: lo.group_send(group, {"type": "notify", "text": t})),
    ]

    async def main():
        async with ca.ws("/notifications/") as a1, ca.ws("/notifications/") as a2, \
                cb.ws("/notifications/") as b1, cb.ws("/notifications/") as b2, \
                cc.ws("/notifications/") as c1:
            socks = {"A1": a1, "A2": a2, "B1": b1, "B2": b2, "C1": c1}
            ws_sinks = {n: WsSink(w, n) for n, w in socks.items()}
            # A, B, C, the two plain processes: one subscription each, however many
            # local members they have.
            await asyncio.to_thread(redis.wait_numsub, f"asgi__group__{group}", 5)

            def ws_texts(sink):
                return lambda: [m["text"] if set(m) == {"text"} else m for m in sink.got]

            def agent_texts(agent, ch):
                return lambda: [m["text"] if set(m) == {"type", "text"}
                                and m["type"] == "notify" else m
                                for m in agent.messages(ch)]

            sinks = {n: ws_texts(s) for n, s in ws_sinks.items()}
            sinks["pubsub-process"] = agent_texts(p, p_ch)
            sinks["laurel-process"] = agent_texts(lo, l_ch)
            expected = []
            for name, send in senders:
                text = unique(name)
                await asyncio.to_thread(send, text)
                expected.append(text)
                await expect_everywhere(sinks, expected, timeout=15, quiet=0)
            await expect_everywhere(sinks, expected, quiet=QUIET)
    run(main())


@pytest.mark.laurel_only
def test_notify_command_with_laurel_layer(example, redis):
    """``manage.py notify`` with NOTIFICATIONS_LAYER=laurel: laurel's layer with hosts is
    shared between processes, so the command must send (not refuse it as process-local)
    and the user's socket on a laurel server gets the notification once."""
    a, group = example["A"], example["group"]
    ca = Client(a).login("demo")

    async def main():
        async with ca.ws("/notifications/") as ws:
            sink = WsSink(ws, "A")
            name = f"asgi__group__{group}"
            await until(lambda: redis.numsub(name)[name] >= 1, 10, "A's subscription")
            text = unique("laurel-command")
            r = await asyncio.to_thread(manage, example["envs"]["laurel"], "notify", "demo",
                                        text)
            assert r.returncode == 0, r.stderr[-3000:]
            assert f"sent to group {group} through {LAUREL}" in r.stdout
            await expect_everywhere({"A": lambda: sink.got}, [{"text": text}])
    run(main())


def test_pubsub_process_member_gets_laurel_group_send_once(apps, agents, redis):
    """A member in a plain channels_redis pub/sub process (own loop, new_channel +
    group_add + receive) gets group_send from laurel servers (sync and async views,
    a consumer) exactly once, with the message as sent."""
    sa, sb = apps["SA"], apps["SB"]
    group = unique("grp")
    p = agents("pubsub", apps["hosts"], name="pubsub-member")
    ch = p.member(group)
    msgs = [{"type": "test.message", "n": i, "via": via}
            for i, via in enumerate(("SA-async", "SA-sync", "SB-async", "SB-sync"))]

    async def main():
        m = await AppMember.open(sa, name="SA-member")
        await asyncio.to_thread(redis.wait_numsub, f"asgi__group__{group}", 1)
        for msg in msgs:
            srv = sa if msg["via"].startswith("SA") else sb
            mode = msg["via"].split("-")[1]
            await asyncio.to_thread(app_group_send, srv, group, msg, mode)
        last = {"type": "test.message", "n": 99, "via": "consumer"}
        await m.call("group_send", group=group, message=last)
        await expect_everywhere({"pubsub": lambda: p.messages(ch)}, msgs + [last])
        await m.close()
    run(main())


def test_concurrent_senders_exactly_once_in_order(apps, agents, redis):
    """Four senders at the same time (a consumer on SA, a view on SB, a channels_redis
    process, a process on laurel's layer), 25 group messages each: every member (two on
    SA, one on SB, one in each plain process) gets all 100 once, each sender's in the
    order sent."""
    sa, sb, hosts = apps["SA"], apps["SB"], apps["hosts"]
    g = unique("burst")
    p = agents("pubsub", hosts, name="pubsub")
    lo = agents(side_layer(), hosts, name="laurel-outside")
    p_ch, l_ch = p.member(g), lo.member(g)
    n = 25

    async def main():
        a1 = await AppMember.open(sa, g, name="SA1")
        a2 = await AppMember.open(sa, g, name="SA2")
        b1 = await AppMember.open(sb, g, name="SB1")
        await asyncio.to_thread(redis.wait_numsub, f"asgi__group__{g}", 4)

        def m(src, i):
            return {"type": "test.message", "src": src, "i": i}

        async def consumer():
            for i in range(n):
                await a1.call("group_send", group=g, message=m("SA-consumer", i))

        def view():
            for i in range(n):
                app_group_send(sb, g, m("SB-view", i))

        def plain(agent, src):
            for i in range(n):
                agent.group_send(g, m(src, i))

        await asyncio.gather(consumer(), asyncio.to_thread(view),
                             asyncio.to_thread(plain, p, "pubsub"),
                             asyncio.to_thread(plain, lo, "laurel-outside"))
        sinks = {"SA1": lambda: a1.events, "SA2": lambda: a2.events, "SB1": lambda: b1.events,
                 "P": lambda: p.messages(p_ch), "L": lambda: lo.messages(l_ch)}
        srcs = ("SA-consumer", "SB-view", "pubsub", "laurel-outside")
        await until(lambda: all(len(get()) >= 4 * n for get in sinks.values()), 15,
                    "100 messages everywhere")
        await asyncio.sleep(QUIET)
        for name, get in sinks.items():
            got = get()
            assert len(got) == 4 * n, (name, len(got))
            for src in srcs:
                assert [x["i"] for x in got if x["src"] == src] == list(range(n)), (name, src)
        for x in (a1, a2, b1):
            await x.close()
    run(main())


@pytest.mark.laurel_only
def test_group_send_right_after_first_group_add(apps, agents, redis):
    """The chat pattern: a consumer joins a new group and announces itself at once (its
    process' SUBSCRIBE may reach Redis after that PUBLISH, so that echo never comes).
    The member gets the announcement once (locally) and every later message of the
    group once, from its own consumer and from a view; a member in a channels_redis
    process gets each once too."""
    sa = apps["SA"]
    p = agents("pubsub", apps["hosts"], name="pubsub")

    async def main():
        m = await AppMember.open(sa, name="chatter")
        for i in range(3):
            g = unique("chat")
            p_ch = await asyncio.to_thread(p.member, g)
            await asyncio.to_thread(redis.wait_numsub, f"asgi__group__{g}", 1)
            start = len(m.events)
            joined = {"type": "test.message", "joined": i}
            await m.call("join_and_send", group=g, message=joined)
            await asyncio.to_thread(redis.wait_numsub, f"asgi__group__{g}", 2)
            later = {"type": "test.message", "later": i}
            await m.call("group_send", group=g, message=later)
            view = {"type": "test.message", "view": i}
            await asyncio.to_thread(app_group_send, sa, g, view, "sync")
            await expect_everywhere({"member": lambda: m.events[start:],
                                     "pubsub": lambda: p.messages(p_ch)},
                                    [joined, later, view], quiet=0.4)
        await m.close()
    run(main())


def test_leaving_and_rejoining_a_group(apps, agents, redis):
    """A process whose last member leaves a group and one rejoins soon after (also
    after a burst of leave/join) is still subscribed later and gets the group's
    messages once; after the last member left for good, its subscription goes (so it
    gets nothing) and a new member subscribes it again."""
    sa = apps["SA"]
    g = unique("rejoin")
    name = f"asgi__group__{g}"
    p = agents("pubsub", apps["hosts"], name="pubsub")

    def numsub():
        return redis.numsub(name)[name]

    async def main():
        m = await AppMember.open(sa, name="rejoiner")
        await m.call("group_add", group=g)
        await asyncio.to_thread(redis.wait_numsub, name, 1)
        await m.call("group_discard", group=g)
        await asyncio.sleep(0.5)
        await m.call("group_add", group=g)
        for _ in range(10):
            await m.call("group_discard", group=g)
            await m.call("group_add", group=g)
        await asyncio.sleep(2.5)  # longer than laurel's lazy unsubscribe (1-2 s)
        assert numsub() == 1
        x = {"type": "test.message", "x": 1}
        await asyncio.to_thread(p.group_send, g, x)
        await expect_everywhere({"m": lambda: m.events}, [x], quiet=0.3)

        await m.call("group_discard", group=g)
        await until(lambda: numsub() == 0, 5, "the subscription to go")
        await asyncio.to_thread(p.group_send, g, {"type": "test.message", "y": 1})
        await m.call("group_add", group=g)
        await asyncio.to_thread(redis.wait_numsub, name, 1)
        z = {"type": "test.message", "z": 1}
        await asyncio.to_thread(p.group_send, g, z)
        await expect_everywhere({"m": lambda: m.events}, [x, z])
        await m.close()
    run(main())


# --------------------------------------------------------------------------- send()

def test_send_to_a_channel_of_another_process(apps, agents, redis):
    """send() to a specific channel living in another process, in every direction
    between two laurel servers, a channels_redis pub/sub process and a plain process on
    laurel's layer; each receiver gets exactly its messages."""
    sa, sb = apps["SA"], apps["SB"]
    p = agents("pubsub", apps["hosts"], name="pubsub")
    lo = agents(side_layer(), apps["hosts"], name="laurel-outside")
    p_ch, l_ch = p.new_channel(), lo.new_channel()

    async def main():
        ma = await AppMember.open(sa, name="SA")
        mb = await AppMember.open(sb, name="SB")
        names = {"SA": ma.channel, "SB": mb.channel, "P": p_ch, "L": l_ch}
        for who, ch in names.items():
            assert CHANNEL_RE.match(ch), (who, ch)
            await asyncio.to_thread(redis.wait_numsub, ch, 1)

        async def send(src, dst, msg):
            if src == "SA":
                await ma.call("send", channel=names[dst], message=msg)
            elif src == "SB":
                await mb.call("send", channel=names[dst], message=msg)
            elif src == "P":
                await asyncio.to_thread(p.send, names[dst], msg)
            elif src == "L":
                await asyncio.to_thread(lo.send, names[dst], msg)
            else:  # a view of SA
                await asyncio.to_thread(app_send, sa, names[dst], msg, "sync")

        pairs = [("P", "SA"), ("SA", "P"), ("L", "SB"), ("SB", "L"), ("P", "L"),
                 ("L", "P"), ("SA", "SB"), ("SB", "SA"), ("view-SA", "P"),
                 ("view-SA", "SB"), ("L", "SA"), ("P", "SB")]
        expected = {k: [] for k in names}
        for i, (src, dst) in enumerate(pairs):
            msg = {"type": "test.message", "from": src, "to": dst, "n": i}
            await send(src, dst, msg)
            expected[dst].append(msg)
        sinks = {"SA": lambda: ma.events, "SB": lambda: mb.events,
                 "P": lambda: p.messages(p_ch), "L": lambda: lo.messages(l_ch)}
        await asyncio.gather(*(expect_everywhere({k: sinks[k]}, expected[k])
                               for k in sinks))
        await ma.close()
        await mb.close()
    run(main())


@pytest.mark.laurel_only
def test_send_to_own_process_channel_stays_local(apps, redis):
    """send() and group_send() between members of the same laurel server deliver
    without Redis: a send() publishes nothing; a group_send publishes once (for the
    other processes) and the local member still gets it once (its echo is dropped)."""
    sa = apps["SA"]
    group = unique("local")

    async def main():
        m1 = await AppMember.open(sa, group, name="m1")
        m2 = await AppMember.open(sa, group, name="m2")
        await asyncio.to_thread(redis.wait_numsub, f"asgi__group__{group}", 1)
        before = await asyncio.to_thread(redis_stats, sa)
        msg = {"type": "test.message", "local": True}
        await m1.call("send", channel=m2.channel, message=msg)
        await until(lambda: m2.events, 5, "local send")
        after = await asyncio.to_thread(redis_stats, sa)
        assert after["published"] == before["published"], (before, after)
        g = {"type": "test.message", "group": True}
        await m1.call("group_send", group=group, message=g)
        await expect_everywhere({"m1": lambda: m1.events, "m2": lambda: m2.events[1:]}, [g])
        assert m2.events == [msg, g]
        final = await asyncio.to_thread(redis_stats, sa)
        assert final["published"] == after["published"] + 1, (after, final)
        assert final["echoes"] >= after["echoes"] + 1, (after, final)
        await m1.close()
        await m2.close()
    run(main())


# --------------------------------------------------------------------------- the swap

@pytest.mark.laurel_only
def test_pubsub_layer_swapped_for_laurel_layer(example, apps, tmp_path, redis):
    """Under laurel, settings naming channels_redis' pub/sub layer get laurel's layer
    (one INFO line says so); laurel's own layer is kept (channels_redis' core layer
    is swapped too: tests/redis/test_redis_core.py); ``--channel-layer settings`` keeps
    the pub/sub layer."""
    sa, sb = apps["SA"], apps["SB"]
    assert app_layer(sa) == LAUREL
    assert app_layer(sb) == LAUREL
    assert len(re.findall(re.escape(SWAP_LINE), sb.stderr())) == 1, sb.stderr()[-3000:]
    assert "replaces" not in sa.stderr(), sa.stderr()[-3000:]
    c = example["C"]
    assert len(re.findall(re.escape(SWAP_LINE), c.stderr())) == 1, c.stderr()[-3000:]
    for s in (example["A"], example["B"]):
        assert SWAP_LINE not in s.stderr()

    factory = _Factory(tmp_path)
    try:
        kept = start_layer_app(factory, "pubsub", apps["hosts"],
                               args=("--channel-layer", "settings"))
        assert app_layer(kept) == PUBSUB
        assert "replaces" not in kept.stderr(), kept.stderr()[-3000:]
    finally:
        finalize_all(factory)


@pytest.mark.laurel_only
def test_workers_share_groups_through_redis(tmp_path, apps, agents, redis):
    """--workers 2 with a layer that has hosts: members spread over the workers all get
    every group_send once, from a plain process and from a view of either worker."""
    factory = _Factory(tmp_path)
    try:
        srv = start_layer_app(factory, "laurel", apps["hosts"], args=("--workers", "2"))
        group = unique("workers")
        p = agents("pubsub", apps["hosts"], name="pubsub")

        async def main():
            members = [await AppMember.open(srv, group, name=f"w{i}") for i in range(6)]
            # Which worker holds which member is the kernel's choice: probe until every
            # member is reachable from outside, then count from there.
            n = 0
            while not all(m.events for m in members):
                n += 1
                assert n < 100, [m.events for m in members]
                await asyncio.to_thread(p.group_send, group, {"type": "test.message",
                                                              "probe": n})
                await asyncio.sleep(0.1)
            await asyncio.sleep(QUIET)
            seen = {m.name: len(m.events) for m in members}
            expected = []
            for i in range(4):
                msg = {"type": "test.message", "n": i}
                if i % 2:
                    await asyncio.to_thread(p.group_send, group, msg)
                else:
                    await asyncio.to_thread(app_group_send, srv, group, msg,
                                            "sync" if i else "async")
                expected.append(msg)
            await expect_everywhere(
                {m.name: (lambda m=m: m.events[seen[m.name]:]) for m in members}, expected)
            for m in members:
                await m.close()
        run(main())
    finally:
        finalize_all(factory)
