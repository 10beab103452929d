"""Scheduling, shared memory and logging behaviours that Triton's own QA
suites pin down (issue 12), each checked here against a nereid of the
suite's own with tritonclient:

- an ONNX sequence model whose graph takes the sequence batcher's control
  inputs (START, READY, CORRID) and an implicit state, which the
  configuration lists under `sequence_batching`, not `input`;
- a non-batching ensemble over a batching model (Triton's L0_infer_zero
  shape): it loads, and the step sees the tensor as a batch of one; and a
  batching ensemble over a non-batching model;
- the dynamic batcher sending a request larger than the largest preferred
  batch size at once, seen in the statistics' batch_stats;
- a system shared memory region registered at a large offset, read and
  written at that offset;
- log messages with newlines and escape sequences in them written as one
  escaped line, so they cannot forge log lines.

The ONNX graphs are built here with the `onnx` package, as in test_onnx.py.
"""

import concurrent.futures
import os
import re
import subprocess

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from conftest import REPO_ROOT, NereidServer

# The delay the batcher would wait out under the old rule: far longer than
# the client's network timeout below, so a request that waited for it fails.
LONG_DELAY_US = 120_000_000
CLIENT_TIMEOUT_S = 30.0


def save_onnx(directory, nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    (directory / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(directory / "1" / "model.onnx"))


def value_info(name, elem, dims):
    return helper.make_tensor_value_info(name, elem, dims)


def build_repository(root):
    # An accumulator over a sequence, fed by the sequence batcher: START
    # resets the implicit state, READY gates the output, CORRID comes back
    # as an output so the test sees the id reach the graph.
    d = root / "onnx_accumulate"
    save_onnx(
        d,
        [
            helper.make_node("Sub", ["ONE", "START"], ["not_start"]),
            helper.make_node("Mul", ["IN_STATE", "not_start"], ["carried"]),
            helper.make_node("Add", ["INPUT", "carried"], ["acc"]),
            helper.make_node("Mul", ["acc", "READY"], ["OUTPUT"]),
            helper.make_node("Identity", ["acc"], ["OUT_STATE"]),
            helper.make_node("Identity", ["CORRID"], ["CORR_OUT"]),
        ],
        [
            value_info("INPUT", TensorProto.INT32, ["b", 1]),
            value_info("START", TensorProto.INT32, ["b", 1]),
            value_info("READY", TensorProto.INT32, ["b", 1]),
            value_info("CORRID", TensorProto.UINT64, ["b", 1]),
            value_info("IN_STATE", TensorProto.INT32, ["b", 1]),
        ],
        [
            value_info("OUTPUT", TensorProto.INT32, ["b", 1]),
            value_info("OUT_STATE", TensorProto.INT32, ["b", 1]),
            value_info("CORR_OUT", TensorProto.UINT64, ["b", 1]),
        ],
        initializers=[helper.make_tensor("ONE", TensorProto.INT32, [1], [1])],
    )
    (d / "config.pbtxt").write_text(
        'backend: "onnxruntime"\n'
        "max_batch_size: 4\n"
        'input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
        'output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] },'
        ' { name: "CORR_OUT" data_type: TYPE_UINT64 dims: [ 1 ] } ]\n'
        "sequence_batching {\n"
        "  max_sequence_idle_microseconds: 5000000\n"
        "  control_input [\n"
        '    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },\n'
        '    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] },\n'
        '    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }\n'
        "  ]\n"
        '  state [ { input_name: "IN_STATE" output_name: "OUT_STATE" data_type: TYPE_INT32 dims: [ 1 ]\n'
        '            initial_state: { name: "zero" data_type: TYPE_INT32 dims: [ 1 ] zero_data: true } } ]\n'
        "}\n"
        "instance_group [ { kind: KIND_CPU count: 1 } ]\n"
    )

    # A batching identity model and a non-batching ensemble over it, as
    # Triton's generated L0_infer_zero ensembles are.
    d = root / "nop_batching"
    (d / "1").mkdir(parents=True)
    (d / "config.pbtxt").write_text(
        'backend: "identity"\n'
        "max_batch_size: 8\n"
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
    )
    d = root / "ensemble_nobatch"
    (d / "1").mkdir(parents=True)
    (d / "config.pbtxt").write_text(
        'platform: "ensemble"\n'
        "max_batch_size: 0\n"
        'input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
        'output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
        "ensemble_scheduling { step [\n"
        '  { model_name: "nop_batching" model_version: -1\n'
        '    input_map { key: "INPUT0" value: "X" } output_map { key: "OUTPUT0" value: "mid" } },\n'
        '  { model_name: "nop_batching" model_version: -1\n'
        '    input_map { key: "INPUT0" value: "mid" } output_map { key: "OUTPUT0" value: "Y" } }\n'
        "] }\n"
    )

    # The other way round: a batching ensemble over a non-batching model
    # whose dims are the ensemble's without the batch dimension.
    d = root / "nop_nobatch"
    (d / "1").mkdir(parents=True)
    (d / "config.pbtxt").write_text(
        'backend: "identity"\n'
        "max_batch_size: 0\n"
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
    )
    d = root / "ensemble_batch"
    (d / "1").mkdir(parents=True)
    (d / "config.pbtxt").write_text(
        'platform: "ensemble"\n'
        "max_batch_size: 8\n"
        'input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        "ensemble_scheduling { step [\n"
        '  { model_name: "nop_nobatch" model_version: -1\n'
        '    input_map { key: "INPUT0" value: "X" } output_map { key: "OUTPUT0" value: "Y" } }\n'
        "] }\n"
    )

    # L0_batcher's setting: preferred sizes 2 and 6, a delay long enough
    # that waiting it out is visible as a client timeout.
    d = root / "batch_gt_max_preferred"
    (d / "1").mkdir(parents=True)
    (d / "config.pbtxt").write_text(
        'backend: "identity"\n'
        "max_batch_size: 8\n"
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        f"dynamic_batching {{ preferred_batch_size: [ 2, 6 ] max_queue_delay_microseconds: {LONG_DELAY_US} }}\n"
        "instance_group [ { kind: KIND_CPU count: 1 } ]\n"
    )

    # Triton's `simple` (INT32 add/sub over [1,16]) for the shm round trip.
    simple = (REPO_ROOT / "model_repository" / "simple").resolve()
    (root / "simple").symlink_to(simple, target_is_directory=True)


@pytest.fixture(scope="module")
def library() -> str:
    """The ONNX Runtime library, fetched into the cache on first use."""
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "fetch-onnxruntime.sh")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def server(library, tmp_path_factory):
    root = tmp_path_factory.mktemp("sched-repository")
    build_repository(root)
    s = NereidServer(
        ["--onnxruntime-library", library, "--allow-client-shm=true", "--log-verbose=1"],
        repository=root,
        name="nereid-sched",
    ).start()
    yield s
    s.stop()


@pytest.fixture()
def http(server):
    c = httpclient.InferenceServerClient(
        url=server.url, network_timeout=CLIENT_TIMEOUT_S, connection_timeout=CLIENT_TIMEOUT_S
    )
    yield c
    c.close()


@pytest.fixture()
def grpc(server):
    c = grpcclient.InferenceServerClient(url=server.grpc_url)
    yield c
    c.close()


def test_onnx_sequence_model_takes_control_inputs_and_state(http, grpc):
    assert http.is_model_ready("onnx_accumulate")
    got = []
    values = [1, 2, 3, 4]
    for i, v in enumerate(values):
        inp = httpclient.InferInput("INPUT", [1, 1], "INT32")
        inp.set_data_from_numpy(np.array([[v]], dtype=np.int32))
        r = http.infer(
            "onnx_accumulate",
            [inp],
            sequence_id=77,
            sequence_start=(i == 0),
            sequence_end=(i == len(values) - 1),
        )
        got.append(int(r.as_numpy("OUTPUT")[0][0]))
        assert int(r.as_numpy("CORR_OUT")[0][0]) == 77
    # The state carries the running sum from one request to the next.
    assert got == [1, 3, 6, 10]

    # A new sequence starts from the initial state again, over gRPC too.
    inp = grpcclient.InferInput("INPUT", [1, 1], "INT32")
    inp.set_data_from_numpy(np.array([[5]], dtype=np.int32))
    r = grpc.infer("onnx_accumulate", [inp], sequence_id=78, sequence_start=True, sequence_end=True)
    assert int(r.as_numpy("OUTPUT")[0][0]) == 5
    assert int(r.as_numpy("CORR_OUT")[0][0]) == 78


def batch_stats(client, model):
    stats = client.get_inference_statistics(model)["model_stats"][0]
    return {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]}


def test_non_batching_ensemble_over_a_batching_model(http, grpc):
    assert http.is_model_ready("ensemble_nobatch")
    before = batch_stats(http, "nop_batching").get(1, 0)
    data = np.arange(5, dtype=np.float32)
    inp = httpclient.InferInput("X", [5], "FP32")
    inp.set_data_from_numpy(data)
    r = http.infer("ensemble_nobatch", [inp])
    # The ensemble answers with the shape it declares, the data unchanged.
    assert r.as_numpy("Y").shape == (5,)
    np.testing.assert_array_equal(r.as_numpy("Y"), data)
    ginp = grpcclient.InferInput("X", [5], "FP32")
    ginp.set_data_from_numpy(data)
    np.testing.assert_array_equal(grpc.infer("ensemble_nobatch", [ginp]).as_numpy("Y"), data)
    # Each of the two steps of both requests ran as a batch of one row:
    # the composing model saw [1, 5].
    assert batch_stats(http, "nop_batching").get(1, 0) == before + 4
    # The ensemble's own statistics count one execution per request, as
    # Triton's do.
    ensemble = http.get_inference_statistics("ensemble_nobatch")["model_stats"][0]
    assert ensemble["execution_count"] == 2
    assert batch_stats(http, "ensemble_nobatch") == {1: 2}


def test_batching_ensemble_over_a_non_batching_model(http):
    assert http.is_model_ready("ensemble_batch")
    data = np.arange(4, dtype=np.float32).reshape(1, 4)
    inp = httpclient.InferInput("X", [1, 4], "FP32")
    inp.set_data_from_numpy(data)
    # A batch of one loses its batch dimension on the way into the step
    # ([4], the step's dims) and the ensemble answers [1, 4] again.
    r = http.infer("ensemble_batch", [inp])
    assert r.as_numpy("Y").shape == (1, 4)
    np.testing.assert_array_equal(r.as_numpy("Y"), data)


def test_more_rows_than_the_largest_preferred_size_go_at_once(server):
    def send(rows):
        c = httpclient.InferenceServerClient(url=server.url, network_timeout=CLIENT_TIMEOUT_S)
        try:
            inp = httpclient.InferInput("INPUT0", [rows, 4], "FP32")
            inp.set_data_from_numpy(np.full((rows, 4), rows, dtype=np.float32))
            return c.infer("batch_gt_max_preferred", [inp]).as_numpy("OUTPUT0").shape
        finally:
            c.close()

    # 7 rows > 6, the largest preferred size: no batch can get better by
    # waiting, so it runs at once instead of after the 120 s delay (the
    # client would time out first).
    assert send(7) == (7, 4)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        shapes = list(pool.map(send, [7, 7]))
    assert shapes == [(7, 4), (7, 4)]
    c = httpclient.InferenceServerClient(url=server.url)
    try:
        # Three executions of 7 rows each: none was held for the delay
        # and none was merged (7 + 7 > 8).
        assert batch_stats(c, "batch_gt_max_preferred") == {7: 3}
    finally:
        c.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_large_offset_shared_memory_round_trip(server, protocol):
    lib = httpclient if protocol == "http" else grpcclient
    client = (
        httpclient.InferenceServerClient(url=server.url)
        if protocol == "http"
        else grpcclient.InferenceServerClient(url=server.grpc_url)
    )
    page = os.sysconf("SC_PAGE_SIZE")
    size, offset = page * 1024, page * 1023
    tag = f"{os.getpid()}_{protocol}"
    names = [f"in0_{tag}", f"in1_{tag}", f"out0_{tag}", f"out1_{tag}"]
    handles = [shm.create_shared_memory_region(n, f"/{n}", size) for n in names]
    try:
        in0 = np.arange(16, dtype=np.int32).reshape(1, 16)
        in1 = np.full((1, 16), 3, dtype=np.int32)
        # The data lies at the offset; the start of the object holds
        # something else, which a server reading from the start would add.
        shm.set_shared_memory_region(handles[0], [np.full(16, 100, dtype=np.int32)])
        shm.set_shared_memory_region(handles[0], [in0], offset=offset)
        shm.set_shared_memory_region(handles[1], [in1], offset=offset)
        for n in names:
            client.register_system_shared_memory(n, f"/{n}", 64, offset=offset)
        inputs = [lib.InferInput("INPUT0", [1, 16], "INT32"), lib.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_shared_memory(names[0], 64)
        inputs[1].set_shared_memory(names[1], 64)
        outputs = [lib.InferRequestedOutput("OUTPUT0"), lib.InferRequestedOutput("OUTPUT1")]
        outputs[0].set_shared_memory(names[2], 64)
        outputs[1].set_shared_memory(names[3], 64)
        client.infer("simple", inputs, outputs=outputs)
        sum_ = shm.get_contents_as_numpy(handles[2], np.int32, [1, 16], offset=offset)
        diff = shm.get_contents_as_numpy(handles[3], np.int32, [1, 16], offset=offset)
        np.testing.assert_array_equal(sum_, in0 + in1)
        np.testing.assert_array_equal(diff, in0 - in1)
        # Nothing was written before the window.
        assert not shm.get_contents_as_numpy(handles[2], np.int32, [16], offset=0).any()
    finally:
        client.unregister_system_shared_memory()
        for h in handles:
            shm.destroy_shared_memory_region(h)
        client.close()


def test_registration_errors_in_tritons_order(http):
    name = f"order_{os.getpid()}"
    handle = shm.create_shared_memory_region(name, f"/{name}", 64)
    try:
        # An empty window past the end is out of bounds, as Triton reports.
        with pytest.raises(InferenceServerException, match="failed to register shared memory region.*invalid args"):
            http.register_system_shared_memory(name, f"/{name}", 0, offset=65)
        # A key that does not open is named before any bound is checked.
        with pytest.raises(InferenceServerException, match="Unable to open shared memory region: '/nereid-nope'"):
            http.register_system_shared_memory(name, "/nereid-nope", 0, offset=2**40)
    finally:
        http.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(handle)


def test_cuda_registration_tries_the_handle_first(http, grpc):
    """Triton's order for CUDA regions: the handle is opened before the
    name or the size is looked at, and one that does not open (here an
    empty one, on any machine) is Triton's generic 'invalid args', which
    tritonclient's aio test matches."""
    # The HTTP client puts the (base64) handle into JSON as it is given; an
    # empty name has no HTTP route, so HTTP names its region.
    for client, name, empty_handle in ((http, "cuda_empty", ""), (grpc, "", b"")):
        with pytest.raises(
            InferenceServerException,
            match="failed to register shared memory region.*invalid args",
        ) as e:
            client.register_cuda_shared_memory(name, empty_handle, 0, 0)
        assert "'region name'" not in str(e.value)
        assert e.value.status() in ("400", "StatusCode.INVALID_ARGUMENT"), e.value.status()


FORGED = "I0205 18:34:18.707423 1 file.cc:123] \"THIS ENTRY WAS INJECTED\""


def test_log_messages_cannot_forge_lines(server, http):
    name = f"\n{FORGED}\n\x1b[31mRED\x07"
    inp = httpclient.InferInput(name, [1, 16], "INT32")
    inp.set_data_from_numpy(np.zeros((1, 16), dtype=np.int32))
    with pytest.raises(InferenceServerException):
        http.infer("simple", [inp])

    def logged():
        text = server.log_path.read_text(errors="replace")
        return [line for line in text.splitlines() if "THIS ENTRY WAS INJECTED" in line]

    lines = []
    for _ in range(100):
        lines = logged()
        if lines:
            break
        http.is_server_live()  # the failure is logged as it is answered
    assert lines, server.log_tail()
    for line in lines:
        # The forged record is inside an escaped message, never a line.
        assert line != FORGED
        assert re.match(r"^[IWE]\d{4} \d{2}:\d{2}:\d{2}\.\d{6} \d+ [\w.]+:\d+\] \"", line), line
        assert "\x1b" not in line and "\x07" not in line
        assert "\\u001b[31mRED\\u0007" in line
