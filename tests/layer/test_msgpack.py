"""laurel's msgpack codec (src/layer/msgpack.c, through the test-only module _laurel_msgpack)
against msgpack-python, the codec channels_redis uses.

channels_redis.pubsub.RedisPubSubChannelLayer publishes bare ``msgpack.packb(message)``
and reads ``msgpack.unpackb(payload)``; with msgpack >= 1.0 those defaults are
``use_bin_type=True`` and ``raw=False`` (and ``strict_map_key=True``, see
test_strict_map_key_difference). No prefix or extension is added by the pubsub layer
(channels_redis.core.RedisChannelLayer, the other layer, prepends 12 random bytes).

Encoding must be byte for byte what ``msgpack.packb(x, use_bin_type=True)`` gives;
decoding must give what ``msgpack.unpackb(b, raw=False)`` gives (tuples come back as
lists on both sides). Malformed input must raise, never crash or read out of bounds.

The module is loaded from /work/main/build (``ninja -C build``), or from the directory in
$LAUREL_TEST_BUILD_DIR. Under ASan/UBSan (build-asan, built with b_sanitize)::

    ninja -C build-asan
    LAUREL_TEST_BUILD_DIR=build-asan \\
    LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \\
    ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \\
    /usr/bin/python3 -m pytest -p no:cacheprovider -s tests/layer/test_msgpack.py

(-s: pytest does not capture stderr, so a sanitizer report that aborts the run shows.)
"""

import collections
import collections.abc
import datetime
import decimal
import enum
import math
import os
import random
import struct
import sys
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]
_BUILD = Path(os.environ.get("LAUREL_TEST_BUILD_DIR") or (_REPO / "build"))
if not _BUILD.is_absolute():
    _BUILD = _REPO / _BUILD
if str(_BUILD) in sys.path:
    sys.path.remove(str(_BUILD))
sys.path.insert(0, str(_BUILD))

import msgpack  # noqa: E402

import _laurel_msgpack as lm  # noqa: E402

assert Path(lm.__file__).parent == _BUILD, lm.__file__


# ------------------------------------------------------------------------------ helpers


def ref_pack(x):
    return msgpack.packb(x, use_bin_type=True)


def ref_unpack(b):
    # strict_map_key=False: laurel accepts any hashable key (see
    # test_strict_map_key_difference); for str/bytes keys it makes no difference.
    return msgpack.unpackb(b, raw=False, strict_map_key=False)


def same(a, b):
    """Deep equality that also checks types (bool is not int, list is not tuple), compares
    floats by bit pattern (nan, -0.0) and dict order. Iterative: deep nesting is fine."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, float):
            if struct.pack(">d", x) != struct.pack(">d", y):
                return False
        elif isinstance(x, list):
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y))
        elif isinstance(x, dict):
            if len(x) != len(y):
                return False
            for (kx, vx), (ky, vy) in zip(x.items(), y.items()):
                stack.append((kx, ky))
                stack.append((vx, vy))
        elif x != y:
            return False
    return True


def check(x):
    """x packs to exactly msgpack's bytes, and those bytes decode to what msgpack
    decodes them to."""
    expected = ref_pack(x)
    got = lm.packb(x)
    assert got == expected, (got[:64], expected[:64])
    decoded = lm.unpackb(expected)
    assert same(decoded, ref_unpack(expected))
    return decoded


def nest(depth, leaf):
    x = leaf
    for _ in range(depth):
        x = [x]
    return x


# ------------------------------------------------------------------------------ scalars

INT_BOUNDARIES = sorted(
    {
        v + d
        for v in (0, 127, 128, 255, 256, 65535, 65536, 2**31, 2**32, 2**63, 2**64 - 1)
        for d in (-1, 0, 1)
        if 0 <= v + d <= 2**64 - 1
    }
    | {
        v + d
        for v in (-1, -32, -33, -128, -129, -(2**15), -(2**15) - 1, -(2**31), -(2**63))
        for d in (-1, 0, 1)
        if -(2**63) <= v + d < 0
    }
)


@pytest.mark.parametrize("v", INT_BOUNDARIES)
def test_int_boundaries(v):
    assert check(v) == v
    assert check({"n": v, "l": [v, -v if -(2**63) <= -v else 0]})


def test_int_formats_are_the_expected_size_classes():
    # Independent of msgpack-python: the first byte of each size class.
    firsts = {0: 0x00, 127: 0x7F, 128: 0xCC, 256: 0xCD, 65536: 0xCE, 2**32: 0xCF,
              -1: 0xFF, -32: 0xE0, -33: 0xD0, -129: 0xD1, -32769: 0xD2, -(2**31) - 1: 0xD3}
    for v, first in firsts.items():
        assert lm.packb(v)[0] == first, v


def test_none_and_bools():
    assert lm.packb(None) == b"\xc0"
    assert lm.packb(True) == b"\xc3"
    assert lm.packb(False) == b"\xc2"
    for v in (None, True, False, [True, 1, False, 0], {"t": True}):
        check(v)
    assert lm.unpackb(b"\xc3") is True
    assert lm.unpackb(b"\xc2") is False
    assert lm.unpackb(b"\xc0") is None


FLOATS = [0.0, -0.0, 1.0, -1.5, 0.1, 1e300, -1e-300, 5e-324, sys.float_info.max,
          sys.float_info.min, math.pi, float("inf"), float("-inf"), float("nan"),
          struct.unpack(">d", b"\x7f\xf0\x00\x00\x00\x00\x00\x01")[0],  # signalling nan
          struct.unpack(">d", b"\xff\xf8\x00\x00\x00\x00\xbe\xef")[0],  # nan with payload
          3.0, 2.0**53, float(2**63)]


@pytest.mark.parametrize("v", FLOATS, ids=lambda v: struct.pack(">d", v).hex())
def test_floats_are_float64(v):
    packed = lm.packb(v)
    assert packed == ref_pack(v) == b"\xcb" + struct.pack(">d", v)
    assert struct.pack(">d", lm.unpackb(packed)) == struct.pack(">d", v)
    check([v, {"f": v}])


@pytest.mark.parametrize("v", [0.0, -0.0, 1.5, 1e38, 1e-45, 3.4028234e38, float("inf"),
                               float("-inf"), float("nan"), 0.1])
def test_float32_decodes(v):
    data = b"\xca" + struct.pack(">f", v)
    assert same(lm.unpackb(data), ref_unpack(data))


# ------------------------------------------------------------------------ str and bytes

LENGTHS = [0, 1, 31, 32, 255, 256, 65535, 65536, 70000]


@pytest.mark.parametrize("n", LENGTHS)
def test_str_lengths(n):
    assert check("x" * n) == "x" * n
    # Length classes count UTF-8 bytes, not code points.
    s = ("é" * n)[: max(0, n // 2)] + ("a" if n % 2 else "")
    assert len(s.encode()) == n
    check(s)
    check({"k" * n: s})


def test_str_non_ascii():
    for s in ("é", "日本語", "\U0001f600" * 9, "\x00", "a\x00b", "\u2028", "\uffff"):
        check(s)
        check({s: s})


@pytest.mark.parametrize("n", LENGTHS)
def test_binary_lengths(n):
    data = bytes(random.Random(n).getrandbits(8) for _ in range(min(n, 300))) * (
        n // 300 + 1
    )
    data = data[:n]
    assert len(data) == n
    assert check(data) == data
    check(bytearray(data))
    check(memoryview(data))
    check({"bytes": data, "text": None})
    assert type(lm.unpackb(lm.packb(bytearray(data)))) is bytes


def test_memoryview_of_other_formats():
    import array

    mv = memoryview(array.array("i", [1, 2, 3]))
    assert lm.packb(mv) == ref_pack(mv) == b"\xc4\x0c" + mv.tobytes()
    check(memoryview(b"abcdef")[1:4])


def test_non_contiguous_memoryview_is_refused_like_msgpack():
    mv = memoryview(b"abcdef")[::2]
    with pytest.raises(BufferError):
        ref_pack(mv)
    with pytest.raises(BufferError):
        lm.packb(mv)


def test_lone_surrogate_is_refused_like_msgpack():
    with pytest.raises(UnicodeEncodeError):
        ref_pack("\udc80")
    with pytest.raises(UnicodeEncodeError):
        lm.packb({"a": ["\udc80"]})


# ------------------------------------------------------------------------ containers

COUNTS = [0, 1, 15, 16, 17, 65535, 65536, 70000]


@pytest.mark.parametrize("n", COUNTS)
def test_array_counts(n):
    items = [i % 300 - 40 for i in range(n)]
    assert check(items) == items
    assert check(tuple(items)) == items
    assert type(lm.unpackb(lm.packb(tuple(items)))) is list
    check([[None] * n, "end"])


@pytest.mark.parametrize("n", COUNTS)
def test_map_counts(n):
    d = {f"k{i}": i for i in range(n)}
    out = check(d)
    assert list(out) == list(d)  # insertion order kept
    check({"outer": d, "after": [d]})
    check({i: None for i in range(n)})


def test_empty_containers():
    for v in ([], (), {}, [[]], [{}], {"a": {}}, {"a": []}):
        check(v)


def test_map_key_types():
    # Keys may be any packable type; insertion order is kept.
    d = {"s": 1, b"b": 2, 3: 3, -4: 4, 2**64 - 1: 5, None: 6, True: 7, 1.5: 8, "": 9}
    check(d)
    assert lm.packb({(1, 2): "t"}) == ref_pack({(1, 2): "t"})
    # The str keys of decoded maps are interned (as msgpack-python does).
    k = "a_fairly_unique_key_" + str(random.random())
    (key,) = lm.unpackb(lm.packb({k: 1}))
    assert key == k and key is sys.intern(key)


def test_unhashable_map_key_is_refused():
    data = ref_pack({(1, 2): "t"})  # the key becomes an array, so a list
    with pytest.raises(TypeError):
        ref_unpack(data)
    with pytest.raises(TypeError, match="unhashable"):
        lm.unpackb(data)
    with pytest.raises(TypeError):
        lm.unpackb(b"\x81\x80\x01")  # dict as key


def test_duplicate_map_keys_last_wins_like_msgpack():
    data = b"\x82\xa1a\x01\xa1a\x02"
    assert lm.unpackb(data) == ref_unpack(data) == {"a": 2}


def test_strict_map_key_difference():
    """channels_redis's pubsub layer calls msgpack.unpackb(payload) with the default
    strict_map_key=True, which refuses maps with keys other than str/bytes. laurel's
    decoder accepts any hashable key (like strict_map_key=False)."""
    data = ref_pack({1: "one"})
    with pytest.raises(ValueError, match="strict_map_key"):
        msgpack.unpackb(data)
    assert lm.unpackb(data) == {1: "one"}


class Color(enum.IntEnum):
    RED = 1
    BIG = 2**40


class MyFloat(float):
    pass


class MyStr(str):
    pass


class MyDict(dict):
    pass


class MyList(list):
    pass


def test_subclasses_pack_like_msgpack():
    od = collections.OrderedDict(a=1, b=2, c=3)
    od.move_to_end("a")  # items() order differs from the underlying dict's
    values = [Color.RED, Color.BIG, MyFloat(2.5), MyStr("hi"), MyDict(x=1), MyList([1, 2]),
              od, collections.defaultdict(int, {"z": 1}), {"od": od}, True]
    for v in values:
        assert lm.packb(v) == ref_pack(v), v
    assert lm.packb(od) == ref_pack(od) == b"\x83\xa1b\x02\xa1c\x03\xa1a\x01"


def test_channel_layer_messages():
    msgs = [
        {"type": "chat.message", "text": "hello"},
        {"type": "websocket.send", "bytes": b"\x00\xff" * 100, "text": None},
        {"type": "x", "__asgi_channel__": "specific.abc!def", "n": 1, "f": 0.5, "ok": True},
        {"type": "nested", "data": {"list": [1, "2", b"3", 4.0, None, [], {}],
                                     "tuple": (1, (2, (3,)))}},
        {"type": "big", "payload": "z" * 100000, "items": list(range(1000))},
    ]
    for m in msgs:
        check(m)


def test_matches_channels_redis_serializers():
    from channels_redis.core import RedisChannelLayer
    from channels_redis.pubsub import RedisPubSubChannelLayer

    pubsub = RedisPubSubChannelLayer()
    core = RedisChannelLayer()
    m = {"type": "chat.message", "text": "é", "bytes": b"\x01", "n": [1, 2.5, None]}
    assert lm.packb(m) == pubsub.serialize(m)
    assert lm.unpackb(pubsub.serialize(m)) == pubsub.deserialize(lm.packb(m))
    # The non-pubsub layer's framing: 12 random bytes, then the same msgpack.
    framed = core.serialize(m)
    assert framed[12:] == lm.packb(m)
    assert core.deserialize(b"\x00" * 12 + lm.packb(m)) == lm.unpackb(framed[12:])


# ------------------------------------------------------------------------ random trees


def random_value(rng, depth=0):
    kinds = ["int", "float", "str", "bytes", "bool", "none"]
    if depth < 6 and rng.random() < 0.9 / (depth + 1):
        kinds = ["list", "tuple", "dict"]
    kind = rng.choice(kinds)
    if kind == "int":
        bits = rng.choice([5, 7, 8, 15, 16, 31, 32, 63])
        v = rng.getrandbits(bits)
        return v if rng.random() < 0.5 else -v - rng.choice([0, 1])
    if kind == "float":
        return rng.choice([rng.uniform(-1e6, 1e6), struct.unpack(">d", rng.randbytes(8))[0],
                           float("nan"), -0.0, float("inf")])
    if kind == "str":
        n = rng.choice([0, 1, 5, 31, 32, 40, 255, 256, 300])
        alphabet = "abc\u00e9\u65e5\U0001f600\x00"
        return "".join(rng.choice(alphabet) for _ in range(n))
    if kind == "bytes":
        n = rng.choice([0, 1, 31, 32, 255, 256, 300])
        b = rng.randbytes(n)
        return rng.choice([b, bytearray(b), memoryview(b)])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    n = rng.choice([0, 1, 2, 3, 15, 16, 17] if depth < 2 else [0, 1, 2, 3])
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(n)]
    if kind == "tuple":
        return tuple(random_value(rng, depth + 1) for _ in range(n))
    d = {}
    for _ in range(n):
        k = rng.choice([
            lambda: "".join(rng.choice("abcdé") for _ in range(rng.randint(0, 40))),
            lambda: rng.getrandbits(40) - 2**39,
            lambda: rng.randbytes(3),
        ])()
        d[k] = random_value(rng, depth + 1)
    return d


def test_random_trees():
    rng = random.Random(20240611)
    for _ in range(3000):
        x = random_value(rng)
        check(x)
        check({"type": "random", "payload": x})


# ------------------------------------------------------------------------ nesting limits


def test_pack_depth_limit_matches_msgpack():
    # msgpack-python packs any object (scalar or container) below at most 511 levels of
    # containers: 512 nested lists are fine, anything deeper is a ValueError.
    for depth, leaf in ((510, 1), (511, 1), (511, []), (512, 1), (512, []), (600, 1)):
        x = nest(depth, leaf)
        try:
            expected = ref_pack(x)
        except ValueError:
            with pytest.raises(ValueError, match="deeper than 512"):
                lm.packb(x)
        else:
            assert lm.packb(x) == expected
    d = {}
    cur = d
    for _ in range(1000):
        cur["d"] = {}
        cur = cur["d"]
    with pytest.raises(ValueError, match="deeper"):
        lm.packb(d)


def test_self_referencing_structure_is_refused():
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError):
        lm.packb(loop)
    loop.clear()


def test_unpack_depth_limit_matches_msgpack():
    # msgpack-python's unpacker takes up to 1024 nested containers.
    for data in (b"\x91" * 1023 + b"\xc0", b"\x91" * 1024 + b"\xc0",
                 b"\x91" * 1023 + b"\x90", b"\x81\xa1k" * 1023 + b"\x80"):
        assert same(lm.unpackb(data), ref_unpack(data))
    for data in (b"\x91" * 1025 + b"\xc0", b"\x91" * 1024 + b"\x90",
                 b"\x81\xa1k" * 1024 + b"\x80"):
        with pytest.raises(ValueError):
            ref_unpack(data)
        with pytest.raises(ValueError, match="deeper than 1024"):
            lm.unpackb(data)


def test_depth_bomb():
    for data in (b"\x91" * 100000, b"\xdc\x00\x01" * 100000, b"\x81\xc0" * 100000,
                 b"\x91" * 100000 + b"\xc0"):
        with pytest.raises(ValueError):
            lm.unpackb(data)


# ------------------------------------------------------------------------ refusals


class Custom:
    pass


@pytest.mark.parametrize(
    "value, name",
    [
        ({1, 2}, "set"),
        (frozenset(), "frozenset"),
        (object(), "object"),
        (Custom(), "Custom"),
        (1 + 2j, "complex"),
        (decimal.Decimal("1.5"), "decimal.Decimal"),
        (datetime.datetime(2024, 1, 1), "datetime.datetime"),
        (range(3), "range"),
        (iter([]), "list_iterator"),
        (Color, "EnumType"),
        (msgpack.ExtType(1, b"x"), "ExtType"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) else v,
)
def test_unsupported_types_are_refused(value, name):
    for x in (value, {"type": "t", "v": value}, [1, [2, (value,)]], {value: 1}
              if isinstance(value, collections.abc.Hashable) else [value]):
        with pytest.raises(TypeError) as exc:
            lm.packb(x)
        msg = str(exc.value)
        assert f"cannot serialize {name} in a channel layer message" in msg
        assert "only dict, list, tuple, str, bytes, int, float, bool, None" in msg


@pytest.mark.parametrize("v", [2**64, 2**64 + 1, 2**100, -(2**63) - 1, -(2**100)])
def test_out_of_range_ints_are_refused(v):
    with pytest.raises(OverflowError):
        ref_pack(v)  # msgpack-python's choice; laurel's is ValueError
    with pytest.raises(ValueError, match=r"int outside \[-2\*\*63, 2\*\*64 - 1\]"):
        lm.packb(v)
    with pytest.raises(ValueError):
        lm.packb({"type": "x", "deep": [[v]]})


# ------------------------------------------------------------------------ malformed input

CORPUS = [
    None, True, 0, 127, 128, 255, 256, 65536, 2**32, 2**64 - 1, -1, -33, -129, -32769,
    -(2**31) - 1, -(2**63), 1.5, float("nan"), "", "a", "é" * 20, "x" * 40, "y" * 300,
    "z" * 70000, b"", b"\x00", b"b" * 40, b"c" * 300, b"d" * 70000, [], [1, "a", None],
    list(range(20)), {}, {"a": 1}, {f"k{i}": [i, str(i)] for i in range(20)},
    {"type": "chat.message", "text": "hi", "bytes": b"\x00\x01", "list": [1, [2, [3]]]},
    {"m": {"n": {"o": [1.25, b"z", "w"]}}},
]


@pytest.mark.parametrize("x", CORPUS, ids=lambda x: repr(x)[:30])
def test_every_truncation_raises(x):
    data = ref_pack(x)
    assert same(lm.unpackb(data), ref_unpack(data))
    # Long encodings: every prefix near both ends, and a sample in between.
    cuts = range(len(data)) if len(data) < 2000 else sorted(
        set(range(300)) | set(range(len(data) - 300, len(data))) |
        set(range(0, len(data), 997)))
    for cut in cuts:
        part = data[:cut]
        with pytest.raises(ValueError) as exc:
            lm.unpackb(part)
        assert "laurel: msgpack:" in str(exc.value) or isinstance(
            exc.value, UnicodeDecodeError), (cut, exc.value)
        with pytest.raises(ValueError):
            ref_unpack(part)


def test_truncation_message_names_the_format():
    with pytest.raises(ValueError, match=r"truncated input: str8 needs 5 bytes"):
        lm.unpackb(b"\xd9\x05abc")
    with pytest.raises(ValueError, match=r"truncated input: uint32 needs 4 bytes"):
        lm.unpackb(b"\xce\x00\x00")
    with pytest.raises(ValueError, match="truncated"):
        lm.unpackb(b"")


HUGE = [
    b"\xdb\xff\xff\xff\xff",  # str32 of 4 GiB
    b"\xdb\xff\xff\xff\xffabc",
    b"\xda\xff\xff", b"\xd9\xff", b"\xc6\xff\xff\xff\xff", b"\xc5\xff\xff", b"\xc4\xff",
    b"\xdd\xff\xff\xff\xff",  # array32 of 4 G items
    b"\xdd\xff\xff\xff\xff\xc0\xc0\xc0", b"\xdc\xff\xff", b"\x9f",
    b"\xdf\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff\xc0\xc0\xc0", b"\xde\xff\xff", b"\x8f",
    b"\x82\xc0\xc0\xc0",  # map of 2 with 3 bytes left: refused before any allocation
    b"\x91\xdd\x7f\xff\xff\xff",
]


@pytest.mark.parametrize("data", HUGE, ids=lambda d: d[:6].hex())
def test_huge_declared_lengths_raise(data):
    with pytest.raises(ValueError, match="truncated|exceeds"):
        lm.unpackb(data)
    with pytest.raises(ValueError):
        lm.unpackb_partial(data)


@pytest.mark.parametrize("data", [
    b"\xa1\xff", b"\xa1\x80", b"\xa2\xc0\x80",  # overlong NUL
    b"\xa3\xed\xa0\x80",  # UTF-8-encoded surrogate
    b"\xa1\xc3", b"\xa2\xe6\x97", b"\xa4\xf4\x90\x80\x80",  # > U+10FFFF
    b"\xd9\x02a\xfe", b"\x81\xa1\xff\x01", b"\x91\xa1\xff",
])
def test_invalid_utf8_raises(data):
    with pytest.raises(UnicodeDecodeError):
        ref_unpack(data)
    with pytest.raises(UnicodeDecodeError):
        lm.unpackb(data)


EXT = [b"\xd4\x01\x00", b"\xd5\x01\x00\x00", b"\xd6\xff" + b"\x00" * 4,
       b"\xd7\xff" + b"\x00" * 8, b"\xd8\x01" + b"\x00" * 16, b"\xc7\x01\x05\x00",
       b"\xc8\x00\x01\x05\x00", b"\xc9\x00\x00\x00\x01\x05\x00", b"\xc7\x00\x05",
       b"\x81\xa1t\xd4\x01\x00", b"\xd4", b"\xc9\xff\xff\xff\xff"]


@pytest.mark.parametrize("data", EXT, ids=lambda d: d.hex())
def test_ext_types_are_refused(data):
    with pytest.raises(ValueError, match=r"ext type \(0x[0-9a-f]{2}\)"):
        lm.unpackb(data)


def test_timestamp_ext_refused():
    data = ref_pack(msgpack.Timestamp(1, 2))
    assert data[0] in (0xD6, 0xD7, 0xC7)
    with pytest.raises(ValueError, match="ext type"):
        lm.unpackb(data)


def test_reserved_type_byte():
    for data in (b"\xc1", b"\x91\xc1", b"\x81\xc1\xc0", b"\x81\xc0\xc1"):
        with pytest.raises(ValueError, match="invalid type byte 0xc1"):
            lm.unpackb(data)


def test_trailing_bytes_are_reported():
    assert lm.unpackb_partial(b"\xc0\xc0") == (None, 1)
    assert lm.unpackb_partial(b"\x92\x01\x02garbage") == ([1, 2], 3)
    data = ref_pack({"a": [1, 2]})
    assert lm.unpackb_partial(data + data) == ({"a": [1, 2]}, len(data))
    with pytest.raises(ValueError, match="1 bytes of extra data"):
        lm.unpackb(b"\xc0\xc0")
    with pytest.raises(ValueError):
        msgpack.unpackb(b"\xc0\xc0")


def test_unpack_accepts_buffers():
    data = ref_pack({"a": b"b"})
    for buf in (data, bytearray(data), memoryview(data)):
        assert lm.unpackb(buf) == {"a": b"b"}
    with pytest.raises(TypeError):
        lm.unpackb("not bytes")


def test_mutation_fuzz():
    """Random byte flips, insertions and cuts of valid encodings: either both codecs
    decode to the same value, or laurel raises a clean ValueError/TypeError."""
    rng = random.Random(7)
    seeds = [ref_pack(x) for x in CORPUS if len(ref_pack(x)) < 2000]
    seeds += [ref_pack(random_value(rng)) for _ in range(200)]
    seeds = [s for s in seeds if len(s) < 5000]
    for _ in range(20000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            pos = rng.randrange(len(data) + 1)
            if op < 0.5 and data:
                data[min(pos, len(data) - 1)] = rng.getrandbits(8)
            elif op < 0.7:
                data[pos:pos] = bytes([rng.choice([0xC1, 0xD4, 0xDB, 0xDD, 0xDF, 0xFF,
                                                   0x9F, 0x8F, 0xCB, 0xD9])])
            elif op < 0.85:
                del data[pos:]
            else:
                data[pos:pos] = rng.randbytes(rng.randint(1, 8))
        data = bytes(data)
        try:
            got = lm.unpackb_partial(data)
        except (ValueError, TypeError):
            continue
        obj, used = got
        assert 0 < used <= len(data)
        try:
            expected = msgpack.unpackb(data[:used], raw=False, strict_map_key=False)
        except Exception as e:  # pragma: no cover - would be a disagreement
            pytest.fail(f"laurel decoded {data[:used].hex()} but msgpack raised {e!r}")
        assert same(obj, expected), data[:used].hex()


def test_pack_appends_nothing_on_error():
    # A failed lr_mp_pack leaves the buffer as it was: pack_each packs into one buffer,
    # skipping the items that fail.
    bad = [[1, 2, {3}], {"a": "b" * 1000, "c": object()}, ["x" * 70000, 2**70],
           nest(600, 1), {"k": [b"z" * 300, 1 + 2j]}]
    good = [{"type": "a"}, [1, 2], "x" * 300, None]
    items = [v for pair in zip(good, bad) for v in pair]
    assert lm.pack_each(items) == b"".join(ref_pack(v) for v in good)
    for v in bad:
        with pytest.raises((TypeError, ValueError)):
            lm.packb(v)


def test_msgpack_ext_objects_are_refused():
    """msgpack.ExtType is a namedtuple that msgpack-python packs as an ext type; laurel
    refuses it instead of packing it as an array. Ordinary namedtuples are tuples."""
    with pytest.raises(TypeError, match="cannot serialize ExtType"):
        lm.packb({"e": msgpack.ExtType(5, b"data")})
    Point = collections.namedtuple("Point", "x y")
    check(Point(1, 2))
