"""Fixtures for the channel-layer contract tests (tests/layer), imported by them.

(A plain module rather than a conftest.py: a second "conftest" module would shadow
tests/conftest.py, which other test modules import helpers from.)

Every test in test_contract.py runs twice: against Channels' own
``channels.layers.InMemoryChannelLayer`` (the oracle) and against
``laurel.layers.ChannelLayer`` (the code under test), loaded from the source tree:
``/work/main/build`` (the ``_laurel_layer`` extension) and ``/work/main/python`` come
first on sys.path. Build the extension first: ``ninja -C build``.

These tests need no server process; they import the layer directly.
"""

import sys
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]
for _p in (str(_REPO / "python"), str(_REPO / "build")):
    if _p in sys.path:
        sys.path.remove(_p)
    sys.path.insert(0, _p)  # build first, then python (inserted last = first)

IMPLS = ("inmemory", "laurel")


def layer_class(impl):
    if impl == "inmemory":
        from channels.layers import InMemoryChannelLayer

        return InMemoryChannelLayer
    from laurel.layers import ChannelLayer

    return ChannelLayer


@pytest.fixture(params=IMPLS)
def impl(request):
    """Which implementation this run of the test is about: "inmemory" or "laurel"."""
    return request.param


@pytest.fixture
def make_layer(impl):
    """make_layer(**config) -> a fresh layer of the implementation under test."""
    cls = layer_class(impl)
    made = []

    def make(**config):
        layer = cls(**config)
        made.append(layer)
        return layer

    yield make


@pytest.fixture
def layer(make_layer):
    return make_layer()


@pytest.fixture
def oracle_differs(request, impl):
    """oracle_differs(reason, strict=True, skip=False): the test checks behaviour that
    Channels' InMemory layer does not have (laurel-only). For the oracle run it is marked
    xfail (strict: InMemory is known to fail it) or skipped (skip=True: e.g. it would take
    minutes there)."""

    def mark(reason, strict=True, skip=False):
        if impl != "inmemory":
            return
        if skip:
            pytest.skip("laurel-only: " + reason)
        request.applymarker(pytest.mark.xfail(reason="laurel-only: " + reason,
                                              strict=strict))

    return mark
