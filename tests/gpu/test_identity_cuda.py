"""`identity_cuda` (INPUT0 FP32 [-1] -> OUTPUT0 on a GPU instance) at
64 B, 4 KiB, 1 MiB and 16 MiB, its tensors in CUDA shared memory, in
system shared memory and in the body (HTTP binary extension / gRPC raw
contents), over HTTP and gRPC: every byte comes back."""

import numpy as np
import pytest

from conftest import wait_model_ready

MODEL = "identity_cuda"
SIZES = {"64B": 64, "4KiB": 4 << 10, "1MiB": 1 << 20, "16MiB": 16 << 20}


def payload(byte_size):
    rng = np.random.default_rng(byte_size)
    # Random bit patterns, NaNs and denormals included: the path must move
    # bytes, not values.
    return rng.integers(0, 2**32, byte_size // 4, dtype=np.uint32).view(np.float32)


def same_bytes(got, want):
    assert got.shape == want.shape, f"{got.shape} != {want.shape}"
    assert got.tobytes() == want.tobytes(), "returned bytes differ"


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("transport", ["cuda_shm", "system_shm", "body"])
def test_identity_cuda(client, regions, size, transport):
    wait_model_ready(client, MODEL)
    data = payload(SIZES[size])
    byte_size = data.nbytes
    inp = client.input("INPUT0", data.shape, "FP32")
    out = client.output("OUTPUT0")
    if transport == "body":
        inp.set_data_from_numpy(data)
        result = client.infer(MODEL, [inp], outputs=[out])
        same_bytes(result.as_numpy("OUTPUT0"), data)
        return
    make = regions.cuda if transport == "cuda_shm" else regions.system
    src = make("identity_in", byte_size)
    dst = make("identity_out", byte_size)
    src.set(data)
    src.register(client)
    dst.register(client)
    inp.set_shared_memory(src.name, byte_size)
    out.set_shared_memory(dst.name, byte_size)
    for _ in range(2):
        result = client.infer(MODEL, [inp], outputs=[out])
        assert not client.in_body(result, "OUTPUT0")
        same_bytes(dst.get(np.float32, list(data.shape)), data)
    # A smaller tensor read from the start of the same regions.
    half = data[: data.size // 2]
    inp = client.input("INPUT0", half.shape, "FP32")
    inp.set_shared_memory(src.name, half.nbytes)
    out.set_shared_memory(dst.name, half.nbytes)
    src.set(half[::-1].copy())
    client.infer(MODEL, [inp], outputs=[out])
    same_bytes(dst.get(np.float32, list(half.shape)), half[::-1].copy())


@pytest.mark.parametrize("direction", ["cuda_in_body_out", "body_in_cuda_out"])
def test_identity_cuda_mixed(client, regions, direction):
    """Input in CUDA shm with the output returned in the body, and the
    reverse."""
    wait_model_ready(client, MODEL)
    data = payload(1 << 20)
    inp = client.input("INPUT0", data.shape, "FP32")
    out = client.output("OUTPUT0")
    region = regions.cuda("identity_dev", data.nbytes)
    region.register(client)
    if direction == "cuda_in_body_out":
        region.set(data)
        inp.set_shared_memory(region.name, data.nbytes)
        result = client.infer(MODEL, [inp], outputs=[out])
        same_bytes(result.as_numpy("OUTPUT0"), data)
    else:
        inp.set_data_from_numpy(data)
        out.set_shared_memory(region.name, data.nbytes)
        client.infer(MODEL, [inp], outputs=[out])
        same_bytes(region.get(np.float32, list(data.shape)), data)
