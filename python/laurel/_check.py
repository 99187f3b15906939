"""``laurel check APP`` (``--check``): what a deployment would run on, and what would
go wrong, before it serves a request.

The server calls main() instead of serving (nothing is bound). It imports the
application as the server would, then reports on stdout: the Python environment, the
listeners (and whether they can be bound now), the workers, each channel layer and
what ``--channel-layer native`` swaps it for, static files, and the host and WebSocket-origin settings against the
listeners. Each problem is one ``laurel check: problem: ...`` line on stderr, and the
exit status is 1 when there is any.
"""

import ipaddress
import site
import sys
import traceback

from . import _server

_problems = []


def _say(what, text):
    print(f"{what + ':':<16} {text}")


def _problem(text):
    _problems.append(text)


def _tcp_hosts(listeners):
    """(host, port) of the TCP listeners as clients would name them in Host:
    None for a wildcard address (any name could reach it)."""
    out = []
    for desc in listeners:
        if not desc.startswith(("tcp:", "tcp6:")):
            continue
        fields = dict(f.split("=", 1) for f in desc.split(":", 1)[1].split(":")
                      if "=" in f)
        host = fields.get("interface", "").replace("\\:", ":")
        port = fields.get("port", "")
        try:
            wildcard = ipaddress.ip_address(host).is_unspecified
        except ValueError:
            wildcard = False
        if wildcard:
            out.append((None, port))
        else:
            out.append((f"[{host}]" if ":" in host else host, port))
    return out


def _check_listeners(listeners):
    """A TCP listener whose address cannot be bound now (in use, not local, a
    privileged port), or a UNIX socket whose directory is missing, is a problem."""
    import os
    import socket
    for desc in listeners:
        kind, _, rest = desc.partition(":")
        fields = dict(f.split("=", 1) for f in rest.split(":") if "=" in f)
        if kind in ("tcp", "tcp6"):
            host = fields.get("interface", "").replace("\\:", ":")
            port = int(fields.get("port", "0") or 0)
            if port == 0:
                continue
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((host, port))
                except OSError as exc:
                    _problem(f"cannot listen on {desc}: {exc.strerror}")
        elif kind == "unix":
            path = fields.get("address") or rest.split(":")[0]
            d = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(d):
                _problem(f"cannot listen on {desc}: directory {d} does not exist")


def _check_layers(channel_layer, workers):
    before = _server._channel_layer_settings()
    if before is None:
        _say("channel layer", "none (not a Django Channels project with settings)")
        return
    import copy
    before = copy.deepcopy(before)
    if channel_layer == "native":
        _server.use_native_layer()
    after = _server._channel_layer_settings() or {}
    if not before and not after:
        _say("channel layer", "none configured")
    for alias in sorted(set(before) | set(after)):
        was = (before.get(alias) or {}).get("BACKEND", "none")
        now = (after.get(alias) or {}).get("BACKEND", "none")
        hosts = ((after.get(alias) or {}).get("CONFIG") or {}).get("hosts")
        where = f", hosts {hosts}" if hosts else ", in this process only"
        if was == now:
            _say("channel layer", f"{alias!r}: {now}{where}")
        else:
            _say("channel layer", f"{alias!r}: {now}{where} (replaces {was}; "
                                  "--channel-layer settings keeps it)")
    local = _server.process_local_layers()
    if workers > 1 and local:
        _problem(f"--workers {workers} with the in-process channel layer "
                 f"{', '.join(repr(a) for a in local)}: a group_send in one worker would "
                 "not reach consumers in the others, and laurel refuses to start. "
                 "Configure a Redis-backed layer (CONFIG 'hosts') or use --workers 1")


def _django_settings():
    if "django" not in sys.modules:
        return None
    try:
        from django.conf import settings
        return settings if settings.configured else None
    except Exception:
        return None


def _check_static(settings):
    if "django.contrib.staticfiles" not in settings.INSTALLED_APPS:
        _say("static files", "django.contrib.staticfiles not installed")
        return
    url, root = settings.STATIC_URL, getattr(settings, "STATIC_ROOT", None)
    from django.contrib.staticfiles.finders import get_finders
    count = 0
    for finder in get_finders():
        for _ in finder.list([]):
            count += 1
    if not count:
        _say("static files", f"STATIC_URL {url}: the project has no static files")
        return
    whitenoise = any("whitenoise" in m for m in getattr(settings, "MIDDLEWARE", []))
    served = "by WhiteNoise" if whitenoise else \
        "not by laurel: serve STATIC_ROOT from the proxy in front of it"
    _say("static files", f"{count} file{'s' * (count != 1)}, STATIC_URL {url}, "
                         f"STATIC_ROOT {root}, {served}")
    if settings.DEBUG:
        return
    import os
    if not root:
        _problem("STATIC_ROOT is not set with DEBUG off: collectstatic has nowhere to "
                 f"put the files {url} serves")
    elif not os.path.isdir(root) or not os.listdir(root):
        _problem(f"STATIC_ROOT {root} is missing or empty: run manage.py collectstatic")


def _check_hosts(settings, listeners):
    from django.http.request import validate_host
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]  # what Django itself allows
    _say("ALLOWED_HOSTS", f"{list(settings.ALLOWED_HOSTS)} (DEBUG {settings.DEBUG})")
    if not allowed:
        _problem("ALLOWED_HOSTS is empty with DEBUG off: Django answers 400 to every "
                 "request")
        return []
    names = []
    for host, port in _tcp_hosts(listeners):
        if host is None:
            continue  # a wildcard address: clients bring their own names
        names.append((host, port))
        if not validate_host(host, allowed):
            _problem(f"ALLOWED_HOSTS {list(settings.ALLOWED_HOSTS)} rejects Host "
                     f"{host}:{port}, the address laurel listens on: add {host!r}")
    return names


def _origin_validators(app, depth=0):
    """Channels' OriginValidator instances in the application's wrapper chain."""
    try:
        from channels.security.websocket import OriginValidator
    except ImportError:
        return []
    if app is None or depth > 8:
        return []
    if isinstance(app, OriginValidator):
        return [app]
    found = []
    mapping = getattr(app, "application_mapping", None)
    if isinstance(mapping, dict):
        for inner in mapping.values():
            found += _origin_validators(inner, depth + 1)
    for attr in ("inner", "application", "app"):
        inner = getattr(app, attr, None)
        if inner is not None and inner is not app:
            found += _origin_validators(inner, depth + 1)
    return found


def _check_origins(app, names):
    validators = _origin_validators(app)
    if not validators:
        _say("ws origins", "no Channels OriginValidator: any Origin is accepted")
        return
    from urllib.parse import urlparse
    for v in validators:
        _say("ws origins", f"{type(v).__name__}: {list(v.allowed_origins)}")
        for host, port in names:
            origin = f"http://{host}:{port}"
            if not v.valid_origin(urlparse(origin)):
                _problem(f"WebSocket origin {origin} (a page served by this listener) is "
                         f"rejected by the OriginValidator, allowed_origins "
                         f"{list(v.allowed_origins)}")


def main(app_path, listeners, workers, channel_layer, venv_source):
    _say("python", f"{sys.version.split()[0]}, prefix {sys.prefix}"
                   + (f" (virtualenv from {venv_source})" if venv_source else "")
                   + f", site-packages {', '.join(site.getsitepackages())}")
    try:
        app = _server.load_app(app_path)
    except _server.AppLoadError as exc:
        _problem(f"cannot load the application: {exc}")
        app = None
    except BaseException as exc:  # the module itself raised
        traceback.print_exc()
        _problem(f"cannot load the application {app_path!r}: {type(exc).__name__}: {exc}")
        app = None
    if app is not None:
        _say("application", f"{app_path} ({type(app).__module__}.{type(app).__qualname__})")
    _say("listeners", ", ".join(listeners) or "none")
    _check_listeners(listeners)
    _say("workers", str(workers))
    if app is not None:
        try:
            _check_layers(channel_layer, workers)
            settings = _django_settings()
            if settings is not None:
                _check_static(settings)
                names = _check_hosts(settings, listeners)
                _check_origins(app, names)
        except Exception as exc:
            traceback.print_exc()
            _problem(f"the settings cannot be checked: {type(exc).__name__}: {exc}")
    for p in _problems:
        print(f"laurel check: problem: {p}", file=sys.stderr)
    n = len(_problems)
    print(f"laurel check: {'no problems' if not n else f'{n} problem' + 's' * (n > 1)}")
    sys.stdout.flush()
    return 1 if n else 0
