"""Graceful shutdown (cli.md "Graceful shutdown", security.md "SIGTERM under load")."""

import signal
import socket
import threading
import time

import pytest

from conftest import Reader, read_until_close, req


class Background:
    """Runs raw requests on their own connections in threads; collects the bytes each
    got until the server closed (or timeout)."""

    def __init__(self, srv, requests, timeout=15):
        self.results = [None] * len(requests)
        self.threads = []
        self.ready = threading.Barrier(len(requests) + 1)
        for i, data in enumerate(requests):
            t = threading.Thread(target=self._run, args=(srv, i, data, timeout))
            t.start()
            self.threads.append(t)
        self.ready.wait(10)

    def _run(self, srv, i, data, timeout):
        s = srv.connect()
        try:
            s.sendall(data)
            self.ready.wait(10)
            self.results[i] = read_until_close(s, timeout)
        except Exception as e:  # reported by the test
            self.results[i] = (repr(e).encode(), False)
        finally:
            s.close()

    def join(self, timeout=20):
        for t in self.threads:
            t.join(timeout)
        return self.results


def parse(data):
    from conftest import parse_responses
    return parse_responses(data)


@pytest.mark.servers("laurel", "uvicorn")  # daphne 4.0 drops in-flight requests
def test_sigterm_lets_inflight_request_finish(serve):
    srv = serve()
    bg = Background(srv, [req("/slow?t=1&id=inflight")])
    time.sleep(0.3)
    t0 = time.monotonic()
    rc = srv.stop(signal.SIGTERM)
    (data, closed), = bg.join()
    assert rc == 0
    assert closed
    r = parse(data)[0]
    assert r.status == 200 and r.complete and r.body == b"slow done inflight"
    assert time.monotonic() - t0 < 5


@pytest.mark.laurel_only
def test_sigint_is_graceful_too(serve):
    srv = serve()
    bg = Background(srv, [req("/slow?t=1&id=int")])
    time.sleep(0.3)
    rc = srv.stop(signal.SIGINT)
    (data, closed), = bg.join()
    assert rc == 0
    r = parse(data)[0]
    assert r.status == 200 and r.body == b"slow done int"


@pytest.mark.servers("laurel", "uvicorn")
def test_sigterm_under_load_nothing_half_written(serve):
    srv = serve()
    n = 20
    bg = Background(srv, [req(f"/slow?t=0.8&id=load{i}", headers=b"Connection: close\r\n")
                          for i in range(n)])
    time.sleep(0.3)
    rc = srv.stop(signal.SIGTERM)
    results = bg.join()
    assert rc == 0
    for i, (data, closed) in enumerate(results):
        assert closed
        rs = parse(data)
        assert len(rs) == 1 and rs[0].status == 200 and rs[0].complete, data[:300]
        assert rs[0].body == b"slow done load%d" % i


@pytest.mark.servers("laurel", "uvicorn")
def test_sigterm_streaming_response_completes(serve):
    srv = serve()
    bg = Background(srv, [req("/sleep-stream?n=8&delay=0.1")])
    time.sleep(0.25)
    rc = srv.stop(signal.SIGTERM)
    (data, closed), = bg.join()
    assert rc == 0
    r = parse(data)[0]
    assert r.complete and r.body.endswith(b"chunk7\nend\n")


def test_sigterm_stops_accepting(serve):
    srv = serve()
    bg = Background(srv, [req("/slow?t=1.5&id=keepalive")])
    time.sleep(0.2)
    srv.signal(signal.SIGTERM)
    time.sleep(0.3)
    try:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=1)
    except OSError:
        pass  # refused: the listener is closed
    else:
        try:
            s.sendall(req("/late"))
            data, _ = read_until_close(s, 2)
            assert not data.startswith(b"HTTP/1.1 200"), "a new connection was served"
        finally:
            s.close()
    bg.join()
    assert srv.wait_stopped() == 0


@pytest.mark.servers("laurel", "uvicorn")
def test_sigterm_closes_idle_keepalive_connections(serve):
    srv = serve()
    idle = srv.connect()
    try:
        rd = Reader(idle)
        idle.sendall(req("/text?body=idle"))
        assert rd.read_response().body == b"idle"
        bg = Background(srv, [req("/slow?t=1.5&id=busy")])
        time.sleep(0.2)
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        assert rd.closed(1.2), "idle keep-alive connection kept open during shutdown"
        assert time.monotonic() - t0 < 1.2
        (data, _), = bg.join()
        assert parse(data)[0].status == 200
    finally:
        idle.close()
    assert srv.wait_stopped() == 0


@pytest.mark.servers("laurel", "uvicorn")
def test_keepalive_connection_closed_after_inflight_response(serve):
    srv = serve()
    s = srv.connect()
    try:
        rd = Reader(s)
        s.sendall(req("/slow?t=1&id=ka"))
        time.sleep(0.2)
        srv.signal(signal.SIGTERM)
        r = rd.read_response(timeout=5)
        assert r.status == 200 and r.body == b"slow done ka"
        assert rd.closed(3)
    finally:
        s.close()
    assert srv.wait_stopped() == 0


@pytest.mark.servers("laurel", "uvicorn")
def test_lifespan_shutdown_after_inflight(serve, tmp_path):
    path = tmp_path / "events"
    srv = serve("tests.apps.lifespan:app", env={"LAUREL_TEST_LIFESPAN_FILE": str(path)})
    bg = Background(srv, [req("/slow")])
    time.sleep(0.3)
    assert srv.stop() == 0
    bg.join()
    lines = path.read_text().splitlines()
    assert lines[-3:] == ["http /slow", "http-done /slow", "shutdown"], lines


@pytest.mark.laurel_only
def test_graceful_timeout_cancels_and_exits(serve, tmp_path):
    record = tmp_path / "record"
    srv = serve("tests.apps.basic:app", "--graceful-timeout", "1",
                env={"LAUREL_TEST_RECORD": str(record)})
    bg = Background(srv, [req("/sleep-record?t=30&id=long")])
    time.sleep(0.3)
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    rc = srv.wait_stopped(6)
    elapsed = time.monotonic() - t0
    assert rc is not None and elapsed < 5, "did not exit after the grace"
    assert elapsed >= 0.8, "exited before --graceful-timeout"
    (data, closed), = bg.join()
    assert closed
    assert not data.startswith(b"HTTP/1.1 200")
    lines = record.read_text().splitlines()
    assert "start long" in lines and "cancelled long" in lines, lines


@pytest.mark.laurel_only
def test_shutdown_with_no_traffic_is_fast(serve):
    srv = serve()
    t0 = time.monotonic()
    assert srv.stop() == 0
    assert time.monotonic() - t0 < 2


@pytest.mark.laurel_only
def test_sigterm_serves_a_connection_whose_request_is_on_its_way(serve):
    """A client that connected before the stop request and sends its request a moment
    later (during a rolling restart the old worker accepts its backlog, then drains) is
    served, with Connection: close, instead of being closed as idle. uvicorn closes it
    without a response."""
    srv = serve()
    s = srv.connect()
    try:
        time.sleep(0.3)  # accepted by now, not one byte sent yet
        srv.signal(signal.SIGTERM)
        time.sleep(0.2)
        s.sendall(req("/text?body=late"))
        rd = Reader(s)
        r = rd.read_response(timeout=3)
        assert r.status == 200 and r.body == b"late"
        assert r.header("connection") == "close"
        assert rd.closed(2)
    finally:
        s.close()
    assert srv.wait_stopped() == 0


@pytest.mark.laurel_only
def test_sigterm_waits_about_a_second_for_a_silent_new_connection(serve):
    """...but a connection that never sends anything does not hold the shutdown up to
    --graceful-timeout: it gets a second."""
    srv = serve("tests.apps.basic:app", "--graceful-timeout", "10")
    s = srv.connect()
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        rc = srv.wait_stopped(8)
        took = time.monotonic() - t0
        assert rc == 0
        assert 0.8 <= took < 3, took
        assert Reader(s).closed(1)
    finally:
        s.close()
