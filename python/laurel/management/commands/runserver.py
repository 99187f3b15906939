"""``manage.py runserver`` through laurel: HTTP and WebSocket (the project's
``ASGI_APPLICATION``, else Django's ASGI handler), static files in DEBUG, the
autoreloader, system checks and the migrations warning, as Django's runserver has them.

Processes (with the autoreloader, the default)::

    manage.py runserver            the supervisor: binds addr:port once, keeps the
    │                              socket across reloads, forwards SIGINT/SIGTERM
    └─ manage.py runserver         RUN_MAIN=true: checks, builds the application (so
       │                           the autoreloader watches its modules), watches files
       └─ laurel --fd N laurel.django_app:application
                                   the server, on the supervisor's socket

A changed file makes the middle process exit with status 3 (Django's
``autoreload.run_with_reloader``); it stops laurel first, and the supervisor starts a
new one, which starts a new laurel. The socket stays open all along: a request made
during the restart waits in the listen queue instead of being refused. ``--noreload``
leaves out the supervisor.

laurel runs with ``PR_SET_PDEATHSIG``: if the process that started it dies without
stopping it, laurel gets SIGTERM.
"""

import atexit
import datetime
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from django.apps import apps
from django.conf import settings
from django.core.management.base import CommandError
from django.core.management.commands.runserver import Command as RunserverCommand
from django.utils import autoreload

import laurel
from laurel import _launch, django_app

APP_PATH = "laurel.django_app:application"
FD_ENV = "_LAUREL_RUNSERVER_FD"  # the supervisor's listening socket, for the reloader child
GRACEFUL_TIMEOUT = "3"  # a restart should not wait for long requests (--laurel-arg overrides)
STOP_TIMEOUT = 15  # seconds laurel gets after SIGTERM before SIGKILL
SUPERVISOR_TIMEOUT = 30  # seconds the reloader child gets after a signal before SIGKILL
BIND_ERRORS = {
    errno.EACCES: "You don't have permission to access that port.",
    errno.EADDRINUSE: "That port is already in use.",
    errno.EADDRNOTAVAIL: "That IP address can't be assigned to.",
}


class Command(RunserverCommand):
    help = ("Starts a development server (laurel: HTTP and WebSocket) that also serves "
            "static files.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._child = None
        self._stopping = False
        self._signalled = None
        self._sock = None
        self.laurel_bin = None

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--nostatic", action="store_false", dest="use_static_handler",
            help="Tells Django to NOT automatically serve static files at STATIC_URL.",
        )
        parser.add_argument(
            "--insecure", action="store_true", dest="insecure_serving",
            help="Allows serving static files even if DEBUG is False.",
        )
        parser.add_argument(
            "--laurel-arg", action="append", dest="laurel_args", default=[],
            metavar="ARG",
            help="Pass ARG on to laurel (repeatable; write it with '=', e.g. "
                 "--laurel-arg=--websocket_timeout=600). Listener options are "
                 "refused: the address is addrport. LAUREL_* variables work too.",
        )
        # daphne's runserver options, so that scripts written for it keep working.
        parser.add_argument(
            "--http_timeout", type=float, default=None, dest="http_timeout",
            help="laurel -t: seconds the application has to start its response "
                 "(default: no limit).",
        )
        parser.add_argument(
            "--websocket_handshake_timeout", type=float, default=None,
            dest="websocket_handshake_timeout",
            help="laurel --websocket_connect_timeout (default 5).",
        )

    # ------------------------------------------------------------------ options

    def handle(self, *args, **options):
        try:
            self.laurel_bin = _launch.find_laurel()
        except _launch.LaurelNotFound as exc:
            raise CommandError(str(exc)) from None
        for arg in options.get("laurel_args") or []:
            if _launch.listener_flag(arg):
                raise CommandError(
                    f"--laurel-arg={arg}: runserver's address and port come from its "
                    "addrport argument (and --ipv6), not from laurel's listener options."
                )
        super().handle(*args, **options)

    def serve_static(self, options):
        """Django's rule: staticfiles installed, not --nostatic, and DEBUG or --insecure."""
        use = options.get("use_static_handler", True)
        return bool(use and apps.is_installed("django.contrib.staticfiles")
                    and (settings.DEBUG or options.get("insecure_serving")))

    # ------------------------------------------------------------------ processes

    def run(self, **options):
        use_reloader = options["use_reloader"]
        if use_reloader and os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) != "true":
            sys.exit(self.supervise())
        self._sock = self.listening_socket()
        self.port = str(self._sock.getsockname()[1])
        signal.signal(signal.SIGINT, self._on_signal)
        if not use_reloader:
            signal.signal(signal.SIGTERM, self._on_signal)
        atexit.register(self.stop_laurel)
        try:
            if use_reloader:
                # Runs inner_run in a thread and watches files in this one; a change
                # raises SystemExit(3), which passes through the finally below.
                autoreload.run_with_reloader(self.inner_run, **options)
            else:
                self.inner_run(None, **options)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop_laurel()
        if self._signalled and options.get("shutdown_message"):
            self.stdout.write(options["shutdown_message"])

    def listening_socket(self):
        """The supervisor's socket (reloader child), else a new one on addr:port."""
        fd = os.environ.pop(FD_ENV, None)
        if fd is not None:
            sock = socket.socket(fileno=int(fd))
            sock.set_inheritable(False)
            return sock
        try:
            return _launch.listen(self.addr, int(self.port), ipv6=self.use_ipv6)
        except OSError as exc:
            self.stderr.write("Error: %s" % BIND_ERRORS.get(exc.errno, exc))
            sys.exit(1)

    def supervise(self):
        """The outer process: Django's restart_with_reloader loop, plus the socket that
        outlives the reloads and signals that reach the child instead of killing it."""
        sock = self.listening_socket()
        sock.set_inheritable(True)
        env = {**os.environ, autoreload.DJANGO_AUTORELOAD_ENV: "true",
               FD_ENV: str(sock.fileno())}
        args = autoreload.get_child_arguments()
        signalled = []
        child = None

        def forward(signum, frame):
            signalled.append(signum)
            if child is not None:
                try:
                    child.send_signal(signum)
                except ProcessLookupError:
                    pass

        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while True:
                child = subprocess.Popen(args, env=env, close_fds=False)
                deadline = None
                while True:
                    try:
                        rc = child.wait(timeout=0.5)
                        break
                    except subprocess.TimeoutExpired:
                        if not signalled:
                            continue
                        if deadline is None:
                            deadline = time.monotonic() + SUPERVISOR_TIMEOUT
                        elif time.monotonic() > deadline:
                            child.kill()
                if signalled:  # stopped: 0 unless it had to be killed or failed
                    return 0 if rc in (0, 3) else (rc if rc > 0 else 1)
                if rc != 3:  # 3: a file changed, start it again
                    return rc if rc >= 0 else 1
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            sock.close()

    def _on_signal(self, signum, frame):
        """SIGINT (and SIGTERM with --noreload): the first one stops the server, the
        ones after it are ignored (a terminal's Ctrl-C reaches this process and the
        supervisor forwards it too)."""
        if self._signalled:
            return
        self._signalled = signum
        self._stopping = True
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(0)

    def stop_laurel(self):
        """Stops laurel (SIGTERM, then SIGKILL after STOP_TIMEOUT) and waits for it.
        Safe to call more than once."""
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, signal.SIG_IGN)
        with self._lock:
            self._stopping = True
            child = self._child
        if child is None or child.poll() is not None:
            return
        if self._signalled == signal.SIGINT:
            # Ctrl-C in a terminal reached laurel too: give it a moment to finish by
            # itself (a second signal would make it close everything at once).
            try:
                child.wait(1.0)
                return
            except subprocess.TimeoutExpired:
                pass
        try:
            child.terminate()
            child.wait(STOP_TIMEOUT)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            self.stderr.write(f"laurel did not stop within {STOP_TIMEOUT}s; killing it.")
            child.kill()
            child.wait()

    # ------------------------------------------------------------------ the server

    def laurel_command(self, options):
        argv = [self.laurel_bin, "--fd", str(self._sock.fileno())]
        verbosity = options.get("verbosity", 1)
        if verbosity != 1:  # else laurel's default, or LAUREL_VERBOSITY
            argv += ["-v", str(min(max(verbosity, 0), 3))]
        root_path = getattr(settings, "FORCE_SCRIPT_NAME", None) or ""
        if root_path:  # as daphne's runserver does
            argv += ["--root-path", root_path]
        if options.get("http_timeout") is not None:
            argv += ["-t", repr(options["http_timeout"])]
        if options.get("websocket_handshake_timeout") is not None:
            argv += ["--websocket_connect_timeout", repr(options["websocket_handshake_timeout"])]
        argv += ["--graceful-timeout", GRACEFUL_TIMEOUT]
        argv += list(options.get("laurel_args") or [])
        argv.append(APP_PATH)
        databases = {
            alias: os.fspath(conf["NAME"])
            for alias, conf in settings.DATABASES.items()
            if isinstance(conf.get("NAME"), (str, os.PathLike))
        }
        env = _launch.child_env(
            {
                django_app.STATIC_ENV: "1" if self.serve_static(options) else "0",
                django_app.DATABASES_ENV: json.dumps(databases),
            },
            first_paths=[p for p in [options.get("pythonpath")] if p],
        )
        return argv, env

    def inner_run(self, *args, **options):
        # An exception silenced in ManagementUtility.execute, raised now (as Django).
        autoreload.raise_last_exception()
        quit_command = "CTRL-BREAK" if sys.platform == "win32" else "CONTROL-C"

        self.stdout.write("Performing system checks...\n\n")
        self.check(display_num_errors=True)
        self.check_migrations()
        # Build the application here too: the autoreloader then watches its modules
        # (routing, consumers), and an import error shows here with its traceback.
        django_app.get_asgi_application()

        now = datetime.datetime.now().strftime("%B %d, %Y - %X")
        self.stdout.write(now)
        self.stdout.write((
            "Django version %(version)s, using settings %(settings)r\n"
            "Starting ASGI/laurel development server at %(protocol)s://%(addr)s:%(port)s/\n"
            "Quit the server with %(quit_command)s."
        ) % {
            "version": self.get_version(),
            "settings": settings.SETTINGS_MODULE,
            "protocol": self.protocol,
            "addr": "[%s]" % self.addr if self._raw_ipv6 else self.addr,
            "port": self.port,
            "quit_command": quit_command,
        })
        if options.get("verbosity", 1) >= 2:
            self.stdout.write(f"laurel {laurel.__version__}: {self.laurel_bin}")
        self.stdout.flush()

        argv, env = self.laurel_command(options)
        with self._lock:
            if self._stopping:
                return
            self._child = child = subprocess.Popen(
                argv, env=env, pass_fds=(self._sock.fileno(),),
                preexec_fn=_launch.die_with_parent(),
            )
        while True:
            try:
                rc = child.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                continue
        if self._stopping:
            return
        if options["use_reloader"]:
            self.stderr.write(f"laurel exited with status {rc}; it starts again when a "
                              f"file changes. Quit the server with {quit_command}.")
            return
        if rc != 0:
            raise CommandError(f"laurel exited with status {rc}")
