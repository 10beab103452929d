"""HTTP/1.1 behaviour and robustness: keep-alive, pipelining, 100-continue,
chunked bodies, unknown paths and methods, garbage, slow and vanishing
clients, client timeouts on a slow model. After each, the server is alive and
still answers."""

import json
import socket
import time

import numpy as np
import pytest
import tritonclient.http as httpclient

import rawhttp


def simple_works(url):
    body, n = rawhttp.simple_binary_request()
    status, headers, resp = rawhttp.request(
        url,
        "POST",
        "/v2/models/simple/infer",
        body,
        {"Inference-Header-Content-Length": n},
    )
    assert status == 200, resp
    _, raw = rawhttp.split_binary_response(headers, resp)
    assert np.array_equal(
        np.frombuffer(raw["OUTPUT0"], np.int32), np.arange(16, dtype=np.int32) + 1
    )


def test_keep_alive_many_requests_one_connection(url):
    host, port = rawhttp.split_url(url)
    with socket.create_connection((host, port), timeout=5) as s:
        for _ in range(5):
            s.sendall(rawhttp.request_bytes("GET", "/v2/health/live"))
            status, _, _ = rawhttp.parse_response(rawhttp.read_response_bytes(s))
            assert status == 200


def test_pipelined_requests_answered_in_order(url):
    body, n = rawhttp.simple_binary_request()
    infer = rawhttp.request_bytes(
        "POST",
        "/v2/models/simple/infer",
        body,
        {"Inference-Header-Content-Length": n},
    )
    reqs = (
        rawhttp.request_bytes("GET", "/v2/models/simple")
        + infer
        + rawhttp.request_bytes("GET", "/v2/models/fault")
        + rawhttp.request_bytes("GET", "/v2/health/ready")
    )
    host, port = rawhttp.split_url(url)
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(reqs)
        data = b""
        deadline = time.monotonic() + 10
        responses = []
        while len(responses) < 4 and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            while rawhttp.response_complete(data):
                status, headers, rbody = rawhttp.parse_response(data)
                head_len = data.index(b"\r\n\r\n") + 4
                data = data[head_len + int(headers["content-length"]) :]
                responses.append((status, headers, rbody))
    assert [r[0] for r in responses] == [200, 200, 200, 200]
    assert json.loads(responses[0][2])["name"] == "simple"
    assert "inference-header-content-length" in responses[1][1]
    assert json.loads(responses[2][2])["name"] == "fault"


def test_expect_100_continue(url):
    body, n = rawhttp.simple_binary_request()
    head = rawhttp.request_bytes(
        "POST",
        "/v2/models/simple/infer",
        b"",
        {
            "Content-Length": str(len(body)),
            "Inference-Header-Content-Length": n,
            "Expect": "100-continue",
        },
    )
    host, port = rawhttp.split_url(url)
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(head)
        interim = s.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n"), interim
        s.sendall(body)
        status, headers, resp = rawhttp.parse_response(rawhttp.read_response_bytes(s))
    assert status == 200, resp


def test_chunked_request_body(url):
    body, n = rawhttp.simple_binary_request()
    chunks = b""
    for i in range(0, len(body), 50):
        piece = body[i : i + 50]
        chunks += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    chunks += b"0\r\n\r\n"
    req = rawhttp.request_bytes(
        "POST",
        "/v2/models/simple/infer",
        b"",
        {
            "Content-Length": None,
            "Transfer-Encoding": "chunked",
            "Inference-Header-Content-Length": n,
        },
    )
    status, headers, resp = rawhttp.parse_response(rawhttp.exchange(url, req + chunks))
    assert status == 200, resp
    _, raw = rawhttp.split_binary_response(headers, resp)
    assert np.frombuffer(raw["OUTPUT1"], np.int32).tolist() == list(range(-1, 15))


@pytest.mark.parametrize(
    "path",
    ["/", "/v1/models", "/v2/nothing", "/v2/models/simple/nothing", "/v2/health/dead"],
)
def test_unknown_path_404(url, path):
    status, _, body = rawhttp.request(url, "GET", path)
    assert status == 404, (status, body)


@pytest.mark.parametrize(
    "method,path",
    [
        ("DELETE", "/v2/health/live"),
        ("PUT", "/v2/models/simple/infer"),
        ("GET", "/v2/models/simple/infer"),
        ("POST", "/v2/health/ready"),
        ("PATCH", "/v2/models/simple/config"),
    ],
)
def test_wrong_method_405(url, method, path):
    status, _, body = rawhttp.request(url, method, path)
    assert status == 405, (status, body)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x01\x02\x03garbage\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /v2/models/simple/infer HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"POST /v2/models/simple/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /v2/health/live HTTP/1.1\r\nBad Header\r\n\r\n",
    ],
    ids=["binary", "no-path", "bad-version", "bad-length", "bad-chunk", "bad-header"],
)
def test_garbage_gets_400_or_close(server, url, garbage):
    data = rawhttp.exchange(url, garbage, timeout=5)
    if data:
        status, _, _ = rawhttp.parse_response(data)
        assert 400 <= status < 506 and status not in (404, 405), data[:200]
    assert server.alive()
    simple_works(url)


def test_huge_header_rejected(url):
    req = rawhttp.request_bytes("GET", "/v2/health/live", b"", {"X-Big": "a" * 200_000})
    data = rawhttp.exchange(url, req, timeout=5)
    if data:
        status, _, _ = rawhttp.parse_response(data)
        assert status in (400, 413, 431), data[:200]
    simple_works(url)


def test_slow_client_is_served(url):
    req = rawhttp.request_bytes("GET", "/v2/health/ready")
    host, port = rawhttp.split_url(url)
    with socket.create_connection((host, port), timeout=5) as s:
        for i in range(0, len(req), 8):
            s.sendall(req[i : i + 8])
            time.sleep(0.05)
        status, _, _ = rawhttp.parse_response(rawhttp.read_response_bytes(s))
    assert status == 200


def test_client_disconnects_mid_request(server, url):
    body, n = rawhttp.simple_binary_request()
    req = rawhttp.request_bytes(
        "POST",
        "/v2/models/simple/infer",
        body,
        {"Inference-Header-Content-Length": n},
    )
    host, port = rawhttp.split_url(url)
    for cut in (5, 40, len(req) - 10):
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(req[:cut])
        s.close()
    time.sleep(0.2)
    assert server.alive()
    simple_works(url)


def delay_input():
    inp = httpclient.InferInput("INPUT0", [1, 2], "FP32")
    inp.set_data_from_numpy(np.ones((1, 2), dtype=np.float32))
    return inp


def test_client_timeout_on_delay_model(server, url):
    c = httpclient.InferenceServerClient(url=url, network_timeout=0.5)
    try:
        with pytest.raises(Exception):
            c.infer("delay", [delay_input()], parameters={"execute_delay_ms": 3000})
    finally:
        c.close()
    assert server.alive()
    c = httpclient.InferenceServerClient(url=url)
    try:
        assert c.is_server_live()
        assert c.is_model_ready("delay")
    finally:
        c.close()
    simple_works(url)


def test_disconnect_cancels_execution(server, url):
    # Occupy both instances of `delay` with 30 s requests, then walk away.
    for _ in range(2):
        c = httpclient.InferenceServerClient(url=url, network_timeout=0.3)
        with pytest.raises(Exception):
            c.infer("delay", [delay_input()], parameters={"execute_delay_ms": 30000})
        c.close()
    # If the server noticed the disconnects, an instance frees up long before
    # the 30 s are over.
    c = httpclient.InferenceServerClient(url=url, network_timeout=20)
    try:
        start = time.monotonic()
        c.infer("delay", [delay_input()], parameters={"execute_delay_ms": 0})
        waited = time.monotonic() - start
    finally:
        c.close()
    assert waited < 20, f"a free instance took {waited:.1f}s: cancellation missed"
