"""The dynamic batcher, queue policies, priorities, preserve_ordering and
cancellation of queued requests, seen through tritonclient over HTTP and
gRPC on the example models `dynamic_batch`, `priority_queue` and `ordered`.

Each test first occupies the model's single instance with a slow request
(`execute_delay_ms`), so what it sends next is queued; what the queue then
does is decided by the batcher's rules (unit-tested with a simulated clock
in src/scheduler/dynamic_batcher/tests.rs), not by timing. The tests wait
on the server's own record: the blocker has arrived (the request log, at
verbose level 1 while this module runs) and left the queue, and requests
are queued (`nv_inference_pending_request_count`). The only timing
assumption is that the requests sent behind the blocker arrive within its
execution time (seconds)."""

import queue
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import rawhttp
from conftest import Arrivals, wait_pending

BLOCK_MS = 1500


def http_input(values, name="INPUT0"):
    arr = np.array(values, dtype=np.int32)
    t = httpclient.InferInput(name, list(arr.shape), "INT32")
    t.set_data_from_numpy(arr)
    return t


def grpc_input(values, name="INPUT0"):
    arr = np.array(values, dtype=np.int32)
    t = grpcclient.InferInput(name, list(arr.shape), "INT32")
    t.set_data_from_numpy(arr)
    return t


def stats(url, model):
    c = httpclient.InferenceServerClient(url)
    try:
        return c.get_inference_statistics(model)["model_stats"][0]
    finally:
        c.close()


def batch_counts(model_stats):
    return {
        b["batch_size"]: b["compute_infer"]["count"]
        for b in model_stats.get("batch_stats", [])
    }


def wait_until(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Blocker:
    """A slow request on its own thread, holding the model's one instance."""

    def __init__(self, url, model, values, extra_params=None, ms=BLOCK_MS):
        params = {"execute_delay_ms": ms}
        params.update(extra_params or {})
        self.result = queue.Queue()

        def run():
            c = httpclient.InferenceServerClient(url, network_timeout=60)
            try:
                r = c.infer(model, [http_input(values)], parameters=params)
                self.result.put(r.as_numpy("OUTPUT0"))
            except Exception as e:  # noqa: BLE001 - handed to the test
                self.result.put(e)
            finally:
                c.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self):
        out = self.result.get(timeout=60)
        if isinstance(out, Exception):
            raise out
        return out


@pytest.fixture(scope="module", autouse=True)
def request_log(server):
    """The shared server logs each request while these tests run (what
    `Arrivals` reads), and goes back to its level after."""
    c = httpclient.InferenceServerClient(server.url)
    level = c.get_log_settings()["log_verbose_level"]
    c.update_log_settings({"log_verbose_level": 1})
    yield
    c.update_log_settings({"log_verbose_level": level})
    c.close()


def hold(server, model, values, **kwargs):
    """A Blocker that, when this returns, has reached the server and left
    the queue: it holds the model's one instance."""
    arrivals = Arrivals(server, model)
    blocker = Blocker(server.url, model, values, **kwargs)
    arrivals.wait(1)
    wait_pending(server, model, 0)
    return blocker


def infer_http(url, model, values, params=None):
    c = httpclient.InferenceServerClient(url, network_timeout=60)
    try:
        return c.infer(model, [http_input(values)], parameters=params).as_numpy(
            "OUTPUT0"
        )
    finally:
        c.close()


def test_requests_queued_behind_a_busy_instance_form_a_preferred_batch(server, url):
    before = stats(url, "dynamic_batch")
    # Past its 20 ms queue delay, executing alone.
    blocker = hold(server, "dynamic_batch", [[9, 9, 9, 9]])
    rows = [[[i, i + 1, i + 2, i + 3]] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(infer_http, url, "dynamic_batch", r) for r in rows]
        results = [f.result(timeout=60) for f in futures]
    np.testing.assert_array_equal(blocker.join(), [[9, 9, 9, 9]])
    for sent, got in zip(rows, results):
        np.testing.assert_array_equal(got, sent)
    after = stats(url, "dynamic_batch")
    assert int(after["inference_count"]) - int(before["inference_count"]) == 5
    assert int(after["execution_count"]) - int(before["execution_count"]) == 2
    b0, b1 = batch_counts(before), batch_counts(after)
    assert b1.get(4, 0) - b0.get(4, 0) == 1, after["batch_stats"]
    assert b1.get(1, 0) - b0.get(1, 0) == 1, after["batch_stats"]


def test_a_lone_request_goes_after_the_queue_delay(url):
    before = stats(url, "dynamic_batch")
    out = infer_http(url, "dynamic_batch", [[1, 2, 3, 4], [5, 6, 7, 8]])
    np.testing.assert_array_equal(out, [[1, 2, 3, 4], [5, 6, 7, 8]])
    after = stats(url, "dynamic_batch")
    assert batch_counts(after).get(2, 0) - batch_counts(before).get(2, 0) == 1


def test_a_full_queue_answers_503_over_http_and_unavailable_over_grpc(server, url, grpc_url):
    blocker = hold(server, "priority_queue", [[0]])
    # Level 2 (the default) holds two queued requests.
    with ThreadPoolExecutor(2) as pool:
        queued = [pool.submit(infer_http, url, "priority_queue", [[i]]) for i in (1, 2)]
        wait_pending(server, "priority_queue", 2)
        with pytest.raises(InferenceServerException) as e:
            infer_http(url, "priority_queue", [[3]])
        assert e.value.status() == "503"
        assert "Exceeds maximum queue size" in e.value.message()
        g = grpcclient.InferenceServerClient(grpc_url)
        with pytest.raises(InferenceServerException) as e:
            g.infer("priority_queue", [grpc_input([[4]])])
        assert e.value.status() == "StatusCode.UNAVAILABLE"
        assert "Exceeds maximum queue size" in e.value.message()
        # Level 1 has no limit.
        high = g.infer("priority_queue", [grpc_input([[5]])], priority=1)
        np.testing.assert_array_equal(high.as_numpy("OUTPUT0"), [[5]])
        g.close()
        for i, f in zip((1, 2), queued):
            np.testing.assert_array_equal(f.result(timeout=60), [[i]])
    blocker.join()


def test_higher_priority_runs_first(server, url):
    blocker = hold(server, "priority_queue", [[0]])
    order = []
    lock = threading.Lock()
    results = queue.Queue()

    def send_one(value, priority):
        c = httpclient.InferenceServerClient(url, network_timeout=60)
        try:
            # 100 ms each, so the order of completion is the order of
            # execution.
            c.infer(
                "priority_queue",
                [http_input([[value]])],
                priority=priority,
                parameters={"execute_delay_ms": 100},
            )
            with lock:
                order.append(value)
        except Exception as e:  # noqa: BLE001
            results.put(e)
        finally:
            c.close()

    threads = []
    for queued, (value, priority) in enumerate(((1, 2), (2, 2), (3, 1)), start=1):
        t = threading.Thread(target=send_one, args=(value, priority))
        t.start()
        threads.append(t)
        # Arrival order 1, 2, 3 while the blocker runs.
        wait_pending(server, "priority_queue", queued)
    for t in threads:
        t.join(60)
    blocker.join()
    assert results.empty(), results.get()
    assert order == [3, 1, 2]


def test_a_queue_timeout_rejects_on_time_even_while_the_instance_is_busy(server, url, grpc_url):
    blocker = hold(server, "priority_queue", [[0]], ms=3000)
    start = time.monotonic()
    c = httpclient.InferenceServerClient(url, network_timeout=60)
    with pytest.raises(InferenceServerException) as e:
        c.infer("priority_queue", [http_input([[1]])], timeout=200_000)
    c.close()
    assert e.value.status() == "503"
    assert "Request timeout expired" in e.value.message()
    g = grpcclient.InferenceServerClient(grpc_url)
    with pytest.raises(InferenceServerException) as e:
        g.infer("priority_queue", [grpc_input([[2]])], timeout=200_000)
    g.close()
    assert e.value.status() == "StatusCode.UNAVAILABLE"
    assert "Request timeout expired" in e.value.message()
    # Both were refused long before the blocker's 3 s were over.
    assert time.monotonic() - start < 2.5
    blocker.join()


def test_preserve_ordering_holds_a_quick_response_behind_a_slow_one(url, grpc_url):
    g = grpcclient.InferenceServerClient(grpc_url)
    responses = queue.Queue()
    g.start_stream(callback=lambda result, error: responses.put((result, error)))
    g.async_stream_infer(
        "ordered",
        [grpc_input([[1]])],
        request_id="slow",
        parameters={"execute_delay_ms": 800},
    )
    g.async_stream_infer("ordered", [grpc_input([[2]])], request_id="quick")
    got = []
    for _ in range(2):
        result, error = responses.get(timeout=30)
        assert error is None, error
        got.append(result.get_response().id)
    g.stop_stream()
    g.close()
    # The quick one ran on the second instance at once, but waited.
    assert got == ["slow", "quick"]


def test_a_disconnected_client_leaves_the_queue_at_once(server, url):
    blocker = hold(server, "priority_queue", [[0]], ms=3000)
    before = stats(url, "priority_queue")
    header = {
        "inputs": [
            {
                "name": "INPUT0",
                "shape": [1, 1],
                "datatype": "INT32",
                "parameters": {"binary_data_size": 4},
            }
        ]
    }
    body, header_len = rawhttp.binary_infer_body(
        header, [np.array([7], dtype=np.int32).tobytes()]
    )
    request = rawhttp.request_bytes(
        "POST",
        "/v2/models/priority_queue/infer",
        body,
        {"Inference-Header-Content-Length": str(header_len)},
    )
    host, port = rawhttp.split_url(url)
    s = socket.create_connection((host, port))
    s.sendall(request)
    wait_pending(server, "priority_queue", 1)  # queued behind the blocker
    s.close()
    wait_until(
        lambda: int(stats(url, "priority_queue")["inference_stats"]["fail"]["count"])
        == int(before["inference_stats"]["fail"]["count"]) + 1,
        timeout=2.0,
        what="the cancelled request to be counted as failed",
    )
    # Counted while the blocker still runs: it left the queue, not the head.
    assert blocker.result.empty()
    blocker.join()


def test_a_grpc_deadline_cancels_a_queued_request(server, url, grpc_url):
    blocker = hold(server, "priority_queue", [[0]], ms=3000)
    before = stats(url, "priority_queue")
    g = grpcclient.InferenceServerClient(grpc_url)
    with pytest.raises(InferenceServerException) as e:
        g.infer("priority_queue", [grpc_input([[3]])], client_timeout=0.3)
    g.close()
    assert e.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    wait_until(
        lambda: int(stats(url, "priority_queue")["inference_stats"]["fail"]["count"])
        == int(before["inference_stats"]["fail"]["count"]) + 1,
        timeout=2.0,
        what="the expired request to be counted as failed",
    )
    assert blocker.result.empty()
    blocker.join()
