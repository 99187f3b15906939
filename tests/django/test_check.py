"""``laurel check APP`` / ``--check`` (docs/cli.md "Checking a deployment"): imports
the project, reports the environment, listeners, workers, channel layer, static files
and host/origin settings, and exits 1 with one line per problem. Each problem it
reports is shown to be real by the server itself (it refuses, or answers 400/403)."""

import os
import subprocess
import textwrap

import pytest

from conftest import BAD_STDERR, LAUREL_BIN, REPO, free_port

pytestmark = pytest.mark.laurel_only

EXAMPLE = REPO / "examples" / "notifications"
APP = "notifications.asgi:application"


def example_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "NOTIFICATIONS_REDIS_URL",
                        "DJANGO_ALLOWED_HOSTS", "VIRTUAL_ENV", "LAUREL_VENV")}
    env.update({"NOTIFICATIONS_DB": str(tmp_path / "db.sqlite3"),
                "PYTHONDONTWRITEBYTECODE": "1"})
    env.update(extra)
    return env


def check(*args, env, cwd=EXAMPLE):
    p = subprocess.run([str(LAUREL_BIN), *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=60)
    bad = [b for b in BAD_STDERR if b in p.stderr]
    assert not bad, p.stderr[-4000:]  # leaks or refcount errors of the check itself
    return p


def report(p):
    return {ln.split(":", 1)[0]: ln.split(":", 1)[1].strip()
            for ln in p.stdout.splitlines() if ":" in ln and not ln.startswith("laurel")}


def problems(p):
    return [ln[len("laurel check: problem: "):] for ln in p.stderr.splitlines()
            if ln.startswith("laurel check: problem: ")]


def test_example_is_fine(tmp_path):
    port = free_port()
    p = check("check", "-p", str(port), APP, env=example_env(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    r = report(p)
    assert r["application"] == f"{APP} (channels.routing.ProtocolTypeRouter)"
    assert r["listeners"] == f"tcp:port={port}:interface=127.0.0.1"
    assert r["workers"] == "1"
    assert r["channel layer"] == (
        "'default': laurel.layers.ChannelLayer, in this process only (replaces "
        "channels.layers.InMemoryChannelLayer; --channel-layer settings keeps it)")
    assert r["python"].startswith("3.11.")
    assert p.stdout.splitlines()[-1] == "laurel check: no problems"
    assert problems(p) == []
    # nothing was bound: the port is still free
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_check_flag_and_settings_layer(tmp_path):
    p = check("--check", "--channel-layer", "settings", APP, env=example_env(tmp_path))
    assert p.returncode == 0, p.stderr
    assert report(p)["channel layer"] == \
        "'default': channels.layers.InMemoryChannelLayer, in this process only"


def test_workers_with_in_process_layer(tmp_path, serve):
    env = example_env(tmp_path)
    p = check("check", "--workers", "2", APP, env=env)
    assert p.returncode == 1
    [msg] = problems(p)
    assert msg.startswith("--workers 2 with the in-process channel layer 'default'")
    assert p.stdout.splitlines()[-1] == "laurel check: 1 problem"
    # and the server does refuse, as the check said
    port = free_port()
    s = subprocess.run([str(LAUREL_BIN), "-p", str(port), "--workers", "2", APP],
                       cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=60)
    assert s.returncode != 0 and "Refusing to start 2 workers" in s.stderr


def test_allowed_hosts_and_origin_rejecting_the_listener(tmp_path, serve):
    env = example_env(tmp_path, DJANGO_ALLOWED_HOSTS="example.com")
    port = free_port()
    p = check("check", "-p", str(port), APP, env=env)
    assert p.returncode == 1
    msgs = problems(p)
    assert len(msgs) == 2, msgs
    assert msgs[0] == (f"ALLOWED_HOSTS ['example.com'] rejects Host 127.0.0.1:{port}, "
                       "the address laurel listens on: add '127.0.0.1'")
    assert msgs[1].startswith(f"WebSocket origin http://127.0.0.1:{port} (a page served "
                              "by this listener) is rejected by the OriginValidator")
    # the server with these settings does answer 400 to that host
    srv = serve(APP, cwd=EXAMPLE, env=env, ready_timeout=20)
    srv.env.pop("DJANGO_SETTINGS_MODULE", None)
    resp = srv.request("GET", "/login/")
    assert resp.status == 400
    # a wildcard address is not held against ALLOWED_HOSTS: clients bring their names
    p = check("check", "-b", "0.0.0.0", "-p", str(port), APP, env=env)
    assert p.returncode == 0, p.stderr


def test_application_that_cannot_load(tmp_path):
    p = check("check", "notifications.nosuch:application", env=example_env(tmp_path))
    assert p.returncode == 1
    assert problems(p) == ["cannot load the application: cannot import module "
                           "'notifications.nosuch': No module named 'notifications.nosuch'"]


STATIC_SETTINGS = '''
    from pathlib import Path
    HERE = Path(__file__).parent
    SECRET_KEY = "x"
    DEBUG = False
    ALLOWED_HOSTS = ["127.0.0.1"]
    INSTALLED_APPS = ["django.contrib.staticfiles", "channels"]
    ROOT_URLCONF = "staticproj.urls"
    STATIC_URL = "/static/"
    STATICFILES_DIRS = [HERE / "assets"]
    import os
    if os.environ.get("STATIC_ROOT_FOR_TEST"):
        STATIC_ROOT = os.environ["STATIC_ROOT_FOR_TEST"]
'''


def test_static_files(tmp_path):
    proj = tmp_path / "staticproj"
    (proj / "assets").mkdir(parents=True)
    (proj / "assets" / "site.css").write_text("body {}\n")
    (proj / "__init__.py").write_text("")
    (proj / "settings.py").write_text(textwrap.dedent(STATIC_SETTINGS))
    (proj / "urls.py").write_text("urlpatterns = []\n")
    (proj / "asgi.py").write_text(
        "import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'staticproj.settings')\n"
        "from django.core.asgi import get_asgi_application\n"
        "application = get_asgi_application()\n")
    env = example_env(tmp_path)
    p = check("check", "staticproj.asgi:application", env=env, cwd=tmp_path)
    assert p.returncode == 1
    assert problems(p) == ["STATIC_ROOT is not set with DEBUG off: collectstatic has "
                           "nowhere to put the files /static/ serves"]
    assert report(p)["static files"].startswith("1 file, STATIC_URL /static/")
    root = tmp_path / "collected"
    env["STATIC_ROOT_FOR_TEST"] = str(root)
    p = check("check", "staticproj.asgi:application", env=env, cwd=tmp_path)
    assert problems(p) == [f"STATIC_ROOT {root} is missing or empty: run manage.py "
                           "collectstatic"]
    root.mkdir()
    (root / "site.css").write_text("body {}\n")
    p = check("check", "staticproj.asgi:application", env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr


def test_listener_that_cannot_be_bound(tmp_path):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = check("check", "-p", str(port), APP, env=example_env(tmp_path))
    assert p.returncode == 1
    assert problems(p) == [f"cannot listen on tcp:port={port}:interface=127.0.0.1: "
                           "Address already in use"]
    sock = tmp_path / "no-such-dir" / "app.sock"
    p = check("check", "-u", str(sock), APP, env=example_env(tmp_path))
    assert problems(p) == [f"cannot listen on unix:{sock}: directory {sock.parent} does "
                           "not exist"]
