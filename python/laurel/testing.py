"""Live-server tests on laurel: the real ``laurel`` executable serves the test case's
application, where Channels' ``ChannelsLiveServerTestCase`` runs daphne.

* :class:`LaurelProcess`: a drop-in for ``ChannelsLiveServerTestCase.ProtocolServerProcess``
  (Channels 4.0 uses ``daphne.testing.DaphneProcess``): the same constructor
  ``(host, get_application, kwargs=None, setup=None, teardown=None)`` and the same
  ``port`` (``multiprocessing.Value``), ``ready`` (Event), ``errors`` (Queue),
  ``start()``, ``terminate()``, ``join()``.
* :class:`LaurelLiveServerTestCase`: ``ChannelsLiveServerTestCase`` with
  ``ProtocolServerProcess = LaurelProcess``, which also fails the test at once, with
  the server's traceback, when the server cannot start.

How the application gets to laurel: laurel loads ``module:attribute``, not a Python
object, so ``start()`` pickles ``get_application`` (Channels' ``make_application``
partial is picklable by design), ``setup``/``teardown`` and the test process's current
settings, and runs ``laurel --fd N laurel._live:application``; ``laurel._live`` applies
the settings before ``django.setup()`` and calls ``get_application()`` inside laurel.
The settings carry the test database names (Django changes ``DATABASES[...]["NAME"]``
when it creates the test databases), DEBUG=False, the ALLOWED_HOSTS the test runner
and the test case add, and any ``override_settings`` in force: what daphne's forked
process would inherit. Other in-memory state (mocks, the test's channel layer) is not
shared, as with daphne.

The socket is bound here (``port`` is known before laurel starts) and handed over with
``--fd``; ``ready`` is set once laurel has built the application. If laurel cannot
start, the error goes to ``errors`` as ``(exception, traceback text)`` and ``ready`` is
set too, so that nothing waits forever.

SQLite: as with daphne, the test database must be a file shared by both processes:
``DATABASES["default"]["TEST"] = {"NAME": "/tmp/test-db.sqlite3"}`` (Channels refuses
in-memory databases).
"""

import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading

from laurel import _launch, _live

try:
    from channels.testing import ChannelsLiveServerTestCase
except ImportError:  # pragma: no cover - Channels (or daphne, which it imports) missing
    ChannelsLiveServerTestCase = None

__all__ = ["LaurelProcess", "LaurelLiveServerTestCase"]

# daphne.server.Server keyword arguments -> laurel options. None: accepted, no effect.
_DAPHNE_KWARGS = {
    "http_timeout": "-t",
    "websocket_timeout": "--websocket_timeout",
    "websocket_connect_timeout": "--websocket_connect_timeout",
    "websocket_handshake_timeout": "--websocket_connect_timeout",
    "ping_interval": "--ping-interval",
    "ping_timeout": "--ping-timeout",
    "application_close_timeout": "--application-close-timeout",
    "root_path": "--root-path",
    "server_name": "--server-name",
    "verbosity": "-v",
    "proxy_forwarded_address_header": "--proxy-headers-host",
    "proxy_forwarded_port_header": "--proxy-headers-port",
    "proxy_forwarded_proto_header": None,  # laurel trusts X-Forwarded-Proto with --proxy-headers
    "request_buffer_size": None,
}


def server_args(kwargs):
    """laurel arguments for DaphneProcess-style ``kwargs``; ``laurel_args`` (a list)
    is passed as it is. TypeError for anything else."""
    args, proxy = [], False
    for key, value in kwargs.items():
        if key == "laurel_args":
            args += [str(a) for a in value]
            continue
        if key not in _DAPHNE_KWARGS:
            raise TypeError(f"LaurelProcess: unknown server option {key!r}")
        flag = _DAPHNE_KWARGS[key]
        if key.startswith("proxy_forwarded_") and value:
            proxy = True
        if flag is None or value is None:
            continue
        args += [flag, str(value)]
    if proxy:
        args.insert(0, "--proxy-headers")
    for arg in args:
        if _launch.listener_flag(arg):
            raise TypeError(f"LaurelProcess: {arg!r}: the listener is the test's socket")
    return args


def _settings_snapshot():
    """(settings module or None, {NAME: pickled value}), or (None, None) when Django
    is not set up in this process."""
    try:
        from django.conf import settings
    except ImportError:
        return None, None
    if not settings.configured:
        return None, None
    wrapped = settings._wrapped  # not LazySettings: no STATIC_URL prefixing, no warnings
    values = {}
    for name in dir(wrapped):
        if not name.isupper() or name == "SETTINGS_MODULE":
            continue
        try:
            values[name] = pickle.dumps(getattr(wrapped, name))
        except Exception:  # noqa: BLE001 - a value that does not pickle stays the module's
            continue
    # Under override_settings, _wrapped is a UserSettingsHolder over the real Settings.
    module, obj = None, wrapped
    while not module and obj is not None:
        module = getattr(obj, "SETTINGS_MODULE", None)
        obj = getattr(obj, "default_settings", None)
    return module, values


class LaurelProcess:
    """Runs ``laurel`` serving ``get_application()`` on ``host`` (a free port)."""

    #: laurel -v: 0 keeps the test output free of the access log; warnings, errors
    #: and the application's tracebacks still show on stderr.
    verbosity = 0
    #: laurel --graceful-timeout: terminate() lets in-flight requests finish this long.
    graceful_timeout = 5
    #: seconds join() waits after terminate() before it kills laurel.
    kill_timeout = 20
    #: extra laurel arguments for every instance (see also kwargs["laurel_args"]).
    laurel_args = ()
    app_path = "laurel._live:application"

    def __init__(self, host, get_application, kwargs=None, setup=None, teardown=None):
        self.host = host
        self.get_application = get_application
        self.kwargs = dict(kwargs or {})
        self.setup = setup
        self.teardown = teardown
        self.port = multiprocessing.Value("i")
        self.ready = multiprocessing.Event()
        self.errors = multiprocessing.Queue()
        self.failure = None  # (exception, traceback) when laurel could not start
        self.name = type(self).__name__
        self.daemon = True
        self.proc = None
        self._args = server_args(self.kwargs)
        self._tmp = None
        self._watcher = None

    # -- multiprocessing.Process-like interface

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def exitcode(self):
        return self.proc.poll() if self.proc else None

    def is_alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        if self.proc is not None:
            raise AssertionError("cannot start a process twice")
        binary = _launch.find_laurel()
        try:
            factory = pickle.dumps({"get_application": self.get_application,
                                    "setup": self.setup, "teardown": self.teardown})
        except Exception as exc:
            raise TypeError(
                "LaurelProcess needs get_application, setup and teardown that pickle "
                "(module-level functions, or functools.partial of them), because laurel "
                f"builds the application in its own process: {exc!r}"
            ) from exc
        settings_module, settings_values = _settings_snapshot()
        self._tmp = tempfile.mkdtemp(prefix="laurel-live-")
        payload_path = os.path.join(self._tmp, "payload.pickle")
        with open(payload_path, "wb") as f:
            pickle.dump({"factory": factory, "settings_module": settings_module,
                         "settings": settings_values}, f)

        sock = _launch.listen(self.host, 0)
        read_fd, write_fd = os.pipe()
        try:
            self.port.value = sock.getsockname()[1]
            argv = [binary, "--fd", str(sock.fileno()), "-v", str(self.verbosity),
                    "--graceful-timeout", str(self.graceful_timeout),
                    *self._args, *[str(a) for a in self.laurel_args], self.app_path]
            env = _launch.child_env({_live.PAYLOAD_ENV: payload_path,
                                     _live.REPORT_FD_ENV: str(write_fd)})
            self.proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL,
                pass_fds=(sock.fileno(), write_fd),
                # PR_SET_PDEATHSIG follows the thread that forks: only the main thread
                # lives as long as this process.
                preexec_fn=(_launch.die_with_parent()
                            if threading.current_thread() is threading.main_thread()
                            else None),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            # laurel has its copies; once it exits, connections are refused, not queued.
            os.close(write_fd)
            sock.close()
        self._watcher = threading.Thread(target=self._watch, args=(read_fd,),
                                         name=f"{self.name}-ready", daemon=True)
        self._watcher.start()

    def _watch(self, read_fd):
        """Waits for laurel._live's report (or the pipe closing when laurel exits)."""
        chunks = []
        with os.fdopen(read_fd, "rb") as pipe:
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        message = None
        if chunks:
            try:
                message = pickle.loads(b"".join(chunks))
            except Exception as exc:  # noqa: BLE001
                message = ("error", None, f"unreadable report from laurel: {exc!r}")
        if message is None:
            try:
                rc = self.proc.wait(10)
            except subprocess.TimeoutExpired:
                rc = None
            message = ("error", None,
                       f"laurel exited with status {rc} before it served the application "
                       "(its messages are on stderr)")
        kind, exc, text = message
        if kind != "ready":
            if exc is None:
                exc = RuntimeError(text.strip().splitlines()[-1] if text else "laurel failed")
            self.failure = (exc, text)
            self.errors.put((exc, text))
        self.ready.set()

    def terminate(self):
        """SIGTERM: laurel stops accepting, finishes in-flight requests (up to
        graceful_timeout), closes WebSockets with 1012 and exits."""
        if self.is_alive():
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def kill(self):
        if self.is_alive():
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass

    def join(self, timeout=None):
        """Waits for laurel to exit (at most ``timeout`` seconds). Without a timeout a
        laurel still running kill_timeout seconds after terminate() is killed, so that
        a stuck server cannot hang the test run."""
        if self.proc is None:
            return
        try:
            self.proc.wait(self.kill_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            if timeout is not None:
                return
            print(f"{self.name}: laurel (pid {self.proc.pid}) still running "
                  f"{self.kill_timeout}s after SIGTERM; killing it", file=sys.stderr)
            self.proc.kill()
            self.proc.wait()
        self._cleanup()

    def close(self):
        if self.is_alive():
            raise ValueError("Cannot close a process while it is still running")
        self._cleanup()

    def _cleanup(self):
        if self._watcher is not None:
            self._watcher.join(5)
        if self._tmp:
            import shutil

            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __repr__(self):
        state = ("initial" if self.proc is None else
                 "started" if self.is_alive() else f"stopped exitcode={self.exitcode}")
        return f"<{self.name} {state} {self.host}:{self.port.value}>"


if ChannelsLiveServerTestCase is not None:

    class LaurelLiveServerTestCase(ChannelsLiveServerTestCase):
        """ChannelsLiveServerTestCase on laurel. ``live_server_url`` and
        ``live_server_ws_url`` work as before; a server that cannot start fails the
        test with its traceback instead of leaving it to time out."""

        ProtocolServerProcess = LaurelProcess

        def _pre_setup(self):
            super()._pre_setup()
            failure = getattr(self._server_process, "failure", None)
            if failure is not None:
                exc, text = failure
                try:
                    self._post_teardown()
                finally:
                    raise RuntimeError(f"laurel did not start:\n{text}") from exc

else:  # pragma: no cover

    class LaurelLiveServerTestCase:  # noqa: D101 - placeholder that explains itself
        def __init__(self, *args, **kwargs):
            raise ImportError("LaurelLiveServerTestCase needs Channels "
                              "(channels.testing.ChannelsLiveServerTestCase)")
