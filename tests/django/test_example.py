"""The Django example (examples/notifications) served by the server under test:
``laurel notifications.asgi:application`` run from examples/notifications."""

import hashlib
import json
import os

import pytest

from conftest import REPO, _Factory

EXAMPLE = REPO / "examples" / "notifications"
APP = "notifications.asgi:application"

pytestmark = pytest.mark.skipif(not (EXAMPLE / "notifications").is_dir(),
                                reason="examples/notifications does not exist yet")


@pytest.fixture(scope="module")
def django_server(tmp_path_factory):
    factory = _Factory(tmp_path_factory.mktemp("django"))
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    srv = factory(APP, cwd=EXAMPLE, env=env)
    srv.env.pop("DJANGO_SETTINGS_MODULE", None)
    yield srv
    problems = factory.finalize()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_index_renders_template(django_server):
    r = django_server.request("GET", "/")
    assert r.status == 200, r.body[:500]
    assert (r.header("content-type") or "").startswith("text/html")
    assert b"Hello from laurel" in r.body


@pytest.mark.parametrize("size", [0, 11, 3 * 1024 * 1024])
def test_echo_post(django_server, size):
    body = os.urandom(size)
    r = django_server.request("POST", "/echo/", body=body,
                              headers={"Content-Type": "application/octet-stream"},
                              timeout=30)
    # (a 400 for the 3 MB body is Django's DATA_UPLOAD_MAX_MEMORY_SIZE, 2.5 MB by
    # default: the example's settings must allow it)
    assert r.status == 200, r.body[:500]
    assert json.loads(r.body) == {"method": "POST", "length": size,
                                  "sha256": hashlib.sha256(body).hexdigest()}


def test_echo_chunked_post(django_server):
    """A chunked request body (no Content-Length) reaches the view whole."""
    from conftest import req
    parts = [b"a" * 1000, b"b" * 70000, b"c"]
    data = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    r = django_server.raw_request(req("/echo/", method=b"POST", host=b"localhost",
                                      headers=b"Transfer-Encoding: chunked\r\n", body=data))
    assert r.status == 200, r
    whole = b"".join(parts)
    assert r.json()["length"] == len(whole)
    assert r.json()["sha256"] == hashlib.sha256(whole).hexdigest()


def test_echo_rejects_get(django_server):
    r = django_server.request("GET", "/echo/")
    assert r.status == 405


def test_async_view(django_server):
    r = django_server.request("GET", "/async/")
    assert r.status == 200
    assert json.loads(r.body)["async"] is True


def test_sync_view_runs_off_the_loop_thread(django_server):
    a = json.loads(django_server.request("GET", "/sync/").body)
    b = json.loads(django_server.request("GET", "/sync/").body)
    assert a["sync"] is True
    assert isinstance(a["thread"], str) and a["thread"]
    assert a["thread"] != "MainThread"
    # thread-sensitive: every sync view runs in the same thread
    assert a["thread"] == b["thread"]


def test_not_found(django_server):
    r = django_server.request("GET", "/no-such-page/")
    assert r.status == 404
