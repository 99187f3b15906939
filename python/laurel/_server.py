"""What the ``laurel`` executable runs once Python is up, after the listeners are bound:
load the app, run lifespan, serve until a signal, shut down gracefully."""

import asyncio
import concurrent.futures
import importlib
import logging
import os
import signal
import sys
import traceback

import _laurel

import laurel.loop

from . import django_fast
from .loop import LaurelLoop

logger = logging.getLogger("laurel.server")
access_logger = logging.getLogger("laurel.access")

LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG, 3: logging.DEBUG}


class AppLoadError(Exception):
    pass


def load_app(path):
    """``module.sub:attr.sub`` -> the object, as daphne resolves it."""
    module_name, sep, attrs = path.partition(":")
    if not sep or not module_name or not attrs:
        raise AppLoadError(
            f"application {path!r} must be in the form 'module:attribute'"
        )
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name) and (
            module_name == exc.name or module_name.startswith(exc.name + ".")
        ):
            raise AppLoadError(f"cannot import module {module_name!r}: {exc}") from exc
        raise
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError as exc:
            raise AppLoadError(
                f"module {module_name!r} has no attribute {attrs!r}: {exc}"
            ) from exc
    return obj


def single_callable(app):
    """ASGI 2 classes (``app(scope)`` returning ``coro(receive, send)``) wrapped as
    ASGI 3, the way asgiref's guarantee_single_callable does."""
    try:
        from asgiref.compatibility import guarantee_single_callable
    except ImportError:  # pragma: no cover - asgiref comes with Django
        return app
    return guarantee_single_callable(app)


def access_to_logging(text):
    """--access-log-to-logging: the access-log lines of one loop iteration (whole lines,
    each ending in a newline) to the ``laurel.access`` logger at INFO."""
    if access_logger.isEnabledFor(logging.INFO):
        for line in text[:-1].split("\n"):
            access_logger.info(line)


def app_error(what, exc, request):
    """Called from C when an app instance fails: log it with its traceback."""
    if exc is None:
        logger.error("%s (%s)", what, request)
        return
    logger.error(
        "%s (%s): %r", what, request, exc, exc_info=(type(exc), exc, exc.__traceback__)
    )


class Lifespan:
    """ASGI lifespan 2.0 (``--lifespan auto|on|off``)."""

    def __init__(self, app, loop, mode):
        self.app = app
        self.loop = loop
        self.mode = mode
        self.state = {}
        self.supported = mode != "off"
        self.queue = asyncio.Queue()
        self.startup_done = asyncio.Event()
        self.shutdown_done = asyncio.Event()
        self.failed = None
        self.task = None

    async def receive(self):
        return await self.queue.get()

    async def send(self, message):
        kind = message.get("type")
        if kind == "lifespan.startup.complete":
            self.startup_done.set()
        elif kind == "lifespan.startup.failed":
            self.failed = message.get("message", "") or "lifespan startup failed"
            self.startup_done.set()
        elif kind == "lifespan.shutdown.complete":
            self.shutdown_done.set()
        elif kind == "lifespan.shutdown.failed":
            logger.error("Lifespan shutdown failed: %s", message.get("message", ""))
            self.shutdown_done.set()
        else:
            raise RuntimeError(f"Unexpected ASGI lifespan message type {kind!r}")

    async def run(self):
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self.receive, self.send)
            if not self.startup_done.is_set():
                # Returned without answering lifespan.startup: not supported.
                if self.mode == "on":
                    self.failed = "the application returned during lifespan startup"
                else:
                    logger.debug("ASGI 'lifespan' protocol appears unsupported.")
                    self.supported = False
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if not self.startup_done.is_set() and self.mode == "auto":
                logger.debug("ASGI 'lifespan' protocol appears unsupported: %r", exc)
                self.supported = False
            else:
                logger.error(
                    "Exception in 'lifespan' protocol",
                    exc_info=(type(exc), exc, exc.__traceback__),
                )
                if not self.startup_done.is_set():
                    self.failed = f"{type(exc).__name__}: {exc}"
        finally:
            self.startup_done.set()
            self.shutdown_done.set()

    async def startup(self):
        """False when the app reported (or, with --lifespan on, caused) a failure."""
        if self.mode == "off":
            return True
        self.task = self.loop.create_task(self.run(), name="laurel-lifespan")
        await self.queue.put({"type": "lifespan.startup"})
        await self.startup_done.wait()
        if self.failed is not None:
            logger.critical("Application startup failed: %s", self.failed)
            return False
        if not self.supported:
            return True
        logger.info("Application startup complete.")
        return True

    async def shutdown(self, timeout):
        if not self.supported or self.task is None:
            return
        if not self.task.done():
            await self.queue.put({"type": "lifespan.shutdown"})
            try:
                await asyncio.wait_for(self.shutdown_done.wait(), timeout)
            except asyncio.TimeoutError:
                logger.warning("Lifespan shutdown timed out after %ss", timeout)
        logger.info("Application shutdown complete.")
        if not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    @property
    def scope_state(self):
        return self.state if self.supported else None


async def serve(app, loop, lifespan_mode, graceful_timeout):
    stop = asyncio.Event()
    signals_seen = []

    def on_signal(signum):
        now = loop.time()
        if signals_seen and signum == signals_seen[0][0] and now - signals_seen[0][1] < 1.0:
            # The same stop request twice at once (systemd signals the whole cgroup and
            # the master forwards it too): one request, not an escalation.
            return
        signals_seen.append((signum, now))
        if len(signals_seen) == 1:
            logger.info(
                "Received %s: shutting down gracefully (up to %ss)",
                signal.Signals(signum).name,
                graceful_timeout,
            )
            stop.set()
        else:
            logger.warning("Received %s again: closing everything now",
                           signal.Signals(signum).name)
            _laurel.abort_all()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    if _laurel.tls_in_use():
        # TLS certificates are read again on SIGUSR1, and on SIGHUP unless a master
        # owns SIGHUP (a worker inherits it ignored: the master's rolling restart).
        reload_on = [signal.SIGUSR1]
        if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
            reload_on.append(signal.SIGHUP)
        for signum in reload_on:
            loop.add_signal_handler(signum, _laurel.tls_reload)
        if _laurel.tls_reload_pending():  # asked for while this process was starting
            _laurel.tls_reload()
    early = _laurel.early_signal()
    if early:
        on_signal(early)

    lifespan = Lifespan(app, loop, lifespan_mode)
    if not await lifespan.startup():
        return 3, loop.time() + graceful_timeout
    _laurel.serve(app, loop, lifespan.scope_state, app_error, asyncio.Task)
    await stop.wait()

    # Graceful shutdown: no new connections; idle ones close now, busy ones after their
    # response; then the app instances still running get until the deadline.
    _laurel.stop_accepting()
    _laurel.drain()
    deadline = loop.time() + graceful_timeout
    me = asyncio.current_task()

    def others():
        return [
            t for t in asyncio.all_tasks(loop)
            if t is not me and t is not lifespan.task and not t.done()
        ]

    while (_laurel.busy() or others()) and loop.time() < deadline:
        if len(signals_seen) > 1:
            break
        await asyncio.sleep(0.02)
    if _laurel.busy() or others():
        logger.warning(
            "Graceful timeout: closing %d connection(s), cancelling %d task(s)",
            _laurel.busy(),
            len(others()),
        )
        _laurel.abort_all()
        pending = others()
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)
    await lifespan.shutdown(max(1.0, deadline - loop.time()))
    return 0, deadline


NATIVE_LAYER = "laurel.layers.ChannelLayer"
NATIVE_CORE_LAYER = "laurel.layers.RedisChannelLayer"
PUBSUB_LAYER = "channels_redis.pubsub.RedisPubSubChannelLayer"
CORE_LAYER = "channels_redis.core.RedisChannelLayer"
REPLACEABLE_LAYERS = {"channels.layers.InMemoryChannelLayer", PUBSUB_LAYER, CORE_LAYER}


def _channel_layer_settings():
    """A copy of Django's CHANNEL_LAYERS ({} when unset) for a Channels project with
    configured settings; None otherwise, or when the settings cannot be read."""
    if "channels" not in sys.modules or "django" not in sys.modules:
        return None
    try:
        from django.conf import settings

        if not settings.configured:
            return None
        return dict(getattr(settings, "CHANNEL_LAYERS", None) or {})
    except Exception as exc:  # settings that cannot be read: leave them alone
        logger.debug("channel layer settings not inspected: %r", exc)
        return None


def use_native_layer():
    """--channel-layer native: a Django Channels project whose layer is Channels'
    in-memory one (or none at all) gets laurel's native layer, same contract; one on
    channels_redis' pub/sub layer gets the native layer bridged to the same Redis hosts
    with the same prefix (the wire format is the same, so other processes still on
    channels_redis keep talking to it); one on channels_redis' core layer gets
    laurel.layers.RedisChannelLayer with the same CONFIG, which speaks the core
    layer's protocol (kept when laurel's layer refuses its hosts, saying why).
    """
    layers = _channel_layer_settings()
    if layers is None:
        return
    from django.conf import settings
    import channels.layers

    swapped = []
    if not layers:
        layers = {"default": {"BACKEND": NATIVE_LAYER}}
        swapped.append(("default", "no channel layer"))
    else:
        for alias, conf in layers.items():
            if conf.get("BACKEND") == CORE_LAYER:
                reason = _core_config_unsupported(conf.get("CONFIG") or {})
                if reason:
                    logger.info("Channel layer %r: channels_redis' core layer kept (%s)",
                                alias, reason)
                    continue
                layers[alias] = dict(conf, BACKEND=NATIVE_CORE_LAYER)
                swapped.append((alias, CORE_LAYER))
            elif conf.get("BACKEND") in REPLACEABLE_LAYERS:
                layers[alias] = dict(conf, BACKEND=NATIVE_LAYER)
                if conf["BACKEND"] == PUBSUB_LAYER:
                    config = dict(conf.get("CONFIG") or {})
                    config.setdefault("hosts", ["redis://localhost:6379"])  # its default
                    layers[alias]["CONFIG"] = config
                swapped.append((alias, conf["BACKEND"]))
    if not swapped:
        return
    settings.CHANNEL_LAYERS = layers
    channels.layers.channel_layers.backends = {}
    for alias, was in swapped:
        logger.info(
            "Channel layer %r: laurel's native %s replaces %s "
            "(--channel-layer settings keeps the configured one)",
            alias,
            {PUBSUB_LAYER: "layer, bridged through Redis,",
             CORE_LAYER: "Redis layer on channels_redis.core's protocol"}.get(
                was, "in-process layer"),
            was,
        )


def _core_config_unsupported(config):
    """Why laurel.layers.RedisChannelLayer cannot take this channels_redis core CONFIG,
    or None when it can."""
    from laurel.layers import parse_host

    hosts = config.get("hosts") or ["redis://localhost:6379"]
    if isinstance(hosts, (str, bytes)):
        return None  # the layer refuses it with channels_redis' own complaint
    for host in hosts:
        try:
            parse_host(host)
        except (ValueError, TypeError) as exc:
            return str(exc)
    return None


def start_bridged_layers():
    """Create the native layers that have Redis hosts now, so their connections are
    made (and a Redis that cannot be reached is reported) at start-up rather than at
    the first message."""
    for alias, conf in (_channel_layer_settings() or {}).items():
        if conf.get("BACKEND") == NATIVE_CORE_LAYER or (
                conf.get("BACKEND") == NATIVE_LAYER and (conf.get("CONFIG") or {}).get("hosts")):
            import channels.layers  # imported already: _channel_layer_settings checked

            channels.layers.get_channel_layer(alias)  # a bad CONFIG fails start-up here


PROCESS_LOCAL_LAYERS = {NATIVE_LAYER, "channels.layers.InMemoryChannelLayer"}


def process_local_layers():
    """Aliases of configured channel layers that only reach consumers in this process."""
    return [
        alias
        for alias, conf in (_channel_layer_settings() or {}).items()
        if conf.get("BACKEND") in PROCESS_LOCAL_LAYERS
        and not (conf.get("CONFIG") or {}).get("hosts")
    ]


def main(app_path, log_fmt, verbosity, lifespan_mode, graceful_timeout,
         application_close_timeout, channel_layer="native", workers=1,
         django_fast_path="auto"):
    logging.basicConfig(level=LEVELS.get(verbosity, logging.DEBUG), format=log_fmt)
    if _laurel.access_log_to_logging():
        _laurel.set_access_sink(access_to_logging)
    loop = LaurelLoop(server=True)
    asyncio.set_event_loop(loop)
    if verbosity >= 3:
        loop.set_debug(True)
    threads = os.environ.get("ASGI_THREADS")
    if threads:
        try:
            loop.set_default_executor(
                concurrent.futures.ThreadPoolExecutor(max_workers=int(threads))
            )
        except ValueError:
            logger.critical("ASGI_THREADS must be a whole number, not %r", threads)
            return 1
    try:
        app = single_callable(load_app(app_path))
    except AppLoadError as exc:
        traceback.print_exception(exc.__cause__ or exc)
        logger.critical("Cannot load the application: %s", exc)
        return 1
    except BaseException as exc:  # the module itself raised
        traceback.print_exc()
        logger.critical(
            "Cannot load the application %r: %s: %s", app_path, type(exc).__name__, exc
        )
        return 1
    try:
        app = django_fast.adapt(app, django_fast_path)
    except Exception as exc:  # the project's settings or middleware fail to load
        traceback.print_exc()
        logger.critical("Cannot load the application %r: %s: %s", app_path,
                        type(exc).__name__, exc)
        return 1
    if channel_layer == "native":
        use_native_layer()
    local = process_local_layers() if workers > 1 else []
    if local:
        logger.critical(
            "Refusing to start %d workers: channel layer %s is in-process, so a "
            "group_send in one worker would never reach consumers in the others. "
            "Configure a Redis-backed layer (e.g. BACKEND "
            "'laurel.layers.ChannelLayer' with CONFIG "
            "{'hosts': ['redis://127.0.0.1:6379']}) or run with --workers 1.",
            workers,
            ", ".join(repr(a) for a in local),
        )
        return 4
    try:
        start_bridged_layers()
    except Exception as exc:
        traceback.print_exc()
        logger.critical("Cannot set up the channel layer: %s: %s", type(exc).__name__, exc)
        return 1
    try:
        rc, deadline = loop.run_until_complete(
            serve(app, loop, lifespan_mode, graceful_timeout))
        _finish_sync_work(loop, deadline)
    finally:
        _laurel.close_listeners()
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
            # loop.close() restored the default handlers: a second SIGTERM during the
            # rest of the (bounded) teardown must not turn a clean exit into a kill.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdout.flush()
    return rc


def _finish_sync_work(loop, deadline):
    """Sync work still running in executor threads (a sync view whose client left, say)
    gets until the graceful deadline to finish; then the process exits without it."""
    try:
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_default_executor(),
                                                 max(0.5, deadline - loop.time())))
    except asyncio.TimeoutError:
        pass
    busy = _laurel.executor_shutdown(None, True, max(0.0, deadline - loop.time()))
    if busy:
        logger.warning("Graceful timeout: %d executor thread(s) still running sync work "
                       "are abandoned", busy)
    laurel.loop.exit_wait = 0
