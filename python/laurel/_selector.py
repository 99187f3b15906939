"""The asyncio selector whose poll is one iteration of laurel's libev loop.

asyncio's SelectorEventLoop runs on it unchanged: Python-registered fds (the loop's
self-pipe, sockets opened by the app, database clients, ...) are libev watchers of the
loop core, and in the server every poll also lets the C side accept connections, parse
requests and write responses.
"""

import selectors


class LibevSelector(selectors._BaseSelectorImpl):
    """A selector backed by the libev loop of a laurel loop core."""

    def __init__(self, core):
        super().__init__()
        self._core = core

    def register(self, fileobj, events, data=None):
        key = super().register(fileobj, events, data)
        try:
            self._core._io_register(key.fd, events)
        except BaseException:
            super().unregister(fileobj)
            raise
        return key

    def unregister(self, fileobj):
        key = super().unregister(fileobj)
        self._core._io_unregister(key.fd)
        return key

    def modify(self, fileobj, events, data=None):
        key = self.get_key(fileobj)
        if events != key.events:
            self._core._io_modify(key.fd, events)
        if events != key.events or data != key.data:
            key = key._replace(events=events, data=data)
            self._fd_to_key[key.fd] = key
        return key

    def select(self, timeout=None):
        """One libev iteration (the loop core's own _run_once polls without this)."""
        ready = []
        fd_to_key = self._fd_to_key
        for fd, events in self._core._poll(timeout):
            key = fd_to_key.get(fd)
            if key is not None:
                ready.append((key, events & key.events))
        return ready

    def close(self):
        for key in list(self._fd_to_key.values()):
            self._core._io_unregister(key.fd)
        super().close()
