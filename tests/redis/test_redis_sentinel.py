"""Redis Sentinel for laurel's Redis layers: channels_redis' ``{"sentinels": [...],
"master_name": ...}`` host form, with real ``redis-server --sentinel`` processes on
loopback: a master, a replica and a sentinel.

A laurel server (settings naming channels_redis' core layer, swapped) and a
channels_redis process find the master through the sentinel; ``SENTINEL FAILOVER``
promotes the replica while a plain process keeps sending: laurel follows the switch
(its connections to the demoted master are cut by the sentinel, it asks again), every
group_send that was acknowledged is delivered exactly once, the ones that failed
during the switch are counted (``failed_calls``) and raised to the sender.
"""

import asyncio
import subprocess
import threading
import time

import pytest

from conftest import _Factory, free_port
from redis_fixtures import (REDIS_SERVER, LAUREL_CORE, AgentError, AppMember, Resp,  # noqa: F401
                            agents, app_layer, app_stats, finalize_all, needs_redis,
                            start_layer_app, unique, wait_for)

websockets = pytest.importorskip("websockets")
pytest.importorskip("channels_redis")

pytestmark = [needs_redis, pytest.mark.slow, pytest.mark.laurel_only]


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Topology:
    """master, replica and one sentinel (quorum 1) on free loopback ports."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []
        self.master, self.replica, self.sentinel = free_port(), free_port(), free_port()
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--protected-mode", "no", "--dir", str(tmp)]
        self._spawn([REDIS_SERVER, "--port", str(self.master), *common], "master")
        self._spawn([REDIS_SERVER, "--port", str(self.replica), *common,
                     "--replicaof", "127.0.0.1", str(self.master)], "replica")
        conf = tmp / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel}\nbind 127.0.0.1\nprotected-mode no\ndir {tmp}\n"
            f"sentinel monitor mymaster 127.0.0.1 {self.master} 1\n"
            "sentinel down-after-milliseconds mymaster 1000\n"
            "sentinel failover-timeout mymaster 10000\n")
        self._spawn([REDIS_SERVER, str(conf), "--sentinel"], "sentinel")
        for port in (self.master, self.replica, self.sentinel):
            wait_for(lambda p=port: self._ping(p), 10, f"redis on {port}")
        wait_for(lambda: self.ask("ROLE", port=self.replica)[3] == b"connected", 15,
                 "the replica in sync")
        wait_for(lambda: self.ask("SENTINEL", "REPLICAS", "mymaster"), 15,
                 "the sentinel to know the replica")

    def _spawn(self, argv, name):
        log = open(self.tmp / f"{name}.log", "wb")
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL))

    def _ping(self, port):
        try:
            return self.ask("PING", port=port) == "PONG"
        except (OSError, ConnectionError):
            return False

    def ask(self, *args, port=None):
        with Resp(port=port or self.sentinel) as c:
            return c.command(*args)

    def master_port(self):
        return int(self.ask("SENTINEL", "get-master-addr-by-name", "mymaster")[1])

    def host(self):
        return {"sentinels": [("127.0.0.1", self.sentinel)], "master_name": "mymaster"}

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait(10)


@pytest.fixture
def topo(tmp_path):
    t = Topology(tmp_path)
    yield t
    t.close()


def test_sentinel_failover_followed(topo, agents, tmp_path):
    factory = _Factory(tmp_path / "servers")
    try:
        srv = start_layer_app(factory, "core", [topo.host()])
        assert app_layer(srv) == LAUREL_CORE
        core = agents("core", [topo.host()], name="channels_redis")
        sender = agents("laurelcore", [topo.host()], name="sender")
        group = unique("sentinel")

        async def main():
            m = await AppMember.open(srv, group, name="server")
            c_ch = await asyncio.to_thread(core.member, group)
            await asyncio.to_thread(sender.group_send, group, {"type": "test.message",
                                                               "n": 0})
            await asyncio.sleep(0.5)
            assert m.events == [{"type": "test.message", "n": 0}]
            assert topo.master_port() == topo.master

            acked, failed, stop = [0], [], threading.Event()

            def keep_sending():
                n = 1
                while not stop.is_set():
                    try:
                        sender.group_send(group, {"type": "test.message", "n": n})
                        acked.append(n)
                    except AgentError as exc:
                        failed.append((n, exc.type_name))
                    n += 1
                    time.sleep(0.02)

            t = threading.Thread(target=keep_sending)
            t.start()
            try:
                await asyncio.sleep(0.5)
                assert topo.ask("SENTINEL", "FAILOVER", "mymaster") == "OK"
                await asyncio.to_thread(wait_for, lambda: topo.master_port() == topo.replica,
                                        30, "the sentinel to switch masters")
                await asyncio.to_thread(
                    wait_for, lambda: topo.ask("ROLE", port=topo.master)[0] == b"slave", 30,
                    "the old master demoted")
                last = len(acked)
                # sends go through the new master
                await asyncio.to_thread(wait_for, lambda: len(acked) > last + 20, 30,
                                        "sends acknowledged after the switch")
            finally:
                stop.set()
                await asyncio.to_thread(t.join, 20)
            want = sorted(acked)
            await asyncio.to_thread(
                wait_for, lambda: {e["n"] for e in m.events} >= set(want), 20,
                "every acknowledged message at the server's member")
            await asyncio.sleep(0.8)
            got = [e["n"] for e in m.events]
            assert len(got) == len(set(got)), "duplicates: %r" % got
            assert set(got) <= set(want) | {n for n, _ in failed}, (got, want, failed)
            assert got == sorted(got), got
            stats = await asyncio.to_thread(app_stats, srv)
            assert stats["redis"]["reconnects"] >= 1, (stats, srv.stderr()[-3000:])
            assert all(kind in ("ConnectionError", "RedisError") for _, kind in failed), failed
            await m.close()
            return len(want), failed, c_ch
        n_acked, failed, c_ch = run(main())
        assert n_acked > 20
        assert "Redis sentinel:mymaster" in srv.stderr()
    finally:
        finalize_all(factory)
