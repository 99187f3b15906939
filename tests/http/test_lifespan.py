"""ASGI lifespan (asgi.md "Lifespan", cli.md --lifespan)."""

import json
import signal
import time

import pytest

pytestmark = pytest.mark.servers("laurel", "uvicorn")  # daphne 4.0 has no lifespan


@pytest.fixture
def events(tmp_path):
    path = tmp_path / "lifespan.log"

    def read(wait_for=None, timeout=5):
        """The events so far; with wait_for, first waits until that line is there."""
        deadline = time.monotonic() + timeout
        while True:
            lines = path.read_text().splitlines() if path.exists() else []
            if wait_for is None or wait_for in lines or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)

    read.path = path
    read.env = {"LAUREL_TEST_LIFESPAN_FILE": str(path)}
    return read


def test_startup_before_serving_and_shutdown_on_exit(serve, events):
    srv = serve("tests.apps.lifespan:app", env=events.env)
    r = srv.request("GET", "/hello")
    assert r.status == 200
    lines = events()
    # no request is served before startup has completed
    assert "startup" in lines and lines.index("startup") < lines.index("http /hello")
    assert "shutdown" not in lines
    assert srv.stop() == 0
    lines = events()
    assert lines[-1] == "shutdown"
    assert lines.count("startup") == 1 and lines.count("shutdown") == 1


@pytest.mark.laurel_only
def test_lifespan_scope(serve, events):
    serve("tests.apps.lifespan:app", env=events.env)
    scope_line = [ln for ln in events("startup") if ln.startswith("scope ")][0]
    d = json.loads(scope_line[6:])
    assert "type" in d["keys"] and "asgi" in d["keys"] and "state" in d["keys"]
    assert d["asgi"]["version"] == "3.0"
    assert d["state_type"] == "dict"


@pytest.mark.laurel_only
def test_state_is_shallow_copy_per_request(serve, events):
    srv = serve("tests.apps.lifespan:app", env=events.env)
    st = srv.get_json("/state")["state"]
    assert st["name"] == "orig" and st["items"] == [] and isinstance(st["pid"], int)
    after = srv.get_json("/mutate")["state"]
    assert after["name"] == "changed" and after["added"] is True and after["items"] == [0]
    st = srv.get_json("/state")["state"]
    # rebinding and new keys stay in that request's copy...
    assert st["name"] == "orig"
    assert "added" not in st
    # ...while the objects inside are shared (a shallow copy)
    assert st["items"] == [0]
    assert srv.get_json("/mutate")["state"]["items"] == [0, 1]


def test_startup_failed_exits_nonzero_with_message(serve, events):
    srv = serve("tests.apps.lifespan:startup_failed", env=events.env, wait=False)
    rc = srv.wait_exit(15)
    assert rc not in (0, None)
    assert "startup failed: db-unreachable-4821" in srv.stderr()
    assert "startup" in events("startup")


def test_auto_app_raising_on_lifespan_keeps_serving(serve, events):
    """An HTTP-only app (like Django's handler) raises on the lifespan scope: lifespan is
    taken as unsupported and the server serves."""
    srv = serve("tests.apps.lifespan:http_only", env=events.env)
    r = srv.request("GET", "/x")
    assert r.status == 200
    assert "rejected lifespan" in events("rejected lifespan")
    assert srv.stop() == 0


@pytest.mark.laurel_only
def test_auto_unsupported_lifespan_not_logged_as_error(serve, events):
    """"logged at debug level": no traceback or ERROR at the default verbosity."""
    srv = serve("tests.apps.lifespan:http_only", env=events.env)
    assert srv.request("GET", "/x").status == 200
    err = srv.stderr()
    assert "Traceback" not in err
    assert "ERROR" not in err


def test_auto_app_raising_in_startup_keeps_serving(serve, events):
    srv = serve("tests.apps.lifespan:raise_in_startup", env=events.env)
    assert srv.request("GET", "/x").status == 200
    assert "startup" in events("startup")


def test_lifespan_off(serve, events):
    srv = serve("tests.apps.lifespan:app", "--lifespan", "off", env=events.env)
    r = srv.request("GET", "/y")
    assert r.status == 200
    assert json.loads(r.body)["has_state"] is False
    assert srv.stop() == 0
    assert events() == ["http /y"]


def test_lifespan_on_supported(serve, events):
    srv = serve("tests.apps.lifespan:app", "--lifespan", "on", env=events.env)
    assert srv.request("GET", "/z").status == 200
    assert srv.stop() == 0
    assert events()[-1] == "shutdown"


def test_lifespan_on_app_raising_exits_nonzero(serve, events):
    """With --lifespan on, an app that cannot do lifespan is a startup failure."""
    srv = serve("tests.apps.lifespan:http_only", "--lifespan", "on", env=events.env,
                wait=False)
    rc = srv.wait_exit(15)
    assert rc not in (0, None)


@pytest.mark.servers("laurel", "uvicorn", "daphne")
def test_django_app_keeps_serving(serve):
    """Django's ASGIHandler raises on the lifespan scope (auto mode goes on)."""
    srv = serve("tests.apps.djangoapp:application")
    r = srv.request("GET", "/async/")
    assert r.status == 200 and json.loads(r.body)["async"] is True
    r = srv.request("POST", "/sync/", body=b"12345")
    assert r.status == 200
    d = json.loads(r.body)
    assert d["sync"] is True and d["length"] == 5 and d["method"] == "POST"


@pytest.mark.laurel_only
def test_shutdown_runs_on_sigint(serve, events):
    srv = serve("tests.apps.lifespan:app", env=events.env)
    assert srv.stop(signal.SIGINT) == 0
    assert events()[-1] == "shutdown"
