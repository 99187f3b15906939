"""The application a :class:`laurel.testing.LaurelProcess` serves:
``laurel laurel._live:application``.

The test process cannot hand laurel a Python object, so it writes a pickle (the file in
``_LAUREL_LIVE_PAYLOAD``) with:

* ``settings_module`` and ``settings``: the test process's settings as they are when
  the server starts (the test database names, DEBUG=False and the ALLOWED_HOSTS the
  test runner and ChannelsLiveServerTestCase set, any override_settings in force),
  applied here before ``django.setup()``: what a forked daphne process would inherit;
* ``factory``: ``get_application``, ``setup`` and ``teardown``, pickled (Channels'
  ``make_application`` partial is made to be).

``application`` is built when laurel asks for it; the outcome (ready, or the exception
and its traceback) is written to the pipe whose fd is ``_LAUREL_LIVE_FD``.
"""

import atexit
import os
import pickle
import sys
import traceback

PAYLOAD_ENV = "_LAUREL_LIVE_PAYLOAD"
REPORT_FD_ENV = "_LAUREL_LIVE_FD"


def _report(message):
    fd = os.environ.pop(REPORT_FD_ENV, None)
    if fd is None:
        return
    try:
        data = pickle.dumps(message)
    except Exception:  # an exception that does not pickle: send it as text
        data = pickle.dumps((message[0], None, message[2]))
    try:
        with os.fdopen(int(fd), "wb") as pipe:
            pipe.write(data)
    except OSError:
        pass


def _apply_settings(payload):
    values = {}
    for name, blob in payload["settings"].items():
        try:
            values[name] = pickle.loads(blob)
        except Exception as exc:  # noqa: BLE001 - the module's value stays
            print(f"laurel.testing: setting {name} not copied to the server: {exc!r}",
                  file=sys.stderr)
    from django.conf import settings

    if payload["settings_module"]:
        os.environ["DJANGO_SETTINGS_MODULE"] = payload["settings_module"]
        for name, value in values.items():
            setattr(settings, name, value)
    else:  # configured with settings.configure(): the same, minus the defaults
        from django.conf import global_settings

        missing = object()
        settings.configure(**{name: value for name, value in values.items()
                              if getattr(global_settings, name, missing) != value})


def _build():
    with open(os.environ[PAYLOAD_ENV], "rb") as f:
        payload = pickle.load(f)
    if payload["settings"] is not None:
        _apply_settings(payload)
        import django

        django.setup(set_prefix=False)
    factory = pickle.loads(payload["factory"])
    app = factory["get_application"]()
    if factory["setup"] is not None:
        factory["setup"]()
    if factory["teardown"] is not None:
        atexit.register(factory["teardown"])
    return app


def __getattr__(name):
    if name != "application":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        app = _build()
    except BaseException as exc:
        _report(("error", exc, traceback.format_exc()))
        raise
    _report(("ready", None, None))
    globals()["application"] = app
    return app
