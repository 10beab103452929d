"""Stateful models through the sequence batcher, the way Triton's SDK
sequence example clients use them: our example clients
(tests/python/examples/*_sequence_*_client.py, the same models, calls,
sequence ids, values and result checks as simple_http_sequence_sync_infer_client,
simple_grpc_sequence_sync_infer_client and simple_grpc_sequence_stream_infer_client,
with and without --dyna) run as separate processes over HTTP, gRPC and a
gRPC stream; sequences interleaved and queued for a slot; and the errors a
client gets for a request that belongs to no sequence."""

import json
import queue
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

EXAMPLES = Path(__file__).parent / "examples"
sys.path.insert(0, str(EXAMPLES))
from _sequence import mismatches, one_input, sequences, stream_request  # noqa: E402


@pytest.fixture()
def gclient(grpc_url):
    c = grpcclient.InferenceServerClient(url=grpc_url)
    yield c
    c.close()


@pytest.mark.parametrize("dyna", [False, True], ids=["simple", "dyna"])
@pytest.mark.parametrize(
    "script, offset",
    [
        ("http_sequence_sync_client.py", 10),
        ("grpc_sequence_sync_client.py", 20),
        ("grpc_sequence_stream_client.py", 30),
    ],
)
def test_example_client(url, grpc_url, script, offset, dyna):
    """Each client with its own sequence ids (-o), so none collides."""
    target = url if script.startswith("http") else grpc_url
    args = [sys.executable, str(EXAMPLES / script), "-u", target, "-o", str(offset)]
    if dyna:
        args.append("-d")
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{script} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    assert p.stdout.rstrip().endswith("PASS: Sequence"), p.stdout[-2000:]


def collect(completed, count):
    """Results by sequence id (the request id's prefix), in arrival order."""
    by_id = {}
    for _ in range(count):
        item = completed.get(timeout=30)
        if isinstance(item, InferenceServerException):
            raise item
        this_id = item.get_response().id.split("_")[0]
        by_id.setdefault(this_id, []).append(item.as_numpy("OUTPUT"))
    return by_id


@pytest.mark.parametrize("dyna", [False, True], ids=["simple", "dyna"])
def test_interleaved_sequences_on_one_stream(gclient, dyna):
    """The example clients' three sequences, their requests alternating on
    one stream; each sequence still sees its own requests in order."""
    plan = sequences(dyna, 40)
    completed = queue.Queue()
    gclient.start_stream(callback=lambda result, error: completed.put(error or result))
    try:
        for count in range(1, len(plan[0][2]) + 1):
            for model, sequence_id, values in plan:
                stream_request(gclient, model, sequence_id, values, count)
        by_id = collect(completed, sum(len(values) for _, _, values in plan))
    finally:
        gclient.stop_stream()
    results = [by_id[str(sequence_id)] for _, sequence_id, _ in plan]
    assert mismatches(dyna, plan, results) == []


def test_more_sequences_than_slots_wait_for_one(gclient):
    """simple_sequence has 8 slots; 20 sequences sent at once on one stream
    queue for a slot and each still gets its own results, in order."""
    plan = {5000 + n: [n, n + 1, n + 2, -n] for n in range(20)}
    completed = queue.Queue()
    gclient.start_stream(callback=lambda result, error: completed.put(error or result))
    try:
        for count in range(1, 5):
            for sequence_id, values in plan.items():
                stream_request(gclient, "simple_sequence", sequence_id, values, count)
        by_id = collect(completed, 4 * len(plan))
    finally:
        gclient.stop_stream()
    for sequence_id, values in plan.items():
        got = [int(r[0][0]) for r in by_id[str(sequence_id)]]
        assert got == [values[0] + 1] + values[1:], sequence_id


def test_interleaved_sequences_over_http(url):
    """Two sequences of one model, alternating requests over HTTP."""
    client = httpclient.InferenceServerClient(url=url)
    try:
        results = {7001: [], 7002: []}
        for count in range(1, 4):
            for sequence_id in results:
                inputs, outputs = one_input(httpclient, sequence_id + count)
                r = client.infer(
                    "simple_dyna_sequence",
                    inputs,
                    outputs=outputs,
                    sequence_id=sequence_id,
                    sequence_start=(count == 1),
                    sequence_end=(count == 3),
                )
                results[sequence_id].append(int(r.as_numpy("OUTPUT")[0][0]))
    finally:
        client.close()
    assert results == {
        7001: [7002 + 1, 7003, 7004 + 7001],
        7002: [7003 + 1, 7004, 7005 + 7002],
    }


def http_error(url, **kwargs):
    client = httpclient.InferenceServerClient(url=url)
    inputs, outputs = one_input(httpclient, kwargs.pop("value", 1))
    inputs += kwargs.pop("extra", [])
    try:
        with pytest.raises(InferenceServerException) as e:
            client.infer("simple_sequence", inputs, outputs=outputs, **kwargs)
    finally:
        client.close()
    return e.value


def grpc_error(gclient, **kwargs):
    inputs, outputs = one_input(grpcclient, 1)
    with pytest.raises(InferenceServerException) as e:
        gclient.infer("simple_sequence", inputs, outputs=outputs, **kwargs)
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    return e.value.message()


def test_a_request_without_a_sequence_id_is_refused(url, gclient):
    e = http_error(url)
    assert e.status() == "400"
    assert e.message() == (
        "inference request to model 'simple_sequence' must specify a non-zero or non-empty correlation ID"
    )
    message = grpc_error(gclient, sequence_id="")
    assert "must specify a non-zero or non-empty correlation ID" in message


def test_a_sequence_must_start_with_start(url, gclient):
    e = http_error(url, sequence_id=4242)
    assert e.status() == "400"
    assert e.message() == (
        "inference request for sequence 4242 to model 'simple_sequence' must specify the START flag on the first request of the sequence"
    )
    message = grpc_error(gclient, sequence_id="nope")
    assert "for sequence nope to model 'simple_sequence' must specify the START flag" in message


def test_an_ended_sequence_needs_a_new_start(url):
    client = httpclient.InferenceServerClient(url=url)
    try:
        inputs, outputs = one_input(httpclient, 5)
        r = client.infer(
            "simple_sequence",
            inputs,
            outputs=outputs,
            sequence_id=4343,
            sequence_start=True,
            sequence_end=True,
        )
        assert r.as_numpy("OUTPUT")[0][0] == 6
    finally:
        client.close()
    e = http_error(url, sequence_id=4343)
    assert "must specify the START flag" in e.message()


def test_control_inputs_and_batches_come_from_the_server(url):
    start = httpclient.InferInput("START", [1, 1], "INT32")
    start.set_data_from_numpy(np.ones((1, 1), dtype=np.int32))
    e = http_error(url, sequence_id=4444, sequence_start=True, extra=[start])
    assert e.status() == "400"
    assert "input 'START' of model 'simple_sequence' is a sequence control input" in e.message()

    client = httpclient.InferenceServerClient(url=url)
    data = np.ones((2, 1), dtype=np.int32)
    inputs = [httpclient.InferInput("INPUT", data.shape, "INT32")]
    inputs[0].set_data_from_numpy(data)
    try:
        with pytest.raises(InferenceServerException) as b:
            client.infer("simple_sequence", inputs, sequence_id=4445, sequence_start=True)
    finally:
        client.close()
    assert b.value.message() == (
        "inference request to model 'simple_sequence' must specify batch-size 1 due to requirements of sequence batcher"
    )


def wait_for_log(server, needle, timeout=30.0):
    """Waits until the server logs `needle` (the event a test waits for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in server.log_path.read_text(errors="replace"):
            return
        time.sleep(0.02)
    pytest.fail(f"the server never logged {needle!r}\n{server.log_tail()}")


def test_an_idle_sequence_is_released(explicit_server):
    """With a short max_sequence_idle_microseconds, an abandoned sequence
    loses its slot; its next request must start again. The test waits for
    the server to report the release, not for a guessed time."""
    client = httpclient.InferenceServerClient(url=explicit_server.url)
    try:
        config_path = explicit_server.repository / "simple_sequence" / "config.pbtxt"
        text = config_path.read_text().replace(
            "sequence_batching {", "sequence_batching {\n  max_sequence_idle_microseconds: 50000", 1
        )
        config_path.write_text(text)
        client.load_model("simple_sequence")
        inputs, outputs = one_input(httpclient, 3)
        r = client.infer(
            "simple_sequence", inputs, outputs=outputs, sequence_id=99, sequence_start=True
        )
        assert r.as_numpy("OUTPUT")[0][0] == 4
        wait_for_log(explicit_server, "sequence 99 was idle")
        with pytest.raises(InferenceServerException) as e:
            client.infer("simple_sequence", inputs, outputs=outputs, sequence_id=99)
        assert "inference request for sequence 99 to model 'simple_sequence' must specify the START flag" in (
            e.value.message()
        )
        # The id can start over.
        r = client.infer(
            "simple_sequence", inputs, outputs=outputs, sequence_id=99, sequence_start=True
        )
        assert r.as_numpy("OUTPUT")[0][0] == 4
    finally:
        client.close()


def test_a_bad_sequence_configuration_fails_the_load(explicit_server):
    config_path = explicit_server.repository / "simple_sequence" / "config.pbtxt"
    text = config_path.read_text()
    both = "int32_false_true: [ 0, 1 ] fp32_false_true: [ 0, 1 ]"
    at = text.rindex("int32_false_true: [ 0, 1 ]")
    config_path.write_text(text[:at] + both + text[at + len("int32_false_true: [ 0, 1 ]") :])
    client = httpclient.InferenceServerClient(url=explicit_server.url)
    try:
        with pytest.raises(InferenceServerException) as e:
            client.load_model("simple_sequence")
    finally:
        client.close()
    assert (
        "model 'simple_sequence': sequence control input 'READY' (CONTROL_SEQUENCE_READY) needs exactly one of int32_false_true, fp32_false_true or bool_false_true"
        in e.value.message()
    ), e.value.message()


def test_model_configuration_shows_the_sequence_batcher(url):
    client = httpclient.InferenceServerClient(url=url)
    try:
        config = client.get_model_config("simple_dyna_sequence")
    finally:
        client.close()
    sb = config["sequence_batching"]
    assert sb["oldest"]["max_candidate_sequences"] == 1024
    assert [c["name"] for c in sb["control_input"]] == ["START", "END", "READY", "CORRID"]
    assert json.dumps(sb["control_input"][3]["control"][0]["data_type"]) == '"TYPE_UINT64"'
