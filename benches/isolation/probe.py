#!/usr/bin/env python3
"""Health-probe latency beside heavy requests on the same event loop.

Against a nereid started with --http-thread-count 1 (every connection on
one loop), a probe process asks GET /v2/health/ready on its own keep-alive
connection every millisecond, while a load process sends, back to back on
another connection:

  idle     nothing (the probe's baseline)
  bomb     a gzip bomb: ~2 MB of gzip that inflates to 2 GiB of zeros,
           posted to identity_fp32's infer (refused for its size)
  json32   a 32 MB JSON infer to identity_fp32 (8 M FP32 values)

For each, it prints the probe's p50/p99/max latency, how many requests the
load got through, and the server's peak RSS while it ran (sampled from
/proc every 5 ms). Standard library only; traffic stays on 127.0.0.1.

  probe.py --url 127.0.0.1:8000 --pid PID [--seconds 4]
"""

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import threading
import time
import zlib

BOMB_DECODED = 2 << 30
JSON_VALUES = 8 * 1024 * 1024


def connect(addr):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_response(s, buf):
    """Reads one response (Content-Length framed); returns (status, rest, closed)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            return None, b"", True
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    closed = False
    for line in lines[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v)
        if k.strip().lower() == "connection" and v.strip().lower() == "close":
            closed = True
    while len(rest) < length:
        chunk = s.recv(1 << 20)
        if not chunk:
            return status, b"", True
        rest += chunk
    return status, rest[length:], closed


def bomb_body(cache):
    if os.path.exists(cache):
        with open(cache, "rb") as f:
            return f.read()
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    parts = [c.compress(zeros) for _ in range(BOMB_DECODED >> 20)]
    parts.append(c.flush())
    data = b"".join(parts)
    with open(cache, "wb") as f:
        f.write(data)
    return data


def json_body():
    values = ",".join(["1.5"] * JSON_VALUES)
    return (
        '{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,%d],"data":[%s]}]}'
        % (JSON_VALUES, values)
    ).encode()


def load(addr, kind, body, stop, done):
    headers = {
        "bomb": "Content-Type: application/json\r\nContent-Encoding: gzip\r\n",
        "json32": "Content-Type: application/json\r\n",
    }[kind]
    head = (
        "POST /v2/models/identity_fp32/infer HTTP/1.1\r\nHost: b\r\n%s"
        "Content-Length: %d\r\n\r\n" % (headers, len(body))
    ).encode()
    s, buf = connect(addr), b""
    while not stop.is_set():
        try:
            s.sendall(head + body)
            status, buf, closed = read_response(s, buf)
        except OSError:
            status, closed = None, True
        if status is not None:
            with done.get_lock():
                done.value += 1
        if closed:
            s.close()
            s, buf = connect(addr), b""


def rss_sampler(pid, stop, peak):
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        peak[0] = max(peak[0], int(line.split()[1]) * 1024)
        except OSError:
            return
        time.sleep(0.005)


def probe(addr, seconds):
    s, buf = connect(addr), b""
    req = b"GET /v2/health/ready HTTP/1.1\r\nHost: p\r\n\r\n"
    lat = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        s.sendall(req)
        status, buf, _ = read_response(s, buf)
        lat.append(time.perf_counter() - t)
        assert status == 200, status
        time.sleep(0.001)
    s.close()
    return lat


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--cache", default="/tmp/nereid-bomb.gz")
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    bodies = {"bomb": bomb_body(args.cache), "json32": json_body()}
    print(
        f"bomb: {len(bodies['bomb']) / 1e6:.1f} MB gzip -> {BOMB_DECODED >> 30} GiB; "
        f"json32: {len(bodies['json32']) / 1e6:.1f} MB"
    )
    print(f"| binary | load | probe p50 ms | probe p99 ms | probe max ms | load requests | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for kind in ["idle", "bomb", "json32"]:
        stop, rss_stop = mp.Event(), threading.Event()
        done = mp.Value("i", 0)
        peak = [0]
        sampler = threading.Thread(target=rss_sampler, args=(args.pid, rss_stop, peak))
        sampler.start()
        worker = None
        if kind != "idle":
            worker = mp.Process(target=load, args=(args.url, kind, bodies[kind], stop, done))
            worker.start()
            time.sleep(0.2)  # let the first heavy request get going
        lat = probe(args.url, args.seconds)
        stop.set()
        if worker:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.terminate()
        rss_stop.set()
        sampler.join()
        lat.sort()
        p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3
        print(
            f"| {args.label} | {kind} | {statistics.median(lat) * 1e3:.3f} | {p(0.99):.3f} | "
            f"{lat[-1] * 1e3:.1f} | {done.value} | {peak[0] / 1e6:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
