"""The process: startup tables, unknown flags, and SIGTERM/SIGINT draining
in-flight requests, each on a server of the test's own. The servers log
each request (`--log-verbose=1`), so a test sends its signal once its
request is in the server, not after a guess at how long that takes."""

import signal
import threading
import time

import numpy as np
import pytest
import tritonclient.http as httpclient

from conftest import Arrivals, NereidServer, wait_pending


def delay_infer(url, ms, results, timeout=30):
    c = httpclient.InferenceServerClient(url=url, network_timeout=timeout)
    try:
        inp = httpclient.InferInput("INPUT0", [1, 2], "FP32")
        inp.set_data_from_numpy(np.ones((1, 2), dtype=np.float32))
        r = c.infer("delay", [inp], parameters={"execute_delay_ms": ms})
        results.append(("ok", r.as_numpy("OUTPUT0")))
    except Exception as e:  # noqa: BLE001 - the test inspects whatever happened
        results.append(("error", e))
    finally:
        c.close()


def wait_logged(s, needle, timeout=10.0):
    deadline = time.monotonic() + timeout
    while needle not in s.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"the server never logged {needle!r}\n{s.log_tail()}"
        time.sleep(0.01)


def start_delay_infer(s, ms, results):
    """A `delay` request on a thread; returns once it is executing."""
    arrivals = Arrivals(s, "delay")
    t = threading.Thread(target=delay_infer, args=(s.url, ms, results))
    t.start()
    arrivals.wait(1)
    wait_pending(s, "delay", 0)
    return t


def test_startup_prints_model_and_option_tables():
    s = NereidServer(name="nereid-tables").start()
    try:
        # The tables follow the startup load, which readiness does not wait on.
        wait_logged(s, "model_repository_path")
        log = s.log_path.read_text(errors="replace")
    finally:
        s.stop()
    assert "simple" in log and "READY" in log, log[-2000:]
    assert "model_repository_path" in log, log[-2000:]


def test_unknown_flag_warns_and_starts():
    s = NereidServer(["--no-such-flag=1"], name="nereid-unknown-flag").start()
    try:
        c = httpclient.InferenceServerClient(url=s.url)
        assert c.is_server_ready()
        c.close()
        log = s.log_path.read_text(errors="replace")
    finally:
        s.stop()
    assert "no-such-flag" in log, log[-2000:]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_in_flight_requests(sig):
    s = NereidServer(["--exit-timeout-secs=20", "--log-verbose=1"], name="nereid-drain").start()
    results = []
    t = start_delay_infer(s, 1500, results)
    s.proc.send_signal(sig)
    t.join(30)
    rc = s.proc.wait(30)
    assert results and results[0][0] == "ok", results
    assert rc == 0, f"exit status {rc}\n{s.log_tail()}"


def test_exit_timeout_bounds_shutdown():
    s = NereidServer(["--exit-timeout-secs=1", "--log-verbose=1"], name="nereid-exit-timeout").start()
    results = []
    t = start_delay_infer(s, 20000, results)
    start = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    s.proc.wait(15)
    took = time.monotonic() - start
    t.join(30)
    # Bounded by --exit-timeout-secs (1 s), far below the 20 s request.
    assert took < 10, f"shutdown took {took:.1f}s\n{s.log_tail()}"
    assert results and results[0][0] == "error", results


def test_no_new_connections_after_signal():
    s = NereidServer(
        ["--exit-timeout-secs=20", "--log-verbose=1"], name="nereid-stop-accepting"
    ).start()
    results = []
    t = start_delay_infer(s, 2000, results)
    s.proc.send_signal(signal.SIGTERM)
    wait_logged(s, "Waiting for in-flight requests to complete")
    c = httpclient.InferenceServerClient(url=s.url, connection_timeout=2, network_timeout=2)
    try:
        # Refused (or never answered), or at least no longer ready.
        ready = c.is_server_ready()
    except Exception:  # noqa: BLE001 - any connection failure is the point
        ready = False
    finally:
        c.close()
    assert not ready, "server still ready after SIGTERM"
    t.join(30)
    s.proc.wait(30)
    assert results and results[0][0] == "ok", results
