"""CUDA shared memory through tritonclient.utils.cuda_shared_memory, over
HTTP and gRPC: the example flow on `simple_cuda` (a GPU instance: inputs
and outputs stay on the device) and on `simple` (a CPU instance: the
server stages through host memory), regions mixed with system shared
memory and with the response body, and every registration and inference
error Triton's clients can meet, with the server still serving after each."""

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import random_b64, wait_model_ready

A = np.arange(16, dtype=np.int32).reshape(1, 16) * 7 - 40
B = np.arange(16, dtype=np.int32).reshape(1, 16)[:, ::-1].copy()
TENSOR = A.nbytes
MODELS = ("simple_cuda", "simple")


def simple_request(client, in_regions, out_regions):
    """Inputs and outputs of `simple`, each in the (region, offset) given or,
    for None, in the body."""
    inputs = []
    for name, data, where in (("INPUT0", A, in_regions[0]), ("INPUT1", B, in_regions[1])):
        inp = client.input(name, data.shape, "INT32")
        if where is None:
            inp.set_data_from_numpy(data)
        else:
            inp.set_shared_memory(where[0].name, TENSOR, offset=where[1])
        inputs.append(inp)
    outputs = []
    for name, where in (("OUTPUT0", out_regions[0]), ("OUTPUT1", out_regions[1])):
        out = client.output(name)
        if where is not None:
            out.set_shared_memory(where[0].name, TENSOR, offset=where[1])
        outputs.append(out)
    return inputs, outputs


@pytest.mark.parametrize("model", MODELS)
def test_simple_in_cuda_shm(client, regions, model):
    wait_model_ready(client, model)
    ins = regions.cuda("cuda_in", 2 * TENSOR)
    out0 = regions.cuda("cuda_out0", TENSOR)
    out1 = regions.cuda("cuda_out1", TENSOR)
    ins.set(A, B)
    for r in (ins, out0, out1):
        r.register(client)

    status = client.cuda_status()
    assert set(status) == {"cuda_in", "cuda_out0", "cuda_out1"}
    assert status["cuda_in"]["byte_size"] == 2 * TENSOR
    assert status["cuda_in"]["device_id"] == 0
    assert client.cuda_status("cuda_out1")["cuda_out1"]["byte_size"] == TENSOR
    # CUDA regions are not system regions.
    assert client.system_status() == {}

    inputs, outputs = simple_request(client, [(ins, 0), (ins, TENSOR)], [(out0, 0), (out1, 0)])
    for i in range(3):
        if i:
            # New inputs in the same registered regions: the server reads
            # the device memory at every request, never a cached copy.
            ins.set(A + i, B)
        result = client.infer(model, inputs, outputs=outputs)
        assert not client.in_body(result, "OUTPUT0")
        assert np.array_equal(out0.get(np.int32, [1, 16]), A + i + B)
        assert np.array_equal(out1.get(np.int32, [1, 16]), A + i - B)

    client.unregister_cuda_shared_memory("cuda_in")
    assert "cuda_in" not in client.cuda_status()
    client.unregister_cuda_shared_memory()
    assert client.cuda_status() == {}
    client.assert_serving()


@pytest.mark.parametrize("model", MODELS)
def test_cuda_inputs_system_outputs(client, regions, model):
    wait_model_ready(client, model)
    ins = regions.cuda("cuda_in", 2 * TENSOR)
    outs = regions.system("sys_out", 2 * TENSOR)
    ins.set(A, B)
    ins.register(client)
    outs.register(client)
    inputs, outputs = simple_request(client, [(ins, 0), (ins, TENSOR)], [(outs, 0), (outs, TENSOR)])
    result = client.infer(model, inputs, outputs=outputs)
    assert not client.in_body(result, "OUTPUT1")
    assert np.array_equal(outs.get(np.int32, [1, 16]), A + B)
    assert np.array_equal(outs.get(np.int32, [1, 16], offset=TENSOR), A - B)


@pytest.mark.parametrize("model", MODELS)
def test_system_inputs_cuda_outputs(client, regions, model):
    wait_model_ready(client, model)
    ins = regions.system("sys_in", 2 * TENSOR)
    out0 = regions.cuda("cuda_out0", TENSOR)
    out1 = regions.cuda("cuda_out1", TENSOR)
    ins.set(A, B)
    for r in (ins, out0, out1):
        r.register(client)
    inputs, outputs = simple_request(client, [(ins, 0), (ins, TENSOR)], [(out0, 0), (out1, 0)])
    client.infer(model, inputs, outputs=outputs)
    assert np.array_equal(out0.get(np.int32, [1, 16]), A + B)
    assert np.array_equal(out1.get(np.int32, [1, 16]), A - B)


@pytest.mark.parametrize("model", MODELS)
def test_cuda_inputs_outputs_in_body(client, regions, model):
    """One input on the device, one in the body; one output in CUDA shm,
    the other returned in the body."""
    wait_model_ready(client, model)
    ins = regions.cuda("cuda_in", TENSOR)
    out0 = regions.cuda("cuda_out0", TENSOR)
    ins.set(A)
    ins.register(client)
    out0.register(client)
    inputs, outputs = simple_request(client, [(ins, 0), None], [(out0, 0), None])
    result = client.infer(model, inputs, outputs=outputs)
    assert np.array_equal(out0.get(np.int32, [1, 16]), A + B)
    assert client.in_body(result, "OUTPUT1")
    assert np.array_equal(result.as_numpy("OUTPUT1"), A - B)
    # With no outputs named, both come back in the body.
    result = client.infer(model, inputs)
    assert np.array_equal(result.as_numpy("OUTPUT0"), A + B)
    assert np.array_equal(result.as_numpy("OUTPUT1"), A - B)


# -- error paths -------------------------------------------------------------


def test_register_invalid_handle(client):
    message = client.expect_error(
        client.register_cuda_shared_memory, "bogus", random_b64(64), 0, 1024, code="invalid", contains="bogus"
    )
    assert "bogus" not in client.cuda_status(), message
    client.assert_serving()


def test_register_wrong_length_handle(client):
    for length in (0, 32, 65):
        client.expect_error(
            client.register_cuda_shared_memory, "short", random_b64(length), 0, 1024, code="invalid", contains="64"
        )
    assert client.cuda_status() == {}
    client.assert_serving()


def test_register_wrong_device(client, regions):
    r = regions.cuda("wrong_device", 4096)
    client.expect_error(client.register_cuda_shared_memory, r.name, r.raw_handle(), 7, 4096, contains=r.name)
    # A negative id is refused too (over HTTP already by the JSON parser,
    # as Triton's "non-unsigned-integer" error).
    client.expect_error(client.register_cuda_shared_memory, r.name, r.raw_handle(), -1, 4096)
    assert client.cuda_status() == {}
    client.assert_serving()


def test_register_base64_with_line_breaks(client, regions, http_url):
    """The C++ clients (perf_analyzer's HTTP client) encode the handle
    with line breaks every 72 characters and one at the end, which base64
    decoders skip; the registration must succeed."""
    if client.proto != "http":
        pytest.skip("the JSON body is HTTP's")
    r = regions.cuda("wrapped", 4096)
    b64 = r.raw_handle().decode()
    wrapped = "\n".join(b64[i : i + 72] for i in range(0, len(b64), 72)) + "\n"
    body = json.dumps({"raw_handle": {"b64": wrapped}, "device_id": 0, "byte_size": 4096}).encode()
    request = urllib.request.Request(
        f"http://{http_url}/v2/cudasharedmemory/region/{r.name}/register", data=body, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
    except urllib.error.HTTPError as e:
        pytest.fail(f"HTTP {e.code}: {e.read().decode(errors='replace')}")
    r.registered_on.append(client)
    assert client.cuda_status()[r.name]["byte_size"] == 4096


def test_register_larger_than_allocation(client, regions):
    r = regions.cuda("too_big", 4096)
    client.expect_error(
        client.register_cuda_shared_memory, r.name, r.raw_handle(), 0, 1 << 30, code="invalid", contains=r.name
    )
    assert client.cuda_status() == {}
    # The same handle with a size that fits registers.
    r.register(client)
    assert client.cuda_status()[r.name]["byte_size"] == 4096
    client.assert_serving()


def test_register_twice(client, regions):
    r = regions.cuda("twice", 4096)
    r.register(client)
    client.expect_error(client.register_cuda_shared_memory, r.name, r.raw_handle(), 0, 4096, contains="already in manager")
    # A system region cannot take the name either: one namespace.
    s = regions.system("twice_sys", 64)
    client.expect_error(client.register_system_shared_memory, r.name, s.key, 64, contains="already in manager")
    assert list(client.cuda_status()) == [r.name]
    client.assert_serving()


@pytest.mark.parametrize("model", MODELS)
def test_out_of_range_at_inference(client, regions, model):
    wait_model_ready(client, model)
    r = regions.cuda("small", 2 * TENSOR)
    r.set(A, B)
    r.register(client)
    # Input past the end of the region.
    inputs, outputs = simple_request(client, [(r, 0), (r, TENSOR + 4)], [None, None])
    client.expect_error(client.infer, model, inputs, outputs=outputs, code="invalid", contains="'small'")
    # Offset beyond the region.
    inputs, outputs = simple_request(client, [(r, 0), (r, 4 * TENSOR)], [None, None])
    client.expect_error(client.infer, model, inputs, outputs=outputs, code="invalid", contains="'small'")
    # Output that does not fit.
    inputs, outputs = simple_request(client, [(r, 0), (r, TENSOR)], [(r, TENSOR + 4), None])
    client.expect_error(client.infer, model, inputs, outputs=outputs, code="invalid", contains="'small'")
    client.assert_serving()


@pytest.mark.parametrize("model", MODELS)
def test_unknown_region_at_inference(client, model):
    wait_model_ready(client, model)
    inp = client.input("INPUT0", A.shape, "INT32")
    inp.set_shared_memory("x", TENSOR)
    other = client.input("INPUT1", B.shape, "INT32", B)
    client.expect_error(
        client.infer, model, [inp, other], code="not_found", contains="Unable to find shared memory region: 'x'"
    )
    client.assert_serving()


def test_status_and_unregister(client, regions):
    client.expect_error(
        client.get_cuda_shared_memory_status, "x", code="not_found", contains="Unable to find cuda shared memory region: 'x'"
    )
    first = regions.cuda("first", 4096)
    second = regions.cuda("second", 8192)
    sys_region = regions.system("sys_keep", 64)
    first.register(client)
    second.register(client)
    sys_region.register(client)
    assert {k: v["byte_size"] for k, v in client.cuda_status().items()} == {"first": 4096, "second": 8192}
    # Unregistering a name that is not registered is not an error.
    client.unregister_cuda_shared_memory("x")
    # Unregister-all of CUDA regions leaves the system region alone.
    client.unregister_cuda_shared_memory()
    assert client.cuda_status() == {}
    assert list(client.system_status()) == ["sys_keep"]
    # A region can be registered again under a freed name.
    first.register(client)
    assert list(client.cuda_status()) == ["first"]
    client.assert_serving()
