"""Fixtures for the tritonclient-driven end-to-end suite.

The suite talks to a real `nereid` binary over HTTP. By default it starts
one itself (on free loopback ports, with the example repository) and stops it
at the end of the session. `scripts/test.sh` may instead hand it a server it
started through the environment:

  NEREID_URL              host:port of a running server (no scheme)
  NEREID_GRPC_URL         host:port of that server's gRPC endpoint
  NEREID_METRICS_URL      host:port of that server's metrics endpoint
  NEREID_LOG              that server's log file
  NEREID_BIN              the binary to spawn (default: target/release/nereid,
                          else target/debug/nereid)
  NEREID_MODEL_REPOSITORY the repository to serve (default: model_repository)

Tests that change server state (load/unload, config overrides) get their own
server in explicit model-control mode from the `explicit_server` fixture, so
the shared server always serves the example repository unchanged.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import tritonclient.http as httpclient

REPO_ROOT = Path(__file__).resolve().parents[2]


def model_repository() -> Path:
    return Path(
        os.environ.get("NEREID_MODEL_REPOSITORY", REPO_ROOT / "model_repository")
    ).resolve()


def nereid_binary() -> Path:
    explicit = os.environ.get("NEREID_BIN")
    if explicit:
        return Path(explicit).resolve()
    for profile in ("release", "debug"):
        candidate = REPO_ROOT / "target" / profile / "nereid"
        if candidate.exists():
            return candidate
    pytest.exit(
        "no nereid binary: build it with `cargo build --release` or set NEREID_BIN",
        returncode=2,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NereidServer:
    """A `nereid` child process on free loopback ports, with its log in a file."""

    def __init__(self, extra_args=(), repository=None, name="nereid"):
        self.http_port = free_port()
        self.url = f"127.0.0.1:{self.http_port}"
        self.grpc_port = free_port()
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        self.metrics_port = free_port()
        self.metrics_url = f"127.0.0.1:{self.metrics_port}"
        self.repository = Path(repository or model_repository())
        self.log_path = Path(tempfile.mkdtemp(prefix=f"{name}-")) / "server.log"
        self.args = [
            str(nereid_binary()),
            "--model-repository",
            str(self.repository),
            "--http-address",
            "127.0.0.1",
            "--http-port",
            str(self.http_port),
            "--grpc-address",
            "127.0.0.1",
            "--grpc-port",
            str(self.grpc_port),
            "--metrics-port",
            str(self.metrics_port),
            *extra_args,
        ]
        self.proc = None

    def start(self, ready_path="/v2/health/ready", timeout=60.0):
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"nereid exited with {self.proc.returncode} before it was ready\n"
                    f"command: {' '.join(self.args)}\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(
                    f"http://{self.url}{ready_path}", timeout=1
                ) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"nereid was not ready at {ready_path} within {timeout}s\n{self.log_tail()}"
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines=60) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "--- server log (tail) ---\n" + "\n".join(text[-lines:])

    def stop(self, timeout=20.0):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


class ExternalServer:
    """A server someone else started (NEREID_URL)."""

    def __init__(self, url):
        self.url = url
        self.grpc_url = os.environ.get("NEREID_GRPC_URL")
        self.metrics_url = os.environ.get("NEREID_METRICS_URL")
        self.log_path = os.environ.get("NEREID_LOG")

    def alive(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://{self.url}/v2/health/live", timeout=2
            ) as r:
                return r.status == 200
        except OSError:
            return False

    def log_tail(self, lines=60) -> str:
        if not self.log_path:
            return "(server started outside the suite; set NEREID_LOG for its log)"
        text = Path(self.log_path).read_text(errors="replace").splitlines()
        return "--- server log (tail) ---\n" + "\n".join(text[-lines:])


@pytest.fixture(scope="session")
def server():
    """The shared server that serves the example repository (mode none)."""
    url = os.environ.get("NEREID_URL")
    if url:
        yield ExternalServer(url)
        return
    s = NereidServer().start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def url(server) -> str:
    return server.url


@pytest.fixture(scope="session")
def grpc_url(server) -> str:
    """host:port of the shared server's gRPC endpoint."""
    if not server.grpc_url:
        pytest.skip("NEREID_GRPC_URL is not set for the external server")
    return server.grpc_url


@pytest.fixture(scope="session")
def base(server) -> str:
    """`http://host:port` of the shared server, for raw HTTP tests."""
    return f"http://{server.url}"


@pytest.fixture()
def client(url):
    c = httpclient.InferenceServerClient(url=url)
    yield c
    c.close()


@pytest.fixture(autouse=True)
def _server_survives(server):
    """Every test must leave the shared server running and live."""
    yield
    assert server.alive(), f"nereid died during the test\n{server.log_tail()}"


@pytest.fixture()
def explicit_repository(tmp_path):
    """A private copy of the example repository that a test may change."""
    dst = tmp_path / "model_repository"
    shutil.copytree(model_repository(), dst)
    return dst


@pytest.fixture()
def explicit_server(explicit_repository):
    """A fresh server in explicit model-control mode with nothing loaded."""
    s = NereidServer(
        ["--model-control-mode=explicit"],
        repository=explicit_repository,
        name="nereid-explicit",
    )
    s.start(ready_path="/v2/health/live")
    yield s
    s.stop()


class Arrivals:
    """Sees requests for `model` reach the server, counted from now: the
    server logs each request's path at verbose level 1, so the waits below
    are on the server's own record, not on time. Needs the server's log
    and its verbose level at 1 (`--log-verbose=1` or `/v2/logging`)."""

    def __init__(self, server, model):
        if not server.log_path:
            pytest.skip("this test watches the server log: set NEREID_LOG")
        self.server = server
        # Messages are logged as JSON strings (Triton's escaping), or raw
        # with TRITON_SERVER_ESCAPE_LOG_MESSAGES=0: the path ends the line
        # either way, before the closing quote or not.
        self.needle = f" /v2/models/{model}/infer"
        self.line_end = re.compile(re.escape(self.needle) + r'"?$', re.MULTILINE)
        self.start = self.count()

    def count(self):
        text = Path(self.server.log_path).read_text(errors="replace")
        return len(self.line_end.findall(text))

    def wait(self, n, timeout=10.0):
        """Waits until `n` requests arrived since this was made."""
        deadline = time.monotonic() + timeout
        while self.count() - self.start < n:
            assert time.monotonic() < deadline, (
                f"fewer than {n} requests{self.needle.rstrip()} reached the server\n"
                f"{self.server.log_tail()}"
            )
            time.sleep(0.01)


def pending_requests(server, model):
    """`nv_inference_pending_request_count` of `model` version 1: its
    requests queued and not yet taken by an instance."""
    if not getattr(server, "metrics_url", None):
        pytest.skip("this test reads the server's metrics: set NEREID_METRICS_URL")
    prefix = f'nv_inference_pending_request_count{{model="{model}",version="1"}} '
    with urllib.request.urlopen(f"http://{server.metrics_url}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(prefix):
                return int(float(line[len(prefix):]))
    raise AssertionError(f"no pending count for {model} in the metrics")


def wait_pending(server, model, n, timeout=10.0):
    """Waits until exactly `n` requests of `model` are queued."""
    deadline = time.monotonic() + timeout
    while (got := pending_requests(server, model)) != n:
        assert time.monotonic() < deadline, f"{model}: {got} requests queued, not {n}"
        time.sleep(0.01)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the server log tail to failing tests' reports."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        srv = item.funcargs.get("explicit_server") or item.funcargs.get("server")
        if srv is not None:
            rep.sections.append(("nereid log", srv.log_tail(30)))
