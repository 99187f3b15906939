"""CPython's own asyncio test suite (Debian's libpython3.11-testsuite) on laurel's event
loop: every test that passes on asyncio's stock loop must pass on laurel.loop.LaurelLoop
too, module by module, both run here (tests/asyncio/cpython_suite.py).

The loop under test is the _laurel_loop extension built into build/ (`ninja -C build`),
the same C code as the server's loop core."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SUITE = Path("/usr/lib/python3.11/test/test_asyncio")
PY = "/usr/bin/python3"

MODULES = sorted(p.stem for p in SUITE.glob("test_*.py")
                 if "windows" not in p.stem and "proactor" not in p.stem) \
    if SUITE.is_dir() else []

# Tests that may pass on the stock loop and not on laurel's, each with the reason.
# Empty: none is known.
KNOWN = {}


def outcomes(loop, module):
    p = subprocess.run([PY, str(HERE / "cpython_suite.py"), "--loop", loop, module],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"{loop} run of {module} crashed:\n{p.stderr[-3000:]}"
    return json.loads(p.stdout)


@pytest.mark.skipif(not MODULES, reason="libpython3.11-testsuite is not installed")
@pytest.mark.parametrize("module", MODULES or ["none"])
def test_module_passes_on_laurel_loop(module):
    stock = outcomes("stock", module)
    laurel = outcomes("laurel", module)
    assert stock, f"no test ran in {module}"
    assert set(laurel) == set(stock), "the two runs ran different tests"
    broken = sorted(t for t, o in stock.items()
                    if o == "pass" and laurel[t] != "pass" and t not in KNOWN)
    if broken:
        detail = subprocess.run([PY, str(HERE / "cpython_suite.py"), "--loop", "laurel",
                                 "--details", module], capture_output=True, text=True,
                                timeout=900).stderr
        pytest.fail(f"{len(broken)} test(s) of {module} pass on the stock loop and not "
                    f"on laurel's: {broken[:20]}\n{detail[-6000:]}")
