"""laurel: an ASGI server written in C for Django Channels projects.

The server itself is the ``laurel`` executable; this package holds the pieces that run
inside it (``laurel._server``, ``laurel._selector``) and, later, the Channels layer
backend, the Django integration and test helpers.
"""

__version__ = "0.1.0"
