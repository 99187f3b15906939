"""pip and virtualenvs (issue 12): the wheel built by meson-python (pyproject.toml),
installed with pip into fresh virtualenvs, serves the notifications example.

* ``python3 -m build --no-isolation`` makes an sdist and, from it, a wheel; a wheel made
  straight from the tree holds the same files.
* ``pip install --no-index`` of the wheel into a venv made with
  ``--system-site-packages`` (Django and Channels come from Debian) gives
  ``venv/bin/laurel``, the ``laurel`` package, its extension modules and the Django app
  in the venv; ``python -m laurel`` runs the server; every version agrees with
  meson.build's.
* ``venv/bin/laurel`` serves the example on the venv (the log names its prefix).
* ``pip install`` of the source tree works too.

The wheel builds its own server binary, so these tests run in the plain pass of
``make test`` only (the ASan pass tests build-asan/laurel, which is not in a wheel).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from conftest import LAUREL_BIN, PY, REPO, free_port

pytestmark = [pytest.mark.laurel_only, pytest.mark.slow]

EXAMPLE = REPO / "examples" / "notifications"


def meson_version():
    m = re.search(r"^\s*version:\s*'([^']+)'", (REPO / "meson.build").read_text(), re.M)
    return m.group(1)


def sanitized_run():
    return any(k in os.environ for k in ("ASAN_OPTIONS", "LSAN_OPTIONS")) or \
        "asan" in LAUREL_BIN.parent.name


def need_tools():
    if sanitized_run():
        pytest.skip("the wheel builds its own binary: tested in the plain pass")
    for mod in ("build", "mesonpy", "pip", "venv"):
        r = subprocess.run([PY, "-c", f"import {mod}"], capture_output=True)
        if r.returncode:
            pytest.fail(f"python3 module {mod} missing (make deps installs it)")
    if not shutil.which("patchelf"):
        pytest.fail("patchelf missing (make deps installs it; meson-python asks for it)")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "VIRTUAL_ENV", "LAUREL_", "ASAN", "LSAN", "UBSAN"))
           and k != "DJANGO_SETTINGS_MODULE"}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """The sdist, the wheel built from it, and a wheel built straight from the tree."""
    need_tools()
    out = tmp_path_factory.mktemp("dist")
    t0 = time.monotonic()
    r = subprocess.run([PY, "-m", "build", "--no-isolation", "-o", str(out / "sd"),
                        str(REPO)], capture_output=True, text=True, timeout=600,
                       env=clean_env())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = subprocess.run([PY, "-m", "build", "--wheel", "--no-isolation", "-o",
                        str(out / "tree"), str(REPO)], capture_output=True, text=True,
                       timeout=600, env=clean_env())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    print(f"two builds in {time.monotonic() - t0:.1f}s")
    sdists = list((out / "sd").glob("*.tar.gz"))
    wheels = list((out / "sd").glob("*.whl"))
    tree = list((out / "tree").glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1 and len(tree) == 1
    return {"sdist": sdists[0], "wheel": wheels[0], "tree_wheel": tree[0]}


def make_venv(path, system_site=True):
    args = [PY, "-m", "venv"] + (["--system-site-packages"] if system_site else []) + \
        [str(path)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120, env=clean_env())
    assert r.returncode == 0, r.stderr
    return path


def pip_install(venv, what):
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-index",
                        "--no-build-isolation", "--no-cache-dir", "-q", str(what)],
                       capture_output=True, text=True, timeout=600, env=clean_env())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.fixture(scope="module")
def venv(tmp_path_factory, dist):
    v = make_venv(tmp_path_factory.mktemp("wheelvenv") / "venv")
    pip_install(v, dist["wheel"])
    return v


def test_wheel_names_and_contents(dist):
    version = meson_version()
    w = dist["wheel"].name
    assert w.startswith(f"laurel-{version}-cp311-cp311-linux_"), w
    assert dist["sdist"].name == f"laurel-{version}.tar.gz"
    names = set(zipfile.ZipFile(dist["wheel"]).namelist())
    assert f"laurel-{version}.data/scripts/laurel" in names
    for f in ("laurel/__init__.py", "laurel/__main__.py", "laurel/_server.py",
              "laurel/layers.py", "laurel/apps.py", "laurel/_version.py",
              "laurel/management/commands/runserver.py"):
        assert f in names, f
    assert any(re.fullmatch(r"_laurel_layer\.cpython-311-.*\.so", n) for n in names)
    assert any(re.fullmatch(r"_laurel_loop\.cpython-311-.*\.so", n) for n in names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # The sdist's wheel and the tree's wheel hold the same files.
    assert names == set(zipfile.ZipFile(dist["tree_wheel"]).namelist())
    meta = zipfile.ZipFile(dist["wheel"]).read(f"laurel-{version}.dist-info/METADATA")
    assert f"Version: {version}\n".encode() in meta


def test_installed_layout(venv):
    exe = venv / "bin" / "laurel"
    assert exe.is_file() and os.access(exe, os.X_OK)
    code = ("import laurel, _laurel_layer, _laurel_loop, laurel.apps, sys; "
            "print(laurel.__file__); print(_laurel_layer.__file__); "
            "print(_laurel_loop.__file__); print(laurel.__version__)")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True,
                       text=True, timeout=60, env=clean_env(), cwd="/")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    site = str(venv / "lib" / "python3.11" / "site-packages")
    for ln in lines[:3]:
        assert ln.startswith(site + "/"), (ln, site)
    assert lines[3] == meson_version()


def test_versions_agree(venv):
    version = meson_version()
    r = subprocess.run([str(venv / "bin" / "laurel"), "--version"], capture_output=True,
                       text=True, timeout=30, env=clean_env())
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"laurel {version}"
    # the server installed in a venv runs on that venv
    assert lines[-1] == f"venv {venv.resolve()} (from the executable's directory)"
    # python -m laurel runs the same server
    r2 = subprocess.run([str(venv / "bin" / "python"), "-m", "laurel", "--version"],
                        capture_output=True, text=True, timeout=30, env=clean_env())
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout == r.stdout


def wait_port(port, proc, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def serve_example(argv, tmp_path, env):
    """Starts argv (ending in the example's application) from examples/notifications
    with a fresh database of demo users; returns (proc, port, stderr path)."""
    db = tmp_path / "db.sqlite3"
    env = dict(env, NOTIFICATIONS_DB=str(db), PYTHONDONTWRITEBYTECODE="1")
    py = Path(argv[0]).parent / "python"
    r = subprocess.run([str(py), "manage.py", "demo_setup"], cwd=EXAMPLE, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    port = free_port()
    err = tmp_path / "server.stderr"
    with open(err, "w") as ef:
        proc = subprocess.Popen([*argv[:-1], "-p", str(port), argv[-1]], cwd=EXAMPLE,
                                env=env, stdout=subprocess.DEVNULL, stderr=ef)
    if not wait_port(port, proc):
        proc.kill()
        pytest.fail(f"server did not listen: {err.read_text()[-3000:]}")
    return proc, port, err


def stop(proc, err):
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("no exit within 20s of SIGTERM")
    assert rc == 0, err.read_text()[-3000:]


@pytest.mark.parametrize("how", ["bin", "python -m"])
def test_example_from_the_venv(venv, tmp_path, how):
    from demo_check import check_demo
    app = "notifications.asgi:application"
    argv = [str(venv / "bin" / "laurel"), app] if how == "bin" else \
        [str(venv / "bin" / "python"), "-m", "laurel", app]
    proc, port, err = serve_example(argv, tmp_path, clean_env())
    try:
        check_demo(port)
    finally:
        stop(proc, err)
    log = err.read_text()
    site = venv.resolve() / "lib" / "python3.11" / "site-packages"
    assert re.search(rf"in virtualenv \(from the executable's directory\): prefix "
                     rf"{re.escape(str(venv.resolve()))}, site-packages {re.escape(str(site))}",
                     log), log[-2000:]


def test_pip_install_source_tree(tmp_path, dist):
    v = make_venv(tmp_path / "venv")
    pip_install(v, REPO)
    r = subprocess.run([str(v / "bin" / "laurel"), "--version"], capture_output=True,
                       text=True, timeout=30, env=clean_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"laurel {meson_version()}"
    r = subprocess.run([str(v / "bin" / "python"), "-c",
                        "import laurel.loop, _laurel_layer; print(laurel.loop.__file__)"],
                       capture_output=True, text=True, timeout=60, env=clean_env(), cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(str(v / "lib" / "python3.11" / "site-packages"))


RAW_APP = '''
import json, sys

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    try:
        import django  # noqa: F401
        has_django = True
    except ImportError:
        has_django = False
    body = json.dumps({"prefix": sys.prefix, "django": has_django,
                       "laurel": __import__("laurel").__file__}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
'''


def test_isolated_venv_raw_asgi(tmp_path, dist):
    """A venv without the system's site-packages (pip from Debian's ensurepip): the
    wheel alone runs a raw ASGI application; Django is not there."""
    import json
    import urllib.request
    v = make_venv(tmp_path / "venv", system_site=False)
    pip_install(v, dist["wheel"])
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "rawapp.py").write_text(RAW_APP)
    port = free_port()
    err = tmp_path / "server.stderr"
    with open(err, "w") as ef:
        proc = subprocess.Popen([str(v / "bin" / "laurel"), "-p", str(port), "rawapp:app"],
                                cwd=app_dir, env=clean_env(), stdout=subprocess.DEVNULL,
                                stderr=ef)
    try:
        assert wait_port(port, proc), err.read_text()[-3000:]
        got = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/",
                                                timeout=10).read())
    finally:
        stop(proc, err)
    assert got["prefix"] == str(v.resolve())
    assert got["django"] is False
    assert got["laurel"].startswith(str(v.resolve() / "lib" / "python3.11" / "site-packages"))
