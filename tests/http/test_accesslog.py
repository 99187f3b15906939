"""The access log (cli.md "Access log", uvicorn CVE-2020-7694 log injection)."""

import re
import time

import pytest

from conftest import Reader, req

pytestmark = pytest.mark.servers("laurel", "daphne")  # daphne's format is the reference

LINE = re.compile(r'^(\S+) - - \[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d)\] "([^"]*)" '
                  r'(\d{3}|-) (\d+|-)$')


def access_lines(text, needle=None):
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return [ln for ln in lines if needle is None or needle in ln]


def wait_lines(srv, needle, count=1, stream="stdout", path=None, timeout=5):
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path else (srv.stdout() if stream == "stdout" else srv.stderr())
        lines = access_lines(text, needle)
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def test_access_log_format(serve):
    srv = serve()
    s = srv.connect()
    try:
        s.sendall(req("/a%2Fb/%C3%A9?x=1"))
        r = Reader(s).read_response()
        client_port = s.getsockname()[1]
    finally:
        s.close()
    lines = wait_lines(srv, "/a%2Fb")
    assert len(lines) == 1, srv.stdout()
    m = LINE.match(lines[0])
    assert m, lines[0]
    assert m.group(1) == f"127.0.0.1:{client_port}"
    logged = time.mktime(time.strptime(m.group(2), "%d/%b/%Y:%H:%M:%S"))
    assert abs(logged - time.time()) < 10  # local time
    assert m.group(3) == "GET /a%2Fb/%C3%A9?x=1"
    assert m.group(4) == "200"
    assert int(m.group(5)) == len(r.body)


@pytest.mark.parametrize("path,status,size", [
    ("/text?body=&cl=1&marker=empty", "200", "-"),
    ("/status?code=204&marker=nocontent", "204", "-"),
    ("/status?code=404&body=nope&marker=notfound", "404", "4"),
    ("/raise-before?marker=raised", "500", None),
])
def test_access_log_status_and_size(serve, path, status, size):
    srv = serve()
    srv.request("GET", path)
    marker = path.split("marker=")[1]
    lines = wait_lines(srv, marker)
    assert len(lines) == 1, srv.stdout()
    m = LINE.match(lines[0])
    assert m and m.group(4) == status, lines[0]
    if size:
        assert m.group(5) == size, lines[0]


def test_access_log_method_and_streamed_size(serve):
    srv = serve()
    srv.request("POST", "/stream?n=3&size=100&marker=streamed", body=b"abc")
    lines = wait_lines(srv, "streamed")
    m = LINE.match(lines[0])
    assert m.group(3).startswith("POST /stream?")
    assert m.group(5) == "300"


def test_log_injection_percent_encoded_stays_encoded(serve):
    """uvicorn CVE-2020-7694: an encoded CR LF in the target must not make a new line."""
    srv = serve()
    n = 5
    for i in range(n):
        srv.request("GET", f"/inject{i}%0d%0a127.0.0.1:1%20-%20-%20%5Bfake%5D%20%22GET%20/x%22"
                           f"%20200%20-%0a%1b[31m")
    lines = wait_lines(srv, "/inject", count=n)
    out = srv.stdout()
    assert len(access_lines(out)) == n, out
    assert len(lines) == n
    for ln in lines:
        assert "%0d%0a" in ln and "%0a" in ln
        assert LINE.match(ln), ln
    assert "\x1b" not in out


@pytest.mark.laurel_only
def test_log_raw_bytes_escaped_or_rejected(serve):
    """Raw control bytes are refused by the guard; high bytes, if accepted, are escaped."""
    srv = serve()
    srv.raw(b"GET /ctl\x1b[31m HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    srv.raw(b"GET /high\xc3\xa9 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    srv.request("GET", "/after-raw")
    wait_lines(srv, "/after-raw")
    out = srv._out_path.read_bytes()
    assert b"\x1b" not in out
    assert b"\xc3" not in out
    for ln in access_lines(out.decode("ascii")):
        assert LINE.match(ln), ln


def test_access_log_line_per_request_keepalive_and_pipelined(serve):
    srv = serve()
    s = srv.connect()
    try:
        s.sendall(b"".join(req(f"/pipe{i}") for i in range(4)))
        rd = Reader(s)
        for _ in range(4):
            rd.read_response()
    finally:
        s.close()
    lines = wait_lines(srv, "/pipe", count=4)
    assert [LINE.match(ln).group(3) for ln in lines] == [f"GET /pipe{i}" for i in range(4)]


def test_access_log_file_appends(serve, tmp_path):
    path = tmp_path / "access.log"
    path.write_text("previous line\n")
    srv = serve("tests.apps.basic:app", "--access-log", str(path))
    srv.request("GET", "/to-file")
    lines = wait_lines(srv, "/to-file", path=path)
    assert len(lines) == 1 and LINE.match(lines[0])
    assert path.read_text().startswith("previous line\n")
    assert "/to-file" not in srv.stdout()


def test_access_log_dash_is_stdout(serve):
    srv = serve("tests.apps.basic:app", "--access-log", "-")
    srv.request("GET", "/to-stdout")
    assert len(wait_lines(srv, "/to-stdout")) == 1


def test_access_log_off_at_verbosity_0(serve):
    srv = serve("tests.apps.basic:app", "-v", "0")
    srv.request("GET", "/silent")
    time.sleep(0.3)
    assert "/silent" not in srv.stdout()


def test_access_log_unix_socket_host_none(serve, tmp_path):
    import os
    path = str(tmp_path / "a.sock")
    if len(path) > 100:
        import tempfile
        path = os.path.join(tempfile.mkdtemp(prefix="lrl"), "a.sock")
    srv = serve("tests.apps.basic:app", "-u", path, unix=path)
    srv.request("GET", "/via-unix")
    lines = wait_lines(srv, "/via-unix")
    assert lines and lines[0].startswith("None - - ["), lines
