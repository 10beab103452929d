"""Latency of one request as the tensor grows, with the tensor in the
request body and in system shared memory, through tritonclient (HTTP and
gRPC), on `identity_fp32` (the input comes back as the output).

For each size and path: `--count` sequential requests after a warmup, p50
and p99 in microseconds. With shared memory the input and the output stay
in regions registered once, so the server copies nothing on the way in and
writes the output once; in the body the tensor crosses the socket twice.
Prints one table."""

import argparse
import os
import statistics
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm

SIZES = [64, 4 << 10, 64 << 10, 1 << 20, 16 << 20]


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def measure(fn, count):
    for _ in range(max(3, count // 10)):
        fn()
    times = []
    for _ in range(count):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e6)
    return statistics.median(times), percentile(times, 0.99)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--http-url", required=True)
    p.add_argument("--grpc-url", required=True)
    p.add_argument("--count", type=int, default=200)
    args = p.parse_args()

    clients = {
        "http": (httpclient, httpclient.InferenceServerClient(url=args.http_url)),
        "grpc": (grpcclient, grpcclient.InferenceServerClient(url=args.grpc_url)),
    }
    rows = []
    for size in SIZES:
        n = size // 4
        data = np.random.default_rng(size).random((1, n), dtype=np.float32)
        key = f"/nereid-bench-{os.getpid()}-{size}"
        ins = shm.create_shared_memory_region("bench_in", key + "-in", size)
        outs = shm.create_shared_memory_region("bench_out", key + "-out", size)
        shm.set_shared_memory_region(ins, [data])
        try:
            for proto, (lib, client) in clients.items():
                count = args.count if size < (1 << 20) else max(20, args.count // 10)

                body_in = lib.InferInput("INPUT0", [1, n], "FP32")
                if proto == "http":
                    body_in.set_data_from_numpy(data, binary_data=True)
                    body_out = [lib.InferRequestedOutput("OUTPUT0", binary_data=True)]
                else:
                    body_in.set_data_from_numpy(data)
                    body_out = [lib.InferRequestedOutput("OUTPUT0")]

                def body():
                    r = client.infer("identity_fp32", [body_in], outputs=body_out)
                    assert r.as_numpy("OUTPUT0").shape == (1, n)

                client.unregister_system_shared_memory()
                client.register_system_shared_memory("bench_in", key + "-in", size)
                client.register_system_shared_memory("bench_out", key + "-out", size)
                shm_in = lib.InferInput("INPUT0", [1, n], "FP32")
                shm_in.set_shared_memory("bench_in", size)
                shm_out = lib.InferRequestedOutput("OUTPUT0")
                shm_out.set_shared_memory("bench_out", size)

                def in_shm():
                    client.infer("identity_fp32", [shm_in], outputs=[shm_out])

                for path, fn in (("body", body), ("system shm", in_shm)):
                    p50, p99 = measure(fn, count)
                    rows.append((size, proto, path, p50, p99))
                got = shm.get_contents_as_numpy(outs, np.float32, [1, n])
                assert np.array_equal(got, data), "shared memory output differs"
                client.unregister_system_shared_memory()
        finally:
            shm.destroy_shared_memory_region(ins)
            shm.destroy_shared_memory_region(outs)

    print(f"{'bytes':>10} {'proto':>5} {'path':>11} {'p50 us':>10} {'p99 us':>10}")
    for size, proto, path, p50, p99 in rows:
        print(f"{size:>10} {proto:>5} {path:>11} {p50:>10.0f} {p99:>10.0f}")


if __name__ == "__main__":
    main()
