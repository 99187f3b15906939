"""The Django fast path (docs/django.md "Sync views at one crossing"): a request for a
sync view runs its middleware and view in one thread-sensitive call; async views,
and projects the adapter does not fit, take Django's own ASGI path."""

import json
import threading
import time

import pytest

pytestmark = pytest.mark.laurel_only

APP = "tests.apps.django_fast:application"


def trail(r):
    return json.loads(r.header("x-trail"))


@pytest.mark.parametrize("app", [APP, "tests.apps.django_fast:router"])
def test_sync_view_and_its_middleware_run_in_one_thread_call(serve, app):
    srv = serve(app, "-v", "1")
    r = srv.request("POST", "/sync/", body=b"a=1")
    assert r.status == 200
    d = json.loads(r.body)
    assert d["method"] == "POST" and d["body"] == "a=1" and d["path"] == "/sync/"
    threads = {t for _, t in trail(r)}
    assert [step for step, _ in d["trail"]] == ["process_request", "process_view", "view"]
    assert len(threads) == 1 and "MainThread" not in threads, trail(r)
    assert "Django fast path: sync views run" in srv.stderr()
    # request_started before, request_finished after each request
    before = json.loads(srv.request("GET", "/sync/").body)["counts"]
    after = json.loads(srv.request("GET", "/sync/").body)["counts"]
    assert after["started"] == before["started"] + 1
    assert after["finished"] == before["finished"] + 1


def test_async_view_runs_on_the_loop_without_holding_the_sync_thread(serve):
    srv = serve(APP)
    out = {}

    def long_async():
        out["r"] = srv.request("GET", "/async/?t=1.5", timeout=10)

    t = threading.Thread(target=long_async)
    t.start()
    time.sleep(0.2)
    for _ in range(3):  # sync views are not queued behind the sleeping async view
        t0 = time.monotonic()
        assert srv.request("GET", "/sync/").status == 200
        assert time.monotonic() - t0 < 0.5
    t.join(10)
    d = json.loads(out["r"].body)
    assert d == {"async": True, "thread": "MainThread", "task": True}
    # Django's own path: the middleware hooks ran in the sync thread, one call each
    assert {s for s, _ in trail(out["r"])} == {"process_request", "process_view",
                                                "process_response"}


def test_exception_in_a_sync_view_gives_500_and_a_logged_traceback(serve):
    srv = serve(APP, "-v", "1")
    r = srv.request("GET", "/raise/")
    assert r.status == 500
    assert srv.wait_output("fast path view failure", "stderr")
    assert "Traceback" in srv.stderr()
    assert srv.request("GET", "/sync/").status == 200


def test_not_found_and_streaming(serve):
    srv = serve(APP)
    assert srv.request("GET", "/nowhere/").status == 404
    r = srv.request("GET", "/stream/")
    assert r.status == 200 and r.body == b"part0\npart1\npart2\n"


def test_off_switch(serve):
    srv = serve(APP, "-v", "1", "--django-fast-path", "off")
    r = srv.request("GET", "/sync/")
    assert r.status == 200
    assert "Django fast path" not in srv.stderr()


def test_stays_off_for_a_middleware_that_cannot_run_sync(serve):
    srv = serve(APP, "-v", "1", env={"LAUREL_TEST_ASYNC_ONLY_MW": "1"})
    assert srv.request("GET", "/sync/").status == 200
    assert srv.wait_output("Django fast path off: middleware "
                           "tests.apps.django_fast.async_only cannot run sync", "stderr")


def test_concurrent_sync_views_all_served(serve):
    srv = serve(APP)
    results = []

    def one():
        results.append(srv.request("GET", "/slow/?t=0.2", timeout=10).status)

    threads = [threading.Thread(target=one) for _ in range(5)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert results == [200] * 5
    assert time.monotonic() - t0 >= 0.9  # one thread-sensitive thread: one at a time
