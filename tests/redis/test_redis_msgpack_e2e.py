"""Messages through Redis between laurel and channels_redis' pub/sub layer, end to end:
every value type the channel-layer contract allows arrives as ``msgpack`` would give it
(``unpackb(packb(m))``: tuples become lists, nothing else changes, types included), in
every direction; a message laurel cannot encode is refused with a clear error before
anything is published; payloads on the wire that are not a msgpack map with str keys
are dropped without harming the receiver.

(tests/layer/test_msgpack.py checks laurel's codec itself byte for byte.)
"""

import asyncio
import re
import time

import msgpack
import pytest

from conftest import _Factory
from redis_fixtures import (AgentError, AppMember, app_post, expect_everywhere, literal,
                            finalize_all, module_agents, module_redis_factory,  # noqa: F401
                            needs_redis, oracle, run_py, short, side_layer, start_layer_app,
                            unique)

websockets = pytest.importorskip("websockets")
pytest.importorskip("channels_redis")

pytestmark = [needs_redis, pytest.mark.slow]

VALUES = {
    "type": "test.message",
    "str": "é ✓ 🚀 \x00 end", "empty_str": "", "str32": "ü" * 40000,
    "bytes": bytes(range(256)), "empty_bytes": b"", "bin32": b"\x00\xff" * 40000,
    "zero": 0, "fix": 127, "u8": 128, "u16": 65535, "u32": 2**32 - 1,
    "i64max": 2**63 - 1, "u64max": 2**64 - 1,
    "neg1": -1, "neg32": -32, "neg33": -33, "i8": -128, "i16": -32768, "i32": -2**31,
    "i64min": -2**63,
    "float": 1.5, "neg_zero": -0.0, "tiny": 5e-324, "huge": 1.7976931348623157e308,
    "third": 1 / 3, "true": True, "false": False, "none": None,
    "list": [1, "a", b"b", None, [2.5, [True, False]]], "empty_list": [],
    "tuple": (1, "two", (3, b"four"), ()),
    "dict": {"a": {"b": {"c": [1, {"d": b"e"}]}}, "": "empty key", "ключ": "unicode key"},
    "empty_dict": {},
    "array32": [i % 128 for i in range(65536)],
    "map16": {f"k{i}": i for i in range(300)},
}


def expected_of(message):
    return msgpack.unpackb(msgpack.packb(message, use_bin_type=True), raw=False)


def strict_equal(a, b):
    """Equal including types (True is not 1, 1.0 is not 1, list is not tuple) and float
    bits (-0.0): repr shows all of those."""
    return repr(a) == repr(b)


def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="module")
def world(tmp_path_factory, module_redis_factory, module_agents):
    redis = module_redis_factory()
    hosts = [redis.url()]
    factory = _Factory(tmp_path_factory.mktemp("msgpack-servers"))
    sa = start_layer_app(factory, side_layer(), hosts)
    p = module_agents("pubsub", hosts, name="pubsub")
    lo = module_agents(side_layer(), hosts, name="laurel-outside")
    yield {"redis": redis, "hosts": hosts, "SA": sa, "P": p, "L": lo}
    finalize_all(factory)


# --------------------------------------------------------------------------- round trips

DIRECTIONS = ["server-group->pubsub", "server-send->pubsub", "server-view->pubsub",
              "pubsub-group->server", "pubsub-send->server", "outside-group->pubsub",
              "pubsub-send->outside", "outside-send->server", "server-send->outside"]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_every_value_type_round_trips(world, direction):
    redis, sa, p, lo = world["redis"], world["SA"], world["P"], world["L"]
    group = unique("types")
    message = dict(VALUES, direction=direction)
    expected = expected_of(message)
    assert expected["tuple"] == [1, "two", [3, b"four"], []]

    async def main():
        m = await AppMember.open(sa, group, name="server")
        p_ch = await asyncio.to_thread(p.member, group)
        l_ch = await asyncio.to_thread(lo.member, group)
        await asyncio.to_thread(redis.wait_numsub, f"asgi__group__{group}", 3)
        src, dst = direction.split("->")
        if src == "server-group":
            await m.call("group_send", group=group, message=message)
        elif src == "server-send":
            await m.call("send", channel=p_ch if dst == "pubsub" else l_ch, message=message)
        elif src == "server-view":
            assert (await asyncio.to_thread(app_post, sa, "group_send", group, message,
                                            "sync")) == (200, "ok")
        elif src == "pubsub-group":
            await asyncio.to_thread(p.group_send, group, message)
        elif src == "pubsub-send":
            await asyncio.to_thread(p.send, m.channel if dst == "server" else l_ch, message)
        elif src == "outside-group":
            await asyncio.to_thread(lo.group_send, group, message)
        elif src == "outside-send":
            await asyncio.to_thread(lo.send, m.channel if dst == "server" else p_ch, message)
        sinks = {"server": lambda: m.events, "pubsub": lambda: p.messages(p_ch),
                 "outside": lambda: lo.messages(l_ch)}
        await expect_everywhere({dst: sinks[dst]}, [expected], quiet=0.3)
        got = sinks[dst]()[0]
        for key in expected:
            assert key in got, (key, short(got))
            assert strict_equal(got[key], expected[key]), \
                (key, short(got[key]), short(expected[key]))
        assert strict_equal(got, expected), short(got)
        await m.close()
    run(main())


# --------------------------------------------------------------------------- refusals

UNENCODABLE = {
    "set": ({"type": "test.message", "v": {1, 2}}, r"\bset\b"),
    # channels_redis' receivers (msgpack.unpackb, strict_map_key=True) raise ValueError
    # on an int key anywhere in the message: their consumer would die
    "int-key": ({"type": "test.message", "v": {1: "a"}}, r"key|str"),
    "float-key": ({"type": "test.message", "v": {1.5: "a"}}, r"key|str"),
    # (channels_redis would accept bytes keys; the spec says map keys must be str)
    "bytes-key": ({"type": "test.message", "v": {b"k": 1}}, r"key|str"),
    "int-too-big": ({"type": "test.message", "v": 2**64}, r"int|range|large|big"),
    "int-too-small": ({"type": "test.message", "v": -2**63 - 1}, r"int|range|large|big|small"),
}
ERRORS = ("TypeError", "ValueError", "OverflowError")


@pytest.mark.parametrize("case", list(UNENCODABLE))
def test_unencodable_message_refused_by_server_layer(world, case):
    """group_send and send (to another process' channel) of a message that msgpack
    cannot carry to channels_redis raise a clear TypeError/ValueError (OverflowError
    for ints beyond 64 bits) in the consumer; nothing reaches the other process; the
    layer keeps working."""
    if oracle() and case in ("int-key", "float-key", "bytes-key"):
        pytest.skip("channels_redis publishes non-str keys (its receivers then fail)")
    message, pattern = UNENCODABLE[case]
    redis, sa, p = world["redis"], world["SA"], world["P"]
    group = unique("refuse")

    async def main():
        m = await AppMember.open(sa, group, name="server")
        p_ch = await asyncio.to_thread(p.member, group)
        await asyncio.to_thread(redis.wait_numsub, f"asgi__group__{group}", 2)
        for op, kw in (("group_send", {"group": group}), ("send", {"channel": p_ch})):
            with pytest.raises(AgentError) as ei:
                await m.call(op, message=message, **kw)
            assert ei.value.type_name in ERRORS, (op, ei.value)
            assert re.search(pattern, ei.value.text, re.I), (op, ei.value)
        ok = {"type": "test.message", "after": case}
        await m.call("group_send", group=group, message=ok)
        await expect_everywhere({"pubsub": lambda: p.messages(p_ch)}, [ok])
        await m.close()
    run(main())


REFUSE_SCRIPT = r'''
import ast, sys
from asgiref.sync import async_to_sync
kind, hosts = sys.argv[1], ast.literal_eval(sys.argv[2])
if kind == "laurel":
    from laurel.layers import ChannelLayer as Layer
else:
    from channels_redis.pubsub import RedisPubSubChannelLayer as Layer
layer = Layer(hosts=hosts)
class Gadget:
    pass
out = []
for name, value in (("object", object()), ("Gadget", Gadget()), ("set", frozenset([1])),
                    ("complex", 1j)):
    try:
        async_to_sync(layer.group_send)(sys.argv[3], {"type": "test.message", "v": value})
        out.append((name, None, None))
    except Exception as exc:
        out.append((name, type(exc).__name__, str(exc)))
async_to_sync(layer.group_send)(sys.argv[3], {"type": "test.message", "after": True})
print(repr(out))
'''


def test_unencodable_message_refused_outside_server(world):
    """laurel's layer in a plain process refuses objects msgpack cannot encode (an
    object, an instance of a class, a frozenset, a complex) with a TypeError/ValueError
    that names the type; only the valid message that follows is published."""
    redis, p = world["redis"], world["P"]
    group = unique("refuse-outside")
    p_ch = p.member(group)
    redis.wait_numsub(f"asgi__group__{group}", 1)
    r = run_py(REFUSE_SCRIPT, side_layer(), repr(world["hosts"]), group)
    assert r.returncode == 0, r.stderr[-3000:]
    out = literal(r.stdout.strip().splitlines()[-1])
    for name, type_name, text in out:
        assert type_name in ("TypeError", "ValueError"), (name, type_name, text)
        assert name in text, (name, text)
    p.wait_messages(1, p_ch)
    time.sleep(0.5)
    assert p.messages(p_ch) == [{"type": "test.message", "after": True}]


# --------------------------------------------------------------------------- bad payloads

GOOD = {"type": "test.message", "good": True}
BAD_PAYLOADS = {
    "not-msgpack": b"\xc1",
    "empty": b"",
    "truncated": msgpack.packb(GOOD)[:-3],
    "trailing-bytes": msgpack.packb(GOOD) + b"\x01",
    "array": msgpack.packb([1, 2]),
    "string": msgpack.packb("hello"),
    "int-key": msgpack.packb({"type": "test.message", 1: "a"}),
    "nested-int-key": msgpack.packb({"type": "test.message", "v": {1: "a"}}),
    "bin-key": msgpack.packb({"type": "test.message", b"k": "a"}, use_bin_type=True),
    "ext-type": msgpack.packb({"type": "test.message", "v": msgpack.ExtType(5, b"xyz")}),
}


@pytest.mark.laurel_only
@pytest.mark.parametrize("case", list(BAD_PAYLOADS))
def test_bad_payload_from_redis_dropped(world, case):
    """A raw PUBLISH that is not one msgpack map with str keys (garbage, truncated,
    trailing bytes, another type, int or bin keys, an ext type), on a group channel and
    on a member's channel of a laurel server: not delivered, the member and server keep
    working, and the next good message arrives once."""
    redis, sa = world["redis"], world["SA"]
    group = unique("bad")

    async def main():
        m = await AppMember.open(sa, group, name="server")
        await asyncio.to_thread(redis.wait_numsub, f"asgi__group__{group}", 1)
        for target in (f"asgi__group__{group}", m.channel):
            assert redis.command("PUBLISH", target, BAD_PAYLOADS[case]) == 1
        good = redis.command("PUBLISH", f"asgi__group__{group}", msgpack.packb(GOOD))
        assert good == 1
        await expect_everywhere({"server": lambda: m.events}, [GOOD])
        assert not m.closed
        await m.close()
    run(main())
    assert sa.request("GET", "/layer").status == 200


def test_large_messages(world):
    """Megabytes through Redis: 5 MB between a channels_redis process and a process on
    laurel's layer, both ways, and 1.5 MB from channels_redis to a laurel server's
    member, intact."""
    redis, sa, p, lo = world["redis"], world["SA"], world["P"], world["L"]
    big = {"type": "test.message", "blob": b"x" * 5_000_000, "text": "y" * 1_000_000}
    mid = {"type": "test.message", "blob": b"z" * 1_500_000}

    async def main():
        m = await AppMember.open(sa, name="server")
        p_ch = await asyncio.to_thread(p.new_channel)
        l_ch = await asyncio.to_thread(lo.new_channel)
        for ch in (m.channel, p_ch, l_ch):
            await asyncio.to_thread(redis.wait_numsub, ch, 1)
        await asyncio.to_thread(lo.send, p_ch, big)
        await asyncio.to_thread(p.send, l_ch, big)
        await asyncio.to_thread(p.send, m.channel, mid)
        await expect_everywhere({"pubsub": lambda: p.messages(p_ch),
                                 "outside": lambda: lo.messages(l_ch)}, [big], timeout=30,
                                quiet=0.3)
        await expect_everywhere({"server": lambda: m.events}, [mid], timeout=30, quiet=0.3)
        await m.close()
    run(main())
