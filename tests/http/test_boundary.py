"""The sync/async boundary on laurel's loop (asgi.md "Application instances"): asgiref's
sync_to_async and loop.run_in_executor, which laurel runs on its own executor threads
(src/py/executor.c), keep asgiref's and asyncio's semantics."""

import json
import signal
import threading
import time
import uuid

import pytest

from conftest import _Factory, kind


@pytest.fixture(scope="module")
def aio(tmp_path_factory):
    factory = _Factory(tmp_path_factory.mktemp("boundary"))
    srv = factory("tests.apps.aio:app")
    yield srv
    problems = factory.finalize()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_contextvars_flow_both_ways(aio):
    key = uuid.uuid4().hex[:8]
    d = aio.get_json(f"/boundary/context?id={key}")
    assert d == {"sync_saw": key, "async_saw_after": "from-sync-" + key}


def test_exception_from_sync_code_propagates_with_its_traceback(aio):
    d = aio.get_json("/boundary/raise")
    assert d["type"] == "ValueError" and d["msg"] == "boom from sync"
    assert "sync_that_fails" in d["frames"]


def test_cancelled_caller_lets_the_sync_call_finish_in_its_thread(aio):
    key = uuid.uuid4().hex[:8]
    d = aio.get_json(f"/boundary/cancel?id={key}&t=0.4")
    assert d["cancelled"] is True
    res = aio.result(key)
    assert res["finished"] is True and res["slept"] >= 0.35
    # thread-sensitive: the next call ran in that same thread, after it was free
    assert d["next_thread"] == res["thread"]
    assert d["finished_before_next"] is True


def test_blocked_executor_does_not_stop_other_connections(aio):
    done = {}

    def blocker():
        r = aio.request("GET", "/boundary/block?t=1.5", timeout=10)
        done["status"] = r.status

    t = threading.Thread(target=blocker)
    t.start()
    time.sleep(0.2)
    for _ in range(3):
        t0 = time.monotonic()
        assert aio.get_json("/current-task")["is_task"] is True
        assert time.monotonic() - t0 < 0.5, "an async request waited for the sync thread"
    t.join(10)
    assert done == {"status": 200}


def test_run_in_executor_with_another_executor_type(aio):
    d = aio.get_json("/boundary/custom-executor")
    assert d["thread"]["name"] == "own-executor-thread"


@pytest.mark.servers("laurel", "daphne")  # uvicorn on uvloop ignores ASGI_THREADS
def test_asgi_threads_sizes_the_default_executor(serve):
    srv = serve("tests.apps.aio:app", env={"ASGI_THREADS": "3"})
    d = srv.get_json("/boundary/default-executor?n=6&t=0.2")
    assert d["max_workers"] == 3
    idents = {t["ident"] for t in d["threads"]}
    assert len(idents) == 3, d["threads"]
    assert 0.38 <= d["elapsed"] < 2, d["elapsed"]  # 6 jobs of 0.2 s on 3 threads
    if kind() == "laurel":  # named as the ThreadPoolExecutor would name its own
        assert all(t["name"].startswith("ThreadPoolExecutor-") for t in d["threads"])


@pytest.mark.servers("laurel", "uvicorn")
def test_graceful_shutdown_lets_running_sync_work_finish(serve):
    srv = serve("tests.apps.aio:app")
    out = {}

    def call():
        r = srv.request("GET", "/boundary/sync-sleep?t=1", timeout=10)
        out["status"], out["body"] = r.status, json.loads(r.body)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.3)
    rc = srv.stop(signal.SIGTERM)
    t.join(10)
    assert rc == 0
    assert out == {"status": 200, "body": {"slept": 1.0}}


@pytest.mark.laurel_only
def test_graceful_shutdown_does_not_wait_for_sync_work_past_the_timeout(serve):
    srv = serve("tests.apps.aio:app", "--graceful-timeout", "1")

    def call():
        try:
            srv.request("GET", "/boundary/sync-sleep?t=8", timeout=15)
        except OSError:
            pass  # the server closed it at the graceful timeout: expected

    t = threading.Thread(target=call, daemon=True)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    rc = srv.wait_stopped(6)
    took = time.monotonic() - t0
    assert rc == 0, srv.stderr()[-2000:]
    assert took < 3.5, took
    assert "still running sync work are abandoned" in srv.stderr()
