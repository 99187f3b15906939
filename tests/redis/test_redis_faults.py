"""laurel's Redis bridge when Redis misbehaves: a restart under running servers
(SIGTERM or SIGKILL of redis-server; 600 subscriptions of one process restored), a
shutdown of laurel while Redis is down, a wrong or missing password, Redis absent at
start-up. In every case the server keeps serving, local delivery never stops, the log
says what happened (logger ``laurel.layers``), and once Redis is back (or the password
right) delivery across processes works again with every subscription restored.

Two laurel servers (A, B) serve tests/redis/layer_app.py with laurel's layer; their
``GET /stats`` exposes ``layer.stats()["redis"]``.
"""

import asyncio
import re
import signal
import time

import pytest

from conftest import _Factory
from redis_fixtures import (AppMember, agents, app_group_send, app_layer, app_post,  # noqa: F401
                            expect_everywhere, finalize_all, needs_redis, redis_factory,  # noqa: F401
                            redis_stats, start_layer_app, unique, until, wait_for)

websockets = pytest.importorskip("websockets")
pytest.importorskip("channels_redis")

pytestmark = [needs_redis, pytest.mark.slow, pytest.mark.laurel_only]


def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# The first message dropped in an outage is logged at once: in the contract's words
# ("<n> message(s) could not be published") or as a notice that messages are dropped;
# the total is logged with the contract's words when Redis is back.
DROP_NOW = r"Redis .* (could not be published|dropped)"


def msg(tag, **kw):
    return dict({"type": "test.message", "tag": tag}, **kw)


def wait_stats(srv, pred, what, timeout=10):
    """Polls stats()["redis"] of srv until pred(stats); returns them."""
    last = {}

    def check():
        last["s"] = redis_stats(srv)
        return pred(last["s"])
    try:
        wait_for(check, timeout, what, interval=0.05)
    except BaseException:
        print(f"last stats of {srv.port}: {last.get('s')!r}\nstderr:\n{srv.stderr()[-3000:]}")
        raise
    return last["s"]


def count(srv, pattern):
    return len(re.findall(pattern, srv.stderr(), re.M))


def wait_all_subscribed(redis, groups, timeout=10):
    names = [f"asgi__group__{g}" for g in groups]
    wait_for(lambda: set(redis.numsub(*names).values()) == {1}, timeout,
             f"{len(names)} group subscriptions on {redis.addr}")


def dropped_counts(srv):
    """The n of every "<n> message(s) could not be published" line, in order."""
    return [int(n) for n in re.findall(r"\b(\d+) message\(s\) could not be published",
                                       srv.stderr())]


def wait_dropped_total(srv, n, timeout=5):
    """Waits until the last "could not be published" line (the total logged when Redis
    is back) says n."""
    wait_for(lambda: dropped_counts(srv)[-1:] == [n], timeout,
             f"'{n} message(s) could not be published' in the log of {srv.port}:\n"
             f"{srv.stderr()[-3000:]}")


async def athread(f, *a):
    return await asyncio.to_thread(f, *a)


@pytest.fixture
def servers(tmp_path):
    factory = _Factory(tmp_path / "servers")
    yield factory
    finalize_all(factory)


# --------------------------------------------------------------------------- restart

@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_redis_restart(redis_factory, servers, how):
    """Members connected before a Redis restart keep receiving afterwards (groups and
    specific channels resubscribed, also a group joined while Redis was down);
    publishes while Redis is down are dropped, counted and logged; the server serves
    and delivers locally all along."""
    redis = redis_factory()
    hosts = [redis.url()]
    a = start_layer_app(servers, "laurel", hosts)
    b = start_layer_app(servers, "laurel", hosts)
    g, g_late = unique("g"), unique("late")
    addr = re.escape(redis.addr)

    async def main():
        ma = await AppMember.open(a, g, name="A")
        mb = await AppMember.open(b, g, name="B")
        # and a member of many groups (more than one SUBSCRIBE batch to restore)
        many = [f"{g}-{i}" for i in range(600)]
        mm = await AppMember.open(b, name="B-many")
        await mm.call("group_add", groups=many)
        await athread(wait_all_subscribed, redis, many)
        await athread(redis.wait_numsub, f"asgi__group__{g}", 2)
        await athread(redis.wait_numsub, mb.channel, 1)
        for s in (a, b):
            st = await athread(redis_stats, s)
            assert (st["shards"], st["connected"], st["reconnects"]) == (1, 1, 0), st
        first = msg("before")
        await athread(app_group_send, a, g, first)
        await expect_everywhere({"A": lambda: ma.events, "B": lambda: mb.events}, [first],
                                quiet=0.2)

        connected_lines = {s.port: count(s, rf"Redis {addr} connected") for s in (a, b)}
        redis.stop(getattr(signal, how))
        for s in (a, b):
            await athread(wait_stats, s, lambda st: st["connected"] == 0, "disconnection")
            s.wait_output(rf"Redis {addr} connection lost", "stderr", timeout=5)
            assert count(s, rf"Redis {addr} connection lost") >= 1, s.stderr()[-3000:]
        before = await athread(redis_stats, a)

        # While Redis is down: the views answer, local members get group messages, the
        # publishes for the other processes are dropped and reported.
        down = msg("while-down")
        await athread(app_group_send, a, g, down, "sync")
        status, text = await athread(app_post, a, "send", mb.channel, msg("send-down"))
        assert (status, text) == (200, "ok"), "send() while Redis is down must not raise"
        ma_late = await AppMember.open(a, g_late, name="A-late")  # joins while down
        # the first drop of the outage is logged at once; the count when Redis is back
        a.wait_output(DROP_NOW, "stderr", timeout=5)
        assert count(a, DROP_NOW) >= 1, a.stderr()[-3000:]
        st = await athread(redis_stats, a)
        assert st["unpublished"] == before["unpublished"] + 2, (before, st)
        assert st["connected"] == 0
        assert (await athread(app_layer, a)) == "laurel.layers.ChannelLayer"
        await until_events(ma, 2)

        redis.start()
        for s in (a, b):
            st = await athread(wait_stats, s, lambda st: st["connected"] == 1
                               and st["reconnects"] >= 1, "reconnection")
            assert st["shards"] == 1
            n = connected_lines[s.port] + 1
            s.wait_output(rf"Redis {addr} connected", "stderr", timeout=5, count=n)
            assert count(s, rf"Redis {addr} connected") >= n, s.stderr()[-3000:]
        await athread(wait_dropped_total, a, 2)
        assert dropped_counts(b) in ([], [0]), b.stderr()[-3000:]
        await athread(redis.wait_numsub, f"asgi__group__{g}", 2)
        await athread(redis.wait_numsub, f"asgi__group__{g_late}", 1)
        await athread(redis.wait_numsub, ma.channel, 1)
        await athread(redis.wait_numsub, mb.channel, 1)
        await athread(wait_all_subscribed, redis, many)
        sample = [many[0], many[511], many[512], many[-1]]
        for name in sample:
            await athread(app_group_send, a, name, msg(name))
        await expect_everywhere({"B-many": lambda: mm.events}, [msg(n) for n in sample])

        after_a, after_b = msg("after-from-A"), msg("after-from-B")
        await athread(app_group_send, a, g, after_a)
        await athread(app_group_send, b, g, after_b, "sync")
        late = msg("to-late-group")
        await athread(app_group_send, b, g_late, late)
        direct = msg("direct")
        await mb.call("send", channel=ma.channel, message=direct)
        # (nothing published while Redis was down shows up later)
        await asyncio.gather(
            expect_everywhere({"A": lambda: ma.events},
                              [first, down, after_a, after_b, direct]),
            expect_everywhere({"B": lambda: mb.events}, [first, after_a, after_b]),
            expect_everywhere({"A-late": lambda: ma_late.events}, [late]))
        for m in (ma, mb, ma_late, mm):
            await m.close()
    run(main())


async def until_events(member, n, timeout=10):
    await until(lambda: len(member.events) >= n, timeout, f"{n} events on {member.name}")


def test_shutdown_while_redis_down(redis_factory, servers):
    """SIGTERM while Redis is down (a message dropped meanwhile): the server closes its
    WebSocket and exits 0 promptly, without waiting for Redis."""
    redis = redis_factory()
    a = start_layer_app(servers, "laurel", [redis.url()])
    g = unique("bye")

    async def main():
        m = await AppMember.open(a, g, name="A")
        await athread(redis.wait_numsub, f"asgi__group__{g}", 1)
        redis.stop()
        await athread(wait_stats, a, lambda st: st["connected"] == 0, "disconnection")
        await athread(app_group_send, a, g, msg("dropped-for-others"))
        await until_events(m, 1)
        t0 = time.monotonic()
        rc = await athread(a.stop)
        assert rc == 0, a.stderr()[-3000:]
        assert time.monotonic() - t0 < 5
        await until(lambda: m.closed, 5, "the WebSocket to close")
    run(main())


# --------------------------------------------------------------------------- password

def test_wrong_password(redis_factory, servers):
    """redis-server with --requirepass: a laurel server without the password, and one
    with a wrong one, log "refused authentication" (once, though they keep retrying),
    serve, and deliver locally; with the right password (in the URL, or as the host
    dict's "password") two servers and a channels_redis process exchange messages."""
    pw = "s3cret-pw"
    redis = redis_factory(password=pw)
    addr = re.escape(redis.addr)
    noauth = start_layer_app(servers, "laurel", [redis.url(password="")],
                             config={"reconnect_max": 0.3})
    wrong = start_layer_app(servers, "laurel", [redis.url(password="not-it")],
                            config={"reconnect_max": 0.3})
    right_url = start_layer_app(servers, "laurel", [redis.url()])
    right_dict = start_layer_app(
        servers, "laurel",
        [{"address": f"redis://127.0.0.1:{redis.port}/0", "password": pw}])
    g = unique("pw")

    async def main():
        m_no = await AppMember.open(noauth, g, name="noauth")
        m_wrong = await AppMember.open(wrong, g, name="wrong")
        for s, err in ((noauth, "NOAUTH"), (wrong, "WRONGPASS")):
            s.wait_output(rf"Redis {addr} refused authentication: ", "stderr", timeout=10)
            line = re.search(rf"^.*Redis {addr} refused authentication: .*$", s.stderr(),
                             re.M)
            assert line and err in line.group(0), s.stderr()[-3000:]
        await asyncio.sleep(1.5)  # several retries (reconnect_max 0.3 s)
        for s in (noauth, wrong):
            assert count(s, r"refused authentication") == 1, s.stderr()[-3000:]
            st = await athread(redis_stats, s)
            assert st["connected"] == 0, st
            assert (await athread(app_layer, s)) == "laurel.layers.ChannelLayer"
        # local delivery
        for s, m in ((noauth, m_no), (wrong, m_wrong)):
            local = msg(f"local-{s.port}")
            await athread(app_group_send, s, g, local, "sync")
            await expect_everywhere({m.name: lambda m=m: m.events}, [local], quiet=0)

        m1 = await AppMember.open(right_url, g, name="right-url")
        m2 = await AppMember.open(right_dict, g, name="right-dict")
        for s in (right_url, right_dict):
            await athread(wait_stats, s, lambda st: st["connected"] == 1, "connection")
            assert "refused authentication" not in s.stderr()
        await athread(redis.wait_numsub, f"asgi__group__{g}", 2)
        x, y = msg("from-url"), msg("from-dict")
        await athread(app_group_send, right_url, g, x)
        await athread(app_group_send, right_dict, g, y, "sync")
        await expect_everywhere({"url": lambda: m1.events, "dict": lambda: m2.events}, [x, y])
        # the servers without the right password got only their local messages
        assert [e["tag"] for e in m_no.events] == [f"local-{noauth.port}"]
        assert [e["tag"] for e in m_wrong.events] == [f"local-{wrong.port}"]
        for m in (m_no, m_wrong, m1, m2):
            await m.close()
    run(main())


def test_password_with_special_characters_interop(redis_factory, servers, agents):
    """A password with ':', '/' and '@', percent-encoded in the URL as channels_redis
    (redis-py) expects it: a channels_redis pub/sub process and a laurel
    server exchange group messages both ways."""
    redis = redis_factory(password="pw:with/odd@chars")
    srv = start_layer_app(servers, "laurel", [redis.url()])
    p = agents("pubsub", [redis.url()], name="pubsub")
    g = unique("pw")
    ch = p.member(g)

    async def main():
        m = await AppMember.open(srv, g, name="laurel")
        await athread(redis.wait_numsub, f"asgi__group__{g}", 2)
        x, y = msg("from-laurel"), msg("from-pubsub")
        await athread(app_group_send, srv, g, x)
        await athread(p.group_send, g, y)
        await expect_everywhere({"laurel": lambda: m.events, "pubsub": lambda: p.messages(ch)},
                                [x, y])
        await m.close()
    run(main())


# --------------------------------------------------------------------------- absent

def test_redis_absent_at_startup(redis_factory, servers):
    """No Redis when laurel starts: it starts and serves, logs "unreachable" once
    (while retrying), delivers locally; when redis-server comes up on that port, the
    two servers connect ("connected") and deliver to each other."""
    redis = redis_factory(start=False)
    addr = re.escape(redis.addr)
    hosts = [redis.url()]
    a = start_layer_app(servers, "laurel", hosts, config={"reconnect_max": 0.4})
    b = start_layer_app(servers, "laurel", hosts, config={"reconnect_max": 0.4})
    g = unique("absent")

    async def main():
        ma = await AppMember.open(a, g, name="A")
        mb = await AppMember.open(b, g, name="B")
        for s in (a, b):
            s.wait_output(rf"Redis {addr} unreachable: .*retrying", "stderr", timeout=10)
        local = msg("local")
        await athread(app_group_send, a, g, local, "sync")
        await until_events(ma, 1)
        await asyncio.sleep(1.5)  # several retries
        for s in (a, b):
            assert count(s, rf"Redis {addr} unreachable: ") == 1, s.stderr()[-3000:]
            st = await athread(redis_stats, s)
            assert (st["shards"], st["connected"]) == (1, 0), st
        assert count(a, DROP_NOW) >= 1, a.stderr()[-3000:]

        redis.start()
        for s in (a, b):
            await athread(wait_stats, s, lambda st: st["connected"] == 1, "connection")
            s.wait_output(rf"Redis {addr} connected", "stderr", timeout=5)
            assert count(s, rf"Redis {addr} connected") >= 1, s.stderr()[-3000:]
        await athread(wait_dropped_total, a, 1)
        assert dropped_counts(b) in ([], [0]), b.stderr()[-3000:]
        await athread(redis.wait_numsub, f"asgi__group__{g}", 2)
        x, y = msg("A-to-all"), msg("B-to-all")
        await athread(app_group_send, a, g, x)
        await athread(app_group_send, b, g, y, "sync")
        z = msg("direct-to-B")
        await ma.call("send", channel=mb.channel, message=z)
        await expect_everywhere({"A": lambda: ma.events}, [local, x, y])
        await expect_everywhere({"B": lambda: mb.events}, [x, y, z])
        await ma.close()
        await mb.close()
    run(main())


def test_a_reply_declaring_two_billion_elements(tmp_path):
    """A "Redis" that answers "*2147483647" and hangs up (found by fuzz/fuzz_redis.c):
    hiredis would reserve two billion pointers and walk them when the connection drops,
    stalling the event loop for seconds each time. laurel refuses the count as a
    protocol error, logs it, reconnects, and keeps answering at once meanwhile."""
    import socket
    import threading

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    port = lsock.getsockname()[1]
    stop = threading.Event()
    served = []

    def hostile():
        lsock.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = lsock.accept()
            except OSError:
                continue
            with c:
                c.settimeout(2)
                try:
                    c.recv(65536)
                    c.sendall(b"*2147483647\r\n")
                    served.append(1)
                except OSError:
                    pass

    t = threading.Thread(target=hostile, daemon=True)
    t.start()
    factory = _Factory(tmp_path / "servers")
    try:
        srv = start_layer_app(factory, "laurel", [f"redis://127.0.0.1:{port}"])
        deadline = time.monotonic() + 8
        slowest = 0.0
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            assert app_layer(srv)
            slowest = max(slowest, time.monotonic() - t0)
            time.sleep(0.05)
        assert served, "laurel never reached the hostile Redis"
        assert slowest < 1.0, f"a request waited {slowest:.1f} s: the loop stalled"
        assert re.search(r"Redis .*(protocol error|Out of memory)", srv.stderr()), \
            srv.stderr()[-2000:]
    finally:
        stop.set()
        finalize_all(factory)
        lsock.close()
