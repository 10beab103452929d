"""Runs our SDK-style example clients (tests/python/examples) as separate
processes against the server, the way a user runs Triton's examples.

Triton's own example scripts live only in the triton-inference-server/client
source repository; no package registry ships them, so these are our own
scripts that take the same steps and make the same checks."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent / "examples"


def run_example(name, url):
    p = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "-u", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, f"{name} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    assert "PASS" in p.stdout, p.stdout[-2000:]


@pytest.mark.parametrize(
    "name",
    [
        "http_health_metadata.py",
        "http_infer_client.py",
        "http_async_infer_client.py",
        "http_string_infer_client.py",
    ],
)
def test_example(url, name):
    run_example(name, url)


def test_model_control_example(explicit_server):
    run_example("http_model_control.py", explicit_server.url)
