"""Small raw-HTTP helpers for tests that must send what no client library
would: hand-built binary-extension bodies, wrong lengths, garbage bytes."""

import json
import socket
import struct
import time

import numpy as np


def split_url(url: str):
    host, port = url.rsplit(":", 1)
    return host, int(port)


def exchange(url: str, raw: bytes, timeout=5.0, shutdown_write=False) -> bytes:
    """Sends `raw` on a new connection and reads until the server closes the
    connection, `timeout` passes, or one complete response has arrived."""
    host, port = split_url(url)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(raw)
        if shutdown_write:
            s.shutdown(socket.SHUT_WR)
        return read_response_bytes(s, timeout)


def read_response_bytes(s: socket.socket, timeout=5.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
        if response_complete(data):
            break
    return data


def response_complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    status = head.split(b"\r\n", 1)[0]
    if b" 100 " in status + b" ":
        # An interim 100 Continue; the final response follows.
        return response_complete(body)
    headers = parse_headers(head)
    if "content-length" in headers:
        return len(body) >= int(headers["content-length"])
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return body.endswith(b"0\r\n\r\n")
    return False


def parse_headers(head: bytes) -> dict:
    out = {}
    for line in head.split(b"\r\n")[1:]:
        if b":" in line:
            k, v = line.split(b":", 1)
            out[k.decode().strip().lower()] = v.decode().strip()
    return out


def parse_response(data: bytes):
    """Returns (status, headers, body) of the final response in `data`."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete HTTP response head in {data[:200]!r}"
    status_line = head.split(b"\r\n", 1)[0].decode()
    status = int(status_line.split()[1])
    if status == 100:
        return parse_response(body)
    headers = parse_headers(head)
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return status, headers, body


def request_bytes(method, path, body=b"", headers=None, host="localhost") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    hdrs = {"Content-Length": str(len(body))} if body or method == "POST" else {}
    hdrs.update(headers or {})
    for k, v in hdrs.items():
        if v is not None:
            lines.append(f"{k}: {v}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def request(url, method, path, body=b"", headers=None, timeout=10.0):
    """One request on a fresh connection; returns (status, headers, body)."""
    data = exchange(url, request_bytes(method, path, body, headers), timeout)
    return parse_response(data)


def error_of(body: bytes) -> str:
    doc = json.loads(body)
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str), doc
    return doc["error"]


def binary_infer_body(header: dict, tensors) -> tuple[bytes, int]:
    """A binary-extension body: JSON header then raw tensor bytes."""
    head = json.dumps(header).encode()
    return head + b"".join(tensors), len(head)


def bytes_elements(items) -> bytes:
    return b"".join(struct.pack("<I", len(x)) + x for x in items)


def simple_binary_request(a=None, b=None, outputs_binary=True):
    """Header + tensors for `simple` with both inputs and outputs binary."""
    a = np.arange(16, dtype=np.int32) if a is None else a
    b = np.ones(16, dtype=np.int32) if b is None else b
    header = {
        "inputs": [
            {
                "name": "INPUT0",
                "shape": [1, 16],
                "datatype": "INT32",
                "parameters": {"binary_data_size": a.nbytes},
            },
            {
                "name": "INPUT1",
                "shape": [1, 16],
                "datatype": "INT32",
                "parameters": {"binary_data_size": b.nbytes},
            },
        ],
        "outputs": [
            {"name": "OUTPUT0", "parameters": {"binary_data": outputs_binary}},
            {"name": "OUTPUT1", "parameters": {"binary_data": outputs_binary}},
        ],
    }
    return binary_infer_body(header, [a.tobytes(), b.tobytes()])


def split_binary_response(headers: dict, body: bytes):
    """Returns (json_doc, {output name: raw bytes}) of a binary-extension response."""
    n = headers.get("inference-header-content-length")
    if n is None:
        return json.loads(body), {}
    n = int(n)
    doc = json.loads(body[:n])
    raw = {}
    offset = n
    for out in doc.get("outputs", []):
        size = out.get("parameters", {}).get("binary_data_size")
        if size is not None:
            raw[out["name"]] = body[offset : offset + size]
            offset += size
    assert offset == len(body), f"binary section is {len(body) - n} bytes, outputs claim {offset - n}"
    return doc, raw
