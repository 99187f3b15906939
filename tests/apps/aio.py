"""asyncio integration: each route reports what it observed from inside the server's loop.
Unknown paths fall through to tests.apps.basic (so /result, /seen work here too)."""

import asyncio
import contextvars
import sys
import threading
import time

from asgiref.sync import async_to_sync, sync_to_async

from tests.apps import basic
from tests.apps.basic import RESULTS, query, read_body, send_json

REQUEST_ID = contextvars.ContextVar("request_id", default=None)


def _thread():
    t = threading.current_thread()
    return {"name": t.name, "ident": t.ident}


async def current_task(q):
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    before = id(task)
    await asyncio.sleep(float(q.get("t", "0")))
    after = asyncio.current_task()
    return {
        "is_task": isinstance(task, asyncio.Task),
        "task_id": before,
        "same_task_after_await": after is task,
        "task_done": task.done() if task else None,
        "loop_id": id(loop),
        "loop_running": loop.is_running(),
        "get_event_loop_is_running_loop": asyncio.get_event_loop() is loop,
        "in_all_tasks": task in asyncio.all_tasks(loop),
        "thread": _thread(),
    }


async def taskgroup(q):
    async def square(i):
        await asyncio.sleep(0.02 * (3 - i))
        return i * i

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(square(i)) for i in range(3)]
    results = [t.result() for t in tasks]

    async def fail():
        await asyncio.sleep(0.01)
        raise ValueError("tg-fail")

    async def long():
        await asyncio.sleep(5)

    caught = None
    t0 = time.monotonic()
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(fail())
            sibling = tg.create_task(long())
    except* ValueError as eg:
        caught = [str(e) for e in eg.exceptions]
    return {"results": results, "caught": caught, "sibling_cancelled": sibling.cancelled(),
            "elapsed": time.monotonic() - t0}


async def timeout(q):
    t0 = time.monotonic()
    timed_out = False
    try:
        async with asyncio.timeout(0.1):
            await asyncio.sleep(2)
    except TimeoutError:
        timed_out = True
    e1 = time.monotonic() - t0
    t0 = time.monotonic()
    wf = False
    try:
        await asyncio.wait_for(asyncio.sleep(2), 0.1)
    except asyncio.TimeoutError:
        wf = True
    return {"timed_out": timed_out, "elapsed": e1, "wait_for_timed_out": wf,
            "wait_for_elapsed": time.monotonic() - t0}


async def executor(q):
    loop = asyncio.get_running_loop()
    res = await loop.run_in_executor(None, _thread)
    res2 = await asyncio.to_thread(_thread)
    return {"executor_thread": res, "to_thread": res2, "loop_thread": _thread(),
            "max_workers": getattr(getattr(loop, "_default_executor", None), "_max_workers",
                                   None)}


async def threadsafe(q):
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def worker():
        time.sleep(0.05)
        loop.call_soon_threadsafe(fut.set_result, ("from-thread", _thread()))

    threading.Thread(target=worker, name="aio-test-worker").start()
    t0 = time.monotonic()
    value, thread = await asyncio.wait_for(fut, 3)
    # run_coroutine_threadsafe from a thread too
    def worker2():
        async def coro():
            return id(asyncio.get_running_loop())
        return asyncio.run_coroutine_threadsafe(coro(), loop).result(3)
    loop_seen = await loop.run_in_executor(None, worker2)
    return {"value": value, "thread": thread, "elapsed": time.monotonic() - t0,
            "run_coroutine_threadsafe_loop_ok": loop_seen == id(loop)}


async def asgiref_sync(q):
    loop = asyncio.get_running_loop()
    loop_thread = _thread()
    s1 = await sync_to_async(_thread, thread_sensitive=True)()
    s2 = await sync_to_async(_thread, thread_sensitive=True)()
    s3 = await sync_to_async(_thread, thread_sensitive=False)()

    async def inner():
        return {"loop_id": id(asyncio.get_running_loop()), "thread": _thread(),
                "nested_sync": await sync_to_async(_thread, thread_sensitive=True)()}

    def outer():
        return {"outer_thread": _thread(), "inner": async_to_sync(inner)()}

    nested = await sync_to_async(outer, thread_sensitive=True)()
    return {"loop_id": id(loop), "loop_thread": loop_thread, "sensitive_1": s1,
            "sensitive_2": s2, "insensitive": s3, "nested": nested}


async def background(q):
    key = q["id"]

    async def later():
        await asyncio.sleep(0.2)
        RESULTS[key] = {"ran": True, "task_is_task": isinstance(asyncio.current_task(),
                                                                asyncio.Task)}

    loop = asyncio.get_running_loop()
    task = loop.create_task(later())
    background.tasks.add(task)
    task.add_done_callback(background.tasks.discard)
    return {"scheduled": True}


background.tasks = set()


async def contextvar(q):
    REQUEST_ID.set(q["id"])
    await asyncio.sleep(float(q.get("t", "0.2")))
    return {"id": q["id"], "seen": REQUEST_ID.get()}


async def sleep(q):
    t0 = time.monotonic()
    await asyncio.sleep(float(q.get("t", "0.5")))
    return {"slept": time.monotonic() - t0, "task_id": id(asyncio.current_task())}


# ---- the sync/async boundary (tests/http/test_boundary.py) ----

SEEN_IN_SYNC = contextvars.ContextVar("seen_in_sync", default=None)
SET_IN_SYNC = contextvars.ContextVar("set_in_sync", default=None)


async def boundary_context(q):
    SEEN_IN_SYNC.set(q["id"])

    def sync():
        SET_IN_SYNC.set("from-sync-" + q["id"])
        return SEEN_IN_SYNC.get()

    saw = await sync_to_async(sync, thread_sensitive=True)()
    return {"sync_saw": saw, "async_saw_after": SET_IN_SYNC.get()}


async def boundary_raise(q):
    def sync_that_fails():
        raise ValueError("boom from sync")

    try:
        await sync_to_async(sync_that_fails, thread_sensitive=True)()
    except ValueError as e:
        import traceback
        frames = [f.name for f in traceback.extract_tb(e.__traceback__)]
        return {"type": type(e).__name__, "msg": str(e), "frames": frames}
    return {"type": None}


async def boundary_cancel(q):
    key = q["id"]

    def slow():
        t0 = time.monotonic()
        time.sleep(float(q.get("t", "0.3")))
        RESULTS[key] = {"finished": True, "thread": _thread()["ident"],
                        "slept": time.monotonic() - t0}
        return "result nobody takes"

    task = asyncio.get_running_loop().create_task(
        sync_to_async(slow, thread_sensitive=True)())
    await asyncio.sleep(0.05)
    task.cancel()
    try:
        await task
        cancelled = False
    except asyncio.CancelledError:
        cancelled = True
    # the thread finishes slow() first; the next thread-sensitive call runs after it
    after = await sync_to_async(_thread, thread_sensitive=True)()
    return {"cancelled": cancelled, "next_thread": after["ident"],
            "finished_before_next": key in RESULTS}


async def boundary_block(q):
    await sync_to_async(time.sleep, thread_sensitive=True)(float(q.get("t", "1")))
    return {"blocked": True}


async def boundary_default_executor(q):
    loop = asyncio.get_running_loop()
    n = int(q.get("n", "6"))
    t0 = time.monotonic()

    def job():
        time.sleep(float(q.get("t", "0.2")))
        return _thread()

    threads = await asyncio.gather(*[loop.run_in_executor(None, job) for _ in range(n)])
    return {"threads": threads, "elapsed": time.monotonic() - t0,
            "max_workers": loop._default_executor._max_workers}


async def boundary_custom_executor(q):
    import concurrent.futures

    class OwnThreadExecutor(concurrent.futures.Executor):
        """Not a ThreadPoolExecutor: asyncio's own run_in_executor path serves it."""

        def submit(self, fn, *args):
            f = concurrent.futures.Future()

            def run():
                f.set_result(fn(*args))

            threading.Thread(target=run, name="own-executor-thread").start()
            return f

    res = await asyncio.get_running_loop().run_in_executor(OwnThreadExecutor(), _thread)
    return {"thread": res}


async def boundary_sync_sleep(q):
    t = float(q.get("t", "1"))
    await sync_to_async(time.sleep, thread_sensitive=True)(t)
    RESULTS[q.get("id", "sync-sleep")] = {"done": True}
    return {"slept": t}


async def modules(q):
    return {"django": sorted(m for m in sys.modules if m.split(".")[0] == "django")}


ROUTES = {
    "/modules": modules,
    "/boundary/context": boundary_context,
    "/boundary/raise": boundary_raise,
    "/boundary/cancel": boundary_cancel,
    "/boundary/block": boundary_block,
    "/boundary/default-executor": boundary_default_executor,
    "/boundary/custom-executor": boundary_custom_executor,
    "/boundary/sync-sleep": boundary_sync_sleep,
    "/current-task": current_task,
    "/taskgroup": taskgroup,
    "/timeout": timeout,
    "/executor": executor,
    "/threadsafe": threadsafe,
    "/asgiref": asgiref_sync,
    "/background": background,
    "/contextvar": contextvar,
    "/sleep": sleep,
}


async def app(scope, receive, send):
    if scope["type"] == "http" and scope["path"] in ROUTES:
        await read_body(receive)
        try:
            res = await ROUTES[scope["path"]](query(scope))
            status = 200
        except Exception as e:  # report, so a failure is readable in the test
            res, status = {"error": f"{type(e).__name__}: {e}"}, 500
        await send_json(send, res, status=status)
        return
    await basic.app(scope, receive, send)
