"""The container image, built and run for real with podman (issue 12; make test-ops).

No registry is reachable here, so the Dockerfiles' base, debian:bookworm-slim, is made
by tests/ops/base_image.sh (debootstrap from Debian's archive, cached in
/var/cache/laurel-ci). Then the repository's Dockerfile and the notifications
example's are built with ``podman build`` (their apt-get runs inside the build
containers), and the images are run as a user would run them:

* the image runs as uid 10001, not root; its size is reported;
* the notifications example is served from its container (log in, a notification
  reaches its user's WebSocket);
* ``podman stop`` stops it gracefully within the timeout: exit status 0, the open
  WebSocket closed with 1012;
* ``--workers 2`` in the container: laurel is PID 1, two workers answer, then a
  graceful stop.

Containers use the host's network and listen on 127.0.0.1 only. These tests run when
LAUREL_OPS=1 (make test-ops); podman_env.py says what this machine refuses.
"""

import asyncio
import json
import os
import re
import shutil
import subprocess
import textwrap
import time
import uuid

import pytest
import websockets

from conftest import REPO, free_port
from podman_env import podman_env

pytestmark = [
    pytest.mark.laurel_only, pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("LAUREL_OPS") != "1",
                       reason="container tests run with make test-ops (LAUREL_OPS=1)"),
]

BASE = "docker.io/library/debian:bookworm-slim"
IMAGE = "localhost/laurel:ops-test"
EXAMPLE_IMAGE = "localhost/laurel-notifications:ops-test"


def sh(*args, timeout=900, check=True):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout)
    if check:
        assert p.returncode == 0, f"{args}: {p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="module")
def podman():
    for tool in ("podman", "debootstrap"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed (make deps-ops)")
    t0 = time.monotonic()
    sh("sh", REPO / "tests" / "ops" / "base_image.sh", BASE)
    prefix, run_args, refusals = podman_env(BASE)
    for r in refusals:
        print(f"refused: {r}")
    print(f"podman: {' '.join(prefix)} run {' '.join(run_args)} "
          f"(base image ready in {time.monotonic() - t0:.1f}s)")
    return {"prefix": prefix, "run": run_args}


def build(podman, dockerfile, tag):
    t0 = time.monotonic()
    limits = [a for a in podman["run"]]  # --ulimit ... apply to RUN steps too
    sh(*podman["prefix"], "build", *limits, "-f", dockerfile, "-t", tag, REPO)
    return time.monotonic() - t0


@pytest.fixture(scope="module")
def images(podman):
    t1 = build(podman, REPO / "Dockerfile", IMAGE)
    t2 = build(podman, REPO / "examples" / "notifications" / "Dockerfile", EXAMPLE_IMAGE)
    print(f"podman build: Dockerfile {t1:.1f}s, examples/notifications/Dockerfile {t2:.1f}s")
    return podman


class Container:
    def __init__(self, podman, image, *args, env=None, volumes=()):
        self.podman = podman
        self.name = f"laurel-test-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        cmd = [*podman["prefix"], "run", "-d", "--name", self.name, *podman["run"],
               "--network", "host", "-e", f"PORT={self.port}", "-e", "LAUREL_BIND=127.0.0.1"]
        for k, v in (env or {}).items():
            cmd += ["-e", f"{k}={v}"]
        for v in volumes:
            cmd += ["-v", v]
        sh(*cmd, image, *args)
        self.wait_ready()

    def wait_ready(self, timeout=30):
        import socket
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.inspect("{{.State.Running}}") != "true":
                    break
                time.sleep(0.2)
        pytest.fail(f"container did not listen on {self.port}: {self.logs()[-3000:]}")

    def inspect(self, fmt):
        return sh(*self.podman["prefix"], "inspect", "--format", fmt, self.name,
                  check=False).stdout.strip()

    def logs(self):
        p = sh(*self.podman["prefix"], "logs", self.name, check=False)
        return p.stdout + p.stderr

    def stop(self, timeout=15):
        t0 = time.monotonic()
        sh(*self.podman["prefix"], "stop", "-t", timeout, self.name, timeout=timeout + 30)
        return time.monotonic() - t0

    def remove(self):
        sh(*self.podman["prefix"], "rm", "-f", self.name, check=False)


@pytest.fixture
def containers():
    made = []
    yield lambda *a, **kw: made.append(Container(*a, **kw)) or made[-1]
    for c in made:
        c.remove()


def test_image_user_and_size(images):
    prefix = images["prefix"]
    for image in (IMAGE, EXAMPLE_IMAGE):
        info = json.loads(sh(*prefix, "image", "inspect", image).stdout)[0]
        assert info["Config"]["User"] == "10001:10001"
        assert info["Config"]["Entrypoint"] == ["laurel"]
        size = info["Size"]
        print(f"{image}: {size / 1e6:.0f} MB, user {info['Config']['User']}")
        assert size < 500e6, size
    out = sh(*prefix, "run", "--rm", *images["run"], "--entrypoint", "id", IMAGE).stdout
    assert out.startswith("uid=10001(laurel) gid=10001(laurel)"), out
    out = sh(*prefix, "run", "--rm", *images["run"], IMAGE, "--version").stdout
    assert out.splitlines()[0].startswith("laurel ") and out.splitlines()[-1] == "venv none"


def test_example_served_from_container(images, containers):
    from demo_check import check_demo
    c = containers(images, EXAMPLE_IMAGE)
    check_demo(c.port)
    assert c.inspect("{{.State.Pid}}") != "0"


async def _ws_then_stop(c, session_cookie):
    async with websockets.connect(f"ws://127.0.0.1:{c.port}/notifications/",
                                  extra_headers={"Cookie": session_cookie},
                                  origin=f"http://127.0.0.1:{c.port}",
                                  open_timeout=10, close_timeout=5) as ws:
        took = await asyncio.to_thread(c.stop, 15)
        try:
            await asyncio.wait_for(ws.recv(), 5)
        except websockets.ConnectionClosed as e:
            return took, e.code
    return took, None


def test_podman_stop_is_graceful(images, containers):
    from site_client import SiteClient
    c = containers(images, EXAMPLE_IMAGE)

    class Srv:
        port = c.port
    demo = SiteClient(Srv).login("demo")
    took, code = asyncio.run(_ws_then_stop(c, demo.cookie_header()))
    assert code == 1012, code  # service restart: laurel's graceful close
    assert took < 15, took     # well within podman's timeout: no SIGKILL
    assert c.inspect("{{.State.ExitCode}}") == "0"
    assert "shutting down gracefully" in c.logs()
    print(f"podman stop with an open WebSocket: {took:.2f}s, exit 0, close 1012")


WORKER_APP = '''
    import os

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = f"{os.getpid()} {os.getppid()} {os.getuid()}".encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})
'''


def test_workers_in_container(images, containers, tmp_path):
    import http.client
    app = tmp_path / "app"
    app.mkdir()
    (app / "pidapp.py").write_text(textwrap.dedent(WORKER_APP))
    app.chmod(0o755)
    (app / "pidapp.py").chmod(0o644)
    c = containers(images, IMAGE, "--workers", "2", "pidapp:app",
                   volumes=[f"{app}:/app:ro"])
    seen = set()
    for _ in range(200):
        conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=5)
        conn.request("GET", "/", headers={"Connection": "close"})
        pid, ppid, uid = conn.getresponse().read().decode().split()
        conn.close()
        assert ppid == "1" and uid == "10001", (pid, ppid, uid)  # laurel's master is PID 1
        seen.add(pid)
        if len(seen) == 2:
            break
    assert len(seen) == 2, seen
    took = c.stop(15)
    assert took < 15 and c.inspect("{{.State.ExitCode}}") == "0", (took, c.logs()[-2000:])
    assert re.search(r"[Ww]orker", c.logs())
