"""Inference on the example models through tritonclient.http: results,
async requests in flight, compression, request ids, parameters and
classification."""

import json
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import rawhttp


def simple_inputs(a, b, datatype="INT32", binary=(True, True)):
    inputs = [
        httpclient.InferInput("INPUT0", list(a.shape), datatype),
        httpclient.InferInput("INPUT1", list(b.shape), datatype),
    ]
    inputs[0].set_data_from_numpy(a, binary_data=binary[0])
    inputs[1].set_data_from_numpy(b, binary_data=binary[1])
    return inputs


def outputs(binary=(True, True), names=("OUTPUT0", "OUTPUT1")):
    return [
        httpclient.InferRequestedOutput(n, binary_data=bd)
        for n, bd in zip(names, binary)
    ]


@pytest.mark.parametrize(
    "in_bin,out_bin",
    [
        ((True, True), (True, True)),
        ((False, False), (False, False)),
        ((False, True), (True, False)),
    ],
)
def test_simple_add_sub(client, in_bin, out_bin):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), -1, dtype=np.int32)
    r = client.infer(
        "simple", simple_inputs(a, b, binary=in_bin), outputs=outputs(out_bin)
    )
    assert np.array_equal(r.as_numpy("OUTPUT0"), a + b)
    assert np.array_equal(r.as_numpy("OUTPUT1"), a - b)


def test_simple_no_outputs_requested(client):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    r = client.infer(
        "simple", simple_inputs(a, b, binary=(False, True)), query_params={"test_1": 1}
    )
    names = [o["name"] for o in r.get_response()["outputs"]]
    assert sorted(names) == ["OUTPUT0", "OUTPUT1"]
    assert np.array_equal(r.as_numpy("OUTPUT0"), a + b)
    assert np.array_equal(r.as_numpy("OUTPUT1"), a - b)


def test_simple_one_output_requested(client):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    r = client.infer(
        "simple", simple_inputs(a, b), outputs=outputs((True,), ("OUTPUT1",))
    )
    assert [o["name"] for o in r.get_response()["outputs"]] == ["OUTPUT1"]
    assert np.array_equal(r.as_numpy("OUTPUT1"), a - b)
    assert r.as_numpy("OUTPUT0") is None


def test_simple_full_batch_and_version(client):
    rng = np.random.default_rng(1)
    a = rng.integers(-1000, 1000, (8, 16), dtype=np.int32)
    b = rng.integers(-1000, 1000, (8, 16), dtype=np.int32)
    r = client.infer("simple", simple_inputs(a, b), model_version="1")
    assert r.get_response()["model_version"] == "1"
    assert np.array_equal(r.as_numpy("OUTPUT0"), a + b)
    assert np.array_equal(r.as_numpy("OUTPUT1"), a - b)


def test_simple_int32_wraps(client):
    a = np.full((1, 16), 2**31 - 1, dtype=np.int32)
    b = np.ones((1, 16), dtype=np.int32)
    r = client.infer("simple", simple_inputs(a, b))
    assert np.array_equal(r.as_numpy("OUTPUT0"), np.full((1, 16), -(2**31), np.int32))


def test_simple_int8(client):
    a = np.arange(-8, 8, dtype=np.int8).reshape(1, 16)
    b = np.full((1, 16), 5, dtype=np.int8)
    for binary in ((True, True), (False, False)):
        r = client.infer(
            "simple_int8",
            simple_inputs(a, b, "INT8", binary),
            outputs=outputs(binary),
        )
        assert r.as_numpy("OUTPUT0").dtype == np.int8
        assert np.array_equal(r.as_numpy("OUTPUT0"), a + b)
        assert np.array_equal(r.as_numpy("OUTPUT1"), a - b)


def test_simple_string(client):
    in0 = np.arange(16, dtype=np.int32).reshape(1, 16)
    in1 = np.ones((1, 16), dtype=np.int32)
    a = np.array([str(x).encode() for x in in0.flatten()], dtype=np.object_).reshape(1, 16)
    b = np.array([str(x).encode() for x in in1.flatten()], dtype=np.object_).reshape(1, 16)
    r = client.infer(
        "simple_string",
        simple_inputs(a, b, "BYTES", (True, False)),
        outputs=outputs((True, False)),
    )
    sums = [int(x) for x in r.as_numpy("OUTPUT0").flatten()]
    diffs = [int(x) for x in r.as_numpy("OUTPUT1").flatten()]
    assert sums == (in0 + in1).flatten().tolist()
    assert diffs == (in0 - in1).flatten().tolist()


def test_simple_string_not_a_number(client):
    a = np.array([b"x"] * 16, dtype=np.object_).reshape(1, 16)
    b = np.array([b"1"] * 16, dtype=np.object_).reshape(1, 16)
    with pytest.raises(InferenceServerException) as e:
        client.infer("simple_string", simple_inputs(a, b, "BYTES"))
    assert "INPUT0" in e.value.message()


@pytest.mark.parametrize("binary", [True, False])
def test_simple_identity_null_chars(client, binary):
    data = np.array(["he\x00llo".encode()] * 16, dtype=np.object_).reshape(1, 16)
    inp = httpclient.InferInput("INPUT0", [1, 16], "BYTES")
    inp.set_data_from_numpy(data, binary_data=binary)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)
    got = client.infer("simple_identity", [inp], outputs=[out]).as_numpy("OUTPUT0")
    got = [x.encode() if isinstance(x, str) else x for x in got.flatten()]
    assert got == data.flatten().tolist()


@pytest.mark.parametrize("binary", [True, False])
def test_simple_identity_np_bytes(client, binary):
    data = np.array([b"\x00\x01\x02\x03"] * 16, dtype=np.bytes_).reshape(1, 16)
    inp = httpclient.InferInput("INPUT0", [1, 16], "BYTES")
    inp.set_data_from_numpy(data, binary_data=binary)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)
    got = client.infer("simple_identity", [inp], outputs=[out]).as_numpy("OUTPUT0")
    got = [x.encode() if isinstance(x, str) else x for x in got.flatten()]
    assert got == [b"\x00\x01\x02\x03"] * 16


def test_simple_identity_variable_length(client):
    data = np.array([[b"a", b"bb", b"ccc"]], dtype=np.object_)
    inp = httpclient.InferInput("INPUT0", [1, 3], "BYTES")
    inp.set_data_from_numpy(data)
    got = client.infer(
        "simple_identity", [inp], outputs=[httpclient.InferRequestedOutput("OUTPUT0")]
    ).as_numpy("OUTPUT0")
    assert got.tolist() == [[b"a", b"bb", b"ccc"]]


def test_async_infer_many_in_flight(url):
    concurrency = 16
    client = httpclient.InferenceServerClient(url=url, concurrency=concurrency)
    try:
        rng = np.random.default_rng(2)
        pending = []
        for i in range(64):
            a = rng.integers(-100, 100, (1, 16), dtype=np.int32)
            b = np.full((1, 16), i, dtype=np.int32)
            req = client.async_infer(
                "simple",
                simple_inputs(a, b),
                outputs=outputs(),
                request_id=f"req-{i}",
            )
            pending.append((i, a, b, req))
        for i, a, b, req in pending:
            r = req.get_result(timeout=30)
            assert r.get_response()["id"] == f"req-{i}"
            assert np.array_equal(r.as_numpy("OUTPUT0"), a + b)
            assert np.array_equal(r.as_numpy("OUTPUT1"), a - b)
    finally:
        client.close()


def test_async_infer_on_two_instance_model(url):
    # `delay` has two instances; requests in flight together all complete.
    client = httpclient.InferenceServerClient(url=url, concurrency=4)
    try:
        data = np.ones((1, 2), dtype=np.float32)
        inp = httpclient.InferInput("INPUT0", [1, 2], "FP32")
        inp.set_data_from_numpy(data)
        reqs = [
            client.async_infer("delay", [inp], parameters={"execute_delay_ms": 100})
            for _ in range(6)
        ]
        for r in reqs:
            assert np.array_equal(r.get_result(timeout=30).as_numpy("OUTPUT0"), data)
    finally:
        client.close()


@pytest.mark.parametrize("request_alg", [None, "gzip", "deflate"])
@pytest.mark.parametrize("response_alg", [None, "gzip", "deflate"])
def test_compression(client, request_alg, response_alg):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 7, dtype=np.int32)
    r = client.infer(
        "simple",
        simple_inputs(a, b, binary=(True, False)),
        outputs=outputs((True, False)),
        request_compression_algorithm=request_alg,
        response_compression_algorithm=response_alg,
    )
    assert np.array_equal(r.as_numpy("OUTPUT0"), a + b)
    assert np.array_equal(r.as_numpy("OUTPUT1"), a - b)


@pytest.mark.parametrize("alg", ["gzip", "deflate"])
def test_response_actually_compressed(url, alg):
    import gzip
    import zlib

    body, n = rawhttp.simple_binary_request()
    status, headers, resp = rawhttp.request(
        url,
        "POST",
        "/v2/models/simple/infer",
        body,
        {"Inference-Header-Content-Length": n, "Accept-Encoding": alg},
    )
    assert status == 200, resp
    assert headers.get("content-encoding") == alg, headers
    plain = gzip.decompress(resp) if alg == "gzip" else zlib.decompress(resp)
    doc, raw = rawhttp.split_binary_response(headers, plain)
    assert np.array_equal(
        np.frombuffer(raw["OUTPUT0"], np.int32), np.arange(16, dtype=np.int32) + 1
    )


def test_request_id_echo(client):
    a = np.zeros((1, 16), dtype=np.int32)
    r = client.infer("simple", simple_inputs(a, a), request_id="my-request-42")
    assert r.get_response()["id"] == "my-request-42"
    r = client.infer("simple", simple_inputs(a, a))
    assert "id" not in r.get_response() or r.get_response()["id"] == ""


def test_request_parameters_reach_backend(client):
    data = np.ones((1, 3), dtype=np.float32)
    inp = httpclient.InferInput("INPUT0", [1, 3], "FP32")
    inp.set_data_from_numpy(data)
    # The delay model waits 1000 ms by default; the request parameter
    # overrides it, so an answer in under a second proves it arrived.
    start = time.monotonic()
    r = client.infer("delay", [inp], parameters={"execute_delay_ms": 0, "note": "x"})
    assert time.monotonic() - start < 1.0
    assert np.array_equal(r.as_numpy("OUTPUT0"), data)
    start = time.monotonic()
    client.infer("delay", [inp], parameters={"execute_delay_ms": 300})
    assert time.monotonic() - start >= 0.3
    with pytest.raises(InferenceServerException) as e:
        client.infer("delay", [inp], parameters={"execute_delay_ms": "soon"})
    assert "execute_delay_ms" in e.value.message()


def test_custom_parameters_accepted(client):
    a = np.zeros((1, 16), dtype=np.int32)
    r = client.infer(
        "simple",
        simple_inputs(a, a),
        parameters={"my_string": "s", "my_int": 3, "my_bool": True},
    )
    assert np.array_equal(r.as_numpy("OUTPUT0"), a)


def test_output_parameters_binary_data_size(client):
    a = np.zeros((1, 16), dtype=np.int32)
    r = client.infer("simple", simple_inputs(a, a), outputs=outputs((True, False)))
    o0, o1 = r.get_response()["outputs"]
    assert o0["parameters"]["binary_data_size"] == 64
    assert "binary_data_size" not in o1.get("parameters", {})
    assert len(o1["data"]) == 16


LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven"]


@pytest.mark.parametrize("binary", [True, False])
def test_classification(client, binary):
    data = np.array(
        [[0.1, 0.9, 0.3, 0.7, 0.0, 0.5, 0.2, 0.8], [8, 7, 6, 5, 4, 3, 2, 1]],
        dtype=np.float32,
    )
    inp = httpclient.InferInput("INPUT0", [2, 8], "FP32")
    inp.set_data_from_numpy(data)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary, class_count=3)
    r = client.infer("identity_fp32", [inp], outputs=[out])
    o = r.get_output("OUTPUT0")
    assert o["datatype"] == "BYTES"
    assert o["shape"] == [2, 3]
    got = r.as_numpy("OUTPUT0")
    rows = [
        [(x.decode() if isinstance(x, bytes) else x).split(":") for x in row]
        for row in got
    ]
    assert [[int(c[1]) for c in row] for row in rows] == [[1, 7, 3], [0, 1, 2]]
    assert [[c[2] for c in row] for row in rows] == [
        ["one", "seven", "three"],
        ["zero", "one", "two"],
    ]
    values = [float(c[0]) for row in rows for c in row]
    assert values == pytest.approx([0.9, 0.8, 0.7, 8.0, 7.0, 6.0], abs=1e-5)


def test_classification_without_labels(client):
    data = np.array([[3, 1, 2]], dtype=np.int32)
    inp = httpclient.InferInput("INPUT0", [1, 3], "INT32")
    inp.set_data_from_numpy(data)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=False, class_count=2)
    r = client.infer("identity_int32", [inp], outputs=[out])
    got = r.as_numpy("OUTPUT0").flatten().tolist()
    parts = [(x.decode() if isinstance(x, bytes) else x).split(":") for x in got]
    # Without labels Triton writes "value:index".
    assert [(float(p[0]), int(p[1])) for p in parts] == [(3.0, 0), (2.0, 2)]


def test_binary_data_output_parameter(url):
    # `binary_data_output` makes every output not named in `outputs` binary.
    doc = {
        "parameters": {"binary_data_output": True},
        "inputs": [
            {"name": n, "shape": [1, 16], "datatype": "INT32", "data": list(range(16))}
            for n in ("INPUT0", "INPUT1")
        ],
    }
    status, headers, body = rawhttp.request(
        url, "POST", "/v2/models/simple/infer", json.dumps(doc).encode()
    )
    assert status == 200, body
    doc, raw = rawhttp.split_binary_response(headers, body)
    assert sorted(raw) == ["OUTPUT0", "OUTPUT1"]
    assert np.frombuffer(raw["OUTPUT0"], np.int32).tolist() == [2 * i for i in range(16)]
    assert np.frombuffer(raw["OUTPUT1"], np.int32).tolist() == [0] * 16


def test_http10_request(url):
    data = rawhttp.exchange(url, b"GET /v2/health/live HTTP/1.0\r\n\r\n", timeout=5)
    status, _, _ = rawhttp.parse_response(data)
    assert status == 200


def test_inference_statistics(client):
    a = np.zeros((1, 16), dtype=np.int32)
    before = client.get_inference_statistics(model_name="simple")
    (s0,) = before["model_stats"]
    client.infer("simple", simple_inputs(a, a))
    (s1,) = client.get_inference_statistics(model_name="simple")["model_stats"]
    assert s1["name"] == "simple" and s1["version"] == "1"
    ok0 = int(s0["inference_stats"]["success"]["count"])
    ok1 = int(s1["inference_stats"]["success"]["count"])
    assert ok1 >= ok0 + 1, (s0, s1)
    everything = client.get_inference_statistics()
    assert "simple" in {m["name"] for m in everything["model_stats"]}
