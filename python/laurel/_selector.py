"""The asyncio selector whose poll is one iteration of laurel's libev loop.

asyncio's stock SelectorEventLoop runs on it unchanged: Python-registered fds (the
loop's self-pipe, sockets opened by the app, Redis clients, ...) are libev watchers, and
every ``select()`` also lets the C side accept connections, parse requests and write
responses.
"""

import selectors

import _laurel


class LibevSelector(selectors._BaseSelectorImpl):
    """A selector backed by the libev loop that also serves laurel's sockets."""

    def register(self, fileobj, events, data=None):
        key = super().register(fileobj, events, data)
        try:
            _laurel.io_register(key.fd, events)
        except BaseException:
            super().unregister(fileobj)
            raise
        return key

    def unregister(self, fileobj):
        key = super().unregister(fileobj)
        _laurel.io_unregister(key.fd)
        return key

    def modify(self, fileobj, events, data=None):
        key = self.get_key(fileobj)
        if events != key.events:
            _laurel.io_modify(key.fd, events)
        if events != key.events or data != key.data:
            key = key._replace(events=events, data=data)
            self._fd_to_key[key.fd] = key
        return key

    def select(self, timeout=None):
        ready = []
        fd_to_key = self._fd_to_key
        for fd, events in _laurel.poll(timeout):
            key = fd_to_key.get(fd)
            if key is not None:
                ready.append((key, events & key.events))
        return ready

    def close(self):
        for key in list(self._fd_to_key.values()):
            _laurel.io_unregister(key.fd)
        super().close()
