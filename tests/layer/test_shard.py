"""The Redis shard of a channel or group name is channels_redis' exactly (the C formula
in src/layer/redis.c against channels_redis.utils._consistent_hash), so a laurel process and a
channels_redis process configured with the same hosts meet on the same server."""

import random
import string

import pytest

import layer_fixtures  # noqa: F401  (puts build/ and python/ first on sys.path)

channels_redis_utils = pytest.importorskip("channels_redis.utils")
_laurel_layer = pytest.importorskip("_laurel_layer")


def names():
    rnd = random.Random(4)
    alphabet = string.ascii_letters + string.digits + "-_."
    out = ["", "a", "asgi__group__user42", "asgispecific.3baa"]
    out += ["asgi__group__" + "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 90)))
            for _ in range(2000)]
    out += ["grüße", "名前", "emoji-\U0001F600"]  # UTF-8 bytes are hashed, not code points
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 16, 4096, 5000])
def test_shard_matches_channels_redis(n):
    for name in names():
        assert _laurel_layer._shard(name, n) == channels_redis_utils._consistent_hash(name, n), name


def test_every_shard_is_used():
    assert {_laurel_layer._shard(name, 3) for name in names()} == {0, 1, 2}


def test_bad_shard_count():
    with pytest.raises(ValueError):
        _laurel_layer._shard("x", 0)
