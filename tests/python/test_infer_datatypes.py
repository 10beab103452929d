"""Every KServe datatype through the identity_<dtype> models, with JSON and
binary tensors in every combination of input and output encoding."""

import json

import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as httpclient

import rawhttp

BF16 = ml_dtypes.bfloat16

# datatype -> rows of 5 values (batch 2) that survive a JSON round trip exactly.
VALUES = {
    "BOOL": (np.bool_, [[True, False, True, True, False], [False] * 5]),
    "UINT8": (np.uint8, [[0, 1, 127, 128, 255], [9, 8, 7, 6, 5]]),
    "UINT16": (np.uint16, [[0, 1, 255, 256, 65535], [9, 8, 7, 6, 5]]),
    "UINT32": (np.uint32, [[0, 1, 65536, 2**31, 2**32 - 1], [9, 8, 7, 6, 5]]),
    "UINT64": (np.uint64, [[0, 1, 2**32, 2**63, 2**64 - 1], [9, 8, 7, 6, 5]]),
    "INT8": (np.int8, [[-128, -1, 0, 1, 127], [9, 8, 7, 6, 5]]),
    "INT16": (np.int16, [[-32768, -1, 0, 1, 32767], [9, 8, 7, 6, 5]]),
    "INT32": (np.int32, [[-(2**31), -1, 0, 1, 2**31 - 1], [9, 8, 7, 6, 5]]),
    "INT64": (np.int64, [[-(2**63), -1, 0, 1, 2**63 - 1], [9, 8, 7, 6, 5]]),
    "FP16": (np.float16, [[0.0, 1.5, -2.25, 65504.0, 6.103515625e-05], [0.5] * 5]),
    "BF16": (BF16, [[0.0, 1.0, -2.5, 3.140625, 2.0**120], [0.0078125] * 5]),
    "FP32": (
        np.float32,
        [[0.0, 1.5, -3.25, 3.4028234663852886e38, 1.401298464324817e-45], [0.1] * 5],
    ),
    "FP64": (
        np.float64,
        [[0.0, 0.1, -1e300, 2.2250738585072014e-308, 5e-324], [1 / 3] * 5],
    ),
    "BYTES": (
        np.object_,
        [
            [b"", b"a", b"hello world", "\u00fcn\u00efc\u00f6d\u00e9".encode(), b"\x00\x01\x02"],
            [b"x" * 300, b"\n", b'"quoted"', b"\\", b"tab\t"],
        ],
    ),
}

ENCODINGS = [
    pytest.param(True, True, id="bin-in-bin-out"),
    pytest.param(False, False, id="json-in-json-out"),
    pytest.param(True, False, id="bin-in-json-out"),
    pytest.param(False, True, id="json-in-bin-out"),
]


def make(datatype):
    np_type, rows = VALUES[datatype]
    return np.array(rows, dtype=np_type)


def assert_same(datatype, sent, got):
    assert got is not None, "output missing from the response"
    assert list(got.shape) == list(sent.shape)
    if datatype == "BYTES":
        got = np.array(
            [x.encode() if isinstance(x, str) else x for x in got.flatten()],
            dtype=np.object_,
        ).reshape(got.shape)
        assert got.tolist() == sent.tolist()
    elif datatype == "BF16":
        assert np.array_equal(got.astype(np.float32), sent.astype(np.float32))
    else:
        assert got.dtype == sent.dtype, f"{got.dtype} != {sent.dtype}"
        assert np.array_equal(got, sent), f"{got} != {sent}"


# tritonclient sends BF16 as binary data only; JSON BF16 is tested raw below.
CASES = [
    pytest.param(dt, *enc.values, id=f"{dt}-{enc.id}")
    for dt in VALUES
    for enc in ENCODINGS
    if not (dt == "BF16" and not enc.values[0])
]


@pytest.mark.parametrize("datatype,in_binary,out_binary", CASES)
def test_identity_roundtrip(client, datatype, in_binary, out_binary):
    data = make(datatype)
    model = f"identity_{datatype.lower()}"
    inp = httpclient.InferInput("INPUT0", list(data.shape), datatype)
    inp.set_data_from_numpy(data, binary_data=in_binary)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=out_binary)
    result = client.infer(model, [inp], outputs=[out])
    response = result.get_response()
    assert response["model_name"] == model
    assert response["model_version"] == "1"
    (o,) = response["outputs"]
    assert o["name"] == "OUTPUT0"
    assert o["datatype"] == datatype
    assert o["shape"] == list(data.shape)
    if out_binary:
        assert "binary_data_size" in o.get("parameters", {})
        assert "data" not in o
    else:
        assert "data" in o
    assert_same(datatype, data, result.as_numpy("OUTPUT0"))


@pytest.mark.parametrize("datatype", ["INT32", "FP32", "BYTES", "BOOL"])
@pytest.mark.parametrize("binary", [True, False])
def test_identity_empty_tensor(client, datatype, binary):
    np_type, _ = VALUES[datatype]
    data = np.zeros((1, 0), dtype=np_type)
    inp = httpclient.InferInput("INPUT0", [1, 0], datatype)
    inp.set_data_from_numpy(data, binary_data=binary)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)
    result = client.infer(f"identity_{datatype.lower()}", [inp], outputs=[out])
    got = result.as_numpy("OUTPUT0")
    assert list(got.shape) == [1, 0]


def test_identity_default_outputs_binary_input(client):
    # No outputs listed: every output comes back, as JSON (Triton's default).
    data = make("INT16")
    inp = httpclient.InferInput("INPUT0", list(data.shape), "INT16")
    inp.set_data_from_numpy(data, binary_data=True)
    result = client.infer("identity_int16", [inp])
    assert_same("INT16", data, result.as_numpy("OUTPUT0"))


def test_identity_large_binary_tensor(client):
    data = np.random.default_rng(7).standard_normal((8, 131072)).astype(np.float32)
    inp = httpclient.InferInput("INPUT0", list(data.shape), "FP32")
    inp.set_data_from_numpy(data, binary_data=True)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)
    result = client.infer("identity_fp32", [inp], outputs=[out])
    assert np.array_equal(result.as_numpy("OUTPUT0"), data)


def test_identity_nonfinite_binary(client):
    data = np.array([[np.inf, -np.inf, np.nan, -0.0]], dtype=np.float32)
    inp = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    inp.set_data_from_numpy(data, binary_data=True)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)
    got = client.infer("identity_fp32", [inp], outputs=[out]).as_numpy("OUTPUT0")
    assert got.tobytes() == data.tobytes()


def test_bf16_json_raw(url):
    values = [1.0, -2.5, 3.140625, 0.0078125]
    body = json.dumps(
        {
            "inputs": [
                {"name": "INPUT0", "shape": [1, 4], "datatype": "BF16", "data": values}
            ],
            "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": False}}],
        }
    ).encode()
    status, _, resp = rawhttp.request(
        url, "POST", "/v2/models/identity_bf16/infer", body,
        {"Content-Type": "application/json"},
    )
    assert status == 200, resp
    (o,) = json.loads(resp)["outputs"]
    assert o["datatype"] == "BF16"
    assert o["shape"] == [1, 4]
    assert [float(x) for x in o["data"]] == values


def test_bf16_binary_in_json_out(client):
    data = np.array([[1.0, -2.5, 0.0078125]], dtype=BF16)
    inp = httpclient.InferInput("INPUT0", [1, 3], "BF16")
    inp.set_data_from_numpy(data, binary_data=True)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=False)
    result = client.infer("identity_bf16", [inp], outputs=[out])
    assert [float(x) for x in result.get_output("OUTPUT0")["data"]] == [
        1.0,
        -2.5,
        0.0078125,
    ]


def test_json_nested_data_accepted(url):
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "shape": [2, 3],
                    "datatype": "INT32",
                    "data": [[1, 2, 3], [4, 5, 6]],
                }
            ]
        }
    ).encode()
    status, _, resp = rawhttp.request(
        url, "POST", "/v2/models/identity_int32/infer", body
    )
    assert status == 200, resp
    (o,) = json.loads(resp)["outputs"]
    assert o["shape"] == [2, 3]
    assert np.array(o["data"]).flatten().tolist() == [1, 2, 3, 4, 5, 6]
