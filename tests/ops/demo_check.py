"""The notifications example as a user tries it, against a server already running on a
loopback port (installed from a wheel, in a container, from the .deb): the login page
renders, demo logs in, and a notification posted by a view arrives on demo's
WebSocket and not on other's."""

import asyncio
import json
import uuid

import websockets

from site_client import SiteClient


class _Srv:
    def __init__(self, port):
        self.port = port


def _ws(client):
    return websockets.connect(
        f"ws://127.0.0.1:{client.srv.port}/notifications/",
        extra_headers={"Cookie": client.cookie_header()}, origin=client.origin,
        open_timeout=10, close_timeout=5)


async def _roundtrip(demo, other):
    async with _ws(demo) as mine, _ws(other) as theirs:
        text = f"note-{uuid.uuid4().hex[:10]}"
        answer = await asyncio.to_thread(demo.notify, text)
        assert answer["sent"] is True, answer
        got = json.loads(await asyncio.wait_for(mine.recv(), 10))
        assert got == {"text": text}, got
        try:
            leaked = await asyncio.wait_for(theirs.recv(), 0.7)
        except asyncio.TimeoutError:
            leaked = None
        assert leaked is None, f"other's socket got {leaked!r}"
    return text


def check_demo(port):
    """Runs the checks; returns the text that went through. Needs the demo users
    (manage.py demo_setup) in the server's database."""
    srv = _Srv(port)
    status, _, body = SiteClient(srv).request("GET", "/login/")
    assert status == 200 and b"csrfmiddlewaretoken" in body, (status, body[:300])
    demo = SiteClient(srv).login("demo")
    other = SiteClient(srv).login("other")
    return asyncio.run(asyncio.wait_for(_roundtrip(demo, other), 60))
