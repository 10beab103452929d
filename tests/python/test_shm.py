"""System shared memory through tritonclient (HTTP and gRPC), with
`tritonclient.utils.shared_memory` making the regions as Triton's own example
clients do: register, infer with inputs and outputs in regions, read the
results from the regions, status, unregister; every error path with the
wording and status a client sees; and the `--allow-client-shm` switch."""

import os

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient import utils
from tritonclient.utils import InferenceServerException

from conftest import NereidServer

PROTOCOLS = ["http", "grpc"]


@pytest.fixture(scope="module")
def shm_server():
    server = NereidServer(extra_args=["--allow-client-shm=true"], name="nereid-shm")
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=PROTOCOLS)
def proto(request):
    return request.param


@pytest.fixture()
def client(proto, shm_server):
    if proto == "http":
        c = httpclient.InferenceServerClient(url=shm_server.url)
    else:
        c = grpcclient.InferenceServerClient(url=shm_server.grpc_url)
    c.unregister_system_shared_memory()
    yield c
    c.unregister_system_shared_memory()
    c.close()


def lib(proto):
    return httpclient if proto == "http" else grpcclient


class Region:
    """A POSIX shared-memory region made by tritonclient, destroyed on exit."""

    count = 0

    def __init__(self, byte_size):
        Region.count += 1
        self.name = f"region{Region.count}"
        self.key = f"/nereid-test-{os.getpid()}-{Region.count}"
        self.byte_size = byte_size
        self.handle = shm.create_shared_memory_region(self.name, self.key, byte_size)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shm.destroy_shared_memory_region(self.handle)

    def set(self, arrays, offset=0):
        shm.set_shared_memory_region(self.handle, arrays, offset=offset)

    def read(self, datatype, shape, offset=0):
        return shm.get_contents_as_numpy(
            self.handle, utils.triton_to_np_dtype(datatype), shape, offset=offset
        )


def output_meta(proto, result, name):
    out = result.get_output(name)
    if proto == "http":
        return out["datatype"], out["shape"], out
    return out.datatype, list(out.shape), out


def error(fn, *args, **kw) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as e:
        fn(*args, **kw)
    return e.value


def simple_inputs(proto, a, b):
    inputs = [
        lib(proto).InferInput("INPUT0", list(a.shape), "INT32"),
        lib(proto).InferInput("INPUT1", list(b.shape), "INT32"),
    ]
    return inputs


def status_names(proto, client, name=""):
    status = client.get_system_shared_memory_status(region_name=name)
    if proto == "http":
        return {r["name"]: r for r in status}
    return {n: r for n, r in status.regions.items()}


def test_triton_example_flow(proto, client):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    with Region(128) as ins, Region(128) as outs:
        ins.set([a, b])
        client.register_system_shared_memory(ins.name, ins.key, 128)
        client.register_system_shared_memory(outs.name, outs.key, 128)
        names = status_names(proto, client)
        assert set(names) == {ins.name, outs.name}
        one = status_names(proto, client, ins.name)[ins.name]
        if proto == "http":
            assert (one["key"], int(one["offset"]), int(one["byte_size"])) == (
                ins.key,
                0,
                128,
            )
        else:
            assert (one.key, one.offset, one.byte_size) == (ins.key, 0, 128)

        inputs = simple_inputs(proto, a, b)
        inputs[0].set_shared_memory(ins.name, 64)
        inputs[1].set_shared_memory(ins.name, 64, offset=64)
        outputs = [
            lib(proto).InferRequestedOutput("OUTPUT0"),
            lib(proto).InferRequestedOutput("OUTPUT1"),
        ]
        outputs[0].set_shared_memory(outs.name, 64)
        outputs[1].set_shared_memory(outs.name, 64, offset=64)
        for _ in range(3):
            result = client.infer("simple", inputs, outputs=outputs)
            dtype, shape, _ = output_meta(proto, result, "OUTPUT0")
            assert (dtype, shape) == ("INT32", [1, 16])
            assert np.array_equal(outs.read(dtype, shape), a + b)
            assert np.array_equal(outs.read(dtype, shape, offset=64), a - b)
            # The outputs came back in the region, not in the response.
            if proto == "http":
                _, _, meta = output_meta(proto, result, "OUTPUT0")
                assert "data" not in meta and "parameters" not in meta, meta
            else:
                raw = result.get_response().raw_output_contents
                assert [len(r) for r in raw] == [0, 0]

        # New input values are read on the next request (no stale copy).
        ins.set([b, a])
        client.infer("simple", inputs, outputs=outputs)
        assert np.array_equal(outs.read("INT32", [1, 16]), a + b)
        assert np.array_equal(outs.read("INT32", [1, 16], offset=64), b - a)

        client.unregister_system_shared_memory(ins.name)
        assert set(status_names(proto, client)) == {outs.name}
        client.unregister_system_shared_memory()
        assert status_names(proto, client) == {}


def test_shared_memory_mixed_with_the_body(proto, client):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.arange(16, 32, dtype=np.int32).reshape(1, 16)
    with Region(64) as ins, Region(64) as outs:
        ins.set([a])
        client.register_system_shared_memory(ins.name, ins.key, 64)
        client.register_system_shared_memory(outs.name, outs.key, 64)
        inputs = simple_inputs(proto, a, b)
        inputs[0].set_shared_memory(ins.name, 64)
        inputs[1].set_data_from_numpy(b)
        out0 = lib(proto).InferRequestedOutput("OUTPUT0")
        out0.set_shared_memory(outs.name, 64)
        out1 = lib(proto).InferRequestedOutput("OUTPUT1")
        result = client.infer("simple", inputs, outputs=[out0, out1])
        assert np.array_equal(outs.read("INT32", [1, 16]), a + b)
        assert np.array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_bytes_tensors_and_a_region_at_an_offset(proto, client):
    a = np.array([[str(i).encode() for i in range(16)]], dtype=np.object_)
    b = np.array([[b"1"] * 16], dtype=np.object_)
    sa, sb = utils.serialize_byte_tensor(a), utils.serialize_byte_tensor(b)
    size_a, size_b = utils.serialized_byte_size(sa), utils.serialized_byte_size(sb)
    with Region(8192) as region:
        # The registered window starts inside the object, off a page boundary.
        region.set([sa, sb], offset=4100)
        client.register_system_shared_memory(
            region.name, region.key, size_a + size_b, offset=4100
        )
        inputs = [
            lib(proto).InferInput("INPUT0", [1, 16], "BYTES"),
            lib(proto).InferInput("INPUT1", [1, 16], "BYTES"),
        ]
        inputs[0].set_shared_memory(region.name, size_a)
        inputs[1].set_shared_memory(region.name, size_b, offset=size_a)
        result = client.infer("simple_string", inputs)
        got = [int(x) for x in result.as_numpy("OUTPUT0").reshape(-1)]
        assert got == [i + 1 for i in range(16)]


def test_large_tensor_round_trip(proto, client):
    data = np.random.default_rng(5).random((1, 1 << 20), dtype=np.float32)
    size = data.nbytes
    with Region(size) as ins, Region(size) as outs:
        ins.set([data])
        client.register_system_shared_memory(ins.name, ins.key, size)
        client.register_system_shared_memory(outs.name, outs.key, size)
        inp = lib(proto).InferInput("INPUT0", list(data.shape), "FP32")
        inp.set_shared_memory(ins.name, size)
        out = lib(proto).InferRequestedOutput("OUTPUT0")
        out.set_shared_memory(outs.name, size)
        client.infer("identity_fp32", [inp], outputs=[out])
        assert np.array_equal(outs.read("FP32", list(data.shape)), data)


def expect(proto, e, http_status, grpc_status, text):
    if proto == "http":
        assert e.status() == str(http_status), (e.status(), e.message())
    else:
        assert e.status() == f"StatusCode.{grpc_status}", (e.status(), e.message())
    assert text in e.message(), e.message()


def test_registration_errors(proto, client):
    with Region(64) as region:
        e = error(client.register_system_shared_memory, "x", "/nereid-no-such-key", 64)
        expect(proto, e, 500, "INTERNAL", "Unable to open shared memory region: '/nereid-no-such-key'")
        e = error(client.register_system_shared_memory, "x", region.key, 65)
        expect(proto, e, 400, "INVALID_ARGUMENT", "failed to register shared memory region 'x'")
        e = error(client.register_system_shared_memory, "x", region.key, 8, offset=60)
        expect(proto, e, 400, "INVALID_ARGUMENT", "invalid args")
        e = error(
            client.register_system_shared_memory,
            "x",
            "/triton_python_backend_shm_region_1",
            8,
        )
        expect(proto, e, 400, "INVALID_ARGUMENT", "reserved prefix")
        client.register_system_shared_memory("x", region.key, 64)
        e = error(client.register_system_shared_memory, "x", region.key, 64)
        expect(proto, e, 400, "ALREADY_EXISTS", "shared memory region 'x' already in manager")
        e = error(client.get_system_shared_memory_status, region_name="nope")
        expect(proto, e, 404, "NOT_FOUND", "Unable to find system shared memory region: 'nope'")
        # Unregistering a name that is not registered is not an error.
        client.unregister_system_shared_memory("nope")
        assert client.is_server_live()


def test_inference_errors(proto, client):
    a = np.zeros((1, 16), dtype=np.int32)
    with Region(64) as region, Region(32) as small:
        region.set([a])
        client.register_system_shared_memory(region.name, region.key, 64)
        client.register_system_shared_memory(small.name, small.key, 32)

        def run(in_region, in_size, in_offset=0, out=None):
            inputs = simple_inputs(proto, a, a)
            inputs[0].set_shared_memory(in_region, in_size, offset=in_offset)
            inputs[1].set_data_from_numpy(a)
            return client.infer("simple", inputs, outputs=out)

        e = error(run, "nope", 64)
        expect(proto, e, 404, "NOT_FOUND", "Unable to find shared memory region: 'nope'")
        e = error(run, region.name, 64, 64)
        expect(proto, e, 400, "INVALID_ARGUMENT", f"Invalid offset for shared memory region: '{region.name}'")
        e = error(run, region.name, 64, 8)
        expect(
            proto,
            e,
            400,
            "INVALID_ARGUMENT",
            f"Invalid offset + byte size for shared memory region: '{region.name}'",
        )
        e = error(run, region.name, 32)
        expect(proto, e, 400, "INVALID_ARGUMENT", "input byte size mismatch for input 'INPUT0'")

        out = lib(proto).InferRequestedOutput("OUTPUT0")
        out.set_shared_memory(small.name, 32)
        e = error(run, region.name, 64, out=[out])
        expect(
            proto,
            e,
            500,
            "INTERNAL",
            "shared memory size specified with the request for output 'OUTPUT0' (32 bytes) should be at least 64 bytes to hold the results",
        )

        # A region unregistered is gone for the next request.
        client.unregister_system_shared_memory(region.name)
        e = error(run, region.name, 64)
        expect(proto, e, 404, "NOT_FOUND", "Unable to find shared memory region")
        assert client.is_server_live()


def test_refused_unless_allowed(proto, url, grpc_url):
    """The suite's shared server runs without --allow-client-shm."""
    if proto == "http":
        c = httpclient.InferenceServerClient(url=url)
    else:
        c = grpcclient.InferenceServerClient(url=grpc_url)
    with Region(64) as region:
        e = error(c.register_system_shared_memory, region.name, region.key, 64)
        expect(proto, e, 501, "UNIMPLEMENTED", "--allow-client-shm=true")
        e = error(c.unregister_system_shared_memory)
        expect(proto, e, 501, "UNIMPLEMENTED", "--allow-client-shm=true")
        # Status still answers.
        status = c.get_system_shared_memory_status()
        assert (status if proto == "http" else dict(status.regions)) in ([], {})
        cuda = c.get_cuda_shared_memory_status()
        assert (cuda if proto == "http" else dict(cuda.regions)) in ([], {})
    c.close()
