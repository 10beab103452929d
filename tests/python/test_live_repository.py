"""Live repository changes, readiness and model warmup, on servers of the
test's own: poll mode (`--repository-poll-secs 1`) on a temporary copy of a
few example models, explicit-mode reloads, readiness while starting (held by
a slow warmup) and after SIGTERM. Waiting for a poll means asking the index
until a condition holds, with a timeout."""

import json
import shutil
import signal
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import Arrivals, NereidServer, model_repository

POLL_ARGS = ["--model-control-mode=poll", "--repository-poll-secs=1"]


def wait_for(condition, what, timeout=30.0):
    """Asks `condition` until it returns something truthy, or fails."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def index_rows(client, name):
    return [m for m in client.get_model_repository_index() if m["name"] == name]


def simple_infer(client, model="simple"):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 2, dtype=np.int32)
    inputs = [httpclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    r = client.infer(model, inputs)
    assert np.array_equal(r.as_numpy("OUTPUT0"), a + b)
    assert np.array_equal(r.as_numpy("OUTPUT1"), a - b)


def simple_config_text(max_batch_size):
    text = (model_repository() / "simple" / "config.pbtxt").read_text()
    return text.replace("max_batch_size: 8", f"max_batch_size: {max_batch_size}")


class InferLoop:
    """Client threads that infer on `simple` until stopped, recording every
    failure."""

    def __init__(self, url, threads=2):
        self.url = url
        self.stop_flag = threading.Event()
        self.ok = 0
        self.failures = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run) for _ in range(threads)]

    def run(self):
        c = httpclient.InferenceServerClient(url=self.url, network_timeout=30)
        try:
            while not self.stop_flag.is_set():
                try:
                    simple_infer(c)
                    with self.lock:
                        self.ok += 1
                except Exception as e:  # noqa: BLE001 - every failure is recorded
                    with self.lock:
                        self.failures.append(repr(e))
        finally:
            c.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(60)


@pytest.fixture()
def poll_repository(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("simple", "simple_warmup"):
        shutil.copytree(model_repository() / name, repo / name)
    return repo


@pytest.fixture()
def poll_server(poll_repository):
    s = NereidServer(POLL_ARGS, repository=poll_repository, name="nereid-poll").start()
    yield s
    s.stop()


def test_warmup_model_is_ready_and_logged(poll_server):
    c = httpclient.InferenceServerClient(url=poll_server.url)
    assert c.is_model_ready("simple_warmup")
    simple_infer(c, "simple_warmup")
    config = c.get_model_config("simple_warmup")
    assert [w["name"] for w in config["model_warmup"]] == ["random_batch4", "from_file"]
    c.close()
    log = poll_server.log_path.read_text(errors="replace")
    assert "running warmup sample 'random_batch4' 2 time(s) on each of 2 instance(s)" in log
    assert "running warmup sample 'from_file'" in log


def test_poll_follows_add_modify_break_fix_remove(poll_server, poll_repository):
    c = httpclient.InferenceServerClient(url=poll_server.url)
    g = grpcclient.InferenceServerClient(url=poll_server.grpc_url)
    try:
        # Add: a new model appears.
        shutil.copytree(model_repository() / "identity_fp32", poll_repository / "identity_fp32")
        wait_for(
            lambda: [r for r in index_rows(c, "identity_fp32") if r.get("state") == "READY"],
            "identity_fp32 to load",
        )
        assert g.is_model_ready("identity_fp32")

        # Modify: reloaded, the new configuration visible on both protocols.
        (poll_repository / "simple" / "config.pbtxt").write_text(simple_config_text(4))
        wait_for(
            lambda: c.get_model_config("simple")["max_batch_size"] == 4, "simple to reload"
        )
        assert g.get_model_config("simple", as_json=True)["config"]["max_batch_size"] == 4
        simple_infer(c)

        # Break: the error is reported, the previous version keeps serving.
        (poll_repository / "simple" / "config.pbtxt").write_text(simple_config_text(-2))
        rows = wait_for(
            lambda: [r for r in index_rows(c, "simple") if r.get("reason")],
            "the failed reload to show in the index",
        )
        assert rows[0]["state"] == "READY", rows
        assert "max_batch_size must be >= 0" in rows[0]["reason"], rows
        grpc_rows = [
            m
            for m in g.get_model_repository_index(as_json=True)["models"]
            if m["name"] == "simple"
        ]
        assert "max_batch_size must be >= 0" in grpc_rows[0]["reason"], grpc_rows
        assert c.is_model_ready("simple") and g.is_model_ready("simple")
        assert c.get_model_config("simple")["max_batch_size"] == 4
        simple_infer(c)
        assert "max_batch_size must be >= 0" in poll_server.log_path.read_text(errors="replace")

        # Fix: reloaded, the reason gone.
        (poll_repository / "simple" / "config.pbtxt").write_text(simple_config_text(2))
        wait_for(
            lambda: c.get_model_config("simple")["max_batch_size"] == 2, "the fixed reload"
        )
        assert all(not r.get("reason") for r in index_rows(c, "simple"))

        # Remove: unloaded.
        shutil.rmtree(poll_repository / "identity_fp32")
        wait_for(lambda: not c.is_model_ready("identity_fp32"), "identity_fp32 to unload")
        assert not index_rows(c, "identity_fp32")
        # Not ready while the version is UNLOADING (strict readiness counts
        # it); ready again once the unload has finished.
        wait_for(c.is_server_ready, "the server to be ready after the unload")
    finally:
        c.close()
        g.close()


def test_poll_reload_under_load_fails_no_request(poll_server, poll_repository):
    c = httpclient.InferenceServerClient(url=poll_server.url)
    with InferLoop(poll_server.url) as loop:
        for size in (7, 6, 5):
            (poll_repository / "simple" / "config.pbtxt").write_text(simple_config_text(size))
            wait_for(
                lambda size=size: c.get_model_config("simple")["max_batch_size"] == size,
                f"reload to max_batch_size {size}",
            )
    c.close()
    assert loop.failures == [], loop.failures[:5]
    assert loop.ok > 0


def simple_override(max_batch_size):
    io = lambda n: {"name": n, "data_type": "TYPE_INT32", "dims": [16]}  # noqa: E731
    return json.dumps(
        {
            "backend": "add_sub",
            "max_batch_size": max_batch_size,
            "input": [io("INPUT0"), io("INPUT1")],
            "output": [io("OUTPUT0"), io("OUTPUT1")],
        }
    )


def test_explicit_reload_is_atomic_and_failure_keeps_serving(explicit_repository):
    s = NereidServer(
        ["--model-control-mode=explicit", "--load-model=simple"],
        repository=explicit_repository,
        name="nereid-explicit-reload",
    ).start()
    c = httpclient.InferenceServerClient(url=s.url)
    g = grpcclient.InferenceServerClient(url=s.grpc_url)
    try:
        with InferLoop(s.url) as loop:
            for size in (3, 4, 5):
                c.load_model("simple", config=simple_override(size))
                assert c.get_model_config("simple")["max_batch_size"] == size
                g.load_model("simple", config=simple_override(size + 1))
                assert c.get_model_config("simple")["max_batch_size"] == size + 1
        assert loop.failures == [], loop.failures[:5]
        assert loop.ok > 0

        with pytest.raises(InferenceServerException) as failed:
            g.load_model("simple", config=simple_override(-2))
        assert "max_batch_size must be >= 0" in str(failed.value)
        with pytest.raises(InferenceServerException) as failed:
            c.load_model("simple", config=simple_override(-2))
        assert "max_batch_size must be >= 0" in str(failed.value)
        rows = index_rows(c, "simple")
        assert rows[0]["state"] == "READY" and "max_batch_size must be >= 0" in rows[0]["reason"]
        assert c.is_server_ready(), "the model still serves"
        simple_infer(c)
        assert c.get_model_config("simple")["max_batch_size"] == 6

        # A model whose first load fails is UNAVAILABLE with the reason.
        broken = explicit_repository / "simple_int8" / "config.pbtxt"
        broken.write_text(broken.read_text().replace("max_batch_size: 8", "max_batch_size: -3"))
        with pytest.raises(InferenceServerException):
            c.load_model("simple_int8")
        rows = index_rows(c, "simple_int8")
        assert rows[0]["state"] == "UNAVAILABLE" and "max_batch_size" in rows[0]["reason"]
        assert not c.is_model_ready("simple_int8")
    finally:
        c.close()
        g.close()
        s.stop()


def delay_warmup_repository(tmp_path, delay_ms):
    """`delay` with a warmup that takes `delay_ms` on each of its two
    instances, so loading it holds startup for twice that."""
    repo = tmp_path / "slow"
    repo.mkdir()
    shutil.copytree(model_repository() / "delay", repo / "delay")
    config = repo / "delay" / "config.pbtxt"
    config.write_text(
        config.read_text().replace('string_value: "1000"', f'string_value: "{delay_ms}"')
        + 'model_warmup [ { name: "slow" inputs { key: "INPUT0" value '
        "{ data_type: TYPE_FP32 dims: [ 2 ] zero_data: true } } } ]\n"
    )
    return repo


@pytest.mark.parametrize("strict", ["true", "false"])
def test_not_ready_while_starting_and_after_sigterm(tmp_path, strict):
    repo = delay_warmup_repository(tmp_path, 1500)
    s = NereidServer(
        [f"--strict-readiness={strict}", "--exit-timeout-secs=20", "--log-verbose=1"],
        repository=repo,
        name="nereid-startup",
    )
    s.start(ready_path="/v2/health/live")
    c = httpclient.InferenceServerClient(url=s.url, network_timeout=30)
    g = grpcclient.InferenceServerClient(url=s.grpc_url)
    try:
        seen = []

        def started():
            # Model state first: readiness seen afterwards cannot be older.
            loaded = c.is_model_ready("delay")
            ready, grpc_ready = c.is_server_ready(), g.is_server_ready()
            if not loaded:
                assert not ready and not grpc_ready, "ready before the startup load finished"
            seen.append(ready)
            return ready

        wait_for(started, "the startup load")
        assert seen[0] is False, "the warmup (3 s) should hold startup long enough to see it"
        assert g.is_server_ready()
        assert "running warmup sample 'slow'" in s.log_path.read_text(errors="replace")

        results = []

        def slow_infer():
            inp = httpclient.InferInput("INPUT0", [1, 2], "FP32")
            inp.set_data_from_numpy(np.ones((1, 2), dtype=np.float32))
            h = httpclient.InferenceServerClient(url=s.url, network_timeout=30)
            try:
                h.infer("delay", [inp], parameters={"execute_delay_ms": 3000})
                results.append("ok")
            except Exception as e:  # noqa: BLE001 - the test inspects it
                results.append(e)
            finally:
                h.close()

        # A slow request, in the server before the signal, keeps the server
        # draining after it; readiness is refused either as an answer or by
        # a closed endpoint.
        arrivals = Arrivals(s, "delay")
        t = threading.Thread(target=slow_infer)
        t.start()
        arrivals.wait(1)
        s.proc.send_signal(signal.SIGTERM)

        def not_ready(ask):
            try:
                return not ask()
            except Exception:  # noqa: BLE001 - a closed endpoint is not ready
                return True

        wait_for(lambda: not_ready(g.is_server_ready), "gRPC readiness to drop", timeout=10)
        wait_for(lambda: not_ready(c.is_server_ready), "HTTP readiness to drop", timeout=10)
        t.join(30)
        assert len(results) == 1, results
        assert s.proc.wait(30) == 0
    finally:
        c.close()
        g.close()
        s.stop()


def test_strict_readiness_false_with_a_failed_model(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(model_repository() / "simple", repo / "simple")
    shutil.copytree(model_repository() / "simple_int8", repo / "broken")
    (repo / "broken" / "config.pbtxt").write_text("max_batch_size: -1\n")
    for strict, expected in (("true", False), ("false", True)):
        s = NereidServer(
            [f"--strict-readiness={strict}", "--exit-on-error=false"],
            repository=repo,
            name="nereid-strict",
        )
        s.start(ready_path="/v2/health/live")
        c = httpclient.InferenceServerClient(url=s.url)
        try:
            wait_for(lambda: c.is_model_ready("simple"), "simple to load")
            # Startup is over once every model was attempted: the index says
            # so for the broken one.
            wait_for(
                lambda: any(r.get("state") == "UNAVAILABLE" for r in index_rows(c, "broken")),
                "the broken model to fail",
            )
            wait_for(lambda: "Status" in s.log_path.read_text(errors="replace"), "the model table")
            assert c.is_server_ready() is expected, strict
        finally:
            c.close()
            s.stop()
