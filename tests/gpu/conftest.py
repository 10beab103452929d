"""Fixtures for the GPU suite: tritonclient over HTTP and gRPC against a
nereid that `scripts/gpu/run.sh` started on a machine with a CUDA driver.

The runner hands the server over through the environment:

  NEREID_GPU_SUITE     set (to anything) by the runner; without it every
                       test is skipped, so a stray `pytest tests/gpu` on a
                       developer machine does nothing
  NEREID_HTTP_URL      host:port of the server's HTTP endpoint
  NEREID_GRPC_URL      host:port of its gRPC endpoint
  NEREID_METRICS_URL   host:port of its metrics endpoint
  NEREID_BIN           the binary, for the extra servers the pool tests start
  NEREID_MODEL_REPOSITORIES  the repositories those servers serve, ':'
                       between them (default: model_repository and
                       model_repository_gpu)
  NEREID_GPU_LOG_DIR   where those servers write their logs

Without a CUDA driver (libcuda.so.1 missing, cuInit failing, no device)
every test is skipped with "skipped: no CUDA driver"; that check comes
first and needs nothing but ctypes.
"""

import base64
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTOCOLS = ("http", "grpc")


def _cuda_driver_problem():
    """None when the driver loads, initializes and sees a device; else why not."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        return f"libcuda.so.1: {e}"
    if cuda.cuInit(0) != 0:
        return "cuInit failed"
    count = ctypes.c_int(0)
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return "no CUDA device"
    return None


CUDA_PROBLEM = _cuda_driver_problem()
SKIP_REASON = None
if CUDA_PROBLEM is not None:
    SKIP_REASON = "skipped: no CUDA driver"
elif not os.environ.get("NEREID_GPU_SUITE"):
    SKIP_REASON = "skipped: NEREID_GPU_SUITE is not set (scripts/gpu/run.sh sets it)"


def pytest_report_header(config):
    return f"nereid GPU suite: {SKIP_REASON or 'running'}" + (
        f" ({CUDA_PROBLEM})" if CUDA_PROBLEM else ""
    )


def pytest_collection_modifyitems(config, items):
    """Skip everything without a GPU; run the metrics checks last, after
    the other tests have driven the GPU paths."""
    if SKIP_REASON is not None:
        if CUDA_PROBLEM is not None:
            print("skipped: no CUDA driver", file=sys.stderr)
        marker = pytest.mark.skip(reason=SKIP_REASON)
        for item in items:
            item.add_marker(marker)
    items.sort(key=lambda item: item.module.__name__ == "test_metrics")


@pytest.fixture(scope="session")
def cudashm():
    """tritonclient.utils.cuda_shared_memory; imported only here, because
    importing it needs cuda-bindings and a driver."""
    try:
        import tritonclient.utils.cuda_shared_memory as module

        return module
    except Exception as e:  # RuntimeError without cuda-bindings, others from the runtime
        problem = repr(e)
    pytest.fail(f"tritonclient.utils.cuda_shared_memory does not import: {problem}")


def _env_url(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite through scripts/gpu/run.sh")
    return value


@pytest.fixture(scope="session")
def http_url():
    return _env_url("NEREID_HTTP_URL")


@pytest.fixture(scope="session")
def grpc_url():
    return _env_url("NEREID_GRPC_URL")


@pytest.fixture(scope="session")
def metrics_url():
    return _env_url("NEREID_METRICS_URL")


class Client:
    """One tritonclient (HTTP or gRPC) behind the calls both share, with
    the differences (requested outputs, status shapes, error codes)
    smoothed over."""

    def __init__(self, proto, url):
        self.proto = proto
        self.mod = httpclient if proto == "http" else grpcclient
        self.client = self.mod.InferenceServerClient(url=url)

    def close(self):
        self.client.close()

    def __getattr__(self, name):
        return getattr(self.client, name)

    def input(self, name, shape, datatype, data=None):
        inp = self.mod.InferInput(name, list(shape), datatype)
        if data is not None:
            inp.set_data_from_numpy(data)
        return inp

    def output(self, name):
        if self.proto == "http":
            return self.mod.InferRequestedOutput(name, binary_data=True)
        return self.mod.InferRequestedOutput(name)

    def in_body(self, result, name):
        """Whether output `name` came back in the response body (outputs
        written to shared memory do not)."""
        if self.proto == "http":
            output = result.get_output(name)
            assert output is not None, f"no output {name} in the response"
            return "data" in output or "binary_data_size" in (output.get("parameters") or {})
        response = result.get_response()
        names = [o.name for o in response.outputs]
        assert name in names, f"no output {name} in the response"
        index = names.index(name)
        raw = response.raw_output_contents
        return index < len(raw) and len(raw[index]) > 0

    def system_status(self, name=""):
        """{region name: {field: value}} of the registered system regions."""
        return self._regions(self.client.get_system_shared_memory_status(name, **self._json()))

    def cuda_status(self, name=""):
        """{region name: {field: value}} of the registered CUDA regions."""
        return self._regions(self.client.get_cuda_shared_memory_status(name, **self._json()))

    def _json(self):
        return {} if self.proto == "http" else {"as_json": True}

    @staticmethod
    def _regions(status):
        # HTTP answers a list of regions; gRPC (as JSON) a map under
        # "regions" whose 64-bit numbers are strings and whose zero fields
        # (device 0, offset 0) are left out.
        regions = status if isinstance(status, list) else list(status.get("regions", {}).values())
        out = {}
        for r in regions:
            fields = {"offset": 0, "device_id": 0, **r}
            out[r["name"]] = {
                k: (int(v) if k in ("offset", "byte_size", "device_id") else v) for k, v in fields.items()
            }
        return out

    def expect_error(self, fn, *args, contains=(), code=None, **kwargs):
        """Calls fn, which must fail; checks the message holds every string in
        `contains` and, when `code` is "invalid" or "not_found", the
        protocol's status for it. Returns the message."""
        with pytest.raises(InferenceServerException) as info:
            fn(*args, **kwargs)
        e = info.value
        message = e.message() or ""
        for part in (contains,) if isinstance(contains, str) else contains:
            assert part in message, f"{part!r} not in error {message!r}"
        if code is not None:
            want = {
                ("http", "invalid"): ("400",),
                ("grpc", "invalid"): ("StatusCode.INVALID_ARGUMENT",),
                ("http", "not_found"): ("400", "404"),
                ("grpc", "not_found"): ("StatusCode.NOT_FOUND", "StatusCode.INVALID_ARGUMENT"),
            }[(self.proto, code)]
            assert str(e.status()) in want, f"status {e.status()} not in {want}: {message}"
        return message

    def assert_serving(self):
        """The server still answers and still infers after an error."""
        assert self.client.is_server_live()
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        b = np.full((1, 16), 3, dtype=np.int32)
        result = self.client.infer(
            "simple",
            [self.input("INPUT0", a.shape, "INT32", a), self.input("INPUT1", b.shape, "INT32", b)],
        )
        assert np.array_equal(result.as_numpy("OUTPUT0"), a + b)


@pytest.fixture(params=PROTOCOLS)
def client(request, http_url, grpc_url):
    """A client over each protocol in turn, leaving no shm registered."""
    c = Client(request.param, http_url if request.param == "http" else grpc_url)
    yield c
    c.client.unregister_system_shared_memory()
    c.client.unregister_cuda_shared_memory()
    c.close()


_READINESS = {}


def wait_model_ready(c, model, timeout=30.0):
    """Fails the test unless `model` is ready; waits once per model per
    session (the runner already waited for the server's readiness), so a
    model that did not load fails its tests at once after the first."""
    if model not in _READINESS:
        deadline = time.monotonic() + timeout
        ready = False
        while not ready and time.monotonic() < deadline:
            try:
                ready = c.client.is_model_ready(model)
            except InferenceServerException:
                pass
            if not ready:
                time.sleep(0.2)
        _READINESS[model] = ready
    if not _READINESS[model]:
        pytest.fail(f"model '{model}' is not ready on the server (see server.log)")


# -- shared memory regions that clean up after themselves ---------------------


class SystemRegion:
    """A POSIX shm region made with tritonclient.utils.shared_memory."""

    def __init__(self, name, byte_size):
        self.name = name
        self.key = f"/nereid_gpu_{name}_{os.getpid()}"
        self.byte_size = byte_size
        self.handle = shm.create_shared_memory_region(name, self.key, byte_size)
        self.registered_on = []

    def set(self, *arrays, offset=0):
        shm.set_shared_memory_region(self.handle, list(arrays), offset=offset)

    def get(self, datatype, shape, offset=0):
        return shm.get_contents_as_numpy(self.handle, datatype, shape, offset=offset)

    def register(self, c):
        c.client.register_system_shared_memory(self.name, self.key, self.byte_size)
        self.registered_on.append(c)

    def destroy(self):
        shm.destroy_shared_memory_region(self.handle)


class CudaRegion:
    """A device allocation on GPU 0 exported with cudaIpcGetMemHandle,
    made with tritonclient.utils.cuda_shared_memory."""

    def __init__(self, cudashm, name, byte_size, device_id=0):
        self.cudashm = cudashm
        self.name = name
        self.byte_size = byte_size
        self.device_id = device_id
        self.handle = cudashm.create_shared_memory_region(name, byte_size, device_id)
        self.registered_on = []

    def raw_handle(self):
        """The IPC handle, base64-encoded, as the clients take it."""
        return self.cudashm.get_raw_handle(self.handle)

    def set(self, *arrays):
        self.cudashm.set_shared_memory_region(self.handle, list(arrays))

    def get(self, datatype, shape):
        return self.cudashm.get_contents_as_numpy(self.handle, datatype, shape)

    def register(self, c, byte_size=None):
        c.client.register_cuda_shared_memory(
            self.name, self.raw_handle(), self.device_id, byte_size or self.byte_size
        )
        self.registered_on.append(c)

    def destroy(self):
        self.cudashm.destroy_shared_memory_region(self.handle)


@pytest.fixture()
def regions(request, client):
    """Makes regions (system(name, size), cuda(name, size)); at the end of
    the test unregisters them from every server they were registered on,
    then frees them (in that order: a server never holds a mapping of
    freed memory). Depends on `client` so that it is torn down first."""
    made = []

    class Factory:
        @staticmethod
        def system(name, byte_size):
            r = SystemRegion(name, byte_size)
            made.append(r)
            return r

        @staticmethod
        def cuda(name, byte_size, device_id=0):
            r = CudaRegion(request.getfixturevalue("cudashm"), name, byte_size, device_id)
            made.append(r)
            return r

    yield Factory
    for r in reversed(made):
        for c in r.registered_on:
            try:
                if isinstance(r, CudaRegion):
                    c.client.unregister_cuda_shared_memory(r.name)
                else:
                    c.client.unregister_system_shared_memory(r.name)
            except InferenceServerException:
                pass
        r.destroy()


def random_b64(n):
    return base64.b64encode(os.urandom(n))


# -- extra servers (pool tests) -----------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ExtraServer:
    """A second nereid, on free loopback ports, with its log in a file that
    the runner copies out (NEREID_GPU_LOG_DIR)."""

    def __init__(self, name, extra_args):
        binary = os.environ.get("NEREID_BIN") or str(REPO_ROOT / "target/release/nereid")
        repositories = os.environ.get("NEREID_MODEL_REPOSITORIES") or ":".join(
            str(REPO_ROOT / r) for r in ("model_repository", "model_repository_gpu")
        )
        self.http_url = f"127.0.0.1:{free_port()}"
        self.grpc_url = f"127.0.0.1:{free_port()}"
        self.metrics_url = f"127.0.0.1:{free_port()}"
        log_dir = Path(os.environ.get("NEREID_GPU_LOG_DIR") or tempfile.mkdtemp(prefix="nereid-gpu-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self.args = [
            binary,
            *(f"--model-repository={r}" for r in repositories.split(":") if r),
            "--http-address=127.0.0.1",
            f"--http-port={self.http_url.rsplit(':', 1)[1]}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_url.rsplit(':', 1)[1]}",
            f"--metrics-port={self.metrics_url.rsplit(':', 1)[1]}",
            "--allow-client-shm=true",
            "--log-verbose=1",
            *extra_args,
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout=90.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"nereid exited with {self.proc.returncode}: {' '.join(self.args)}\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"nereid was not ready within {timeout}s\n{self.log_tail()}")

    def log_tail(self, lines=40):
        text = self.log_path.read_text(errors="replace").splitlines()
        return "--- server log (tail) ---\n" + "\n".join(text[-lines:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def scrape(metrics_url):
    """The metrics page as [(name, {label: value}, value)]."""
    with urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=5) as r:
        text = r.read().decode()
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        parsed = {}
        for pair in labels.rstrip("}").split(","):
            if "=" in pair:
                k, _, v = pair.partition("=")
                parsed[k.strip()] = v.strip().strip('"')
        samples.append((name, parsed, float(value)))
    return samples


def metric_families(metrics_url):
    """Names of the families the page declares with # TYPE."""
    with urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
