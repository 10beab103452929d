"""Request decoding, error codes and repository control as Triton's QA suite
expects them (issue 12, items 7, 8, 10 and 11), checked over real sockets
with tritonclient (HTTP and gRPC) and raw HTTP:

* `data` nested deeper than Triton's limit (100 levels) is refused with
  Triton's message; a tensor named twice "already exists in request";
* malformed requests are the client's errors (400 / INVALID_ARGUMENT) with
  Triton's wording, where Triton's own tests do not pin its 500;
* a name never loaded is 400 / INVALID_ARGUMENT, an unloaded model
  404 / NOT_FOUND, loading a model no repository holds 400;
* `load` with `file:` parameters loads from a private temporary directory
  that goes away with the model, with Triton's limits on the paths (an
  ONNX model among them, with the ONNX Runtime library test_onnx.py's
  fixture fetches).
"""

import base64
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import rawhttp
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest import NereidServer
from onnx import TensorProto, helper
from test_onnx import library, save_model, tensor  # noqa: F401  (library is a fixture)
from tritonclient.utils import InferenceServerException


def post(url, path, body, headers=None):
    body = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, _, resp = rawhttp.request(
        url, "POST", path, body, {"Content-Type": "application/json", **(headers or {})}
    )
    return status, resp


def nested(depth, scalar):
    value = scalar
    for _ in range(depth):
        value = [value]
    return value


# -- item 8: nesting, duplicates, raw bodies, the index body -----------------


@pytest.mark.parametrize(
    "model,datatype,scalar", [("simple_identity", "BYTES", "hello"), ("identity_int64", "INT64", 123)]
)
def test_data_nesting_limit(url, model, datatype, scalar):
    def infer(depth):
        doc = {"inputs": [{"name": "INPUT0", "datatype": datatype, "shape": [1, 1],
                           "data": nested(depth, scalar)}]}
        return post(url, f"/v2/models/{model}/infer", doc)

    status, body = infer(50)
    assert status == 200, body[:300]
    assert json.loads(body)["outputs"][0]["data"] == [scalar]
    for depth in (100, 120):
        status, body = infer(depth)
        assert status == 400, body[:300]
        assert "JSON nesting depth exceeds maximum allowed limit (100)" in rawhttp.error_of(body)


def simple_inputs_http():
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = [httpclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
    for i in inputs:
        i.set_data_from_numpy(a)
    return inputs


def test_duplicate_output_names_http(url, client):
    doc = {
        "inputs": [{"name": n, "datatype": "INT32", "shape": [1, 16], "data": list(range(16))}
                   for n in ("INPUT0", "INPUT1")],
        "outputs": [{"name": "OUTPUT0"}, {"name": "OUTPUT0"}],
    }
    status, body = post(url, "/v2/models/simple/infer", doc)
    assert status == 400, body
    assert rawhttp.error_of(body) == "output 'OUTPUT0' already exists in request"
    outputs = [httpclient.InferRequestedOutput("OUTPUT0") for _ in range(2)]
    with pytest.raises(InferenceServerException) as e:
        client.infer("simple", simple_inputs_http(), outputs=outputs)
    assert "output 'OUTPUT0' already exists in request" in e.value.message()
    assert e.value.status() == "400"
    assert client.is_server_live()


def test_duplicate_output_names_grpc(grpc_url):
    c = grpcclient.InferenceServerClient(grpc_url)
    try:
        a = np.ones((1, 16), dtype=np.int32)
        inputs = [grpcclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
        for i in inputs:
            i.set_data_from_numpy(a)
        outputs = [grpcclient.InferRequestedOutput("OUTPUT0") for _ in range(2)]
        with pytest.raises(InferenceServerException) as e:
            c.infer("simple", inputs, outputs=outputs)
        assert "output 'OUTPUT0' already exists in request" in e.value.message()
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert c.is_server_live()
    finally:
        c.close()


def test_repository_index_malformed_body(url):
    for body in (b'{"ready":', b"not json", b'{"ready": "yes"}'):
        status, resp = post(url, "/v2/repository/index", body)
        assert status == 400, (body, resp)
        assert rawhttp.error_of(resp)
    status, resp = post(url, "/v2/repository/index", {"ready": True})
    assert status == 200, resp


# -- item 10: client faults are 400, with Triton's wording -------------------


def one_input(**fields):
    t = {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))}
    t.update(fields)
    return {"inputs": [t, {**t, "name": "INPUT1"}]}


@pytest.mark.parametrize(
    "body,message",
    [
        (b'{"inputs": [', "failed to parse the request JSON buffer"),
        (b'{"id": "\xff\xfe", "inputs": []}', "failed to parse the request JSON buffer"),
        (
            b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1],"data":[NaN]}]}',
            "failed to parse the request JSON buffer: in input 'INPUT0'",
        ),
        (
            json.dumps(one_input(data=list(range(15)))).encode(),
            "Failed to parse 'data' field: shape does not match true shape",
        ),
        (
            json.dumps(one_input(data=list(range(18)))).encode(),
            "Unable to parse 'data': Shape does not match true shape of 'data' field",
        ),
        (json.dumps(one_input(data=["a"] * 16)).encode(), "Unable to parse 'data'"),
    ],
    ids=["truncated", "invalid-utf8", "nan", "too-few-elements", "too-many-elements", "strings"],
)
def test_malformed_requests_are_400(url, body, message):
    status, resp = post(url, "/v2/models/simple/infer", body)
    assert status == 400, resp[:300]
    assert rawhttp.error_of(resp).startswith(message), rawhttp.error_of(resp)


def test_element_count_mismatch_has_tritons_exact_body(url):
    # Triton's L0_http/test.sh matches the whole body.
    status, resp = post(url, "/v2/models/simple/infer",
                        {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16],
                                     "data": list(range(1, 16))}]})
    assert status == 400
    assert resp == b"{\"error\":\"Failed to parse 'data' field: shape does not match true shape\"}"


def test_binary_data_size_beyond_body_names_the_input(url):
    header = {"inputs": [{"name": n, "datatype": "INT32", "shape": [1, 16],
                          "parameters": {"binary_data_size": 64}} for n in ("INPUT0", "INPUT1")]}
    body, n = rawhttp.binary_infer_body(header, [np.zeros(16, np.int32).tobytes()])
    status, _, resp = rawhttp.request(url, "POST", "/v2/models/simple/infer", body,
                                      {"Inference-Header-Content-Length": n})
    assert status == 400, resp
    assert "unexpected size for input 'INPUT1'" in rawhttp.error_of(resp)


def test_negative_dimension_keeps_tritons_500(url):
    # Triton's http_test.py test_negative_dimensions pins 500 and this text.
    status, resp = post(url, "/v2/models/simple/infer", one_input(shape=[2, -5]))
    assert status == 500, resp
    assert ("Unable to parse 'shape': attempt to access JSON non-unsigned-integer as "
            "unsigned-integer") in rawhttp.error_of(resp)


# -- item 11: unknown, unloaded and missing models ----------------------------


def status_of(call, *args, **kw):
    with pytest.raises(InferenceServerException) as e:
        call(*args, **kw)
    return e.value.status(), e.value.message()


def test_unknown_and_unloaded_models(explicit_server):
    h = httpclient.InferenceServerClient(explicit_server.url)
    g = grpcclient.InferenceServerClient(explicit_server.grpc_url)
    try:
        # Never loaded (though the repository holds it) and never heard of:
        # Triton's INVALID_ARG.
        for name in ("simple", "no_such_model"):
            expected = f"Request for unknown model: '{name}' is not found"
            for call in (h.get_model_metadata, h.get_model_config):
                assert status_of(call, name) == ("400", expected)
            for call in (g.get_model_metadata, g.get_model_config, g.is_model_ready):
                assert status_of(call, name) == ("StatusCode.INVALID_ARGUMENT", expected)
            status, _, body = rawhttp.request(explicit_server.url, "GET", f"/v2/models/{name}/ready")
            assert status == 400 and rawhttp.error_of(body) == expected
        # Loading what no repository holds is the client's mistake.
        code, message = status_of(h.load_model, "no_such_model")
        assert code == "400"
        assert message.startswith(
            "failed to load 'no_such_model', failed to poll from model repository"), message
        code, _ = status_of(g.load_model, "no_such_model")
        assert code == "StatusCode.INVALID_ARGUMENT"

        # Loaded, then unloaded: NOT_FOUND, "has no available versions".
        h.load_model("simple")
        assert h.is_model_ready("simple")
        h.unload_model("simple")
        expected = "Request for unknown model: 'simple' has no available versions"
        assert status_of(h.get_model_metadata, "simple") == ("404", expected)
        assert status_of(g.get_model_metadata, "simple") == ("StatusCode.NOT_FOUND", expected)
        assert status_of(h.infer, "simple", simple_inputs_http()) == ("404", expected)
        # Unloading what is not loaded succeeds, as in Triton.
        h.unload_model("no_such_model")
    finally:
        h.close()
        g.close()


# -- item 7: load with file: overrides ----------------------------------------

IDENTITY_CONFIG = json.dumps({
    "backend": "identity",
    "max_batch_size": 0,
    "input": [{"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [2]}],
    "output": [{"name": "OUTPUT0", "data_type": "TYPE_INT32", "dims": [2]}],
})


def override_dirs(server):
    return sorted(Path(tempfile.gettempdir()).glob(f"nereid-model-{server.proc.pid}-*"))


def infer_identity(client, module, name):
    x = np.array([7, 9], dtype=np.int32)
    i = module.InferInput("INPUT0", [2], "INT32")
    i.set_data_from_numpy(x)
    out = client.infer(name, [i]).as_numpy("OUTPUT0")
    assert out.tolist() == [7, 9]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_load_with_file_overrides(explicit_server, protocol):
    module = httpclient if protocol == "http" else grpcclient
    target = explicit_server.url if protocol == "http" else explicit_server.grpc_url
    c = module.InferenceServerClient(target)
    # Readiness over HTTP for both: it answers false for a version that is
    # not ready, where gRPC's ModelReady answers an error.
    h = httpclient.InferenceServerClient(explicit_server.url)
    try:
        # `config` is required with files; the model is not loaded.
        with pytest.raises(InferenceServerException) as e:
            c.load_model("from_files", files={"file:1/notes.txt": b"hi"})
        assert "failed to load 'from_files', failed to poll from model repository" in e.value.message()
        assert not override_dirs(explicit_server)

        c.load_model("from_files", config=IDENTITY_CONFIG, files={"file:1/notes.txt": b"hi"})
        assert h.is_model_ready("from_files", "1")
        infer_identity(c, module, "from_files")
        [d] = override_dirs(explicit_server)
        assert (d / "1" / "notes.txt").read_bytes() == b"hi"
        assert (d.stat().st_mode & 0o777) == 0o700

        # Over a repository model: its versions come from the files until a
        # load without files brings the repository's back.
        c.load_model("identity_int32")
        assert h.is_model_ready("identity_int32", "1")
        c.load_model("identity_int32", config=IDENTITY_CONFIG,
                     files={"file:3/notes.txt": b"v3"})
        assert h.is_model_ready("identity_int32", "3")
        assert not h.is_model_ready("identity_int32", "1")
        assert len(override_dirs(explicit_server)) == 2
        c.load_model("identity_int32")
        assert h.is_model_ready("identity_int32", "1")
        assert len(override_dirs(explicit_server)) == 1

        c.unload_model("from_files")
        assert not override_dirs(explicit_server)
    finally:
        c.close()
        h.close()


def test_file_override_paths_stay_inside(explicit_server, tmp_path):
    # As Triton's L0_lifecycle test_file_override_security: relative paths
    # that climb out and absolute paths are refused, and nothing is written.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "existing.txt").write_text("original")
    climb = "../" * 12 + str(outside).lstrip("/")
    c = httpclient.InferenceServerClient(explicit_server.url)
    try:
        for path in (f"{climb}/new_dir/test.txt", f"{climb}/existing.txt",
                     str(outside / "existing.txt")):
            with pytest.raises(InferenceServerException) as e:
                c.load_model("new_model", config=IDENTITY_CONFIG, files={f"file:{path}": b"x"})
            assert "failed to load" in e.value.message()
            assert e.value.status() == "400"
        assert not (outside / "new_dir").exists()
        assert (outside / "existing.txt").read_text() == "original"
        assert not override_dirs(explicit_server)
    finally:
        c.close()


def test_file_override_long_component(explicit_server):
    # Triton's http_test.py test_load_oversized_file_parameter: 500 (pinned
    # there) with "failed to poll from model repository", server up.
    doc = {"parameters": {"file:" + "A" * 256: "YQ==", "config": "{}"}}
    status, resp = post(explicit_server.url, "/v2/repository/models/onnx_zero_1_float32/load", doc)
    assert status == 500, resp
    assert "failed to poll from model repository" in rawhttp.error_of(resp)
    status, _, _ = rawhttp.request(explicit_server.url, "GET", "/v2/health/live")
    assert status == 200


def test_file_override_bad_base64(explicit_server):
    doc = {"parameters": {"config": IDENTITY_CONFIG, "file:1/model.onnx": "**not base64**"}}
    status, resp = post(explicit_server.url, "/v2/repository/models/m/load", doc)
    assert status == 400, resp
    assert "'file:1/model.onnx'" in rawhttp.error_of(resp)


def test_raw_body_for_two_variable_dimensions(explicit_server):
    # A model with one input of two variable dimensions, loaded from files.
    config = json.dumps({
        "backend": "identity", "max_batch_size": 0,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP16", "dims": [-1, -1]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP16", "dims": [-1, -1]}],
    })
    doc = {"parameters": {"config": config, "file:1/notes.txt": base64.b64encode(b"x").decode()}}
    status, resp = post(explicit_server.url, "/v2/repository/models/two_dims/load", doc)
    assert status == 200, resp
    status, _, resp = rawhttp.request(
        explicit_server.url, "POST", "/v2/models/two_dims/infer",
        np.ones([2, 2], dtype=np.float16).tobytes(), {"Inference-Header-Content-Length": "0"})
    assert status == 400, resp
    assert ("The shape of the raw input 'INPUT0' can not be deduced because there are more "
            "than one variable-sized dimension") in rawhttp.error_of(resp)


# -- config.pbtxt syntax errors say where -------------------------------------


def test_config_syntax_error_has_line_and_column(explicit_repository):
    d = explicit_repository / "broken"
    (d / "1").mkdir(parents=True)
    (d / "config.pbtxt").write_text('backend: "identity"\nmax_batch_size: 0\ninput [ { name: }\n')
    s = NereidServer(["--model-control-mode=explicit"], repository=explicit_repository,
                     name="nereid-broken").start(ready_path="/v2/health/live")
    try:
        c = httpclient.InferenceServerClient(s.url)
        with pytest.raises(InferenceServerException) as e:
            c.load_model("broken")
        assert "cannot parse protobuf text format at line 3, column 17" in e.value.message()
        c.close()
    finally:
        s.stop()


def test_onnx_model_from_file_overrides(library, tmp_path):
    # Triton's L0_lifecycle test_file_override: an ONNX model sent as
    # `file:1/model.onnx` beside a minimal config, served from the files.
    save_model(
        tmp_path,
        [helper.make_node("Neg", ["INPUT0"], ["OUTPUT0"])],
        [tensor("INPUT0", TensorProto.FLOAT, [1, 4])],
        [tensor("OUTPUT0", TensorProto.FLOAT, [1, 4])],
    )
    content = (tmp_path / "1" / "model.onnx").read_bytes()
    repository = tmp_path / "empty_repository"
    repository.mkdir()
    s = NereidServer(["--model-control-mode=explicit", "--onnxruntime-library", library],
                     repository=repository, name="nereid-onnx-files").start(
                         ready_path="/v2/health/live")
    try:
        for module, target in ((httpclient, s.url), (grpcclient, s.grpc_url)):
            c = module.InferenceServerClient(target)
            c.load_model("negate", config=json.dumps({"backend": "onnxruntime"}),
                         files={"file:1/model.onnx": content})
            x = np.arange(4, dtype=np.float32).reshape(1, 4)
            i = module.InferInput("INPUT0", [1, 4], "FP32")
            i.set_data_from_numpy(x)
            assert c.infer("negate", [i]).as_numpy("OUTPUT0").tolist() == (-x).tolist()
            c.unload_model("negate")
            c.close()
        assert not override_dirs(s)
    finally:
        s.stop()


def test_file_override_removed_at_shutdown(explicit_repository):
    s = NereidServer(["--model-control-mode=explicit"], repository=explicit_repository,
                     name="nereid-override-shutdown").start(ready_path="/v2/health/live")
    try:
        c = httpclient.InferenceServerClient(s.url)
        c.load_model("from_files", config=IDENTITY_CONFIG, files={"file:1/notes.txt": b"hi"})
        c.close()
        assert len(override_dirs(s)) == 1
        dirs = override_dirs(s)
    finally:
        assert s.stop() == 0
    assert not any(d.exists() for d in dirs)
