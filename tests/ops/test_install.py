"""``meson install`` (docs/cli.md "Installing"): the binary, the ``laurel`` package and
the ``_laurel_layer`` extension land where Debian's ``/usr/bin/python3`` and the
installed binary find them.

Nothing is installed into the system: everything goes into a temporary DESTDIR, and the
tests point Python at that copy (``PYTHONPATH``, or the matching entry of ``sys.path``
swapped for its DESTDIR twin). The build directory is the one ``LAUREL_BIN`` lives in
(``build/``, or ``build-asan/`` for the ASan run), or ``$LAUREL_BUILD_DIR``; it is
installed with ``--no-rebuild``, as built.
"""

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import LAUREL_BIN, PY, REPO, Server, free_port

pytestmark = pytest.mark.laurel_only

DEBIAN_PYDIR = "/usr/local/lib/python3.11/dist-packages"  # meson_options.txt default


def build_dir():
    if os.environ.get("LAUREL_BUILD_DIR"):
        return Path(os.environ["LAUREL_BUILD_DIR"]).resolve()
    if (LAUREL_BIN.parent / "build.ninja").is_file():
        return LAUREL_BIN.parent
    return REPO / "build"


def meson_options(bdir):
    out = subprocess.run(["meson", "introspect", str(bdir), "--buildoptions"],
                         capture_output=True, text=True, check=True).stdout
    return {o["name"]: o["value"] for o in json.loads(out)}


def under(destdir, path):
    """destdir + an absolute path, as DESTDIR composes them."""
    return Path(str(destdir) + str(path))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if not shutil.which("meson"):
        pytest.skip("meson is not installed")
    bdir = build_dir()
    if not (bdir / "build.ninja").is_file() or not (bdir / "laurel").is_file():
        pytest.fail(f"{bdir} is not a built laurel build directory (make build)")
    opts = meson_options(bdir)
    dest = tmp_path_factory.mktemp("destdir")
    p = subprocess.run(["meson", "install", "-C", str(bdir), "--no-rebuild", "--quiet",
                        "--destdir", str(dest)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    prefix = Path(opts["prefix"])
    pydir = prefix / opts["python_dir"]  # absolute stays absolute
    info = {
        "dest": dest,
        "bin": under(dest, prefix / opts["bindir"] / "laurel"),
        "pydir": under(dest, pydir),
        "pydir_real": pydir,
    }
    return info


def clean_env(**extra):
    """The environment for /usr/bin/python3 loading the installed extension: no
    PYTHON* variables; with a sanitized build (build-asan), the sanitizer runtimes
    preloaded, as a non-instrumented python3 needs them first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    sanitize = meson_options(build_dir()).get("b_sanitize", "none")
    if sanitize != "none":
        libs = [subprocess.run(["gcc", f"-print-file-name=lib{name}.so"], text=True,
                               capture_output=True).stdout.strip()
                for name, flag in (("asan", "address"), ("ubsan", "undefined"))
                if flag in sanitize]
        env["LD_PRELOAD"] = " ".join(libs)
        env["ASAN_OPTIONS"] = "detect_leaks=0"
    env.update(extra)
    return env


# --------------------------------------------------------------------------- layout

def test_default_locations():
    """The defaults are the ones the tests below rely on."""
    text = (REPO / "meson_options.txt").read_text()
    assert f"value: '{DEBIAN_PYDIR}'" in text
    opts = meson_options(build_dir())
    if (opts["prefix"], opts["bindir"], opts["python_dir"]) != ("/usr/local", "bin",
                                                                DEBIAN_PYDIR):
        pytest.skip(f"{build_dir()} is configured with other locations: {opts['prefix']}, "
                    f"{opts['python_dir']}")


def test_layout(installed):
    binary = installed["bin"]
    assert binary.is_file() and os.access(binary, os.X_OK)
    if meson_options(build_dir())["prefix"] == "/usr/local":
        assert binary == under(installed["dest"], "/usr/local/bin/laurel")
    pydir = installed["pydir"]
    pkg = pydir / "laurel"
    for name in ("__init__.py", "_server.py", "_selector.py", "layers.py"):
        assert (pkg / name).is_file(), name
    exts = sorted(p.name for p in pydir.glob("_laurel_layer*.so"))
    assert len(exts) == 1 and exts[0].startswith("_laurel_layer.cpython-311"), exts
    # Every file of the source package, subpackages included, and no bytecode caches.
    src = REPO / "python" / "laurel"
    want = {p.relative_to(src) for p in src.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}
    want.add(Path("_version.py"))  # written by meson from project(version:)
    got = {p.relative_to(pkg) for p in pkg.rglob("*") if p.is_file()}
    assert got == want
    assert not list(pkg.rglob("__pycache__"))


def test_installed_binary_version(installed):
    p = subprocess.run([str(installed["bin"]), "--version"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "laurel 0.1.0"
    assert [ln.split()[0] for ln in lines[1:]] == ["CPython", "libev", "llhttp", "wslay",
                                                   "OpenSSL", "venv"]


# --------------------------------------------------------------------------- running it

PROBE_APP = '''
    """Reports where the laurel package it runs with was imported from."""
    import json
    import sys

    import _laurel
    import laurel
    import laurel.layers


    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        layer = laurel.layers.ChannelLayer()
        name = await layer.new_channel()
        await layer.send(name, {"type": "probe.message", "n": 1})
        got = await layer.receive(name)
        body = json.dumps({
            "laurel": laurel.__file__,
            "server": sys.modules["laurel._server"].__file__,
            "layers": laurel.layers.__file__,
            "core_is_builtin": laurel.layers.LayerCore is _laurel.LayerCore,
            "layer_roundtrip": got,
        }).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
'''


@pytest.fixture
def installed_server(installed, tmp_path):
    (tmp_path / "probe_app.py").write_text(textwrap.dedent(PROBE_APP))
    srv = Server("probe_app:app", [], tmp_path / "srv", cwd=tmp_path,
                 port=free_port(),
                 env={"PYTHONPATH": str(installed["pydir"]), "PYTHONNOUSERSITE": "1"})
    srv.argv[0] = str(installed["bin"])  # the installed binary, not the build's
    srv.start()
    yield srv
    problems = srv.finalize()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_installed_binary_serves_from_installed_package(installed, installed_server):
    r = installed_server.request("GET", "/probe")
    assert r.status == 200, r.body
    got = json.loads(r.body)
    pkg = installed["pydir"] / "laurel"
    assert got["laurel"] == str(pkg / "__init__.py")
    assert got["server"] == str(pkg / "_server.py")  # not the source tree's
    assert got["layers"] == str(pkg / "layers.py")
    assert got["core_is_builtin"] is True  # inside the server: the binary's own core
    assert got["layer_roundtrip"] == {"type": "probe.message", "n": 1}
    assert str(REPO) not in installed_server.stderr()


SYSPATH_PROBE = '''
    import asyncio, json, sys
    real, twin = sys.argv[1], sys.argv[2]
    assert real in sys.path, ("not on sys.path", real, sys.path)
    # Exactly where a real install would be found, with the DESTDIR copy in its place.
    sys.path[sys.path.index(real)] = twin
    import laurel.layers, _laurel_layer

    async def roundtrip():
        layer = laurel.layers.ChannelLayer()
        await layer.group_add("g", "ch.a")
        await layer.group_send("g", {"type": "hello"})
        return await layer.receive("ch.a")

    print(json.dumps({"laurel": laurel.__file__, "layers": laurel.layers.__file__,
                      "ext": _laurel_layer.__file__,
                      "core_is_ext": laurel.layers.LayerCore is _laurel_layer.LayerCore,
                      "msg": asyncio.run(roundtrip())}))
'''


def test_debian_python3_imports_installed_layers(installed, tmp_path):
    """/usr/bin/python3 (Django shell, management commands, Celery) imports
    laurel.layers from the install, its C core coming from the _laurel_layer extension."""
    p = subprocess.run([PY, "-c", textwrap.dedent(SYSPATH_PROBE),
                        str(installed["pydir_real"]), str(installed["pydir"])],
                       cwd=tmp_path, env=clean_env(), capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    pydir = installed["pydir"]
    assert got["laurel"] == str(pydir / "laurel" / "__init__.py")
    assert got["layers"] == str(pydir / "laurel" / "layers.py")
    assert Path(got["ext"]).parent == pydir
    assert got["core_is_ext"] is True
    assert got["msg"] == {"type": "hello"}


def test_debian_python3_with_pythonpath(installed, tmp_path):
    p = subprocess.run([PY, "-c", "import laurel.layers, _laurel_layer; "
                        "print(laurel.layers.__file__); print(_laurel_layer.__file__)"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env=clean_env(PYTHONPATH=str(installed["pydir"])))
    assert p.returncode == 0, p.stderr
    layers, ext = p.stdout.splitlines()
    assert Path(layers).parent.parent == installed["pydir"]
    assert Path(ext).parent == installed["pydir"]


def test_default_python_dir_is_on_debian_sys_path():
    """So that after a real ``meson install`` nothing needs PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    p = subprocess.run([PY, "-c", "import json, sys; print(json.dumps(sys.path))"],
                       capture_output=True, text=True, timeout=30, env=env, cwd="/")
    assert p.returncode == 0, p.stderr
    assert DEBIAN_PYDIR in json.loads(p.stdout)
