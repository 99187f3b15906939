"""Application instances on a real asyncio loop (asgi.md "Application instances")."""

import json
import threading
import time
import uuid

import pytest

from conftest import _Factory


@pytest.fixture(scope="module")
def aio(tmp_path_factory):
    factory = _Factory(tmp_path_factory.mktemp("aio"))
    srv = factory("tests.apps.aio:app")
    yield srv
    problems = factory.finalize()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def parallel(srv, paths, timeout=10):
    """GETs all paths at once (one connection each); returns the JSON answers in order."""
    out = [None] * len(paths)
    errors = []

    def run(i, p):
        try:
            r = srv.request("GET", p, timeout=timeout)
            out[i] = (r.status, json.loads(r.body))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, p)) for i, p in enumerate(paths)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    assert not errors, errors
    return out


def test_current_task(aio):
    d = aio.get_json("/current-task?t=0.01")
    assert d["is_task"] is True
    assert d["same_task_after_await"] is True
    assert d["task_done"] is False
    assert d["loop_running"] is True
    assert d["get_event_loop_is_running_loop"] is True
    assert d["in_all_tasks"] is True


def test_one_task_per_request_one_loop(aio):
    res = parallel(aio, ["/current-task?t=0.3"] * 4)
    assert all(st == 200 for st, _ in res)
    assert len({d["task_id"] for _, d in res}) == 4
    assert len({d["loop_id"] for _, d in res}) == 1
    assert len({d["thread"]["ident"] for _, d in res}) == 1


def test_requests_run_concurrently(aio):
    t0 = time.monotonic()
    res = parallel(aio, ["/sleep?t=0.5"] * 8)
    elapsed = time.monotonic() - t0
    assert all(st == 200 for st, _ in res)
    assert elapsed < 1.5, f"8 x 0.5 s sleeps took {elapsed:.2f}s: not concurrent"


def test_taskgroup(aio):
    d = aio.get_json("/taskgroup")
    assert d["results"] == [0, 1, 4]
    assert d["caught"] == ["tg-fail"]
    assert d["sibling_cancelled"] is True
    assert d["elapsed"] < 1


def test_asyncio_timeout(aio):
    d = aio.get_json("/timeout")
    assert d["timed_out"] is True and d["wait_for_timed_out"] is True
    assert 0.08 <= d["elapsed"] < 1
    assert 0.08 <= d["wait_for_elapsed"] < 1


def test_run_in_executor(aio):
    d = aio.get_json("/executor")
    assert d["executor_thread"]["ident"] != d["loop_thread"]["ident"]
    assert d["to_thread"]["ident"] != d["loop_thread"]["ident"]


def test_call_soon_threadsafe(aio):
    d = aio.get_json("/threadsafe")
    assert d["value"] == "from-thread"
    assert d["thread"]["name"] == "aio-test-worker"
    assert d["elapsed"] < 1
    assert d["run_coroutine_threadsafe_loop_ok"] is True


def test_asgiref_sync_to_async_and_async_to_sync(aio):
    d = aio.get_json("/asgiref")
    loop_thread = d["loop_thread"]["ident"]
    # thread-sensitive calls share one thread, which is not the loop's
    assert d["sensitive_1"]["ident"] == d["sensitive_2"]["ident"]
    assert d["sensitive_1"]["ident"] != loop_thread
    assert d["insensitive"]["ident"] != loop_thread
    nested = d["nested"]
    # async_to_sync from a sync_to_async thread runs on the server's own loop...
    assert nested["inner"]["loop_id"] == d["loop_id"]
    assert nested["inner"]["thread"]["ident"] == loop_thread
    # ...and thread-sensitive code inside it goes back to the outer sync thread
    assert nested["inner"]["nested_sync"]["ident"] == nested["outer_thread"]["ident"]


def test_asgiref_thread_sensitive_same_thread_across_requests(aio):
    a = aio.get_json("/asgiref")
    b = aio.get_json("/asgiref")
    assert a["sensitive_1"]["ident"] == b["sensitive_1"]["ident"]


def test_background_task_outlives_response(aio):
    key = uuid.uuid4().hex[:10]
    assert aio.get_json(f"/background?id={key}") == {"scheduled": True}
    res = aio.result(key)
    assert res == {"ran": True, "task_is_task": True}


def test_contextvars_isolated_per_request(aio):
    ids = [uuid.uuid4().hex[:8] for _ in range(5)]
    res = parallel(aio, [f"/contextvar?id={i}&t=0.2" for i in ids])
    for i, (st, d) in zip(ids, res):
        assert st == 200 and d == {"id": i, "seen": i}
