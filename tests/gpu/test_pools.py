"""Memory pools too small for the traffic, on servers of their own: with
a 4 KiB pinned pool and --memory-pool-exhaustion=warn, 1 MiB tensors for
GPU instances still go through (allocated outside the pool, counted in
nereid_memory_pool_fallbacks_total{pool="pinned"}); with =fail they are
refused with a message that names the flag."""

import numpy as np
import pytest

from conftest import Client, ExtraServer, scrape

MODELS = ("simple_cuda", "identity_cuda")
MIB_FLOATS = (1 << 20) // 4


def small_pool_server(name, exhaustion):
    server = ExtraServer(
        name,
        [
            "--model-control-mode=explicit",
            *(f"--load-model={m}" for m in MODELS),
            "--pinned-memory-pool-byte-size=4096",
            f"--memory-pool-exhaustion={exhaustion}",
        ],
    )
    try:
        return server.wait_ready()
    except BaseException:
        server.stop()
        raise


@pytest.fixture(scope="module")
def warn_server():
    server = small_pool_server("nereid-pool-warn", "warn")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fail_server():
    server = small_pool_server("nereid-pool-fail", "fail")
    yield server
    server.stop()


def pinned_fallbacks(metrics_url):
    return sum(
        v
        for name, labels, v in scrape(metrics_url)
        if name == "nereid_memory_pool_fallbacks_total" and labels.get("pool") == "pinned"
    )


def one_mib(c):
    data = np.random.default_rng(1).standard_normal(MIB_FLOATS).astype(np.float32)
    return data, [c.input("INPUT0", data.shape, "FP32", data)]


def simple(c):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    return a, [c.input("INPUT0", a.shape, "INT32", a), c.input("INPUT1", a.shape, "INT32", a)]


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_exhausted_pinned_pool_falls_back(warn_server, proto):
    c = Client(proto, warn_server.http_url if proto == "http" else warn_server.grpc_url)
    try:
        before = pinned_fallbacks(warn_server.metrics_url)
        for _ in range(3):
            data, inputs = one_mib(c)
            result = c.infer("identity_cuda", inputs)
            assert np.array_equal(result.as_numpy("OUTPUT0"), data)
        a, inputs = simple(c)
        result = c.infer("simple_cuda", inputs)
        assert np.array_equal(result.as_numpy("OUTPUT0"), a + a)
        after = pinned_fallbacks(warn_server.metrics_url)
        assert after > before, f"nereid_memory_pool_fallbacks_total{{pool=\"pinned\"}} stayed at {after}"
    finally:
        c.close()
    assert warn_server.proc.poll() is None, warn_server.log_tail()


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_exhausted_pinned_pool_fails(fail_server, proto):
    c = Client(proto, fail_server.http_url if proto == "http" else fail_server.grpc_url)
    try:
        _, inputs = one_mib(c)
        message = c.expect_error(c.infer, "identity_cuda", inputs)
        assert "--memory-pool-exhaustion" in message or "--pinned-memory-pool-byte-size" in message, message
        # Small requests still fit the pool.
        a, inputs = simple(c)
        result = c.infer("simple_cuda", inputs)
        assert np.array_equal(result.as_numpy("OUTPUT1"), a - a)
    finally:
        c.close()
    assert fail_server.proc.poll() is None, fail_server.log_tail()
