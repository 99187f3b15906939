"""laurel's asyncio event loop: asyncio's SelectorEventLoop with its core in C.

What asyncio does per callback and per iteration (the ready queue, timers, call_soon,
call_later, call_soon_threadsafe, the loop's clock, run_in_executor with a
ThreadPoolExecutor) runs in C on libev (src/py/aioloop.c, src/py/executor.c); transports,
streams, subprocesses, SSL and signals are asyncio's own. The server runs its app on it.
Elsewhere it can be used like uvloop::

    import asyncio, laurel.loop
    asyncio.set_event_loop_policy(laurel.loop.EventLoopPolicy())
    # or: laurel.loop.install(); or: asyncio.run(main(), ...) with new_event_loop()

run_in_executor(executor, ...) with a concurrent.futures.ThreadPoolExecutor (exactly
that class, without an initializer) runs the call on laurel's own threads for that
executor: as many as its max_workers, named as its own would be, kept for the
executor's life (so asgiref's thread-sensitive calls always find the same thread). Work
given to such an executor through executor.submit() still runs on the executor's own
threads, and executor.shutdown(wait=True) waits for those only: await the futures that
run_in_executor returned instead.
"""

import asyncio
import threading

try:  # inside the laurel server
    import _laurel as _core
except ImportError:  # any other process
    import _laurel_loop as _core

from ._selector import LibevSelector

__all__ = ["LaurelLoop", "EventLoopPolicy", "new_event_loop", "install"]

_SelectorEventLoop = asyncio.SelectorEventLoop


class LaurelLoop(_core.LoopCore, _SelectorEventLoop):
    """asyncio's SelectorEventLoop with the core of its event loop in C, on libev."""

    def __init__(self, server=False):
        _core.LoopCore.__init__(self, server=server)
        _SelectorEventLoop.__init__(self, LibevSelector(self))

    def close(self):
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        executor = self._default_executor
        super().close()
        if executor is not None:
            _core.executor_shutdown(executor, False)
        self._core_close()

    def _do_shutdown(self, future):
        # shutdown_default_executor's worker: the executor's own threads, then ours.
        try:
            executor = self._default_executor
            executor.shutdown(wait=True)
            _core.executor_shutdown(executor, True)
            if not self.is_closed():
                self.call_soon_threadsafe(future.set_result, None)
        except Exception as ex:
            if not self.is_closed():
                self.call_soon_threadsafe(future.set_exception, ex)


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """asyncio's default policy, making LaurelLoops."""

    _loop_factory = LaurelLoop


def new_event_loop():
    return LaurelLoop()


def install():
    asyncio.set_event_loop_policy(EventLoopPolicy())


# How long the exit hook waits for executor work still running (None: until it is
# done, as concurrent.futures waits). The server sets 0 once its graceful shutdown has
# waited as long as --graceful-timeout allows.
exit_wait = None


def _at_exit():
    _core.executor_shutdown(None, True, exit_wait)


# Worker threads (daemons) end, their queued work done, before the interpreter exits.
threading._register_atexit(_at_exit)
