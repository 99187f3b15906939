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

__version__ = "0.1.0"
