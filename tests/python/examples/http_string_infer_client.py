#!/usr/bin/env python3
"""BYTES tensors, in the steps Triton's simple_http_string_infer_client.py
takes: `simple_string` on decimal strings, then `simple_identity` on strings
with an embedded NUL and on raw 4-byte blobs, as binary data and as JSON."""

import numpy as np
import tritonclient.http as httpclient

from _common import connect, fail

client = connect(__doc__)

in0 = np.arange(16, dtype=np.int32).reshape(1, 16)
in1 = np.ones((1, 16), dtype=np.int32)
to_bytes = lambda x: np.array(  # noqa: E731
    [str(v).encode() for v in x.flatten()], dtype=np.object_
).reshape(x.shape)
inputs = [httpclient.InferInput(n, [1, 16], "BYTES") for n in ("INPUT0", "INPUT1")]
inputs[0].set_data_from_numpy(to_bytes(in0), binary_data=True)
inputs[1].set_data_from_numpy(to_bytes(in1), binary_data=False)
outputs = [
    httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
    httpclient.InferRequestedOutput("OUTPUT1", binary_data=False),
]
r = client.infer("simple_string", inputs, outputs=outputs)
sums = [int(v) for v in r.as_numpy("OUTPUT0").flatten()]
diffs = [int(v) for v in r.as_numpy("OUTPUT1").flatten()]
if sums != (in0 + in1).flatten().tolist():
    fail("incorrect sum")
if diffs != (in0 - in1).flatten().tolist():
    fail("incorrect difference")


def identity(data, binary):
    inp = httpclient.InferInput("INPUT0", list(data.shape), "BYTES")
    inp.set_data_from_numpy(data, binary_data=binary)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)
    got = client.infer("simple_identity", [inp], outputs=[out]).as_numpy("OUTPUT0")
    got = [v.encode() if isinstance(v, str) else v for v in got.flatten()]
    if got != [bytes(v) for v in data.flatten()]:
        fail(f"identity returned {got!r}")


nul = np.array(["he\x00llo".encode()] * 16, dtype=np.object_).reshape(1, 16)
blobs = np.array([b"\x00\x01\x02\x03"] * 16, dtype=np.bytes_).reshape(1, 16)
for data in (nul, blobs):
    identity(data, True)
    identity(data, False)
print("PASS: string")
