"""A worker killed mid-fan-out under --workers 2 (security.md "Faults": a worker
process dying). Every worker fans a tick out to its WebSockets every 10 ms
(tests/apps/ticker_app.py, laurel's process-local layer); one worker is SIGKILLed.

What happens, exactly (docs/security.md):
- the other worker's clients get every tick, in order, without a gap, before, during
  and after the kill;
- the killed worker's clients see the TCP connection end without a close frame (the
  kernel closes the dead process's sockets: FIN, or RST if data was unread): a
  browser reports close code 1006;
- the master logs "Worker N (pid P) was killed by signal 9 (Killed); restarting it in
  0.5s" and starts a new worker; the listener never stops accepting."""

import asyncio
import os
import re
import signal
import time

import pytest

websockets = pytest.importorskip("websockets")

APP = "tests.apps.ticker_app:app"


def worker_pids(master):
    out = []
    for t in os.listdir(f"/proc/{master}/task"):
        with open(f"/proc/{master}/task/{t}/children") as f:
            out += [int(p) for p in f.read().split()]
    return sorted(out)


def wait_for(cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    return cond()


async def scenario(port, master):
    url = f"ws://127.0.0.1:{port}/ticks"
    clients = []  # (ws, pid)
    for _ in range(200):  # until both workers hold at least 5
        ws = await websockets.connect(url, open_timeout=10, close_timeout=2)
        pid = int((await asyncio.wait_for(ws.recv(), 10)).split()[1])
        clients.append((ws, pid))
        pids = [p for _, p in clients]
        if len(set(pids)) == 2 and min(pids.count(p) for p in set(pids)) >= 5:
            break
    pids = sorted(set(p for _, p in clients))
    assert len(pids) == 2, f"every connection went to one worker: {pids}"
    victim, survivor = pids
    got = {id(ws): [] for ws, _ in clients}
    ended = {}

    async def read(ws):
        try:
            async for m in ws:
                got[id(ws)].append((time.monotonic(), int(m)))
        except websockets.ConnectionClosed as e:
            ended[id(ws)] = (e.code, time.monotonic())
            return
        ended[id(ws)] = (ws.close_code, time.monotonic())

    readers = [asyncio.ensure_future(read(ws)) for ws, _ in clients]
    await asyncio.sleep(0.5)
    t_kill = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    await asyncio.sleep(1.5)
    for ws, _ in clients:
        await ws.close()
    await asyncio.gather(*readers, return_exceptions=True)
    return clients, got, ended, victim, survivor, t_kill


def test_worker_killed_mid_fanout(serve):
    srv = serve(APP, "--workers", "2", "-v", "1")
    master = srv.proc.pid
    workers = wait_for(lambda: len(worker_pids(master)) == 2 and worker_pids(master), 15)
    assert workers, worker_pids(master)
    clients, got, ended, victim, survivor, t_kill = asyncio.run(
        asyncio.wait_for(scenario(srv.port, master), 60))
    for ws, pid in clients:
        seq = [n for _, n in got[id(ws)]]
        if pid == survivor:
            assert seq, "a surviving client got nothing"
            assert seq == list(range(seq[0], seq[0] + len(seq))), \
                f"a surviving client missed ticks: {seq}"
            assert got[id(ws)][-1][0] > t_kill + 1.0, "ticks stopped with the kill"
            assert ended[id(ws)][0] == 1000  # our own close, answered
        else:
            code, t_end = ended[id(ws)]
            assert code == 1006, f"killed worker's client closed with {code}"
            assert t_end - t_kill < 1.0
            assert not [n for t, n in got[id(ws)] if t > t_kill + 0.2]
    # the master says so and restarts it; the listener answers all along
    text = srv.wait_output(rf"\(pid {victim}\) was killed by signal 9 \([^)]*\); "
                           r"restarting it in 0\.5s", stream="stderr", timeout=5)
    assert re.search(rf"\(pid {victim}\) was killed by signal 9", text), text[-2000:]
    new = wait_for(lambda: (lambda w: len(w) == 2 and victim not in w and w)(
        worker_pids(master)), 10)
    assert new and survivor in new, new
    assert srv.request("GET", "/").status == 200
