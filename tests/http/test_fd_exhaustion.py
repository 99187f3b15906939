"""Out of file descriptors (security.md "Exhaustion"): the listener pauses instead of
spinning, says so once (then a reminder every 10 s with a count), and serving resumes
by itself as soon as descriptors free up. The same under a master with --workers."""

import os
import resource
import socket
import subprocess
import time

import pytest

from conftest import LAUREL_BIN, REPO, free_port, read_until_close

pytestmark = [pytest.mark.laurel_only, pytest.mark.slow]

LIMIT = 96


def _limit_fds():
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def _cpu_seconds(pid):
    """utime+stime of pid and its children still running, in seconds."""
    total = 0
    pids = [pid] + [int(p) for p in subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def _get(port, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(b"GET /text HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, _ = read_until_close(s, timeout)
        return data
    finally:
        s.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_out_of_descriptors_pauses_and_recovers(tmp_path, workers):
    port = free_port()
    err_path = tmp_path / "stderr"
    argv = [str(LAUREL_BIN), "-p", str(port), "-v", "0", "--keep-alive-timeout", "60",
            "--header-timeout", "60", "--workers", str(workers), "tests.apps.basic:app"]
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL, preexec_fn=_limit_fds)
    held = []
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                assert _get(port).startswith(b"HTTP/1.1 200")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        # More connections than the server has descriptors (each worker its own).
        for _ in range(LIMIT * workers + 40):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /text HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
            held.append(s)
        time.sleep(1.0)
        text = err_path.read_text(errors="replace")
        assert "pausing new connections until descriptors free up" in text, text[-2000:]
        # Paused, not spinning: next to no CPU, and the log stays short.
        before = _cpu_seconds(proc.pid)
        size_before = err_path.stat().st_size
        time.sleep(2.0)
        assert _cpu_seconds(proc.pid) - before < 0.3
        assert err_path.stat().st_size - size_before < 2000
        assert proc.poll() is None
        # Descriptors free up: serving resumes by itself, within a second.
        for s in held:
            s.close()
        held.clear()
        t0 = time.monotonic()
        data = _get(port, timeout=10)
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
        assert time.monotonic() - t0 < 1.5
        time.sleep(0.3)
        assert "descriptors free again after" in err_path.read_text(errors="replace")
    finally:
        for s in held:
            s.close()
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
