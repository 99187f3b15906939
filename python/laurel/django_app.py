"""The ASGI application that ``manage.py runserver`` serves through laurel.

``laurel laurel.django_app:application`` (DJANGO_SETTINGS_MODULE set) serves the
project's ``ASGI_APPLICATION`` (as Channels' and daphne's runserver do), or Django's
own ASGI handler when there is no such setting, wrapped in
``ASGIStaticFilesHandler`` when static files are to be served.

The runserver command (``laurel.management.commands.runserver``) decides and tells
the server process through the environment:

* ``_LAUREL_DJANGO_STATIC``: ``1`` serve static files, ``0`` do not. Unset: serve them
  when ``django.contrib.staticfiles`` is installed and DEBUG is on (runserver's
  default).
* ``_LAUREL_DJANGO_DATABASES``: JSON ``{alias: NAME}`` applied to ``DATABASES``
  before Django starts, so that the server uses the databases the command uses (for
  ``manage.py testserver``, the test database it has just created).

``application`` is built when first asked for, so importing this module (as the
runserver command does, to build the same application in its own process and let the
autoreloader watch the project's modules) does not build it.
"""

import importlib
import json
import os

STATIC_ENV = "_LAUREL_DJANGO_STATIC"
DATABASES_ENV = "_LAUREL_DJANGO_DATABASES"


def apply_database_names(names):
    """Set ``DATABASES[alias]["NAME"]`` before any connection is made."""
    from django.conf import settings

    for alias, name in names.items():
        if alias in settings.DATABASES:
            settings.DATABASES[alias]["NAME"] = name


def get_asgi_application():
    """The project's ASGI application, unwrapped: ``settings.ASGI_APPLICATION``
    (``"package.module.attribute"``), else ``django.core.asgi.get_asgi_application()``."""
    import django
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    django.setup(set_prefix=False)
    path = getattr(settings, "ASGI_APPLICATION", None)
    if not path:
        from django.core.asgi import get_asgi_application as django_asgi

        return django_asgi()
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ImproperlyConfigured(
            f"ASGI_APPLICATION must be 'package.module.attribute', not {path!r}"
        )
    # An ImportError raised inside the module propagates with its own traceback.
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImproperlyConfigured(
            f"Cannot find {attr!r} in ASGI_APPLICATION module {module_name}"
        ) from None


def static_by_default():
    from django.apps import apps
    from django.conf import settings

    return apps.is_installed("django.contrib.staticfiles") and bool(settings.DEBUG)


def get_application(static=None):
    """What runserver serves: the project's application, in
    ``ASGIStaticFilesHandler`` when ``static`` (None: ``_LAUREL_DJANGO_STATIC``, else
    :func:`static_by_default`)."""
    names = os.environ.get(DATABASES_ENV)
    if names:
        apply_database_names(json.loads(names))
    app = get_asgi_application()
    if static is None:
        flag = os.environ.get(STATIC_ENV, "")
        static = flag == "1" if flag in ("0", "1") else static_by_default()
    if static:
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        app = ASGIStaticFilesHandler(app)
    return app


def __getattr__(name):
    if name == "application":
        app = get_application()
        globals()["application"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
