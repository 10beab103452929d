"""OCR throughput and latency: nereid's `ocr` ensemble against rapidocr.

The images are tests/python/test_ocr.py's rendered samples (words, numbers,
several lines, a slanted and an upside-down line, a JPEG). For each
concurrency level, that many clients send them round-robin for DURATION
seconds, each waiting for its answer before sending the next:

  nereid    tritonclient gRPC, one client object per thread, to `ocr`
  rapidocr  one RapidOCR engine shared by the threads, in this process

Both run the same PP-OCR models on the same ONNX Runtime release
(onnxruntime==1.31.1 here, libonnxruntime 1.31.1 in nereid) with ONNX
Runtime's default thread settings on either side. Prints images/s and the
p50 and p99 latency per image for each; no figure is asserted.

  python benches/ocr/bench.py --grpc-url 127.0.0.1:8001 [--duration 10]
      [--concurrency 1 4]
"""

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "python"))
from test_ocr import SAMPLES, render  # noqa: E402


def nereid_worker(url):
    client = grpcclient.InferenceServerClient(url)

    def run(data):
        inp = grpcclient.InferInput("IMAGE", [1], "BYTES")
        inp.set_data_from_numpy(np.array([data], dtype=np.object_))
        res = client.infer("ocr", [inp])
        return res.as_numpy("TEXT")

    return run


def measure(make_worker, images, clients, duration):
    """Runs `clients` threads for `duration` seconds; returns (images/s,
    latencies in seconds)."""
    latencies = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def loop(i):
        work = make_worker()
        work(images[0])  # warm up connection and caches
        start.wait()
        n = i
        while time.perf_counter() < deadline[0]:
            t0 = time.perf_counter()
            work(images[n % len(images)])
            latencies[i].append(time.perf_counter() - t0)
            n += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + duration + 3600
    start.wait()
    began = time.perf_counter()
    deadline[0] = began + duration
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    flat = [x for per in latencies for x in per]
    return len(flat) / elapsed, flat


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grpc-url", required=True)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    args = ap.parse_args()

    images = [render(*spec) for spec in SAMPLES.values()]
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR()

    def rapid_worker():
        return lambda data: engine(data)

    rows = []
    for clients in args.concurrency:
        for name, make in (
            ("nereid", lambda: nereid_worker(args.grpc_url)),
            ("rapidocr", rapid_worker),
        ):
            rate, lat = measure(make, images, clients, args.duration)
            lat_ms = sorted(x * 1e3 for x in lat)
            p50 = statistics.median(lat_ms)
            p99 = lat_ms[min(len(lat_ms) - 1, int(len(lat_ms) * 0.99))]
            rows.append((clients, name, rate, p50, p99, len(lat)))
            print(
                f"{name:9} clients={clients}: {rate:7.2f} images/s, "
                f"p50 {p50:7.1f} ms, p99 {p99:7.1f} ms ({len(lat)} images)",
                flush=True,
            )
    print()
    print("| clients | nereid images/s | rapidocr images/s | ratio | nereid p50 ms | rapidocr p50 ms |")
    print("| ------- | --------------- | ----------------- | ----- | ------------- | --------------- |")
    by = {(c, n): (r, p) for c, n, r, p, _, _ in rows}
    for clients in args.concurrency:
        nr, np50 = by[(clients, "nereid")]
        rr, rp50 = by[(clients, "rapidocr")]
        print(f"| {clients} | {nr:.2f} | {rr:.2f} | {nr / rr:.2f}x | {np50:.1f} | {rp50:.1f} |")


if __name__ == "__main__":
    main()
