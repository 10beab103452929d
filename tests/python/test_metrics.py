"""Statistics and Prometheus metrics after a known workload.

A server of this module's own (so every count starts at zero) runs a
workload whose outcome is fixed by the models, not by timing: successes of
batch 1 and 4 on `simple`, invalid requests (OTHER), the panicking `fault`
model (BACKEND), a gRPC deadline on the slow `delay` model (CANCELED), and
four slow requests on `priority_queue` (one instance, room for two queued:
exactly one is refused, REJECTED). The statistics extension over HTTP and
gRPC and `/metrics` must then report exactly those counts.

The only timing assumptions are the ones the scheduling tests make: a
request sent right away arrives well within another's execution time
(a second), and a 0.3 s deadline passes during a 1 s execution."""

import re
import shutil
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import Arrivals, NereidServer, model_repository
from test_scheduling import wait_until

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

# What the workload does to each model: successes, inferences, failures by
# reason, executions by batch size.
EXPECTED = {
    "simple": {
        "success": 4,
        "inference_count": 7,
        "fail": {"OTHER": 2},
        "batches": {1: 3, 4: 1},
    },
    "fault": {
        "success": 0,
        "inference_count": 0,
        "fail": {"BACKEND": 2},
        "batches": {1: 2},
    },
    "delay": {
        "success": 0,
        "inference_count": 0,
        "fail": {"CANCELED": 1},
        "batches": {1: 1},
    },
    "priority_queue": {
        "success": 3,
        "inference_count": 3,
        "fail": {"REJECTED": 1},
        "batches": {1: 3},
    },
    "identity_fp32": {
        "success": 0,
        "inference_count": 0,
        "fail": {},
        "batches": {},
    },
}
REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")


def scrape(metrics_url):
    """`/metrics` as {(name, ((label, value), ...)): value}, plus the TYPE of
    each family."""
    with urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = r.read().decode()
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples, types


def value(samples, name, model=None, **labels):
    if model is not None:
        labels.update(model=model, version="1")
    return samples[(name, tuple(sorted(labels.items())))]


def simple_inputs(module, rows, cols=16):
    a = np.arange(rows * cols, dtype=np.int32).reshape(rows, cols)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        t = module.InferInput(name, [rows, cols], "INT32")
        t.set_data_from_numpy(a)
        inputs.append(t)
    return inputs


def int32_input(module, values, name="INPUT0"):
    arr = np.array(values, dtype=np.int32)
    t = module.InferInput(name, list(arr.shape), "INT32")
    t.set_data_from_numpy(arr)
    return t


def run_workload(server):
    h = httpclient.InferenceServerClient(server.url, network_timeout=60)
    g = grpcclient.InferenceServerClient(server.grpc_url)

    for _ in range(3):
        r = h.infer("simple", simple_inputs(httpclient, 1))
        assert r.as_numpy("OUTPUT0").shape == (1, 16)
    r = g.infer("simple", simple_inputs(grpcclient, 4))
    assert r.as_numpy("OUTPUT0").shape == (4, 16)

    # Shapes the model does not take: refused by the scheduler (OTHER).
    with pytest.raises(InferenceServerException) as e:
        h.infer("simple", simple_inputs(httpclient, 1, cols=15))
    assert e.value.status() == "400"
    with pytest.raises(InferenceServerException) as e:
        g.infer("simple", simple_inputs(grpcclient, 1, cols=15))
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"

    for _ in range(2):
        with pytest.raises(InferenceServerException):
            h.infer("fault", [int32_input(httpclient, [1, 2, 3, 4])])

    with pytest.raises(InferenceServerException) as e:
        t = grpcclient.InferInput("INPUT0", [1, 2], "FP32")
        t.set_data_from_numpy(np.ones((1, 2), dtype=np.float32))
        g.infer("delay", [t], client_timeout=0.3)
    assert e.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    wait_until(
        lambda: stats(h, "delay")["inference_stats"]["fail"]["count"] == 1,
        what="the cancelled request to be counted",
    )

    # One instance executing, two queued, the fourth refused. The first
    # request holds the instance for 3 s (the others, sent once it is in the
    # server and out of the queue, arrive well inside that); the queue limit
    # decides the rest.
    def send(i, delay_ms):
        c = httpclient.InferenceServerClient(server.url, network_timeout=60)
        try:
            c.infer(
                "priority_queue",
                [int32_input(httpclient, [[i]])],
                parameters={"execute_delay_ms": delay_ms},
            )
            return None
        except InferenceServerException as e:
            return e.status()
        finally:
            c.close()

    def pending():
        return value(
            scrape(server.metrics_url)[0],
            "nv_inference_pending_request_count",
            "priority_queue",
        )

    with ThreadPoolExecutor(4) as pool:
        arrivals = Arrivals(server, "priority_queue")
        futures = [pool.submit(send, 0, 3000)]
        arrivals.wait(1)
        wait_until(lambda: pending() == 0, what="the blocker to leave the queue")
        futures += [pool.submit(send, i, 0) for i in (1, 2, 3)]
        wait_until(lambda: pending() == 2, what="two requests queued on priority_queue")
        outcomes = sorted(str(f.result(timeout=60)) for f in futures)
    assert outcomes == ["503", "None", "None", "None"]
    h.close()
    g.close()


def stats(client, model):
    return client.get_inference_statistics(model)["model_stats"][0]


@pytest.fixture(scope="module")
def loaded():
    """A server of its own with the workload run on it."""
    # Verbose level 1 logs each request, which `Arrivals` reads.
    s = NereidServer(
        ["--metrics-interval-ms=100", "--log-verbose=1"], name="nereid-metrics"
    ).start()
    try:
        run_workload(s)
        yield s
    finally:
        s.stop()


def check_model_stats(model, s):
    want = EXPECTED[model]
    inf = s["inference_stats"]
    assert int(s["inference_count"]) == want["inference_count"], s
    assert int(s["execution_count"]) == sum(want["batches"].values()), s
    assert int(inf["success"]["count"]) == want["success"], s
    assert int(inf["fail"]["count"]) == sum(want["fail"].values()), s
    for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert int(inf[phase]["count"]) == want["success"], (phase, s)
    for cache in ("cache_hit", "cache_miss"):
        assert int(inf[cache]["count"]) == 0 and int(inf[cache]["ns"]) == 0
    batches = {
        int(b["batch_size"]): int(b["compute_infer"]["count"])
        for b in s.get("batch_stats", [])
    }
    assert batches == want["batches"], s
    assert (int(s["last_inference"]) > 0) == (want["success"] > 0), s


@pytest.mark.parametrize("model", sorted(EXPECTED))
def test_http_statistics_count_the_workload(loaded, model):
    c = httpclient.InferenceServerClient(loaded.url)
    s = stats(c, model)
    c.close()
    assert (s["name"], s["version"]) == (model, "1")
    check_model_stats(model, s)


@pytest.mark.parametrize("model", sorted(EXPECTED))
def test_grpc_statistics_count_the_workload(loaded, model):
    g = grpcclient.InferenceServerClient(loaded.grpc_url)
    s = g.get_inference_statistics(model, as_json=True)["model_stats"][0]
    g.close()
    assert (s["name"], s["version"]) == (model, "1")
    # The JSON form of the proto leaves zero counts out.
    phases = ("success", "fail", "queue", "compute_input", "compute_infer")
    for phase in (*phases, "compute_output", "cache_hit", "cache_miss"):
        s["inference_stats"].setdefault(phase, {}).setdefault("count", 0)
        s["inference_stats"][phase].setdefault("ns", 0)
    for b in s.get("batch_stats", []):
        b["compute_infer"].setdefault("count", 0)
    s.setdefault("inference_count", 0)
    s.setdefault("execution_count", 0)
    s.setdefault("last_inference", 0)
    check_model_stats(model, s)


@pytest.mark.parametrize("model", sorted(EXPECTED))
def test_metrics_count_the_workload(loaded, model):
    samples, types = scrape(loaded.metrics_url)
    want = EXPECTED[model]
    executions = sum(want["batches"].values())

    def v(name, **labels):
        return value(samples, name, model, **labels)

    assert v("nv_inference_request_success") == want["success"]
    for reason in REASONS:
        assert v("nv_inference_request_failure", reason=reason) == want["fail"].get(
            reason, 0
        ), reason
    assert v("nv_inference_count") == want["inference_count"]
    assert v("nv_inference_exec_count") == executions
    assert v("nv_inference_pending_request_count") == 0
    assert v("nereid_inference_request_cancelled_total") == want["fail"].get(
        "CANCELED", 0
    )
    for name in ("request", "queue"):
        h = f"nereid_inference_{name}_duration_seconds"
        assert v(f"{h}_count") == want["success"]
        assert v(f"{h}_bucket", le="+Inf") == want["success"]
    h = "nereid_inference_compute_infer_duration_seconds"
    assert v(f"{h}_count") == executions
    assert v("nereid_inference_batch_size_count") == executions
    assert v("nereid_inference_batch_size_sum") == sum(
        size * n for size, n in want["batches"].items()
    )
    for le, below in (("1", 1), ("2", 2), ("4", 4)):
        expected = sum(n for size, n in want["batches"].items() if size <= below)
        assert v("nereid_inference_batch_size_bucket", le=le) == expected, le
    dispatched = sum(
        n
        for (name, labels), n in samples.items()
        if name == "nereid_inference_dispatch_total" and ("model", model) in labels
    )
    assert dispatched == executions
    if want["success"]:
        assert v("nv_inference_request_duration_us") > 0
        assert v("nv_inference_compute_infer_duration_us") > 0

    for name, kind in (
        ("nv_inference_request_success", "counter"),
        ("nv_inference_request_failure", "counter"),
        ("nv_inference_count", "counter"),
        ("nv_inference_exec_count", "counter"),
        ("nv_inference_request_duration_us", "counter"),
        ("nv_inference_queue_duration_us", "counter"),
        ("nv_inference_compute_input_duration_us", "counter"),
        ("nv_inference_compute_infer_duration_us", "counter"),
        ("nv_inference_compute_output_duration_us", "counter"),
        ("nv_inference_pending_request_count", "gauge"),
        ("nereid_inference_request_duration_seconds", "histogram"),
        ("nereid_inference_batch_size", "histogram"),
    ):
        assert types[name] == kind, name


def meminfo_total_bytes():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def test_cpu_and_memory(loaded):
    wait_until(
        lambda: "nv_cpu_utilization" in scrape(loaded.metrics_url)[1],
        what="a CPU utilization sample (every 100 ms)",
    )
    samples, types = scrape(loaded.metrics_url)
    assert types["nv_cpu_utilization"] == "gauge"
    assert 0.0 <= value(samples, "nv_cpu_utilization") <= 1.0
    total = value(samples, "nv_cpu_memory_total_bytes")
    assert total == meminfo_total_bytes()
    assert 0 < value(samples, "nv_cpu_memory_used_bytes") < total


def get(url, method="GET"):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers


def test_only_get_metrics_is_served(loaded):
    base = f"http://{loaded.metrics_url}"
    assert get(f"{base}/metrics")[0] == 200
    assert get(f"{base}/")[0] == 404
    assert get(f"{base}/v2/health/ready")[0] == 404
    status, headers = get(f"{base}/metrics", "POST")
    assert status == 405 and headers["Allow"] == "GET"


@pytest.fixture()
def small_repository(tmp_path):
    repo = tmp_path / "repository"
    repo.mkdir()
    shutil.copytree(Path(model_repository()) / "simple", repo / "simple")
    return repo


def test_metrics_port_zero_picks_a_free_port(small_repository):
    s = NereidServer(
        ["--metrics-port=0"], repository=small_repository, name="nereid-metrics-0"
    ).start()
    try:
        found = re.search(r"Started Metrics Service at ([^\s\"]+)", s.log_path.read_text())
        assert found, s.log_tail()
        samples, _ = scrape(found.group(1))
        assert value(samples, "nv_inference_request_success", "simple") == 0
    finally:
        s.stop()


def test_allow_metrics_false_serves_no_metrics(small_repository):
    s = NereidServer(
        ["--allow-metrics=false"], repository=small_repository, name="nereid-no-metrics"
    ).start()
    try:
        assert "Metrics Service" not in s.log_path.read_text()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", s.metrics_port), timeout=5)
    finally:
        s.stop()
