"""laurel: an ASGI server written in C for Django Channels projects.

The server itself is the ``laurel`` executable; this package holds the pieces that run
inside it (``laurel._server``, ``laurel._selector``), the Channels layer backend
(``laurel.layers``), and the Django integration (docs/django.md):

* ``"laurel"`` in ``INSTALLED_APPS`` (``laurel.apps``): ``manage.py runserver`` serves
  through laurel (``laurel.management.commands.runserver``, ``laurel.django_app``);
* ``laurel.testing``: ``LaurelProcess`` and ``LaurelLiveServerTestCase``, Channels'
  live-server tests on laurel.

Importing this package imports nothing else.
"""


def _read_version():
    # Installed (meson install, the wheel, the .deb): _version.py, written by meson from
    # meson.build. Run from the source tree: meson.build itself, the one place it is set.
    try:
        from ._version import version
        return version
    except ImportError:
        pass
    import os
    import re
    try:
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "meson.build")) as f:
            m = re.search(r"^\s*version:\s*'([^']+)'", f.read(), re.M)
        return m.group(1) if m else "0+unknown"
    except OSError:
        return "0+unknown"


__version__ = _read_version()
