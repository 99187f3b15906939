"""The channel-layer contract (/work/shared/spec/channel-layer.md), checked against
Channels' InMemoryChannelLayer (the oracle) and laurel.layers.ChannelLayer.

Each test runs once per implementation (fixture ``impl`` in conftest.py). Where laurel is
meant to differ from (do better than) the oracle, the test says so with
``oracle_differs(reason)``: xfail (or skip) for the InMemory run only.

"Nothing queued" is checked without timed-out receives where possible: send a probe
straight to the channel and check that the probe is the next message.
"""

import asyncio
import copy
import functools
import queue
import re
import threading
import time

import pytest
from asgiref.sync import async_to_sync, sync_to_async

from channels.exceptions import ChannelFull
from layer_fixtures import impl, layer, layer_class, make_layer, oracle_differs  # noqa: F401
from channels.layers import BaseChannelLayer

PROBE = {"type": "probe.marker"}


def run(coro, timeout=30):
    """Runs a test coroutine on a fresh event loop, failing instead of hanging."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def recv(layer, channel, timeout=2.0):
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def assert_nothing_queued(layer, channel):
    """The next message on channel is a probe sent now: nothing was queued before it."""
    await layer.send(channel, dict(PROBE))
    got = await recv(layer, channel)
    assert got == PROBE, f"unexpected message queued on {channel!r}: {got!r}"


async def assert_times_out(layer, channel, wait=0.1):
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), wait)


def channel_count(layer):
    if hasattr(layer, "stats"):
        return layer.stats()["channels"]
    return len(layer.channels)  # InMemoryChannelLayer


def group_count(layer):
    if hasattr(layer, "stats"):
        return layer.stats()["groups"]
    return sum(1 for members in layer.groups.values() if members)  # InMemory


# =========================================================================== basics

def test_is_a_base_channel_layer_with_extensions(layer):
    assert isinstance(layer, BaseChannelLayer)
    assert "groups" in layer.extensions
    assert "flush" in layer.extensions
    assert list(layer.extensions) == ["groups", "flush"]


def test_loaded_like_channels_does(impl):
    """Channels builds a layer as import_string(BACKEND)(**CONFIG)."""
    from django.utils.module_loading import import_string

    path = {"inmemory": "channels.layers.InMemoryChannelLayer",
            "laurel": "laurel.layers.ChannelLayer"}[impl]
    layer = import_string(path)(expiry=30, group_expiry=600, capacity=7)
    assert layer.expiry == 30
    assert layer.capacity == 7
    assert layer.group_expiry == 600


def test_send_receive_fifo(layer):
    async def main():
        await layer.send("fifo.a", {"type": "m", "n": -1})
        for i in range(50):
            await layer.send("fifo.a", {"type": "m", "n": i})
            await layer.send("fifo.b", {"type": "m", "n": 100 + i})
        assert (await recv(layer, "fifo.a"))["n"] == -1
        for i in range(50):
            assert (await recv(layer, "fifo.a"))["n"] == i
        for i in range(50):
            assert (await recv(layer, "fifo.b"))["n"] == 100 + i

    run(main())


def test_fifo_with_a_parked_receiver(layer):
    """Messages sent back to back while a receiver waits arrive in order."""

    async def main():
        ch = await layer.new_channel()
        got = []

        async def consumer():
            for _ in range(5):
                got.append((await layer.receive(ch))["n"])

        task = asyncio.ensure_future(consumer())
        await asyncio.sleep(0.01)
        for i in range(5):
            await layer.send(ch, {"type": "m", "n": i})
        await asyncio.wait_for(task, 2)
        assert got == [0, 1, 2, 3, 4]

    run(main())


def test_receive_waits_for_a_later_send(layer):
    async def main():
        ch = await layer.new_channel()
        task = asyncio.ensure_future(layer.receive(ch))
        await asyncio.sleep(0.05)
        assert not task.done()
        await layer.send(ch, {"type": "late"})
        assert await asyncio.wait_for(task, 2) == {"type": "late"}

    run(main())


def test_new_channel_names_valid_and_unique(layer):
    async def main():
        names = [await layer.new_channel() for _ in range(2000)]
        assert len(set(names)) == len(names)
        for n in names[:200]:
            assert isinstance(n, str)
            assert n.startswith("specific.")
            assert len(n) < 100
            assert layer.valid_channel_name(n)
            assert BaseChannelLayer.channel_name_regex.match(n)
        custom = await layer.new_channel(prefix="chat.")
        assert custom.startswith("chat.")
        assert layer.valid_channel_name(custom)
        # the names work for send and receive
        for n in (names[0], names[1], custom):
            await layer.send(n, {"type": "x", "to": n})
        for n in (names[0], names[1], custom):
            assert (await recv(layer, n)) == {"type": "x", "to": n}

    run(main())


def test_close(layer):
    async def main():
        await layer.send("close.a", {"type": "x"})
        assert await layer.close() is None

    run(main())


# =========================================================================== groups

def test_group_send_reaches_every_member_once(layer):
    async def main():
        members = [await layer.new_channel() for _ in range(5)]
        outsider = await layer.new_channel()
        for ch in members:
            await layer.group_add("room", ch)
        await layer.group_add("room", members[0])  # twice: still one membership
        await layer.group_send("room", {"type": "hello", "n": 1})
        for ch in members:
            assert await recv(layer, ch) == {"type": "hello", "n": 1}
            await assert_nothing_queued(layer, ch)
        await assert_nothing_queued(layer, outsider)

    run(main())


def test_group_discard(layer):
    async def main():
        a, b, c = [await layer.new_channel() for _ in range(3)]
        for ch in (a, b, c):
            await layer.group_add("g1", ch)
        await layer.group_discard("g1", b)
        await layer.group_send("g1", {"type": "after.discard"})
        assert await recv(layer, a) == {"type": "after.discard"}
        assert await recv(layer, c) == {"type": "after.discard"}
        await assert_nothing_queued(layer, b)
        # discarding what is absent is a no-op, whichever part is absent
        await layer.group_discard("g1", b)
        await layer.group_discard("never.created", a)
        await layer.group_discard("g1", "never.a.member")
        # discard the rest: the group empties, group_send reaches nobody
        await layer.group_discard("g1", a)
        await layer.group_discard("g1", c)
        await layer.group_send("g1", {"type": "nobody"})
        for ch in (a, b, c):
            await assert_nothing_queued(layer, ch)
        # re-adding works
        await layer.group_add("g1", b)
        await layer.group_send("g1", {"type": "again"})
        assert await recv(layer, b) == {"type": "again"}

    run(main())


def test_group_send_to_unknown_group_is_a_noop(layer):
    async def main():
        await layer.group_send("no.such.group", {"type": "x"})

    run(main())


def test_channel_in_several_groups(layer):
    async def main():
        ch = await layer.new_channel()
        await layer.group_add("ga", ch)
        await layer.group_add("gb", ch)
        await layer.send(ch, {"type": "direct", "n": 0})
        await layer.group_send("ga", {"type": "ga", "n": 1})
        await layer.group_send("gb", {"type": "gb", "n": 2})
        await layer.send(ch, {"type": "direct", "n": 3})
        assert [(await recv(layer, ch))["n"] for _ in range(4)] == [0, 1, 2, 3]

    run(main())


def test_group_send_to_parked_receivers(layer):
    async def main():
        chans = [await layer.new_channel() for _ in range(20)]
        for ch in chans:
            await layer.group_add("parked", ch)
        tasks = [asyncio.ensure_future(layer.receive(ch)) for ch in chans]
        await asyncio.sleep(0.01)
        await layer.group_send("parked", {"type": "wake", "v": [1, 2]})
        results = await asyncio.wait_for(asyncio.gather(*tasks), 2)
        assert results == [{"type": "wake", "v": [1, 2]}] * 20
        assert len({id(r) for r in results}) == 20, "members share one message object"

    run(main())


def test_flush(layer):
    async def main():
        a, b = await layer.new_channel(), await layer.new_channel()
        await layer.send(a, {"type": "old"})
        await layer.group_add("fl", a)
        await layer.group_add("fl", b)
        await layer.flush()
        await assert_times_out(layer, a)  # the queued message is gone
        await layer.group_send("fl", {"type": "after.flush"})  # groups are gone
        await assert_nothing_queued(layer, b)
        await layer.send(a, {"type": "new"})
        assert await recv(layer, a) == {"type": "new"}
        assert group_count(layer) == 0

    run(main())


def test_flush_keeps_parked_receivers_working(layer, oracle_differs):
    oracle_differs("InMemory's flush() replaces the channel dict: a receiver parked on "
                   "the old asyncio.Queue never gets later messages")

    async def main():
        ch = await layer.new_channel()
        task = asyncio.ensure_future(layer.receive(ch))
        await asyncio.sleep(0.01)
        await layer.flush()
        await layer.send(ch, {"type": "after.flush"})
        assert await asyncio.wait_for(task, 1) == {"type": "after.flush"}

    run(main())


# =========================================================================== capacity

def test_capacity_channel_full_from_send(make_layer):
    layer = make_layer(capacity=3)

    async def main():
        for i in range(3):
            await layer.send("cap.a", {"type": "m", "n": i})
        with pytest.raises(ChannelFull):
            await layer.send("cap.a", {"type": "m", "n": 3})
        await layer.send("cap.b", {"type": "m"})  # other channels unaffected
        assert (await recv(layer, "cap.a"))["n"] == 0
        await layer.send("cap.a", {"type": "m", "n": 4})  # room again
        with pytest.raises(ChannelFull):
            await layer.send("cap.a", {"type": "m", "n": 5})
        assert [(await recv(layer, "cap.a"))["n"] for _ in range(3)] == [1, 2, 4]

    run(main())


def test_default_capacity_is_100(layer):
    async def main():
        for i in range(100):
            await layer.send("cap.default", {"n": i})
        with pytest.raises(ChannelFull):
            await layer.send("cap.default", {"n": 100})

    run(main())


def test_channel_capacity_globs_and_regexes(make_layer, oracle_differs):
    oracle_differs("InMemoryChannelLayer ignores channel_capacity (only `capacity` counts)")
    layer = make_layer(capacity=3, channel_capacity={
        "big.*": 6,
        re.compile(r"^tiny\..*$"): 1,
        "http.request*": 2,
    })

    async def fill(ch):
        n = 0
        while True:
            try:
                await layer.send(ch, {"type": "fill", "n": n})
            except ChannelFull:
                return n
            n += 1
            assert n < 200, "no capacity limit at all"

    async def main():
        assert await fill("big.one") == 6
        assert await fill("tiny.one") == 1
        assert await fill("http.request.body") == 2
        assert await fill("other") == 3
        assert await fill("notbig.one") == 3  # globs anchor at the start

    run(main())


def test_channel_capacity_first_match_wins(make_layer, oracle_differs):
    oracle_differs("InMemoryChannelLayer ignores channel_capacity (only `capacity` counts)")
    layer = make_layer(capacity=10, channel_capacity={"a.b*": 2, "a.*": 4})

    async def main():
        for i in range(2):
            await layer.send("a.bx", {"n": i})
        with pytest.raises(ChannelFull):
            await layer.send("a.bx", {"n": 2})
        for i in range(4):
            await layer.send("a.cx", {"n": i})
        with pytest.raises(ChannelFull):
            await layer.send("a.cx", {"n": 4})

    run(main())


def test_group_send_drops_for_a_full_member(make_layer, impl):
    layer = make_layer(capacity=2)

    async def main():
        full, ok = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("gfull", full)
        await layer.group_add("gfull", ok)
        await layer.send(full, {"type": "a"})
        await layer.send(full, {"type": "b"})
        before = layer.stats()["dropped_full"] if impl == "laurel" else None
        await layer.group_send("gfull", {"type": "g"})  # must not raise
        if impl == "laurel":
            assert layer.stats()["dropped_full"] == before + 1
        assert await recv(layer, ok) == {"type": "g"}
        assert [await recv(layer, full) for _ in range(2)] == [{"type": "a"}, {"type": "b"}]
        await assert_nothing_queued(layer, full)
        # the member is still in the group: once it has room it gets the next one
        await layer.group_send("gfull", {"type": "g2"})
        assert await recv(layer, full) == {"type": "g2"}
        assert await recv(layer, ok) == {"type": "g2"}

    run(main())


# =========================================================================== expiry

def test_expired_message_is_dropped(make_layer):
    layer = make_layer(expiry=0.2)

    async def main():
        await layer.send("exp.a", {"type": "old"})
        await asyncio.sleep(0.35)
        await layer.send("exp.a", {"type": "fresh"})
        assert await recv(layer, "exp.a") == {"type": "fresh"}
        await layer.send("exp.b", {"type": "old"})
        await asyncio.sleep(0.35)
        await assert_times_out(layer, "exp.b")

    run(main())


def test_expired_message_removes_channel_from_all_groups(make_layer):
    """A channel whose message expired leaves all groups: a later group_send to any of
    them must not reach it (the oracle cleans up before delivering)."""
    layer = make_layer(expiry=0.2)

    async def main():
        stale, live = await layer.new_channel(), await layer.new_channel()
        for g in ("ex1", "ex2"):
            await layer.group_add(g, stale)
        await layer.group_send("ex1", {"type": "never.received"})
        await asyncio.sleep(0.35)
        await layer.group_add("ex1", live)
        await layer.group_add("ex2", live)
        await layer.group_send("ex1", {"type": "after.expiry", "g": 1})
        await layer.group_send("ex2", {"type": "after.expiry", "g": 2})
        assert await recv(layer, live) == {"type": "after.expiry", "g": 1}
        assert await recv(layer, live) == {"type": "after.expiry", "g": 2}
        await assert_nothing_queued(layer, stale)

    run(main())


def test_expiry_when_the_channel_itself_is_touched_first(make_layer):
    layer = make_layer(expiry=0.2)

    async def main():
        ch = await layer.new_channel()
        await layer.group_add("ext", ch)
        await layer.send(ch, {"type": "never.received"})
        await asyncio.sleep(0.35)
        await layer.send(ch, {"type": "fresh"})  # touching the channel expires the old one
        assert await recv(layer, ch) == {"type": "fresh"}
        await layer.group_send("ext", {"type": "group"})
        await assert_nothing_queued(layer, ch)

    run(main())


def test_group_expiry(make_layer):
    # The oracle's group expiry compares whole seconds (int(time.time())), so this waits
    # 1.1 s although group_expiry is 0.2 s.
    layer = make_layer(group_expiry=0.2)

    async def main():
        old = await layer.new_channel()
        await layer.group_add("gexp", old)
        await asyncio.sleep(1.1)
        new = await layer.new_channel()
        await layer.group_add("gexp", new)
        await layer.group_send("gexp", {"type": "g"})
        assert await recv(layer, new) == {"type": "g"}
        await assert_nothing_queued(layer, old)

    run(main())


def test_group_expiry_counts_from_the_last_group_add(make_layer, oracle_differs):
    oracle_differs("InMemory's group expiry has whole-second granularity; a 0.3 s "
                   "group_expiry cannot be checked against it", skip=True)
    layer = make_layer(group_expiry=0.3)

    async def main():
        ch = await layer.new_channel()
        await layer.group_add("gref", ch)
        await asyncio.sleep(0.2)
        await layer.group_add("gref", ch)  # refresh
        await asyncio.sleep(0.2)  # 0.4 s after the first add, 0.2 s after the second
        await layer.group_send("gref", {"type": "still.member"})
        assert await recv(layer, ch) == {"type": "still.member"}
        await asyncio.sleep(0.25)
        await layer.group_send("gref", {"type": "lapsed"})
        await assert_nothing_queued(layer, ch)

    run(main())


# =========================================================================== validation

BAD_NAMES = ["", " ", "has space", "a" * 100, "a" * 150, "bad/char", "ü-nicode",
             "tab\t", "new\nline", None, 123, b"bytes", ["list"]]
BAD_CHANNELS = BAD_NAMES + ["a!b!c", "!start"]
BAD_GROUPS = BAD_NAMES + ["group!x", "g!"]
GOOD_CHANNELS = ["a" * 99, "A.b-c_9", "specific.abc!", "specific.abc!def", "x!y.z-_1"]
GOOD_GROUPS = ["a" * 99, "A.b-c_9", "chat_room-1.x"]


def _ids(names):
    return [repr(n)[:20] for n in names]


@pytest.mark.parametrize("bad", BAD_CHANNELS, ids=_ids(BAD_CHANNELS))
def test_invalid_channel_names(layer, bad):
    async def main():
        with pytest.raises(TypeError):
            await layer.send(bad, {"type": "x"})
        with pytest.raises(TypeError):
            await layer.receive(bad)
        with pytest.raises(TypeError):
            await layer.group_add("okgroup", bad)
        with pytest.raises(TypeError):
            await layer.group_discard("okgroup", bad)
        with pytest.raises(TypeError):
            layer.valid_channel_name(bad)

    run(main())


@pytest.mark.parametrize("bad", BAD_GROUPS, ids=_ids(BAD_GROUPS))
def test_invalid_group_names(layer, bad):
    async def main():
        with pytest.raises(TypeError):
            await layer.group_add(bad, "ok.channel")
        with pytest.raises(TypeError):
            await layer.group_discard(bad, "ok.channel")
        with pytest.raises(TypeError):
            await layer.group_send(bad, {"type": "x"})

    run(main())


def test_valid_names_accepted(layer):
    async def main():
        for ch in GOOD_CHANNELS:
            await layer.send(ch, {"type": "x", "ch": ch})
            assert await recv(layer, ch) == {"type": "x", "ch": ch}
        for g in GOOD_GROUPS:
            await layer.group_add(g, GOOD_CHANNELS[0])
            await layer.group_send(g, {"type": "g", "g": g})
            assert await recv(layer, GOOD_CHANNELS[0]) == {"type": "g", "g": g}
            await layer.group_discard(g, GOOD_CHANNELS[0])

    run(main())


@pytest.mark.parametrize("bad", [["a"], ("a",), "str", b"bytes", None, 1],
                         ids=["list", "tuple", "str", "bytes", "None", "int"])
def test_message_must_be_a_dict(layer, impl, bad):
    # InMemory checks with `assert` (AssertionError); laurel raises TypeError.
    exc = AssertionError if impl == "inmemory" else TypeError

    async def main():
        with pytest.raises(exc):
            await layer.send("msg.ch", bad)
        await layer.group_add("msg.g", "msg.ch")
        with pytest.raises(exc):
            await layer.group_send("msg.g", bad)
        await assert_nothing_queued(layer, "msg.ch")

    run(main())


def test_message_must_not_carry_asgi_channel(layer, impl):
    exc = AssertionError if impl == "inmemory" else ValueError

    async def main():
        with pytest.raises(exc):
            await layer.send("msg.ch", {"type": "x", "__asgi_channel__": "y"})

    run(main())


# =========================================================================== isolation

def sample_message():
    return {
        "type": "sample.message",
        "text": "héllo ✓",
        "bytes": b"\x00\xffbin",
        "empty_bytes": b"",
        "int": 42,
        "bigint": 2 ** 70,
        "neg": -7,
        "float": 1.5,
        "true": True,
        "false": False,
        "none": None,
        "list": [1, "two", [3, [4]], {"five": 5}],
        "tuple": (1, (2, [3]), {"k": "v"}),
        "dict": {"a": {"b": {"c": [1, 2]}}, "e": {}},
        "empty_list": [],
    }


def assert_same_types(a, b, path="msg"):
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same_types(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_types(x, y, f"{path}[{i}]")


def test_values_round_trip(layer):
    async def main():
        sent = sample_message()
        await layer.send("iso.rt", sent)
        got = await recv(layer, "iso.rt")
        assert got == sample_message()
        assert_same_types(got, sample_message())
        assert got is not sent

    run(main())


def test_sender_mutation_after_send_is_not_seen(layer):
    async def main():
        msg = sample_message()
        await layer.send("iso.snd", msg)
        await layer.group_add("iso.g", "iso.snd2")
        await layer.group_send("iso.g", msg)
        msg["text"] = "changed"
        msg["list"][2][1].append("deep")
        msg["list"][3]["five"] = 55
        msg["tuple"][1][1].append(4)
        msg["tuple"][2]["k"] = "changed"
        msg["dict"]["a"]["b"]["c"].append(3)
        msg["dict"]["e"]["new"] = 1
        msg["new"] = "key"
        assert await recv(layer, "iso.snd") == sample_message()
        assert await recv(layer, "iso.snd2") == sample_message()

    run(main())


def test_receivers_of_one_group_send_get_independent_copies(layer):
    async def main():
        await layer.group_add("iso.grp", "iso.a")
        await layer.group_add("iso.grp", "iso.b")
        await layer.group_send("iso.grp", sample_message())
        a = await recv(layer, "iso.a")
        a["text"] = "mutated by A"
        a["list"][2][1].append("A")
        a["list"][3]["five"] = "A"
        a["tuple"][1][1].append("A")
        a["tuple"][2]["k"] = "A"
        a["dict"]["a"]["b"]["c"].clear()
        a["dict"]["e"]["A"] = 1
        del a["none"]
        b = await recv(layer, "iso.b")
        assert b == sample_message()
        assert_same_types(b, sample_message())

    run(main())


def test_parked_receivers_of_one_group_send_get_independent_copies(layer):
    async def main():
        await layer.group_add("iso.pk", "iso.pa")
        await layer.group_add("iso.pk", "iso.pb")
        ta = asyncio.ensure_future(layer.receive("iso.pa"))
        tb = asyncio.ensure_future(layer.receive("iso.pb"))
        await asyncio.sleep(0.01)
        await layer.group_send("iso.pk", sample_message())
        a = await asyncio.wait_for(ta, 1)
        a["list"][2][1].append("A")
        a["dict"]["a"]["b"]["c"].append("A")
        a["tuple"][1][1].append("A")
        b = await asyncio.wait_for(tb, 1)
        assert b == sample_message()

    run(main())


# =========================================================================== cancellation

def test_cancelled_receive_loses_nothing(layer):
    async def main():
        ch = await layer.new_channel()
        task = asyncio.ensure_future(layer.receive(ch))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await layer.send(ch, {"type": "after.cancel"})
        assert await recv(layer, ch) == {"type": "after.cancel"}

    run(main())


def test_receive_cancelled_before_it_started_loses_nothing(layer):
    async def main():
        ch = await layer.new_channel()
        task = asyncio.ensure_future(layer.receive(ch))
        task.cancel()  # never ran
        with pytest.raises(asyncio.CancelledError):
            await task
        await layer.send(ch, {"type": "after.cancel"})
        assert await recv(layer, ch) == {"type": "after.cancel"}

    run(main())


@pytest.mark.parametrize("via", ["send", "group_send"])
def test_receive_cancelled_right_after_a_send_loses_nothing(layer, via):
    """The send hands the message over while the receive task is parked; the task is
    cancelled before it runs again (a consumer disconnecting at that moment; Channels'
    await_many_dispatch cancels its receive task in its finally). The message must either
    be the task's result or still be on the channel."""

    async def main():
        ch = await layer.new_channel()
        await layer.group_add("cancel.race", ch)
        task = asyncio.ensure_future(layer.receive(ch))
        await asyncio.sleep(0.01)
        if via == "send":
            await layer.send(ch, {"type": "raced"})
        else:
            await layer.group_send("cancel.race", {"type": "raced"})
        task.cancel()  # no await in between: the task has not resumed yet
        try:
            got = await task
        except asyncio.CancelledError:
            got = await recv(layer, ch, timeout=1)
        assert got == {"type": "raced"}

    run(main())


def test_several_receivers_on_one_channel_each_get_a_different_message(layer):
    async def main():
        ch = await layer.new_channel()
        tasks = [asyncio.ensure_future(layer.receive(ch)) for _ in range(4)]
        await asyncio.sleep(0.01)
        for i in range(4):
            await layer.send(ch, {"type": "m", "n": i})
        results = await asyncio.wait_for(asyncio.gather(*tasks), 2)
        assert sorted(r["n"] for r in results) == [0, 1, 2, 3]
        await assert_nothing_queued(layer, ch)

    run(main())


def test_several_receivers_messages_sent_with_pauses(layer, oracle_differs):
    oracle_differs("InMemory's receive() deletes the channel's queue when it empties "
                   "while other receivers still wait on it: they never get later messages")

    async def main():
        ch = await layer.new_channel()
        tasks = [asyncio.ensure_future(layer.receive(ch)) for _ in range(3)]
        await asyncio.sleep(0.01)
        for i in range(3):
            await layer.send(ch, {"type": "m", "n": i})
            await asyncio.sleep(0.01)
        results = await asyncio.wait_for(asyncio.gather(*tasks), 1)
        assert sorted(r["n"] for r in results) == [0, 1, 2]

    run(main())


def test_receive_through_loop_create_task(layer):
    async def main():
        loop = asyncio.get_running_loop()
        ch = await layer.new_channel()
        task = loop.create_task(layer.receive(ch))
        await asyncio.sleep(0.01)
        await layer.send(ch, {"type": "via.create_task"})
        assert await asyncio.wait_for(task, 1) == {"type": "via.create_task"}
        # and asyncio.create_task / ensure_future on an already queued message
        await layer.send(ch, {"type": "queued"})
        assert await asyncio.wait_for(asyncio.create_task(layer.receive(ch)), 1) == {
            "type": "queued"}
        assert asyncio.iscoroutinefunction(layer.receive)

    run(main())


def test_receive_through_await_many_dispatch(layer):
    """Exactly Channels' consumer loop: await_many_dispatch over a partial of receive."""
    from channels.exceptions import StopConsumer
    from channels.utils import await_many_dispatch

    async def main():
        ch = await layer.new_channel()
        got = []

        async def dispatch(message):
            got.append(message["n"])
            if len(got) == 3:
                raise StopConsumer()

        async def producer():
            for i in range(5):
                await asyncio.sleep(0.005)
                await layer.send(ch, {"type": "m", "n": i})

        prod = asyncio.ensure_future(producer())
        with pytest.raises(StopConsumer):
            await asyncio.wait_for(
                await_many_dispatch([functools.partial(layer.receive, ch)], dispatch), 3)
        await prod
        assert got == [0, 1, 2]
        # what the loop did not take is still there
        assert [(await recv(layer, ch))["n"] for _ in range(2)] == [3, 4]

    run(main())


def test_cancelled_receive_reclaims_the_channel(layer):
    """Spec: cancellation of the consumer's receive is the only sign a channel is gone:
    reclaim its queue."""

    async def main():
        base = channel_count(layer)
        ch = await layer.new_channel()
        task = asyncio.ensure_future(layer.receive(ch))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert channel_count(layer) == base

    run(main())


def test_cancelled_receive_reclaims_memberships(layer, oracle_differs):
    oracle_differs("spec: a cancelled receive means the channel is gone, so its group "
                   "memberships are reclaimed; InMemory keeps them until group_expiry")

    async def main():
        ch = await layer.new_channel()
        await layer.group_add("reclaim.g", ch)
        task = asyncio.ensure_future(layer.receive(ch))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert group_count(layer) == 0
        assert channel_count(layer) == 0

    run(main())


# =========================================================================== threads

STALL = ("InMemory's asyncio.Queue is completed from a foreign thread without "
         "call_soon_threadsafe: the receiving loop stalls until something else wakes it "
         "(~seconds)")


@pytest.mark.parametrize("via", ["send", "group_send"])
def test_prompt_wakeup_from_plain_thread(layer, oracle_differs, via):
    """async_to_sync(layer.send / group_send) from a plain threading.Thread (Celery, a
    management command): asgiref runs it on a brand-new loop in another thread while the
    receiver awaits on the main loop."""
    oracle_differs(STALL, strict=False)

    async def main():
        ch = await layer.new_channel()
        await layer.group_add("thr.g", ch)
        task = asyncio.ensure_future(layer.receive(ch))
        await asyncio.sleep(0.05)
        errors = []

        def sender():
            try:
                if via == "send":
                    async_to_sync(layer.send)(ch, {"type": "from.thread"})
                else:
                    async_to_sync(layer.group_send)("thr.g", {"type": "from.thread"})
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        t0 = time.monotonic()
        th = threading.Thread(target=sender)
        th.start()
        done, _ = await asyncio.wait([task], timeout=2.0)
        elapsed = time.monotonic() - t0
        await asyncio.get_running_loop().run_in_executor(None, th.join, 5)
        assert not errors, errors
        assert task in done, "no delivery within 2 s"
        assert task.result() == {"type": "from.thread"}
        assert elapsed < 0.5, f"delivery took {elapsed:.3f} s"

    run(main())


def test_fifo_from_plain_thread(layer, oracle_differs):
    oracle_differs(STALL, strict=False)

    async def main():
        ch = await layer.new_channel()
        got = []

        async def consumer():
            for _ in range(10):
                got.append((await layer.receive(ch))["n"])

        task = asyncio.ensure_future(consumer())
        await asyncio.sleep(0.02)

        def sender():
            for i in range(10):
                async_to_sync(layer.send)(ch, {"type": "m", "n": i})

        th = threading.Thread(target=sender)
        t0 = time.monotonic()
        th.start()
        done, _ = await asyncio.wait([task], timeout=3.0)
        elapsed = time.monotonic() - t0
        await asyncio.get_running_loop().run_in_executor(None, th.join, 5)
        assert task in done, f"got only {got} within 3 s"
        assert got == list(range(10))
        assert elapsed < 1.0, f"10 sends from a thread took {elapsed:.3f} s"

    run(main())


@pytest.mark.parametrize("thread_sensitive", [True, False], ids=["sensitive", "insensitive"])
def test_prompt_wakeup_from_sync_to_async_group_send(layer, thread_sensitive):
    """A sync view/consumer: sync code run through sync_to_async calls
    async_to_sync(layer.group_send); asgiref runs it on the main loop."""

    async def main():
        chans = [await layer.new_channel() for _ in range(3)]
        for ch in chans:
            await layer.group_add("s2a.g", ch)
        tasks = [asyncio.ensure_future(layer.receive(ch)) for ch in chans]
        await asyncio.sleep(0.05)

        def sync_view():
            async_to_sync(layer.group_send)("s2a.g", {"type": "from.sync.view"})
            return "ok"

        t0 = time.monotonic()
        assert await sync_to_async(sync_view, thread_sensitive=thread_sensitive)() == "ok"
        done, _ = await asyncio.wait(tasks, timeout=2.0)
        elapsed = time.monotonic() - t0
        assert len(done) == 3, "not every member got the message within 2 s"
        assert [t.result() for t in tasks] == [{"type": "from.sync.view"}] * 3
        assert elapsed < 0.5, f"delivery took {elapsed:.3f} s"

    run(main())


def test_prompt_wakeup_of_a_receiver_in_another_thread(layer, oracle_differs):
    """The receiver is async_to_sync(receive) in a plain thread (its own new loop); the
    sender is on the main loop."""
    oracle_differs(STALL, strict=False)

    async def main():
        ch = await layer.new_channel()
        results = queue.Queue()

        async def bounded_receive():
            # wait_for keeps a timer on that loop, so a stall cannot hang the test
            return await asyncio.wait_for(layer.receive(ch), 2.0)

        def receiver():
            try:
                results.put(("ok", async_to_sync(bounded_receive)(), time.monotonic()))
            except BaseException as e:  # noqa: BLE001
                results.put(("err", e, time.monotonic()))

        th = threading.Thread(target=receiver)
        th.start()
        await asyncio.sleep(0.2)  # let it park
        t0 = time.monotonic()
        await layer.send(ch, {"type": "to.thread"})
        loop = asyncio.get_running_loop()
        kind, value, t1 = await loop.run_in_executor(None, results.get, True, 5)
        await loop.run_in_executor(None, th.join, 5)
        assert kind == "ok", f"receiver in thread failed: {value!r}"
        assert value == {"type": "to.thread"}
        assert t1 - t0 < 0.5, f"delivery took {t1 - t0:.3f} s"

    run(main())


# =========================================================================== scale, memory

def test_scale_group_send_to_10000_members(layer, oracle_differs):
    oracle_differs("InMemory scans every channel and group on each receive (O(N^2) for "
                   "10,000 members: minutes)", skip=True)
    n = 10_000

    async def main():
        chans = [await layer.new_channel() for _ in range(n)]
        for ch in chans:
            await layer.group_add("huge", ch)
        # half the members wait in receive(), half will find the message queued
        parked = [asyncio.ensure_future(layer.receive(ch)) for ch in chans[::2]]
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        await layer.group_send("huge", {"type": "broadcast", "n": 1})
        elapsed = time.monotonic() - t0
        print(f"\n[laurel] group_send to {n} members: {elapsed * 1000:.1f} ms")
        got = await asyncio.wait_for(asyncio.gather(*parked), 5)
        got += [await recv(layer, ch) for ch in chans[1::2]]
        assert len(got) == n
        assert all(m == {"type": "broadcast", "n": 1} for m in got)
        # exactly one each: the next message on every member is the next broadcast
        await layer.group_send("huge", {"type": "broadcast", "n": 2})
        for ch in chans:
            assert (await recv(layer, ch))["n"] == 2
        assert elapsed < 5.0, f"group_send to {n} members took {elapsed:.2f} s"

    run(main(), timeout=60)


def test_memory_send_receive_cycles(layer):
    """50k send/receive cycles on fresh channels. Records of channels whose queue emptied
    with no waiter may stay (lazily reclaimed): at most one per channel, and reported."""
    cycles = 50_000

    async def main():
        base = channel_count(layer)
        for i in range(cycles):
            ch = await layer.new_channel()
            await layer.send(ch, {"type": "c", "i": i})
            assert (await layer.receive(ch))["i"] == i
        left = channel_count(layer) - base
        print(f"\n[{type(layer).__name__}] channel records after {cycles} cycles: {left}")
        assert left <= cycles

    run(main(), timeout=120)


def test_memory_consumer_lifecycles_stay_bounded(layer):
    """50k consumer lifecycles as Channels runs them: new_channel, group_add, a receive
    task that gets a message, a receive task cancelled at disconnect, group_discard. The
    spec says cancellation means the channel is gone: its record must be reclaimed."""
    cycles = 50_000

    async def main():
        base_ch, base_g = channel_count(layer), group_count(layer)
        for i in range(cycles):
            ch = await layer.new_channel()
            await layer.group_add("life", ch)
            t = asyncio.ensure_future(layer.receive(ch))
            await asyncio.sleep(0)
            await layer.send(ch, {"type": "c", "i": i})
            assert (await t)["i"] == i
            t = asyncio.ensure_future(layer.receive(ch))
            await asyncio.sleep(0)
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                pass
            await layer.group_discard("life", ch)
        left = channel_count(layer) - base_ch
        print(f"\n[{type(layer).__name__}] channel records after {cycles} consumer "
              f"lifecycles: {left}; groups: {group_count(layer) - base_g}")
        assert group_count(layer) == base_g
        assert left <= 100, f"{left} channel records left after {cycles} lifecycles"

    run(main(), timeout=180)


def test_dead_channel_with_a_late_message_is_forgotten():
    """laurel only: a consumer that left while a message was on its way leaves a channel
    holding that message, which nothing touches again; after it expired, making new
    channels sweeps it away (soak: the channel count stays bounded)."""
    from laurel.layers import ChannelLayer

    async def main():
        layer = ChannelLayer(expiry=0.2)
        dead = await layer.new_channel()
        await layer.send(dead, {"type": "late"})
        assert layer.stats()["channels"] == 1
        await asyncio.sleep(0.3)
        live = [await layer.new_channel() for _ in range(3)]
        for name in live:  # receivers keep them
            await layer.send(name, {"type": "x"})
        assert layer.stats()["channels"] == 3, layer.stats()
        await layer.flush()

    asyncio.run(main())


def test_channel_left_by_a_cancelled_receiver_after_group_discard_is_forgotten():
    """laurel only: a consumer parked in receive() leaves its group, then its receive is
    cancelled (Channels' consumer shutting down): nothing holds the channel any more
    and it is gone, at once or at the next new channel."""
    from laurel.layers import ChannelLayer

    async def main():
        layer = ChannelLayer()
        for _ in range(20):
            ch = await layer.new_channel()
            await layer.group_add("g", ch)
            t = asyncio.ensure_future(layer.receive(ch))
            await asyncio.sleep(0)
            await layer.group_discard("g", ch)
            t.cancel()
            await asyncio.sleep(0)
        await layer.send(await layer.new_channel(), {"type": "x"})
        assert layer.stats()["channels"] <= 1, layer.stats()

    asyncio.run(main())
