"""System shared memory on `simple`, the flow of Triton's shm example
clients: create input and output regions, fill the inputs, register, infer
with every tensor in shared memory, read the outputs from the region,
check status, unregister, destroy. Over HTTP and gRPC."""

import numpy as np

from conftest import wait_model_ready

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), -5, dtype=np.int32)
TENSOR = A.nbytes


def test_simple_in_system_shm(client, regions):
    wait_model_ready(client, "simple")
    inputs_region = regions.system("sys_in", 2 * TENSOR)
    outputs_region = regions.system("sys_out", 2 * TENSOR)
    inputs_region.set(A, B)
    inputs_region.register(client)
    outputs_region.register(client)

    status = client.system_status()
    assert status["sys_in"]["byte_size"] == 2 * TENSOR
    assert status["sys_in"]["key"] == inputs_region.key
    assert status["sys_out"]["byte_size"] == 2 * TENSOR
    assert list(client.system_status("sys_out")) == ["sys_out"]

    in0 = client.input("INPUT0", A.shape, "INT32")
    in0.set_shared_memory("sys_in", TENSOR)
    in1 = client.input("INPUT1", B.shape, "INT32")
    in1.set_shared_memory("sys_in", TENSOR, offset=TENSOR)
    out0 = client.output("OUTPUT0")
    out0.set_shared_memory("sys_out", TENSOR)
    out1 = client.output("OUTPUT1")
    out1.set_shared_memory("sys_out", TENSOR, offset=TENSOR)

    for _ in range(3):
        result = client.infer("simple", [in0, in1], outputs=[out0, out1])
        # Outputs written to shared memory do not come back in the body.
        assert not client.in_body(result, "OUTPUT0")
        assert not client.in_body(result, "OUTPUT1")
        assert np.array_equal(outputs_region.get(np.int32, [1, 16]), A + B)
        assert np.array_equal(outputs_region.get(np.int32, [1, 16], offset=TENSOR), A - B)

    client.unregister_system_shared_memory("sys_in")
    assert "sys_in" not in client.system_status()
    client.unregister_system_shared_memory()
    assert client.system_status() == {}
    client.assert_serving()
