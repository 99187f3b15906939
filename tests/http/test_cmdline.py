"""The command line (cli.md): --help, --version, errors, application loading, defaults,
environment fallbacks, verbosity and log format."""

import os
import re
import socket
import textwrap

import pytest

from conftest import REPO, free_port, run_cli

ALL_FLAGS = [
    "--port", "--bind", "--unix-socket", "--fd", "--endpoint", "--verbosity",
    "--http-timeout", "--access-log", "--log-fmt", "--ping-interval", "--ping-timeout",
    "--application-close-timeout", "--websocket_timeout", "--websocket_connect_timeout",
    "--root-path", "--proxy-headers", "--proxy-headers-host", "--proxy-headers-port",
    "--server-name", "--no-server-name", "--websocket-max-message-size",
    "--websocket-max-frame-size", "--workers", "--max-requests", "--max-requests-jitter",
    "--lifespan", "--graceful-timeout", "--limit-request-line", "--limit-request-headers",
    "--limit-request-fields", "--limit-request-body", "--limit-concurrency",
    "--keep-alive-timeout", "--header-timeout", "--version", "--help",
]
SHORT_FLAGS = ["-p", "-b", "-u", "-e", "-v", "-t", "-s"]


# --------------------------------------------------------------------------- help/version

def test_help_lists_every_flag():
    p = run_cli("--help")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    missing = [f for f in ALL_FLAGS if not re.search(re.escape(f) + r"(?![\w-])", out)]
    assert not missing, f"--help does not mention {missing}"
    for f in SHORT_FLAGS:
        assert re.search(r"(^|[\s,])" + re.escape(f) + r"[\s,]", out), f
    # the environment fallbacks are documented
    assert "PORT" in out and "LAUREL_" in out


def test_help_short():
    p = run_cli("-h")
    assert p.returncode == 0
    assert "--port" in p.stdout


def test_version():
    p = run_cli("--version")
    assert p.returncode == 0, p.stderr
    assert re.match(r"^laurel \d+\.\d+\.\d+$", p.stdout.splitlines()[0]), p.stdout


# --------------------------------------------------------------------------- usage errors

APP = "tests.apps.basic:app"


@pytest.mark.parametrize("args", [
    ["--bogus-flag", APP],
    [],
    ["-p", "abc", APP],
    ["-p", "70000", APP],
    ["-p", "-1", APP],
    ["-t", "soon", APP],
    ["-v", "loud", APP],
    ["--limit-request-body", "lots", APP],
    ["--limit-concurrency", "x", APP],
    ["--keep-alive-timeout", "x", APP],
    ["--lifespan", "maybe", APP],
    ["--proxy-headers-host", "X-Real-IP", APP],
    ["--proxy-headers-port", "X-Real-Port", APP],
    ["-p"],
    [APP, "extra-positional"],
    ["-e", "tcp:port=0:interface=[]", APP],  # found by fuzz/fuzz_endpoint.c
    ["-e", "tcp6:0:[]", APP],
], ids=lambda a: " ".join(a) or "no-args")
def test_usage_error_one_line_exit_2(args):
    p = run_cli(*args)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("laurel: error:"), lines[0]


def test_ssl_endpoint_refused_clearly():
    p = run_cli("-e", "ssl:8443:privateKey=k.pem", APP, timeout=10)
    assert p.returncode != 0
    assert "ssl" in p.stderr.lower()


# --------------------------------------------------------------------------- loading

@pytest.mark.parametrize("target,needle", [
    ("nonexistent_mod_xyz:app", "nonexistent_mod_xyz"),
    ("tests.apps.basic:no_such_attr", "no_such_attr"),
    ("tests.apps.chain:holder.inner.missing", "missing"),
    ("tests.apps.raising_import:app", "import-time boom 5521"),
])
def test_failing_import(target, needle):
    p = run_cli("-p", str(free_port()), target)
    assert p.returncode not in (0, None)
    assert "Traceback (most recent call last)" in p.stderr, p.stderr
    assert needle in p.stderr
    last = [ln for ln in p.stderr.splitlines() if ln.strip()][-1]
    assert needle in last or "Error" in last, f"no one-line reason at the end: {last!r}"


def test_dotted_attribute_chain(serve):
    srv = serve("tests.apps.chain:holder.inner.app")
    sc = srv.scope("/chain")
    assert sc["path"] == "/chain"


@pytest.mark.parametrize("target,style", [("tests.apps.asgi2:App", "asgi2-class"),
                                          ("tests.apps.asgi2:function_app", "asgi2-function")])
def test_asgi2_double_callable(serve, target, style):
    srv = serve(target)
    r = srv.request("POST", "/two?x=1", body=b"abc")
    assert r.status == 200
    d = r.json()
    assert d["style"] == style
    assert d["body_len"] == 3
    assert d["scope"]["path"] == "/two" and d["scope"]["query_string"] == "x=1"


def test_current_directory_first_on_sys_path(serve, tmp_path):
    (tmp_path / "cwd_app_7731.py").write_text(textwrap.dedent("""
        from tests.apps.basic import app as _basic
        import sys, os
        async def app(scope, receive, send):
            await _basic(scope, receive, send)
    """))
    env = {"PYTHONPATH": str(REPO)}  # for tests.apps; the cwd itself must come first
    srv = serve("cwd_app_7731:app", cwd=tmp_path, env=env)
    d = srv.get_json("/env")
    assert d["cwd"] == str(tmp_path)
    assert d["sys_path_0_abs"] == str(tmp_path)


def test_django_settings_module_untouched(serve):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    srv = serve(APP, env=env)
    srv.env.pop("DJANGO_SETTINGS_MODULE", None)
    assert srv.get_json("/env?name=DJANGO_SETTINGS_MODULE")["value"] is None


# --------------------------------------------------------------------------- listeners, logs

def test_port_in_use_is_critical_exit_1():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = run_cli("-p", str(port), APP)
    assert p.returncode == 1, (p.returncode, p.stderr)
    crit = [ln for ln in p.stderr.splitlines() if "CRITICAL" in ln]
    assert len(crit) == 1, p.stderr
    assert str(port) in crit[0]


def port_free(port):
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False


@pytest.mark.servers("laurel", "daphne")
@pytest.mark.parametrize("args", [[], ["-b", "127.0.0.1"]], ids=["no-listener", "bind-only"])
def test_default_listener_8000(serve, args):
    if not port_free(8000):
        pytest.skip("port 8000 is busy")
    srv = serve(APP, *args, port=8000, add_listener=False)
    assert srv.request("GET", "/x").status == 200
    assert "Listening on TCP address 127.0.0.1:8000" in srv.stderr()


@pytest.mark.laurel_only
def test_port_from_environment(serve):
    port = free_port()
    srv = serve(APP, port=port, add_listener=False, env={"PORT": str(port)})
    assert srv.request("GET", "/x").status == 200


@pytest.mark.laurel_only
def test_asgi_threads_sizes_default_executor(serve):
    srv = serve("tests.apps.aio:app", env={"ASGI_THREADS": "3"})
    assert srv.get_json("/executor")["max_workers"] == 3


@pytest.mark.servers("laurel", "daphne")
def test_startup_log_lines(serve):
    srv = serve(APP)
    err = srv.wait_output(r"Listening on TCP address", "stderr")
    assert re.search(rf"Starting server at tcp:port={srv.port}:interface=127\.0\.0\.1$",
                     err, re.M), err
    assert re.search(rf"Listening on TCP address 127\.0\.0\.1:{srv.port}$", err, re.M), err


@pytest.mark.servers("laurel", "daphne")
def test_default_log_format(serve):
    srv = serve(APP)
    err = srv.wait_output(r"Listening on TCP address", "stderr")
    line = [ln for ln in err.splitlines() if "Listening on TCP address" in ln][0]
    # %(asctime)-15s %(levelname)-8s %(message)s
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO     Listening on TCP", line), line


@pytest.mark.servers("laurel", "daphne")
def test_log_fmt(serve):
    srv = serve(APP, "--log-fmt", "%(levelname)s::%(message)s")
    err = srv.wait_output(r"Listening on TCP address", "stderr")
    assert f"INFO::Listening on TCP address 127.0.0.1:{srv.port}" in err.splitlines()


def test_verbosity_0_quiet(serve):
    srv = serve(APP, "-v", "0")
    for _ in range(3):
        assert srv.request("GET", "/quiet").status == 200
    srv.stop()
    assert "/quiet" not in srv.stdout()
    assert "INFO" not in srv.stderr()


@pytest.mark.laurel_only
def test_verbosity_2_debug(serve):
    srv = serve(APP, "-v", "2")
    assert srv.request("GET", "/dbg").status == 200
    srv.stop()
    assert "DEBUG" in srv.stderr()
