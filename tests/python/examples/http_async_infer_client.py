#!/usr/bin/env python3
"""Asynchronous inference on `simple` with several requests in flight, in
the steps Triton's simple_http_async_infer_client.py takes."""

import numpy as np
import tritonclient.http as httpclient

from _common import connect, fail

COUNT = 8
client = connect(__doc__, concurrency=COUNT)
a = np.arange(16, dtype=np.int32).reshape(1, 16)
b = np.ones((1, 16), dtype=np.int32)
inputs = [httpclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
inputs[0].set_data_from_numpy(a)
inputs[1].set_data_from_numpy(b)
outputs = [httpclient.InferRequestedOutput(n) for n in ("OUTPUT0", "OUTPUT1")]
pending = [client.async_infer("simple", inputs, outputs=outputs) for _ in range(COUNT)]
for p in pending:
    r = p.get_result()
    if not np.array_equal(r.as_numpy("OUTPUT0"), a + b):
        fail("async incorrect sum")
    if not np.array_equal(r.as_numpy("OUTPUT1"), a - b):
        fail("async incorrect difference")
print("PASS: async infer")
