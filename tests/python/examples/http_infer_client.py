#!/usr/bin/env python3
"""Synchronous inference on `simple`, in the steps Triton's
simple_http_infer_client.py takes: mixed JSON/binary inputs and outputs,
query parameters, statistics, no requested outputs, a wrong model name."""

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from _common import connect, fail

client = connect(__doc__)


def infer(model, a, b, with_outputs):
    inputs = [httpclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
    inputs[0].set_data_from_numpy(a, binary_data=False)
    inputs[1].set_data_from_numpy(b, binary_data=True)
    outputs = None
    if with_outputs:
        outputs = [
            httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
            httpclient.InferRequestedOutput("OUTPUT1", binary_data=False),
        ]
    return client.infer(
        model, inputs, outputs=outputs, query_params={"test_1": 1, "test_2": 2}
    )


a = np.arange(16, dtype=np.int32).reshape(1, 16)
b = np.full((1, 16), -1, dtype=np.int32)
for with_outputs in (True, False):
    r = infer("simple", a, b, with_outputs)
    print(r.get_response())
    if not np.array_equal(r.as_numpy("OUTPUT0"), a + b):
        fail("incorrect sum")
    if not np.array_equal(r.as_numpy("OUTPUT1"), a - b):
        fail("incorrect difference")
    if with_outputs:
        stats = client.get_inference_statistics(model_name="simple")
        print(stats)
        if len(stats["model_stats"]) != 1:
            fail("inference statistics")
try:
    infer("wrong_model_name", a, b, True)
except InferenceServerException as e:
    if not e.message().startswith("Request for unknown model"):
        fail(f"improper error message for wrong model name: {e.message()}")
else:
    fail("wrong model name succeeded")
print("PASS: infer")
