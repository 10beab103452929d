"""HTTP behaviour Triton's clients and QA tests rely on (issue 12): what is
compressed, HEAD, body size limits and their wording, chunked framing, the
body deadline, and requests in flight at SIGTERM (HTTP and gRPC).

Servers with non-default flags are started here; the rest use the shared
server."""

import asyncio
import gzip
import json
import signal
import socket
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

import rawhttp
from conftest import NereidServer

HINT = "Use --http-max-input-size to increase the limit."


def simple_json() -> bytes:
    return json.dumps(
        {
            "inputs": [
                {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": list(range(16))},
                {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": [1] * 16},
            ]
        }
    ).encode()


def read_head(s: socket.socket, timeout=10.0) -> bytes:
    """Reads until the end of a response head (for HEAD answers, which
    announce a length and send no body)."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def test_only_infer_responses_are_compressed(url):
    for path in ["/v2", "/v2/models/simple", "/v2/models/simple/config", "/v2/health/ready"]:
        status, headers, body = rawhttp.request(url, "GET", path, headers={"Accept-Encoding": "gzip, deflate"})
        assert status == 200, (path, body)
        assert "content-encoding" not in headers, (path, headers)
    status, headers, body = rawhttp.request(
        url, "POST", "/v2/models/simple/infer", simple_json(), {"Accept-Encoding": "gzip"}
    )
    assert status == 200, body
    assert headers.get("content-encoding") == "gzip", headers
    assert json.loads(gzip.decompress(body))["outputs"][0]["name"] == "OUTPUT0"


def test_aio_client_reads_every_kind_of_response(url):
    """aiohttp asks for gzip on every request; tritonclient's aio client
    only decompresses inference responses."""
    aio = pytest.importorskip("tritonclient.http.aio")

    async def run():
        client = aio.InferenceServerClient(url)
        try:
            assert await client.is_server_live()
            assert await client.is_model_ready("simple")
            assert (await client.get_server_metadata())["name"]
            assert (await client.get_model_metadata("simple"))["name"] == "simple"
            assert (await client.get_model_config("simple"))["name"] == "simple"
            assert any(m["name"] == "simple" for m in await client.get_model_repository_index())
            assert isinstance(await client.get_inference_statistics("simple"), dict)
            a = np.arange(16, dtype=np.int32).reshape(1, 16)
            inputs = [aio.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
            for i in inputs:
                i.set_data_from_numpy(a)
            r = await client.infer("simple", inputs, response_compression_algorithm="gzip")
            assert np.array_equal(r.as_numpy("OUTPUT0"), a + a)
        finally:
            await client.close()

    asyncio.run(run())


@pytest.mark.parametrize("path", ["/v2", "/v2/health/live", "/v2/models/simple", "/v2/models/simple/config"])
def test_head_is_get_without_the_body(url, path):
    _, get_headers, get_body = rawhttp.request(url, "GET", path)
    host, port = rawhttp.split_url(url)
    with socket.create_connection((host, port)) as s:
        # A GET after the HEAD on the same connection: were a body sent
        # after the HEAD answer, it would be read as the next status line.
        s.sendall(rawhttp.request_bytes("HEAD", path) + rawhttp.request_bytes("GET", "/v2/health/live"))
        data = read_head(s)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert rawhttp.parse_headers(head)["content-length"] == str(len(get_body))
        while b"\r\n\r\n" not in rest:
            rest += s.recv(4096)
        assert rest.startswith(b"HTTP/1.1 200 "), rest[:100]
    status, _, _ = rawhttp.request(url, "HEAD", "/v2/models/simple/infer")
    assert status == 405


def test_chunked_wins_over_content_length_then_close(url):
    body = simple_json()
    chunked = b"%X\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    raw = rawhttp.request_bytes(
        "POST",
        "/v2/models/simple/infer",
        chunked,
        {"Content-Length": "5", "Transfer-Encoding": "chunked"},
    )
    # A request smuggled behind it is not read.
    raw += rawhttp.request_bytes("GET", "/v2/health/live")
    host, port = rawhttp.split_url(url)
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status, headers, resp = rawhttp.parse_response(data)
    assert status == 200, resp
    assert headers.get("connection") == "close"
    assert json.loads(resp)["outputs"][0]["data"] == [i + 1 for i in range(16)]
    assert data.count(b"HTTP/1.1 ") == 1, data[:300]


def test_too_many_chunks(url):
    head = (
        "POST /v2/models/simple/infer HTTP/1.1\r\nHost: t\r\nInference-Header-Content-Length: 0\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    data = rawhttp.exchange(url, head + b"1\r\nA\r\n" * 65537 + b"0\r\n\r\n", timeout=20)
    status, headers, body = rawhttp.parse_response(data)
    assert status == 400
    assert rawhttp.error_of(body) == (
        "Chunked request body exceeds maximum of 65536 non-empty chunks. Send fewer or larger HTTP chunks."
    )
    assert headers.get("connection") == "close"
    # At the limit, the body reaches the model's decoder.
    data = rawhttp.exchange(url, head + b"1\r\nA\r\n" * 65536 + b"0\r\n\r\n", timeout=20)
    status, _, body = rawhttp.parse_response(data)
    assert status == 400
    assert "Raw request must only have 1 input" in rawhttp.error_of(body)


@pytest.fixture(scope="module")
def small_limit_server():
    s = NereidServer(extra_args=["--http-max-input-size", "4096"], name="small-limit").start()
    yield s
    s.stop()


def test_body_limit_wording(small_limit_server):
    url = small_limit_server.url
    status, headers, body = rawhttp.request(
        url, "POST", "/v2/models/simple/infer", b"\0" * 5000, {"Inference-Header-Content-Length": "0"}
    )
    assert status == 400
    assert rawhttp.error_of(body) == (
        f"Raw input has a byte_size (5000 bytes) that exceeds the maximum allowed value of 4096 bytes. {HINT}"
    )
    assert headers.get("connection") == "close"

    status, _, body = rawhttp.request(url, "POST", "/v2/models/simple/infer", b" " * 5000)
    assert status == 400
    assert rawhttp.error_of(body) == (
        f"request JSON size of 5000 bytes exceeds the maximum allowed input size of 4096 bytes. {HINT}"
    )

    # A small body that inflates past the limit: stopped as it inflates.
    bomb = gzip.compress(simple_json() + b" " * (3 << 20))
    assert len(bomb) < 4096
    status, _, body = rawhttp.request(
        url, "POST", "/v2/models/simple/infer", bomb, {"Content-Encoding": "gzip"}
    )
    assert status == 400
    assert rawhttp.error_of(body) == (
        f"Decompressed data size exceeds the maximum allowed value of 4096 bytes. {HINT}"
    )

    client = httpclient.InferenceServerClient(url)
    try:
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        inputs = [httpclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
        for i in inputs:
            i.set_data_from_numpy(a, binary_data=True)
        r = client.infer("simple", inputs, request_compression_algorithm="gzip")
        assert np.array_equal(r.as_numpy("OUTPUT0"), a + a)
    finally:
        client.close()


def test_zero_or_negative_limit_is_refused():
    for bad in ["0", "-1024"]:
        s = NereidServer(extra_args=[f"--http-max-input-size={bad}"], name="bad-limit")
        with pytest.raises(RuntimeError):
            s.start(timeout=20)
        assert "Error: --http-max-input-size must be greater than 0." in s.log_path.read_text()


def test_trickled_body_gets_408():
    s = NereidServer(
        extra_args=["--http-body-timeout-secs", "1", "--http-min-body-rate", "1024"], name="body-timeout"
    ).start()
    try:
        host, port = rawhttp.split_url(s.url)
        with socket.create_connection((host, port), timeout=15) as c:
            c.sendall(b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{")
            start = time.monotonic()
            c.settimeout(0.5)
            data = b""
            # A byte every half second is never a stall, and earns next to no
            # time: the answer comes at the deadline.
            while b"\r\n\r\n" not in data and time.monotonic() - start < 10:
                try:
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                except socket.timeout:
                    try:
                        c.sendall(b" ")
                    except OSError:
                        pass
            status, headers, _ = rawhttp.parse_response(data)
            assert status == 408
            assert headers.get("connection") == "close"
            assert time.monotonic() - start < 5
    finally:
        s.stop()


def test_sigterm_answers_requests_already_sent():
    s = NereidServer(extra_args=["--log-verbose", "1"], name="sigterm").start()
    host, port = rawhttp.split_url(s.url)
    conns = []
    try:
        # Every request below is in flight (a 300 ms model) when the signal
        # comes: each is answered, with Connection: close, then the
        # connection closes.
        for _ in range(8):
            c = socket.create_connection((host, port), timeout=20)
            # One exchange first: the connection is accepted and kept alive.
            c.sendall(rawhttp.request_bytes("GET", "/v2/health/live"))
            assert rawhttp.parse_response(rawhttp.read_response_bytes(c, 10))[0] == 200
            conns.append(c)
        grpc = grpcclient.InferenceServerClient(s.grpc_url)
        assert grpc.is_server_live()
        a = np.ones((1, 4), dtype=np.float32)
        g_in = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
        g_in.set_data_from_numpy(a)
        results = []
        delayed = json.dumps(
            {
                "inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1.0] * 4}],
                "parameters": {"execute_delay_ms": 300},
            }
        ).encode()
        for c in conns:
            c.sendall(rawhttp.request_bytes("POST", "/v2/models/delay/infer", delayed))
        grpc.async_infer(
            "delay", [g_in], callback=lambda result, error: results.append((result, error)), parameters={"execute_delay_ms": 300}
        )
        # The gRPC call has reached the server (its stream is open) when it
        # logs it; the HTTP requests are in the server's sockets already.
        deadline = time.monotonic() + 20
        while "gRPC call /inference.GRPCInferenceService/ModelInfer" not in s.log_path.read_text():
            assert time.monotonic() < deadline, s.log_tail()
            time.sleep(0.01)
        s.proc.send_signal(signal.SIGTERM)
        for c in conns:
            status, headers, body = rawhttp.parse_response(rawhttp.read_response_bytes(c, 20))
            assert status == 200, body
            assert json.loads(body)["outputs"][0]["data"] == [1.0] * 4
            assert headers.get("connection") == "close"
            assert c.recv(1) == b"", "closed after the answer"
        deadline = time.monotonic() + 20
        while not results and time.monotonic() < deadline:
            time.sleep(0.01)
        assert results, "the gRPC call in flight is answered"
        result, error = results[0]
        assert error is None, error
        assert np.array_equal(result.as_numpy("OUTPUT0"), a)
        assert s.proc.wait(30) == 0
    finally:
        for c in conns:
            c.close()
        s.stop()
