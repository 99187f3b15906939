"""A dotted attribute chain target: tests.apps.chain:holder.inner.app."""

from tests.apps import basic


class _Holder:
    pass


holder = _Holder()
holder.inner = _Holder()
holder.inner.app = basic.app
