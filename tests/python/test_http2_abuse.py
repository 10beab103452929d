"""Adversarial HTTP/2 against the gRPC port, frame by frame over a raw
socket (header blocks encoded with the pure-Python `hpack` that comes with
`h2`): each misbehaviour gets the RST_STREAM or GOAWAY code RFC 9113 (or
the abuse limits) calls for, and afterwards the server still serves a new
connection."""

import socket
import struct
import time

import hpack
import pytest
import tritonclient.grpc as grpcclient

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0, 1, 2, 3, 4
PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4

NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 3
STREAM_CLOSED, FRAME_SIZE_ERROR, CANCEL, ENHANCE_YOUR_CALM = 5, 6, 8, 11

SERVER_LIVE = "/inference.GRPCInferenceService/ServerLive"
EMPTY_MESSAGE = b"\x00\x00\x00\x00\x00"


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def request_block(encoder, path=SERVER_LIVE):
    return encoder.encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "nereid"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )


class Conn:
    """A raw HTTP/2 client connection."""

    def __init__(self, grpc_url, preface=True, rcvbuf=None):
        host, port = grpc_url.rsplit(":", 1)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect((host, int(port)))
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.buf = b""
        if preface:
            self.send(PREFACE + frame(SETTINGS, 0, 0))

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        self.sock.close()

    def _read_exact(self, n):
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self):
        """(type, flags, stream, payload), or None at end of stream. Every
        header block is decoded here, in order, so that the HPACK context
        stays in step with the server's; for HEADERS the payload is the
        decoded field dict (the server sends each block in one frame)."""
        head = self._read_exact(9)
        if head is None:
            return None
        length = int.from_bytes(head[:3], "big")
        payload = self._read_exact(length) if length else b""
        if payload is None:
            return None
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        if head[3] == HEADERS:
            payload = {
                (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in self.decoder.decode(payload)
            }
        return head[3], head[4], stream, payload

    def frames_until(self, done, timeout=10):
        """Reads frames (acknowledging the server's SETTINGS) until
        `done(frame)`; returns that frame, or None if the connection ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            f = self.read_frame()
            if f is None:
                return None
            kind, flags, _, _ = f
            if kind == SETTINGS and not flags & ACK:
                self.send(frame(SETTINGS, ACK, 0))
            if done(f):
                return f
        raise TimeoutError("the awaited frame did not come")

    def goaway(self):
        """The (last stream id, error code) of the server's GOAWAY."""
        f = self.frames_until(lambda f: f[0] == GOAWAY)
        assert f is not None, "the connection closed without a GOAWAY"
        payload = f[3]
        last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        return last, int.from_bytes(payload[4:8], "big")

    def rst(self, stream):
        f = self.frames_until(lambda f: f[0] in (RST_STREAM, GOAWAY) and (f[0] == GOAWAY or f[2] == stream))
        assert f is not None and f[0] == RST_STREAM, f"expected RST_STREAM on {stream}, got {f}"
        return int.from_bytes(f[3][:4], "big")

    def server_live(self, stream):
        """A complete ServerLive call on `stream`; returns the grpc-status."""
        self.send(
            frame(HEADERS, END_HEADERS, stream, request_block(self.encoder))
            + frame(DATA, END_STREAM, stream, EMPTY_MESSAGE)
        )
        status = None
        while True:
            f = self.frames_until(lambda f: f[2] == stream and f[0] in (HEADERS, RST_STREAM))
            assert f is not None and f[0] == HEADERS, f
            status = f[3].get("grpc-status", status)
            if f[1] & END_STREAM:
                return int(status)


@pytest.fixture()
def conn(grpc_url):
    c = Conn(grpc_url)
    yield c
    c.close()


@pytest.fixture(autouse=True)
def _serves_another_connection(grpc_url):
    """After every abuse, a fresh client is served."""
    yield
    c = grpcclient.InferenceServerClient(url=grpc_url)
    try:
        assert c.is_server_live(client_timeout=10)
    finally:
        c.close()
    raw = Conn(grpc_url)
    try:
        assert raw.server_live(1) == 0
    finally:
        raw.close()


def test_a_well_behaved_raw_call(conn):
    assert conn.server_live(1) == 0
    assert conn.server_live(3) == 0


def test_bad_preface(grpc_url):
    c = Conn(grpc_url, preface=False)
    try:
        c.send(b"GET / HTTP/1.1\r\nHost: nereid\r\n\r\n")
        _, code = c.goaway()
        assert code == PROTOCOL_ERROR
    finally:
        c.close()


def test_oversized_frame(conn):
    # SETTINGS_MAX_FRAME_SIZE is 64 KiB; announce a DATA frame of 1 MiB.
    head = struct.pack(">I", 1 << 20)[1:] + bytes([DATA, 0]) + struct.pack(">I", 1)
    conn.send(frame(HEADERS, END_HEADERS, 1, request_block(conn.encoder)) + head + b"\0" * 1024)
    _, code = conn.goaway()
    assert code == FRAME_SIZE_ERROR


def test_connection_window_overflow(conn):
    conn.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1)))
    _, code = conn.goaway()
    assert code == FLOW_CONTROL_ERROR


def test_stream_window_overflow(conn):
    conn.send(frame(HEADERS, END_HEADERS, 1, request_block(conn.encoder)))
    conn.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 2**31 - 1)))
    assert conn.rst(1) == FLOW_CONTROL_ERROR
    # Only the stream is gone: the connection still serves calls.
    assert conn.server_live(3) == 0


def test_data_on_an_idle_stream(conn):
    conn.send(frame(DATA, END_STREAM, 9, EMPTY_MESSAGE))
    _, code = conn.goaway()
    assert code == PROTOCOL_ERROR


def test_continuation_flood(conn):
    block = request_block(conn.encoder)
    flood = frame(HEADERS, 0, 1, block[:1]) + frame(CONTINUATION, 0, 1, b"") * 200
    conn.send(flood)
    _, code = conn.goaway()
    assert code == ENHANCE_YOUR_CALM


def test_rapid_reset(conn):
    burst = b""
    for i in range(400):
        stream = 2 * i + 1
        burst += frame(HEADERS, END_HEADERS, stream, request_block(conn.encoder))
        burst += frame(RST_STREAM, 0, stream, struct.pack(">I", CANCEL))
    try:
        conn.send(burst)
    except OSError:
        pass  # the server may close before reading it all
    _, code = conn.goaway()
    assert code == ENHANCE_YOUR_CALM


def test_unknown_frame_types_are_ignored(conn):
    conn.send(frame(0x20, 0xFF, 0, b"whatever"))
    conn.send(frame(HEADERS, END_HEADERS, 1, request_block(conn.encoder)))
    conn.send(frame(0xFA, 0, 1, b"\x00" * 32))
    conn.send(frame(DATA, END_STREAM, 1, EMPTY_MESSAGE))
    conn.send(frame(0xFF, 0, 7, b""))
    conn.send(frame(PING, 0, 0, b"12345678"))
    pong = conn.frames_until(lambda f: f[0] == PING and f[1] & ACK)
    assert pong[3] == b"12345678"
    # The call on stream 1 was answered normally.
    assert conn.server_live(3) == 0


def test_stream_reused_after_close(conn):
    assert conn.server_live(1) == 0
    conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, request_block(conn.encoder)))
    _, code = conn.goaway()
    assert code == STREAM_CLOSED


def test_stream_id_going_backwards(conn):
    assert conn.server_live(5) == 0
    conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, request_block(conn.encoder)))
    _, code = conn.goaway()
    assert code in (PROTOCOL_ERROR, STREAM_CLOSED)


def test_headers_on_even_stream(conn):
    conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 2, request_block(conn.encoder)))
    _, code = conn.goaway()
    assert code == PROTOCOL_ERROR


def test_ping_flood(grpc_url):
    """PINGs from a client that does not read its answers: once too many
    acknowledgements wait to be written, GOAWAY(ENHANCE_YOUR_CALM)."""
    c = Conn(grpc_url, rcvbuf=4096)
    try:
        ping = frame(PING, 0, 0, b"flooding")
        c.sock.settimeout(5)
        try:
            for _ in range(100):
                c.send(ping * 1000)
        except OSError:
            pass  # the server stopped reading: it has seen enough
        c.sock.settimeout(10)
        _, code = c.goaway()
        assert code == ENHANCE_YOUR_CALM
    finally:
        c.close()


def test_many_pings_that_are_read_are_answered(conn):
    for i in range(500):
        conn.send(frame(PING, 0, 0, struct.pack(">Q", i)))
        pong = conn.frames_until(lambda f: f[0] == PING and f[1] & ACK)
        assert pong[3] == struct.pack(">Q", i)
