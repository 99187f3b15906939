"""Virtualenvs (issue 12, docs/cli.md --venv): the embedded interpreter runs on the venv
laurel is installed in, else the one named by --venv / LAUREL_VENV, else the activated
one ($VIRTUAL_ENV), as that venv's own python would run.

Each venv here is made with ``python3 -m venv --without-pip`` and holds a package,
``onlyvenv``, that nothing else has; the application imports it and reports
``sys.prefix``, ``sys.executable`` and ``site.getsitepackages()``, which must equal what
the venv's python reports itself.
"""

import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import BAD_STDERR, LAUREL_BIN, PY, REPO, run_cli

pytestmark = pytest.mark.laurel_only

APP = '''
    import json, site, sys
    import onlyvenv

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = json.dumps({"which": onlyvenv.WHICH, "prefix": sys.prefix,
                           "base_prefix": sys.base_prefix, "executable": sys.executable,
                           "site": site.getsitepackages(),
                           "os": __import__("os").__file__,
                           "laurel": __import__("laurel").__file__}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
'''

PROBE = ("import json, site, sys; print(json.dumps({'prefix': sys.prefix, "
         "'base_prefix': sys.base_prefix, 'executable': sys.executable, "
         "'site': site.getsitepackages()}))")


def make_venv(path, which, system_site=False):
    args = [PY, "-m", "venv", "--without-pip"]
    if system_site:
        args.append("--system-site-packages")
    r = subprocess.run(args + [str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    pkg = path / "lib" / "python3.11" / "site-packages" / "onlyvenv"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"WHICH = {which!r}\n")
    return path.resolve()


@pytest.fixture
def env_base(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "venvapp.py").write_text(textwrap.dedent(APP))
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "LAUREL_VENV", "PYTHONPATH", "PYTHONHOME")}
    return tmp_path, env


def venv_python_view(venv):
    r = subprocess.run([str(venv / "bin" / "python3"), "-c", PROBE], capture_output=True,
                       text=True, timeout=30, cwd="/")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def restart_clean(serve, tmp, env, *args):
    """serve() copies os.environ into the server's environment: start with exactly env."""
    from conftest import Server
    s = Server("venvapp:app", args, serve.tmpdir, env=None, cwd=tmp / "app")
    s.env = dict(env, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    serve.servers.append(s)
    return s.start(ready_timeout=20)


def assert_runs_as(got, venv, which):
    want = venv_python_view(venv)
    assert got["which"] == which
    assert got["prefix"] == want["prefix"] == str(venv)
    assert got["base_prefix"] == want["base_prefix"] == "/usr"
    assert got["executable"] == want["executable"] == str(venv / "bin" / "python3")
    assert got["site"] == want["site"]
    assert got["site"][0] == str(venv / "lib" / "python3.11" / "site-packages")


def test_without_a_venv_the_package_is_missing(env_base):
    """The user's report: the venv's package is not found when no venv applies."""
    tmp, env = env_base
    p = subprocess.run([str(LAUREL_BIN), "-p", "0", "venvapp:app"], cwd=tmp / "app",
                       env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "No module named 'onlyvenv'" in p.stderr, p.stderr[-2000:]


def test_activated_venv(serve, env_base):
    tmp, env = env_base
    v = make_venv(tmp / "venv", "activated")
    srv = restart_clean(serve, tmp, dict(env, VIRTUAL_ENV=str(v)))
    assert_runs_as(srv.get_json("/"), v, "activated")
    srv.wait_output(r"Python 3\.11\.\d+ in virtualenv \(from VIRTUAL_ENV\): prefix "
                    + str(v).replace(".", r"\.") + r", site-packages "
                    + str(v / "lib/python3.11/site-packages").replace(".", r"\."),
                    stream="stderr")


def test_named_venv_wins_over_activated(serve, env_base):
    tmp, env = env_base
    act = make_venv(tmp / "act", "activated")
    named = make_venv(tmp / "named", "named", system_site=True)
    srv = restart_clean(serve, tmp, dict(env, VIRTUAL_ENV=str(act)), "--venv", str(named))
    got = srv.get_json("/")
    assert_runs_as(got, named, "named")
    # include-system-site-packages = true: Debian's dist-packages follow the venv's own
    assert "/usr/lib/python3/dist-packages" in got["site"]
    srv.wait_output(r"in virtualenv \(from --venv\)", stream="stderr")


def test_laurel_venv_variable(serve, env_base):
    tmp, env = env_base
    act = make_venv(tmp / "act", "activated")
    named = make_venv(tmp / "named", "named")
    srv = restart_clean(serve, tmp, dict(env, VIRTUAL_ENV=str(act), LAUREL_VENV=str(named)))
    got = srv.get_json("/")
    assert_runs_as(got, named, "named")
    # without system site-packages the venv has no Debian dist-packages
    assert "/usr/lib/python3/dist-packages" not in got["site"]


def test_binary_inside_a_venv_uses_it(serve, env_base):
    """A laurel placed in venv/bin (as pip puts it) runs on that venv, even with another
    one activated."""
    tmp, env = env_base
    own = make_venv(tmp / "own", "own")
    act = make_venv(tmp / "act", "activated")
    shutil.copy2(LAUREL_BIN, own / "bin" / "laurel")
    # The copy is not in the build tree: point it at the package and extensions there.
    pp = f"{REPO / 'python'}:{LAUREL_BIN.parent}"
    from conftest import Server
    s = Server("venvapp:app", [], serve.tmpdir, cwd=tmp / "app")
    s.argv[0] = str(own / "bin" / "laurel")
    s.env = dict(env, VIRTUAL_ENV=str(act), PYTHONPATH=pp, PYTHONUNBUFFERED="1")
    serve.servers.append(s)
    s.start(ready_timeout=20)
    assert_runs_as(s.get_json("/"), own, "own")
    s.wait_output(r"in virtualenv \(from the executable's directory\)", stream="stderr")
    r = subprocess.run([str(own / "bin" / "laurel"), "--version"], env=s.env,
                       capture_output=True, text=True, timeout=30)
    assert r.stdout.splitlines()[-1] == f"venv {own} (from the executable's directory)"


def test_workers_run_on_the_venv(serve, env_base):
    tmp, env = env_base
    v = make_venv(tmp / "venv", "workers")
    srv = restart_clean(serve, tmp, dict(env, VIRTUAL_ENV=str(v)), "--workers", "2")
    for _ in range(6):
        assert_runs_as(srv.get_json("/"), v, "workers")


def test_version_names_the_venv(env_base):
    tmp, env = env_base
    v = make_venv(tmp / "venv", "x")
    p = run_cli("--version", env={"VIRTUAL_ENV": str(v), "LAUREL_VENV": ""})
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1] == f"venv {v} (from VIRTUAL_ENV)"
    p = run_cli("--venv", str(v), "--version", env={"VIRTUAL_ENV": "", "LAUREL_VENV": ""})
    assert p.stdout.splitlines()[-1] == f"venv {v} (from --venv)"
    p = run_cli("--version", env={"VIRTUAL_ENV": "", "LAUREL_VENV": ""})
    assert p.stdout.splitlines()[-1] == "venv none"


def run_laurel(*args, cwd, env):
    p = subprocess.run([str(LAUREL_BIN), *args], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=30)
    assert not [b for b in BAD_STDERR if b in p.stderr], p.stderr[-4000:]
    return p


def wrong_version_venv(tmp):
    """A venv as python3.12 -m venv writes it (no 3.12 here: rewritten from a 3.11 one)."""
    v = make_venv(tmp / "venv312", "x")
    cfg = v / "pyvenv.cfg"
    cfg.write_text(cfg.read_text().replace("version = 3.11.", "version = 3.12."))
    assert "version = 3.12." in cfg.read_text()
    (v / "lib" / "python3.11").rename(v / "lib" / "python3.12")
    return v


@pytest.mark.parametrize("how", ["VIRTUAL_ENV", "--venv"])
def test_wrong_python_version_is_refused(env_base, how):
    tmp, env = env_base
    v = wrong_version_venv(tmp)
    args = ["-p", "0", "venvapp:app"]
    if how == "--venv":
        args = ["--venv", str(v)] + args
    else:
        env = dict(env, VIRTUAL_ENV=str(v))
    p = run_laurel(*args, cwd=tmp / "app", env=env)
    assert p.returncode == 1, (p.returncode, p.stderr)
    want = (f"laurel: error: the virtualenv {v} (from {how}) is for Python 3.12, but "
            f"laurel embeds Python 3.11: create the venv with python3.11 -m venv\n")
    assert p.stderr.endswith(want), p.stderr
    assert "Traceback" not in p.stderr and "ModuleNotFoundError" not in p.stderr


def test_version_without_version_line(env_base):
    """virtualenv's pyvenv.cfg says version_info; a bare one only has lib/pythonX.Y."""
    tmp, env = env_base
    v = wrong_version_venv(tmp)
    cfg = v / "pyvenv.cfg"
    lines = [ln for ln in cfg.read_text().splitlines() if not ln.startswith("version")]
    cfg.write_text("\n".join(lines) + "\n")
    p = run_laurel("--venv", str(v), "-p", "0", "venvapp:app", cwd=tmp / "app", env=env)
    assert p.returncode == 1 and "is for Python 3.12" in p.stderr, p.stderr
    cfg.write_text("\n".join(lines) + "\nversion_info = 3.10.12.final.0\n")
    p = run_laurel("--venv", str(v), "-p", "0", "venvapp:app", cwd=tmp / "app", env=env)
    assert p.returncode == 1 and "is for Python 3.10" in p.stderr, p.stderr


@pytest.mark.parametrize("kind", ["missing", "not-a-venv"])
def test_bad_venv_dir(env_base, kind):
    tmp, env = env_base
    d = tmp / "nothing"
    if kind == "not-a-venv":
        d.mkdir()
    p = run_laurel("--venv", str(d), "-p", "0", "venvapp:app", cwd=tmp / "app", env=env)
    assert p.returncode == 1, p.stderr
    msg = "does not exist" if kind == "missing" else "is not a virtualenv: it has no pyvenv.cfg"
    assert msg in p.stderr.splitlines()[-1], p.stderr


def test_venv_of_another_python_build_keeps_our_stdlib(serve, env_base):
    """A venv made from another build of Python 3.11 (pyenv's, or one since removed):
    its site-packages are used, but the stdlib stays the one matching the interpreter
    laurel embeds (Debian's), not the other build's."""
    tmp, env = env_base
    v = make_venv(tmp / "venv", "foreign")
    cfg = v / "pyvenv.cfg"
    text = re.sub(r"(?m)^home = .*$", f"home = {tmp / 'gone-python' / 'bin'}", cfg.read_text())
    cfg.write_text(text)
    srv = restart_clean(serve, tmp, dict(env, VIRTUAL_ENV=str(v)))
    got = srv.get_json("/")
    assert got["which"] == "foreign" and got["prefix"] == str(v)
    assert got["base_prefix"] == "/usr"
    assert got["os"] == "/usr/lib/python3.11/os.py"
    assert got["site"][0] == str(v / "lib" / "python3.11" / "site-packages")
    srv.wait_output(r"\(stdlib from /usr\)", stream="stderr")


def test_runserver_launcher_in_a_venv(env_base):
    """manage.py runserver and LaurelProcess start the server through laurel._launch:
    run by a venv's python (not activated), they pick the venv's own bin/laurel and
    name the venv to it."""
    tmp, env = env_base
    v = make_venv(tmp / "venv", "launch")
    code = ("import json, laurel._launch as l; "
            "print(json.dumps([l.find_laurel(), l.child_env().get('LAUREL_VENV')]))")
    env = {k: val for k, val in env.items() if k != "LAUREL_BIN"}
    env["PYTHONPATH"] = str(REPO / "python")
    env["PATH"] = "/usr/bin:/bin"
    r = subprocess.run([str(v / "bin" / "python3"), "-c", code], env=env, cwd="/",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    found, named = json.loads(r.stdout)
    assert named == str(v)
    assert found != str(v / "bin" / "laurel")  # not there yet
    shutil.copy2(LAUREL_BIN, v / "bin" / "laurel")
    r = subprocess.run([str(v / "bin" / "python3"), "-c", code], env=env, cwd="/",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [str(v / "bin" / "laurel"), str(v)]
    # and /usr/bin/python3, not in a venv, names none
    r = subprocess.run([PY, "-c", code], env=env, cwd="/", capture_output=True,
                       text=True, timeout=30)
    assert json.loads(r.stdout)[1] is None
