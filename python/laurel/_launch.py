"""Starting the ``laurel`` executable from Python: ``manage.py runserver`` (the
``laurel`` Django app) and ``laurel.testing.LaurelProcess`` use these.

* :func:`find_laurel`: ``$LAUREL_BIN``, else the virtualenv's own ``bin/laurel`` when
  this Python runs in a venv (pip put it there), else ``laurel`` on ``PATH``, else the
  build tree next to this package (``<repo>/build/laurel``).
* :func:`child_env`: the environment of the server process. The caller gives the
  listening socket with ``--fd``, so the ``LAUREL_*``/``PORT`` variables that would add
  listeners are removed; every other ``LAUREL_*`` variable still configures laurel.
  ``PYTHONPATH`` carries this process's import path, so the server imports the project
  (and a virtualenv's packages) the way this process does; in a venv, ``LAUREL_VENV``
  names it, so the server runs on it even when it is not activated.
* :func:`listen`: a bound, listening TCP socket, to hand to laurel with ``--fd``.
* :func:`die_with_parent`: a ``preexec_fn`` so that laurel gets SIGTERM if the Python
  process that started it dies without stopping it (SIGKILL, a crash).
"""

import os
import shutil
import signal
import socket
import sys
import sysconfig
from pathlib import Path

# Variables that give laurel listeners (see docs/cli.md, Environment); the server
# processes started from Python get exactly one listener, the --fd socket.
LISTENER_ENV = (
    "LAUREL_BIND",
    "LAUREL_PORT",
    "LAUREL_UNIX_SOCKET",
    "LAUREL_FD",
    "LAUREL_ENDPOINT",
    "LAUREL_APPLICATION",
    "PORT",
)
# Command-line options that add listeners (refused in pass-through arguments).
LISTENER_FLAGS = ("-b", "--bind", "-p", "--port", "-u", "--unix-socket", "--fd",
                  "-e", "--endpoint")


class LaurelNotFound(RuntimeError):
    pass


def _executable(path):
    return os.path.isfile(path) and os.access(path, os.X_OK)


def build_tree_binary():
    """``<repo>/build/laurel`` for this package at ``<repo>/python/laurel``."""
    return Path(__file__).resolve().parent.parent.parent / "build" / "laurel"


def in_venv():
    return sys.prefix != sys.base_prefix


def find_laurel():
    """The path of the laurel executable; LaurelNotFound says where it was looked for."""
    env = os.environ.get("LAUREL_BIN")
    if env:
        if _executable(env):
            return os.path.abspath(env)
        raise LaurelNotFound(f"LAUREL_BIN={env!r} is not an executable file")
    if in_venv():
        own = os.path.join(sysconfig.get_path("scripts"), "laurel")
        if _executable(own):
            return own
    on_path = shutil.which("laurel")
    if on_path:
        return on_path
    built = build_tree_binary()
    if _executable(built):
        return str(built)
    raise LaurelNotFound(
        "cannot find the laurel executable: it is not on PATH (meson install puts it "
        f"in /usr/local/bin) and {built} does not exist (ninja -C build). "
        "Set LAUREL_BIN=/path/to/laurel to choose one."
    )


def listener_flag(arg):
    """The listener option ``arg`` sets (``-p``, ``--port=8000``, ``-p8000``), or None."""
    name = arg.split("=", 1)[0]
    if name in LISTENER_FLAGS:
        return name
    if len(arg) > 2 and arg[0] == "-" and arg[1] != "-" and arg[:2] in LISTENER_FLAGS:
        return arg[:2]
    if name.startswith("--") and len(name) >= 3:
        # argparse-style unique prefixes (--po, --bi, --unix)
        hits = [f for f in LISTENER_FLAGS if f.startswith("--") and f.startswith(name)]
        if hits:
            return hits[0]
    return None


def _stdlib_dirs():
    paths = sysconfig.get_paths()
    dirs = {os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib") if k in paths}
    dirs |= {os.path.join(d, "lib-dynload") for d in list(dirs)}
    return dirs


def pythonpath(first=()):
    """PYTHONPATH for the server: ``first``, then this process's ``sys.path`` without
    the standard library (laurel's Python has its own), then the current PYTHONPATH."""
    stdlib = _stdlib_dirs()
    out = []
    for entry in [*first, *sys.path, *os.environ.get("PYTHONPATH", "").split(os.pathsep)]:
        if not entry:
            entry = os.getcwd()
        entry = os.path.abspath(entry)
        real = os.path.realpath(entry)
        if real in stdlib or (real.endswith(".zip") and real.startswith(sys.base_prefix)):
            continue
        if not os.path.exists(entry) or entry in out:
            continue
        out.append(entry)
    return os.pathsep.join(out)


def child_env(extra=None, first_paths=()):
    env = {k: v for k, v in os.environ.items() if k not in LISTENER_ENV}
    env["PYTHONPATH"] = pythonpath(first_paths)
    if in_venv() and not env.get("LAUREL_VENV"):
        env["LAUREL_VENV"] = sys.prefix
    env.update(extra or {})
    return env


def listen(host, port, ipv6=None, backlog=1024):
    """A listening TCP socket (SO_REUSEADDR, as Django's runserver and laurel set it).
    ``ipv6`` True/False picks the family as Django's runserver does; None resolves
    ``host`` and prefers IPv4 (as daphne's ``interface=localhost`` does)."""
    if ipv6 is None:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0,
                                   socket.AI_PASSIVE)
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        candidates = [(fam, addr) for fam, _, _, _, addr in infos]
    else:
        fam = socket.AF_INET6 if ipv6 else socket.AF_INET
        candidates = [(fam, (host, port))]
    error = None
    for fam, addr in candidates:
        sock = socket.socket(fam, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(backlog)
            return sock
        except OSError as exc:
            sock.close()
            error = error or exc
    raise error or OSError(f"cannot listen on {host}:{port}")


try:
    import ctypes

    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (ImportError, OSError, AttributeError):  # pragma: no cover - not Linux
    _prctl = None
PR_SET_PDEATHSIG = 1


def die_with_parent(sig=signal.SIGTERM):
    """A ``preexec_fn``: the child gets ``sig`` when the thread that started it dies
    (Linux ``PR_SET_PDEATHSIG``); None where that does not exist."""
    if _prctl is None:
        return None
    parent = os.getpid()

    def preexec():
        _prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: stop at once
            os.kill(os.getpid(), sig)

    return preexec
