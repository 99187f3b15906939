"""The ``laurel`` Django app: put ``"laurel"`` first in ``INSTALLED_APPS`` and
``manage.py runserver`` serves the project through laurel (see docs/django.md)."""

import os

from django.apps import AppConfig, apps
from django.core import checks


def check_runserver_order(app_configs=None, **kwargs):
    """laurel.E001: an app listed before "laurel" that has its own runserver command
    (django.contrib.staticfiles, daphne) would win, and runserver would not be
    laurel's. Django takes a command from the first app in INSTALLED_APPS that has it."""
    from django.core.management import find_commands

    for config in apps.get_app_configs():
        if isinstance(config, LaurelConfig):
            return []
        if "runserver" in find_commands(os.path.join(config.path, "management")):
            return [
                checks.Error(
                    f"'laurel' must be listed before {config.name!r} in "
                    f"INSTALLED_APPS: {config.name!r} has a runserver command of its "
                    "own, and it wins over laurel's when it comes first.",
                    hint=f"Put \"laurel\" before {config.name!r}, for example at the "
                    "top of INSTALLED_APPS.",
                    id="laurel.E001",
                )
            ]
    return []


class LaurelConfig(AppConfig):
    name = "laurel"
    verbose_name = "laurel ASGI server"

    def ready(self):
        checks.register(check_runserver_order)
