"""laurel's layer outside any server (a management command, a Celery worker, a script):
one persistent connection to Redis however many ``async_to_sync`` calls from plain
threads, queued publishes written before the process exits, degraded mode when Redis
is absent, and the one "process-local" warning without hosts.

Each test runs a small script (``python -c``) with the source tree's ``laurel.layers``
(python/ and the _laurel_layer extension in build/); a channels_redis pub/sub process
(``Agent``) is the member that must receive what the script sends.
"""

import re
import subprocess
import time

import pytest

from redis_fixtures import (PY, agents, literal, needs_redis, outside_env, redis_factory,  # noqa: F401
                            side_layer, unique)

pytest.importorskip("channels_redis")

pytestmark = [needs_redis, pytest.mark.slow]

PRELUDE = r'''
import ast, logging, os, sys, threading, time
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                    format="%(levelname)s %(name)s: %(message)s")
from asgiref.sync import async_to_sync
kind, hosts = sys.argv[1], ast.literal_eval(sys.argv[2])
if kind == "laurel":
    from laurel.layers import ChannelLayer as Layer
else:
    from channels_redis.pubsub import RedisPubSubChannelLayer as Layer
layer = Layer(hosts=hosts) if hosts is not None else Layer()
'''


def run_script(body, kind, hosts, *args, timeout=30):
    """Runs PRELUDE + body; returns (CompletedProcess, seconds)."""
    t0 = time.monotonic()
    r = subprocess.run([PY, "-c", PRELUDE + body, kind, repr(hosts), *map(str, args)],
                       env=outside_env(), capture_output=True, text=True, timeout=timeout)
    return r, time.monotonic() - t0


def last_literal(stdout):
    return literal(stdout.strip().splitlines()[-1])


PERSISTENT = r'''
import redis as redis_py
port, group = int(sys.argv[3]), sys.argv[4]
r = redis_py.Redis(host="127.0.0.1", port=port)
def conns():
    return len(r.client_list()), int(r.info("stats")["total_connections_received"])
out = {"base": conns(), "after": []}
def work():
    for i in range(50):
        async_to_sync(layer.group_send)(group, {"type": "test.message", "n": i})
        if i == 0:
            time.sleep(0.3)  # let any connection the first call opens be established
        out["after"].append(conns())
t = threading.Thread(target=work, name="plain-thread")
t.start()
t.join()
out["threads"] = sorted(t.name for t in threading.enumerate())
stats = getattr(type(layer), "stats", None)
out["stats"] = layer.stats().get("redis") if stats else None
print(repr(out))
'''


@pytest.mark.laurel_only
def test_one_connection_for_many_async_to_sync_calls(redis_factory, agents):
    """50 ``async_to_sync(layer.group_send)`` calls from a plain thread (a new event loop
    each time) go through the same persistent connection(s) held by the "laurel-redis"
    thread: the CLIENT LIST count and total_connections_received do not move after the
    first call (at most one publish + one subscribe connection were opened), and the
    member in a channels_redis process gets the 50 messages once each, in order."""
    redis = redis_factory()
    group = unique("persist")
    p = agents("pubsub", [redis.url()], name="pubsub")
    ch = p.member(group)
    redis.wait_numsub(f"asgi__group__{group}", 1)
    r, _ = run_script(PERSISTENT, side_layer(), [redis.url()], redis.port, group)
    assert r.returncode == 0, r.stderr[-3000:]
    out = last_literal(r.stdout)
    (c0, t0), after = out["base"], out["after"]
    assert len(after) == 50
    c1, t1 = after[0]
    assert all(a == (c1, t1) for a in after), \
        f"connections per call (count, total received): {after}"
    assert 0 <= c1 - c0 <= 2 and 0 <= t1 - t0 <= 2, (out["base"], after[0])
    assert "laurel-redis" in out["threads"], out["threads"]
    st = out["stats"]
    assert (st["shards"], st["connected"], st["published"], st["unpublished"]) == \
        (1, 1, 50, 0), st
    assert "process-local" not in r.stderr
    p.wait_messages(50, ch)
    time.sleep(0.5)
    assert p.messages(ch) == [{"type": "test.message", "n": i} for i in range(50)]


EXIT = r'''
group, mode = sys.argv[3], sys.argv[4]
for i in range(200):
    async_to_sync(layer.group_send)(group, {"type": "test.message", "n": i, "pad": "x" * 2000})
if mode == "close":
    close = getattr(type(layer), "close", None)
    if close is not None:
        async_to_sync(layer.close)()
    sys.stdout.flush()
    os._exit(0)  # no atexit handlers: close() alone must have written everything
'''


@pytest.mark.parametrize("mode", ["atexit", "close"])
def test_queued_publishes_written_before_exit(redis_factory, agents, mode):
    """A script sends 200 group messages and ends at once (interpreter exit, or
    ``close()`` then ``os._exit``): a channels_redis member gets all of them, once, in
    order."""
    redis = redis_factory()
    group = unique("exit")
    p = agents("pubsub", [redis.url()], name="pubsub")
    ch = p.member(group)
    redis.wait_numsub(f"asgi__group__{group}", 1)
    r, elapsed = run_script(EXIT, side_layer(), [redis.url()], group, mode)
    assert r.returncode == 0, r.stderr[-3000:]
    assert elapsed < 10, elapsed
    expected = [{"type": "test.message", "n": i, "pad": "x" * 2000} for i in range(200)]
    p.wait_messages(200, ch)
    time.sleep(0.5)
    got = p.messages(ch)
    assert [m["n"] for m in got] == list(range(200))
    assert got == expected


ABSENT = r'''
group = sys.argv[3]
for i in range(3):
    async_to_sync(layer.group_send)(group, {"type": "test.message", "n": i})
time.sleep(1.0)
print(repr(layer.stats()["redis"]))
'''


@pytest.mark.laurel_only
def test_script_with_redis_absent(redis_factory):
    """Redis absent: group_send does not raise, the script ends promptly (exit 0), the
    log says "unreachable" once and that the messages could not be published, and
    stats count them."""
    redis = redis_factory(start=False)
    r, elapsed = run_script(ABSENT, "laurel", [redis.url()], unique("absent"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert elapsed < 12, elapsed
    addr = re.escape(redis.addr)
    assert len(re.findall(rf"Redis {addr} unreachable: .*retrying", r.stderr)) == 1, r.stderr
    assert re.search(r"\d+ message\(s\) could not be published", r.stderr), r.stderr
    st = last_literal(r.stdout)
    assert (st["shards"], st["connected"], st["published"], st["unpublished"]) == \
        (1, 0, 0, 3), st


LOCAL = r'''
async def use():
    ch = await layer.new_channel()
    await layer.group_add("g", ch)
    await layer.group_send("g", {"type": "x"})
    await layer.send(ch, {"type": "y"})
    return ch, [await layer.receive(ch), await layer.receive(ch)]
ch, got = async_to_sync(use)()
t = threading.Thread(target=lambda: async_to_sync(layer.group_send)("g", {"type": "z"}))
t.start()
t.join()
import asyncio
async def last():
    await layer.send(ch, {"type": "w"})
    return [await layer.receive(ch), await layer.receive(ch)]
got += async_to_sync(last)()
print(repr(got))
'''


@pytest.mark.laurel_only
def test_no_hosts_outside_laurel_warns_once():
    """Without hosts outside the server the layer works within the process and one
    WARNING on logger "laurel.layers" says it is process-local (however many calls,
    threads and event loops use it)."""
    r, _ = run_script(LOCAL, "laurel", None)
    assert r.returncode == 0, r.stderr[-3000:]
    assert last_literal(r.stdout) == [{"type": "x"}, {"type": "y"}, {"type": "z"},
                                      {"type": "w"}]
    lines = [ln for ln in r.stderr.splitlines() if "process-local" in ln]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("WARNING laurel.layers: "), lines


FORK = r'''
group = sys.argv[3]
async_to_sync(layer.group_send)(group, {"type": "test.message", "who": "parent-before"})
pid = os.fork()
if pid == 0:  # as a Celery prefork worker: the child uses the layer it inherited
    async_to_sync(layer.group_send)(group, {"type": "test.message", "who": "child"})
    sys.exit(0)
_, status = os.waitpid(pid, 0)
async_to_sync(layer.group_send)(group, {"type": "test.message", "who": "parent-after"})
print(repr(status))
'''


def test_forked_child_publishes(redis_factory, agents):
    """A process that used the layer forks (Celery prefork, gunicorn --preload): the
    child's group_send arrives, the child exits promptly with status 0, and the parent
    keeps publishing; each message arrives once."""
    redis = redis_factory()
    group = unique("fork")
    p = agents("pubsub", [redis.url()], name="pubsub")
    ch = p.member(group)
    redis.wait_numsub(f"asgi__group__{group}", 1)
    r, elapsed = run_script(FORK, side_layer(), [redis.url()], group)
    assert r.returncode == 0, r.stderr[-3000:]
    assert literal(r.stdout.strip().splitlines()[-1]) == 0, r.stdout
    assert elapsed < 10, elapsed
    p.wait_messages(3, ch)
    time.sleep(0.5)
    assert p.messages(ch) == [{"type": "test.message", "who": w}
                              for w in ("parent-before", "child", "parent-after")]


BURST = r'''
group = sys.argv[3]
for i in range(30):  # a short-lived process each time: a fresh layer, one send, close
    fresh = Layer(hosts=hosts)
    async_to_sync(fresh.group_send)(group, {"type": "test.message", "n": i})
    if kind == "laurel":
        fresh.close_sync()
    else:
        async_to_sync(fresh.flush)()
print(repr("done"))
'''


def test_publish_then_close_at_once(redis_factory, agents):
    """A layer closed right after its first publish (a management command that sends
    and exits): the publish still goes out, even when the close comes before the
    layer's own thread first ran."""
    redis = redis_factory()
    group = unique("burst")
    p = agents("pubsub", [redis.url()], name="pubsub")
    ch = p.member(group)
    redis.wait_numsub(f"asgi__group__{group}", 1)
    r, _ = run_script(BURST, side_layer(), [redis.url()], group, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    p.wait_messages(30, ch)
    assert sorted(m["n"] for m in p.messages(ch)) == list(range(30))
