"""The notifications demo (examples/notifications) as a Channels project under the
server under test: real sessions (login form, CSRF), WebSockets authenticated by the
session cookie, notifications through the channel layer from sync and async views,
group isolation between users, broadcasts, a JSON consumer, the origin check.

The database is a temporary SQLite file (NOTIFICATIONS_DB) prepared with
``manage.py demo_setup``: the repository's example directory is never written.
"""

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
import uuid

import pytest

from conftest import PY, REPO, _Factory, free_port
from site_client import SiteClient

websockets = pytest.importorskip("websockets")
from websockets.exceptions import InvalidStatusCode  # noqa: E402

EXAMPLE = REPO / "examples" / "notifications"
APP = "notifications.asgi:application"

pytestmark = pytest.mark.skipif(not (EXAMPLE / "inbox").is_dir(),
                                reason="examples/notifications has no inbox app yet")


# --------------------------------------------------------------------------- helpers

def example_env(db, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "NOTIFICATIONS_REDIS_URL")}
    env.update({"NOTIFICATIONS_DB": str(db), "PYTHONDONTWRITEBYTECODE": "1"})
    env.update(extra)
    return env


def manage(env, *args, timeout=60):
    return subprocess.run([PY, "manage.py", *args], cwd=EXAMPLE, env=env,
                          capture_output=True, text=True, timeout=timeout)


def start_server(factory, env):
    srv = factory(APP, cwd=EXAMPLE, env=env, ready_timeout=20)
    srv.env.pop("DJANGO_SETTINGS_MODULE", None)
    return srv


class Client(SiteClient):
    """SiteClient plus WebSockets carrying its session."""

    def ws(self, path, origin=True, cookies=True, **kw):
        """websockets.connect(...) for ws://127.0.0.1:port/path (an async context
        manager), with this client's cookies and the page's Origin."""
        headers = {"Cookie": self.cookie_header()} if cookies and self.cookies else {}
        return websockets.connect(
            f"ws://127.0.0.1:{self.srv.port}{path}", extra_headers=headers,
            origin=self.origin if origin is True else (origin or None),
            open_timeout=10, close_timeout=5, **kw)


async def recv_json(ws, timeout=5):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def assert_silent(ws, seconds=0.7):
    """Nothing arrives on ws for a while."""
    try:
        msg = await asyncio.wait_for(ws.recv(), seconds)
    except asyncio.TimeoutError:
        return
    pytest.fail(f"unexpected message {msg!r}")


async def _rejected_status(connect):
    with pytest.raises(InvalidStatusCode) as ei:
        async with connect():
            pass
    return ei.value.status_code


def rejected_status(client, path, **kw):
    """The HTTP status with which the handshake of client.ws(path, **kw) is refused."""
    return run(_rejected_status(lambda: client.ws(path, **kw)))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """A migrated temporary database with the demo users."""
    path = tmp_path_factory.mktemp("notifications-db") / "db.sqlite3"
    r = manage(example_env(path), "demo_setup")
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory, db):
    factory = _Factory(tmp_path_factory.mktemp("channels"))
    srv = start_server(factory, example_env(db))
    yield srv
    problems = factory.finalize()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def demo(site):
    return Client(site).login("demo")


@pytest.fixture(scope="module")
def other(site):
    return Client(site).login("other")


def unique(prefix="note"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- set-up

def test_demo_setup_is_idempotent(tmp_path):
    env = example_env(tmp_path / "db.sqlite3")
    first = manage(env, "demo_setup")
    assert first.returncode == 0, first.stderr
    assert "'demo' created" in first.stdout and "'other' created" in first.stdout
    again = manage(env, "demo_setup")
    assert again.returncode == 0, again.stderr
    assert "'demo' ready" in again.stdout and "'other' ready" in again.stdout


# --------------------------------------------------------------------------- pages

def test_index_anonymous(site):
    c = Client(site)
    status, _, body = c.request("GET", "/")
    assert status == 200
    assert b"Hello from laurel" in body
    assert b'href="/login/' in body
    assert b'id="notification-bar"' not in body


def test_index_logged_in(demo):
    status, _, body = demo.request("GET", "/")
    assert status == 200
    assert b"Hello from laurel" in body
    assert b'<div id="notification-bar"' in body
    assert b'id="username">demo<' in body
    assert b"/notifications/" in body


def test_wrong_password(site):
    c = Client(site)
    status, _, body = c.request("GET", "/login/")
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1)
    status, _, body = c.request("POST", "/login/", {"username": "demo", "password": "nope",
                                                     "csrfmiddlewaretoken": token.decode()})
    assert status == 200 and b"didn't match" in body
    assert "sessionid" not in c.cookies


def test_logout(site):
    c = Client(site).login("demo")
    status, _, _ = c.request("GET", "/logout/")
    assert status == 302
    _, _, body = c.request("GET", "/")
    assert b'id="notification-bar"' not in body


def test_notify_views_need_login_and_csrf(site, demo):
    anon = Client(site)
    anon.request("GET", "/login/")  # gets a csrftoken cookie
    for path in ("/notify/", "/notify-async/", "/broadcast-send/"):
        status, _, body = anon.post(path, text="x")
        assert status == 403, (path, body[:300])
        assert json.loads(body) == {"error": "login required"}
    # The page's views check the CSRF token (broadcast-send is exempt for scripts).
    for path in ("/notify/", "/notify-async/"):
        status, _, body = demo.post(path, csrf=False, text="x")
        assert status == 403 and b"CSRF" in body, (path, body[:300])
        status, _, body = demo.post(path, text="")
        assert status == 400, (path, body[:300])
        status, _, _ = demo.request("GET", path)
        assert status == 405, path


# --------------------------------------------------------------------------- NotificationConsumer

def test_anonymous_socket_rejected(site):
    assert rejected_status(Client(site), "/notifications/") == 403


def test_bad_origin_rejected(demo):
    evil = "http://evil.example"
    assert rejected_status(demo, "/notifications/", origin=evil) == 403
    assert rejected_status(demo, "/broadcast/", origin=evil) == 403
    assert rejected_status(demo, "/echo-json/", origin="http://127.0.0.1.evil.example") == 403
    # AllowedHostsOriginValidator also refuses a handshake without Origin.
    assert rejected_status(demo, "/echo-json/", origin=None) == 403


def test_unknown_route_rejected(demo):
    # URLRouter raises for an unknown path: the handshake fails (a denial or a closed
    # connection, depending on the server), it never opens.
    async def main():
        with pytest.raises((InvalidStatusCode, websockets.exceptions.InvalidHandshake,
                            websockets.exceptions.ConnectionClosed, OSError)):
            async with demo.ws("/no-such-socket/"):
                pass
    run(main())


@pytest.mark.parametrize("path", ["/notify/", "/notify-async/"])
def test_notification_reaches_only_its_user(demo, other, path):
    async def main():
        async with demo.ws("/notifications/") as mine, \
                demo.ws("/notifications/") as mine2, \
                other.ws("/notifications/") as theirs:
            text = unique(path.strip("/"))
            answer = await asyncio.to_thread(demo.notify, text, path)
            assert answer["sent"] is True
            assert answer["view"] == ("async" if "async" in path else "sync")
            # every socket of the user gets it, once
            assert await recv_json(mine) == {"text": text}
            assert await recv_json(mine2) == {"text": text}
            await assert_silent(theirs)
            await assert_silent(mine, 0.3)
            # and the other way round
            text2 = unique("other")
            await asyncio.to_thread(other.notify, text2, path)
            assert await recv_json(theirs) == {"text": text2}
            await assert_silent(mine)
            await assert_silent(mine2, 0.1)
    run(main())


def test_notifications_in_order(demo):
    async def main():
        async with demo.ws("/notifications/") as ws:
            texts = [unique(str(i)) for i in range(10)]
            for i, t in enumerate(texts):
                await asyncio.to_thread(demo.notify, t,
                                        "/notify-async/" if i % 2 else "/notify/")
            got = [(await recv_json(ws))["text"] for _ in texts]
            assert got == texts
    run(main())


def test_disconnect_leaves_group(demo):
    """After a socket closes, notifications go on reaching the user's other sockets and
    the server stays healthy (the closed socket's group entry is gone)."""
    async def main():
        async with demo.ws("/notifications/") as stays:
            for _ in range(5):
                async with demo.ws("/notifications/") as brief:
                    t = unique("brief")
                    await asyncio.to_thread(demo.notify, t)
                    assert await recv_json(brief) == {"text": t}
                    assert await recv_json(stays) == {"text": t}
            t = unique("after")
            await asyncio.to_thread(demo.notify, t)
            assert await recv_json(stays) == {"text": t}
            await assert_silent(stays, 0.3)
    run(main())


def test_session_cookie_of_logged_out_user_rejected(site):
    c = Client(site).login("other")
    stale = c.cookie_header()
    c.request("GET", "/logout/")

    async def main():
        async with websockets.connect(
                f"ws://127.0.0.1:{site.port}/notifications/",
                extra_headers={"Cookie": stale}, origin=c.origin, open_timeout=10):
            pass
    with pytest.raises(InvalidStatusCode) as ei:
        run(main())
    assert ei.value.status_code == 403


# --------------------------------------------------------------------------- Broadcast, JSON

def test_broadcast(site, demo, other):
    anon = Client(site)

    async def main():
        async with anon.ws("/broadcast/") as a, other.ws("/broadcast/") as b, \
                demo.ws("/notifications/") as personal:
            text = unique("to everybody ✓")
            status, _, body = await asyncio.to_thread(
                demo.post, "/broadcast-send/", False, text=text)
            assert status == 200, body[:300]
            assert await asyncio.wait_for(a.recv(), 5) == text
            assert await asyncio.wait_for(b.recv(), 5) == text
            await assert_silent(personal, 0.5)
    run(main())


def test_echo_json(demo):
    async def main():
        async with demo.ws("/echo-json/") as ws:
            for msg in ({"hello": "laurel"}, [1, 2.5, None, True],
                        {"nested": {"list": list(range(50)), "text": "é ✓ 🚀"}},
                        {"big": "x" * 100_000}):
                await ws.send(json.dumps(msg))
                assert await recv_json(ws) == msg
    run(main())


# --------------------------------------------------------------------------- manage.py notify

def test_notify_command_refuses_in_process_layer(db):
    r = manage(example_env(db), "notify", "demo", "hello")
    assert r.returncode != 0
    assert "reaches nothing" in r.stderr and "InMemoryChannelLayer" in r.stderr
    r = manage(example_env(db), "notify", "nobody", "hello")
    assert r.returncode != 0 and "no user 'nobody'" in r.stderr


@pytest.mark.slow
def test_notify_command_through_redis(tmp_path, db):
    """With a Redis layer shared by server and command, manage.py notify reaches the
    user's socket."""
    redis = shutil.which("redis-server")
    if not redis:
        pytest.skip("redis-server is not installed")
    pytest.importorskip("channels_redis")
    port = free_port()
    proc = subprocess.Popen([redis, "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    factory = _Factory(tmp_path / "srv")
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                import socket
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("redis-server did not start")
                time.sleep(0.05)
        env = example_env(db, NOTIFICATIONS_REDIS_URL=f"redis://127.0.0.1:{port}/0")
        srv = start_server(factory, env)
        c = Client(srv).login("demo")

        async def main():
            async with c.ws("/notifications/") as ws:
                text = unique("from cron")
                r = await asyncio.to_thread(manage, env, "notify", "demo", text)
                assert r.returncode == 0, r.stderr
                assert "RedisChannelLayer" in r.stdout
                assert await recv_json(ws, 10) == {"text": text}
                # the web views go through Redis too
                t2 = unique("view")
                await asyncio.to_thread(c.notify, t2)
                assert await recv_json(ws, 10) == {"text": t2}
        run(main())
    finally:
        problems = factory.finalize()
        proc.terminate()
        proc.wait(10)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.mark.laurel_only
def test_channels_in_memory_layer_kept(tmp_path, db):
    """--channel-layer settings: the project's own InMemoryChannelLayer carries the
    notifications instead of laurel's native layer."""
    factory = _Factory(tmp_path)
    srv = factory(APP, "--channel-layer", "settings", cwd=EXAMPLE, env=example_env(db),
                  ready_timeout=20)
    try:
        c = Client(srv).login("demo")

        async def main():
            async with c.ws("/notifications/") as ws, c.ws("/broadcast/") as b:
                for path in ("/notify/", "/notify-async/"):
                    text = unique(path)
                    await asyncio.to_thread(c.notify, text, path)
                    assert await recv_json(ws) == {"text": text}
                text = unique("all")
                status, _, _ = await asyncio.to_thread(c.post, "/broadcast-send/", False,
                                                       text=text)
                assert status == 200
                assert await asyncio.wait_for(b.recv(), 5) == text
        run(main())
        assert "replaces channels.layers.InMemoryChannelLayer" not in srv.stderr()
    finally:
        problems = factory.finalize()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
