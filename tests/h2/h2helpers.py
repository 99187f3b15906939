"""HTTP/2 clients for tests/h2: a small client on the h2 library (python3-h2), and a
raw frame writer/reader for the attacks the h2 library would refuse to send."""

import json
import socket
import struct
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
from hpack import Encoder

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types and error codes (RFC 9113)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 7, 8, 9, 11
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


class Client:
    """An h2c client with prior knowledge on the h2 library. Events are collected per
    stream; pump() reads what arrives."""

    def __init__(self, srv, settings=None, auto_ack=True, timeout=5, sock=None):
        # sock: a connected socket to use instead (a TLS one that chose h2 by ALPN)
        self.sock = sock or socket.create_connection((srv.host, srv.port), timeout=timeout)
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.auto_ack = auto_ack
        self.authority = f"{srv.host}:{srv.port}".encode()
        self.streams = {}
        self.events = []
        self.closed = False
        self.goaway = None
        self.remote_settings = {}
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def stream(self, sid):
        return self.streams.setdefault(sid, {"headers": None, "data": b"", "ended": False,
                                             "reset": None, "trailers": None})

    def pump(self, timeout=0.2):
        """Reads and handles whatever arrives within timeout (or until closed)."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return []
        except ConnectionError:
            data = b""
        if not data:
            self.closed = True
            return []
        evs = self.conn.receive_data(data)
        for e in evs:
            self.events.append(e)
            if isinstance(e, h2.events.ResponseReceived):
                self.stream(e.stream_id)["headers"] = e.headers
            elif isinstance(e, h2.events.DataReceived):
                self.stream(e.stream_id)["data"] += e.data
                if self.auto_ack and e.flow_controlled_length:
                    self.conn.acknowledge_received_data(e.flow_controlled_length,
                                                        e.stream_id)
            elif isinstance(e, h2.events.StreamEnded):
                self.stream(e.stream_id)["ended"] = True
            elif isinstance(e, h2.events.StreamReset):
                self.stream(e.stream_id)["reset"] = e.error_code
            elif isinstance(e, h2.events.ConnectionTerminated):
                self.goaway = e
            elif isinstance(e, h2.events.RemoteSettingsChanged):
                for k, v in e.changed_settings.items():
                    self.remote_settings[k] = v.new_value
        try:
            self.flush()
        except OSError:
            pass
        return evs

    def wait(self, cond, timeout=5):
        deadline = time.monotonic() + timeout
        while not cond():
            if self.closed or time.monotonic() > deadline:
                return cond()
            self.pump(0.1)
        return True

    def request(self, path, method="GET", body=None, headers=(), end=True, trailers=None):
        sid = self.conn.get_next_available_stream_id()
        hs = [(b":method", method.encode()), (b":path", path.encode()),
              (b":scheme", b"http"), (b":authority", self.authority), *headers]
        self.conn.send_headers(sid, hs, end_stream=end and body is None and not trailers)
        self.stream(sid)
        if body is not None:
            self.send_body(sid, body, end=end and not trailers)
        if trailers:
            self.conn.send_headers(sid, trailers, end_stream=True)
        self.flush()
        return sid

    def send_body(self, sid, body, end=True):
        """Sends as much of body as the windows allow; returns what was not sent."""
        while body:
            room = min(self.conn.local_flow_control_window(sid),
                       self.conn.max_outbound_frame_size)
            if room <= 0:
                self.flush()
                return body
            self.conn.send_data(sid, body[:room])
            body = body[room:]
        if end:
            self.conn.end_stream(sid)
        self.flush()
        return b""

    def get(self, path, timeout=5, **kw):
        sid = self.request(path, **kw)
        assert self.wait(lambda: self.stream(sid)["ended"] or self.stream(sid)["reset"]
                         is not None, timeout), f"no answer to {path}"
        return self.response(sid)

    def response(self, sid):
        st = self.stream(sid)
        hs = dict(st["headers"] or [])
        return int(hs.get(b":status", b"0")), st["headers"], st["data"]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def status_of(resp):
    return resp[0]


def app_state(srv):
    c = Client(srv)
    try:
        st, _, body = c.get("/state")
        assert st == 200
        return json.loads(body)
    finally:
        c.close()


# ---- raw frames ----

def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


def settings_frame(pairs=(), ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0,
                 b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def request_block(srv, path="/hello", method="GET", extra=(), encoder=None):
    enc = encoder or Encoder()
    return enc.encode([(":method", method), (":path", path), (":scheme", "http"),
                       (":authority", f"{srv.host}:{srv.port}"), *extra])


class Raw:
    """A raw HTTP/2 connection: write frames, read frames."""

    def __init__(self, srv, timeout=5, sock=None):
        self.sock = sock or socket.create_connection((srv.host, srv.port), timeout=timeout)
        self.buf = b""
        self.sock.sendall(PREFACE + settings_frame())

    def send(self, data):
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def frames(self, timeout=5, until=None):
        """Frames (type, flags, sid, payload) until the peer closes, until(f) is true,
        or timeout; the second value says whether the connection was closed."""
        out = []
        deadline = time.monotonic() + timeout
        closed = False
        while time.monotonic() < deadline:
            while len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + n:
                    break
                f = (self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7fffffff,
                     self.buf[9:9 + n])
                self.buf = self.buf[9 + n:]
                if f[0] == SETTINGS and not f[1] & ACK:
                    self.send(settings_frame(ack=True))
                out.append(f)
                if until and until(f):
                    return out, False
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionError:
                data = b""
            if not data:
                closed = True
                break
            self.buf += data
        return out, closed

    def close(self):
        self.sock.close()


def goaway_code(frames):
    for f in frames:
        if f[0] == GOAWAY:
            return int.from_bytes(f[3][4:8], "big")
    return None


def rst_codes(frames):
    return {f[2]: int.from_bytes(f[3][:4], "big") for f in frames if f[0] == RST_STREAM}
