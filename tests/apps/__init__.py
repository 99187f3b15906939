"""ASGI applications served by the black-box test suite (tests/http, tests/django).

They run inside the server under test (laurel, or uvicorn/daphne when the suite checks
itself), imported as ``tests.apps.<module>:<attr>`` with the repository as the current
directory. Nothing here imports laurel.
"""
