"""Stateful models through the sequence batcher, the way Triton's SDK
sequence example clients use them (simple_{http,grpc}_sequence_sync_infer_client
and simple_grpc_sequence_stream_infer_client, with and without --dyna):
the same models, calls, sequence ids, values and result checks, over HTTP,
gRPC and a gRPC stream; interleaved sequences; and the errors a client gets
for a request that belongs to no sequence."""

import json
import queue
import time
import uuid
from functools import partial

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

VALUES = [11, 7, 5, 3, 2, 0, 1]


def models(dyna):
    """(integer-id model, string-id model), as the example clients pick them."""
    if dyna:
        return "simple_dyna_sequence", "simple_string_dyna_sequence"
    return "simple_sequence", "simple_sequence"


def ids(dyna, offset):
    """The clients' sequence ids: two integers and a string (an integer in
    a string for the dyna model, which adds it to the last result)."""
    string_id = str(1002 + offset) if dyna else str(uuid.uuid4())
    return 1000 + offset * 2, 1001 + offset * 2, string_id


def one_input(module, value):
    data = np.full(shape=[1, 1], fill_value=value, dtype=np.int32)
    inputs = [module.InferInput("INPUT", data.shape, "INT32")]
    inputs[0].set_data_from_numpy(data)
    return inputs, [module.InferRequestedOutput("OUTPUT")]


def sync_send(client, module, model, sequence_id, values):
    results = []
    for count, value in enumerate(values, start=1):
        inputs, outputs = one_input(module, value)
        result = client.infer(
            model_name=model,
            inputs=inputs,
            outputs=outputs,
            sequence_id=sequence_id,
            sequence_start=(count == 1),
            sequence_end=(count == len(values)),
        )
        results.append(result.as_numpy("OUTPUT"))
    return results


def check(dyna, int0, int1, str0, id0, id1, string_id):
    """The example clients' checks, result by result."""
    assert len(int0) == len(int1) == len(str0) == len(VALUES) + 1
    for i in range(len(int0)):
        want0 = 1 if i == 0 else VALUES[i - 1]
        want1 = 101 if i == 0 else -VALUES[i - 1]
        if i == 0:
            want_s = 20 if dyna else 21
        elif dyna:
            want_s = -VALUES[i - 1] + int(str0[i - 1][0][0])
        else:
            want_s = -VALUES[i - 1]
        # The dyna model adds the correlation id to a sequence's last result.
        if dyna and i != 0 and VALUES[i - 1] == 1:
            want0 += id0
            want1 += id1
            want_s += int(string_id)
        got = (int0[i][0][0], int1[i][0][0], str0[i][0][0])
        assert got == (want0, want1, want_s), f"result {i}"


def negated():
    return [-v for v in VALUES]


@pytest.fixture()
def gclient(grpc_url):
    c = grpcclient.InferenceServerClient(url=grpc_url)
    yield c
    c.close()


@pytest.mark.parametrize("dyna", [False, True], ids=["simple", "dyna"])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sync_client(url, grpc_url, protocol, dyna):
    if protocol == "http":
        module, client = httpclient, httpclient.InferenceServerClient(url=url)
    else:
        module, client = grpcclient, grpcclient.InferenceServerClient(url=grpc_url)
    int_model, string_model = models(dyna)
    id0, id1, string_id = ids(dyna, offset=10 if protocol == "http" else 20)
    try:
        int0 = sync_send(client, module, int_model, id0, [0] + VALUES)
        int1 = sync_send(client, module, int_model, id1, [100] + negated())
        str0 = sync_send(client, module, string_model, string_id, [20] + negated())
    finally:
        client.close()
    check(dyna, int0, int1, str0, id0, id1, string_id)


def stream_request(client, model, sequence_id, values, count):
    """Sends request `count` (from 1) of the sequence of `values`."""
    inputs, outputs = one_input(grpcclient, values[count - 1])
    client.async_stream_infer(
        model_name=model,
        inputs=inputs,
        outputs=outputs,
        request_id=f"{sequence_id}_{count}",
        sequence_id=sequence_id,
        sequence_start=(count == 1),
        sequence_end=(count == len(values)),
    )


def stream_send(client, model, sequence_id, values):
    for count in range(1, len(values) + 1):
        stream_request(client, model, sequence_id, values, count)


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
def test_stream_client(gclient, dyna):
    int_model, string_model = models(dyna)
    id0, id1, string_id = ids(dyna, offset=30)
    completed = queue.Queue()
    gclient.start_stream(callback=lambda result, error: completed.put(error or result))
    try:
        stream_send(gclient, int_model, id0, [0] + VALUES)
        stream_send(gclient, int_model, id1, [100] + negated())
        stream_send(gclient, string_model, string_id, [20] + negated())
        by_id = collect(completed, 3 * (len(VALUES) + 1))
    finally:
        gclient.stop_stream()
    check(dyna, by_id[str(id0)], by_id[str(id1)], by_id[string_id], id0, id1, string_id)


@pytest.mark.parametrize("dyna", [False, True], ids=["simple", "dyna"])
def test_interleaved_sequences_on_one_stream(gclient, dyna):
    """The three sequences' requests alternate on the stream; each sequence
    still sees its own requests in order."""
    int_model, string_model = models(dyna)
    id0, id1, string_id = ids(dyna, offset=40)
    plan = [
        (int_model, id0, [0] + VALUES),
        (int_model, id1, [100] + negated()),
        (string_model, string_id, [20] + negated()),
    ]
    completed = queue.Queue()
    gclient.start_stream(callback=lambda result, error: completed.put(error or result))
    try:
        for count in range(1, len(VALUES) + 2):
            for model, sequence_id, values in plan:
                stream_request(gclient, model, sequence_id, values, count)
        by_id = collect(completed, 3 * (len(VALUES) + 1))
    finally:
        gclient.stop_stream()
    check(dyna, by_id[str(id0)], by_id[str(id1)], by_id[string_id], id0, id1, string_id)


def test_more_sequences_than_slots_wait_for_one(gclient):
    """simple_sequence has 8 slots; 20 sequences sent at once on one stream
    queue for a slot and each still gets its own results, in order."""
    sequences = {5000 + n: [n, n + 1, n + 2, -n] for n in range(20)}
    completed = queue.Queue()
    gclient.start_stream(callback=lambda result, error: completed.put(error or result))
    try:
        for count in range(1, 5):
            for sequence_id, values in sequences.items():
                stream_request(gclient, "simple_sequence", sequence_id, values, count)
        by_id = collect(completed, 4 * len(sequences))
    finally:
        gclient.stop_stream()
    for sequence_id, values in sequences.items():
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
