"""The ONNX Runtime backend end to end: small ONNX graphs built here with the
`onnx` package, served by a nereid of the suite's own from a temporary
repository, driven with tritonclient over HTTP and gRPC and checked against
the Python onnxruntime running the same graphs.

Covers every KServe datatype ONNX has (identity graphs), dynamic dims,
batching through the dynamic batcher, auto-complete with and without a
config.pbtxt (the configuration endpoint shows the completed one), a
configuration that contradicts the model, a model file ONNX Runtime cannot
load, and a server whose ONNX Runtime library is missing. The library is the
one scripts/fetch-onnxruntime.sh caches (the fixture runs it; a second run
downloads nothing).
"""

import concurrent.futures
import subprocess
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from conftest import REPO_ROOT, NereidServer

# KServe datatype -> (ONNX element type, numpy dtype); tritonclient takes
# BF16 as ml_dtypes.bfloat16.
DATATYPES = {
    "BOOL": (TensorProto.BOOL, np.bool_),
    "UINT8": (TensorProto.UINT8, np.uint8),
    "UINT16": (TensorProto.UINT16, np.uint16),
    "UINT32": (TensorProto.UINT32, np.uint32),
    "UINT64": (TensorProto.UINT64, np.uint64),
    "INT8": (TensorProto.INT8, np.int8),
    "INT16": (TensorProto.INT16, np.int16),
    "INT32": (TensorProto.INT32, np.int32),
    "INT64": (TensorProto.INT64, np.int64),
    "FP16": (TensorProto.FLOAT16, np.float16),
    "BF16": (TensorProto.BFLOAT16, ml_dtypes.bfloat16),
    "FP32": (TensorProto.FLOAT, np.float32),
    "FP64": (TensorProto.DOUBLE, np.float64),
    "BYTES": (TensorProto.STRING, np.object_),
}


def save_model(directory: Path, nodes, inputs, outputs, name="model.onnx", initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    (directory / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(directory / "1" / name))
    return model


def tensor(name, elem, dims):
    return helper.make_tensor_value_info(name, elem, dims)


def build_repository(root: Path):
    """Writes every test model; returns nothing, the names are fixed."""
    # Identity per datatype, non-batching with a variable dimension, full
    # configuration. BYTES and BOOL go through the element-wise converters.
    for dt, (elem, _) in DATATYPES.items():
        d = root / f"identity_{dt.lower()}"
        save_model(
            d,
            [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
            [tensor("INPUT0", elem, [2, "n"])],
            [tensor("OUTPUT0", elem, [2, "n"])],
        )
        (d / "config.pbtxt").write_text(
            f'platform: "onnxruntime_onnx"\n'
            f'input [ {{ name: "INPUT0" data_type: TYPE_{"STRING" if dt == "BYTES" else dt} dims: [ 2, -1 ] }} ]\n'
            f'output [ {{ name: "OUTPUT0" data_type: TYPE_{"STRING" if dt == "BYTES" else dt} dims: [ 2, -1 ] }} ]\n'
        )

    # Add/Sub on a batch dimension, with the dynamic batcher holding requests
    # until four are there (or 5 s pass), so four concurrent requests run as
    # one execution.
    d = root / "add_sub_batch"
    save_model(
        d,
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        [tensor("INPUT0", TensorProto.FLOAT, ["b", 4]), tensor("INPUT1", TensorProto.FLOAT, ["b", 4])],
        [tensor("OUTPUT0", TensorProto.FLOAT, ["b", 4]), tensor("OUTPUT1", TensorProto.FLOAT, ["b", 4])],
    )
    (d / "config.pbtxt").write_text(
        'backend: "onnxruntime"\n'
        "max_batch_size: 8\n"
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },'
        ' { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },'
        ' { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        "dynamic_batching { preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 5000000 }\n"
        'instance_group [ { kind: KIND_CPU count: 1 } ]\n'
        'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n'
        'parameters { key: "inter_op_thread_count" value: { string_value: "1" } }\n'
    )

    # No config.pbtxt at all: a batching model (every first dimension
    # variable) with a scalar-per-item input and a matrix product.
    d = root / "auto_batch"
    save_model(
        d,
        [
            helper.make_node("MatMul", ["X", "W"], ["Y"]),
            helper.make_node("Mul", ["S", "S"], ["S2"]),
        ],
        [tensor("X", TensorProto.FLOAT, ["b", 3]), tensor("S", TensorProto.INT64, ["b"])],
        [tensor("Y", TensorProto.FLOAT, ["b", 2]), tensor("S2", TensorProto.INT64, ["b"])],
        initializers=[helper.make_tensor("W", TensorProto.FLOAT, [3, 2], [1, 2, 3, 4, 5, 6])],
    )

    # A partial config.pbtxt (no inputs/outputs, a custom file name): a
    # model with a fixed first dimension cannot batch.
    d = root / "auto_fixed"
    save_model(
        d,
        [helper.make_node("Relu", ["in"], ["out"])],
        [tensor("in", TensorProto.DOUBLE, [3, "w"])],
        [tensor("out", TensorProto.DOUBLE, [3, "w"])],
        name="relu.onnx",
    )
    (d / "config.pbtxt").write_text(
        'platform: "onnxruntime_onnx"\ndefault_model_filename: "relu.onnx"\n'
    )

    # The configuration says FP32 where the model takes INT32.
    d = root / "wrong_type"
    save_model(
        d,
        [helper.make_node("Identity", ["A"], ["B"])],
        [tensor("A", TensorProto.INT32, [4])],
        [tensor("B", TensorProto.INT32, [4])],
    )
    (d / "config.pbtxt").write_text(
        'backend: "onnxruntime"\n'
        'input [ { name: "A" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "B" data_type: TYPE_INT32 dims: [ 4 ] } ]\n'
    )

    # Not an ONNX model at all.
    d = root / "broken"
    (d / "1").mkdir(parents=True)
    (d / "1" / "model.onnx").write_bytes(b"this is not a protobuf model")
    (d / "config.pbtxt").write_text(
        'platform: "onnxruntime_onnx"\n'
        'input [ { name: "A" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "B" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
    )

    # A built-in model, to show the rest of the repository serves whatever
    # happens to the ONNX ones.
    d = root / "builtin_identity"
    (d / "1").mkdir(parents=True)
    (d / "config.pbtxt").write_text(
        'backend: "identity"\n'
        'input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 2 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 2 ] } ]\n'
    )


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
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx-repository")
    build_repository(root)
    return root


@pytest.fixture(scope="module")
def onnx_server(library, repository):
    # Some models are meant to fail, so readiness is not strict.
    s = NereidServer(
        ["--onnxruntime-library", library, "--strict-readiness=false", "--exit-on-error=false"],
        repository=repository,
        name="nereid-onnx",
    ).start()
    yield s
    s.stop()


@pytest.fixture()
def http(onnx_server):
    c = httpclient.InferenceServerClient(url=onnx_server.url)
    yield c
    c.close()


def index_of(client) -> dict:
    return {m["name"]: m for m in client.get_model_repository_index()}


def reference(model_dir: Path, feeds: dict, name="model.onnx") -> list:
    session = ort.InferenceSession(
        str(model_dir / "1" / name), providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)


def sample(dt: str, shape) -> np.ndarray:
    rng = np.random.default_rng(7)
    if dt == "BYTES":
        words = np.array([f"word-{i}-ü" for i in range(int(np.prod(shape)))], dtype=object)
        return words.reshape(shape)
    if dt == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dt == "BF16":
        return (rng.standard_normal(size=shape) * 100).astype(ml_dtypes.bfloat16)
    np_type = DATATYPES[dt][1]
    if np.issubdtype(np_type, np.integer):
        info = np.iinfo(np_type)
        return rng.integers(info.min, info.max, size=shape, dtype=np_type, endpoint=True)
    return (rng.standard_normal(size=shape) * 100).astype(np_type)


@pytest.mark.parametrize("dt", list(DATATYPES))
def test_every_datatype_round_trips(http, repository, dt):
    data = sample(dt, (2, 5))
    inp = httpclient.InferInput("INPUT0", list(data.shape), dt)
    inp.set_data_from_numpy(data, binary_data=True)
    result = http.infer(f"identity_{dt.lower()}", [inp])
    out = result.as_numpy("OUTPUT0")
    assert result.get_output("OUTPUT0")["datatype"] == dt
    assert list(out.shape) == [2, 5]
    if dt == "BYTES":
        assert [x.decode() for x in out.flatten()] == list(data.flatten())
        expected = reference(repository / "identity_bytes", {"INPUT0": data.astype(str)})[0]
        assert [x.decode() for x in out.flatten()] == list(expected.flatten())
    else:
        np.testing.assert_array_equal(out, data)
    # Python onnxruntime takes no bfloat16 arrays; the round trip above
    # covers BF16.
    if dt not in ("BF16", "BYTES"):
        expected = reference(repository / f"identity_{dt.lower()}", {"INPUT0": data})[0]
        np.testing.assert_array_equal(out, expected)


def test_json_tensors_and_dynamic_dims(http):
    # The same model takes any width; JSON data goes the non-binary way.
    for width in (1, 3, 17):
        data = np.arange(2 * width, dtype=np.int32).reshape(2, width)
        inp = httpclient.InferInput("INPUT0", [2, width], "INT32")
        inp.set_data_from_numpy(data, binary_data=False)
        out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=False)
        result = http.infer("identity_int32", [inp], outputs=[out])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)
    bad = httpclient.InferInput("INPUT0", [3, 2], "INT32")
    bad.set_data_from_numpy(np.zeros((3, 2), dtype=np.int32))
    with pytest.raises(InferenceServerException, match=r"\[2,-1\]"):
        http.infer("identity_int32", [bad])


def test_batching_runs_concurrent_requests_as_one_execution(onnx_server, repository):
    rng = np.random.default_rng(3)
    requests = [
        (rng.standard_normal((1, 4)).astype(np.float32), rng.standard_normal((1, 4)).astype(np.float32))
        for _ in range(4)
    ]

    def send(pair):
        c = httpclient.InferenceServerClient(url=onnx_server.url)
        try:
            a, b = pair
            i0 = httpclient.InferInput("INPUT0", [1, 4], "FP32")
            i0.set_data_from_numpy(a)
            i1 = httpclient.InferInput("INPUT1", [1, 4], "FP32")
            i1.set_data_from_numpy(b)
            r = c.infer("add_sub_batch", [i0, i1])
            return r.as_numpy("OUTPUT0"), r.as_numpy("OUTPUT1")
        finally:
            c.close()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(send, requests))
    for (a, b), (total, diff) in zip(requests, results):
        ref_sum, ref_diff = reference(repository / "add_sub_batch", {"INPUT0": a, "INPUT1": b})
        np.testing.assert_allclose(total, ref_sum, rtol=1e-6)
        np.testing.assert_allclose(diff, ref_diff, rtol=1e-6)

    c = httpclient.InferenceServerClient(url=onnx_server.url)
    stats = c.get_inference_statistics("add_sub_batch")["model_stats"][0]
    c.close()
    assert stats["inference_count"] == 4
    assert stats["execution_count"] == 1, stats


def test_grpc_batch_of_rows(onnx_server):
    c = grpcclient.InferenceServerClient(url=onnx_server.grpc_url)
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.ones((3, 4), dtype=np.float32)
    i0 = grpcclient.InferInput("INPUT0", [3, 4], "FP32")
    i0.set_data_from_numpy(a)
    i1 = grpcclient.InferInput("INPUT1", [3, 4], "FP32")
    i1.set_data_from_numpy(b)
    # Asking for one output runs only the part of the graph it needs.
    r = c.infer("add_sub_batch", [i0, i1], outputs=[grpcclient.InferRequestedOutput("OUTPUT1")])
    np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), a - b)
    assert r.as_numpy("OUTPUT0") is None
    c.close()


def test_auto_complete_without_config(http, repository):
    config = http.get_model_config("auto_batch")
    assert config["platform"] == "onnxruntime_onnx"
    assert config["backend"] == "onnxruntime"
    assert config["max_batch_size"] == 4
    assert "dynamic_batching" in config
    inputs = {i["name"]: i for i in config["input"]}
    assert (inputs["X"]["data_type"], inputs["X"]["dims"]) == ("TYPE_FP32", [3])
    assert "reshape" not in inputs["X"]
    # One value per batch item: dims [1] over the model's scalar rows.
    assert (inputs["S"]["data_type"], inputs["S"]["dims"]) == ("TYPE_INT64", [1])
    assert inputs["S"]["reshape"] == {"shape": []}
    outputs = {o["name"]: o for o in config["output"]}
    assert (outputs["Y"]["data_type"], outputs["Y"]["dims"]) == ("TYPE_FP32", [2])
    assert outputs["S2"]["reshape"] == {"shape": []}

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    s = np.array([[3], [-4]], dtype=np.int64)
    ix = httpclient.InferInput("X", [2, 3], "FP32")
    ix.set_data_from_numpy(x)
    is_ = httpclient.InferInput("S", [2, 1], "INT64")
    is_.set_data_from_numpy(s)
    r = http.infer("auto_batch", [ix, is_])
    y_ref, s2_ref = reference(repository / "auto_batch", {"X": x, "S": s.reshape(2)})
    np.testing.assert_allclose(r.as_numpy("Y"), y_ref)
    assert list(r.as_numpy("S2").shape) == [2, 1]
    np.testing.assert_array_equal(r.as_numpy("S2").reshape(2), s2_ref)


def test_auto_complete_partial_config(http, repository):
    config = http.get_model_config("auto_fixed")
    assert config.get("max_batch_size", 0) == 0
    assert config["default_model_filename"] == "relu.onnx"
    (inp,) = config["input"]
    assert inp["name"] == "in" and inp["data_type"] == "TYPE_FP64"
    assert inp["dims"] == [3, -1]
    x = np.array([[-1.0, 2.0], [3.0, -4.0], [0.5, -0.5]])
    i = httpclient.InferInput("in", [3, 2], "FP64")
    i.set_data_from_numpy(x)
    r = http.infer("auto_fixed", [i])
    np.testing.assert_array_equal(r.as_numpy("out"), np.maximum(x, 0))
    (ref,) = reference(repository / "auto_fixed", {"in": x}, name="relu.onnx")
    np.testing.assert_array_equal(r.as_numpy("out"), ref)


def test_bad_models_are_unavailable_with_reasons(http):
    index = index_of(http)
    wrong = index["wrong_type"]
    assert wrong["state"] == "UNAVAILABLE"
    assert "input 'A'" in wrong["reason"] and "TYPE_FP32" in wrong["reason"] and "TYPE_INT32" in wrong["reason"]
    broken = index["broken"]
    assert broken["state"] == "UNAVAILABLE"
    assert "ONNX Runtime cannot load" in broken["reason"] and "model.onnx" in broken["reason"]
    # Everything else serves.
    for name in ("builtin_identity", "auto_batch", "add_sub_batch", "identity_fp32"):
        assert index[name]["state"] == "READY", index[name]
    assert http.is_server_live()
    with pytest.raises(InferenceServerException):
        i = httpclient.InferInput("A", [4], "FP32")
        i.set_data_from_numpy(np.zeros(4, dtype=np.float32))
        http.infer("broken", [i])


def test_bad_bool_and_bytes_inputs_are_refused(http):
    # A bool view of a byte 2 goes on the wire as is.
    raw = np.array([[0, 1], [2, 1]], dtype=np.uint8).view(np.bool_)
    i = httpclient.InferInput("INPUT0", [2, 2], "BOOL")
    i.set_data_from_numpy(raw)
    with pytest.raises(InferenceServerException, match="not a BOOL"):
        http.infer("identity_bool", [i])
    b = httpclient.InferInput("INPUT0", [2, 1], "BYTES")
    b.set_data_from_numpy(np.array([[b"ok"], [b"\xff\xfe"]], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="not UTF-8"):
        http.infer("identity_bytes", [b])


def test_missing_library_is_unavailable_and_says_how_to_fetch(repository):
    s = NereidServer(
        ["--onnxruntime-library", "/nonexistent/libonnxruntime.so", "--strict-readiness=false", "--exit-on-error=false"],
        repository=repository,
        name="nereid-no-ort",
    ).start()
    try:
        c = httpclient.InferenceServerClient(url=s.url)
        index = index_of(c)
        for name in ("identity_fp32", "auto_batch", "add_sub_batch"):
            entry = index[name]
            assert entry["state"] == "UNAVAILABLE", entry
            assert "scripts/fetch-onnxruntime.sh" in entry["reason"], entry
            assert "/nonexistent/libonnxruntime.so" in entry["reason"], entry
        assert index["builtin_identity"]["state"] == "READY"
        data = np.array([1, 2], dtype=np.int32)
        i = httpclient.InferInput("INPUT0", [2], "INT32")
        i.set_data_from_numpy(data)
        r = c.infer("builtin_identity", [i])
        np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), data)
        f = httpclient.InferInput("INPUT0", [2, 1], "FP32")
        f.set_data_from_numpy(np.zeros((2, 1), dtype=np.float32))
        with pytest.raises(InferenceServerException, match="identity_fp32"):
            c.infer("identity_fp32", [f])
        c.close()
    finally:
        s.stop()


def test_backend_config_batch_size_and_global_thread_pool(library, repository):
    s = NereidServer(
        [
            f"--backend-config=onnxruntime,library-path={library}",
            "--backend-config=default-max-batch-size=16",
            "--backend-config=onnxruntime,enable-global-threadpool=1",
            "--backend-config=onnxruntime,intra_op_thread_count=1",
            "--backend-config=onnxruntime,inter_op_thread_count=1",
            "--strict-readiness=false",
            "--exit-on-error=false",
        ],
        repository=repository,
        name="nereid-onnx-backend-config",
    ).start()
    try:
        c = httpclient.InferenceServerClient(url=s.url)
        config = c.get_model_config("auto_batch")
        assert config["max_batch_size"] == 16
        assert config["dynamic_batching"]["preferred_batch_size"] == [16]
        # Sessions on the shared pool run (add_sub_batch's own thread
        # parameters give way to it).
        a = np.arange(8, dtype=np.float32).reshape(2, 4)
        i0 = httpclient.InferInput("INPUT0", [2, 4], "FP32")
        i0.set_data_from_numpy(a)
        i1 = httpclient.InferInput("INPUT1", [2, 4], "FP32")
        i1.set_data_from_numpy(a)
        r = c.infer("add_sub_batch", [i0, i1])
        np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a + a)
        c.close()
    finally:
        s.stop()


def test_strict_model_config_turns_auto_complete_off(library, repository):
    s = NereidServer(
        [
            "--onnxruntime-library",
            library,
            "--strict-model-config=true",
            "--strict-readiness=false",
            "--exit-on-error=false",
        ],
        repository=repository,
        name="nereid-onnx-strict",
    ).start()
    try:
        c = httpclient.InferenceServerClient(url=s.url)
        index = index_of(c)
        # No config.pbtxt: nothing to load from.
        assert index["auto_batch"]["state"] == "UNAVAILABLE"
        assert "no config.pbtxt" in index["auto_batch"]["reason"]
        # A config.pbtxt without inputs stays without them.
        assert index["auto_fixed"]["state"] == "UNAVAILABLE"
        assert "no inputs" in index["auto_fixed"]["reason"]
        # Complete configurations load as before.
        assert index["identity_fp32"]["state"] == "READY"
        c.close()
    finally:
        s.stop()
