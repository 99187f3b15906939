"""The Django fast path (docs/django.md "Django at fewer crossings"): a request for a
sync view runs its middleware and view in one thread-sensitive call; an async view
runs between two (plain MiddlewareMixin middleware) with the same hooks, in the same
order and threads, and the same answers as Django's own ASGI path; projects the
adapter does not fit take Django's own path."""

import json
import threading
import time

import pytest

pytestmark = pytest.mark.laurel_only

APP = "tests.apps.django_fast:application"


def trail(r):
    return json.loads(r.header("x-trail"))


def crossings(srv, path):
    """sync_to_async calls between the outermost middleware's first and last hook."""
    r = srv.request("GET", path)
    assert r.status in (200, 404), (path, r.status, r.body[:200])
    return int(r.header("x-crossings"))


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
    # the middleware hooks ran in the sync thread, the view on the loop
    assert {s for s, _ in trail(out["r"])} == {"process_request", "process_view",
                                                "process_response"}
    assert "MainThread" not in {t for _, t in trail(out["r"])}
    assert out["r"].header("x-hooks") == ("process_request@thread process_view@thread "
                                          "view@loop process_response@thread")


# Every way through Django 3.2's chain around an async view (and a few sync ones):
# a hook answering or raising, the view raising (handled by process_exception or not),
# returning None, a template response and its hooks.
SCENARIOS = [
    "/async/", "/async/?act=process_request:respond", "/async/?act=process_request:raise",
    "/async/?act=process_view:respond", "/async/?act=process_view:raise",
    "/async/?act=process_response:respond", "/async/?act=process_response:raise",
    "/async/?act=process_request:raise,process_response:raise",
    "/async-raise/", "/async-raise/?act=process_exception:respond",
    "/async-raise/?act=process_exception:raise", "/async-none/",
    "/async-template/?who=me", "/async-template/?act=process_template_response:respond",
    "/async-template/?act=process_template_response:raise",
    "/async-template/?act=process_view:respond",
    "/sync-template/", "/sync-template/?act=process_view:raise", "/raise/",
    "/raise/?act=process_exception:respond", "/nowhere/",
    "/nowhere/?act=process_request:respond",
]


def test_same_answers_and_hooks_as_djangos_own_path(serve):
    fast = serve(APP, "-v", "1")
    own = serve(APP, "--django-fast-path", "off")
    assert fast.wait_output("async views between two", "stderr")
    for path in SCENARIOS:
        a, b = fast.request("GET", path), own.request("GET", path)
        assert (a.status, a.header("x-hooks"), a.body) == \
            (b.status, b.header("x-hooks"), b.body), path
    # the failures were logged as Django logs them, once each
    for text in ("process_request failure", "async view failure",
                 "process_template_response failure"):
        assert fast.stderr().count(text) == own.stderr().count(text) > 0, text


def test_crossings_per_request(serve):
    fast = serve(APP)
    own = serve(APP, "--django-fast-path", "off")
    assert crossings(fast, "/sync/") == 0  # the chain and the view: one call
    assert crossings(fast, "/async/") == 1  # before the view, and after it
    assert crossings(fast, "/async-template/") == 1
    assert crossings(own, "/sync/") >= 4 and crossings(own, "/async/") >= 4


def test_async_views_take_djangos_path_with_a_middleware_of_its_own_call(serve):
    srv = serve(APP, "-v", "1", env={"LAUREL_TEST_CALL_MW": "1"})
    assert srv.wait_output("async views through Django's own path (middleware "
                           "tests.apps.django_fast.OwnCall is not a plain "
                           "MiddlewareMixin)", "stderr")
    assert crossings(srv, "/sync/") == 0
    assert crossings(srv, "/async/") >= 4
    r = srv.request("GET", "/async/?act=process_view:raise")
    assert r.status == 500


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


def test_an_app_that_is_not_django_does_not_get_django_imported(serve):
    srv = serve("tests.apps.aio:app", "-v", "1")
    r = srv.request("GET", "/modules")
    assert r.status == 200 and json.loads(r.body) == {"django": []}
    assert "Django fast path" not in srv.stderr()


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
